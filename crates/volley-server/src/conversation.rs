//! Live conversations: applying inputs through the engine, logging the results
//! durably, and fanning them out to every connected client.
//!
//! Invariants:
//! - Inputs to one conversation are applied one at a time (its `inner` lock), so its
//!   sequence numbers are assigned without gaps or races.
//! - Nothing is acknowledged or sent before the store has committed it.
//! - Subscribers are added under the same lock, so a client either reads an event from
//!   the log or receives it live — never both, never neither.
//! - Each subscriber has a bounded queue; a client that cannot keep up is dropped
//!   (it reconnects and resumes from its last `seq`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use volley_flow::{Awaiting, Effect, Input, Question, State};
use volley_store::{
    Append, ConversationRow, EventRow, HandoffRow, NewConversation, NewEvent, NewTimer, TimerRow,
};

use crate::App;
use crate::error::ApiError;
use crate::flows::Published;
use crate::handoff;
use crate::ids::new_sorted_id;
use crate::outbound;
use crate::telemetry::names;
use crate::wire;

/// Inputs remembered per conversation for idempotent retries.
const RECENT_INPUTS: usize = 64;
/// Log entries read per page when replaying history.
pub const PAGE: i64 = 500;

/// A visible log entry ready to send: its frame, and when it may be shown.
#[derive(Debug)]
pub struct Delivery {
    pub seq: i64,
    pub visible_at: i64,
    /// When the typing indicator should start (messages with a typing pause).
    pub typing_from: Option<i64>,
    pub frame: Arc<str>,
}

impl Delivery {
    /// A delivery for a stored log row, if participants may see it.
    pub fn from_row(row: &EventRow) -> Option<Delivery> {
        let (delay_ms, typing) = wire::pacing_of(&row.kind, &row.data);
        Self::build(
            row.seq,
            row.at,
            row.visible_at,
            &row.kind,
            &row.data,
            delay_ms,
            typing,
        )
    }

    fn build(
        seq: i64,
        at: i64,
        visible_at: i64,
        kind: &str,
        data: &str,
        delay_ms: u64,
        typing: bool,
    ) -> Option<Delivery> {
        let body = wire::visible_body(kind, data)?;
        let typing_from = (typing && delay_ms > 0).then(|| visible_at - delay_ms as i64);
        Some(Delivery {
            seq,
            visible_at,
            typing_from,
            frame: wire::event_frame(seq, at, &body).into(),
        })
    }
}

/// What a participant (or the system) asks a conversation to do.
pub enum Action {
    /// An answer to the question asked at `step`.
    Answer {
        step: String,
        input: Input,
    },
    Back,
    Skip,
    /// Free text: to the person handling the conversation, else the answer to the
    /// open question.
    Say {
        text: String,
    },
    /// The participant's CSAT rating.
    Rate {
        score: i64,
    },
    /// An input from the server itself (an HTTP response, an agent).
    System(Input),
    /// The firing of a durable timer: applied only if the timer is still pending, and
    /// the timer is deleted in the same transaction.
    Timer {
        timer: i64,
        input: Input,
    },
}

/// The timers a conversation in `state` must have: the wake-up of the wait it is in
/// (with the wait's lateness policy), or the timeout of the question it asks, and its
/// expiry when the flow sets `expire_after` (from `last_input_ms`, the latest
/// participant input or the start).
fn timers_for(
    flow: &Published,
    state: &State,
    late_after: Option<i64>,
    last_input_ms: i64,
) -> Vec<NewTimer> {
    let timer = |due: i64, kind: &str, step: &str, late_after| NewTimer {
        due_at: due,
        kind: kind.into(),
        late_after,
        owner: None,
        data: serde_json::json!({ "step": step }).to_string(),
    };
    let mut timers = match state.awaiting(&flow.flow) {
        Awaiting::Wait { step, until } => {
            vec![timer(until.as_millisecond(), "resume", &step, late_after)]
        }
        Awaiting::Answer {
            step,
            timeout_at: Some(at),
        } => vec![timer(at.as_millisecond(), "timeout", &step, None)],
        // Nothing runs on its own while a person handles it (no expiry either).
        Awaiting::Ended { .. } | Awaiting::Human { .. } => return Vec::new(),
        _ => Vec::new(),
    };
    if let Some(after) = flow.flow.expire_after_ms() {
        timers.push(timer(last_input_ms + after as i64, "expire", "", None));
    }
    timers
}

