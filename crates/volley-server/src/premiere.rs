//! Premieres being watched: the event page, the viewers' WebSocket, registration with
//! reminders, and the rooms (one per showing) that hold the shared chat.
//!
//! volley-events says when showings are and what their timeline does; this module
//! makes them live: every viewer of a showing joins its [`room::Room`], whose task
//! orders, logs and broadcasts what happens. Broadcasts are serialised once and shared
//! by every connection (`Arc`), and a viewer who cannot keep up is disconnected rather
//! than buffered without end. docs/watching.md is the contract.

mod limits;
mod room;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};
use volley_flow::markdown::escape_html;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use utoipa::ToSchema;
use volley_events::{CueKind, Event, Occurrence, Phase, ReminderKind};
use volley_store::{NewTimer, RegistrationRow, TimerRow};

use crate::App;
use crate::channels::{AssistantInfo, FlowInfo, Message as Line, Notification, Recipient};
use crate::error::{ApiError, ErrorBody};
use crate::events::Published;
use crate::ids::{hash_secret, new_id, new_token};
use limits::*;
use room::{Answered, Command, Context, Out, Refusal, Room, RoomTask, Sender, To};
use wire::Socket;

const EVENT_HTML: &str = include_str!("../web/event.html");
const EVENT_JS: &str = include_str!("../web/event.js");
const EVENT_CSS: &str = include_str!("../web/event.css");

/// The rooms open in this process, by showing (on-demand showings: by showing and
/// viewer, since each is watched alone).
pub struct Rooms {
    rooms: std::sync::Mutex<HashMap<String, Arc<OnceCell<Arc<Room>>>>>,
    /// Each viewer's current on-demand showing, so a reload resumes it.
    on_demand: std::sync::Mutex<HashMap<String, Occurrence>>,
    answered: mpsc::UnboundedSender<Answered>,
    answered_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Answered>>>,
}

