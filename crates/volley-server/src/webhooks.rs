//! Outbound webhooks: what happens in conversations and premieres, POSTed to the
//! endpoints admins register, signed per Standard Webhooks (docs/webhooks.md).
//!
//! The logs are the outbox. The dispatcher reads the conversation log, the showing logs
//! and the registrations in rowid order after cursors kept in the store; it maps the
//! rows to webhook messages and, in one transaction, inserts a delivery per subscribed
//! endpoint and moves the cursors. A crash before that commit reads the same rows again;
//! after it, they are not read again: nothing is lost and nothing is queued twice. The
//! log is read, never written: what is logged stays the producers' business.
//!
//! The sender tries each pending delivery when it is due (on the injected clock) and
//! records every attempt with its outcome. A failure is retried after [`RETRY_MS`]; a
//! delivery that keeps failing is dead-lettered, and an admin may replay it. Every
//! attempt of a delivery sends the same body with the same `webhook-id`, so receivers
//! can drop repeats (a delivery interrupted by a crash is sent again). Settled
//! deliveries are deleted after `[webhooks] retention_days`.
//!
//! The signing, client and POST of Standard Webhooks are here too, shared with the
//! notification channel (`channels.rs`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use utoipa::{IntoParams, ToSchema};
use volley_flow::markdown::escape_html as esc;
use volley_store::{
    AttemptOutcome, AttemptRow, DeliveryRow, FeedEvent, FeedRegistration, FeedShowing, LogCursors,
    LogPage, NewDelivery, WebhookRow,
};

use crate::App;
use crate::auth::{Admin, Console, Scoped, scope};
use crate::error::{ApiError, ErrorBody};
use crate::ids::new_id;
use crate::outbound;
use crate::telemetry::names;

type Api<T> = Result<T, ApiError>;

/// Every event type, in the order the docs list them.
pub const TYPES: [&str; 11] = [
    "conversation.started",
    "conversation.completed",
    "answer.submitted",
    "goal.reached",
    "handoff.requested",
    "handoff.assigned",
    "handoff.resolved",
    "csat.submitted",
    "event.registered",
    "event.attended",
    "event.offer_clicked",
];

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

/// Waits before each retry of a failed delivery (then it is dead-lettered): nine
/// attempts over about 7 h 43 min.
pub const RETRY_MS: [i64; 8] = [
    5 * SECOND,
    30 * SECOND,
    2 * MINUTE,
    10 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    4 * HOUR,
];

/// Endpoints a server may have.
pub const MAX_ENDPOINTS: usize = 100;
/// Longest endpoint URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest endpoint description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Deliveries per page of the delivery log (and its largest `limit`).
pub const MAX_PAGE: i64 = 100;
/// Characters of an error answer's body kept in the attempt log.
const MAX_QUOTED_CHARS: usize = 200;
/// Rows read per log per dispatch round.
const FEED_PAGE: i64 = 500;
/// Longest time to establish a connection (within the request's timeout).
const MAX_CONNECT: Duration = Duration::from_secs(10);
/// Wait before reading the store again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How often settled deliveries past their retention are deleted.
const PRUNE_EVERY_MS: i64 = HOUR;
/// Deliveries deleted per transaction when pruning.
const PRUNE_BATCH: i64 = 5_000;
/// Deliveries and dead letters shown per endpoint on the console page.
const CONSOLE_ROWS: i64 = 20;

/// Conversation log kinds that become messages (besides a conversation's first entry,
/// which is `conversation.started`).
const EVENT_KINDS: [&str; 7] = [
    "end", "answer", "goal", "handoff", "assigned", "resolved", "csat",
];
/// Showing-log kinds that become messages.
const SHOWING_KINDS: [&str; 2] = ["join", "click"];

// ---------------------------------------------------------------------------------
// Standard Webhooks: signing and the signed POST (also used by `channels.rs`)

/// A Standard Webhooks signing key.
#[derive(Clone)]
pub struct Signer {
    /// HMAC-SHA256 keyed with the secret, cloned for each signature.
    mac: hmac::Hmac<Sha256>,
}

impl Signer {
    /// The key of a secret: `whsec_` + base64 is the decoded bytes; any other string is
    /// used as is.
    pub fn new(secret: &str) -> Result<Signer, String> {
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("invalid base64 after whsec_: {e}"))?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("the secret is empty".into());
        }
        let mac = <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key)
            .map_err(|e| e.to_string())?;
        Ok(Signer { mac })
    }

    /// `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = self.mac.clone();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{sig}")
    }
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The client for signed POSTs: no proxy, no redirects (a redirected POST may turn into
/// a GET, or leave the guarded addresses), and unless `allow_private` only public
/// addresses (the SSRF guard of `outbound`).
pub(crate) fn client(allow_private: bool, timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest panics when building a client before a TLS provider is installed.
    outbound::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("Volley/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .connect_timeout(timeout.min(MAX_CONNECT))
        .redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(outbound::GuardedResolver));
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the webhook client: {e}"))
}

/// The answer to a signed POST: its status and the start of its body.
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    /// `HTTP 500 Internal Server Error: database down`.
    pub fn describe(&self) -> String {
        let quoted: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(MAX_QUOTED_CHARS)
            .collect();
        format!("HTTP {}: {}", self.status, quoted.trim())
            .trim_end_matches([':', ' '])
            .to_string()
    }
}

/// Why a signed POST got no answer.
pub(crate) enum PostError {
    /// The destination is a private, loopback or link-local address.
    Refused(String),
    /// The request cannot be made (a bad URL or header).
    Invalid(String),
    /// No answer in time, or the connection failed: trying again may work.
    Failed(String),
}

