//! The agents' JSON API and live streams (what the console calls): the desk (open
//! hand-offs, agents online), a conversation's whole log, and every action on it.
//! Authorization is by type: handlers take [`Agent`] (a signed-in agent or admin: a
//! person, since every action is recorded under their name) or, for settings,
//! `Scoped<scope::Admin>` (an admin session or an admin API key).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use volley_store::CannedRow;

use crate::App;
use crate::api::json_error;
use crate::auth::{Agent, Role, Scoped, Staff, scope};
use crate::error::{ApiError, ErrorBody};
use crate::handoff::{self, Actor, AgentInfo, AgentView, Desk, HandoffView, Target};
use crate::ids::new_id;

type Api<T> = Result<T, ApiError>;

/// Log entries returned with a conversation (the latest ones; earlier pages with `after`).
pub const MAX_LOG_ENTRIES: i64 = 2_000;
/// Earlier conversations of the contact listed with one.
const EARLIER: i64 = 20;
/// Resolved hand-offs per page.
pub const MAX_PAGE: i64 = 200;
/// Canned responses: code and title length, body length, count.
pub const MAX_CODE_CHARS: usize = 32;
pub const MAX_CANNED_BODY_CHARS: usize = 4_000;
pub const MAX_CANNED: usize = 1_000;

fn actor(s: &Staff) -> Actor {
    Actor {
        id: s.id.clone(),
        name: s.name.clone(),
    }
}