/// The timer set to write with an append (replacing the conversation's), or `None`
/// when it had none and still has none.
fn timer_change(
    flow: &Published,
    had: bool,
    after: &State,
    effects: &[Effect],
    last_input_ms: i64,
    notify: Option<NewTimer>,
) -> Option<Vec<NewTimer>> {
    let mut new = timers_for(flow, after, lateness_of(effects), last_input_ms);
    new.extend(notify);
    (had || !new.is_empty()).then_some(new)
}

/// After a proactive turn (a timer's firing, a campaign's start) that showed messages,
/// the notification to send if they are still unseen a while later: a `notify` timer
/// covering everything up to the turn's last message. It is replaced like the
/// conversation's other timers, so an input from the participant cancels it.
fn notify_timer(app: &App, deliveries: &[Arc<Delivery>], now_ms: i64) -> Option<NewTimer> {
    if app.channels.is_empty() {
        return None;
    }
    let upto = deliveries.last()?.seq;
    Some(NewTimer {
        due_at: now_ms + app.config.channels.notify_after_ms as i64,
        kind: "notify".into(),
        late_after: None,
        owner: None,
        data: serde_json::json!({ "upto": upto }).to_string(),
    })
}

/// The lateness policy (ms) of the wait a turn stopped at, if any.
fn lateness_of(effects: &[Effect]) -> Option<i64> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Wait { late, .. } => Some(late.after_ms().map(|ms| ms as i64)),
        _ => None,
    })?
}

/// The conversation's state as a status word (stored and sent in `welcome`).
pub fn status_of(awaiting: &Awaiting) -> &'static str {
    match awaiting {
        Awaiting::Answer { .. } => "active",
        Awaiting::Http { .. } => "calling",
        Awaiting::Wait { .. } => "waiting",
        Awaiting::Human { .. } => "human",
        Awaiting::Ended { .. } => "ended",
    }
}

impl Loaded {
    /// Remembers a client message id (for idempotent retries), forgetting the oldest.
    fn remember(&mut self, client_id: &str, seq: i64) {
        if self.recent.len() >= RECENT_INPUTS {
            self.recent.pop_front();
        }
        self.recent.push_back((client_id.to_string(), seq));
    }
}

struct Loaded {
    flow: Arc<Published>,
    state: State,
    /// When the participant last sent an input (or the conversation started): the
    /// start of the expiry period.
    last_input_ms: i64,
    /// A `notify` timer may be pending (after a proactive turn).
    notify_pending: bool,
    open_ask: Option<Box<Question>>,
    recent: VecDeque<(String, i64)>,
}

struct Inner {
    last_seq: i64,
    status: &'static str,
    flow_version: i64,
    /// Time until which earlier messages are still being "typed" (pacing).
    pace_cursor: i64,
    loaded: Option<Loaded>,
    /// The row read when the conversation came into memory, kept for the first
    /// `ensure_loaded` (which would otherwise read it again).
    row: Option<ConversationRow>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Delivery>>,
}

struct StaffWatcher {
    id: u64,
    tx: mpsc::Sender<Arc<str>>,
}

/// What a person's action writes to a conversation: log entries of its own, the
/// hand-off as it stands afterwards, and optionally an input for the engine (returning
/// to the flow, closing) whose effects are logged after the entries.
#[derive(Default)]
pub struct Manual {
    pub entries: Vec<wire::Entry>,
    pub handoff: Option<HandoffRow>,
    pub input: Option<Input>,
    /// Replaces the conversation's timers (`None`: keeps them).
    pub timers: Option<Vec<NewTimer>>,
    /// Timers of an owner (a snooze's wake-up), scheduled with it.
    pub schedule: Vec<NewTimer>,
    /// The timer this is the firing of (deleted with it; must still be pending).
    pub fired_timer: Option<i64>,
}

/// A conversation as a person's action finds it.
pub struct Current<'a> {
    pub status: &'static str,
    pub state: &'a State,
    pub flow: &'a Published,
    /// The latest hand-off (open or resolved), if any.
    pub handoff: Option<HandoffRow>,
    pub last_seq: i64,
}

