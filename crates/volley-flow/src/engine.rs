//! The conversation engine: `start(contact, now, seed)` and `handle(state, input, now)`.
//!
//! Pure and deterministic: no IO, no clock, no threads. Every call returns the next
//! state and the effects the caller must carry out or record (messages with their
//! pacing delays, the question now awaited, answers, goals, hand-offs, waits, HTTP
//! calls). Any input, however malformed, produces effects; nothing panics.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use minijinja::value::Value;
use serde::{Deserialize, Serialize};

use crate::answer::{self, Candidate, Invalid};
use crate::expr::{self, Globals, Scope as ExprScope, Text, VarMap, from_json, to_json};
use crate::flow::*;
use crate::model::{Priority, QuestionType, RatingStyle};
use crate::time;

/// Version of the serialized [`State`] layout.
pub const STATE_FORMAT: u32 = 1;
/// Longest text answer accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 8 * 1024;
/// Most values in one multiple-choice input.
pub const MAX_CHOICES: usize = 100;
/// Steps one turn may execute before the engine stops it as a runaway loop.
pub const MAX_STEPS_PER_TURN: usize = 1_000;
/// Deepest sub-flow nesting.
pub const MAX_CALL_DEPTH: usize = 16;
/// How many answers "back" can undo.
pub const MAX_HISTORY: usize = 100;
/// Openings a `wait: {until_open}` looks through for one outside quiet hours.
const MAX_QUIET_OPENINGS: usize = 32;

/// Who the conversation is with. Unsigned profile data is for personalisation only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// BCP 47 locale, e.g. `en-US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// ISO country, e.g. `NL` (default for phone numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Something that happened to a running conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// Typed text (also matched against buttons).
    Text { text: String },
    /// Clicked option values (choice, multiple) or ticked item ids (checklist).
    Choice { values: Vec<String> },
    /// Undo the last answer.
    Back,
    /// Skip an optional question.
    Skip,
    /// The current question's inactivity timeout elapsed.
    Timeout,
    /// A wait is over, or a person hands the conversation back.
    Resume,
    /// Continue at a step (an agent returns the participant to the flow).
    Jump {
        step: String,
        #[serde(default)]
        vars: BTreeMap<String, serde_json::Value>,
    },
    /// The response to the pending HTTP step.
    HttpResponse {
        status: u16,
        #[serde(default)]
        body: serde_json::Value,
    },
    /// The pending HTTP step failed (timeout, refused, too large).
    HttpFailed { error: String },
    /// Sent instead of [`Input::Resume`] when a wait is resumed too late for its
    /// [`Lateness`] policy (see [`Lateness::resume_input`]): the flow continues at the
    /// step's `on_late`, or ends with the outcome `expired`.
    Late,
    /// The conversation has expired (`expire_after` since the participant's last
    /// input): it ends with the outcome `expired`, whatever it was waiting for.
    Expire,
    /// A person closes the conversation (an agent resolves it without handing it back
    /// to the flow): it ends with `outcome`, whatever it was waiting for.
    Close { outcome: String },
}

/// What a wait resumed late means, as the step's `late:` says. The engine cannot know
/// how late a wake-up is (the server's scheduler does), so the policy travels with
/// [`Effect::Wait`] and the server sends [`Input::Late`] instead of [`Input::Resume`]
/// when the wait is too late.
///
/// JSON: `{"policy": "fire"}` or `{"policy": "expire", "after_ms": 60000}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum Lateness {
    /// `late: fire` (the default): resume however late.
    #[default]
    Fire,
    /// Too late when resumed more than `after_ms` after the wait's `until`.
    /// `late: skip` is `Expire { after_ms: 60_000 }` ([`Lateness::SKIP_MS`]);
    /// `late: {expire: 2h}` is `Expire { after_ms: 7_200_000 }`.
    Expire { after_ms: u64 },
}

impl Lateness {
    /// The allowance of `late: skip`: one minute.
    pub const SKIP_MS: u64 = 60_000;

    /// How late a resume may be before it is too late (`None`: never too late).
    pub fn after_ms(self) -> Option<u64> {
        match self {
            Lateness::Fire => None,
            Lateness::Expire { after_ms } => Some(after_ms),
        }
    }

    /// True when resuming at `at` a wait due at `due` is too late.
    pub fn is_late(self, due: Timestamp, at: Timestamp) -> bool {
        match self.after_ms() {
            None => false,
            Some(ms) => at.as_millisecond().saturating_sub(due.as_millisecond()) > ms as i64,
        }
    }

    /// The first instant (to the millisecond) at which resuming a wait due at `due`
    /// is too late; `None` when it never is.
    pub fn late_from(self, due: Timestamp) -> Option<Timestamp> {
        let ms = i64::try_from(self.after_ms()?).ok()?.checked_add(1)?;
        due.checked_add(jiff::SignedDuration::from_millis(ms)).ok()
    }

    /// The input that resumes a wait due at `due` at the instant `at`:
    /// [`Input::Late`] when it is too late, else [`Input::Resume`].
    pub fn resume_input(self, due: Timestamp, at: Timestamp) -> Input {
        if self.is_late(due, at) {
            Input::Late
        } else {
            Input::Resume
        }
    }
}

/// What the caller must show, record or do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// A step was entered (reach and drop-off analytics).
    Enter {
        step: String,
    },
    Message(Box<Message>),
    /// The question now awaiting an answer.
    Ask(Box<Question>),
    /// An answer was rejected; a re-ask message follows.
    Invalid {
        step: String,
        reason: String,
        attempt: u32,
    },
    Answer {
        step: String,
        var: String,
        value: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// Who acknowledged which text version, when.
    Acknowledge {
        step: String,
        var: String,
        items: Vec<AckItem>,
        at: Timestamp,
    },
    Set {
        var: String,
        value: serde_json::Value,
    },
    Goal {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
    },
    Split {
        step: String,
        arm: String,
    },
    /// The last answer was undone; the conversation is back at `to`.
    Back {
        to: String,
    },
    Handoff {
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        priority: Priority,
    },
    /// The conversation pauses until `until` (already deferred past quiet hours); the
    /// server resumes it then with [`Input::Resume`], or [`Input::Late`] when the
    /// wake-up comes too late for `late`.
    Wait {
        step: String,
        until: Timestamp,
        #[serde(default)]
        late: Lateness,
    },
    Http {
        step: String,
        request: HttpRequest,
    },
    Webhook {
        step: String,
        request: HttpRequest,
    },
    End {
        outcome: String,
    },
    /// The input does not fit the conversation's current state; nothing changed.
    Rejected {
        code: String,
        message: String,
    },
    /// A template or expression failed at run time (for the author's logs).
    Error {
        step: String,
        message: String,
    },
}

