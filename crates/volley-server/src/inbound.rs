//! The integration API: other systems upsert contacts, start a flow for a contact and
//! send a message into a conversation, with scoped API keys, and retry any write
//! safely with an `Idempotency-Key` header ([`idempotency`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use volley_store::{ContactUpsert, IdempotentRow};

use crate::App;
use crate::auth::{Scoped, scope};
use crate::conversation::{Manual, Origin};
use crate::error::{ApiError, ErrorBody};
use crate::ids::{hash_secret, new_sorted_id};
use crate::wire;

/// How long an idempotency key's answer is kept (ms): a day.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
/// Characters of an idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Bytes of an answer kept for replay (bigger answers are not kept).
const MAX_SAVED_BODY: usize = 1024 * 1024;
/// Bytes of a request body read to compare retries (the route limits come first).
const MAX_HASHED_BODY: usize = 16 * 1024 * 1024;

/// Requests with an idempotency key being answered now, by (caller, key).
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<(String, String)>>);

struct Release<'a>(&'a InFlight, (String, String));

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.0.lock().expect("in-flight lock").remove(&self.1);
    }
}

fn idem_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// Middleware: a write (`POST`, `PUT`, `PATCH`, `DELETE`) sent with `Idempotency-Key`
/// by a caller with credentials (API key or console session) is done once. A retry with
/// the same key, method, path and body gets the first answer again (marked
/// `Idempotency-Replayed: true`); the same key with a different request is refused
/// (422); while the first is still being answered, a retry gets 409. Answers are kept
/// a day, except server errors and 401, 403, 409 and 429, which a retry may change.
pub async fn idempotency(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = req.headers().get("idempotency-key").filter(|_| writes) else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.to_string()
        }
        _ => {
            return idem_error(
                StatusCode::BAD_REQUEST,
                "bad-idempotency-key",
                format!("Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            );
        }
    };
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .or_else(|| req.headers().get(header::COOKIE))
        .map(|v| v.as_bytes().to_vec());
    let Some(credentials) = credentials else {
        // Participants' writes are made idempotent by their client ids instead.
        return next.run(req).await;
    };
    let caller = hash_secret(&String::from_utf8_lossy(&credentials));
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_HASHED_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return idem_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "the body is too large",
            );
        }
    };
    let request_hash = {
        let mut whole = format!("{}\n{}\n", parts.method, parts.uri).into_bytes();
        whole.extend_from_slice(&bytes);
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&whole))
    };
    let now = app.clock.now_ms();
    match app
        .store
        .idempotent(&caller, &key, now - IDEMPOTENCY_TTL_MS)
        .await
    {
        Ok(Some(saved)) if saved.request_hash != request_hash => {
            return idem_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "this Idempotency-Key was used for a different request",
            );
        }
        Ok(Some(saved)) => return replay(saved),
        Ok(None) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    let slot = (caller.clone(), key.clone());
    if !app
        .in_flight
        .0
        .lock()
        .expect("in-flight lock")
        .insert(slot.clone())
    {
        return idem_error(
            StatusCode::CONFLICT,
            "idempotency-in-flight",
            "a request with this Idempotency-Key is being answered; retry in a moment",
        );
    }
    let _release = Release(&app.in_flight, slot);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    let keep = !status.is_server_error()
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::CONFLICT
                | StatusCode::TOO_MANY_REQUESTS
        );
    if !keep {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, MAX_SAVED_BODY).await else {
        return idem_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the answer could not be read",
        );
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let row = IdempotentRow {
        caller,
        key,
        request_hash,
        status: status.as_u16(),
        content_type,
        body: body.to_vec(),
        created_at: now,
    };
    if let Err(e) = app
        .store
        .save_idempotent(row, now - IDEMPOTENCY_TTL_MS)
        .await
    {
        // The write itself is done; a retry would repeat it, so say so.
        tracing::warn!(error = %e, "idempotency answer not saved");
    }
    Response::from_parts(parts, Body::from(body))
}

fn replay(saved: IdempotentRow) -> Response {
    let mut r = Response::new(Body::from(saved.body));
    *r.status_mut() = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = saved
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r.headers_mut()
        .insert("idempotency-replayed", HeaderValue::from_static("true"));
    r
}

// ---------------------------------------------------------------------------------
// Contacts

/// A contact to create or update, by the integration's own id for it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    /// Your system's id for the contact (1–200 characters).
    pub external_id: String,
    /// Profile attributes merged into the contact's (`name`, `email`, `timezone`,
    /// `locale`, tags, any other attribute flows can read).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub profile: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ContactResponse {
    pub id: String,
    pub external_id: String,
    pub created: bool,
    #[schema(value_type = Object)]
    pub profile: Value,
}

fn check_external_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad-external-id",
            "`external_id` is 1 to 200 characters on one line",
        ));
    }
    Ok(())
}

