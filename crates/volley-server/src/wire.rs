//! The conversation log's entries, and the frames participants receive from them.
//!
//! Every engine effect and participant input is logged with its full data (for
//! audit, analytics and agents). What a participant receives is a filtered view:
//! internal entries (step transitions, variables, goals) are not sent, and private
//! fields (a hand-off's internal reason) are stripped.

use serde_json::{Value, json};
use volley_flow::{Effect, Input, Question, QuestionType, markdown};

/// A log entry about to be written.
pub struct Entry {
    pub kind: &'static str,
    pub data: Value,
    /// Pacing pause before it becomes visible (messages only).
    pub delay_ms: u64,
}

/// The log entry for an engine effect.
pub fn from_effect(effect: &Effect) -> Entry {
    let plain = |kind, data| Entry {
        kind,
        data,
        delay_ms: 0,
    };
    match effect {
        Effect::Message(m) => Entry {
            kind: "message",
            data: json!({
                "from": "bot",
                "step": m.step,
                "text": m.text,
                "html": m.text.as_deref().map(markdown::to_html),
                "image": m.image,
                "video": m.video,
                "alt": m.alt,
                "links": m.links,
                "invalid": m.kind == volley_flow::MessageKind::Invalid,
                "typing": m.typing,
                "delay_ms": m.delay_ms,
            }),
            delay_ms: m.delay_ms,
        },
        Effect::Ask(q) => plain("ask", serde_json::to_value(q).unwrap_or(Value::Null)),
        other => {
            // Everything else is logged as the engine describes it.
            let mut v = serde_json::to_value(other).unwrap_or(Value::Null);
            let kind = match other {
                Effect::Enter { .. } => "enter",
                Effect::Invalid { .. } => "invalid",
                Effect::Answer { .. } => "answer",
                Effect::Acknowledge { .. } => "acknowledge",
                Effect::Set { .. } => "set",
                Effect::Goal { .. } => "goal",
                Effect::Split { .. } => "split",
                Effect::Back { .. } => "back",
                Effect::Handoff { .. } => "handoff",
                Effect::Wait { .. } => "wait",
                Effect::Http { .. } => "http",
                Effect::Webhook { .. } => "webhook",
                Effect::End { .. } => "end",
                Effect::Rejected { .. } => "rejected",
                Effect::Error { .. } => "error",
                Effect::Message(_) | Effect::Ask(_) => unreachable!("handled above"),
            };
            if let Some(obj) = v.as_object_mut() {
                obj.remove("type");
            }
            plain(kind, v)
        }
    }
}

/// The log entry for a participant's input, with the text to display for it.
pub fn from_input(input: &Input, step: Option<&str>, open: Option<&Question>) -> Entry {
    let data = match input {
        Input::Text { text } => json!({"step": step, "text": text, "label": text}),
        Input::Choice { values } => {
            json!({"step": step, "values": values, "label": choice_label(values, open)})
        }
        Input::Back => json!({"action": "back", "label": "Back"}),
        Input::Skip => json!({"step": step, "action": "skip", "label": "Skipped"}),
        other => {
            json!({"action": serde_json::to_value(other).ok().and_then(|v| v["type"].as_str().map(String::from))})
        }
    };
    Entry {
        kind: "input",
        data,
        delay_ms: 0,
    }
}

fn choice_label(values: &[String], open: Option<&Question>) -> String {
    let Some(q) = open else {
        return values.join(", ");
    };
    match q.input {
        QuestionType::Checklist => "✓ Confirmed".to_string(),
        QuestionType::DateRange => values.join(" – "),
        _ => values
            .iter()
            .map(|v| {
                q.options
                    .iter()
                    .find(|o| &o.value == v)
                    .map_or(v.as_str(), |o| o.label.as_str())
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// What a participant sees of a log entry, or `None` when it is internal.
pub fn visible_body(kind: &str, data: &Value) -> Option<Value> {
    let mut body = match kind {
        "message" | "ask" | "input" | "end" => data.clone(),
        "wait" => json!({"until": data["until"]}),
        "handoff" => json!({"queue": data["queue"]}),
        // The request itself (URL, headers) stays private.
        "http" => json!({}),
        _ => return None,
    };
    if let Some(obj) = body.as_object_mut() {
        obj.insert("kind".into(), Value::String(kind.into()));
    }
    Some(body)
}

/// The `event` frame for a visible log entry.
pub fn event_frame(seq: i64, at: i64, body: &Value) -> String {
    format!(r#"{{"type":"event","seq":{seq},"at":{at},"event":{body}}}"#)
}