/// One conversation held in memory while it is active or watched.
pub struct Conv {
    pub id: String,
    pub contact_id: String,
    pub flow_id: String,
    inner: tokio::sync::Mutex<Inner>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Consoles watching the whole log (every entry, private ones included).
    staff: Mutex<Vec<StaffWatcher>>,
    touched: AtomicI64,
    /// Highest `seq` a client confirmed it has shown.
    acked: AtomicI64,
}

/// All conversations in memory.
#[derive(Default)]
pub struct Conversations {
    map: Mutex<HashMap<String, Arc<Conv>>>,
    next_subscriber: AtomicU64,
}

fn status_str(s: &str) -> &'static str {
    match s {
        "waiting" => "waiting",
        "calling" => "calling",
        "human" => "human",
        "ended" => "ended",
        _ => "active",
    }
}

impl Conversations {
    /// The conversation, from memory or the store. Its state loads on first input.
    pub async fn get(&self, app: &App, id: &str) -> Result<Option<Arc<Conv>>, ApiError> {
        if let Some(c) = self.map.lock().expect("conversations lock").get(id) {
            return Ok(Some(c.clone()));
        }
        let Some(row) = app.store.conversation(id).await? else {
            return Ok(None);
        };
        let conv = Arc::new(Conv {
            id: row.id.clone(),
            contact_id: row.contact_id.clone(),
            flow_id: row.flow_id.clone(),
            inner: tokio::sync::Mutex::new(Inner {
                last_seq: row.last_seq,
                status: status_str(&row.status),
                flow_version: row.flow_version,
                pace_cursor: 0,
                loaded: None,
                row: Some(row.clone()),
            }),
            subscribers: Mutex::new(Vec::new()),
            staff: Mutex::new(Vec::new()),
            touched: AtomicI64::new(app.clock.now_ms()),
            acked: AtomicI64::new(0),
        });
        let mut map = self.map.lock().expect("conversations lock");
        Ok(Some(map.entry(row.id).or_insert(conv).clone()))
    }

    /// Starts a new conversation of `flow` for a contact.
    pub async fn start(
        &self,
        app: &App,
        contact_id: &str,
        contact: volley_flow::Contact,
        flow: Arc<Published>,
        origin: Origin,
    ) -> Result<Arc<Conv>, ApiError> {
        let now = app.clock.now();
        let id = new_sorted_id("cv", now.as_millisecond());
        let started_by_server = origin.origin.is_some();
        let turn = flow.flow.start(contact, now, rand::random());
        let entries: Vec<wire::Entry> = turn
            .effects
            .iter()
            .map(|e| wire::from_effect(e, app.config.pacing))
            .collect();
        let mut entries = entries;
        let request = handoff::requested(
            app,
            [&id, contact_id, &flow.id],
            &turn.state,
            &turn.effects,
            now.as_millisecond(),
        );
        let handoff = request.map(|(row, entry)| {
            entries.push(entry);
            row
        });
        let logged = entries.len() as i64;
        // Nobody is subscribed yet: the first client reads these from the log.
        let (events, shown, cursor) = paced(entries, now.as_millisecond(), 0, 0, None);
        let status = status_of(&turn.state.awaiting(&flow.flow));
        let notify = origin
            .origin
            .is_some()
            .then(|| notify_timer(app, &shown, now.as_millisecond()))
            .flatten();
        let timers = timer_change(
            &flow,
            false,
            &turn.state,
            &turn.effects,
            now.as_millisecond(),
            notify,
        );
        let timer_ids = app
            .store
            .append(Append {
                conversation_id: id.clone(),
                after_seq: 0,
                state: serde_json::to_string(&turn.state)
                    .map_err(|e| ApiError::internal("state", e))?,
                status: status.into(),
                at: now.as_millisecond(),
                create: Some(NewConversation {
                    flow_id: flow.id.clone(),
                    flow_version: flow.version,
                    contact_id: contact_id.into(),
                    origin: origin.origin,
                }),
                events,
                timers: timers.clone(),
                fired_timer: origin.fired_timer,
                schedule: origin.schedule.clone(),
                handoff: handoff.clone(),
            })
            .await?;
        let notify_pending = timers.iter().flatten().any(|t| t.kind == "notify");
        scheduled(app, &id, timers, origin.schedule, timer_ids);
        send_http(app, &id, &turn.effects);
        let open_ask = last_ask(&turn.effects);
        let conv = Arc::new(Conv {
            id: id.clone(),
            contact_id: contact_id.into(),
            flow_id: flow.id.clone(),
            inner: tokio::sync::Mutex::new(Inner {
                last_seq: logged,
                status,
                flow_version: flow.version,
                pace_cursor: cursor,
                row: None,
                loaded: Some(Loaded {
                    flow,
                    state: turn.state,
                    last_input_ms: now.as_millisecond(),
                    notify_pending,
                    open_ask,
                    recent: VecDeque::new(),
                }),
            }),
            subscribers: Mutex::new(Vec::new()),
            staff: Mutex::new(Vec::new()),
            touched: AtomicI64::new(now.as_millisecond()),
            acked: AtomicI64::new(0),
        });
        metrics::counter!(names::CONVERSATIONS).increment(1);
        metrics::counter!(names::EVENTS).increment(logged as u64);
        // Started by the server (a campaign, the API), nobody watches it yet: it stays
        // in the store until someone opens it, so a campaign of a million sends does
        // not fill memory. A hand-off is kept: the desk reads it from this map.
        if started_by_server && handoff.is_none() {
            return Ok(conv);
        }
        self.map
            .lock()
            .expect("conversations lock")
            .insert(id, conv.clone());
        // Only now: assigning it reads the conversation from this map.
        if let Some(row) = &handoff {
            app.desk.put(row);
        }
        Ok(conv)
    }