impl PostError {
    pub fn message(&self) -> &str {
        match self {
            PostError::Refused(m) | PostError::Invalid(m) | PostError::Failed(m) => m,
        }
    }
}

/// What one signed POST sends.
pub(crate) struct Signed<'a> {
    pub url: &'a reqwest::Url,
    pub signer: &'a Signer,
    /// A second key that also signs (the previous secret, while a rotation overlaps).
    pub also: Option<&'a Signer>,
    /// The `webhook-id`: the same for every attempt of a message.
    pub id: &'a str,
    /// Unix seconds (`webhook-timestamp`): the wall clock, which receivers compare
    /// with theirs.
    pub timestamp: i64,
    pub body: Vec<u8>,
}

/// POSTs a body with the Standard Webhooks headers, within `timeout` (the answer's body
/// included), reading at most `response_bytes` of the answer.
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    msg: Signed<'_>,
    allow_private: bool,
    timeout: Duration,
    response_bytes: usize,
) -> Result<Answer, PostError> {
    // An IP literal skips the resolver: checked here.
    if !allow_private && !outbound::literal_allowed(msg.url) {
        return Err(PostError::Refused(outbound::refused(
            msg.url.host_str().unwrap_or_default(),
        )));
    }
    let mut signature = msg.signer.sign(msg.id, msg.timestamp, &msg.body);
    if let Some(previous) = msg.also {
        // Standard Webhooks: space-separated signatures; any one verifying is enough.
        signature.push(' ');
        signature.push_str(&previous.sign(msg.id, msg.timestamp, &msg.body));
    }
    let request = async {
        let mut resp = client
            .post(msg.url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", msg.id)
            .header("webhook-timestamp", msg.timestamp.to_string())
            .header("webhook-signature", signature)
            .body(msg.body)
            .send()
            .await
            .map_err(http_error)?;
        let status = resp.status();
        let mut body = Vec::new();
        while body.len() < response_bytes {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = response_bytes - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                // The status has arrived: a broken body does not change the outcome.
                Err(_) => break,
            }
        }
        Ok(Answer { status, body })
    };
    // The request's own timeout covers the headers; this one the body read too.
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(PostError::Failed(format!(
            "timed out after {} ms",
            timeout.as_millis()
        ))),
    }
}

fn http_error(e: reqwest::Error) -> PostError {
    let builder = e.is_builder();
    let msg = outbound::describe(e);
    if builder {
        PostError::Invalid(msg)
    } else if msg.contains(outbound::REFUSED) {
        // The guarded resolver's refusal (see `outbound::refused`).
        PostError::Refused(msg)
    } else {
        PostError::Failed(msg)
    }
}

// ---------------------------------------------------------------------------------
// Endpoints, in memory

/// An endpoint ready to send to.
struct Endpoint {
    row: WebhookRow,
    url: reqwest::Url,
    signer: Signer,
    /// The previous secret's key and until when it signs too.
    previous: Option<(Signer, i64)>,
    /// `None`: every type.
    types: Option<Vec<String>>,
}

impl Endpoint {
    fn new(row: WebhookRow) -> Result<Endpoint, String> {
        let url = reqwest::Url::parse(&row.url).map_err(|e| e.to_string())?;
        let signer = Signer::new(&row.secret)?;
        let previous = match (&row.previous_secret, row.previous_until) {
            (Some(secret), Some(until)) => Some((Signer::new(secret)?, until)),
            _ => None,
        };
        let types = match row.types.trim() {
            "*" => None,
            list => Some(list.split_whitespace().map(String::from).collect()),
        };
        Ok(Endpoint {
            row,
            url,
            signer,
            previous,
            types,
        })
    }

    fn wants(&self, kind: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|k| k == kind))
    }
}

/// The endpoints (a cache of the store's, refreshed when they change) and the signals
/// between the API, the dispatcher and the sender.
pub struct Webhooks {
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    /// Endpoints were added or removed: the dispatcher reads its cursors again.
    changed: Notify,
    /// Deliveries were queued or replayed: the sender looks for due ones.
    queued: Notify,
    /// Attempts recorded since the start (tests wait on it).
    attempts: watch::Sender<u64>,
    /// Where the dispatcher has got to (tests wait on it).
    dispatched: watch::Sender<LogCursors>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            endpoints: RwLock::default(),
            changed: Notify::new(),
            queued: Notify::new(),
            attempts: watch::Sender::new(0),
            dispatched: watch::Sender::new(LogCursors::default()),
        }
    }
}

impl Webhooks {
    fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.read().expect("webhooks lock").clone()
    }

    fn endpoint(&self, id: &str) -> Option<Arc<Endpoint>> {
        self.endpoints().iter().find(|e| e.row.id == id).cloned()
    }

    /// Reads the endpoints from the store again.
    async fn reload(&self, app: &App) -> Result<(), ApiError> {
        let rows = app.store.webhooks().await?;
        let list: Vec<Arc<Endpoint>> = rows
            .into_iter()
            .filter_map(|row| {
                let id = row.id.clone();
                Endpoint::new(row)
                    .map_err(|e| tracing::error!(endpoint = id, "unusable webhook endpoint: {e}"))
                    .ok()
                    .map(Arc::new)
            })
            .collect();
        *self.endpoints.write().expect("webhooks lock") = Arc::new(list);
        self.changed.notify_one();
        Ok(())
    }

    /// How many attempts have been recorded since the server started.
    pub fn attempts(&self) -> watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// Where the dispatcher has read the logs up to (every row up to there is queued).
    pub fn dispatched(&self) -> watch::Receiver<LogCursors> {
        self.dispatched.subscribe()
    }

    /// Waits until the dispatcher has read everything logged so far (at once when
    /// there is no endpoint: nothing is read then).
    pub async fn settled(&self, app: &App) {
        if self.endpoints().is_empty() {
            return;
        }
        let Ok(page) = app
            .store
            .log_since(LogCursors::default(), &[], &[], 0)
            .await
        else {
            return;
        };
        let end = page.upto;
        let mut rx = self.dispatched();
        let _ = rx
            .wait_for(|c| {
                c.events >= end.events
                    && c.showings >= end.showings
                    && c.registrations >= end.registrations
            })
            .await;
    }
}