impl Effect {
    /// Effects a participant (or transcript) sees, as opposed to bookkeeping.
    pub fn is_visible(&self) -> bool {
        !matches!(
            self,
            Effect::Enter { .. }
                | Effect::Set { .. }
                | Effect::Answer { .. }
                | Effect::Acknowledge { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Bot,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub step: String,
    pub kind: MessageKind,
    /// Markdown (safe subset; render with `markdown::to_html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// Intended pause before showing the message.
    pub delay_ms: u64,
    /// Show a typing indicator during the pause.
    pub typing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceView {
    pub value: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckItem {
    pub id: String,
    pub text: String,
    /// Hash of the exact text acknowledged.
    pub version: String,
}

/// The question awaiting an answer, with everything a client needs to offer the right
/// input and hint at validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub step: String,
    pub var: String,
    pub input: QuestionType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<ChoiceView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ChoiceView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub integer: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_picks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_picks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<RatingStyle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// "Back" is offered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub can_back: bool,
    /// Share of the way through the longest remaining path, 0.0–1.0.
    pub progress: f64,
    /// Invalid answers so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    pub timeout_ms: u64,
}

/// Where a conversation is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum At {
    Question {
        scope: u32,
        step: u32,
        attempts: u32,
        timeout_at: Option<Timestamp>,
    },
    Wait {
        scope: u32,
        step: u32,
        until: Timestamp,
    },
    Http {
        scope: u32,
        step: u32,
    },
    Human {
        scope: u32,
        step: u32,
    },
    Ended {
        outcome: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Frame {
    scope: u32,
    step: u32,
    vars: Arc<VarMap>,
}

/// Answers "back" can undo, newest first: a persistent list, so cloning a state (once
/// per turn) costs one reference count, whatever the history's length.
#[derive(Debug, Clone, Default, PartialEq)]
struct History(Option<Arc<HistoryNode>>);

#[derive(Debug, PartialEq)]
struct HistoryNode {
    checkpoint: Checkpoint,
    older: History,
    len: usize,
}

impl History {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn clear(&mut self) {
        self.0 = None;
    }

    /// Adds a checkpoint, forgetting the oldest beyond [`MAX_HISTORY`].
    fn push(&mut self, checkpoint: Checkpoint) {
        let older = std::mem::take(self);
        let len = older.0.as_ref().map_or(0, |n| n.len) + 1;
        *self = History(Some(Arc::new(HistoryNode {
            checkpoint,
            older,
            len,
        })));
        if len > MAX_HISTORY {
            let kept: Vec<Checkpoint> = self.to_vec().into_iter().take(MAX_HISTORY).collect();
            *self = History::from_newest_first(kept);
        }
    }

    fn pop(&mut self) -> Option<Checkpoint> {
        let node = self.0.take()?;
        let node = Arc::try_unwrap(node).unwrap_or_else(|shared| HistoryNode {
            checkpoint: shared.checkpoint.clone(),
            older: shared.older.clone(),
            len: shared.len,
        });
        *self = node.older;
        Some(node.checkpoint)
    }

    fn to_vec(&self) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        let mut at = &self.0;
        while let Some(node) = at {
            out.push(node.checkpoint.clone());
            at = &node.older.0;
        }
        out
    }

    fn from_newest_first(items: Vec<Checkpoint>) -> Self {
        let mut h = History::default();
        for (i, checkpoint) in items.into_iter().rev().enumerate() {
            let older = std::mem::take(&mut h);
            h = History(Some(Arc::new(HistoryNode {
                checkpoint,
                older,
                len: i + 1,
            })));
        }
        h
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(s)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut items = Vec::<Checkpoint>::deserialize(d)?;
        items.truncate(MAX_HISTORY);
        Ok(History::from_newest_first(items))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    vars: Arc<VarMap>,
    frames: Vec<Frame>,
    at: At,
    answered: u32,
    rng: u64,
}

/// A running conversation: serialisable, tied to the flow version it started on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub flow: String,
    pub version: String,
    pub contact: Arc<Contact>,
    vars: Arc<VarMap>,
    at: At,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    frames: Vec<Frame>,
    #[serde(default, skip_serializing_if = "History::is_empty")]
    history: History,
    answered: u32,
    rng: u64,
    sent: u32,
    /// Goals reached: a goal counts once per conversation (going back does not undo it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    goals: std::collections::BTreeSet<String>,
}

/// What the conversation is waiting for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "awaiting", rename_all = "snake_case")]
pub enum Awaiting {
    Answer {
        step: String,
        timeout_at: Option<Timestamp>,
    },
    Wait {
        step: String,
        until: Timestamp,
    },
    Http {
        step: String,
    },
    Human {
        step: String,
    },
    Ended {
        outcome: String,
    },
}

impl State {
    /// Current variables as JSON.
    pub fn vars(&self) -> BTreeMap<String, serde_json::Value> {
        self.vars
            .iter()
            .map(|(k, v)| (k.to_string(), to_json(v)))
            .collect()
    }

    pub fn var(&self, name: &str) -> Option<serde_json::Value> {
        self.vars.get(name).map(to_json)
    }

    /// Goals reached, by name, in order.
    pub fn goals(&self) -> impl Iterator<Item = &str> {
        self.goals.iter().map(String::as_str)
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.at, At::Ended { .. })
    }

    /// The lateness policy of the wait the conversation is paused at, if it is.
    pub fn wait_lateness(&self, flow: &Flow) -> Option<Lateness> {
        let At::Wait { scope, step, .. } = &self.at else {
            return None;
        };
        match &flow
            .scopes
            .get(*scope as usize)?
            .steps
            .get(*step as usize)?
            .kind
        {
            Kind::Wait(w) => Some(w.late),
            _ => None,
        }
    }

    /// What the conversation waits for, with step ids resolved against `flow`.
    pub fn awaiting(&self, flow: &Flow) -> Awaiting {
        let id = |scope: u32, step: u32| {
            flow.scopes
                .get(scope as usize)
                .and_then(|s| s.steps.get(step as usize))
                .map(|s| s.id.clone())
                .unwrap_or_default()
        };
        match &self.at {
            At::Question {
                scope,
                step,
                timeout_at,
                ..
            } => Awaiting::Answer {
                step: id(*scope, *step),
                timeout_at: *timeout_at,
            },
            At::Wait { scope, step, until } => Awaiting::Wait {
                step: id(*scope, *step),
                until: *until,
            },
            At::Http { scope, step } => Awaiting::Http {
                step: id(*scope, *step),
            },
            At::Human { scope, step } => Awaiting::Human {
                step: id(*scope, *step),
            },
            At::Ended { outcome } => Awaiting::Ended {
                outcome: outcome.clone(),
            },
        }
    }
}

/// The result of one engine call.
#[derive(Debug, Clone)]
pub struct Turn {
    pub state: State,
    pub effects: Vec<Effect>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error(
        "state belongs to flow `{state}` version {state_version}, not `{flow}` version {flow_version}"
    )]
    WrongFlow {
        state: String,
        state_version: String,
        flow: String,
        flow_version: String,
    },
    #[error("state format {0} is not supported (expected {STATE_FORMAT})")]
    Format(u32),
}

impl Flow {
    /// Starts a conversation. `seed` drives jitter and random splits for anonymous
    /// contacts (splits are sticky per contact id when there is one).
    pub fn start(&self, contact: Contact, now: Timestamp, seed: u64) -> Turn {
        let mut vars = VarMap::new();
        for (k, v) in &self.defaults {
            vars.insert(k.as_str().into(), from_json(v));
        }
        let state = State {
            format: STATE_FORMAT,
            flow: self.id.clone(),
            version: self.version.clone(),
            contact: Arc::new(contact),
            vars: Arc::new(vars),
            at: At::Ended {
                outcome: String::new(),
            },
            frames: Vec::new(),
            history: History::default(),
            answered: 0,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            sent: 0,
            goals: Default::default(),
        };
        let mut run = Run::new(self, state, now);
        let start = self.scopes[0].start;
        run.run_from(0, Some(start));
        run.finish()
    }

    /// Applies one input to a conversation.
    pub fn handle(&self, state: &State, input: Input, now: Timestamp) -> Result<Turn, EngineError> {
        if state.format != STATE_FORMAT {
            return Err(EngineError::Format(state.format));
        }
        if state.flow != self.id || state.version != self.version {
            return Err(EngineError::WrongFlow {
                state: state.flow.clone(),
                state_version: state.version.clone(),
                flow: self.id.clone(),
                flow_version: self.version.clone(),
            });
        }
        let mut run = Run::new(self, state.clone(), now);
        run.input(input);
        Ok(run.finish())
    }
}

struct Run<'f> {
    flow: &'f Flow,
    state: State,
    now: Timestamp,
    tz: TimeZone,
    globals: Arc<Globals>,
    effects: Vec<Effect>,
    budget: usize,
}

/// An answer as parsed, before it is stored.
struct Accepted {
    value: serde_json::Value,
    /// The chosen option (single choice), for its `next` and `set`.
    option: Option<usize>,
    /// Options chosen (multiple choice), for their `set`.
    options: Vec<usize>,
    acks: Vec<AckItem>,
}

impl<'f> Run<'f> {
    fn new(flow: &'f Flow, state: State, now: Timestamp) -> Self {
        let tz = flow.contact_zone(&state.contact);
        let globals = Arc::new(Globals {
            contact: Value::from_object(ContactView(state.contact.clone())),
            flow: flow.info.clone(),
            now,
            tz: tz.clone(),
            calendars: flow.calendars.clone(),
            formatted: Default::default(),
        });
        Run {
            flow,
            state,
            now,
            tz,
            globals,
            effects: Vec::new(),
            budget: MAX_STEPS_PER_TURN,
        }
    }

