//! volley-flow: the flow language, its checker and the conversation engine.
//!
//! Pure: no IO, no clock, no threads. Authors' YAML goes in through [`compile`]; a
//! [`Flow`] runs conversations with [`Flow::start`] and [`Flow::handle`], which return
//! a new [`State`] and the [`Effect`]s for the caller to carry out.

mod answer;
pub mod calendar;
mod compile;
mod diag;
mod engine;
mod expr;
mod flow;
pub mod markdown;
mod model;
pub mod sample;
pub mod time;
pub mod transcript;
pub mod yaml;

pub use calendar::{Calendar, QuietHours, ScheduleError, SchedulePart};
pub use compile::{
    Checked, MAX_HTTP_TIMEOUT_MS, MAX_SOURCE_BYTES, MAX_STEPS, check, compile, content_hash,
    is_flow_id, yaml_error,
};
pub use diag::{Diagnostic, Severity, did_you_mean, line_col};
pub use engine::{
    AckItem, Awaiting, ChoiceView, Contact, Effect, EngineError, HttpRequest, Input, Lateness,
    Link, MAX_CALL_DEPTH, MAX_CHOICES, MAX_HISTORY, MAX_INPUT_BYTES, MAX_STEPS_PER_TURN, Message,
    MessageKind, Question, STATE_FORMAT, State, Turn,
};
pub use expr::{FUEL, MAX_RENDER_BYTES};
pub use flow::{Assistant, Flow};
pub use model::{CalendarDoc, FORMAT_VERSION, PairList, Priority, QuestionType, RatingStyle};
pub use time::zone;

/// The JSON Schema of flow files, for editor autocompletion and validation.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(model::FlowDoc);
    serde_json::to_value(schema).expect("schema serialises")
}
