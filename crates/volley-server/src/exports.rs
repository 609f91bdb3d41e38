//! Exports: a flow's results (one row per conversation) as CSV or JSON Lines, streamed
//! page by page; a conversation's transcript; a showing's attendance as CSV.
//!
//! Results are read from the conversations' state snapshots (answers by variable,
//! goals, outcome), never by replaying logs, so an export of a million conversations is
//! one pass over one table in pages of [`PAGE`], with memory bounded by a page. Every
//! CSV cell a spreadsheet could take for a formula is neutralised ([`cell`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use volley_flow::Awaiting;
use volley_store::ConversationRow;

use crate::App;
use crate::auth::{Scoped, scope};
use crate::error::{ApiError, ErrorBody};

/// Conversations read per page of an export.
const PAGE: i64 = 500;
/// Log entries of one transcript export.
const MAX_TRANSCRIPT: i64 = 100_000;

/// A CSV cell that no spreadsheet runs as a formula: text starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return gets a leading `'` (OWASP's advice), unless the
/// whole cell is a plain number (`-12.5` stays a number).
pub fn cell(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && text.parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

pub(crate) fn csv_line(fields: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let fields: Vec<String> = fields.into_iter().map(|f| cell(&f)).collect();
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&fields);
    w.into_inner().unwrap_or_default()
}

/// A variable's value as one cell: text as is, lists joined with `; `, others as JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[derive(Deserialize, IntoParams)]
pub struct ResultsQuery {
    /// `csv` (default) or `jsonl`.
    pub format: Option<String>,
    /// Only conversations started on this version.
    pub version: Option<i64>,
    /// Only conversations started at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Only conversations started before this instant (RFC 3339).
    pub to: Option<String>,
}

fn instant(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        s.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|e| {
                ApiError::bad_request(
                    "bad-instant",
                    format!("`{name}`: {e} (RFC 3339, e.g. 2026-12-01T00:00:00Z)"),
                )
            })
    })
    .transpose()
}

/// One conversation as an export row.
struct ResultRow {
    id: String,
    contact: String,
    version: i64,
    status: String,
    outcome: Option<String>,
    started: i64,
    updated: i64,
    goals: Vec<String>,
    answers: BTreeMap<String, Value>,
}

async fn result_row(app: &App, row: ConversationRow, variables: &[String]) -> ResultRow {
    let state: Option<volley_flow::State> = serde_json::from_str(&row.state).ok();
    let flow = app
        .flows
        .version(app.store.as_ref(), &row.flow_id, row.flow_version)
        .await
        .ok();
    let outcome = match (&state, &flow) {
        (Some(s), Some(f)) => match s.awaiting(&f.flow) {
            Awaiting::Ended { outcome } => Some(outcome),
            _ => None,
        },
        _ => None,
    };
    let answers = state
        .as_ref()
        .map(|s| {
            variables
                .iter()
                .filter_map(|v| Some((v.clone(), s.var(v)?)))
                .collect()
        })
        .unwrap_or_default();
    ResultRow {
        id: row.id,
        contact: row.contact_id,
        version: row.flow_version,
        status: row.status,
        outcome,
        started: row.created_at,
        updated: row.updated_at,
        goals: state
            .as_ref()
            .map(|s| s.goals().map(str::to_string).collect())
            .unwrap_or_default(),
        answers,
    }
}

