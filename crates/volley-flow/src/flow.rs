//! The runnable form of a flow: steps resolved to indexes, texts and expressions compiled.
//!
//! A [`Flow`] is immutable and cheap to share (`Arc<Flow>`); a published version of a
//! flow on the server is one of these. Built only by `compile.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::civil::{Date, Time};

use crate::calendar::{Calendar, QuietHours};
use crate::engine::{Contact, Lateness};
use crate::expr::{Code, ExprId, Text};
use crate::model::{Priority, QuestionType, RatingStyle};

/// A compiled, checked flow, ready to run.
#[derive(Debug)]
pub struct Flow {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    /// Content hash of the source: the version identity a running conversation keeps.
    pub version: String,
    pub assistant: Assistant,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) pacing: Pacing,
    pub(crate) timezone: Option<String>,
    pub(crate) defaults: Vec<(String, serde_json::Value)>,
    pub(crate) human: Option<Human>,
    pub(crate) code: Code,
    /// Some question allows "back" (otherwise no undo history is kept).
    pub(crate) any_back: bool,
    /// `flow` as templates see it (`id`, `title`, `version`).
    pub(crate) info: minijinja::Value,
    /// Business-hours calendars by name (shared with every turn's template globals).
    pub(crate) calendars: Arc<Calendars>,
    pub(crate) quiet_hours: Option<QuietHours>,
    pub(crate) expire_after_ms: Option<u64>,
}

/// A flow's calendars by name.
pub(crate) type Calendars = BTreeMap<String, Calendar>;

/// How the assistant presents itself in the widget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Assistant {
    pub name: Option<String>,
    /// Always present: the honest automation label.
    pub label: String,
}

pub const DEFAULT_ASSISTANT_LABEL: &str = "Automated assistant";

#[derive(Debug, Clone)]
pub(crate) struct Human {
    pub keywords: Vec<String>,
    pub queue: Option<String>,
}