fn is_admin(s: &Staff) -> bool {
    s.role == Role::Admin
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Api<T> {
    b.map(|Json(t)| t).map_err(json_error)
}

async fn agent_info(app: &App, id: &str) -> Api<AgentInfo> {
    match app.store.user(id).await? {
        Some(u) if !u.disabled && (u.role == "agent" || u.role == "admin") => Ok(AgentInfo {
            id: u.id,
            name: u.name,
            capacity: u.capacity.max(0) as usize,
        }),
        _ => Err(ApiError::unprocessable(
            "unknown-agent",
            format!("no active agent `{id}`"),
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub title: String,
    /// Open now by its business hours (always, without hours).
    pub open: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DeskView {
    /// The caller.
    pub me: Staff,
    pub agents: Vec<AgentView>,
    pub queues: Vec<QueueView>,
    /// Every open hand-off (queued, assigned, snoozed), longest waiting first.
    pub open: Vec<HandoffView>,
}

/// The desk: open hand-offs, agents online, queues.
#[utoipa::path(get, path = "/api/desk", tag = "handoff", security(("console_session" = [])),
    responses((status = 200, body = DeskView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn desk(State(app): State<Arc<App>>, Agent(me): Agent) -> Json<DeskView> {
    let open = app.desk.open();
    let now = jiff::Timestamp::from_millisecond(app.clock.now_ms()).unwrap_or_default();
    let mut names: Vec<String> = app.config.handoff.queues.keys().cloned().collect();
    names.push(app.config.handoff.default_queue.clone());
    names.extend(open.iter().map(|r| r.queue.clone()));
    names.sort();
    names.dedup();
    let queues = names
        .into_iter()
        .map(|name| {
            let q = app.config.handoff.queues.get(&name);
            QueueView {
                title: q
                    .and_then(|q| q.title.clone())
                    .unwrap_or_else(|| name.clone()),
                open: q
                    .and_then(|q| q.hours.as_ref())
                    .is_none_or(|c| c.is_open(now)),
                name,
            }
        })
        .collect();
    Json(DeskView {
        me,
        agents: app.desk.agents(),
        queues,
        open: open.iter().map(HandoffView::from).collect(),
    })
}

/// Desk updates as Server-Sent Events (`{"type":"handoff","handoff":…}` when one
/// changes, `{"type":"agents"}` when agents come, go or change). While a stream is
/// open, its agent is online and gets conversations assigned.
#[utoipa::path(get, path = "/api/desk/stream", tag = "handoff", security(("console_session" = [])),
    responses((status = 200, description = "text/event-stream"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn desk_stream(State(app): State<Arc<App>>, Agent(me): Agent) -> Api<impl IntoResponse> {
    let info = agent_info(&app, &me.id).await?;
    let updates = app.desk.subscribe();
    let presence = Desk::connect(&app, info);
    let shutdown = app.shutdown.clone();
    let sees_all = is_admin(&me);
    let me = me.id;
    let events = futures_util::stream::unfold(
        (updates, presence, shutdown, me),
        move |(mut updates, presence, mut shutdown, me)| async move {
            let frame: Arc<str> = loop {
                tokio::select! {
                    u = updates.recv() => match u {
                        // Another agent's conversation changed: not this console's business.
                        Ok(u) if !sees_all && !u.to.is_empty() && !u.to.contains(&me) => continue,
                        Ok(u) => break u.frame,
                        // Missed some: the console reloads everything.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break r#"{"type":"reload"}"#.into(),
                        Err(_) => return None,
                    },
                    _ = shutdown.wait_for(|s| *s) => return None,
                }
            };
            Some((
                Ok::<_, Infallible>(Event::default().data(&*frame)),
                (updates, presence, shutdown, me),
            ))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `false`: away (keeps their conversations, gets no new ones).
    pub available: bool,
}

/// Sets the caller available or away (they must have the console open).
#[utoipa::path(post, path = "/api/desk/status", tag = "handoff", security(("console_session" = [])), request_body = StatusRequest,
    responses((status = 200, body = Vec<AgentView>), (status = 409, body = ErrorBody)))]
pub async fn set_status(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    req: Result<Json<StatusRequest>, JsonRejection>,
) -> Api<Json<Vec<AgentView>>> {
    let req = body(req)?;
    if !app.desk.set_available(&me.id, req.available) {
        return Err(ApiError::conflict(
            "offline",
            "open the console first: availability is per online agent",
        ));
    }
    Ok(Json(app.desk.agents()))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResolvedQuery {
    /// Resolved before this time (ms since the epoch; default now).
    #[serde(default)]
    pub before: Option<i64>,
    /// At most 200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Resolved hand-offs, most recent first.
#[utoipa::path(get, path = "/api/handoffs/resolved", tag = "handoff", security(("console_session" = [])), params(ResolvedQuery),
    responses((status = 200, body = Vec<HandoffView>)))]
pub async fn resolved(
    State(app): State<Arc<App>>,
    _: Agent,
    q: Result<Query<ResolvedQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<Json<Vec<HandoffView>>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let before = q.before.unwrap_or(i64::MAX);
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let rows = app.store.resolved_handoffs(before, limit).await?;
    Ok(Json(rows.iter().map(HandoffView::from).collect()))
}

#[derive(Serialize, ToSchema)]
pub struct LogEntry {
    pub seq: i64,
    pub kind: String,
    pub at: i64,
    /// The entry's data (JSON object), private fields included.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationSummary {
    pub id: String,
    pub flow: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CannedText {
    pub code: String,
    pub title: String,
    /// The body with this conversation's values filled in.
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct HandoffDetail {
    /// Its latest hand-off (absent if it never had one).
    pub handoff: Option<HandoffView>,
    pub conversation: ConversationSummary,
    /// The contact's profile (name, email, time zone, attributes…).
    #[schema(value_type = Object)]
    pub contact: serde_json::Value,
    /// The flow's variables now.
    #[schema(value_type = Object)]
    pub variables: BTreeMap<String, serde_json::Value>,
    /// The whole log (the latest 2,000 entries).
    pub log: Vec<LogEntry>,
    /// The contact's other conversations, most recent first.
    pub earlier: Vec<ConversationSummary>,
    pub canned: Vec<CannedText>,
}

fn summary(c: &volley_store::ConversationRow) -> ConversationSummary {
    ConversationSummary {
        id: c.id.clone(),
        flow: c.flow_id.clone(),
        status: c.status.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

/// Fills `{{ contact.name }}`, `{{ contact.first_name }}`, `{{ contact.email }}`,
/// `{{ agent.name }}` and `{{ var.NAME }}` in a canned response; unknown names become
/// empty.
pub fn fill(
    body: &str,
    contact: &serde_json::Value,
    agent: &str,
    vars: &BTreeMap<String, serde_json::Value>,
) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = rest[start + 2..start + end].trim();
        let value = match key.split_once('.') {
            Some(("contact", "first_name")) => contact["name"]
                .as_str()
                .and_then(|n| n.split_whitespace().next())
                .unwrap_or_default()
                .to_string(),
            Some(("contact", field)) => text(&contact[field]),
            Some(("agent", "name")) => agent.to_string(),
            Some(("var", name)) => vars.get(name).map(text).unwrap_or_default(),
            _ => String::new(),
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// A conversation as an agent sees it: the hand-off, the whole log, the contact, the
/// variables, earlier conversations, and the canned responses filled in for it.
#[utoipa::path(get, path = "/api/handoffs/{id}", tag = "handoff", security(("console_session" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = HandoffDetail), (status = 404, body = ErrorBody)))]
pub async fn detail(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
) -> Api<Json<HandoffDetail>> {
    let Some(conv) = app.store.conversation(&id).await? else {
        return Err(ApiError::not_found(
            "unknown-conversation",
            "no such conversation",
        ));
    };
    let handoff = match app.desk.row(&id) {
        Some(r) => Some(r),
        None => app.store.handoff(&id).await?,
    };
    let contact = app
        .store
        .contact(&conv.contact_id)
        .await?
        .and_then(|c| serde_json::from_str(&c.profile).ok())
        .unwrap_or(serde_json::Value::Null);
    let variables = serde_json::from_str::<volley_flow::State>(&conv.state)
        .map(|s| s.vars())
        .unwrap_or_default();
    let from = (conv.last_seq - MAX_LOG_ENTRIES).max(0);
    let log = app
        .store
        .events_after(&id, from, MAX_LOG_ENTRIES)
        .await?
        .into_iter()
        .map(|e| LogEntry {
            seq: e.seq,
            kind: e.kind,
            at: e.at,
            data: serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    let earlier = app
        .store
        .contact_conversations(&conv.contact_id, EARLIER + 1)
        .await?
        .iter()
        .filter(|c| c.id != id)
        .map(summary)
        .collect();
    let canned = app
        .store
        .canned_responses()
        .await?
        .into_iter()
        .map(|c| CannedText {
            text: fill(&c.body, &contact, &me.name, &variables),
            code: c.code,
            title: c.title,
        })
        .collect();
    Ok(Json(HandoffDetail {
        handoff: handoff.as_ref().map(HandoffView::from),
        conversation: summary(&conv),
        contact,
        variables,
        log,
        earlier,
        canned,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: i64,
}

/// A conversation's log as Server-Sent Events (`{"type":"entry","seq","at","kind","data"}`,
/// private entries included): the entries after `after`, then each new one.
#[utoipa::path(get, path = "/api/handoffs/{id}/stream", tag = "handoff", security(("console_session" = [])),
    params(("id" = String, Path, description = "Conversation id"), AfterQuery),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ErrorBody)))]
pub async fn stream(
    State(app): State<Arc<App>>,
    _: Agent,
    Path(id): Path<String>,
    q: Result<Query<AfterQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<impl IntoResponse> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let Some(conv) = app.convs.get(&app, &id).await? else {
        return Err(ApiError::not_found(
            "unknown-conversation",
            "no such conversation",
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(app.config.limits.queue_frames);
    let watcher = app.convs.next_subscriber_id();
    let upto = conv.watch(watcher, tx).await;
    // The entries up to the subscription point come from the log, the rest live.
    let mut history = Vec::new();
    let mut after = q.after.max(0);
    while after < upto {
        let page = app.store.events_after(&id, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        history.extend(
            page.iter()
                .filter(|e| e.seq <= upto)
                .map(|e| Arc::<str>::from(crate::wire::staff_frame(e.seq, &e.kind, e.at, &e.data))),
        );
    }
    struct Unwatch(Arc<crate::conversation::Conv>, u64);
    impl Drop for Unwatch {
        fn drop(&mut self) {
            self.0.unwatch(self.1);
        }
    }
    let guard = Unwatch(conv, watcher);
    let live = futures_util::stream::unfold(
        (rx, guard, app.shutdown.clone()),
        |(mut rx, guard, mut shutdown)| async move {
            let frame = tokio::select! {
                f = rx.recv() => f?,
                _ = shutdown.wait_for(|s| *s) => return None,
            };
            Some((frame, (rx, guard, shutdown)))
        },
    );
    use futures_util::StreamExt;
    let events = futures_util::stream::iter(history)
        .chain(live)
        .map(|f| Ok::<_, Infallible>(Event::default().data(&*f)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Serialize, ToSchema)]
pub struct Done {
    /// The `seq` of the first log entry written.
    pub seq: i64,
}

/// Takes a waiting conversation (or one from a colleague, for an admin).
#[utoipa::path(post, path = "/api/handoffs/{id}/pick", tag = "handoff", security(("console_session" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pick(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
) -> Api<Json<Done>> {
    if let Some(row) = app.desk.row(&id)
        && row.agent_id.is_some()
        && row.agent_id.as_deref() != Some(&me.id)
        && !is_admin(&me)
    {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not-yours",
            "this conversation is assigned to another agent",
        ));
    }
    let info = agent_info(&app, &me.id).await?;
    let seq = handoff::assign(&app, &id, &info, "pick", &actor(&me)).await?;
    Ok(Json(Done { seq }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    /// Client message id: a retry with the same id is applied once.
    #[serde(default)]
    pub id: Option<String>,
    /// Markdown; at most 4,000 characters.
    pub text: String,
}

fn client_id(id: &Option<String>) -> Api<Option<&str>> {
    match id.as_deref() {
        Some(i) if i.is_empty() || i.len() > 128 => Err(ApiError::bad_request(
            "bad-json",
            "`id` must be 1 to 128 characters",
        )),
        other => Ok(other),
    }
}

/// Replies to the participant (taking the conversation if it was waiting).
#[utoipa::path(post, path = "/api/handoffs/{id}/reply", tag = "handoff", security(("console_session" = [])), request_body = TextRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reply(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<TextRequest>, JsonRejection>,
) -> Api<Json<Done>> {
    let req = body(req)?;
    let seq = handoff::reply(
        &app,
        &id,
        &actor(&me),
        is_admin(&me),
        &req.text,
        client_id(&req.id)?,
    )
    .await?;
    Ok(Json(Done { seq }))
}

/// Adds a private note (agents only; never shown to the participant).
#[utoipa::path(post, path = "/api/handoffs/{id}/note", tag = "handoff", security(("console_session" = [])), request_body = TextRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 422, body = ErrorBody)))]
pub async fn note(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<TextRequest>, JsonRejection>,
) -> Api<Json<Done>> {
    let req = body(req)?;
    let seq = handoff::note(&app, &id, &actor(&me), &req.text, client_id(&req.id)?).await?;
    Ok(Json(Done { seq }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// The whole set (replaces the current tags): one word each, at most 20.
    pub tags: Vec<String>,
}

/// Replaces the conversation's tags.
#[utoipa::path(post, path = "/api/handoffs/{id}/tags", tag = "handoff", security(("console_session" = [])), request_body = TagsRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 422, body = ErrorBody)))]
pub async fn tags(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<TagsRequest>, JsonRejection>,
) -> Api<Json<Done>> {
    let req = body(req)?;
    let seq = handoff::set_tags(&app, &id, &actor(&me), &req.tags).await?;
    Ok(Json(Done { seq }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeRequest {
    /// Until when (ms since the epoch): in the future, at most 90 days ahead.
    pub until: i64,
}

/// Snoozes the conversation until a time (or until the participant writes).
#[utoipa::path(post, path = "/api/handoffs/{id}/snooze", tag = "handoff", security(("console_session" = [])), request_body = SnoozeRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 422, body = ErrorBody)))]
pub async fn snooze(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<SnoozeRequest>, JsonRejection>,
) -> Api<Json<Done>> {
    let req = body(req)?;
    let seq = handoff::snooze(&app, &id, &actor(&me), is_admin(&me), req.until).await?;
    Ok(Json(Done { seq }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// To this agent (a user id)…
    #[serde(default)]
    pub agent: Option<String>,
    /// …or back to a queue.
    #[serde(default)]
    pub queue: Option<String>,
}

/// Transfers the conversation to an agent or a queue.
#[utoipa::path(post, path = "/api/handoffs/{id}/transfer", tag = "handoff", security(("console_session" = [])), request_body = TransferRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 422, body = ErrorBody)))]
pub async fn transfer(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<TransferRequest>, JsonRejection>,
) -> Api<Json<Done>> {
    let req = body(req)?;
    let target = match (req.agent, req.queue) {
        (Some(agent), None) => Target::Agent(agent_info(&app, &agent).await?),
        (None, Some(queue)) => {
            let q = queue.trim();
            if q.is_empty() || q.len() > 64 {
                return Err(ApiError::unprocessable(
                    "bad-queue",
                    "a queue name is 1 to 64 characters",
                ));
            }
            Target::Queue(q.to_string())
        }
        _ => {
            return Err(ApiError::bad_request(
                "bad-json",
                "a transfer names either `agent` or `queue`",
            ));
        }
    };
    let seq = handoff::transfer(&app, &id, &actor(&me), is_admin(&me), target).await?;
    Ok(Json(Done { seq }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Return to the flow at this step (variables kept); without it the conversation
    /// ends (`resolved`) and the participant may rate the help.
    #[serde(default)]
    pub step: Option<String>,
    /// Variables to set when returning to the flow.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: BTreeMap<String, serde_json::Value>,
}

/// Resolves the conversation, or returns it to the flow.
#[utoipa::path(post, path = "/api/handoffs/{id}/resolve", tag = "handoff", security(("console_session" = [])), request_body = ResolveRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = Done), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn resolve(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<ResolveRequest>, JsonRejection>,
) -> Api<Json<Done>> {
    let req = body(req)?;
    let to_flow = req.step.map(|s| (s, req.vars));
    let seq = handoff::resolve(&app, &id, &actor(&me), is_admin(&me), to_flow).await?;
    Ok(Json(Done { seq }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    pub on: bool,
}

/// Shows (or hides) "… is typing" to the participant.
#[utoipa::path(post, path = "/api/handoffs/{id}/typing", tag = "handoff", security(("console_session" = [])), request_body = TypingRequest,
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn typing(
    State(app): State<Arc<App>>,
    Agent(me): Agent,
    Path(id): Path<String>,
    req: Result<Json<TypingRequest>, JsonRejection>,
) -> Api<axum::http::StatusCode> {
    let req = body(req)?;
    handoff::typing(&app, &id, &actor(&me), req.on).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct CannedView {
    pub id: String,
    /// Typed as `/code` in the reply box.
    pub code: String,
    pub title: String,
    /// With `{{ contact.name }}`, `{{ contact.first_name }}`, `{{ contact.email }}`,
    /// `{{ agent.name }}`, `{{ var.NAME }}`.
    pub body: String,
}

impl From<CannedRow> for CannedView {
    fn from(c: CannedRow) -> Self {
        CannedView {
            id: c.id,
            code: c.code,
            title: c.title,
            body: c.body,
        }
    }
}

/// The canned responses.
#[utoipa::path(get, path = "/api/canned", tag = "handoff", security(("console_session" = [])), responses((status = 200, body = Vec<CannedView>)))]
pub async fn list_canned(State(app): State<Arc<App>>, _: Agent) -> Api<Json<Vec<CannedView>>> {
    Ok(Json(
        app.store
            .canned_responses()
            .await?
            .into_iter()
            .map(CannedView::from)
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CannedRequest {
    /// Letters, digits, `-` and `_`; at most 32.
    pub code: String,
    pub title: String,
    /// At most 4,000 characters.
    pub body: String,
}

fn checked_canned(req: &CannedRequest) -> Api<()> {
    let code_ok = !req.code.is_empty()
        && req.code.chars().count() <= MAX_CODE_CHARS
        && req
            .code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !code_ok {
        return Err(ApiError::unprocessable(
            "bad-code",
            format!("a code is 1 to {MAX_CODE_CHARS} letters, digits, `-` or `_`"),
        ));
    }
    if req.title.trim().is_empty() || req.title.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "bad-title",
            "a title is 1 to 200 characters",
        ));
    }
    if req.body.trim().is_empty() || req.body.chars().count() > MAX_CANNED_BODY_CHARS {
        return Err(ApiError::unprocessable(
            "bad-body",
            format!("a body is 1 to {MAX_CANNED_BODY_CHARS} characters"),
        ));
    }
    Ok(())
}

async fn save_canned(
    app: &App,
    id: String,
    created_at: i64,
    req: CannedRequest,
) -> Api<CannedView> {
    checked_canned(&req)?;
    let row = CannedRow {
        id,
        code: req.code,
        title: req.title.trim().to_string(),
        body: req.body,
        created_at,
        updated_at: app.clock.now_ms(),
    };
    if !app.store.put_canned(row.clone()).await? {
        return Err(ApiError::conflict(
            "code-taken",
            format!("`/{}` is taken", row.code),
        ));
    }
    Ok(row.into())
}

/// Creates a canned response (admins).
#[utoipa::path(post, path = "/api/canned", tag = "handoff", security(("admin_key" = []), ("console_session" = [])), request_body = CannedRequest,
    responses((status = 200, body = CannedView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_canned(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    req: Result<Json<CannedRequest>, JsonRejection>,
) -> Api<Json<CannedView>> {
    let req = body(req)?;
    if app.store.canned_responses().await?.len() >= MAX_CANNED {
        return Err(ApiError::unprocessable(
            "too-many",
            format!("at most {MAX_CANNED} canned responses"),
        ));
    }
    let now = app.clock.now_ms();
    Ok(Json(save_canned(&app, new_id("cr"), now, req).await?))
}

/// Changes a canned response (admins).
#[utoipa::path(put, path = "/api/canned/{id}", tag = "handoff", security(("admin_key" = []), ("console_session" = [])), request_body = CannedRequest,
    params(("id" = String, Path, description = "Canned response id")),
    responses((status = 200, body = CannedView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_canned(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    Path(id): Path<String>,
    req: Result<Json<CannedRequest>, JsonRejection>,
) -> Api<Json<CannedView>> {
    let req = body(req)?;
    let existing = app.store.canned_responses().await?;
    let Some(old) = existing.iter().find(|c| c.id == id) else {
        return Err(ApiError::not_found(
            "unknown-canned",
            "no such canned response",
        ));
    };
    Ok(Json(
        save_canned(&app, id.clone(), old.created_at, req).await?,
    ))
}

/// Deletes a canned response (admins).
#[utoipa::path(delete, path = "/api/canned/{id}", tag = "handoff", security(("admin_key" = []), ("console_session" = [])),
    params(("id" = String, Path, description = "Canned response id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_canned(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    Path(id): Path<String>,
) -> Api<axum::http::StatusCode> {
    if app.store.delete_canned(&id).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown-canned",
            "no such canned response",
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuesRequest {
    /// The queues the agent serves; empty: every queue.
    pub queues: Vec<String>,
}

/// Sets the queues an agent serves (admins).
#[utoipa::path(put, path = "/api/users/{id}/queues", tag = "handoff", security(("admin_key" = []), ("console_session" = [])), request_body = QueuesRequest,
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 422, body = ErrorBody)))]
pub async fn set_queues(
    State(app): State<Arc<App>>,
    _: Scoped<scope::Admin>,
    Path(id): Path<String>,
    req: Result<Json<QueuesRequest>, JsonRejection>,
) -> Api<axum::http::StatusCode> {
    let req = body(req)?;
    agent_info(&app, &id).await?;
    let mut queues: Vec<String> = req.queues.iter().map(|q| q.trim().to_string()).collect();
    if queues.iter().any(|q| q.is_empty() || q.len() > 64) || queues.len() > 100 {
        return Err(ApiError::unprocessable(
            "bad-queue",
            "at most 100 queue names of 1 to 64 characters",
        ));
    }
    queues.sort();
    queues.dedup();
    app.store.set_agent_queues(&id, queues.clone()).await?;
    app.desk.set_queues(&id, &queues);
    Ok(axum::http::StatusCode::NO_CONTENT)
}