/// `GET /api/flows/{id}/results`: one row per conversation (admin).
#[utoipa::path(
    get,
    path = "/api/flows/{id}/results",
    tag = "flows",
    params(("id" = String, Path, description = "Flow id"), ResultsQuery),
    responses(
        (status = 200, description = "CSV (`text/csv`) or JSON Lines (`application/x-ndjson`), streamed: conversation id, contact id, flow version, status, outcome, started and updated instants, goals, then one column per question variable of any version"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn results(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let jsonl = match q.format.as_deref().unwrap_or("csv") {
        "csv" => false,
        "jsonl" => true,
        other => {
            return Err(ApiError::bad_request(
                "bad-format",
                format!("format `{other}`: use csv or jsonl"),
            ));
        }
    };
    let (from, to) = (
        instant("from", q.from.as_deref())?,
        instant("to", q.to.as_deref())?,
    );
    let versions = app.store.flow_versions(&id).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(
            "unknown-flow",
            format!("no flow `{id}`"),
        ));
    }
    // Columns: the question variables of every version, latest version's order first.
    let mut variables: Vec<String> = Vec::new();
    for v in versions.iter().rev() {
        let p = app
            .flows
            .version(app.store.as_ref(), &id, v.version)
            .await?;
        for (_, var, _) in p.flow.questions() {
            if !variables.iter().any(|x| x == var) {
                variables.push(var.to_string());
            }
        }
    }
    let header_line = if jsonl {
        Vec::new()
    } else {
        let fixed = [
            "conversation_id",
            "contact_id",
            "flow_version",
            "status",
            "outcome",
            "started_at",
            "updated_at",
            "goals",
        ];
        csv_line(
            fixed
                .iter()
                .map(|s| s.to_string())
                .chain(variables.iter().cloned()),
        )
    };
    let filter = move |r: &ConversationRow| {
        q.version.is_none_or(|v| r.flow_version == v)
            && from.is_none_or(|f| r.created_at >= f)
            && to.is_none_or(|t| r.created_at < t)
    };
    let variables = Arc::new(variables);
    let state = (app, id.clone(), 0_i64, Some(header_line), false);
    let stream = futures_util::stream::unfold(state, move |(app, id, after, first, done)| {
        let variables = variables.clone();
        async move {
            if let Some(h) = first {
                return Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(h)),
                    (app, id, after, None, done),
                ));
            }
            if done {
                return None;
            }
            let page = match app.store.flow_conversations(&id, after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    // The response has started: end it early; the log says why.
                    tracing::warn!(flow = %id, error = %e, "results export cut short");
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (app, id, after, None, true),
                    ));
                }
            };
            let last = page.last().map(|(no, _)| *no);
            let done = page.len() < PAGE as usize;
            let mut out = Vec::new();
            for (_, row) in page.into_iter().filter(|(_, r)| filter(r)) {
                let r = result_row(&app, row, &variables).await;
                if jsonl {
                    let line = json!({"conversation_id": r.id, "contact_id": r.contact, "flow_version": r.version,
                        "status": r.status, "outcome": r.outcome, "started_at": rfc3339(r.started),
                        "updated_at": rfc3339(r.updated), "goals": r.goals, "answers": r.answers});
                    out.extend_from_slice(line.to_string().as_bytes());
                    out.push(b'\n');
                } else {
                    let fixed = [
                        r.id,
                        r.contact,
                        r.version.to_string(),
                        r.status,
                        r.outcome.unwrap_or_default(),
                        rfc3339(r.started),
                        rfc3339(r.updated),
                        r.goals.join("; "),
                    ];
                    let answers = variables
                        .iter()
                        .map(|v| r.answers.get(v).map(value_text).unwrap_or_default());
                    out.extend(csv_line(fixed.into_iter().chain(answers)));
                }
            }
            Some((
                Ok(Bytes::from(out)),
                (app, id, last.unwrap_or(after), None, done),
            ))
        }
    });
    let (content_type, ext) = if jsonl {
        ("application/x-ndjson", "jsonl")
    } else {
        ("text/csv; charset=utf-8", "csv")
    };
    let disposition = format!(
        "attachment; filename=\"{}-results.{ext}\"",
        id.replace('"', "")
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct TranscriptQuery {
    /// `json` (default: every log entry) or `txt` (what was said, one line each).
    pub format: Option<String>,
}

/// `GET /api/conversations/{id}/transcript`: the whole log of one conversation (admin).
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/transcript",
    tag = "flows",
    params(("id" = String, Path, description = "Conversation id"), TranscriptQuery),
    responses((status = 200, description = "JSON (`{conversation, flow, events}`) or plain text"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn transcript(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<TranscriptQuery>,
) -> Result<Response, ApiError> {
    let text = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "txt" => true,
        other => {
            return Err(ApiError::bad_request(
                "bad-format",
                format!("format `{other}`: use json or txt"),
            ));
        }
    };
    let row = app.store.conversation(&id).await?.ok_or_else(|| {
        ApiError::not_found("unknown-conversation", format!("no conversation `{id}`"))
    })?;
    let events = app.store.events_after(&id, 0, MAX_TRANSCRIPT).await?;
    if !text {
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({"seq": e.seq, "kind": e.kind, "at": rfc3339(e.at),
                "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null)})
            })
            .collect();
        let body = json!({"conversation": id, "flow": row.flow_id, "flow_version": row.flow_version,
            "contact_id": row.contact_id, "status": row.status, "events": events});
        return Ok(axum::Json(body).into_response());
    }
    let mut out = format!(
        "Conversation {id} · flow {} v{}\n\n",
        row.flow_id, row.flow_version
    );
    for e in &events {
        let d: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        let who = match (e.kind.as_str(), d["from"].as_str()) {
            ("message", Some("bot")) => "bot",
            ("message", Some("agent")) => "agent",
            ("message", Some(_)) => "participant",
            ("answer", _) => "participant",
            _ => continue,
        };
        let said = d["text"]
            .as_str()
            .map(volley_flow::markdown::to_plain)
            .or_else(|| d.get("display").and_then(Value::as_str).map(str::to_string))
            .or_else(|| d.get("value").map(value_text))
            .unwrap_or_default();
        out.push_str(&format!("{}  {who}: {said}\n", rfc3339(e.at)));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct AttendanceQuery {
    /// The showing (an occurrence id from `GET /api/events/{id}`).
    pub showing: String,
}

/// What one viewer did in a showing.
#[derive(Default)]
struct Attendee {
    name: String,
    first_join: Option<i64>,
    last_leave: Option<i64>,
    watched_ms: i64,
    replay: bool,
    live: bool,
    chat: u32,
    votes: u32,
    clicks: u32,
    questions: u32,
}

/// `GET /api/events/{id}/attendance`: one row per viewer of a showing (admin), CSV.
#[utoipa::path(
    get,
    path = "/api/events/{id}/attendance",
    tag = "events",
    params(("id" = String, Path, description = "Event id"), AttendanceQuery),
    responses((status = 200, description = "CSV: viewer id, name, registered, email, first join, last leave, watched seconds, watched % of the media, live, replay, chat messages, votes, offer clicks, questions"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn attendance(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttendanceQuery>,
) -> Result<Response, ApiError> {
    let p = app
        .events
        .get(&id)
        .ok_or_else(|| ApiError::not_found("unknown-event", format!("no event `{id}`")))?;
    if !q.showing.starts_with(&format!("{id}@")) {
        return Err(ApiError::not_found(
            "unknown-showing",
            format!("`{}` is not a showing of `{id}`", q.showing),
        ));
    }
    let mut viewers: HashMap<String, Attendee> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut after = 0;
    loop {
        let rows = app.store.showing_log(&q.showing, after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in rows {
            let Some(v) = r.viewer_id.clone() else {
                continue;
            };
            if !viewers.contains_key(&v) {
                order.push(v.clone());
            }
            let a = viewers.entry(v).or_default();
            let d: Value = serde_json::from_str(&r.data).unwrap_or(Value::Null);
            match r.kind.as_str() {
                "join" => {
                    a.first_join.get_or_insert(r.at);
                    if d["replay"].as_bool().unwrap_or(false) {
                        a.replay = true
                    } else {
                        a.live = true
                    }
                }
                "leave" => {
                    a.last_leave = Some(r.at);
                    a.watched_ms += d["watched_ms"].as_i64().unwrap_or(0);
                }
                "name" => a.name = d["name"].as_str().unwrap_or_default().into(),
                "chat" => {
                    a.chat += 1;
                    if a.name.is_empty() {
                        a.name = d["name"].as_str().unwrap_or_default().into();
                    }
                }
                "vote" => a.votes += 1,
                "click" => a.clicks += 1,
                "ask" => a.questions += 1,
                _ => {}
            }
        }
    }
    let length = p.event.media.duration.as_millis().max(1) as i64;
    let mut out = csv_line(
        [
            "viewer_id",
            "name",
            "registered",
            "email",
            "first_join",
            "last_leave",
            "watched_seconds",
            "watched_percent",
            "live",
            "replay",
            "chat_messages",
            "votes",
            "offer_clicks",
            "questions",
        ]
        .map(String::from),
    );
    for v in order {
        let a = viewers.remove(&v).unwrap_or_default();
        let reg = app.store.viewer_registration(&id, &v).await?;
        let (registered, email, name) = match reg {
            Some(r) if r.showing_id == q.showing => (
                true,
                r.email.unwrap_or_default(),
                if a.name.is_empty() {
                    r.name
                } else {
                    a.name.clone()
                },
            ),
            _ => (false, String::new(), a.name.clone()),
        };
        let pct = (a.watched_ms.min(length) * 1000 / length) as f64 / 10.0;
        out.extend(csv_line([
            v,
            name,
            registered.to_string(),
            email,
            a.first_join.map(rfc3339).unwrap_or_default(),
            a.last_leave.map(rfc3339).unwrap_or_default(),
            (a.watched_ms / 1000).to_string(),
            format!("{pct:.1}"),
            a.live.to_string(),
            a.replay.to_string(),
            a.chat.to_string(),
            a.votes.to_string(),
            a.clicks.to_string(),
            a.questions.to_string(),
        ]));
    }
    let disposition = format!("attachment; filename=\"{id}-attendance.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formulas_are_neutralised_and_numbers_kept() {
        for (given, kept) in [
            ("=1+1", "'=1+1"),
            ("+SUM(A1)", "'+SUM(A1)"),
            ("-2+3", "'-2+3"),
            ("@cmd", "'@cmd"),
            ("\t=x", "'\t=x"),
            ("\r=x", "'\r=x"),
            (
                "=HYPERLINK(\"http://evil\")",
                "'=HYPERLINK(\"http://evil\")",
            ),
            ("-12.5", "-12.5"),
            ("+3", "+3"),
            ("plain", "plain"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(cell(given), kept, "{given:?}");
        }
    }
}