    pub fn next_subscriber_id(&self) -> u64 {
        self.next_subscriber.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets conversations nobody watches and nobody used recently (their state is
    /// in the store). Returns how many remain in memory.
    pub fn sweep(&self, now_ms: i64, idle_ms: i64) -> usize {
        let mut map = self.map.lock().expect("conversations lock");
        map.retain(|_, c| {
            let watched = !c.subscribers.lock().expect("subscribers lock").is_empty()
                || !c.staff.lock().expect("staff lock").is_empty();
            watched || now_ms - c.touched.load(Ordering::Relaxed) < idle_ms
        });
        map.len()
    }

    /// The conversation if it is in memory (without reading the store).
    pub fn in_memory_conv(&self, id: &str) -> Option<Arc<Conv>> {
        self.map
            .lock()
            .expect("conversations lock")
            .get(id)
            .cloned()
    }

    pub fn in_memory(&self) -> usize {
        self.map.lock().expect("conversations lock").len()
    }
}

/// Assigns sequence numbers and pacing times to new log entries.
fn paced(
    entries: Vec<wire::Entry>,
    now_ms: i64,
    after_seq: i64,
    pace_cursor: i64,
    client_id: Option<&str>,
) -> (Vec<NewEvent>, Vec<Arc<Delivery>>, i64) {
    let mut cursor = now_ms.max(pace_cursor);
    let mut events = Vec::with_capacity(entries.len());
    let mut deliveries = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let seq = after_seq + 1 + i as i64;
        let visible_at = if entry.kind == "input" {
            now_ms
        } else {
            cursor += entry.delay_ms as i64;
            cursor
        };
        if let Some(d) = Delivery::build(
            seq,
            now_ms,
            visible_at,
            entry.kind,
            &entry.data,
            entry.delay_ms,
            entry.typing,
        ) {
            deliveries.push(Arc::new(d));
        }
        events.push(NewEvent {
            kind: entry.kind.into(),
            at: now_ms,
            visible_at,
            client_id: (entry.kind == "input")
                .then(|| client_id.map(String::from))
                .flatten(),
            data: entry.data,
        });
    }
    (events, deliveries, cursor)
}

/// Tells the scheduler about timers just committed: the conversation's own, then
/// the owned ones (in the order the store returned their ids).
fn scheduled(
    app: &App,
    conversation: &str,
    timers: Option<Vec<NewTimer>>,
    schedule: Vec<NewTimer>,
    ids: Vec<i64>,
) {
    let own = timers
        .into_iter()
        .flatten()
        .map(|t| (Some(conversation.to_string()), t));
    let owned = schedule.into_iter().map(|t| (None, t));
    let rows = own.chain(owned).zip(ids).map(|((conv, t), id)| TimerRow {
        id,
        due_at: t.due_at,
        kind: t.kind,
        conversation_id: conv,
        late_after: t.late_after,
        owner: t.owner,
        data: t.data,
    });
    app.scheduler.added(rows);
}

/// How a conversation starts when the participant did not start it.
#[derive(Default)]
pub struct Origin {
    /// What started it (`campaign:<id>`).
    pub origin: Option<String>,
    /// The timer whose firing starts it (deleted in the same transaction).
    pub fired_timer: Option<i64>,
    /// Owned timers to schedule with it (a recurring campaign's next send).
    pub schedule: Vec<NewTimer>,
}

/// Queues the request of an HTTP step the turn stopped at (after it is logged).
fn send_http(app: &App, conversation: &str, effects: &[Effect]) {
    // A turn stops at the first HTTP step, so there is at most one.
    if let Some(request) = effects.iter().find_map(|e| match e {
        Effect::Http { request, .. } => Some(request),
        _ => None,
    }) {
        app.outbound.send(outbound::Call {
            conversation: conversation.into(),
            request: request.clone(),
        });
    }
}

fn last_ask(effects: &[Effect]) -> Option<Box<Question>> {
    let mut open = None;
    for e in effects {
        match e {
            Effect::Ask(q) => open = Some(q.clone()),
            Effect::Wait { .. }
            | Effect::Handoff { .. }
            | Effect::End { .. }
            | Effect::Http { .. } => open = None,
            _ => {}
        }
    }
    open
}

impl Conv {
    fn touch(&self, now_ms: i64) {
        self.touched.store(now_ms, Ordering::Relaxed);
    }

