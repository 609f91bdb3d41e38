//! The flow file as authors write it: serde structs mirroring the YAML, with source spans.
//!
//! This is the *source* form. It is checked and lowered into the runnable form in
//! `compile.rs`; nothing here knows how a flow runs. The same structs produce the
//! published JSON Schema (`volley schema`), so editors autocomplete exactly what the
//! parser accepts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A value together with where it was written.
pub type Sp<T> = crate::yaml::Spanned<T>;

/// The only flow format version this build understands.
pub const FORMAT_VERSION: u32 = 1;

/// One flow file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Volley flow",
    description = "A Volley conversation flow (format version 1)."
)]
pub struct FlowDoc {
    /// Format version of this file. Must be `1`.
    #[schemars(with = "u32")]
    pub volley: Sp<u32>,
    /// Stable identifier of the flow: lowercase letters, digits and `-`.
    #[schemars(with = "String")]
    pub id: Sp<String>,
    /// Human title shown in lists and dashboards.
    #[schemars(with = "String")]
    pub title: Sp<String>,
    /// Longer description for authors.
    #[serde(default)]
    pub description: Option<String>,
    /// Id of the first step. Defaults to the first step in `steps`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub start: Option<Sp<String>>,
    /// How the assistant presents itself. It is always labelled as automated.
    #[serde(default)]
    pub assistant: Option<AssistantDoc>,
    /// Human-like pacing of bot messages.
    #[serde(default)]
    pub pacing: Option<PacingDoc>,
    /// Allow "back" on every question unless a question says otherwise.
    #[serde(default)]
    pub back: Option<bool>,
    /// Time zone used when the contact has none (IANA name, e.g. `Europe/Berlin`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Sp<String>>,
    /// Variables with their initial values. Every other variable is created by a
    /// question's `save`, a `set` step or a sub-flow call.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub variables: BTreeMap<String, Sp<Literal>>,
    /// Words a participant can type at any question to ask for a person.
    #[serde(default)]
    pub human: Option<HumanDoc>,
    /// The steps, in order. A step without `next` continues with the one below it.
    pub steps: Vec<StepDoc>,
    /// Reusable sub-flows, called with a `call` step.
    #[serde(default)]
    pub subflows: BTreeMap<String, SubflowDoc>,
    /// Business-hours calendars by name, for `is_open("name")`, `next_open("name")`
    /// and `wait: {until_open: name}`.
    #[serde(default, deserialize_with = "named")]
    #[schemars(with = "BTreeMap<String, CalendarDoc>")]
    pub calendars: Vec<(Sp<String>, CalendarDoc)>,
    /// Times of day (in the contact's zone) when the bot must not wake the contact:
    /// waits and question timeouts ending inside them are deferred to their end.
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursDoc>,
    /// The conversation expires this long after the participant's last input (or the
    /// start), e.g. `30d`; the server ends it with the outcome `expired`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expire_after: Option<Sp<String>>,
}

/// Opening hours in one time zone, with closed dates.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarDoc {
    /// IANA time zone the hours are in, e.g. `Europe/Berlin`.
    #[schemars(with = "String")]
    pub timezone: Sp<String>,
    /// Weekly opening hours: days (`mon-fri`, `sat`, `weekdays`, `mon, wed`) → times
    /// (`"09:00-17:30"`, `"09:00-12:00, 13:00-17:00"`, `"22:00-02:00"`, `"24h"`,
    /// `closed`). Days not listed are closed.
    #[schemars(with = "BTreeMap<String, String>")]
    pub hours: Sp<PairList>,
    /// Closed dates in the calendar's zone: `"2026-12-24"` or an inclusive range
    /// `"2026-12-31..2027-01-01"`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub closed: Vec<Sp<String>>,
}

/// `from`/`to` times of day and optionally the days, in the contact's time zone.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursDoc {
    /// Start of the quiet period, `HH:MM`.
    #[schemars(with = "String")]
    pub from: Sp<String>,
    /// End of the quiet period, `HH:MM` (before `from`: the next day; `24:00` allowed).
    #[schemars(with = "String")]
    pub to: Sp<String>,
    /// Days whose quiet period applies (the day it starts on): `any` (default),
    /// `weekdays`, `weekends`, or a list such as `[mon, tue]`.
    #[serde(default)]
    #[schemars(with = "Option<DaysDoc>")]
    pub on: Option<Sp<DaysDoc>>,
}

/// A mapping kept in the order written, with the span of every key and value.
#[derive(Debug, Clone, Default)]
pub struct PairList(pub Vec<(Sp<String>, Sp<String>)>);