    fn finish(self) -> Turn {
        Turn {
            state: self.state,
            effects: self.effects,
        }
    }

    fn scope(&self, extra: Option<(&'static str, Value)>) -> Arc<ExprScope> {
        Arc::new(ExprScope {
            vars: self.state.vars.clone(),
            globals: self.globals.clone(),
            extra,
        })
    }

    fn step(&self, scope: usize, ix: usize) -> &'f Step {
        &self.flow.scopes[scope].steps[ix]
    }

    fn render(&mut self, text: &Text, step: &str) -> String {
        self.render_with(text, step, None)
    }

    fn render_with(
        &mut self,
        text: &Text,
        step: &str,
        extra: Option<(&'static str, Value)>,
    ) -> String {
        let scope = self.scope(extra);
        match self.flow.code.render(text, &scope) {
            Ok(s) => s,
            Err(e) => {
                self.error(step, format!("template failed: {e}"));
                String::new()
            }
        }
    }

    fn eval(
        &mut self,
        id: expr::ExprId,
        step: &str,
        extra: Option<(&'static str, Value)>,
    ) -> Option<Value> {
        let scope = self.scope(extra);
        match self.flow.code.eval(id, &scope) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(step, format!("expression failed: {e}"));
                None
            }
        }
    }

    fn error(&mut self, step: &str, message: String) {
        self.effects.push(Effect::Error {
            step: step.to_string(),
            message,
        });
    }

    fn reject(&mut self, code: &str, message: impl Into<String>) {
        self.effects.push(Effect::Rejected {
            code: code.into(),
            message: message.into(),
        });
    }

    fn set_var(&mut self, name: &str, value: Value) {
        // Variables hold data only: `undefined` (a failed expression) is stored as `none`,
        // so a state serialises and loads back identically.
        let value = if value.is_undefined() {
            Value::from(())
        } else {
            value
        };
        Arc::make_mut(&mut self.state.vars).insert(name.into(), value);
    }