    /// Records that a client has shown everything up to `seq`.
    pub fn acked(&self, seq: i64) {
        self.acked.fetch_max(seq, Ordering::Relaxed);
    }

    /// Highest `seq` any client confirmed.
    pub fn acked_seq(&self) -> i64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Status and last sequence number.
    pub async fn summary(&self) -> (&'static str, i64, i64) {
        let inner = self.inner.lock().await;
        (inner.status, inner.last_seq, inner.flow_version)
    }

    /// Adds a subscriber; returns the last `seq` it must read from the log itself.
    pub async fn subscribe(&self, id: u64, tx: mpsc::Sender<Arc<Delivery>>) -> i64 {
        let inner = self.inner.lock().await;
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .push(Subscriber { id, tx });
        inner.last_seq
    }

    pub fn unsubscribe(&self, id: u64) {
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .retain(|s| s.id != id);
    }

    /// Adds a console watching every log entry; returns the last `seq` it must read
    /// from the log itself.
    pub async fn watch(&self, id: u64, tx: mpsc::Sender<Arc<str>>) -> i64 {
        let inner = self.inner.lock().await;
        self.staff
            .lock()
            .expect("staff lock")
            .push(StaffWatcher { id, tx });
        inner.last_seq
    }

    pub fn unwatch(&self, id: u64) {
        self.staff
            .lock()
            .expect("staff lock")
            .retain(|s| s.id != id);
    }

    /// Sends a frame that is not part of the log (an agent typing) to participants.
    pub fn signal(&self, frame: String) {
        let d = Arc::new(Delivery {
            seq: 0,
            visible_at: 0,
            typing_from: None,
            frame: frame.into(),
        });
        self.publish(std::slice::from_ref(&d));
    }

