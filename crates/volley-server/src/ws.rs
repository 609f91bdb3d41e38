//! The WebSocket endpoint (`/ws`): the real-time protocol of docs/protocol.md.
//!
//! One task per connection: it reads client frames, applies inputs, and delivers the
//! conversation's events in order, each when it is due (server-side pacing), with a
//! typing indicator during a message's pause. Buffers are small and the outgoing queue
//! is bounded, so an idle connection costs little and a slow one cannot grow memory.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;

use crate::App;
use crate::contacts::{Hints, Identity};
use crate::conversation::Action;
use crate::error::ApiError;
use crate::session::{self, Next, Open, Session, Subscription};

/// Frames a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Hello {
        #[serde(default)]
        v: Option<u32>,
        flow: String,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        identity: Option<Identity>,
        #[serde(default)]
        conversation: Option<String>,
        #[serde(default)]
        last_seq: Option<i64>,
        #[serde(default)]
        timezone: Option<String>,
        #[serde(default)]
        locale: Option<String>,
        #[serde(default)]
        restart: bool,
    },
    Answer {
        id: String,
        step: String,
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        values: Option<Vec<String>>,
    },
    /// Free text: to the person handling the conversation, or the open question's answer.
    Say {
        id: String,
        text: String,
    },
    /// The CSAT rating after a person resolved the conversation.
    Rate {
        id: String,
        score: i64,
    },
    Back {
        id: String,
    },
    Skip {
        id: String,
    },
    Restart {
        id: String,
    },
    Ack {
        seq: i64,
    },
    Ping {
        #[serde(default)]
        t: Option<i64>,
    },
}

const CLIENT_TYPES: &[&str] = &[
    "hello", "answer", "say", "rate", "back", "skip", "restart", "ack", "ping",
];

/// Parses a frame, mapping failures to protocol errors.
fn parse(text: &str) -> Result<ClientFrame, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        let t: Option<String> = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["type"].as_str().map(String::from));
        match t {
            Some(t) if !CLIENT_TYPES.contains(&t.as_str()) => {
                ApiError::bad_request("unknown-type", format!("unknown message type `{t}`"))
            }
            _ => ApiError::bad_request("bad-json", format!("malformed message: {e}")),
        }
    })
}

fn error_frame(e: &ApiError, id: Option<&str>) -> String {
    let mut v = serde_json::json!({"type": "error", "code": e.code, "message": e.message});
    if let Some(id) = id {
        v["id"] = id.into();
    }
    v.to_string()
}

/// The largest message the socket reads at all, for a `max_frame_bytes` limit: a frame
/// somewhat over the limit is read and refused with `too-large` (the connection stays
/// open); a much larger one closes the connection without being buffered.
fn max_message_bytes(max_frame_bytes: usize) -> usize {
    max_frame_bytes.saturating_mul(4).max(64 * 1024)
}

/// The `too-large` refusal of a frame over `max_frame_bytes`.
fn too_large(max_frame_bytes: usize) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        format!("frames are limited to {max_frame_bytes} bytes"),
    )
}

/// Upgrades `/ws` with small buffers and frame limits.
pub async fn handler(ws: WebSocketUpgrade, State(app): State<Arc<App>>) -> Response {
    let open = app.connections.load(std::sync::atomic::Ordering::Relaxed);
    if open >= app.config.limits.max_connections {
        return ApiError::unavailable().into_response();
    }
    let max = max_message_bytes(app.config.limits.max_frame_bytes);
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(32 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(app, socket))
}

/// Counts an open connection (any WebSocket) until dropped.
pub(crate) struct Counted(pub(crate) Arc<App>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(crate::telemetry::names::CONNECTIONS).decrement(1.0);
    }
}

/// A token bucket: `rate` per second, up to `burst`.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, text: impl Into<Utf8Bytes>) -> bool {
    sink.send(Message::Text(text.into())).await.is_ok()
}