    fn next_rand(&mut self) -> u64 {
        // splitmix64
        self.state.rng = self.state.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn end(&mut self, outcome: &str) {
        self.state.at = At::Ended {
            outcome: outcome.to_string(),
        };
        self.state.history.clear();
        self.effects.push(Effect::End {
            outcome: outcome.to_string(),
        });
    }

    /// Runs steps from `ix` in `scope` until one stops the turn.
    fn run_from(&mut self, mut scope: usize, mut ix: Option<usize>) {
        loop {
            let Some(i) = ix else {
                // End of a scope: return from a sub-flow, or complete the conversation.
                match self.state.frames.pop() {
                    Some(frame) => {
                        let caller = self.step(frame.scope as usize, frame.step as usize);
                        let sub_vars = std::mem::replace(&mut self.state.vars, frame.vars);
                        if let Kind::Call { returns, .. } = &caller.kind {
                            for (outer, inner) in returns {
                                let v = sub_vars
                                    .get(inner.as_str())
                                    .cloned()
                                    .unwrap_or(Value::UNDEFINED);
                                self.effects.push(Effect::Set {
                                    var: outer.clone(),
                                    value: to_json(&v),
                                });
                                self.set_var(outer, v);
                            }
                        }
                        scope = frame.scope as usize;
                        ix = caller.next;
                        continue;
                    }
                    None => {
                        self.end("completed");
                        return;
                    }
                }
            };
            if self.budget == 0 {
                let id = self.step(scope, i).id.clone();
                self.error(
                    &id,
                    format!("stopped after {MAX_STEPS_PER_TURN} steps without a question"),
                );
                self.end("error");
                return;
            }
            self.budget -= 1;
            let step = self.step(scope, i);
            let id = step.id.as_str();
            self.effects.push(Effect::Enter {
                step: id.to_string(),
            });
            match &step.kind {
                Kind::Message(m) => {
                    self.message(m, id, MessageKind::Bot, None);
                    ix = step.next;
                }
                Kind::Question(_) => {
                    self.ask(scope, i, 0, false);
                    return;
                }
                Kind::Set(list) => {
                    self.assign(list, id, None);
                    ix = step.next;
                }
                Kind::Branch { arms, otherwise } => {
                    let mut target = otherwise.or(step.next);
                    let mut matched = false;
                    for (cond, t) in arms {
                        if self.eval(*cond, id, None).is_some_and(|v| expr::truthy(&v)) {
                            target = Some(*t);
                            matched = true;
                            break;
                        }
                    }
                    if !matched && otherwise.is_none() && step.next.is_none() {
                        target = None;
                    }
                    ix = target;
                }
                Kind::Goto(t) => ix = Some(*t),
                Kind::Call {
                    scope: sub, with, ..
                } => {
                    if self.state.frames.len() >= MAX_CALL_DEPTH {
                        self.error(id, format!("sub-flows nested deeper than {MAX_CALL_DEPTH}"));
                        self.end("error");
                        return;
                    }
                    let mut inputs = VarMap::new();
                    for (name, e) in with {
                        let v = self.eval(*e, id, None).unwrap_or(Value::UNDEFINED);
                        inputs.insert(name.as_str().into(), v);
                    }
                    let caller_vars = std::mem::replace(&mut self.state.vars, Arc::new(inputs));
                    self.state.frames.push(Frame {
                        scope: scope as u32,
                        step: i as u32,
                        vars: caller_vars,
                    });
                    scope = *sub;
                    ix = Some(self.flow.scopes[scope].start);
                }
                Kind::Split { arms } => {
                    let roll = self.split_roll(id);
                    let total: f64 = arms.iter().map(|a| a.weight).sum();
                    let mut acc = 0.0;
                    let mut chosen = &arms[arms.len() - 1];
                    for arm in arms {
                        acc += arm.weight / total;
                        if roll < acc {
                            chosen = arm;
                            break;
                        }
                    }
                    self.effects.push(Effect::Split {
                        step: id.to_string(),
                        arm: chosen.name.clone(),
                    });
                    ix = Some(chosen.target);
                }
                Kind::Goal { name, value } => {
                    if self.state.goals.insert(name.clone()) {
                        let value = value
                            .and_then(|e| self.eval(e, id, None))
                            .and_then(|v| f64::try_from(v).ok());
                        self.effects.push(Effect::Goal {
                            name: name.clone(),
                            value,
                        });
                    }
                    ix = step.next;
                }
                Kind::End { outcome } => {
                    self.end(outcome);
                    return;
                }
                Kind::Handoff {
                    queue,
                    reason,
                    priority,
                } => {
                    let reason = reason.as_ref().map(|r| self.render(r, id));
                    self.effects.push(Effect::Handoff {
                        step: id.to_string(),
                        queue: queue.clone(),
                        reason,
                        priority: *priority,
                    });
                    self.state.at = At::Human {
                        scope: scope as u32,
                        step: i as u32,
                    };
                    self.state.history.clear();
                    return;
                }
                Kind::Wait(w) => match self.wait_until(&w.spec, id) {
                    Some(until) if until > self.now => {
                        let until = self.defer_quiet(until);
                        self.effects.push(Effect::Wait {
                            step: id.to_string(),
                            until,
                            late: w.late,
                        });
                        self.state.at = At::Wait {
                            scope: scope as u32,
                            step: i as u32,
                            until,
                        };
                        self.state.history.clear();
                        return;
                    }
                    // Already due (or not computable): continue at once.
                    _ => ix = step.next,
                },
                Kind::Http(h) => {
                    let request = self.http_request(h, id);
                    if h.fire_and_forget {
                        self.effects.push(Effect::Webhook {
                            step: id.to_string(),
                            request,
                        });
                        // A delivered webhook cannot be taken back, so neither can the answers before it.
                        self.state.history.clear();
                        ix = step.next;
                    } else {
                        self.effects.push(Effect::Http {
                            step: id.to_string(),
                            request,
                        });
                        self.state.at = At::Http {
                            scope: scope as u32,
                            step: i as u32,
                        };
                        self.state.history.clear();
                        return;
                    }
                }
            }
        }
    }

    fn split_roll(&mut self, step: &str) -> f64 {
        let bits = if self.state.contact.id.is_empty() {
            self.next_rand()
        } else {
            let key = format!(
                "{}\u{0}{}\u{0}{}",
                self.state.contact.id, self.flow.id, step
            );
            let h = crate::compile::content_hash(&key);
            u64::from_str_radix(&h, 16).unwrap_or(0)
        };
        (bits >> 11) as f64 / (1u64 << 53) as f64
    }

    fn assign(
        &mut self,
        list: &[(String, expr::ExprId)],
        step: &str,
        extra: Option<(&'static str, Value)>,
    ) {
        for (name, e) in list {
            let v = self
                .eval(*e, step, extra.clone())
                .unwrap_or(Value::UNDEFINED);
            self.effects.push(Effect::Set {
                var: name.clone(),
                value: to_json(&v),
            });
            self.set_var(name, v);
        }
    }

    fn message(
        &mut self,
        m: &MessageStep,
        step: &str,
        kind: MessageKind,
        text_override: Option<String>,
    ) {
        // Trailing whitespace never matters in a message (YAML `|` blocks end with a newline).
        let text = match text_override {
            Some(t) => Some(t),
            None => m.text.as_ref().map(|t| self.render(t, step)),
        }
        .map(|t| t.trim_end().to_string());
        let image = m.image.as_ref().map(|t| self.render(t, step));
        let video = m.video.as_ref().map(|t| self.render(t, step));
        if text.is_none() && image.is_none() && video.is_none() {
            return;
        }
        let links: Vec<Link> = m
            .links
            .iter()
            .filter_map(|(label, url)| {
                let label = self.render(label, step);
                let url = self.render(url, step);
                if crate::markdown::safe_url(&url) {
                    Some(Link { label, url })
                } else {
                    self.error(
                        step,
                        format!(
                            "link `{url}` dropped: only http(s), mailto, tel and /paths are allowed"
                        ),
                    );
                    None
                }
            })
            .collect();
        let media = image.is_some() || video.is_some();
        let (delay_ms, typing) = self.pacing(m, text.as_deref().unwrap_or(""), media);
        self.effects.push(Effect::Message(Box::new(Message {
            step: step.to_string(),
            kind,
            text,
            image,
            video,
            alt: m.alt.clone(),
            links,
            delay_ms,
            typing,
        })));
    }

    /// Delay before a message: explicit, or derived from its length and the typing speed.
    fn pacing(&mut self, m: &MessageStep, text: &str, media: bool) -> (u64, bool) {
        let p = m.pacing.unwrap_or(self.flow.pacing);
        let first = self.state.sent == 0;
        self.state.sent = self.state.sent.saturating_add(1);
        let typing = m.typing.unwrap_or(!p.off);
        let delay = match m.delay {
            Some(Delay::Fixed(ms)) => ms,
            Some(Delay::Range(a, b)) => a + self.next_rand() % (b - a + 1),
            None if p.off => 0,
            None if first && !p.first => 0,
            None => {
                let words = typing_words(text) + if media { 8.0 } else { 0.0 };
                let ms = (words / p.wpm * 60_000.0).round() as u64;
                ms.clamp(p.min_ms, p.max_ms)
            }
        };
        (delay, typing && delay > 0)
    }

    fn ask(&mut self, scope: usize, ix: usize, attempts: u32, reask: bool) {
        let step = self.step(scope, ix);
        let Kind::Question(q) = &step.kind else {
            return;
        };
        let id = step.id.as_str();
        if !reask {
            self.message(&q.prompt, id, MessageKind::Bot, None);
        }
        let options = if q.kind == QuestionType::YesNo {
            vec![
                ChoiceView {
                    value: "yes".into(),
                    label: "Yes".into(),
                },
                ChoiceView {
                    value: "no".into(),
                    label: "No".into(),
                },
            ]
        } else {
            self.visible_options(q, id)
                .into_iter()
                .map(|c| ChoiceView {
                    value: c.value,
                    label: c.label,
                })
                .collect()
        };
        let items = q
            .rules
            .items
            .iter()
            .map(|it| ChoiceView {
                value: it.id.clone(),
                label: self.render(&it.text, id),
            })
            .collect();
        let timeout_at = q
            .timeout
            .as_ref()
            .and_then(|(span, _)| time::add_span(self.now, &self.tz, *span).ok())
            .map(|t| self.defer_quiet(t));
        let today = time::today(self.now, &self.tz);
        let bound = |d: &Option<RelDate>| {
            d.as_ref()
                .and_then(|d| resolve_date(d, today))
                .map(|d| serde_json::json!(d.to_string()))
        };
        let (min, max) = match q.kind {
            QuestionType::Number => (
                q.rules.min.map(|x| serde_json::json!(x)),
                q.rules.max.map(|x| serde_json::json!(x)),
            ),
            QuestionType::Date | QuestionType::DateRange => {
                (bound(&q.rules.min_date), bound(&q.rules.max_date))
            }
            QuestionType::Rating => (
                Some(serde_json::json!(1)),
                Some(serde_json::json!(q.rules.scale)),
            ),
            QuestionType::Nps => (Some(serde_json::json!(0)), Some(serde_json::json!(10))),
            _ => (None, None),
        };
        let question = Question {
            step: id.to_string(),
            var: q.var.clone(),
            input: q.kind,
            options,
            items,
            min,
            max,
            step_size: q.rules.step,
            integer: q.rules.integer,
            min_length: q.rules.min_length,
            max_length: q.rules.max_length,
            min_picks: q.rules.min_picks,
            max_picks: q.rules.max_picks,
            scale: matches!(q.kind, QuestionType::Rating | QuestionType::Nps)
                .then_some(q.rules.scale),
            style: q.rules.style,
            placeholder: q.placeholder.clone(),
            optional: q.optional,
            can_back: q.back && !self.state.history.is_empty(),
            progress: self.progress(scope, ix),
            attempt: attempts,
            timeout_at,
        };
        self.effects.push(Effect::Ask(Box::new(question)));
        self.state.at = At::Question {
            scope: scope as u32,
            step: ix as u32,
            attempts,
            timeout_at,
        };
    }

    fn progress(&self, scope: usize, ix: usize) -> f64 {
        let mut remaining = self.flow.scopes[scope].remaining[ix] as f64;
        for f in &self.state.frames {
            // What is left in the caller: the call step's remaining path without the
            // sub-flow itself (already counted), so a call inside a loop is not counted twice.
            let caller = &self.flow.scopes[f.scope as usize];
            let call = &caller.steps[f.step as usize];
            let sub = match &call.kind {
                Kind::Call { scope, .. } => &self.flow.scopes[*scope],
                _ => continue,
            };
            let sub_len = if sub.steps.is_empty() {
                0
            } else {
                sub.remaining[sub.start]
            };
            remaining += caller.remaining[f.step as usize].saturating_sub(sub_len) as f64;
        }
        let done = self.state.answered as f64;
        if done + remaining == 0.0 {
            1.0
        } else {
            (done / (done + remaining) * 1000.0).round() / 1000.0
        }
    }

    fn visible_options(&mut self, q: &QuestionStep, step: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        for o in &q.rules.options {
            if let Some(w) = o.when
                && !self.eval(w, step, None).is_some_and(|v| expr::truthy(&v))
            {
                continue;
            }
            let label = self.render(&o.label, step);
            let label = label.trim().to_string();
            let value = match (&o.value, &o.typed) {
                (Some(v), _) => self.render(v, step),
                (None, Some(t)) => expr::display_value(t),
                (None, None) => label.clone(),
            };
            out.push(Candidate {
                value,
                label,
                synonyms: o.synonyms.clone(),
                typed: o.typed.clone(),
            });
        }
        if let Some(from) = &q.rules.options_from {
            let list = self
                .state
                .vars
                .get(from.var.as_str())
                .cloned()
                .unwrap_or(Value::UNDEFINED);
            let items: Vec<Value> = match list.try_iter() {
                Ok(it) if list.kind() == minijinja::value::ValueKind::Seq => it.take(200).collect(),
                _ => {
                    if !list.is_undefined() {
                        self.error(step, format!("`{}` is not a list", from.var));
                    }
                    Vec::new()
                }
            };
            for item in items {
                let extra = Some(("item", item.clone()));
                if let Some(w) = from.when
                    && !self
                        .eval(w, step, extra.clone())
                        .is_some_and(|v| expr::truthy(&v))
                {
                    continue;
                }
                let label = match &from.label {
                    Some(t) => self.render_with(t, step, extra.clone()),
                    None => item.to_string(),
                };
                let value = match &from.value {
                    Some(t) => self.render_with(t, step, extra),
                    None => label.clone(),
                };
                out.push(Candidate {
                    value,
                    label,
                    synonyms: Vec::new(),
                    typed: None,
                });
            }
        }
        out
    }

    fn input(&mut self, input: Input) {
        if let Input::Text { text } = &input
            && text.len() > MAX_INPUT_BYTES
        {
            return self.reject(
                "too-long",
                format!("answers are limited to {MAX_INPUT_BYTES} bytes"),
            );
        }
        if let Input::Choice { values } = &input
            && (values.len() > MAX_CHOICES || values.iter().any(|v| v.len() > MAX_INPUT_BYTES))
        {
            return self.reject("too-long", format!("at most {MAX_CHOICES} choices"));
        }
        if let Input::Jump { step, vars } = input {
            return self.jump(&step, vars);
        }
        let closing = match &input {
            Input::Expire => Some("expired"),
            Input::Close { outcome } => Some(outcome.as_str()),
            _ => None,
        };
        if let Some(outcome) = closing {
            return match self.state.at {
                At::Ended { .. } => self.reject("ended", "this conversation has ended"),
                _ => self.end(outcome),
            };
        }
        match self.state.at.clone() {
            At::Ended { .. } => self.reject("ended", "this conversation has ended"),
            At::Question {
                scope,
                step,
                attempts,
                timeout_at,
            } => {
                let (scope, ix) = (scope as usize, step as usize);
                match input {
                    Input::Text { .. } | Input::Choice { .. } => {
                        self.answer(scope, ix, attempts, input)
                    }
                    Input::Back => self.back(scope, ix),
                    Input::Skip => self.skip(scope, ix),
                    Input::Timeout => match (timeout_at, self.timeout_target(scope, ix)) {
                        (Some(at), Some(target)) if self.now >= at => {
                            self.run_from(scope, Some(target))
                        }
                        (Some(_), Some(_)) => {
                            self.reject("not-due", "the timeout has not elapsed yet")
                        }
                        _ => self.reject("no-timeout", "this question has no timeout"),
                    },
                    _ => self.reject(
                        "unexpected-input",
                        "the conversation is waiting for an answer",
                    ),
                }
            }
            At::Wait { scope, step, until } => match input {
                Input::Resume if self.now >= until => {
                    let next = self.step(scope as usize, step as usize).next;
                    self.run_from(scope as usize, next)
                }
                Input::Resume | Input::Late if self.now < until => {
                    self.reject("not-due", format!("the wait ends at {until}"))
                }
                Input::Late => self.late(scope as usize, step as usize),
                _ => self.reject(
                    "waiting",
                    "the conversation is paused; it continues by itself",
                ),
            },
            At::Http { scope, step } => {
                let (scope, ix) = (scope as usize, step as usize);
                match input {
                    Input::HttpResponse { status, body } => {
                        self.http_done(scope, ix, Ok((status, body)))
                    }
                    Input::HttpFailed { error } => self.http_done(scope, ix, Err(error)),
                    _ => self.reject("waiting", "the conversation is waiting for a web request"),
                }
            }
            At::Human { scope, step } => match input {
                Input::Resume => {
                    let (scope, ix) = (scope as usize, step as usize);
                    if matches!(self.step(scope, ix).kind, Kind::Question(_)) {
                        self.ask(scope, ix, 0, false);
                    } else {
                        let next = self.step(scope, ix).next;
                        self.run_from(scope, next);
                    }
                }
                _ => self.reject("with-human", "a person is handling this conversation"),
            },
        }
    }

    /// A wait resumed too late: `on_late`, or the end (`expired`).
    fn late(&mut self, scope: usize, ix: usize) {
        let Kind::Wait(w) = &self.step(scope, ix).kind else {
            return;
        };
        match (w.late, w.on_late) {
            (Lateness::Fire, _) => self.reject(
                "never-late",
                "this wait resumes however late (`late: fire`); send `resume`",
            ),
            (Lateness::Expire { .. }, Some(target)) => {
                self.state.history.clear();
                self.run_from(scope, Some(target))
            }
            (Lateness::Expire { .. }, None) => self.end("expired"),
        }
    }

    /// Moves an instant out of the flow's quiet hours in the contact's zone.
    fn defer_quiet(&self, t: Timestamp) -> Timestamp {
        match &self.flow.quiet_hours {
            Some(q) => q.defer(t, &self.tz),
            None => t,
        }
    }

    fn jump(&mut self, step: &str, vars: BTreeMap<String, serde_json::Value>) {
        let Some((scope, ix)) = self.flow.locate(step) else {
            return self.reject("unknown-step", format!("no step `{step}` in this flow"));
        };
        for (k, v) in vars {
            if !crate::compile::is_identifier(&k) {
                return self.reject("invalid-name", format!("`{k}` is not a variable name"));
            }
            self.effects.push(Effect::Set {
                var: k.clone(),
                value: v.clone(),
            });
            self.set_var(&k, from_json(&v));
        }
        // Frames of the old position no longer apply.
        if scope == 0 {
            self.state.frames.clear();
        }
        self.state.history.clear();
        self.run_from(scope, Some(ix));
    }

    fn timeout_target(&self, scope: usize, ix: usize) -> Option<usize> {
        match &self.step(scope, ix).kind {
            Kind::Question(q) => q.timeout.as_ref().map(|t| t.1),
            _ => None,
        }
    }

    fn back(&mut self, scope: usize, ix: usize) {
        let allowed = matches!(&self.step(scope, ix).kind, Kind::Question(q) if q.back);
        if !allowed {
            return self.reject("no-back", "going back is not possible here");
        }
        let Some(cp) = self.state.history.pop() else {
            return self.reject("no-back", "there is nothing to go back to");
        };
        self.state.vars = cp.vars;
        self.state.frames = cp.frames;
        self.state.answered = cp.answered;
        self.state.rng = cp.rng;
        if let At::Question { scope, step, .. } = cp.at {
            let to = self.step(scope as usize, step as usize).id.clone();
            self.effects.push(Effect::Back { to });
            self.ask(scope as usize, step as usize, 0, false);
        }
    }

    fn skip(&mut self, scope: usize, ix: usize) {
        let step = self.step(scope, ix);
        let Kind::Question(q) = &step.kind else {
            return;
        };
        if !q.optional {
            return self.reject("not-optional", "this question needs an answer");
        }
        self.checkpoint(scope, ix);
        self.effects.push(Effect::Answer {
            step: step.id.clone(),
            var: q.var.clone(),
            value: serde_json::Value::Null,
            text: None,
        });
        self.set_var(&q.var, Value::from(()));
        self.state.answered += 1;
        self.run_from(scope, step.next);
    }

    fn checkpoint(&mut self, scope: usize, ix: usize) {
        if !self.flow.any_back {
            return;
        }
        let cp = Checkpoint {
            vars: self.state.vars.clone(),
            frames: self.state.frames.clone(),
            at: At::Question {
                scope: scope as u32,
                step: ix as u32,
                attempts: 0,
                timeout_at: None,
            },
            answered: self.state.answered,
            rng: self.state.rng,
        };
        self.state.history.push(cp);
    }

    fn answer(&mut self, scope: usize, ix: usize, attempts: u32, input: Input) {
        let step = self.step(scope, ix);
        let Kind::Question(q) = &step.kind else {
            return;
        };
        let id = step.id.as_str();
        if let (Some(h), Input::Text { text }) = (&self.flow.human, &input)
            && asks_for_person(&h.keywords, text, q.kind)
        {
            self.effects.push(Effect::Handoff {
                step: id.to_string(),
                queue: h.queue.clone(),
                reason: Some("The participant asked for a person.".into()),
                priority: Priority::Normal,
            });
            self.state.at = At::Human {
                scope: scope as u32,
                step: ix as u32,
            };
            self.state.history.clear();
            return;
        }
        let raw = match &input {
            Input::Text { text } => Some(text.trim().to_string()),
            _ => None,
        };
        match self.parse_answer(q, id, &input) {
            Ok(acc) => {
                self.checkpoint(scope, ix);
                let value = from_json(&acc.value);
                self.effects.push(Effect::Answer {
                    step: id.to_string(),
                    var: q.var.clone(),
                    value: acc.value.clone(),
                    text: raw,
                });
                if !acc.acks.is_empty() {
                    self.effects.push(Effect::Acknowledge {
                        step: id.to_string(),
                        var: q.var.clone(),
                        items: acc.acks,
                        at: self.now,
                    });
                }
                self.set_var(&q.var, value);
                self.state.answered += 1;
                let mut next = step.next;
                let chosen: Vec<usize> = acc.option.into_iter().chain(acc.options).collect();
                for k in chosen {
                    // Options from a variable carry no `set`/`next`; static ones come first.
                    if let Some(o) = self.static_option(q, id, k) {
                        self.assign(&o.set, id, None);
                        if o.next.is_some() && acc.option.is_some() {
                            next = o.next;
                        }
                    }
                }
                self.run_from(scope, next);
            }
            Err(inv) => {
                let attempts = attempts + 1;
                self.effects.push(Effect::Invalid {
                    step: id.to_string(),
                    reason: inv.code().into(),
                    attempt: attempts,
                });
                if attempts >= q.retries
                    && let Some(fb) = q.fallback
                {
                    return self.run_from(scope, Some(fb));
                }
                let text = match &q.invalid {
                    Some(t) => self.render(t, id),
                    None => inv.message(),
                };
                let plain = MessageStep {
                    typing: q.prompt.typing,
                    pacing: q.prompt.pacing,
                    ..MessageStep::default()
                };
                self.message(&plain, id, MessageKind::Invalid, Some(text));
                self.ask(scope, ix, attempts, true);
            }
        }
    }

    /// Maps the k-th visible option back to its static definition.
    fn static_option(
        &mut self,
        q: &'f QuestionStep,
        step: &str,
        k: usize,
    ) -> Option<&'f ChoiceOption> {
        let mut visible = 0;
        for o in &q.rules.options {
            if let Some(w) = o.when
                && !self.eval(w, step, None).is_some_and(|v| expr::truthy(&v))
            {
                continue;
            }
            if visible == k {
                return Some(o);
            }
            visible += 1;
        }
        None
    }

    fn parse_answer(
        &mut self,
        q: &QuestionStep,
        step: &str,
        input: &Input,
    ) -> Result<Accepted, Invalid> {
        use serde_json::json;
        let plain = |value| {
            Ok(Accepted {
                value,
                option: None,
                options: Vec::new(),
                acks: Vec::new(),
            })
        };
        let text = match input {
            Input::Text { text } => text.trim().to_string(),
            Input::Choice { values } => values.join(", "),
            _ => String::new(),
        };
        let locale = self.state.contact.locale.clone();
        let today = time::today(self.now, &self.tz);
        let r = &q.rules;
        match q.kind {
            QuestionType::Text => {
                if text.is_empty() {
                    return Err(Invalid::Empty);
                }
                let n = text.chars().count() as u32;
                if let Some(min) = r.min_length
                    && n < min
                {
                    return Err(Invalid::TooShort(min));
                }
                let max = r.max_length.unwrap_or(2000);
                if n > max {
                    return Err(Invalid::TooLong(max));
                }
                if let Some(re) = &r.pattern
                    && !re.is_match(&text)
                {
                    return Err(Invalid::Pattern);
                }
                plain(json!(text))
            }
            QuestionType::Number => {
                let x = answer::parse_number(&text, answer::uses_decimal_comma(locale.as_deref()))
                    .ok_or(if text.is_empty() {
                        Invalid::Empty
                    } else {
                        Invalid::NotANumber
                    })?;
                if r.integer && x.fract() != 0.0 {
                    return Err(Invalid::NotInteger);
                }
                if let Some(min) = r.min
                    && x < min
                {
                    return Err(Invalid::Below(min));
                }
                if let Some(max) = r.max
                    && x > max
                {
                    return Err(Invalid::Above(max));
                }
                if let Some(s) = r.step {
                    let base = r.min.unwrap_or(0.0);
                    let k = (x - base) / s;
                    if (k - k.round()).abs() > 1e-9 {
                        return Err(Invalid::Step(s));
                    }
                }
                plain(if x.fract() == 0.0 && x.abs() < 9e15 {
                    json!(x as i64)
                } else {
                    json!(x)
                })
            }
            QuestionType::Email => answer::parse_email(&text)
                .map(|e| json!(e))
                .ok_or(Invalid::Email)
                .and_then(plain),
            QuestionType::Url => answer::parse_url(&text)
                .map(|u| json!(u))
                .ok_or(Invalid::Url)
                .and_then(plain),
            QuestionType::Phone => {
                let country = r
                    .country
                    .clone()
                    .or_else(|| self.state.contact.country.clone())
                    .or_else(|| {
                        locale
                            .as_deref()
                            .and_then(|l| l.split(['-', '_']).nth(1))
                            .map(|c| c.to_ascii_uppercase())
                    });
                answer::parse_phone(&text, country.as_deref())
                    .map(|p| json!(p))
                    .ok_or(Invalid::Phone)
                    .and_then(plain)
            }
            QuestionType::Date => {
                let d = self.parse_date_bounded(q, &text, today, locale.as_deref())?;
                plain(json!(d.to_string()))
            }
            QuestionType::DateRange => {
                let (a, b) = match input {
                    Input::Choice { values } if values.len() == 2 => {
                        (values[0].clone(), values[1].clone())
                    }
                    _ => {
                        let (a, b) = answer::split_range(&text).ok_or(Invalid::Date)?;
                        (a.to_string(), b.to_string())
                    }
                };
                let a = self.parse_date_bounded(q, &a, today, locale.as_deref())?;
                let b = self.parse_date_bounded(q, &b, today, locale.as_deref())?;
                if b < a {
                    return Err(Invalid::RangeOrder);
                }
                plain(json!({"start": a.to_string(), "end": b.to_string()}))
            }
            QuestionType::Choice => {
                let options = self.visible_options(q, step);
                let k = match input {
                    Input::Choice { values } if values.len() == 1 => options
                        .iter()
                        .position(|o| o.value == values[0])
                        .ok_or(Invalid::NoMatch)?,
                    Input::Choice { .. } => return Err(Invalid::NoMatch),
                    _ => answer::match_choice(&text, &options).ok_or(Invalid::NoMatch)?,
                };
                Ok(Accepted {
                    value: options[k]
                        .typed
                        .clone()
                        .unwrap_or_else(|| json!(options[k].value)),
                    option: Some(k),
                    options: Vec::new(),
                    acks: Vec::new(),
                })
            }
            QuestionType::Multiple => {
                let options = self.visible_options(q, step);
                let picked: Vec<usize> = match input {
                    Input::Choice { values } => {
                        let mut out = Vec::new();
                        for v in values {
                            let k = options
                                .iter()
                                .position(|o| &o.value == v)
                                .ok_or(Invalid::NoMatchMultiple)?;
                            if !out.contains(&k) {
                                out.push(k);
                            }
                        }
                        out
                    }
                    _ => answer::match_choices(&text, &options).ok_or(Invalid::NoMatchMultiple)?,
                };
                let min = r.min_picks.unwrap_or(1);
                if (picked.len() as u32) < min {
                    return Err(Invalid::TooFewPicks(min));
                }
                if let Some(max) = r.max_picks
                    && picked.len() as u32 > max
                {
                    return Err(Invalid::TooManyPicks(max));
                }
                let mut ordered = picked.clone();
                ordered.sort();
                let values: Vec<serde_json::Value> = ordered
                    .iter()
                    .map(|&k| {
                        options[k]
                            .typed
                            .clone()
                            .unwrap_or_else(|| json!(options[k].value))
                    })
                    .collect();
                Ok(Accepted {
                    value: json!(values),
                    option: None,
                    options: ordered,
                    acks: Vec::new(),
                })
            }
            QuestionType::Rating | QuestionType::Nps => {
                let lo = if q.kind == QuestionType::Nps { 0 } else { 1 };
                let hi = r.scale as i64;
                let n = answer::parse_rating(&text).ok_or(Invalid::Rating(lo, hi as u32))?;
                if !(lo as i64..=hi).contains(&n) {
                    return Err(Invalid::Rating(lo, hi as u32));
                }
                plain(json!(n))
            }
            QuestionType::YesNo => answer::parse_yes_no(&text)
                .map(|b| json!(b))
                .ok_or(Invalid::YesNo)
                .and_then(plain),
            QuestionType::Checklist => {
                let texts: Vec<(String, String)> = r
                    .items
                    .iter()
                    .map(|it| (it.id.clone(), self.render(&it.text, step)))
                    .collect();
                let ticked: Vec<String> = match input {
                    Input::Choice { values } => values.clone(),
                    _ => {
                        // Typed: item numbers or ids, e.g. "1, 2, 3".
                        let cands: Vec<Candidate> = texts
                            .iter()
                            .map(|(id, t)| Candidate {
                                value: id.clone(),
                                label: t.clone(),
                                synonyms: vec![answer::normalize(id)],
                                typed: None,
                            })
                            .collect();
                        answer::match_choices(&text, &cands)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|k| texts[k].0.clone())
                            .collect()
                    }
                };
                if texts.iter().any(|(id, _)| !ticked.contains(id))
                    || ticked.iter().any(|t| !texts.iter().any(|(id, _)| id == t))
                {
                    return Err(Invalid::Unticked);
                }
                let acks = texts
                    .iter()
                    .map(|(id, t)| AckItem {
                        id: id.clone(),
                        text: t.clone(),
                        version: crate::compile::content_hash(t),
                    })
                    .collect();
                let ids: Vec<&String> = texts.iter().map(|(id, _)| id).collect();
                Ok(Accepted {
                    value: json!(ids),
                    option: None,
                    options: Vec::new(),
                    acks,
                })
            }
        }
    }