/// Main flow (index 0) or a sub-flow.
#[derive(Debug)]
pub(crate) struct Scope {
    pub name: Option<String>,
    pub steps: Vec<Step>,
    pub start: usize,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub index: HashMap<String, usize>,
    /// Most questions on any path from each step to the end of the scope (inclusive).
    pub remaining: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct Step {
    /// Step id as effects report it (`sub/step` inside sub-flows).
    pub id: String,
    pub next: Option<usize>,
    pub kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Message(Box<MessageStep>),
    Question(Box<QuestionStep>),
    Set(Vec<(String, ExprId)>),
    Branch {
        arms: Vec<(ExprId, usize)>,
        otherwise: Option<usize>,
    },
    Goto(usize),
    Call {
        scope: usize,
        with: Vec<(String, ExprId)>,
        returns: Vec<(String, String)>,
    },
    Split {
        arms: Vec<SplitArm>,
    },
    Goal {
        name: String,
        value: Option<ExprId>,
    },
    End {
        outcome: String,
    },
    Handoff {
        queue: Option<String>,
        reason: Option<Text>,
        priority: Priority,
    },
    Wait(Box<WaitStep>),
    Http(Box<HttpStep>),
}

impl Kind {
    /// Steps where a turn stops and waits for something outside the engine.
    pub fn stops(&self) -> bool {
        matches!(
            self,
            Kind::Question(_) | Kind::Wait(_) | Kind::Handoff { .. } | Kind::End { .. }
        ) || matches!(self, Kind::Http(h) if !h.fire_and_forget)
    }
}

#[derive(Debug, Default)]
pub(crate) struct MessageStep {
    pub text: Option<Text>,
    pub image: Option<Text>,
    pub video: Option<Text>,
    pub alt: Option<String>,
    pub links: Vec<(Text, Text)>,
    pub delay: Option<Delay>,
    pub typing: Option<bool>,
    pub pacing: Option<Pacing>,
}

/// An explicit delay: fixed, or uniformly random within a range (jitter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Delay {
    Fixed(u64),
    Range(u64, u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pacing {
    pub off: bool,
    pub wpm: f64,
    pub min_ms: u64,
    pub max_ms: u64,
    pub first: bool,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            off: false,
            wpm: 400.0,
            min_ms: 400,
            max_ms: 2500,
            first: false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct QuestionStep {
    pub kind: QuestionType,
    pub var: String,
    pub prompt: MessageStep,
    pub invalid: Option<Text>,
    pub retries: u32,
    pub fallback: Option<usize>,
    pub back: bool,
    pub optional: bool,
    pub placeholder: Option<String>,
    pub timeout: Option<(jiff::Span, usize)>,
    pub rules: Rules,
}

/// Type-specific validation rules of a question.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    pub min_length: Option<u32>,
    pub max_length: Option<u32>,
    pub pattern: Option<regex::Regex>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: Option<f64>,
    pub integer: bool,
    pub min_date: Option<RelDate>,
    pub max_date: Option<RelDate>,
    pub country: Option<String>,
    pub options: Vec<ChoiceOption>,
    pub options_from: Option<OptionsFrom>,
    pub min_picks: Option<u32>,
    pub max_picks: Option<u32>,
    pub scale: u32,
    pub style: Option<RatingStyle>,
    pub items: Vec<ChecklistItem>,
}

#[derive(Debug)]
pub(crate) struct ChoiceOption {
    pub label: Text,
    pub value: Option<Text>,
    /// A number or boolean value, saved with its type.
    pub typed: Option<serde_json::Value>,
    pub synonyms: Vec<String>,
    pub when: Option<ExprId>,
    pub next: Option<usize>,
    pub set: Vec<(String, ExprId)>,
}

#[derive(Debug)]
pub(crate) struct OptionsFrom {
    pub var: String,
    pub label: Option<Text>,
    pub value: Option<Text>,
    pub when: Option<ExprId>,
}

#[derive(Debug)]
pub(crate) struct ChecklistItem {
    pub id: String,
    pub text: Text,
}

/// A date bound: a fixed date, or today (in the contact's zone) plus an offset.
#[derive(Debug, Clone)]
pub(crate) enum RelDate {
    Fixed(Date),
    Today(jiff::Span),
}

#[derive(Debug, Clone)]
pub(crate) struct SplitArm {
    pub weight: f64,
    pub target: usize,
    pub name: String,
}

#[derive(Debug)]
pub(crate) struct WaitStep {
    pub spec: WaitSpec,
    pub late: Lateness,
    /// Where a wait resumed too late continues (else the conversation expires).
    pub on_late: Option<usize>,
}

#[derive(Debug)]
pub(crate) enum WaitSpec {
    For(jiff::Span),
    Until {
        time: Time,
        days: u8,
    },
    At {
        at: Text,
        offset: jiff::Span,
    },
    /// A calendar of the flow, by name (checked at compile time).
    UntilOpen(String),
}

#[derive(Debug)]
pub(crate) struct HttpStep {
    pub method: String,
    pub url: Text,
    pub headers: Vec<(String, Text)>,
    pub json: Vec<(String, ExprId)>,
    pub timeout_ms: u64,
    pub save: Vec<(String, ExprId)>,
    pub on_error: Option<usize>,
    pub fire_and_forget: bool,
}

impl Flow {
    /// Ids of the steps of the main flow, in order (for analytics and tools).
    pub fn step_ids(&self) -> impl Iterator<Item = &str> {
        self.scopes
            .iter()
            .flat_map(|s| s.steps.iter().map(|st| st.id.as_str()))
    }

    /// True when `id` names a step (`sub/step` for sub-flow steps).
    pub fn has_step(&self, id: &str) -> bool {
        self.locate(id).is_some()
    }

    pub(crate) fn locate(&self, id: &str) -> Option<(usize, usize)> {
        self.scopes
            .iter()
            .enumerate()
            .find_map(|(si, s)| s.steps.iter().position(|st| st.id == id).map(|ix| (si, ix)))
    }

    /// A business-hours calendar of the flow (`calendars:`), by name.
    pub fn calendar(&self, name: &str) -> Option<&Calendar> {
        self.calendars.get(name)
    }

    /// The flow's calendars with their names, in name order.
    pub fn calendars(&self) -> impl Iterator<Item = (&str, &Calendar)> {
        self.calendars.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The flow's quiet hours, to apply (with [`QuietHours::defer`] in
    /// [`Flow::contact_zone`]) to anything sent to a contact unprompted. The engine
    /// already defers its own waits and question timeouts.
    pub fn quiet_hours(&self) -> Option<&QuietHours> {
        self.quiet_hours.as_ref()
    }

    /// `expire_after` in milliseconds: a conversation expires (send
    /// [`crate::Input::Expire`]) this long after the participant's last input, or
    /// its start when there was none.
    pub fn expire_after_ms(&self) -> Option<u64> {
        self.expire_after_ms
    }

    /// The flow's own `timezone` (IANA name), used when a contact has none.
    pub fn timezone(&self) -> Option<&str> {
        self.timezone.as_deref()
    }

    /// The zone local times are read in for `contact`: the contact's `timezone`, else
    /// the flow's, else UTC (unknown names are skipped).
    pub fn contact_zone(&self, contact: &Contact) -> jiff::tz::TimeZone {
        contact
            .timezone
            .as_deref()
            .and_then(crate::time::zone)
            .or_else(|| self.timezone.as_deref().and_then(crate::time::zone))
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// Questions of the flow as `(step id, variable, type)`, in order.
    pub fn questions(&self) -> Vec<(&str, &str, QuestionType)> {
        self.scopes
            .iter()
            .flat_map(|s| s.steps.iter())
            .filter_map(|st| match &st.kind {
                Kind::Question(q) => Some((st.id.as_str(), q.var.as_str(), q.kind)),
                _ => None,
            })
            .collect()
    }
}
