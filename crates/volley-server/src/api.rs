//! The JSON HTTP API: publishing flows (admin) and the participant protocol over plain
//! HTTP (start, inputs, long-poll, Server-Sent Events). Described by OpenAPI
//! (`/api/openapi.json`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::App;
use crate::auth::{Scoped, scope};
use crate::contacts::{self, Hints, Identity};
use crate::conversation::{Action, Conv};
use crate::error::{ApiError, ErrorBody};
use crate::session::{self, Next, Open, Subscription, Welcome};

type Api<T> = Result<T, ApiError>;

#[derive(Serialize, ToSchema)]
pub struct FlowSummary {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct FlowList {
    pub flows: Vec<FlowSummary>,
}

/// Published flows (public: id, title, description).
#[utoipa::path(get, path = "/api/flows", tag = "flows", responses((status = 200, body = FlowList)))]
pub async fn list_flows(State(app): State<Arc<App>>) -> Json<FlowList> {
    let flows = app
        .flows
        .all()
        .into_iter()
        .map(|p| FlowSummary {
            id: p.id.clone(),
            title: p.flow.title.clone(),
            description: p.flow.description.clone(),
            version: p.version,
        })
        .collect();
    Json(FlowList { flows })
}

#[derive(Serialize, ToSchema)]
pub struct Published {
    pub id: String,
    pub version: i64,
    pub hash: String,
    /// False when the source equals the latest version (nothing was created).
    pub created: bool,
    /// `volley check` warnings (the flow was published anyway).
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<volley_flow::Diagnostic>,
}

/// Publishes a flow (its YAML source as the body). Creates an immutable version, or
/// returns the latest one when the source is unchanged. A flow with errors is refused
/// with the same diagnostics as `volley check`.
#[utoipa::path(
    post,
    path = "/api/flows",
    tag = "flows",
    request_body(content = String, content_type = "application/yaml", description = "The flow file"),
    responses(
        (status = 201, description = "A new version", body = Published),
        (status = 200, description = "Unchanged: the latest version", body = Published),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "The flow has errors (`details.diagnostics`, `details.rendered`)", body = ErrorBody),
    ),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn publish_flow(
    State(app): State<Arc<App>>,
    _: Scoped<scope::FlowsWrite>,
    body: String,
) -> Api<(StatusCode, Json<Published>)> {
    let o = app
        .flows
        .publish(app.store.as_ref(), "flow.yaml", &body, app.clock.now_ms())
        .await?;
    let status = if o.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Published {
            id: o.published.id.clone(),
            version: o.published.version,
            hash: o.published.hash.clone(),
            created: o.created,
            warnings: o.warnings,
        }),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct FlowVersionInfo {
    pub version: i64,
    pub hash: String,
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct FlowDetail {
    pub id: String,
    pub title: String,
    pub versions: Vec<FlowVersionInfo>,
    /// The latest version's source.
    pub source: String,
}

/// A flow's versions and latest source (admin).
#[utoipa::path(
    get,
    path = "/api/flows/{id}",
    tag = "flows",
    params(("id" = String, Path, description = "Flow id")),
    responses((status = 200, body = FlowDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn flow_detail(
    State(app): State<Arc<App>>,
    _: Scoped<scope::FlowsWrite>,
    Path(id): Path<String>,
) -> Api<Json<FlowDetail>> {
    let latest = app
        .flows
        .latest(&id)
        .ok_or_else(|| ApiError::not_found("unknown-flow", format!("no flow `{id}`")))?;
    let versions = app.store.flow_versions(&id).await?;
    let source = app
        .store
        .flow_version(&id, latest.version)
        .await?
        .map(|v| v.source)
        .unwrap_or_default();
    Ok(Json(FlowDetail {
        id,
        title: latest.flow.title.clone(),
        versions: versions
            .into_iter()
            .map(|v| FlowVersionInfo {
                version: v.version,
                hash: v.hash,
                created_at: v.created_at,
            })
            .collect(),
        source,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Flow id.
    pub flow: String,
    /// The contact token from an earlier session (omit to create an anonymous contact).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub identity: Option<Identity>,
    /// Resume this conversation (else the latest one with this flow, or a new one).
    #[serde(default)]
    pub conversation: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
    /// Start a new conversation.
    #[serde(default)]
    pub restart: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StartResponse {
    #[serde(flatten)]
    pub welcome: Welcome,
    /// Event frames already due, in `seq` order.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

/// Opens a conversation over HTTP (the `hello` of the WebSocket protocol).
#[utoipa::path(
    post,
    path = "/api/conversations",
    tag = "participants",
    request_body = StartRequest,
    responses(
        (status = 200, body = StartResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn start(
    State(app): State<Arc<App>>,
    body: Result<Json<StartRequest>, axum::extract::rejection::JsonRejection>,
) -> Api<Json<StartResponse>> {
    let Json(req) = body.map_err(json_error)?;
    let s = session::open(
        &app,
        Open {
            flow: &req.flow,
            token: req.token.as_deref(),
            identity: req.identity.as_ref(),
            conversation: req.conversation.as_deref(),
            hints: Hints {
                timezone: req.timezone,
                locale: req.locale,
            },
            restart: req.restart,
        },
    )
    .await?;
    let mut sub = Subscription::open(&app, s.conv.clone(), 0).await?;
    let events = sub
        .drain_due(app.clock.now_ms())
        .iter()
        .map(|d| frame_json(&d.frame))
        .collect();
    Ok(Json(StartResponse {
        welcome: s.welcome().await,
        events,
    }))
}

fn frame_json(frame: &str) -> serde_json::Value {
    serde_json::from_str(frame).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn json_error(e: axum::extract::rejection::JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the body is too large",
        );
    }
    ApiError::bad_request("bad-json", e.body_text())
}

/// The conversation, if the request's contact (token or identity headers) owns it.
async fn owned(app: &App, headers: &HeaderMap, id: &str) -> Api<Arc<Conv>> {
    let contact_id = match (contacts::bearer(headers), identity_headers(headers)) {
        (Some(token), _) => app
            .store
            .contact_by_token(&crate::ids::hash_secret(token))
            .await?
            .map(|c| c.id)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?,
        (None, Some(identity)) => {
            contacts::resolve(app, None, Some(&identity), &Hints::default())
                .await?
                .row
                .id
        }
        (None, None) => {
            return Err(ApiError::unauthorized(
                "send the contact token: Authorization: Bearer …",
            ));
        }
    };
    match app.convs.get(app, id).await? {
        Some(c) if c.contact_id == contact_id => Ok(c),
        _ => Err(ApiError::not_found(
            "unknown-conversation",
            "no such conversation for this contact",
        )),
    }
}

fn identity_headers(headers: &HeaderMap) -> Option<Identity> {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    Some(Identity {
        user_id: get("x-volley-user-id")?,
        signature: get("x-volley-signature")?,
        profile: None,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputRequest {
    /// Client message id (retries with the same id are applied once).
    pub id: String,
    /// `answer`, `back`, `skip`, `say` (free text: to the person handling the
    /// conversation, or the answer to the open question) or `rate` (CSAT, 1–5).
    #[serde(rename = "type")]
    pub kind: String,
    /// The question's step (answers).
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// The rating (`rate`).
    #[serde(default)]
    pub score: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Ack {
    pub id: String,
    /// The input's sequence number in the log.
    pub seq: i64,
}

/// Sends an input (an answer, back or skip). Authorization: the contact token.
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/inputs",
    tag = "participants",
    params(("id" = String, Path, description = "Conversation id")),
    request_body = InputRequest,
    responses(
        (status = 200, body = Ack),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "stale-question, ended or with-human", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("contact_token" = []))
)]
pub async fn input(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<InputRequest>, axum::extract::rejection::JsonRejection>,
) -> Api<Json<Ack>> {
    // Who is asking comes first: a stranger learns nothing about the body.
    let conv = owned(&app, &headers, &id).await?;
    let Json(req) = body.map_err(json_error)?;
    if req.id.is_empty() || req.id.len() > 128 {
        return Err(ApiError::bad_request(
            "bad-json",
            "`id` must be 1 to 128 characters",
        ));
    }
    let action = match req.kind.as_str() {
        "answer" => {
            let step = req
                .step
                .ok_or_else(|| ApiError::bad_request("bad-json", "an answer needs `step`"))?;
            let input = match (req.text, req.values) {
                (Some(text), None) => volley_flow::Input::Text { text },
                (None, Some(values)) => volley_flow::Input::Choice { values },
                _ => {
                    return Err(ApiError::bad_request(
                        "bad-json",
                        "an answer has either `text` or `values`",
                    ));
                }
            };
            Action::Answer { step, input }
        }
        "back" => Action::Back,
        "skip" => Action::Skip,
        "say" => Action::Say {
            text: req
                .text
                .ok_or_else(|| ApiError::bad_request("bad-json", "`say` needs `text`"))?,
        },
        "rate" => Action::Rate {
            score: req
                .score
                .ok_or_else(|| ApiError::bad_request("bad-json", "`rate` needs `score`"))?,
        },
        other => {
            return Err(ApiError::bad_request(
                "unknown-type",
                format!("unknown input type `{other}`"),
            ));
        }
    };
    let seq = conv.input(&app, Some(&req.id), action).await?;
    Ok(Json(Ack { id: req.id, seq }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events after this sequence number.
    #[serde(default)]
    pub after: i64,
    /// Seconds to wait for an event (long-poll; 0 returns at once; at most 30).
    #[serde(default)]
    pub wait: u64,
}

#[derive(Serialize, ToSchema)]
pub struct EventsPage {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// The conversation's latest sequence number.
    pub last_seq: i64,
    /// The assistant is "typing" the next message.
    pub typing: bool,
}

/// Events after `after` that are due, waiting up to `wait` seconds for one (long-poll).
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/events",
    tag = "participants",
    params(("id" = String, Path, description = "Conversation id"), EventsQuery),
    responses((status = 200, body = EventsPage), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("contact_token" = []))
)]
pub async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<Json<EventsPage>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad-json", e.body_text()))?;
    let conv = owned(&app, &headers, &id).await?;
    let mut sub = Subscription::open(&app, conv.clone(), q.after.max(0)).await?;
    let wait = Duration::from_secs(q.wait.min(app.config.limits.max_poll_secs));
    let mut due = sub.drain_due(app.clock.now_ms());
    if due.is_empty() && !wait.is_zero() {
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = app.shutdown.clone();
        loop {
            // A shutdown answers at once (with nothing) rather than hold the server up.
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, sub.next(&app)) => next,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            match next {
                Ok(Some(Next::Event(d))) => {
                    due.push(d);
                    due.extend(sub.drain_due(app.clock.now_ms()));
                    break;
                }
                Ok(Some(Next::Typing)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
    // Signals outside the log (an agent typing) are for live streams only.
    due.retain(|d| d.seq > 0);
    let (_, last_seq, _) = conv.summary().await;
    let typing = sub.typing(app.clock.now_ms());
    Ok(Json(EventsPage {
        events: due.iter().map(|d| frame_json(&d.frame)).collect(),
        last_seq,
        typing,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Stream events after this sequence number.
    #[serde(default)]
    pub after: i64,
}

/// The conversation as Server-Sent Events: `event` frames (SSE `id` = `seq`) and
/// `typing` frames, each when due.
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/stream",
    tag = "participants",
    params(("id" = String, Path, description = "Conversation id"), StreamQuery),
    responses(
        (status = 200, description = "text/event-stream of protocol frames", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("contact_token" = []))
)]
pub async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<impl IntoResponse> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad-json", e.body_text()))?;
    let conv = owned(&app, &headers, &id).await?;
    let sub = Subscription::open(&app, conv, q.after.max(0)).await?;
    let shutdown = app.shutdown.clone();
    let events = futures_util::stream::unfold(
        (sub, app, shutdown),
        |(mut sub, app, mut shutdown)| async move {
            let next = tokio::select! {
                n = sub.next(&app) => n?,
                _ = shutdown.wait_for(|stopping| *stopping) => return None,
            };
            let event = match next {
                // Signals outside the log (seq 0) carry no id: they must not move the
                // client's Last-Event-ID.
                Next::Event(d) if d.seq == 0 => Event::default().data(&*d.frame),
                Next::Event(d) => Event::default().id(d.seq.to_string()).data(&*d.frame),
                Next::Typing => Event::default().data(r#"{"type":"typing","on":true}"#),
            };
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (sub, app, shutdown),
            ))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(20))))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the database answers. Any store failure is `503 unavailable` (and logged),
/// so a load balancer takes the instance out instead of seeing a server error.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(app): State<Arc<App>>) -> Api<Json<Health>> {
    if let Err(e) = app.store.api_key_count().await {
        tracing::warn!(%e, "not ready: the database does not answer");
        return Err(ApiError::unavailable());
    }
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Volley", description = "Interactive, quasi-real-time conversations. WebSocket protocol: docs/protocol.md."),
    paths(
        list_flows, publish_flow, flow_detail, start, input, events, stream, healthz, readyz,
        crate::audience::import_csv,
        crate::campaigns::create, crate::campaigns::list, crate::campaigns::detail,
        crate::campaigns::pause, crate::campaigns::resume, crate::campaigns::cancel,
        crate::auth::me, crate::auth::list_users, crate::auth::create_user_api,
        crate::auth::update_user, crate::auth::user_setup_link,
        crate::auth::list_keys, crate::auth::create_key, crate::auth::delete_key,
        crate::desk_api::desk, crate::desk_api::desk_stream, crate::desk_api::set_status,
        crate::desk_api::resolved, crate::desk_api::detail, crate::desk_api::stream,
        crate::desk_api::pick, crate::desk_api::reply, crate::desk_api::note,
        crate::desk_api::tags, crate::desk_api::snooze, crate::desk_api::transfer,
        crate::desk_api::resolve, crate::desk_api::typing, crate::desk_api::list_canned,
        crate::desk_api::create_canned, crate::desk_api::update_canned,
        crate::desk_api::delete_canned, crate::desk_api::set_queues,
        crate::events::list, crate::events::detail, crate::events::media, crate::events::publish_event,
        crate::premiere::register,
        crate::event_stats::event,
        crate::exports::results, crate::exports::transcript, crate::exports::attendance,
        crate::inbound::upsert_contact, crate::inbound::start_flow, crate::inbound::send_message,
        crate::analytics::handoffs, crate::event_stats::record_conversion, crate::analytics::flows::flow, crate::analytics::flows::contacts,
        crate::webhooks::create, crate::webhooks::list, crate::webhooks::delete,
        crate::webhooks::update, crate::webhooks::rotate_secret,
        crate::webhooks::deliveries, crate::webhooks::replay,
    ),
    components(schemas(ErrorBody, Identity)),
    modifiers(&Security),
    tags(
        (name = "flows", description = "Publishing and listing flows"),
        (name = "participants", description = "The participant protocol over HTTP"),
        (name = "campaigns", description = "Contacts import and scheduled campaigns"),
        (name = "operations", description = "Health checks"),
        (name = "accounts", description = "Console users, sessions and API keys (docs/accounts.md)"),
        (name = "events", description = "Premieres: published events, their showings and media (docs/events.md)"),
        (name = "analytics", description = "Reports (docs/metrics.md)"),
        (name = "integrations", description = "Contacts, flow starts and messages from other systems, with idempotency keys (docs/api.md)"),
        (name = "handoff", description = "The agent desk: hand-offs, replies, canned responses (docs/handoff.md)"),
        (name = "webhooks", description = "Outbound webhooks: endpoints, delivery logs, replay (docs/webhooks.md)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        components.add_security_scheme(
            "admin_key",
            bearer("An API key with the endpoint's scope (`admin` implies all)"),
        );
        components.add_security_scheme(
            "console_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::COOKIE,
                "A console session (POST /console/login); POST, PATCH and DELETE also need \
                 its CSRF token in `X-CSRF-Token` (from GET /api/me)",
            ))),
        );
        components.add_security_scheme(
            "contact_token",
            bearer("The contact token from `POST /api/conversations`"),
        );
    }
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    use utoipa::OpenApi;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
}