    fn parse_date_bounded(
        &self,
        q: &QuestionStep,
        text: &str,
        today: jiff::civil::Date,
        locale: Option<&str>,
    ) -> Result<jiff::civil::Date, Invalid> {
        let d =
            answer::parse_date(text, today, answer::month_first(locale)).ok_or(Invalid::Date)?;
        if let Some(min) = q
            .rules
            .min_date
            .as_ref()
            .and_then(|m| resolve_date(m, today))
            && d < min
        {
            return Err(Invalid::DateBefore(min));
        }
        if let Some(max) = q
            .rules
            .max_date
            .as_ref()
            .and_then(|m| resolve_date(m, today))
            && d > max
        {
            return Err(Invalid::DateAfter(max));
        }
        Ok(d)
    }

    fn wait_until(&mut self, spec: &WaitSpec, step: &str) -> Option<Timestamp> {
        let result = match spec {
            WaitSpec::For(span) => time::add_span(self.now, &self.tz, *span),
            WaitSpec::Until { time: t, days } => {
                time::next_local_time(self.now, &self.tz, *t, *days)
            }
            WaitSpec::At { at, offset } => {
                let text = self.render(at, step);
                time::parse_instant(&text, &self.tz)
                    .and_then(|ts| time::add_span(ts, &self.tz, *offset))
            }
            WaitSpec::UntilOpen(name) => self.until_open(name),
        };
        match result {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(step, format!("wait time could not be computed: {e}"));
                None
            }
        }
    }