/// Reads the endpoints (at start-up).
pub async fn load(app: &App) -> Result<(), String> {
    app.webhooks.reload(app).await.map_err(|e| e.message)
}

/// Starts the dispatcher, the sender and the retention task.
pub fn start(app: &Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(crate::tailer::follow(app.clone(), Dispatcher(None))),
        tokio::spawn(send(app.clone())),
        tokio::spawn(prune(app.clone())),
    ]
}

// ---------------------------------------------------------------------------------
// The dispatcher: log rows → deliveries

/// A message to send to every endpoint that wants its type.
struct Message {
    id: String,
    kind: &'static str,
    at: i64,
    payload: String,
}

/// `msg_` + 128 bits of a hash of what the message is about: the same every time the
/// same log row is read.
fn message_id(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn message(key: String, kind: &'static str, at: i64, data: Value) -> Message {
    let payload = json!({"type": kind, "timestamp": rfc3339(at), "data": data}).to_string();
    Message {
        id: message_id(&format!("{key}:{kind}")),
        kind,
        at,
        payload,
    }
}

/// The messages of a conversation log entry.
fn conversation_messages(app: &App, e: &FeedEvent, out: &mut Vec<Message>) {
    let data: Value = serde_json::from_str(&e.data).unwrap_or_default();
    let key = format!("cv:{}:{}", e.conversation_id, e.seq);
    let base = || {
        json!({
            "conversation_id": e.conversation_id,
            "flow_id": e.flow_id,
            "flow_version": e.flow_version,
            "contact": {"id": e.contact_id, "external_id": e.external_id},
        })
    };
    let with = |extra: Value| {
        let mut d = base();
        if let (Some(d), Value::Object(extra)) = (d.as_object_mut(), extra) {
            d.extend(extra);
        }
        d
    };
    if e.seq == 1 {
        out.push(message(
            key.clone(),
            "conversation.started",
            e.at,
            with(json!({"origin": e.origin})),
        ));
    }
    let agent = |d: &Value| json!({"id": d["agent_id"], "name": d["agent"]});
    let (kind, extra) = match e.kind.as_str() {
        "end" => (
            "conversation.completed",
            json!({"outcome": data["outcome"]}),
        ),
        "answer" => (
            "answer.submitted",
            json!({"step": data["step"], "variable": data["var"], "value": data["value"],
                   "text": data["text"]}),
        ),
        "goal" => (
            "goal.reached",
            json!({"goal": data["name"], "value": data["value"]}),
        ),
        "handoff" => {
            let queue = match &data["queue"] {
                Value::String(q) => q.clone(),
                _ => app.config.handoff.default_queue.clone(),
            };
            (
                "handoff.requested",
                json!({"step": data["step"], "queue": queue, "reason": data["reason"],
                       "priority": data["priority"]}),
            )
        }
        "assigned" => (
            "handoff.assigned",
            json!({"queue": data["queue"], "agent": agent(&data), "by": data["by"]}),
        ),
        "resolved" => (
            "handoff.resolved",
            json!({"agent": agent(&data), "returned_to": data["returned_to"]}),
        ),
        "csat" => (
            "csat.submitted",
            json!({"score": data["score"], "queue": data["queue"], "agent_id": data["agent_id"]}),
        ),
        _ => return,
    };
    out.push(message(key, kind, e.at, with(extra)));
}

/// The event id of a showing key: `{event}@{start}[~on-demand][#{viewer}]`.
fn event_of(showing: &str) -> &str {
    showing.split_once('@').map_or(showing, |(event, _)| event)
}

fn showing_messages(app: &App, s: &FeedShowing, out: &mut Vec<Message>) {
    let r = &s.row;
    let data: Value = serde_json::from_str(&r.data).unwrap_or_default();
    let key = format!("sh:{}:{}", r.showing_id, r.seq);
    let event_id = event_of(&r.showing_id);
    match r.kind.as_str() {
        // A viewer's first join of a showing (moderators do not attend).
        "join" if !s.repeat && data["moderator"] != Value::Bool(true) => out.push(message(
            key,
            "event.attended",
            r.at,
            json!({"event_id": event_id, "showing_id": r.showing_id, "viewer_id": r.viewer_id,
                   "replay": data["replay"], "position_ms": data["pos"]}),
        )),
        "click" => {
            let offer_id = data["offer"].as_str().unwrap_or_default();
            let offer = app.events.get(event_id).and_then(|p| {
                p.event.timeline.iter().find_map(|c| match &c.kind {
                    volley_events::CueKind::Offer(o) if o.id == offer_id => {
                        Some(json!({"id": o.id, "text": o.text, "url": o.url}))
                    }
                    _ => None,
                })
            });
            out.push(message(
                key,
                "event.offer_clicked",
                r.at,
                json!({"event_id": event_id, "showing_id": r.showing_id, "viewer_id": r.viewer_id,
                       "offer": offer.unwrap_or_else(|| json!({"id": offer_id})),
                       "replay": data["replay"], "position_ms": data["pos"]}),
            ));
        }
        _ => {}
    }
}

fn registration_message(r: &FeedRegistration) -> Message {
    let r = &r.row;
    let fields: Value = serde_json::from_str(&r.fields).unwrap_or_default();
    message(
        format!("rg:{}", r.id),
        "event.registered",
        r.registered_at,
        json!({"registration_id": r.id, "event_id": r.event_id, "showing_id": r.showing_id,
               "viewer_id": r.viewer_id, "name": r.name, "email": r.email, "zone": r.zone,
               "fields": fields}),
    )
}

fn messages(app: &App, page: &LogPage) -> Vec<Message> {
    let mut out = Vec::new();
    for e in &page.events {
        conversation_messages(app, e, &mut out);
    }
    for s in &page.showings {
        showing_messages(app, s, &mut out);
    }
    out.extend(page.registrations.iter().map(registration_message));
    out
}

/// One round: reads a page of each log after the cursors and queues its deliveries
/// with the cursors' move. Returns whether there may be more to read now.
async fn dispatch_round(
    app: &App,
    endpoints: &[Arc<Endpoint>],
    cursors: &mut Option<LogCursors>,
) -> Result<bool, volley_store::StoreError> {
    let from = match *cursors {
        Some(c) => c,
        None => app.store.log_cursors().await?,
    };
    let page = app
        .store
        .log_since(from, &EVENT_KINDS, &SHOWING_KINDS, FEED_PAGE)
        .await?;
    if page.upto == from {
        *cursors = Some(from);
        app.webhooks.dispatched.send_replace(from);
        return Ok(false);
    }
    let full = [
        page.events.len(),
        page.showings.len(),
        page.registrations.len(),
    ]
    .iter()
    .any(|n| *n as i64 >= FEED_PAGE);
    let mut deliveries = Vec::new();
    for m in messages(app, &page) {
        for e in endpoints {
            // An endpoint gets what happened since it was added.
            if e.wants(m.kind) && m.at >= e.row.created_at {
                deliveries.push(NewDelivery {
                    endpoint_id: e.row.id.clone(),
                    message_id: m.id.clone(),
                    kind: m.kind.into(),
                    payload: m.payload.clone(),
                    at: m.at.max(app.clock.now_ms()),
                });
            }
        }
    }
    let queued = !deliveries.is_empty();
    if app
        .store
        .enqueue_deliveries(from, page.upto, deliveries)
        .await?
    {
        *cursors = Some(page.upto);
        app.webhooks.dispatched.send_replace(page.upto);
        if queued {
            app.webhooks.queued.notify_one();
        }
        Ok(full)
    } else {
        // The cursors moved (an endpoint was added meanwhile): read them again.
        *cursors = None;
        Ok(true)
    }
}

/// The dispatcher: a round after every commit that wrote to a log, while there is an
/// endpoint; adding or removing endpoints wakes it (its cursors are read again).
struct Dispatcher(Option<LogCursors>);

impl crate::tailer::Reader for Dispatcher {
    const NAME: &'static str = "webhooks";

    async fn round(&mut self, app: &App) -> Result<bool, volley_store::StoreError> {
        let endpoints = app.webhooks.endpoints();
        if endpoints.is_empty() {
            // Nothing to send; adding the first endpoint moves the cursors to the ends.
            self.0 = None;
            return Ok(false);
        }
        dispatch_round(app, &endpoints, &mut self.0).await
    }

    fn reset(&mut self) {
        self.0 = None;
    }

    fn wake(app: &App) -> Option<&Notify> {
        Some(&app.webhooks.changed)
    }
}

// ---------------------------------------------------------------------------------
// The sender: due deliveries → attempts

/// The sender task: tries every pending delivery when it is due, a bounded number at
/// once. Runs until the server shuts down.
async fn send(app: Arc<App>) {
    let config = &app.config.webhooks;
    let allow_private = app.config.allow_private_http;
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    let client = match client(allow_private, timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks: {e}; nothing will be sent");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let (done_tx, mut done) = mpsc::unbounded_channel::<i64>();
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut shutdown = app.shutdown.clone();
    loop {
        let now = app.clock.now_ms();
        let free = permits.available_permits();
        let read = async {
            let due = if free > 0 {
                app.store
                    .due_deliveries(now, (free + in_flight.len()) as i64)
                    .await?
            } else {
                Vec::new()
            };
            let later = app.store.next_delivery_after(now).await?;
            Ok::<_, volley_store::StoreError>((due, later))
        };
        let next = match read.await {
            Ok((due, later)) => {
                for row in due {
                    if in_flight.contains(&row.id) {
                        continue;
                    }
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        break;
                    };
                    in_flight.insert(row.id);
                    let (app, client, done_tx) = (app.clone(), client.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let id = row.id;
                        attempt(&app, &client, row).await;
                        drop(permit);
                        let _ = done_tx.send(id);
                    });
                }
                later
            }
            Err(e) => {
                tracing::warn!(%e, "webhooks: cannot read deliveries; retrying");
                tokio::select! {
                    () = tokio::time::sleep(STORE_RETRY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
        };
        let at = next.unwrap_or(i64::MAX);
        tokio::select! {
            () = app.clock.sleep_until(at), if next.is_some() => {}
            Some(id) = done.recv() => {
                in_flight.remove(&id);
                while let Ok(id) = done.try_recv() {
                    in_flight.remove(&id);
                }
            }
            () = app.webhooks.queued.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// One attempt of a delivery, recorded with its outcome.
async fn attempt(app: &App, client: &reqwest::Client, row: DeliveryRow) {
    let config = &app.config.webhooks;
    let at = app.clock.now_ms();
    let started = Instant::now();
    let result = match app.webhooks.endpoint(&row.endpoint_id) {
        Some(endpoint) => {
            let signed = Signed {
                url: &endpoint.url,
                signer: &endpoint.signer,
                also: endpoint
                    .previous
                    .as_ref()
                    .filter(|(_, until)| at < *until)
                    .map(|(s, _)| s),
                id: &row.message_id,
                timestamp: jiff::Timestamp::now().as_second(),
                body: row.payload.clone().into_bytes(),
            };
            post_signed(
                client,
                signed,
                app.config.allow_private_http,
                Duration::from_millis(config.timeout_ms.max(1)),
                config.response_bytes,
            )
            .await
        }
        // Deleted (its deliveries go with it: nothing is recorded) or unusable.
        None => Err(PostError::Invalid(
            "the endpoint is gone or unusable".into(),
        )),
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    let (status, error, delivered, permanent) = match &result {
        Ok(a) if a.status.is_success() => (Some(a.status.as_u16() as i64), None, true, false),
        Ok(a) => (
            Some(a.status.as_u16() as i64),
            Some(a.describe()),
            false,
            false,
        ),
        Err(e) => (
            None,
            Some(e.message().to_string()),
            false,
            matches!(e, PostError::Refused(_) | PostError::Invalid(_)),
        ),
    };
    let failures = if delivered { 0 } else { row.failures + 1 };
    let retry = (!delivered && !permanent)
        .then(|| RETRY_MS.get(row.failures as usize))
        .flatten();
    let (state, next_at, label) = match (delivered, retry) {
        (true, _) => ("delivered", at, "delivered"),
        (false, Some(wait)) => ("pending", at + wait, "retry"),
        (false, None) => ("dead", at, "dead"),
    };
    let outcome = AttemptOutcome {
        attempt: AttemptRow {
            delivery_id: row.id,
            n: row.attempts + 1,
            at,
            status,
            error,
            duration_ms,
        },
        status: state.into(),
        failures,
        next_at,
    };
    match app.store.record_attempt(outcome).await {
        Ok(true) => {
            metrics::counter!(names::WEBHOOK_DELIVERIES, "result" => label).increment(1);
            if state == "dead" {
                tracing::warn!(
                    endpoint = row.endpoint_id,
                    delivery = row.id,
                    "webhook dead-lettered after {} attempts",
                    row.attempts + 1
                );
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(%e, delivery = row.id, "webhooks: attempt not recorded"),
    }
    app.webhooks.attempts.send_modify(|n| *n += 1);
}

/// The retention task: every [`PRUNE_EVERY_MS`] (on the server's clock), deletes the
/// deliveries settled (delivered or dead) more than `retention_days` ago.
async fn prune(app: Arc<App>) {
    let days = app.config.webhooks.retention_days;
    if days == 0 {
        return;
    }
    let keep_ms = (days as i64).saturating_mul(24 * HOUR);
    let mut shutdown = app.shutdown.clone();
    loop {
        let now = app.clock.now_ms();
        loop {
            match app.store.prune_deliveries(now - keep_ms, PRUNE_BATCH).await {
                Ok(n) if n >= PRUNE_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(%e, "webhooks: cannot prune the delivery log");
                    break;
                }
            }
        }
        tokio::select! {
            () = app.clock.sleep_until(now + PRUNE_EVERY_MS) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

// ---------------------------------------------------------------------------------
// The API

/// An endpoint to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http://` or `https://`. Private, loopback and link-local addresses are refused
    /// when sending unless the server allows them (`allow_private_http`).
    pub url: String,
    /// `["*"]` for every type, or a list of types (`conversation.started`, …).
    pub types: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// Deliveries of an endpoint by status.
#[derive(Serialize, ToSchema, Default)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub types: Vec<String>,
    pub description: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// `false` while paused: deliveries are queued, none is sent.
    pub enabled: bool,
    /// After a secret rotation, until when the previous secret signs too (Unix
    /// milliseconds).
    pub previous_secret_until: Option<i64>,
    pub deliveries: DeliveryCounts,
}

/// Changes to an endpoint: only the fields given change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub types: Option<Vec<String>>,
    pub description: Option<String>,
    /// `false` pauses the endpoint: deliveries keep being queued and are sent, in order,
    /// once it is enabled again.
    pub enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub view: WebhookView,
    /// The signing secret (`whsec_…`), shown once: verify signatures with it.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt.
    pub n: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// The HTTP status of the answer, if one came.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// The `webhook-id` header: the same for every attempt.
    pub message_id: String,
    pub r#type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i64,
    /// When a pending delivery is tried next (Unix milliseconds).
    pub next_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The body sent.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub attempt_log: Vec<AttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `dead` (default: all).
    pub status: Option<String>,
    /// Deliveries with an id below this (paging).
    pub before: Option<i64>,
    /// At most this many (default and largest: 100).
    pub limit: Option<i64>,
}

fn check_url(url: &str) -> Api<()> {
    let bad = |why: String| ApiError::unprocessable("invalid-url", why);
    if url.len() > MAX_URL_BYTES {
        return Err(bad(format!("a URL has at most {MAX_URL_BYTES} bytes")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("invalid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("the URL must be http:// or https:// with a host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("the URL may not carry credentials".into()));
    }
    Ok(())
}

fn check_types(types: &[String]) -> Api<String> {
    if types.iter().any(|t| t == "*") {
        return if types.len() == 1 {
            Ok("*".into())
        } else {
            Err(ApiError::unprocessable(
                "invalid-types",
                "`*` (every type) stands alone",
            ))
        };
    }
    if types.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid-types",
            "name at least one type, or `*` for all",
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for t in types {
        let Some(known) = TYPES.iter().find(|k| **k == t) else {
            return Err(ApiError::unprocessable(
                "invalid-types",
                format!("unknown type `{t}`; known: {}", TYPES.join(", ")),
            ));
        };
        if !out.contains(known) {
            out.push(known);
        }
    }
    Ok(out.join(" "))
}

fn check_description(d: &str) -> Api<String> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid-description",
            format!(
                "a description has at most {MAX_DESCRIPTION_CHARS} characters, no control characters"
            ),
        ));
    }
    Ok(d.to_string())
}

async fn view(app: &App, row: &WebhookRow) -> Api<WebhookView> {
    let mut counts = DeliveryCounts::default();
    for (status, n) in app.store.delivery_counts(&row.id).await? {
        match status.as_str() {
            "pending" => counts.pending = n,
            "delivered" => counts.delivered = n,
            "dead" => counts.dead = n,
            _ => {}
        }
    }
    Ok(WebhookView {
        id: row.id.clone(),
        url: row.url.clone(),
        types: row.types.split_whitespace().map(String::from).collect(),
        description: row.description.clone(),
        created_at: row.created_at,
        enabled: !row.disabled,
        previous_secret_until: row
            .previous_until
            .filter(|until| *until > app.clock.now_ms()),
        deliveries: counts,
    })
}

fn unknown_webhook(id: &str) -> ApiError {
    ApiError::not_found("unknown-webhook", format!("no webhook endpoint `{id}`"))
}

/// `POST /api/webhooks` (admin): a new endpoint and its signing secret (shown once).
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "too-many-webhooks", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn create(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    body: Result<Json<NewWebhook>, JsonRejection>,
) -> Api<(StatusCode, Json<CreatedWebhook>)> {
    let Json(new) = body.map_err(crate::api::json_error)?;
    let url = new.url.trim().to_string();
    check_url(&url)?;
    let types = check_types(&new.types)?;
    let description = check_description(&new.description)?;
    if app.webhooks.endpoints().len() >= MAX_ENDPOINTS {
        return Err(ApiError::conflict(
            "too-many-webhooks",
            format!("at most {MAX_ENDPOINTS} endpoints; delete one first"),
        ));
    }
    let row = WebhookRow {
        id: new_id("wh"),
        url,
        secret: new_secret(),
        types,
        description,
        created_at: app.clock.now_ms(),
        disabled: false,
        previous_secret: None,
        previous_until: None,
    };
    app.store.create_webhook(row.clone()).await?;
    app.webhooks.reload(&app).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            view: view(&app, &row).await?,
            secret: row.secret,
        }),
    ))
}

/// `GET /api/webhooks` (admin): the endpoints, with their deliveries counted (never
/// their secrets).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, body = [WebhookView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn list(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
) -> Api<Json<Vec<WebhookView>>> {
    let mut out = Vec::new();
    for row in app.store.webhooks().await? {
        out.push(view(&app, &row).await?);
    }
    Ok(Json(out))
}

/// `DELETE /api/webhooks/{id}` (admin): the endpoint and its delivery log; nothing more
/// is sent to it.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn delete(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Api<StatusCode> {
    if !app.store.delete_webhook(&id).await? {
        return Err(unknown_webhook(&id));
    }
    app.webhooks.reload(&app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * HOUR;

async fn endpoint_row(app: &App, id: &str) -> Api<WebhookRow> {
    app.store
        .webhooks()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| unknown_webhook(id))
}

async fn save(app: &App, row: &WebhookRow) -> Api<()> {
    if !app.store.update_webhook(row.clone()).await? {
        return Err(unknown_webhook(&row.id));
    }
    app.webhooks.reload(app).await
}

/// `PATCH /api/webhooks/{id}` (admin): changes the URL, types or description, or
/// pauses (`"enabled": false`) and resumes the endpoint.
#[utoipa::path(patch, path = "/api/webhooks/{id}", tag = "webhooks", request_body = WebhookChange,
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn update(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Json<WebhookChange>, JsonRejection>,
) -> Api<Json<WebhookView>> {
    let Json(change) = body.map_err(crate::api::json_error)?;
    let mut row = endpoint_row(&app, &id).await?;
    if let Some(url) = change.url {
        let url = url.trim().to_string();
        check_url(&url)?;
        row.url = url;
    }
    if let Some(types) = change.types {
        row.types = check_types(&types)?;
    }
    if let Some(d) = change.description {
        row.description = check_description(&d)?;
    }
    if let Some(enabled) = change.enabled {
        row.disabled = !enabled;
    }
    save(&app, &row).await?;
    if !row.disabled {
        // Deliveries held while paused are due now.
        app.webhooks.queued.notify_one();
    }
    Ok(Json(view(&app, &row).await?))
}

/// `POST /api/webhooks/{id}/rotate-secret` (admin): a new signing secret (shown once);
/// for 24 hours every message is signed with both the new and the previous secret.
#[utoipa::path(post, path = "/api/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = CreatedWebhook), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn rotate_secret(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Api<Json<CreatedWebhook>> {
    let mut row = endpoint_row(&app, &id).await?;
    row.previous_secret = Some(std::mem::replace(&mut row.secret, new_secret()));
    row.previous_until = Some(app.clock.now_ms() + ROTATION_OVERLAP_MS);
    save(&app, &row).await?;
    Ok(Json(CreatedWebhook {
        view: view(&app, &row).await?,
        secret: row.secret,
    }))
}

async fn delivery_views(app: &App, rows: Vec<DeliveryRow>) -> Api<Vec<DeliveryView>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut attempts = app.store.attempts(&ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let log = attempts
                .extract_if(.., |a| a.delivery_id == r.id)
                .map(|a| AttemptView {
                    n: a.n,
                    at: a.at,
                    status: a.status,
                    error: a.error,
                    duration_ms: a.duration_ms,
                })
                .collect();
            DeliveryView {
                id: r.id,
                message_id: r.message_id,
                r#type: r.kind,
                next_at: (r.status == "pending").then_some(r.next_at),
                status: r.status,
                attempts: r.attempts,
                created_at: r.created_at,
                updated_at: r.updated_at,
                payload: serde_json::from_str(&r.payload).unwrap_or_default(),
                attempt_log: log,
            }
        })
        .collect())
}