impl Default for Rooms {
    fn default() -> Self {
        let (answered, rx) = mpsc::unbounded_channel();
        Rooms {
            rooms: Default::default(),
            on_demand: Default::default(),
            answered,
            answered_rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Rooms {
    /// The room of a showing, opened (its log read) on first use.
    async fn room(
        &self,
        app: &Arc<App>,
        published: &Published,
        showing: &Occurrence,
        key: &str,
    ) -> Result<Arc<Room>, ApiError> {
        let cell = self
            .rooms
            .lock()
            .expect("rooms lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let room = cell
            .get_or_try_init(|| async {
                let banned = app.store.event_bans(&published.event.id).await?;
                let cx = Context {
                    store: app.store.clone(),
                    clock: app.clock.clone(),
                    event: Arc::new(published.event.clone()),
                    showing: showing.clone(),
                    banned: banned.into_iter().collect(),
                    answered: self.answered.clone(),
                };
                RoomTask::open(key.to_string(), cx).await
            })
            .await?;
        Ok(room.clone())
    }

    /// Viewers present in every room (a gauge).
    pub fn viewers(&self) -> usize {
        self.rooms
            .lock()
            .expect("rooms lock")
            .values()
            .filter_map(|c| c.get())
            .map(|r| r.present.load(Ordering::Relaxed))
            .sum()
    }

    /// Forgets rooms nobody is in whose showing is over (or on demand); their tasks end.
    fn sweep(&self, now: Timestamp) {
        self.rooms.lock().expect("rooms lock").retain(|_, cell| {
            let Some(room) = cell.get() else { return true };
            let idle = room.present.load(Ordering::Relaxed) == 0 && Arc::strong_count(room) == 1;
            !(idle && (room.showing.on_demand || room.showing.replay_until <= now))
        });
        self.on_demand
            .lock()
            .expect("on-demand lock")
            .retain(|_, o| o.replay_until > now);
    }
}

/// Starts the background work of premieres: telling askers their answers, and
/// forgetting finished rooms.
pub fn start(app: Arc<App>) {
    let rx = app
        .premieres
        .answered_rx
        .lock()
        .expect("answered lock")
        .take();
    if let Some(mut rx) = rx {
        let app2 = app.clone();
        tokio::spawn(async move {
            while let Some(a) = rx.recv().await {
                tell_answer(&app2, a).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        let mut shutdown = app.shutdown.clone();
        loop {
            tokio::select! {
                _ = every.tick() => app.premieres.sweep(app.clock.now()),
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// The public id of a viewer token (what moderators and logs see).
pub fn viewer_id(token: &str) -> String {
    format!("v{}", &hash_secret(token)[..16])
}

fn valid_token(t: &str) -> bool {
    t.starts_with("vw_")
        && (20..=80).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unknown_event(id: &str) -> ApiError {
    ApiError::not_found("unknown-event", format!("no event `{id}`"))
}

fn ms(d: SignedDuration) -> i64 {
    d.as_millis() as i64
}

/// The latest showing whose replay is still open at `now`, if any.
fn latest_replay(
    event: &Event,
    now: Timestamp,
    zone: Option<&jiff::tz::TimeZone>,
) -> Option<Occurrence> {
    if event.replay_window.is_zero() || matches!(event.schedule, volley_events::Schedule::OnDemand)
    {
        return None;
    }
    let span = event.media.duration + event.replay_window;
    // Look back a little first: recent showings are what a viewer wants.
    for back in [SignedDuration::from_hours(2), span] {
        let from = now.checked_sub(back.min(span)).unwrap_or(Timestamp::MIN);
        let found = volley_events::occurrences(event, from, now, zone)
            .into_iter()
            .rev()
            .find(|o| o.ends_at <= now && now < o.replay_until);
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The showing a viewer asks for: `wanted` (an id from the listing) after checking it
/// is one of the event's, else the live or next one. On-demand: the viewer's own.
fn resolve_showing(
    app: &App,
    event: &Event,
    wanted: Option<&str>,
    zone: Option<&jiff::tz::TimeZone>,
    viewer: &str,
) -> Result<Occurrence, ApiError> {
    let now = app.clock.now();
    let on_demand = matches!(event.schedule, volley_events::Schedule::OnDemand);
    if on_demand {
        let mut mine = app.premieres.on_demand.lock().expect("on-demand lock");
        if let Some(o) = mine
            .get(viewer)
            .filter(|o| o.replay_until > now && o.id.starts_with(&format!("{}@", event.id)))
        {
            return Ok(o.clone());
        }
        let o = volley_events::next_occurrence(event, now, zone).ok_or_else(|| {
            ApiError::not_found(
                "no-showing",
                "this event cannot be shown now (hours or blackout dates)",
            )
        })?;
        mine.insert(viewer.to_string(), o.clone());
        return Ok(o);
    }
    if let Some(id) = wanted.filter(|w| !w.is_empty()) {
        let start = id
            .strip_prefix(&format!("{}@", event.id))
            .and_then(|s| s.parse::<Timestamp>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad-showing",
                    format!("`{id}` is not a showing of `{}`", event.id),
                )
            })?;
        let until = start + SignedDuration::from_secs(1);
        return volley_events::occurrences(event, start, until, zone)
            .into_iter()
            .find(|o| o.id == id)
            .filter(|o| now < o.replay_until)
            .ok_or_else(|| {
                ApiError::not_found(
                    "no-showing",
                    format!("`{id}` is not a showing that can be watched now"),
                )
            });
    }
    volley_events::current_or_next(event, now, zone)
        .or_else(|| latest_replay(event, now, zone))
        .ok_or_else(|| ApiError::not_found("no-showing", "this event has no showing to watch"))
}

fn showing_json(o: &Occurrence) -> Value {
    json!({"id": o.id, "starts_at": o.starts_at.as_millisecond(), "ends_at": o.ends_at.as_millisecond(),
        "replay_until": o.replay_until.as_millisecond(), "on_demand": o.on_demand})
}

/// The event as the page needs it: everything to show, including the timeline's cues.
fn event_json(p: &Published) -> Value {
    let e = &p.event;
    let timeline: Vec<Value> = e
        .timeline
        .iter()
        .map(|c| {
            let at = ms(c.at);
            match &c.kind {
                CueKind::Say(text) => json!({"kind": "say", "at": at, "text": text,
                    "html": volley_flow::markdown::to_html(text)}),
                CueKind::Poll(p) => {
                    json!({"kind": "poll", "at": at, "id": p.id, "question": p.question,
                    "options": p.options, "multiple": p.multiple, "close_at": ms(p.close_at),
                    "results_at": ms(p.results_at)})
                }
                CueKind::Offer(o) => json!({"kind": "offer", "at": at, "id": o.id, "text": o.text,
                    "url": o.url, "until": ms(o.until)}),
                CueKind::Qa { until } => json!({"kind": "qa", "at": at, "until": ms(*until)}),
                CueKind::Flow(f) => json!({"kind": "flow", "at": at, "flow": f}),
            }
        })
        .collect();
    json!({
        "id": e.id, "title": e.title, "description": e.description, "label": e.label,
        "replay_label": e.replay_label, "media_url": crate::events::media_url(p),
        "duration": ms(e.media.duration),
        "chapters": e.media.chapters.iter().map(|c| json!({"at": ms(c.at), "title": c.title})).collect::<Vec<_>>(),
        "timeline": timeline,
        "registration": if e.registration.fields.is_empty() && e.registration.flow.is_none() { Value::Null }
            else { json!({"fields": e.registration.fields, "flow": e.registration.flow}) },
        "reminders": e.reminders.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------
// The page

#[derive(Deserialize)]
pub struct PageQuery {
    showing: Option<String>,
}

/// The event page (public): lobby, player, chat. The label is in the markup.
pub async fn page(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some(p) = app.events.get(&id) else {
        return unknown_event(&id).into_response();
    };
    let e = &p.event;
    // A showing that has ended is a replay (the page corrects the label after `hello`
    // in any case; this is what shows before the script runs).
    let ended = q
        .showing
        .as_deref()
        .and_then(|s| s.strip_prefix(&format!("{}@", e.id)))
        .and_then(|s| s.trim_end_matches("~on-demand").parse::<Timestamp>().ok())
        .is_some_and(|start| start + e.media.duration <= app.clock.now());
    let label = match q.showing.as_deref() {
        Some(s) if s.ends_with("~on-demand") => &e.replay_label,
        _ if ended || matches!(e.schedule, volley_events::Schedule::OnDemand) => &e.replay_label,
        _ => &e.label,
    };
    let html = EVENT_HTML
        .replace("{{title}}", &escape_html(&e.title))
        .replace(
            "{{description}}",
            &escape_html(e.description.as_deref().unwrap_or("")),
        )
        .replace("{{label}}", &escape_html(label))
        .replace("{{event_id}}", &escape_html(&e.id))
        .replace(
            "{{showing}}",
            &escape_html(q.showing.as_deref().unwrap_or("")),
        );
    (
        [
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; media-src 'self' https: http:; connect-src 'self'; frame-ancestors 'self'"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        Html(html),
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        EVENT_JS,
    )
        .into_response()
}

pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        EVENT_CSS,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------
// The viewers' WebSocket

#[derive(Deserialize)]
pub struct WsQuery {
    viewer: Option<String>,
    showing: Option<String>,
    zone: Option<String>,
}

/// Who is connecting, resolved before the upgrade (so refusals are plain HTTP).
struct Joining {
    published: Arc<Published>,
    showing: Occurrence,
    key: String,
    token: String,
    viewer_id: String,
    moderator: Option<(String, String)>,
}

/// `GET /events/{id}/ws`: a viewer's connection (docs/watching.md, "The protocol").
pub async fn socket(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<WsQuery>,
    mut req: Request,
) -> Response {
    let upgrade = match wire::upgrade(&mut req) {
        Ok(u) => u,
        Err(refused) => return refused.into_response(),
    };
    let Some(published) = app.events.get(&id) else {
        return unknown_event(&id).into_response();
    };
    if app.connections.load(Ordering::Relaxed) >= app.config.limits.max_connections {
        return ApiError::unavailable().into_response();
    }
    let zone = q.zone.as_deref().and_then(volley_flow::zone);
    let token = q
        .viewer
        .filter(|t| valid_token(t))
        .unwrap_or_else(|| new_token("vw_"));
    let viewer_id = viewer_id(&token);
    let showing = match resolve_showing(
        &app,
        &published.event,
        q.showing.as_deref(),
        zone.as_ref(),
        &viewer_id,
    ) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let key = if showing.on_demand {
        format!("{}#{viewer_id}", showing.id)
    } else {
        showing.id.clone()
    };
    let moderator = crate::auth::page_moderator(req.headers(), &app)
        .await
        .map(|s| (s.name, s.id));
    // Boxed: it is moved into the connection's task, whose future would keep room for
    // it for as long as the connection lasts.
    let joining = Box::new(Joining {
        published,
        showing,
        key,
        token,
        viewer_id,
        moderator,
    });
    // Only what a client sends is buffered by tungstenite (every frame to a viewer is
    // written straight to the socket, see `wire`): a small read buffer is enough for
    // client messages (at most 4 KB, read in several goes when longer), and the write
    // buffer only ever holds a pong or the close frame.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    upgrade.accept(config, move |socket| viewer(app, socket, joining))
}

fn error_frame(r: &Refusal, reference: &Value) -> Bytes {
    let v = json!({"t": "error", "code": r.code, "message": r.message, "ref": reference});
    wire::text_frame(v.to_string().as_bytes())
}

fn unavailable() -> Refusal {
    Refusal {
        code: "unavailable",
        message: "try again".into(),
    }
}

/// What a viewer watched on this connection, from their `progress` messages: the
/// seconds of media played (a bit set, for the retention curve) and the total time.
#[derive(Default)]
struct Watched {
    seconds: Vec<u8>,
    watched_ms: i64,
    furthest: i64,
    last: Option<i64>,
}

impl Watched {
    fn progress(&mut self, pos: i64, playing: bool, duration: i64) {
        let pos = pos.clamp(0, duration);
        if let Some(last) = self.last.filter(|_| playing)
            && (0..=PROGRESS_GAP_MS).contains(&(pos - last))
        {
            self.watched_ms += pos - last;
            for s in (last / 1000)..=(pos / 1000) {
                self.mark(s as usize);
            }
        }
        if playing {
            self.mark((pos / 1000) as usize);
        }
        self.furthest = self.furthest.max(pos);
        self.last = playing.then_some(pos);
    }

    fn mark(&mut self, second: usize) {
        if second >= MAX_WATCH_SECONDS {
            return;
        }
        if self.seconds.len() <= second / 8 {
            self.seconds.resize(second / 8 + 1, 0);
        }
        self.seconds[second / 8] |= 1 << (second % 8);
    }

    fn json(&self) -> Value {
        json!({"watched_ms": self.watched_ms, "furthest": self.furthest,
            "seconds": base64::engine::general_purpose::STANDARD.encode(&self.seconds)})
    }
}

/// The longest gap between two `progress` positions counted as watched (they come
/// every 5 s; a larger jump is a seek).
const PROGRESS_GAP_MS: i64 = 7_000;
/// Client messages per second on one connection (pings and progress included), and
/// the burst; beyond twice the burst in debt the connection is closed.
const FRAMES_PER_SECOND: f64 = 10.0;
const FRAME_BURST: f64 = 30.0;

/// A viewer being served: what the connection keeps once it has joined.
struct Connection {
    room: Arc<Room>,
    sender: Arc<Sender>,
    rx: broadcast::Receiver<Arc<Out>>,
    /// The media's length (ms), to clamp positions.
    duration: i64,
    watched: Watched,
}

async fn viewer(app: Arc<App>, mut socket: Socket, j: Box<Joining>) {
    app.connections.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!(crate::telemetry::names::CONNECTIONS).increment(1.0);
    let _counted = crate::ws::Counted(app.clone());
    // Joining is boxed: what it holds while it runs (opening the room, the store's
    // reads, building `hello`) is freed once it is done instead of being part of every
    // connection's task for as long as it lasts.
    let Some((mut c, hello)) = Box::pin(join(&app, &mut socket, j)).await else {
        return;
    };
    if socket.write(&[hello]).await.is_ok() {
        serve(&app, &mut socket, &mut c).await;
    }
    let Connection {
        room,
        sender,
        watched,
        ..
    } = c;
    let _ = room
        .commands
        .send(Command::Leave {
            sender,
            watched: watched.json(),
        })
        .await;
}

/// Joins the room; returns the connection and its `hello` frame, or `None` when the
/// viewer could not join (the socket is closed).
async fn join(app: &Arc<App>, socket: &mut Socket, j: Box<Joining>) -> Option<(Connection, Bytes)> {
    let room = match app
        .premieres
        .room(app, &j.published, &j.showing, &j.key)
        .await
    {
        Ok(r) => r,
        Err(_) => {
            socket.close(1011, "unavailable").await;
            return None;
        }
    };
    if room.present.load(Ordering::Relaxed) >= MAX_VIEWERS {
        socket.close(1013, "this showing is full").await;
        return None;
    }
    let event_id = &j.published.event.id;
    let registration = app
        .store
        .viewer_registration(event_id, &j.viewer_id)
        .await
        .ok()
        .flatten();
    let answers: Vec<Value> = app
        .store
        .viewer_rows(&j.viewer_id, "answer", 20)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.data).ok())
        .filter(|d| d["event"] == event_id.as_str())
        .map(|d| json!({"question": d["text"], "answer": d["answer"]}))
        .collect();
    let now = app.clock.now();
    let phase = volley_events::phase(&j.showing, now);
    let sender = Arc::new(Sender {
        viewer_id: j.viewer_id.clone(),
        moderator: j.moderator.clone(),
        replay: j.showing.on_demand || matches!(phase, Phase::Replay { .. } | Phase::Over),
    });
    let (reply, joined) = oneshot::channel();
    let join = Command::Join {
        sender: sender.clone(),
        name: registration.map(|r| r.name),
        reply,
    };
    if room.commands.send(join).await.is_err() {
        socket.close(1011, "unavailable").await;
        return None;
    }
    let Ok((state, rx)) = joined.await else {
        socket.close(1011, "unavailable").await;
        return None;
    };
    let mut hello = json!({
        "t": "hello",
        "viewer": j.token,
        "viewer_id": j.viewer_id,
        "moderator": j.moderator.is_some(),
        "event": event_json(&j.published),
        "showing": showing_json(&j.showing),
        "replay": if j.showing.on_demand { Value::Null } else {
            latest_replay(&j.published.event, now, None).filter(|r| r.id != j.showing.id).map(|r| showing_json(&r)).unwrap_or(Value::Null)
        },
        "now": now.as_millisecond(),
        "answers": answers,
    });
    if let (Some(h), Value::Object(s)) = (hello.as_object_mut(), state) {
        h.extend(s);
    }
    let hello = wire::text_frame(hello.to_string().as_bytes());
    let c = Connection {
        room,
        sender,
        rx,
        duration: ms(j.published.event.media.duration),
        watched: Watched::default(),
    };
    Some((c, hello))
}

/// A client message's answer, in the order the messages came.
enum Answer {
    /// Known already (refused by the connection itself).
    Ready(Bytes),
    /// The room's, once the message is committed; `reference` is the message's `ref`.
    Room {
        reference: Value,
        reply: oneshot::Receiver<Result<(), Refusal>>,
    },
}

/// The frame answering a client message, if any (an accepted one without `ref` has
/// none).
fn answer_frame(result: Result<(), Refusal>, reference: &Value) -> Option<Bytes> {
    match result {
        Ok(()) if reference.is_null() => None,
        Ok(()) => Some(wire::text_frame(
            json!({"t": "ok", "ref": reference}).to_string().as_bytes(),
        )),
        Err(r) => Some(error_frame(&r, reference)),
    }
}

/// The room's answer at the front of `answers`, when it comes.
fn front_answer(answers: &mut VecDeque<Answer>) -> impl Future<Output = Result<(), Refusal>> + '_ {
    std::future::poll_fn(move |cx| match answers.front_mut() {
        Some(Answer::Room { reply, .. }) => Pin::new(reply)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(unavailable()))),
        _ => Poll::Pending,
    })
}

/// Sends the answers at the front of `answers` that are known, in order, up to the
/// first still awaited.
async fn send_answers(socket: &mut Socket, answers: &mut VecDeque<Answer>) -> std::io::Result<()> {
    let mut frames = Vec::new();
    while let Some(a) = answers.front_mut() {
        let frame = match a {
            Answer::Ready(f) => Some(std::mem::take(f)),
            Answer::Room { reference, reply } => match reply.try_recv() {
                Ok(result) => answer_frame(result, reference),
                Err(oneshot::error::TryRecvError::Closed) => {
                    answer_frame(Err(unavailable()), reference)
                }
                Err(oneshot::error::TryRecvError::Empty) => break,
            },
        };
        answers.pop_front();
        frames.extend(frame);
    }
    if frames.is_empty() {
        return Ok(());
    }
    socket.write(&frames).await
}

/// Serves a joined viewer until they leave, fall behind, or the server stops.
///
/// Client messages are read while the answers to earlier ones are awaited (up to
/// `MAX_PENDING`), so a viewer may post faster than one message per commit of the
/// room; their answers go out in the order of the messages.
async fn serve(app: &App, socket: &mut Socket, c: &mut Connection) {
    let mut shutdown = app.shutdown.clone();
    let mut tokens = FRAME_BURST;
    let mut tokens_at = Instant::now();
    let mut answers: VecDeque<Answer> = VecDeque::new();
    loop {
        if send_answers(socket, &mut answers).await.is_err() {
            return;
        }
        let awaiting = !answers.is_empty();
        tokio::select! {
            out = c.rx.recv() => {
                let out = match out {
                    Ok(o) => o,
                    Err(broadcast::error::RecvError::Lagged(_)) => return too_slow(socket).await,
                    Err(broadcast::error::RecvError::Closed) => return socket.close(1001, "the showing closed").await,
                };
                if !deliver(socket, c, out).await {
                    return;
                }
            }
            frame = socket.next(), if answers.len() < MAX_PENDING => {
                let Some(Ok(frame)) = frame else { return };
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Close(_) => return,
                    Message::Binary(_) => return socket.close(1003, "only JSON text frames are accepted").await,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                let at = Instant::now();
                tokens = (tokens + at.duration_since(tokens_at).as_secs_f64() * FRAMES_PER_SECOND).min(FRAME_BURST);
                tokens_at = at;
                tokens -= 1.0;
                if tokens < -FRAME_BURST {
                    return socket.close(1008, "too many messages").await;
                }
                if tokens < 0.0 {
                    let r = Refusal { code: "rate_limited", message: "too many messages; slow down".into() };
                    answers.push_back(Answer::Ready(error_frame(&r, &Value::Null)));
                    continue;
                }
                match request(app, c, &text) {
                    Asked::Nothing => {}
                    Asked::Pong(frame) => {
                        // Not queued behind answers awaited: the clock wants it now.
                        if socket.write(&[frame]).await.is_err() {
                            return;
                        }
                    }
                    Asked::Answer(frame) => answers.push_back(Answer::Ready(frame)),
                    Asked::Room(message, reference) => {
                        let (reply, answer) = oneshot::channel();
                        let command = Command::Client { sender: c.sender.clone(), message, reply };
                        // A full queue (rare) is waited for in a box: the future of every
                        // connection need not have room for it.
                        let sent = match c.room.commands.try_send(command) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(command)) => {
                                Box::pin(c.room.commands.send(command)).await.is_ok()
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        };
                        answers.push_back(if sent {
                            Answer::Room { reference, reply: answer }
                        } else {
                            Answer::Ready(error_frame(&unavailable(), &reference))
                        });
                    }
                }
            }
            result = front_answer(&mut answers), if awaiting => {
                if let Some(Answer::Room { reference, .. }) = answers.pop_front()
                    && let Some(frame) = answer_frame(result, &reference)
                {
                    answers.push_front(Answer::Ready(frame));
                }
            }
            _ = shutdown.changed() => return socket.close(1001, "the server is shutting down").await,
        }
    }
}

async fn too_slow(socket: &mut Socket) {
    metrics::counter!(crate::telemetry::names::SLOW_CLIENTS).increment(1);
    socket.close(1013, "too slow; reconnect to resume").await
}

/// Writes `first` and everything else already queued for this viewer, several frames
/// per write; false when the connection is over.
async fn deliver(socket: &mut Socket, c: &mut Connection, first: Arc<Out>) -> bool {
    let mut frames = Vec::new();
    let mut next = Some(first);
    loop {
        if let Some(o) = next.take()
            && for_me(&o.to, &c.sender)
        {
            frames.push(o.frame.clone());
        }
        if frames.len() < MAX_FRAMES_PER_WRITE {
            match c.rx.try_recv() {
                Ok(o) => {
                    next = Some(o);
                    continue;
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    too_slow(socket).await;
                    return false;
                }
                Err(_) => {}
            }
        }
        if !frames.is_empty() && socket.write(&frames).await.is_err() {
            return false;
        }
        if frames.len() < MAX_FRAMES_PER_WRITE {
            return true;
        }
        frames.clear();
    }
}

fn for_me(to: &To, s: &Sender) -> bool {
    match to {
        To::All => true,
        To::Moderators => s.moderator.is_some(),
        To::Viewer(v) => *v == s.viewer_id,
    }
}

/// What a client message asks of the connection.
enum Asked {
    /// Nothing to answer (`progress`).
    Nothing,
    /// A `pong`, sent at once.
    Pong(Bytes),
    /// An answer known without the room (a malformed message).
    Answer(Bytes),
    /// For the room: the message and its `ref`.
    Room(Value, Value),
}

/// Reads one client message.
fn request(app: &App, c: &mut Connection, text: &str) -> Asked {
    let message: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let r = Refusal {
                code: "bad_message",
                message: "send a JSON object with a `t` field".into(),
            };
            return Asked::Answer(error_frame(&r, &Value::Null));
        }
    };
    match message["t"].as_str() {
        Some("ping") => {
            let s = app.clock.now().as_microsecond() as f64 / 1000.0;
            let pong = json!({"t": "pong", "c": message["c"], "s": s}).to_string();
            Asked::Pong(wire::text_frame(pong.as_bytes()))
        }
        Some("progress") => {
            let pos = message["pos"].as_i64().unwrap_or(0);
            let playing = message["playing"].as_bool().unwrap_or(false);
            c.watched.progress(pos, playing, c.duration);
            Asked::Nothing
        }
        _ => {
            let reference = message.get("ref").cloned().unwrap_or(Value::Null);
            Asked::Room(message, reference)
        }
    }
}

// ---------------------------------------------------------------------------------
// Registration and reminders

/// Registering for a showing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// An occurrence id from `GET /api/events/{id}`; the next showing when absent.
    pub showing: Option<String>,
    pub name: String,
    pub email: Option<String>,
    /// The viewer's IANA time zone (for `local` schedules and the times in reminders).
    pub timezone: Option<String>,
    /// The viewer token the page keeps (a new one is issued without it).
    pub viewer: Option<String>,
    /// The event's other registration fields, by name.
    #[serde(default)]
    pub fields: serde_json::Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ReminderView {
    /// When it is sent (RFC 3339).
    pub at: String,
    /// `before`, `starting_soon` or `live_now`.
    pub kind: &'static str,
    /// `24h`, the time left, or `live`.
    pub label: String,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub registration: String,
    /// The viewer token to keep (give it to the page as `volley.viewer`).
    pub viewer: String,
    pub viewer_id: String,
    pub showing: String,
    pub starts_at: String,
    /// False when this viewer had registered for this showing already (nothing changed).
    pub new: bool,
    pub reminders: Vec<ReminderView>,
    /// The event's registration flow, to open after registering.
    pub flow: Option<String>,
}

/// Characters of a registration's name, email and each extra field.
const MAX_FIELD_CHARS: usize = 200;

fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(
        "invalid-registration",
        format!("`{field}`: {}", message.into()),
    )
}

fn plain_field(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(field_error(field, "is required"));
    }
    if v.chars().count() > MAX_FIELD_CHARS || v.chars().any(char::is_control) {
        return Err(field_error(
            field,
            format!("at most {MAX_FIELD_CHARS} characters on one line"),
        ));
    }
    Ok(v.to_string())
}

/// Registers a viewer for a showing and schedules their reminders (public).
#[utoipa::path(
    post,
    path = "/api/events/{id}/register",
    tag = "events",
    params(("id" = String, Path, description = "Event id")),
    request_body = RegisterRequest,
    responses((status = 201, body = Registered), (status = 200, body = Registered),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn register(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<RegisterRequest>,
) -> Result<Response, ApiError> {
    let p = app.events.get(&id).ok_or_else(|| unknown_event(&id))?;
    let e = &p.event;
    if matches!(e.schedule, volley_events::Schedule::OnDemand) {
        return Err(ApiError::bad_request(
            "on-demand",
            "an on-demand event starts when you arrive: there is nothing to register for",
        ));
    }
    let name = plain_field("name", &req.name)?;
    let email = match req
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(em) => {
            let em = plain_field("email", em)?;
            let ok = em.split_once('@').is_some_and(|(u, d)| {
                !u.is_empty() && d.contains('.') && !d.starts_with('.') && !em.contains(' ')
            });
            if !ok {
                return Err(field_error("email", "is not an email address"));
            }
            Some(em)
        }
        None if e.registration.fields.iter().any(|f| f == "email") => {
            return Err(field_error("email", "is required"));
        }
        None => None,
    };
    let mut fields = serde_json::Map::new();
    for (k, v) in &req.fields {
        if !e.registration.fields.contains(k) || k == "name" || k == "email" {
            return Err(field_error(
                k,
                "is not a field of this event's registration",
            ));
        }
        let v = v.as_str().ok_or_else(|| field_error(k, "must be text"))?;
        fields.insert(k.clone(), plain_field(k, v)?.into());
    }
    if let Some(missing) = e
        .registration
        .fields
        .iter()
        .find(|f| f.as_str() != "name" && f.as_str() != "email" && !fields.contains_key(*f))
    {
        return Err(field_error(missing, "is required"));
    }
    let zone_name = match req.timezone.as_deref().filter(|z| !z.is_empty()) {
        Some(z) => {
            volley_flow::zone(z).ok_or_else(|| {
                ApiError::bad_request("unknown-timezone", format!("unknown time zone `{z}`"))
            })?;
            Some(z.to_string())
        }
        None => None,
    };
    let zone = zone_name.as_deref().and_then(volley_flow::zone);
    let token = match req.viewer {
        Some(t) if valid_token(&t) => t,
        Some(_) => return Err(field_error("viewer", "is not a viewer token")),
        None => new_token("vw_"),
    };
    let viewer = viewer_id(&token);
    let now = app.clock.now();
    let showing = match req.showing.as_deref() {
        Some(s) => resolve_showing(&app, e, Some(s), zone.as_ref(), &viewer)?,
        None => volley_events::current_or_next(e, now, zone.as_ref()).ok_or_else(|| {
            ApiError::not_found("no-showing", "this event has no upcoming showing")
        })?,
    };
    if now >= showing.ends_at {
        return Err(ApiError::bad_request(
            "showing-over",
            "this showing is over; watch its replay instead",
        ));
    }
    let registration = RegistrationRow {
        id: new_id("reg"),
        event_id: e.id.clone(),
        showing_id: showing.id.clone(),
        viewer_id: viewer.clone(),
        name,
        email,
        zone: zone_name,
        fields: Value::Object(fields).to_string(),
        registered_at: now.as_millisecond(),
    };
    let reminders = volley_events::reminders_for(e, &showing, now);
    let timers: Vec<NewTimer> = reminders
        .iter()
        .map(|r| NewTimer {
            due_at: r.at.as_millisecond(),
            kind: "reminder".into(),
            // Useless once the showing has started (or, for "live now", ended).
            late_after: Some(match r.kind {
                ReminderKind::LiveNow => showing.ends_at.as_millisecond() - r.at.as_millisecond(),
                _ => (showing.starts_at.as_millisecond() - r.at.as_millisecond()).max(0),
            }),
            owner: Some(format!("registration:{}", registration.id)),
            data: json!({"registration": registration.id, "kind": reminder_kind(r.kind), "label": r.offset_label}).to_string(),
        })
        .collect();
    let (row, new) = app.store.register_viewer(registration, timers).await?;
    if new {
        app.scheduler.rescan();
    }
    let views = if new {
        reminders
            .iter()
            .map(|r| ReminderView {
                at: r.at.to_string(),
                kind: reminder_kind(r.kind),
                label: r.offset_label.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = Registered {
        registration: row.id,
        viewer: token,
        viewer_id: viewer,
        showing: showing.id.clone(),
        starts_at: showing.starts_at.to_string(),
        new,
        reminders: views,
        flow: e.registration.flow.clone(),
    };
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

fn reminder_kind(k: ReminderKind) -> &'static str {
    match k {
        ReminderKind::Before => "before",
        ReminderKind::StartingSoon => "starting_soon",
        ReminderKind::LiveNow => "live_now",
    }
}

/// What firing a `reminder` timer did.
pub enum Reminded {
    /// Sent, failed for good, or no longer needed.
    Done,
    /// The store could not be read: try later.
    Retry,
}

/// Sends a registrant's reminder through every channel that reaches them.
pub async fn remind(app: &App, timer: &TimerRow) -> Reminded {
    let data: Value = serde_json::from_str(&timer.data).unwrap_or(Value::Null);
    let reg_id = data["registration"].as_str().unwrap_or_default();
    let reg = match app.store.registration(reg_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Reminded::Done,
        Err(_) => return Reminded::Retry,
    };
    let too_late = timer
        .late_after
        .is_some_and(|l| app.clock.now_ms() - timer.due_at > l);
    let Some(p) = app.events.get(&reg.event_id) else {
        return Reminded::Done;
    };
    if too_late {
        tracing::debug!(registration = %reg.id, "reminder too late, skipped");
        return Reminded::Done;
    }
    let start = reg
        .showing_id
        .rsplit_once('@')
        .and_then(|(_, s)| s.parse::<Timestamp>().ok());
    let zone = reg
        .zone
        .as_deref()
        .and_then(volley_flow::zone)
        .unwrap_or_else(|| p.event.zone().clone());
    let when = start
        .map(|s| {
            s.to_zoned(zone.clone())
                .strftime("%A %-d %B, %H:%M (%Z)")
                .to_string()
        })
        .unwrap_or_default();
    let title = &p.event.title;
    let text = match data["kind"].as_str() {
        Some("live_now") => format!("**{title}** is live now. Join at the live position."),
        Some("starting_soon") => format!(
            "**{title}** starts in {}: {when}.",
            data["label"].as_str().unwrap_or("a few minutes")
        ),
        _ => format!(
            "Reminder: **{title}** starts in {}, on {when}.",
            data["label"].as_str().unwrap_or("")
        ),
    };
    let url = format!(
        "{}/events/{}?showing={}",
        app.config.base_url(),
        p.event.id,
        form_urlencoded::byte_serialize(reg.showing_id.as_bytes()).collect::<String>()
    );
    let n = notification(&p, &reg, &format!("{}\n{}", reg.id, timer.id), text, url);
    send(app, &n).await;
    Reminded::Done
}

fn notification(
    p: &Published,
    reg: &RegistrationRow,
    key: &str,
    text: String,
    url: String,
) -> Notification {
    Notification {
        id: format!("ntf_{}", &hash_secret(key)[..32]),
        contact: Recipient {
            id: reg.id.clone(),
            name: Some(reg.name.clone()),
            email: reg.email.clone(),
            external_id: None,
        },
        flow: FlowInfo {
            id: p.event.id.clone(),
            title: p.event.title.clone(),
        },
        conversation_id: reg.showing_id.clone(),
        assistant: AssistantInfo {
            name: Some(p.event.title.clone()),
            label: p.event.label.clone(),
        },
        messages: vec![Line {
            html: volley_flow::markdown::to_html(&text),
            text: volley_flow::markdown::to_plain(&text),
        }],
        continue_url: url,
    }
}

async fn send(app: &App, n: &Notification) {
    if !app.channels.reaches(n) {
        return;
    }
    for delivery in app.channels.send_all(n).await {
        let mut result = delivery.result;
        if matches!(&result, Err(e) if e.is_temporary()) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            result = app.channels.send_to(delivery.channel, n).await;
        }
        if let Err(e) = result {
            tracing::warn!(channel = delivery.channel, error = %e, "event notification not delivered");
        }
    }
}

/// Tells a registered asker the answer to their question, through the channels.
async fn tell_answer(app: &App, a: Answered) {
    let Some(p) = app.events.get(&a.event_id) else {
        return;
    };
    let Ok(Some(reg)) = app.store.viewer_registration(&a.event_id, &a.asker).await else {
        return;
    };
    let text = format!("You asked: {}\n\nAnswer: {}", a.question, a.answer);
    let url = format!("{}/events/{}", app.config.base_url(), p.event.id);
    let n = notification(
        &p,
        &reg,
        &format!("{}\n{}\n{}", reg.id, a.question, a.answer),
        text,
        url,
    );
    send(app, &n).await;
}