    /// When a `wait: {until_open}` ends: now when the calendar is open (the participant
    /// is here), else the first opening outside quiet hours, looking at most
    /// [`MAX_QUIET_OPENINGS`] openings ahead; when every one of them is quiet, the
    /// first opening (which the wait then defers past quiet hours like any other).
    fn until_open(&self, name: &str) -> Result<Timestamp, String> {
        let cal = self
            .flow
            .calendars
            .get(name)
            .ok_or_else(|| format!("no calendar `{name}`"))?;
        let first = cal.next_open(self.now).ok_or_else(|| {
            format!(
                "calendar `{name}` does not open in the next {} days",
                crate::calendar::SEARCH_DAYS
            )
        })?;
        if first == self.now {
            return Ok(first);
        }
        let mut t = first;
        for _ in 0..MAX_QUIET_OPENINGS {
            let deferred = self.defer_quiet(t);
            if deferred == t {
                return Ok(t);
            }
            match cal.next_open(deferred) {
                Some(next) => t = next,
                None => break,
            }
        }
        Ok(first)
    }

    fn http_request(&mut self, h: &HttpStep, step: &str) -> HttpRequest {
        let url = self.render(&h.url, step);
        let headers = h
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), self.render(v, step)))
            .collect();
        let body = (!h.json.is_empty()).then(|| {
            let mut map = serde_json::Map::new();
            for (k, e) in &h.json {
                let v = self
                    .eval(*e, step, None)
                    .map(|v| to_json(&v))
                    .unwrap_or(serde_json::Value::Null);
                map.insert(k.clone(), v);
            }
            serde_json::Value::Object(map)
        });
        HttpRequest {
            method: h.method.clone(),
            url,
            headers,
            body,
            timeout_ms: h.timeout_ms,
        }
    }

    fn http_done(
        &mut self,
        scope: usize,
        ix: usize,
        result: Result<(u16, serde_json::Value), String>,
    ) {
        let step = self.step(scope, ix);
        let Kind::Http(h) = &step.kind else { return };
        let id = step.id.as_str();
        match result {
            Ok((status, body)) if (200..300).contains(&status) => {
                let response = expr::from_serialize(
                    serde_json::json!({"status": status, "body": body, "ok": true}),
                );
                self.assign(&h.save, id, Some(("response", response)));
                self.run_from(scope, step.next);
            }
            other => {
                let why = match other {
                    Ok((status, _)) => format!("HTTP status {status}"),
                    Err(e) => e,
                };
                let why_json = serde_json::json!(why);
                match h.on_error {
                    // Handled by the author: the reason is available as `http_error`.
                    Some(target) => {
                        self.effects.push(Effect::Set {
                            var: "http_error".into(),
                            value: why_json.clone(),
                        });
                        self.set_var("http_error", expr::from_json(&why_json));
                        self.run_from(scope, Some(target));
                    }
                    None => {
                        self.error(id, format!("request failed: {why}"));
                        self.run_from(scope, step.next);
                    }
                }
            }
        }
    }
}