fn check_status(status: Option<&str>) -> Api<Option<&str>> {
    match status {
        None | Some("pending" | "delivered" | "dead") => Ok(status),
        Some(other) => Err(ApiError::unprocessable(
            "invalid-status",
            format!("unknown status `{other}`: pending, delivered or dead"),
        )),
    }
}

/// `GET /api/webhooks/{id}/deliveries` (admin): the delivery log, newest first, each
/// delivery with its attempts (time, HTTP status, error, duration).
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), DeliveriesQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn deliveries(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Api<Json<DeliveryPage>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let status = check_status(q.status.as_deref())?;
    if app.webhooks.endpoint(&id).is_none() {
        return Err(unknown_webhook(&id));
    }
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let rows = app
        .store
        .deliveries(&id, status, q.before.unwrap_or(i64::MAX), limit)
        .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: delivery_views(&app, rows).await?,
        next_before,
    }))
}

fn delivery_id(s: &str) -> Api<i64> {
    s.parse()
        .map_err(|_| ApiError::not_found("unknown-delivery", format!("no delivery `{s}`")))
}

async fn replay_one(app: &App, endpoint: &str, delivery: i64) -> Api<DeliveryRow> {
    if app.webhooks.endpoint(endpoint).is_none() {
        return Err(unknown_webhook(endpoint));
    }
    if !app
        .store
        .replay_delivery(endpoint, delivery, app.clock.now_ms())
        .await?
    {
        return Err(ApiError::not_found(
            "unknown-delivery",
            format!("no delivery {delivery} to this endpoint"),
        ));
    }
    app.webhooks.queued.notify_one();
    app.store
        .delivery(endpoint, delivery)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown-delivery", "the delivery is gone"))
}