/// Creates or updates the contact with this external id, merging `profile` (checked
/// like a CSV import's attributes); returns it and whether it is new.
async fn upsert(
    app: &App,
    external_id: &str,
    profile: Map<String, Value>,
) -> Result<(volley_store::ContactRow, bool), ApiError> {
    check_external_id(external_id)?;
    let profile = Value::Object(profile);
    let _: volley_flow::Contact = serde_json::from_value(profile.clone())
        .map_err(|e| ApiError::bad_request("bad-profile", format!("`profile`: {e}")))?;
    let upsert = ContactUpsert {
        id: new_sorted_id("ct", app.clock.now_ms()),
        external_id: external_id.to_string(),
        profile: profile.to_string(),
    };
    let created = app
        .store
        .upsert_contacts(vec![upsert], app.clock.now_ms())
        .await?
        == 1;
    let row = app
        .store
        .contact_by_external_id(external_id)
        .await?
        .ok_or_else(|| ApiError::internal("contact vanished", external_id))?;
    Ok((row, created))
}

/// Creates or updates a contact by `external_id` (scope `contacts:write`).
#[utoipa::path(
    post,
    path = "/api/contacts",
    tag = "integrations",
    request_body = ContactRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses((status = 201, body = ContactResponse), (status = 200, body = ContactResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn upsert_contact(
    State(app): State<Arc<App>>,
    _: Scoped<scope::ContactsWrite>,
    body: Result<Json<ContactRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(crate::api::json_error)?;
    let (row, created) = upsert(&app, &req.external_id, req.profile).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = ContactResponse {
        id: row.id,
        external_id: req.external_id,
        created,
        profile: serde_json::from_str(&row.profile).unwrap_or(Value::Null),
    };
    Ok((status, Json(body)).into_response())
}

// ---------------------------------------------------------------------------------
// Starting a flow for a contact

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartForContact {
    /// The contact, by your system's id (created when unknown).
    pub external_id: String,
    /// Attributes merged into the contact's profile first.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub profile: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Started {
    pub conversation: String,
    pub contact: String,
    pub flow_version: i64,
}

/// Starts a flow for a contact now, as a campaign send does: its first messages wait in
/// the conversation for the contact (scope `conversations:write`).
#[utoipa::path(
    post,
    path = "/api/flows/{id}/start",
    tag = "integrations",
    params(("id" = String, Path, description = "Flow id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body = StartForContact,
    responses((status = 201, body = Started), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn start_flow(
    State(app): State<Arc<App>>,
    _: Scoped<scope::ConversationsWrite>,
    UrlPath(flow_id): UrlPath<String>,
    body: Result<Json<StartForContact>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(crate::api::json_error)?;
    let flow = app
        .flows
        .latest(&flow_id)
        .ok_or_else(|| ApiError::not_found("unknown-flow", format!("no flow `{flow_id}`")))?;
    let (contact, _) = upsert(&app, &req.external_id, req.profile).await?;
    let mut person: volley_flow::Contact =
        serde_json::from_str(&contact.profile).unwrap_or_default();
    person.id = contact.id.clone();
    let origin = Origin {
        origin: Some("api".into()),
        fired_timer: None,
        schedule: Vec::new(),
    };
    let version = flow.version;
    let conv = app
        .convs
        .start(&app, &contact.id, person, flow, origin)
        .await?;
    let body = Started {
        conversation: conv.id.clone(),
        contact: contact.id,
        flow_version: version,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

// ---------------------------------------------------------------------------------
// A message into a conversation

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationMessage {
    /// Markdown, at most 4,000 characters.
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct MessageSent {
    /// The log position of the message.
    pub seq: i64,
}

/// Characters of a message sent by an integration.
const MAX_MESSAGE_CHARS: usize = 4_000;

/// Sends a message into a conversation, shown as the flow's assistant (with its
/// automation label); the flow's state and timers are untouched (scope
/// `conversations:write`).
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/messages",
    tag = "integrations",
    params(("id" = String, Path, description = "Conversation id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body = IntegrationMessage,
    responses((status = 201, body = MessageSent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = []))
)]
pub async fn send_message(
    State(app): State<Arc<App>>,
    _: Scoped<scope::ConversationsWrite>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<IntegrationMessage>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(crate::api::json_error)?;
    let text = req.text.trim().to_string();
    if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request(
            "bad-text",
            format!("`text` is 1 to {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    let conv = app.convs.get(&app, &id).await?.ok_or_else(|| {
        ApiError::not_found("unknown-conversation", format!("no conversation `{id}`"))
    })?;
    let html = volley_flow::markdown::to_html(&text);
    let seq = conv
        .manual(&app, None, |_| {
            Ok(Manual {
                entries: vec![wire::entry(
                    "message",
                    &json!({"from": "bot", "via": "api", "text": text, "html": html}),
                )],
                handoff: None,
                input: None,
                timers: None,
                schedule: Vec::new(),
                fired_timer: None,
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(MessageSent { seq })).into_response())
}