/// A keyword alone always asks for a person; inside a longer message ("can I talk to a
/// real person?") only where free text is not the expected answer.
fn asks_for_person(keywords: &[String], text: &str, kind: QuestionType) -> bool {
    if keywords.is_empty() {
        return false;
    }
    let n = answer::normalize(text);
    if keywords.contains(&n) {
        return true;
    }
    let free_text = matches!(
        kind,
        QuestionType::Text | QuestionType::Email | QuestionType::Url | QuestionType::Phone
    );
    !free_text && keywords.iter().any(|k| contains_words(&n, k))
}

/// `needle` occurs in `hay` as whole words (bounded by non-alphanumerics or the ends).
fn contains_words(hay: &str, needle: &str) -> bool {
    let bounded = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    hay.match_indices(needle).any(|(at, _)| {
        bounded(hay[..at].chars().next_back()) && bounded(hay[at + needle.len()..].chars().next())
    })
}

fn resolve_date(d: &RelDate, today: jiff::civil::Date) -> Option<jiff::civil::Date> {
    match d {
        RelDate::Fixed(d) => Some(*d),
        RelDate::Today(span) => today.checked_add(*span).ok(),
    }
}

/// Words a person would type, for pacing (at least one word per six characters, so
/// languages without spaces are paced too).
fn typing_words(text: &str) -> f64 {
    let (mut words, mut chars, mut in_word) = (0usize, 0usize, false);
    for b in text.bytes() {
        // Count characters by their first byte, words by whitespace boundaries.
        if b & 0xC0 != 0x80 {
            chars += 1;
        }
        let space = b.is_ascii_whitespace();
        if !space && !in_word {
            words += 1;
        }
        in_word = !space;
    }
    words.max(chars / 6) as f64
}

/// The contact as templates see it: read field by field, only when used.
#[derive(Debug)]
struct ContactView(Arc<Contact>);

impl minijinja::value::Object for ContactView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let c = &self.0;
        let text = |v: &Option<String>| v.as_deref().map(Value::from);
        match key.as_str()? {
            "id" => Some(Value::from(c.id.as_str())),
            "name" => text(&c.name),
            "first_name" => c
                .name
                .as_deref()
                .and_then(|n| n.split_whitespace().next())
                .map(Value::from),
            "email" => text(&c.email),
            "phone" => text(&c.phone),
            "timezone" => text(&c.timezone),
            "locale" => text(&c.locale),
            "country" => text(&c.country),
            "tags" => Some(Value::from(c.tags.clone())),
            other => c.attributes.get(other).map(expr::from_json),
        }
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let mut keys: Vec<Value> = [
            "id",
            "name",
            "first_name",
            "email",
            "phone",
            "timezone",
            "locale",
            "country",
            "tags",
        ]
        .into_iter()
        .map(Value::from)
        .collect();
        keys.extend(self.0.attributes.keys().map(|k| Value::from(k.as_str())));
        minijinja::value::Enumerator::Values(keys)
    }
}
