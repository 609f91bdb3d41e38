//! The conversation log's entries, and the frames participants receive from them.
//!
//! Every engine effect and participant input is logged with its full data (for
//! audit, analytics and agents). What a participant receives is a filtered view:
//! internal entries (step transitions, variables, goals) are not sent, and private
//! fields (a hand-off's internal reason) are stripped.
//!
//! Entries are serialised once, straight from typed values to JSON text: the logged
//! text is what the store writes, and a visible entry's frame is spliced from it
//! without parsing it again (this path runs for every event of every answer).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use volley_flow::{Effect, Input, Link, Question, QuestionType, markdown};

/// A log entry about to be written.
pub struct Entry {
    pub kind: &'static str,
    /// The logged data: a JSON object.
    pub data: String,
    /// Pacing pause before it becomes visible (messages only).
    pub delay_ms: u64,
    /// A typing indicator shows during the pause.
    pub typing: bool,
}

/// A bot message as logged (and shown).
#[derive(Serialize)]
struct MessageData<'a> {
    from: &'static str,
    step: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    video: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alt: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Link]>::is_empty")]
    links: &'a [Link],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    invalid: bool,
    typing: bool,
    delay_ms: u64,
}

/// The pacing fields of a logged message (read back when replaying history).
#[derive(Deserialize)]
struct Pacing {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    typing: bool,
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// The log entry for an engine effect. Without `pacing`, messages are logged with
/// no pause and no typing indicator.
pub fn from_effect(effect: &Effect, pacing: bool) -> Entry {
    let plain = |kind, data| Entry {
        kind,
        data,
        delay_ms: 0,
        typing: false,
    };
    match effect {
        Effect::Message(m) => {
            let delay_ms = if pacing { m.delay_ms } else { 0 };
            let typing = pacing && m.typing;
            let data = MessageData {
                from: "bot",
                step: &m.step,
                text: m.text.as_deref(),
                html: m.text.as_deref().map(markdown::to_html),
                image: m.image.as_deref(),
                video: m.video.as_deref(),
                alt: m.alt.as_deref(),
                links: &m.links,
                invalid: m.kind == volley_flow::MessageKind::Invalid,
                typing,
                delay_ms,
            };
            Entry {
                kind: "message",
                data: to_json(&data),
                delay_ms,
                typing,
            }
        }
        Effect::Ask(q) => plain("ask", to_json(q)),
        other => {
            // Everything else is logged as the engine describes it, without its tag.
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
            plain(kind, untagged(to_json(other)))
        }
    }
}

/// Removes the leading `"type":"…"` member that serde writes first for an internally
/// tagged enum.
fn untagged(json: String) -> String {
    const TAG: &str = r#"{"type":""#;
    let Some(rest) = json.strip_prefix(TAG) else {
        return json;
    };
    let Some(end) = rest.find('"') else {
        return json;
    };
    let rest = &rest[end + 1..];
    match rest.strip_prefix(',') {
        Some(members) => format!("{{{members}"),
        None => format!("{{{rest}"),
    }
}

#[derive(Serialize)]
struct InputData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

/// The log entry for a participant's input, with the text to display for it.
pub fn from_input(input: &Input, step: Option<&str>, open: Option<&Question>) -> Entry {
    let none = InputData {
        step: None,
        text: None,
        values: None,
        action: None,
        label: None,
    };
    let data = match input {
        Input::Text { text } => InputData {
            step,
            text: Some(text),
            label: Some(text.clone()),
            ..none
        },
        Input::Choice { values } => InputData {
            step,
            values: Some(values),
            label: Some(choice_label(values, open)),
            ..none
        },
        Input::Back => InputData {
            action: Some("back"),
            label: Some("Back".into()),
            ..none
        },
        Input::Skip => InputData {
            step,
            action: Some("skip"),
            label: Some("Skipped".into()),
            ..none
        },
        Input::Timeout => InputData {
            action: Some("timeout"),
            ..none
        },
        Input::Resume => InputData {
            action: Some("resume"),
            ..none
        },
        Input::Jump { .. } => InputData {
            action: Some("jump"),
            ..none
        },
        Input::HttpResponse { .. } => InputData {
            action: Some("http_response"),
            ..none
        },
        Input::HttpFailed { .. } => InputData {
            action: Some("http_failed"),
            ..none
        },
        Input::Late => InputData {
            action: Some("late"),
            ..none
        },
        Input::Expire => InputData {
            action: Some("expire"),
            ..none
        },
        Input::Close { .. } => InputData {
            action: Some("close"),
            ..none
        },
    };
    Entry {
        kind: "input",
        data: to_json(&data),
        delay_ms: 0,
        typing: false,
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

/// What a participant sees of a log entry (a JSON object with its `kind`), or `None`
/// when it is internal.
pub fn visible_body(kind: &str, data: &str) -> Option<String> {
    let private = |keep: &[&str]| {
        let full: Value = serde_json::from_str(data).unwrap_or_default();
        let mut body = json!({"kind": kind});
        for k in keep {
            body[*k] = full[*k].clone();
        }
        to_json(&body)
    };
    match kind {
        // A person's message: their name, not their account id.
        "message" if data.contains(r#""from":"agent""#) => {
            Some(private(&["from", "agent", "text", "html"]))
        }
        "message" | "ask" | "input" | "end" | "queue" | "csat_request" | "csat" => {
            let members = data.trim().strip_prefix('{')?.trim_start();
            let sep = if members.starts_with('}') { "" } else { "," };
            Some(format!(r#"{{"kind":"{kind}"{sep}{members}"#))
        }
        "wait" => Some(private(&["until"])),
        "handoff" => Some(private(&["queue"])),
        "assigned" => Some(private(&["agent"])),
        // The request itself (URL, headers) stays private.
        "http" => Some(private(&[])),
        _ => None,
    }
}

/// The frame consoles get for a log entry: all of it, private entries included.
pub fn staff_frame(seq: i64, kind: &str, at: i64, data: &str) -> String {
    let mut frame = String::with_capacity(data.len() + 80);
    frame.push_str(r#"{"type":"entry","seq":"#);
    frame.push_str(&seq.to_string());
    frame.push_str(r#","at":"#);
    frame.push_str(&at.to_string());
    frame.push_str(r#","kind":"#);
    frame.push_str(&to_json(&kind));
    frame.push_str(r#","data":"#);
    frame.push_str(if data.is_empty() { "{}" } else { data });
    frame.push('}');
    frame
}

/// A log entry a person's action writes (already JSON).
pub fn entry(kind: &'static str, data: &impl Serialize) -> Entry {
    Entry {
        kind,
        data: to_json(data),
        delay_ms: 0,
        typing: false,
    }
}

/// The pause and typing indicator of a logged message.
pub fn pacing_of(kind: &str, data: &str) -> (u64, bool) {
    if kind != "message" {
        return (0, false);
    }
    serde_json::from_str::<Pacing>(data).map_or((0, false), |p| (p.delay_ms, p.typing))
}

/// The `event` frame for a visible log entry.
pub fn event_frame(seq: i64, at: i64, body: &str) -> String {
    let mut frame = String::with_capacity(body.len() + 64);
    frame.push_str(r#"{"type":"event","seq":"#);
    frame.push_str(&seq.to_string());
    frame.push_str(r#","at":"#);
    frame.push_str(&at.to_string());
    frame.push_str(r#","event":"#);
    frame.push_str(body);
    frame.push('}');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_removed_and_bodies_carry_their_kind() {
        assert_eq!(
            untagged(r#"{"type":"end","outcome":"done"}"#.into()),
            r#"{"outcome":"done"}"#
        );
        assert_eq!(untagged(r#"{"type":"resume"}"#.into()), "{}");
        let body = visible_body("end", r#"{"outcome":"done"}"#).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, json!({"kind": "end", "outcome": "done"}));
        let empty: Value = serde_json::from_str(&visible_body("input", "{}").unwrap()).unwrap();
        assert_eq!(empty, json!({"kind": "input"}));
        let wait = visible_body("wait", r#"{"step":"w","until":"2026-01-01T00:00:00Z"}"#).unwrap();
        let v: Value = serde_json::from_str(&wait).unwrap();
        assert_eq!(v, json!({"kind": "wait", "until": "2026-01-01T00:00:00Z"}));
        assert_eq!(visible_body("enter", r#"{"step":"a"}"#), None);
        let frame: Value = serde_json::from_str(&event_frame(7, 9, &body)).unwrap();
        assert_eq!(frame["seq"], 7);
        assert_eq!(frame["event"]["kind"], "end");
    }
}