    /// The frames consoles watching this conversation get for new entries (none when
    /// nobody watches: this runs for every append).
    fn staff_frames(&self, after_seq: i64, events: &[NewEvent]) -> Vec<Arc<str>> {
        if self.staff.lock().expect("staff lock").is_empty() {
            return Vec::new();
        }
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                wire::staff_frame(after_seq + 1 + i as i64, &e.kind, e.at, &e.data).into()
            })
            .collect()
    }

    fn publish_staff(&self, frames: Vec<Arc<str>>) {
        if frames.is_empty() {
            return;
        }
        let mut staff = self.staff.lock().expect("staff lock");
        staff.retain(|s| frames.iter().all(|f| s.tx.try_send(f.clone()).is_ok()));
    }

    /// Applies a person's action (see [`Manual`]): `make` sees the conversation as it
    /// is under its lock and says what to write. Returns the `seq` of the first entry
    /// written. A retried `client_id` returns the original `seq` and changes nothing.
    pub async fn manual(
        &self,
        app: &App,
        client_id: Option<&str>,
        make: impl FnOnce(&Current) -> Result<Manual, ApiError>,
    ) -> Result<i64, ApiError> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let now = app.clock.now();
        let now_ms = now.as_millisecond();
        self.touch(now_ms);
        let status = inner.status;
        let last_seq = inner.last_seq;
        let pace_cursor = inner.pace_cursor;
        let loaded = self.ensure_loaded(app, inner).await?;
        if let Some(cid) = client_id
            && let Some((_, seq)) = loaded.recent.iter().find(|(c, _)| c == cid)
        {
            return Ok(*seq);
        }
        let handoff = match app.desk.row(&self.id) {
            Some(row) => Some(row),
            None => app.store.handoff(&self.id).await?,
        };
        let flow = loaded.flow.clone();
        let manual = make(&Current {
            status,
            state: &loaded.state,
            flow: &flow,
            handoff,
            last_seq,
        })?;
        let mut entries = manual.entries;
        let mut state = None;
        let mut effects = Vec::new();
        if let Some(input) = manual.input {
            let turn = flow
                .flow
                .handle(&loaded.state, input, now)
                .map_err(|e| ApiError::internal("engine", e))?;
            if let [Effect::Rejected { message, .. }] = turn.effects.as_slice() {
                return Err(ApiError::unprocessable("invalid-input", message.clone()));
            }
            entries.extend(
                turn.effects
                    .iter()
                    .map(|e| wire::from_effect(e, app.config.pacing)),
            );
            effects = turn.effects;
            state = Some(turn.state);
        }
        if entries.is_empty() {
            return Ok(last_seq);
        }
        let (timers, new_status) = match &state {
            Some(after) => {
                let timers = timer_change(&flow, true, after, &effects, loaded.last_input_ms, None);
                (timers, status_of(&after.awaiting(&flow.flow)))
            }
            None => (manual.timers, status),
        };
        let logged = entries.len() as i64;
        let (events, deliveries, cursor) = paced(entries, now_ms, last_seq, pace_cursor, client_id);
        let snapshot = state.as_ref().unwrap_or(&loaded.state);
        let staff_frames = self.staff_frames(last_seq, &events);
        let timer_ids = app
            .store
            .append(Append {
                conversation_id: self.id.clone(),
                after_seq: last_seq,
                state: serde_json::to_string(snapshot)
                    .map_err(|e| ApiError::internal("state", e))?,
                status: new_status.into(),
                at: now_ms,
                create: None,
                events,
                timers: timers.clone(),
                fired_timer: manual.fired_timer,
                schedule: manual.schedule.clone(),
                handoff: manual.handoff.clone(),
            })
            .await?;
        scheduled(app, &self.id, timers, manual.schedule, timer_ids);
        metrics::counter!(names::EVENTS).increment(logged as u64);
        send_http(app, &self.id, &effects);
        let loaded = inner.loaded.as_mut().expect("still loaded");
        let first_seq = last_seq + 1;
        if let Some(cid) = client_id {
            loaded.remember(cid, first_seq);
        }
        if let Some(after) = state {
            loaded.open_ask = last_ask(&effects);
            loaded.state = after;
        }
        inner.last_seq = last_seq + logged;
        inner.pace_cursor = cursor;
        inner.status = new_status;
        self.publish(&deliveries);
        self.publish_staff(staff_frames);
        if let Some(row) = &manual.handoff {
            app.desk.put(row);
        }
        Ok(first_seq)
    }

    fn publish(&self, deliveries: &[Arc<Delivery>]) {
        if deliveries.is_empty() {
            return;
        }
        let mut subs = self.subscribers.lock().expect("subscribers lock");
        let before = subs.len();
        subs.retain(|s| deliveries.iter().all(|d| s.tx.try_send(d.clone()).is_ok()));
        if subs.len() < before {
            metrics::counter!(names::SLOW_CLIENTS).increment((before - subs.len()) as u64);
        }
    }

    async fn ensure_loaded<'a>(
        &self,
        app: &App,
        inner: &'a mut Inner,
    ) -> Result<&'a mut Loaded, ApiError> {
        if inner.loaded.is_none() {
            let row = match inner.row.take() {
                Some(row) => row,
                None => app
                    .store
                    .conversation(&self.id)
                    .await?
                    .ok_or_else(|| ApiError::internal("conversation vanished", &self.id))?,
            };
            let state: State = serde_json::from_str(&row.state)
                .map_err(|e| ApiError::internal("stored state", e))?;
            let flow = app
                .flows
                .version(app.store.as_ref(), &row.flow_id, row.flow_version)
                .await?;
            let mut recent = VecDeque::new();
            let mut open_ask = None;
            let tail = app
                .store
                .events_after(
                    &self.id,
                    (row.last_seq - RECENT_INPUTS as i64).max(0),
                    RECENT_INPUTS as i64,
                )
                .await?;
            // The latest participant input among the recent entries; without one,
            // the start (a whole short log) or the oldest entry read (a lower bound).
            let last_input_ms = tail
                .iter()
                .rev()
                .find(|e| e.kind == "input" && e.client_id.is_some())
                .map(|e| e.at)
                .unwrap_or_else(|| match tail.first() {
                    Some(first) if first.seq > 1 => first.at,
                    _ => row.created_at,
                });
            for ev in tail {
                if let Some(cid) = ev.client_id {
                    recent.push_back((cid, ev.seq));
                }
                match ev.kind.as_str() {
                    "ask" => {
                        open_ask = serde_json::from_str::<Question>(&ev.data)
                            .ok()
                            .map(Box::new)
                    }
                    "wait" | "handoff" | "end" | "http" => open_ask = None,
                    _ => {}
                }
            }
            inner.last_seq = row.last_seq;
            inner.loaded = Some(Loaded {
                flow,
                state,
                last_input_ms,
                // Unknown after a restart: assume one may be, so it gets replaced.
                notify_pending: true,
                open_ask,
                recent,
            });
        }
        Ok(inner.loaded.as_mut().expect("loaded above"))
    }

    /// Applies an input; returns the `seq` of the logged input once it is durable.
    /// A retried `client_id` returns the original `seq` and changes nothing.
    pub async fn input(
        &self,
        app: &App,
        client_id: Option<&str>,
        action: Action,
    ) -> Result<i64, ApiError> {
        let started = std::time::Instant::now();
        let result = match action {
            Action::Say { text } if self.summary().await.0 == "human" => {
                handoff::participant_message(app, self, &text, client_id).await
            }
            Action::Rate { score } => handoff::csat(app, self, score, client_id).await,
            action => self.apply(app, client_id, action).await,
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(names::INPUTS, "result" => outcome).increment(1);
        metrics::histogram!(names::INPUT_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    async fn apply(
        &self,
        app: &App,
        client_id: Option<&str>,
        action: Action,
    ) -> Result<i64, ApiError> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let now = app.clock.now();
        let now_ms = now.as_millisecond();
        self.touch(now_ms);
        let loaded = self.ensure_loaded(app, inner).await?;
        if let Some(cid) = client_id
            && let Some((_, seq)) = loaded.recent.iter().find(|(c, _)| c == cid)
        {
            return Ok(*seq);
        }
        let flow = loaded.flow.clone();
        let awaiting = loaded.state.awaiting(&flow.flow);
        let refuse_now = |a: &Awaiting| match a {
            Awaiting::Ended { .. } => Some(ApiError::conflict(
                "ended",
                "this conversation has ended; start again",
            )),
            Awaiting::Human { .. } => Some(ApiError::conflict(
                "with-human",
                "a person is handling this conversation",
            )),
            _ => None,
        };
        let system = matches!(action, Action::System(_) | Action::Timer { .. });
        let fired_timer = match &action {
            Action::Timer { timer, .. } => Some(*timer),
            _ => None,
        };
        let (input, step) = match action {
            Action::Answer { step, input } => {
                if let Some(e) = refuse_now(&awaiting) {
                    return Err(e);
                }
                match &awaiting {
                    Awaiting::Answer { step: open, .. } if *open == step => (input, Some(step)),
                    _ => {
                        return Err(ApiError::conflict(
                            "stale-question",
                            format!("the question `{step}` is not the one open now"),
                        ));
                    }
                }
            }
            Action::Back | Action::Skip => {
                if let Some(e) = refuse_now(&awaiting) {
                    return Err(e);
                }
                let step = match &awaiting {
                    Awaiting::Answer { step, .. } => Some(step.clone()),
                    _ => None,
                };
                (
                    if matches!(action, Action::Back) {
                        Input::Back
                    } else {
                        Input::Skip
                    },
                    step,
                )
            }
            Action::Say { text } => {
                if let Some(e) = refuse_now(&awaiting) {
                    return Err(e);
                }
                match &awaiting {
                    Awaiting::Answer { step, .. } => (Input::Text { text }, Some(step.clone())),
                    _ => {
                        return Err(ApiError::conflict(
                            "no-question",
                            "nothing is being asked now",
                        ));
                    }
                }
            }
            Action::Rate { .. } => {
                return Err(ApiError::conflict(
                    "no-rating-asked",
                    "there is nothing to rate",
                ));
            }
            Action::System(input) | Action::Timer { input, .. } => (input, None),
        };
        let turn = flow
            .flow
            .handle(&loaded.state, input.clone(), now)
            .map_err(|e| ApiError::internal("engine", e))?;
        if let [Effect::Rejected { message, .. }] = turn.effects.as_slice() {
            return Err(ApiError::unprocessable("invalid-input", message.clone()));
        }
        let last_input_ms = if system { loaded.last_input_ms } else { now_ms };
        // A pending notification counts too: any append replaces it.
        let had_timers = !timers_for(&flow, &loaded.state, None, last_input_ms).is_empty()
            || loaded.notify_pending;
        let mut entries = Vec::with_capacity(turn.effects.len() + 1);
        if !system {
            entries.push(wire::from_input(
                &input,
                step.as_deref(),
                loaded.open_ask.as_deref(),
            ));
        }
        entries.extend(
            turn.effects
                .iter()
                .map(|e| wire::from_effect(e, app.config.pacing)),
        );
        let request = handoff::requested(
            app,
            [&self.id, &self.contact_id, &self.flow_id],
            &turn.state,
            &turn.effects,
            now_ms,
        );
        let handoff = request.map(|(row, entry)| {
            entries.push(entry);
            row
        });
        let after_seq = inner.last_seq;
        let logged = entries.len() as i64;
        let (events, deliveries, cursor) =
            paced(entries, now_ms, after_seq, inner.pace_cursor, client_id);
        let notify = fired_timer
            .is_some()
            .then(|| notify_timer(app, &deliveries, now_ms))
            .flatten();
        let notify_pending = notify.is_some();
        let timers = timer_change(
            &flow,
            had_timers,
            &turn.state,
            &turn.effects,
            last_input_ms,
            notify,
        );
        let status = status_of(&turn.state.awaiting(&flow.flow));
        let staff_frames = self.staff_frames(after_seq, &events);
        let timer_ids = app
            .store
            .append(Append {
                conversation_id: self.id.clone(),
                after_seq,
                events,
                state: serde_json::to_string(&turn.state)
                    .map_err(|e| ApiError::internal("state", e))?,
                status: status.into(),
                at: now_ms,
                create: None,
                timers: timers.clone(),
                fired_timer,
                schedule: Vec::new(),
                handoff: handoff.clone(),
            })
            .await?;
        scheduled(app, &self.id, timers, Vec::new(), timer_ids);
        // Durable: now update memory, tell everyone, send any HTTP request.
        metrics::counter!(names::EVENTS).increment(logged as u64);
        send_http(app, &self.id, &turn.effects);
        let loaded = inner.loaded.as_mut().expect("still loaded");
        let input_seq = after_seq + 1;
        if let Some(cid) = client_id {
            loaded.remember(cid, input_seq);
        }
        if turn.effects.iter().any(|e| {
            matches!(
                e,
                Effect::Ask(_)
                    | Effect::Wait { .. }
                    | Effect::Handoff { .. }
                    | Effect::End { .. }
                    | Effect::Http { .. }
            )
        }) {
            loaded.open_ask = last_ask(&turn.effects);
        }
        loaded.state = turn.state;
        loaded.last_input_ms = last_input_ms;
        loaded.notify_pending = notify_pending;
        inner.last_seq = after_seq + logged;
        inner.pace_cursor = cursor;
        inner.status = status;
        self.publish(&deliveries);
        self.publish_staff(staff_frames);
        if let Some(row) = &handoff {
            app.desk.put(row);
        }
        Ok(input_seq)
    }
}