impl<'de> Deserialize<'de> for PairList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PairList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of `key: value`")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<PairList, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Sp<String>>()? {
                    out.push((k, m.next_value::<Sp<String>>()?));
                }
                Ok(PairList(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A mapping from spanned names to values, kept in the order written.
fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<(Sp<String>, T)>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<(Sp<String>, T)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping of names")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = m.next_key::<Sp<String>>()? {
                out.push((k, m.next_value::<T>()?));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssistantDoc {
    /// Display name of the assistant, e.g. "Ava from Acme".
    #[serde(default)]
    pub name: Option<String>,
    /// The automation label shown next to the name. Authors may reword it but not hide it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub label: Option<Sp<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HumanDoc {
    /// Typed words that request a person (matched case- and accent-insensitively).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Queue the request goes to.
    #[serde(default)]
    pub queue: Option<String>,
}

/// Pacing: typing speed and bounds. Applies to the whole flow, or to one step.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PacingDoc {
    /// Turn pacing off entirely (messages arrive at once, no typing indicator).
    #[serde(default)]
    pub off: Option<bool>,
    /// Simulated typing speed in words per minute.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub wpm: Option<Sp<f64>>,
    /// Shortest delay before a message, e.g. `300ms`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub min: Option<Sp<String>>,
    /// Longest delay before a message, e.g. `3s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max: Option<Sp<String>>,
    /// Also delay the very first message of a conversation (off by default).
    #[serde(default)]
    pub first: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubflowDoc {
    /// Variables the caller passes in (`with:` on the call step).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Variables handed back to the caller (`returns:` on the call step).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The sub-flow's steps. Reaching the end returns to the caller.
    pub steps: Vec<StepDoc>,
}

/// One step. Exactly one of the *kind* keys must be present:
/// `say`/`image`/`video` (message), `ask` (question), `set`, `branch`, `goto`, `call`,
/// `split`, `goal`, `end`, `handoff`, `wait`, `http`, `webhook`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    /// Step id, unique within its flow. Questions default to their `save` variable.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id: Option<Sp<String>>,
    /// Step to continue with. Defaults to the step below.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub next: Option<Sp<String>>,

    // ---- messages ----
    /// Message text (safe Markdown, templated). On a question it is the prompt.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub say: Option<Sp<String>>,
    /// Image URL (templated).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub image: Option<Box<Sp<String>>>,
    /// Video URL (templated).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub video: Option<Box<Sp<String>>>,
    /// Alternative text for an image or video.
    #[serde(default)]
    pub alt: Option<String>,
    /// Link buttons under a message.
    #[serde(default)]
    pub links: Vec<LinkDoc>,
    /// Exact delay before this message (`1.5s`), or a range with jitter (`2m..5m`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub delay: Option<Box<Sp<String>>>,
    /// Show a typing indicator during the delay (default true).
    #[serde(default)]
    pub typing: Option<bool>,
    /// Pacing override for this step.
    #[serde(default)]
    pub pacing: Option<Box<PacingDoc>>,

    // ---- questions ----
    /// Question type: text, number, email, phone, url, date, date_range, choice,
    /// multiple, rating, nps, yes_no, checklist.
    #[serde(default)]
    #[schemars(with = "Option<QuestionType>")]
    pub ask: Option<Sp<QuestionType>>,
    /// Variable that receives the answer.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub save: Option<Sp<String>>,
    /// Message shown when the answer is invalid (templated).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub invalid: Option<Box<Sp<String>>>,
    /// Failed tries before `fallback` is taken (default 3).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub retries: Option<Box<Sp<u32>>>,
    /// Step taken after `retries` invalid answers.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub fallback: Option<Box<Sp<String>>>,
    /// Allow "back" from this question to the previous one.
    #[serde(default)]
    pub back: Option<bool>,
    /// The participant may skip this question (the variable is left empty).
    #[serde(default)]
    pub optional: Option<bool>,
    /// Placeholder text for the input box.
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Inactivity timeout, e.g. `10m`: if no answer arrives in time, go to `on_timeout`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Box<Sp<String>>>,
    /// Step taken when `timeout` elapses.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_timeout: Option<Box<Sp<String>>>,
    /// text: minimum length in characters.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub min_length: Option<Box<Sp<u32>>>,
    /// text: maximum length in characters.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub max_length: Option<Box<Sp<u32>>>,
    /// text: regular expression the whole answer must match.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub pattern: Option<Box<Sp<String>>>,
    /// number: lower bound; date: earliest date (`today`, `today+30d`, `2026-12-01`).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub min: Option<Box<Sp<Literal>>>,
    /// number: upper bound; date: latest date.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub max: Option<Box<Sp<Literal>>>,
    /// number: the answer must be a multiple of this step (from `min`, or 0).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub step: Option<Box<Sp<f64>>>,
    /// number: only whole numbers.
    #[serde(default)]
    pub integer: Option<bool>,
    /// phone: ISO country used when the number has no international prefix (e.g. `NL`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub country: Option<Box<Sp<String>>>,
    /// choice/multiple: the options.
    #[serde(default)]
    #[schemars(with = "Option<Vec<OptionDoc>>")]
    pub options: Option<Vec<Sp<OptionDoc>>>,
    /// choice/multiple: build the options from a list variable.
    #[serde(default)]
    pub options_from: Option<Box<OptionsFromDoc>>,
    /// multiple: fewest options to pick.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub min_picks: Option<Box<Sp<u32>>>,
    /// multiple: most options to pick.
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub max_picks: Option<Box<Sp<u32>>>,
    /// rating: highest value (2..=10, default 5).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    pub scale: Option<Box<Sp<u32>>>,
    /// rating: `stars` (default) or `numbers`.
    #[serde(default)]
    pub style: Option<RatingStyle>,
    /// checklist: items that must all be ticked.
    #[serde(default)]
    #[schemars(with = "Option<Vec<ItemDoc>>")]
    pub items: Option<Vec<Sp<ItemDoc>>>,

    // ---- logic ----
    /// Assign variables from expressions, in order.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub set: Option<Box<Sp<AssignmentList>>>,
    /// Conditional branches; the first whose `if` is true wins.
    #[serde(default)]
    pub branch: Option<Vec<BranchDoc>>,
    /// Step taken when no branch matches (defaults to `next`).
    #[serde(default, rename = "else")]
    #[schemars(with = "Option<String>")]
    pub else_: Option<Box<Sp<String>>>,
    /// Jump to a step.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub goto: Option<Box<Sp<String>>>,
    /// Call a sub-flow.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub call: Option<Box<Sp<String>>>,
    /// Sub-flow inputs: `input_name: expression`.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub with: Option<Box<Sp<AssignmentList>>>,
    /// Sub-flow outputs: `caller_variable: output_name`.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub returns: Option<Box<Sp<AssignmentList>>>,
    /// Weighted random split (A/B), sticky per contact.
    #[serde(default)]
    pub split: Option<Vec<SplitArmDoc>>,
    /// Mark a goal (conversion).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub goal: Option<Box<Sp<String>>>,
    /// Goal value expression (e.g. order amount).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub value: Option<Box<Sp<ExprText>>>,
    /// End the conversation with this outcome.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub end: Option<Box<Sp<String>>>,

    // ---- actions ----
    /// Hand the conversation to a person.
    #[serde(default)]
    #[schemars(with = "Option<HandoffDoc>")]
    pub handoff: Option<Box<Sp<HandoffDoc>>>,
    /// Pause the conversation for a duration, until a local time or until a
    /// calendar opens.
    #[serde(default)]
    #[schemars(with = "Option<WaitDoc>")]
    pub wait: Option<Box<Sp<WaitDoc>>>,
    /// wait: what a late wake-up means (after a server outage): `fire` (default,
    /// resume however late), `skip` (too late beyond one minute) or `{expire: 2h}`.
    #[serde(default)]
    #[schemars(with = "Option<LateDoc>")]
    pub late: Option<Box<Sp<LateDoc>>>,
    /// wait: step taken when the wait is resumed too late (default: the conversation
    /// ends with the outcome `expired`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_late: Option<Box<Sp<String>>>,
    /// Make an HTTP request and map the response into variables.
    #[serde(default)]
    pub http: Option<Box<HttpDoc>>,
    /// Send a webhook (fire and forget; the server retries it durably).
    #[serde(default)]
    pub webhook: Option<Box<HttpDoc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuestionType {
    Text,
    Number,
    Email,
    Phone,
    Url,
    Date,
    DateRange,
    Choice,
    Multiple,
    Rating,
    Nps,
    YesNo,
    Checklist,
}

impl QuestionType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Url => "url",
            Self::Date => "date",
            Self::DateRange => "date_range",
            Self::Choice => "choice",
            Self::Multiple => "multiple",
            Self::Rating => "rating",
            Self::Nps => "nps",
            Self::YesNo => "yes_no",
            Self::Checklist => "checklist",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RatingStyle {
    Stars,
    Numbers,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkDoc {
    /// Button text (templated).
    pub label: String,
    /// Target URL (templated; http, https, mailto or tel).
    #[schemars(with = "String")]
    pub url: Sp<String>,
}

/// A choice option: a plain label (text, number or boolean; numbers and booleans are
/// saved with their type), or a map with details.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum OptionDoc {
    Plain(#[schemars(with = "serde_json::Value")] Literal),
    Full(Box<OptionFull>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionFull {
    /// Button text (templated).
    #[schemars(with = "String")]
    pub label: Sp<String>,
    /// Value saved into the variable (defaults to the label). Numbers and booleans keep
    /// their type; text may use templates.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub value: Option<Sp<Literal>>,
    /// Other words that select this option when typed.
    #[serde(default)]
    pub synonyms: Vec<String>,
    /// Show the option only when this expression is true.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Sp<ExprText>>,
    /// Step taken when this option is chosen (single choice only).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub next: Option<Sp<String>>,
    /// Variables assigned when this option is chosen (e.g. quiz points).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub set: Option<Sp<AssignmentList>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsFromDoc {
    /// List variable to take the items from.
    #[schemars(with = "String")]
    pub var: Sp<String>,
    /// Label template; the item is `item` (default `{{ item }}`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub label: Option<Sp<String>>,
    /// Value template (default: the label).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub value: Option<Sp<String>>,
    /// Show an item only when this expression is true (`item` is in scope).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Sp<ExprText>>,
}

/// A checklist item: plain text, or a map with an id.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum ItemDoc {
    Plain(String),
    Full(Box<ItemFull>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemFull {
    /// Stable id recorded with the acknowledgement.
    #[schemars(with = "String")]
    pub id: Sp<String>,
    /// The statement acknowledged (templated Markdown).
    #[schemars(with = "String")]
    pub text: Sp<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchDoc {
    /// Condition expression.
    #[serde(rename = "if")]
    #[schemars(with = "String")]
    pub if_: Sp<ExprText>,
    /// Step taken when the condition is true.
    #[schemars(with = "String")]
    pub then: Sp<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArmDoc {
    /// Relative weight (positive).
    #[schemars(with = "f64")]
    pub weight: Sp<f64>,
    /// Step taken by this arm.
    #[schemars(with = "String")]
    pub then: Sp<String>,
    /// Name of the arm in analytics (defaults to the target step id).
    #[serde(default)]
    pub name: Option<String>,
}

/// `handoff: sales` or `handoff: {queue: sales, reason: ..., priority: high}`.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum HandoffDoc {
    Queue(String),
    Full(Box<HandoffFull>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffFull {
    /// Queue (team) that should pick it up.
    #[serde(default)]
    pub queue: Option<String>,
    /// Why a person is needed (templated).
    #[serde(default)]
    pub reason: Option<String>,
    /// `low`, `normal` (default), `high` or `urgent`.
    #[serde(default)]
    pub priority: Option<Priority>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

/// `wait: 2d` or `wait: {for: 2d}` or `wait: {until: "09:00", on: weekdays}` or
/// `wait: {at: "{{ event_start }}", offset: -1h}` or `wait: {until_open: support}`.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum WaitDoc {
    Duration(String),
    Full(Box<WaitFull>),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitFull {
    /// A duration, e.g. `2d`, `1h30m`.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// A local time of day `HH:MM` in the contact's time zone.
    #[serde(default)]
    pub until: Option<String>,
    /// Days allowed for `until`: `any` (default), `weekdays`, `weekends`, or a list
    /// such as `[mon, wed]`.
    #[serde(default)]
    pub on: Option<DaysDoc>,
    /// An instant from a template (RFC 3339, or a date-time in the contact's zone).
    #[serde(default)]
    pub at: Option<String>,
    /// Added to `at` (may be negative, e.g. `-1h`).
    #[serde(default)]
    pub offset: Option<String>,
    /// A calendar's name: continue at once when it is open, else at its next opening.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub until_open: Option<Sp<String>>,
}

/// `late: fire`, `late: skip` or `late: {expire: 2h}`.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum LateDoc {
    Named(#[schemars(with = "LateName")] String),
    Full(Box<LateFull>),
}

/// Named lateness policies (for the schema; the checker reads the text).
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum LateName {
    /// Resume however late (the default).
    Fire,
    /// Too late when resumed more than one minute after the wait's time.
    Skip,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LateFull {
    /// Too late when resumed more than this after the wait's time, e.g. `2h`.
    #[schemars(with = "String")]
    pub expire: Sp<String>,
}

#[derive(Debug, Clone, JsonSchema)]
#[schemars(untagged)]
pub enum DaysDoc {
    Named(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDoc {
    /// GET, POST, PUT, PATCH or DELETE (default GET for http, POST for webhook).
    #[serde(default)]
    pub method: Option<String>,
    /// URL (templated).
    #[schemars(with = "String")]
    pub url: Sp<String>,
    /// Request headers (values templated).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body: each value is an expression.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub json: Option<Sp<AssignmentList>>,
    /// Timeout, e.g. `5s` (default 10s, at most 30s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Sp<String>>,
    /// Map the response into variables: `variable: expression` over `response`
    /// (`response.status`, `response.body`).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub save: Option<Sp<AssignmentList>>,
    /// Step taken when the request fails or answers with a non-2xx status.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_error: Option<Sp<String>>,
}

/// A YAML scalar or structure used as a literal value (variable defaults, bounds).
#[derive(Debug, Clone, PartialEq)]
pub struct Literal(pub serde_json::Value);

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Literal)
    }
}

/// Expression source text. YAML numbers and booleans are accepted and kept as their
/// literal text, so `set: {score: 0}` works without quotes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprText(pub String);

impl<'de> Deserialize<'de> for ExprText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExprText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an expression (text, number or boolean)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExprText, E> {
                Ok(ExprText(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ExprText, E> {
                Ok(ExprText(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExprText, E> {
                Ok(ExprText(format!("{v:?}")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExprText, E> {
                Ok(ExprText(if v { "true" } else { "false" }.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ExprText, E> {
                Ok(ExprText("none".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `name: expression` pair of a `set`, `with`, `returns`, `json` or `save` map,
/// kept in the order written (later assignments see earlier ones).
#[derive(Debug, Clone)]
pub struct Assignment {
    pub name: String,
    pub expr: Sp<ExprText>,
}

/// Deserializes a YAML mapping into ordered assignments.
impl<'de> Deserialize<'de> for AssignmentList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AssignmentList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of `name: expression`")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<AssignmentList, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = m.next_key::<String>()? {
                    let expr: Sp<ExprText> = m.next_value()?;
                    out.push(Assignment { name, expr });
                }
                Ok(AssignmentList(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Helper newtype so `Vec<Assignment>` can be read from a mapping.
#[derive(Debug, Clone)]
pub struct AssignmentList(pub Vec<Assignment>);

/// Implements `Deserialize` for an enum that is either a plain scalar or a mapping,
/// without serde's buffering (which would lose source spans).
macro_rules! scalar_or_map {
    ($ty:ident, $plain:ident, $full:ident, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        Ok($ty::$plain(v.to_owned()))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        Ok($ty::$plain(v.to_string()))
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        Ok($ty::$plain(v.to_string()))
                    }
                    fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                        Ok($ty::$plain(v.to_string()))
                    }
                    fn visit_bool<E: de::Error>(self, v: bool) -> Result<$ty, E> {
                        Ok($ty::$plain(v.to_string()))
                    }
                    fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<$ty, A::Error> {
                        Deserialize::deserialize(de::value::MapAccessDeserializer::new(m))
                            .map($ty::$full)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

scalar_or_map!(
    ItemDoc,
    Plain,
    Full,
    "an item text, or a mapping with `id` and `text`"
);
scalar_or_map!(
    HandoffDoc,
    Queue,
    Full,
    "a queue name, or a mapping with `queue`, `reason`, `priority`"
);
scalar_or_map!(
    WaitDoc,
    Duration,
    Full,
    "a duration such as `2d`, or a mapping with `for`, `until`, `at`, `until_open`"
);
scalar_or_map!(
    LateDoc,
    Named,
    Full,
    "`fire`, `skip`, or a mapping with `expire` such as `{expire: 2h}`"
);

impl<'de> Deserialize<'de> for OptionDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptionDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an option label, or a mapping with `label`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OptionDoc, E> {
                Ok(OptionDoc::Plain(Literal(v.into())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OptionDoc, E> {
                Ok(OptionDoc::Plain(Literal(v.into())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OptionDoc, E> {
                Ok(OptionDoc::Plain(Literal(v.into())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OptionDoc, E> {
                Ok(OptionDoc::Plain(Literal(v.into())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OptionDoc, E> {
                Ok(OptionDoc::Plain(Literal(v.into())))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<OptionDoc, A::Error> {
                Deserialize::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(OptionDoc::Full)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for DaysDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DaysDoc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`any`, `weekdays`, `weekends` or a list of days such as [mon, wed]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DaysDoc, E> {
                Ok(DaysDoc::Named(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<DaysDoc, A::Error> {
                let mut out = Vec::new();
                while let Some(day) = s.next_element::<String>()? {
                    out.push(day);
                }
                Ok(DaysDoc::List(out))
            }
        }
        d.deserialize_any(V)
    }
}