/// Sends `first`, then every event already due, with one flush (one write to the socket).
async fn send_with_due(sink: &mut Sink, sub: &mut Subscription, app: &App, first: String) -> bool {
    if sink.feed(Message::Text(first.into())).await.is_err() {
        return false;
    }
    while let Some(d) = sub.try_due(app.clock.now_ms()) {
        if sink
            .feed(Message::Text(d.frame.to_string().into()))
            .await
            .is_err()
        {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

async fn close(sink: &mut Sink, code: u16, reason: &'static str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn connection(app: Arc<App>, socket: WebSocket) {
    app.connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::gauge!(crate::telemetry::names::CONNECTIONS).increment(1.0);
    let _counted = Counted(app.clone());
    let limits = app.config.limits.clone();
    let (mut sink, mut stream) = socket.split();

    // The first frame must be `hello`.
    let first = tokio::time::timeout(
        Duration::from_secs(limits.hello_timeout_secs),
        stream.next(),
    )
    .await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(Message::Binary(_)))) => {
            let e = ApiError::bad_request("binary-frame", "only JSON text frames are accepted");
            send(&mut sink, error_frame(&e, None)).await;
            return close(&mut sink, 1003, "binary frames are not accepted").await;
        }
        Err(_) => return close(&mut sink, 1008, "no hello").await,
        _ => return,
    };
    let (mut session, last_seen) = match hello(&app, &text).await {
        Ok(x) => x,
        Err(e) => {
            send(&mut sink, error_frame(&e, None)).await;
            return close(&mut sink, 1008, "session refused").await;
        }
    };

    let mut sub = match Subscription::open(&app, session.conv.clone(), last_seen).await {
        Ok(s) => s,
        Err(e) => {
            send(&mut sink, error_frame(&e, None)).await;
            return close(&mut sink, 1011, "unavailable").await;
        }
    };
    if !send(&mut sink, welcome_frame(&session).await).await {
        return;
    }
    let mut bucket = Bucket {
        tokens: limits.message_burst as f64,
        rate: limits.messages_per_second as f64,
        burst: limits.message_burst as f64,
        at: Instant::now(),
    };
    let mut ping = tokio::time::interval(Duration::from_secs(limits.ping_interval_secs));
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut shutdown = app.shutdown.clone();

    loop {
        tokio::select! {
            next = sub.next(&app) => {
                let ok = match next {
                    Some(Next::Event(d)) => send_with_due(&mut sink, &mut sub, &app, d.frame.to_string()).await,
                    Some(Next::Typing) => send(&mut sink, r#"{"type":"typing","on":true}"#).await,
                    None => {
                        // Dropped by the hub: this client could not keep up.
                        return close(&mut sink, 1013, "too slow; reconnect to resume").await;
                    }
                };
                if !ok {
                    return;
                }
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { return };
                last_heard = Instant::now();
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        let e = ApiError::bad_request("binary-frame", "only JSON text frames are accepted");
                        if !send(&mut sink, error_frame(&e, None)).await { return }
                        continue;
                    }
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                if !bucket.take() {
                    let e = ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many messages; slow down");
                    if !send(&mut sink, error_frame(&e, None)).await { return }
                    bucket.tokens -= 1.0;
                    if bucket.tokens < -bucket.burst {
                        return close(&mut sink, 1008, "rate limit exceeded").await;
                    }
                    continue;
                }
                if text.len() > limits.max_frame_bytes {
                    let e = too_large(limits.max_frame_bytes);
                    if !send(&mut sink, error_frame(&e, None)).await { return }
                    continue;
                }
                let reply = match parse(&text) {
                    Err(e) => error_frame(&e, None),
                    Ok(ClientFrame::Hello { .. }) => error_frame(&ApiError::bad_request("bad-json", "the session is already open"), None),
                    Ok(ClientFrame::Ack { seq }) => {
                        session.conv.acked(seq);
                        continue;
                    }
                    Ok(ClientFrame::Ping { t }) => {
                        serde_json::json!({"type": "pong", "t": t, "server_time": app.clock.now_ms()}).to_string()
                    }
                    Ok(ClientFrame::Restart { id }) => match restart(&app, &session).await {
                        Ok(new) => match Subscription::open(&app, new.conv.clone(), 0).await {
                            Ok(new_sub) => {
                                session = new;
                                sub = new_sub;
                                let ack = serde_json::json!({"type": "ack", "id": id, "seq": 0}).to_string();
                                if !send(&mut sink, ack).await { return }
                                welcome_frame(&session).await
                            }
                            Err(e) => error_frame(&e, Some(&id)),
                        },
                        Err(e) => error_frame(&e, Some(&id)),
                    },
                    Ok(ClientFrame::Answer { id, step, text, values }) => {
                        let input = match (text, values) {
                            (Some(text), None) => Ok(volley_flow::Input::Text { text }),
                            (None, Some(values)) => Ok(volley_flow::Input::Choice { values }),
                            _ => Err(ApiError::bad_request("bad-json", "an answer has either `text` or `values`")),
                        };
                        match input {
                            Ok(input) => apply(&app, &session, &id, Action::Answer { step, input }).await,
                            Err(e) => error_frame(&e, Some(&id)),
                        }
                    }
                    Ok(ClientFrame::Say { id, text }) => apply(&app, &session, &id, Action::Say { text }).await,
                    Ok(ClientFrame::Rate { id, score }) => apply(&app, &session, &id, Action::Rate { score }).await,
                    Ok(ClientFrame::Back { id }) => apply(&app, &session, &id, Action::Back).await,
                    Ok(ClientFrame::Skip { id }) => apply(&app, &session, &id, Action::Skip).await,
                };
                if !send_with_due(&mut sink, &mut sub, &app, reply).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > Duration::from_secs(limits.idle_timeout_secs) {
                    return close(&mut sink, 1001, "idle").await;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => {
                return close(&mut sink, 1012, "server restarting; reconnect").await;
            }
        }
    }
}

async fn hello(app: &App, text: &str) -> Result<(Session, i64), ApiError> {
    if text.len() > app.config.limits.max_frame_bytes {
        return Err(too_large(app.config.limits.max_frame_bytes));
    }
    let ClientFrame::Hello {
        v,
        flow,
        token,
        identity,
        conversation,
        last_seq,
        timezone,
        locale,
        restart,
    } = parse(text)?
    else {
        return Err(ApiError::bad_request(
            "not-hello",
            "the first message must be `hello`",
        ));
    };
    if v.is_some_and(|v| v != 1) {
        return Err(ApiError::bad_request(
            "bad-json",
            "this server speaks protocol version 1",
        ));
    }
    let req = Open {
        flow: &flow,
        token: token.as_deref(),
        identity: identity.as_ref(),
        conversation: conversation.as_deref(),
        hints: Hints { timezone, locale },
        restart,
    };
    let session = session::open(app, req).await?;
    Ok((session, last_seq.unwrap_or(0).max(0)))
}

async fn restart(app: &App, old: &Session) -> Result<Session, ApiError> {
    let contact = app
        .store
        .contact(&old.contact_id)
        .await?
        .ok_or_else(|| ApiError::internal("contact vanished", &old.contact_id))?;
    let mut profile: volley_flow::Contact =
        serde_json::from_str(&contact.profile).unwrap_or_default();
    profile.id = contact.id.clone();
    let flow = app.flows.latest(&old.flow.id).ok_or_else(|| {
        ApiError::not_found(
            "unknown-flow",
            format!("no published flow `{}`", old.flow.id),
        )
    })?;
    let conv = app
        .convs
        .start(app, &contact.id, profile, flow.clone(), Default::default())
        .await?;
    Ok(Session {
        contact_id: contact.id,
        new_token: None,
        conv,
        flow,
    })
}

async fn welcome_frame(session: &Session) -> String {
    let mut v = serde_json::to_value(session.welcome().await).unwrap_or_default();
    v["type"] = "welcome".into();
    v.to_string()
}

async fn apply(app: &App, session: &Session, id: &str, action: Action) -> String {
    if id.is_empty() || id.len() > 128 {
        return error_frame(
            &ApiError::bad_request("bad-json", "`id` must be 1 to 128 characters"),
            None,
        );
    }
    match session.conv.input(app, Some(id), action).await {
        Ok(seq) => serde_json::json!({"type": "ack", "id": id, "seq": seq}).to_string(),
        Err(e) => error_frame(&e, Some(id)),
    }
}