/// `POST /api/webhooks/{id}/deliveries/{delivery}/replay` (admin): sends a delivery
/// again now (delivered or dead-lettered ones too), with the same `webhook-id` and
/// body; if that fails, it is retried on the usual schedule.
#[utoipa::path(post, path = "/api/webhooks/{id}/deliveries/{delivery}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), ("delivery" = i64, Path, description = "Delivery id")),
    responses((status = 202, body = DeliveryView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn replay(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path((id, delivery)): Path<(String, String)>,
) -> Api<(StatusCode, Json<DeliveryView>)> {
    let row = replay_one(&app, &id, delivery_id(&delivery)?).await?;
    let view = delivery_views(&app, vec![row])
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("replay", "no view"))?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

// ---------------------------------------------------------------------------------
// The console page

fn time_text(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or_default();
    format!(
        "<time datetime=\"{ts}\">{}</time>",
        ts.strftime("%Y-%m-%d %H:%M:%S UTC")
    )
}

fn deliveries_html(h: &mut String, csrf: &str, endpoint: &str, rows: &[DeliveryView]) {
    h.push_str(
        "<table>\n<thead><tr><th scope=\"col\">Delivery</th><th scope=\"col\">Type</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Attempts</th><th scope=\"col\"></th></tr></thead>\n<tbody>\n",
    );
    for d in rows {
        let _ = write!(
            h,
            "<tr class=\"status-{status}\"><td><code>{id}</code> {created}<br><small><code>{msg}</code></small></td>\
             <td>{kind}</td><td>{status}{next}</td><td><ol class=\"attempts\">",
            id = d.id,
            created = time_text(d.created_at),
            msg = esc(&d.message_id),
            kind = esc(&d.r#type),
            status = esc(&d.status),
            next = d
                .next_at
                .map(|n| format!("<br><small>next {}</small>", time_text(n)))
                .unwrap_or_default(),
        );
        for a in &d.attempt_log {
            let outcome = match (&a.status, &a.error) {
                (Some(s), None) => format!("HTTP {s}"),
                (_, Some(e)) => e.clone(),
                (None, None) => String::new(),
            };
            let _ = write!(
                h,
                "<li>{} — {} ({} ms)</li>",
                time_text(a.at),
                esc(&outcome),
                a.duration_ms
            );
        }
        let _ = writeln!(
            h,
            "</ol></td><td><form method=\"post\" action=\"/console/webhooks/replay\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"endpoint\" value=\"{endpoint}\">\
             <input type=\"hidden\" name=\"delivery\" value=\"{id}\">\
             <button type=\"submit\" class=\"secondary\">Replay</button></form></td></tr>",
            csrf = esc(csrf),
            endpoint = esc(endpoint),
            id = d.id,
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

async fn console_html(app: &App, csrf: &str, notice: Option<&str>) -> Api<String> {
    let mut h = String::with_capacity(16 * 1024);
    h.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Webhooks · Volley</title>\n<link rel=\"stylesheet\" href=\"/console/console.css\">\n\
         <script src=\"/console/console.js\" defer></script>\n</head>\n<body class=\"wide\">\n\
         <main>\n<p><a href=\"/console\">Console</a> · <a href=\"/console/account\">Account</a></p>\n\
         <h1>Webhooks</h1>\n",
    );
    if let Some(n) = notice {
        let _ = writeln!(h, "<p class=\"notice\" role=\"status\">{}</p>", esc(n));
    }
    let rows = app.store.webhooks().await?;
    if rows.is_empty() {
        h.push_str(
            "<p>No endpoints. Add one with <code>POST /api/webhooks</code> (docs/webhooks.md).</p>\n",
        );
    }
    for row in &rows {
        let v = view(app, row).await?;
        let _ = write!(
            h,
            "<section class=\"endpoint\" id=\"wh-{id}\" aria-labelledby=\"h-{id}\">\n\
             <h2 id=\"h-{id}\"><code>{url}</code></h2>\n<dl>\n<dt>Id</dt><dd><code>{id}</code></dd>\n\
             <dt>Description</dt><dd>{desc}</dd>\n<dt>Types</dt><dd>{types}</dd>\n\
             <dt>Added</dt><dd>{added}</dd>\n<dt>State</dt><dd>{state}</dd>\n\
             <dt>Deliveries</dt><dd>{p} pending, {d} delivered, {x} dead</dd>\n</dl>\n",
            id = esc(&row.id),
            url = esc(&row.url),
            desc = esc(&row.description),
            types = esc(&v.types.join(", ")),
            added = time_text(row.created_at),
            state = match (v.enabled, v.previous_secret_until) {
                (false, _) => "Paused: deliveries are queued, none is sent".to_string(),
                (true, Some(until)) => format!(
                    "Enabled; the previous secret also signs until {}",
                    time_text(until)
                ),
                (true, None) => "Enabled".to_string(),
            },
            p = v.deliveries.pending,
            d = v.deliveries.delivered,
            x = v.deliveries.dead,
        );
        let dead = app
            .store
            .deliveries(&row.id, Some("dead"), i64::MAX, CONSOLE_ROWS)
            .await?;
        let _ = writeln!(h, "<h3>Dead letters</h3>");
        if dead.is_empty() {
            h.push_str("<p>None.</p>\n");
        } else {
            deliveries_html(&mut h, csrf, &row.id, &delivery_views(app, dead).await?);
        }
        let recent = app
            .store
            .deliveries(&row.id, None, i64::MAX, CONSOLE_ROWS)
            .await?;
        let _ = writeln!(h, "<h3>Recent deliveries</h3>");
        if recent.is_empty() {
            h.push_str("<p>None yet.</p>\n");
        } else {
            deliveries_html(&mut h, csrf, &row.id, &delivery_views(app, recent).await?);
        }
        h.push_str("</section>\n");
    }
    h.push_str("</main>\n</body>\n</html>\n");
    Ok(h)
}

/// The signed-in admin; a browser without a session goes to sign in.
fn admin_or_page(console: Result<Console, ApiError>) -> Result<Console, Box<Response>> {
    crate::console::admin_or_page(console, "Webhooks are managed by admins.")
}

#[derive(Deserialize)]
pub struct PageQuery {
    replayed: Option<i64>,
}

/// `GET /console/webhooks` (admins): every endpoint with its dead letters and recent
/// deliveries, each with its attempts and a replay button.
pub async fn console_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let c = match admin_or_page(console) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let notice = query
        .ok()
        .and_then(|Query(q)| q.replayed)
        .map(|id| format!("Delivery {id} is queued to be sent again."));
    match console_html(&app, &c.csrf, notice.as_deref()).await {
        Ok(html) => crate::console::page(StatusCode::OK, html),
        Err(e) => crate::console::message_page(e.status, "Cannot show webhooks", &e.message),
    }
}

#[derive(Deserialize)]
pub struct ReplayForm {
    endpoint: String,
    delivery: String,
}

/// `POST /console/webhooks/replay` (admins; form: `csrf`, `endpoint`, `delivery`):
/// replays a delivery and goes back to the page.
pub async fn console_replay(
    _: Admin,
    State(app): State<Arc<App>>,
    form: Result<Form<ReplayForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return crate::console::message_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "Send the replay form (endpoint, delivery).",
        );
    };
    let result = async { replay_one(&app, &f.endpoint, delivery_id(&f.delivery)?).await }.await;
    match result {
        Ok(row) => Redirect::to(&format!(
            "/console/webhooks?replayed={}#wh-{}",
            row.id,
            form_urlencoded::byte_serialize(f.endpoint.as_bytes()).collect::<String>()
        ))
        .into_response(),
        Err(e) => crate::console::message_page(e.status, "Cannot replay", &e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification's reference libraries.
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(Signer::new("whsec_!!").is_err());
        assert!(Signer::new("").is_err());
    }

    #[test]
    fn types_are_checked_and_deduplicated() {
        assert_eq!(check_types(&["*".into()]).unwrap(), "*");
        assert!(check_types(&["*".into(), "goal.reached".into()]).is_err());
        assert!(check_types(&[]).is_err());
        assert!(check_types(&["goal.missed".into()]).is_err());
        assert_eq!(
            check_types(&["goal.reached".into(), "goal.reached".into()]).unwrap(),
            "goal.reached"
        );
        assert!(check_url("ftp://example.com/x").is_err());
        assert!(check_url("https://user:pw@example.com/x").is_err());
        assert!(check_url("https://example.com/hooks?x=1").is_ok());
    }

    #[test]
    fn message_ids_are_stable_and_events_found_in_showing_keys() {
        assert_eq!(message_id("cv:a:1:x"), message_id("cv:a:1:x"));
        assert_ne!(message_id("cv:a:1:x"), message_id("cv:a:2:x"));
        assert_eq!(event_of("launch@2026-12-10T18:00:00Z"), "launch");
        assert_eq!(
            event_of("launch@2026-12-10T18:00:00Z~on-demand#v123"),
            "launch"
        );
        assert_eq!(
            RETRY_MS.iter().sum::<i64>(),
            ((7 * 60 + 42) * 60 + 35) * 1000
        );
    }
}
