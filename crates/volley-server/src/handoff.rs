//! Human hand-off: the desk (open hand-offs, agents online, fair assignment) and what
//! people do in a conversation handed to them — reply, note, tag, snooze, transfer,
//! resolve, return to the flow — plus what the participant is told while waiting and
//! the CSAT rating after.
//!
//! Every action is an entry in the conversation's log (the source of truth, from which
//! response times and CSAT are computed); the `handoffs` row written in the same
//! transaction is the current state the console lists, and the desk keeps the open
//! ones in memory. The bot is silent while a person has the conversation: the engine
//! sees no input until it is handed back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, broadcast};
use utoipa::ToSchema;
use volley_flow::{Effect, Input, Priority, State, markdown};
use volley_store::{HandoffRow, NewTimer, TimerRow};

use crate::App;
use crate::conversation::{Current, Manual};
use crate::error::ApiError;
use crate::wire;

/// Characters of the latest message kept for lists.
pub const PREVIEW_CHARS: usize = 140;
/// Recent waits (hand-off → first human reply) per queue behind the expected wait.
pub const WAIT_SAMPLES: usize = 20;
/// Tags per conversation, and characters per tag.
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 40;
/// Longest snooze.
pub const MAX_SNOOZE_MS: i64 = 90 * 24 * 3_600_000;
/// Characters of a reply or note.
pub const MAX_TEXT_CHARS: usize = 4_000;
/// Console update frames buffered per console before it misses some (it then
/// reloads its lists).
const UPDATES_BUFFER: usize = 1024;

/// The outcome a conversation ends with when a person resolves it.
pub const RESOLVED: &str = "resolved";

pub fn priority_rank(p: Priority) -> i64 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

pub fn priority_name(rank: i64) -> &'static str {
    match rank {
        0 => "low",
        2 => "high",
        3 => "urgent",
        _ => "normal",
    }
}

/// Who acts: an agent (or admin) signed in to the console.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

/// An agent as the desk needs them.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    /// Conversations they handle at once.
    pub capacity: usize,
}

struct Seat {
    info: AgentInfo,
    /// Open consoles (online while at least one is).
    consoles: usize,
    /// Takes new conversations (an agent can set themselves away).
    available: bool,
    /// When they were last given a conversation (round robin).
    last_assigned: u64,
}

#[derive(Default)]
struct DeskState {
    open: HashMap<String, HandoffRow>,
    /// Conversations assigned (not snoozed) per agent, kept with `open`.
    assigned: HashMap<String, usize>,
    seats: HashMap<String, Seat>,
    /// The queues each agent serves; an agent absent here serves every queue.
    queues_of: HashMap<String, HashSet<String>>,
    tick: u64,
    /// Recent waits to a first human reply, per queue (ms), newest last.
    waits: HashMap<String, VecDeque<i64>>,
    /// Conversations whose assignment is being written, and to whom.
    reserved: HashMap<String, String>,
    /// The place in line each waiting participant was last told.
    told: HashMap<String, usize>,
}

impl DeskState {
    fn serves(&self, agent: &str, queue: &str) -> bool {
        self.queues_of
            .get(agent)
            .is_none_or(|queues| queues.contains(queue))
    }

    /// Conversations an agent has now (snoozed ones do not count), with those being
    /// assigned to them.
    fn load(&self, agent: &str) -> usize {
        self.assigned.get(agent).copied().unwrap_or(0)
            + self.reserved.values().filter(|a| *a == agent).count()
    }

    /// Replaces (or, resolved, removes) a hand-off, keeping the counts.
    fn set(&mut self, row: &HandoffRow) -> Option<HandoffRow> {
        let counted = |r: &HandoffRow| {
            (r.status == "assigned")
                .then(|| r.agent_id.clone())
                .flatten()
        };
        let before = if row.status == "resolved" {
            self.open.remove(&row.conversation_id)
        } else {
            self.open.insert(row.conversation_id.clone(), row.clone())
        };
        if let Some(agent) = before.as_ref().and_then(counted)
            && let Some(n) = self.assigned.get_mut(&agent)
        {
            *n = n.saturating_sub(1);
        }
        if row.status != "resolved"
            && let Some(agent) = counted(row)
        {
            *self.assigned.entry(agent).or_default() += 1;
        }
        before
    }

    fn taking(&self, queue: &str) -> impl Iterator<Item = (&String, &Seat)> {
        self.seats
            .iter()
            .filter(move |(id, s)| s.consoles > 0 && s.available && self.serves(id, queue))
    }
}

/// A change for consoles: a JSON frame, and who it concerns (empty: everyone;
/// admins see every change).
#[derive(Clone, Debug)]
pub struct Update {
    pub frame: Arc<str>,
    pub to: Vec<String>,
}

/// Open hand-offs, the agents online, and who gets what.
pub struct Desk {
    state: Mutex<DeskState>,
    updates: broadcast::Sender<Update>,
    kick: Notify,
    /// Changes asked for, and the latest one the assignment task has acted on: they
    /// let a caller wait until assignment has caught up ([`Desk::settled`]).
    kicks: std::sync::atomic::AtomicU64,
    rounds: tokio::sync::watch::Sender<u64>,
}

impl Default for Desk {
    fn default() -> Self {
        Desk {
            state: Mutex::default(),
            updates: broadcast::channel(UPDATES_BUFFER).0,
            kick: Notify::new(),
            kicks: Default::default(),
            rounds: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Keeps an agent online while a console is open.
pub struct Presence {
    app: Arc<App>,
    agent: String,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut st = self.app.desk.state.lock().expect("desk lock");
        if let Some(seat) = st.seats.get_mut(&self.agent) {
            seat.consoles = seat.consoles.saturating_sub(1);
        }
        drop(st);
        self.app.desk.agents_changed();
    }
}

/// A ranked waiting list entry: priority first, then the longest waiting.
fn waiting_order(a: &HandoffRow, b: &HandoffRow) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.requested_at.cmp(&b.requested_at))
        .then(a.conversation_id.cmp(&b.conversation_id))
}

impl Desk {
    /// Loads the open hand-offs and the queues agents serve (at start-up).
    pub fn load(&self, rows: Vec<HandoffRow>, agent_queues: Vec<(String, String)>) {
        let mut st = self.state.lock().expect("desk lock");
        st.open.clear();
        st.assigned.clear();
        for r in rows {
            st.set(&r);
        }
        st.queues_of.clear();
        for (agent, queue) in agent_queues {
            st.queues_of.entry(agent).or_default().insert(queue);
        }
    }

    /// The open hand-off of a conversation.
    pub fn row(&self, conversation: &str) -> Option<HandoffRow> {
        self.state
            .lock()
            .expect("desk lock")
            .open
            .get(conversation)
            .cloned()
    }

    /// Records a hand-off as just committed, tells consoles, and looks for agents.
    /// A change to the waiting list concerns every console; any other (a reply, a
    /// snooze, a transfer between agents) only the agents it was and is assigned to.
    pub fn put(&self, row: &HandoffRow) {
        let mut st = self.state.lock().expect("desk lock");
        let before = st.set(row);
        if let (Some(at), Some(b)) = (row.first_reply_at, &before)
            && b.first_reply_at.is_none()
        {
            let waits = st.waits.entry(row.queue.clone()).or_default();
            if waits.len() >= WAIT_SAMPLES {
                waits.pop_front();
            }
            waits.push_back(at - row.requested_at);
        }
        drop(st);
        let waiting = |r: &HandoffRow| r.status == "queued";
        let to = match &before {
            Some(b) if !waiting(b) && !waiting(row) => {
                let mut to: Vec<String> = [&b.agent_id, &row.agent_id]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                to.dedup();
                to
            }
            _ => Vec::new(),
        };
        // Assignment (and places in line) can only move when a hand-off arrives,
        // leaves, or changes status, agent or queue — not with every message.
        let moves = before.as_ref().is_none_or(|b| {
            b.status != row.status || b.agent_id != row.agent_id || b.queue != row.queue
        }) || row.status == "resolved";
        let frame = json!({"type": "handoff", "handoff": HandoffView::from(row)}).to_string();
        let _ = self.updates.send(Update {
            frame: frame.into(),
            to,
        });
        if moves {
            self.wake();
        }
    }

    /// Asks the assignment task for a round.
    fn wake(&self) {
        self.kicks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.kick.notify_one();
    }

    /// Waits until the assignment task has acted on every change made before the call
    /// (assigned what it could, told waiting participants their new places).
    pub async fn settled(&self) {
        let asked = self.kicks.load(std::sync::atomic::Ordering::SeqCst);
        let mut rounds = self.rounds.subscribe();
        let _ = rounds.wait_for(|done| *done >= asked).await;
    }

    /// Console updates: every hand-off change, and agents coming and going.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn agents_changed(&self) {
        let _ = self.updates.send(Update {
            frame: r#"{"type":"agents"}"#.into(),
            to: Vec::new(),
        });
        self.wake();
    }

    /// An agent opens a console: online (and available) until the returned guard drops.
    pub fn connect(app: &Arc<App>, info: AgentInfo) -> Presence {
        let mut st = app.desk.state.lock().expect("desk lock");
        let seat = st.seats.entry(info.id.clone()).or_insert(Seat {
            info: info.clone(),
            consoles: 0,
            available: true,
            last_assigned: 0,
        });
        seat.info = info.clone();
        seat.consoles += 1;
        drop(st);
        app.desk.agents_changed();
        Presence {
            app: app.clone(),
            agent: info.id,
        }
    }

    /// An agent sets themselves available or away (away: no new conversations).
    pub fn set_available(&self, agent: &str, available: bool) -> bool {
        let mut st = self.state.lock().expect("desk lock");
        let Some(seat) = st.seats.get_mut(agent) else {
            return false;
        };
        seat.available = available;
        drop(st);
        self.agents_changed();
        true
    }

    /// A changed capacity or name takes effect at once for an agent online.
    pub fn update_agent(&self, info: AgentInfo) {
        let mut st = self.state.lock().expect("desk lock");
        if let Some(seat) = st.seats.get_mut(&info.id) {
            seat.info = info;
        }
        drop(st);
        self.agents_changed();
    }

    /// The queues an agent serves changed.
    pub fn set_queues(&self, agent: &str, queues: &[String]) {
        let mut st = self.state.lock().expect("desk lock");
        if queues.is_empty() {
            st.queues_of.remove(agent);
        } else {
            st.queues_of
                .insert(agent.into(), queues.iter().cloned().collect());
        }
        drop(st);
        self.agents_changed();
    }

    /// Who gets which waiting conversation now: the longest-waiting (by priority)
    /// first, each to the available agent serving its queue with room left who was
    /// given one least recently (round robin). The pairs are reserved until
    /// [`Desk::release`].
    fn plan(&self) -> Vec<(String, AgentInfo)> {
        let mut st = self.state.lock().expect("desk lock");
        let mut load: HashMap<String, usize> = st
            .seats
            .iter()
            .filter(|(_, s)| s.consoles > 0 && s.available)
            .map(|(id, _)| (id.clone(), st.load(id)))
            .collect();
        let room = |st: &DeskState, load: &HashMap<String, usize>| {
            load.iter()
                .any(|(id, n)| st.seats.get(id).is_some_and(|s| *n < s.info.capacity))
        };
        if !room(&st, &load) {
            return Vec::new();
        }
        let mut waiting: Vec<&HandoffRow> = st
            .open
            .values()
            .filter(|r| r.status == "queued" && !st.reserved.contains_key(&r.conversation_id))
            .collect();
        waiting.sort_by(|a, b| waiting_order(a, b));
        let waiting: Vec<(String, String)> = waiting
            .into_iter()
            .map(|r| (r.conversation_id.clone(), r.queue.clone()))
            .collect();
        let mut out = Vec::new();
        for (conv, queue) in waiting {
            let pick = st
                .taking(&queue)
                .filter(|(id, s)| load.get(*id).is_some_and(|n| *n < s.info.capacity))
                .min_by(|(a_id, a), (b_id, b)| {
                    a.last_assigned
                        .cmp(&b.last_assigned)
                        .then(load[*a_id].cmp(&load[*b_id]))
                        .then(a_id.cmp(b_id))
                })
                .map(|(id, s)| (id.clone(), s.info.clone()));
            let Some((id, info)) = pick else {
                if room(&st, &load) {
                    continue;
                }
                break;
            };
            st.tick += 1;
            let tick = st.tick;
            if let Some(seat) = st.seats.get_mut(&id) {
                seat.last_assigned = tick;
            }
            *load.entry(id.clone()).or_default() += 1;
            st.reserved.insert(conv.clone(), id);
            out.push((conv, info));
        }
        out
    }

    fn release(&self, conversation: &str) {
        self.state
            .lock()
            .expect("desk lock")
            .reserved
            .remove(conversation);
    }

    /// Waiting conversations whose place in their queue changed since the participant
    /// was last told: (conversation, queue, place, agents available, an agent has room).
    fn moved_places(&self) -> Vec<(String, String, usize, usize, bool)> {
        let mut st = self.state.lock().expect("desk lock");
        let mut waiting: Vec<&HandoffRow> =
            st.open.values().filter(|r| r.status == "queued").collect();
        waiting.sort_by(|a, b| a.queue.cmp(&b.queue).then(waiting_order(a, b)));
        let mut places = Vec::with_capacity(waiting.len());
        let mut queue = "";
        let mut place = 0;
        for r in waiting {
            if r.queue != queue {
                queue = &r.queue;
                place = 0;
            }
            place += 1;
            places.push((r.conversation_id.clone(), r.queue.clone(), place));
        }
        let mut out = Vec::new();
        let mut told = HashMap::with_capacity(places.len());
        for (conv, queue, place) in places {
            let before = st.told.get(&conv).copied();
            told.insert(conv.clone(), place);
            if before.is_some_and(|b| b != place) {
                let agents = st.taking(&queue).count();
                let room = st
                    .taking(&queue)
                    .any(|(id, s)| st.load(id) < s.info.capacity);
                out.push((conv, queue, place, agents, room));
            }
        }
        st.told = told;
        out
    }

    /// Where a waiting conversation stands: its place in its queue (1 = next) and the
    /// agents available for that queue now.
    /// Also: whether any of those agents has room for one more now.
    fn standing(&self, queue: &str, row: &HandoffRow) -> (usize, usize, bool) {
        let mut st = self.state.lock().expect("desk lock");
        let ahead = st
            .open
            .values()
            .filter(|r| {
                r.status == "queued"
                    && r.queue == queue
                    && r.conversation_id != row.conversation_id
                    && waiting_order(r, row).is_lt()
            })
            .count();
        let room = st
            .taking(queue)
            .any(|(id, s)| st.load(id) < s.info.capacity);
        let (agents, place) = (st.taking(queue).count(), ahead + 1);
        st.told.insert(row.conversation_id.clone(), place);
        (place, agents, room)
    }

    /// The expected wait at `position` from recent real waits in the queue: their
    /// median, times the rounds of agents it takes to reach that position.
    fn expected_wait(&self, queue: &str, position: usize, agents: usize) -> Option<i64> {
        let st = self.state.lock().expect("desk lock");
        let waits = st.waits.get(queue)?;
        if waits.is_empty() || agents == 0 {
            return None;
        }
        let mut sorted: Vec<i64> = waits.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let rounds = position.div_ceil(agents) as i64;
        Some(median * rounds)
    }

    /// Every open hand-off, in waiting order.
    pub fn open(&self) -> Vec<HandoffRow> {
        let st = self.state.lock().expect("desk lock");
        let mut rows: Vec<HandoffRow> = st.open.values().cloned().collect();
        rows.sort_by(waiting_order);
        rows
    }

    /// The agents online, with their load.
    pub fn agents(&self) -> Vec<AgentView> {
        let st = self.state.lock().expect("desk lock");
        let mut out: Vec<AgentView> = st
            .seats
            .iter()
            .filter(|(_, s)| s.consoles > 0)
            .map(|(id, s)| AgentView {
                id: id.clone(),
                name: s.info.name.clone(),
                available: s.available,
                capacity: s.info.capacity,
                load: st.load(id),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out
    }
}

/// An agent online, as consoles show them.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub available: bool,
    pub capacity: usize,
    /// Conversations assigned to them now.
    pub load: usize,
}

/// A hand-off as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandoffView {
    pub conversation: String,
    pub contact: String,
    pub flow: String,
    pub queue: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: &'static str,
    pub reason: Option<String>,
    /// `queued`, `assigned`, `snoozed` or `resolved`.
    pub status: String,
    pub agent: Option<String>,
    pub requested_at: i64,
    pub assigned_at: Option<i64>,
    pub first_reply_at: Option<i64>,
    pub last_message_at: i64,
    pub preview: String,
    pub snoozed_until: Option<i64>,
    pub resolved_at: Option<i64>,
    pub tags: Vec<String>,
    pub csat: Option<i64>,
}

impl From<&HandoffRow> for HandoffView {
    fn from(r: &HandoffRow) -> Self {
        HandoffView {
            conversation: r.conversation_id.clone(),
            contact: r.contact_id.clone(),
            flow: r.flow_id.clone(),
            queue: r.queue.clone(),
            priority: priority_name(r.priority),
            reason: r.reason.clone(),
            status: r.status.clone(),
            agent: r.agent_id.clone(),
            requested_at: r.requested_at,
            assigned_at: r.assigned_at,
            first_reply_at: r.first_reply_at,
            last_message_at: r.last_message_at,
            preview: r.preview.clone(),
            snoozed_until: r.snoozed_until,
            resolved_at: r.resolved_at,
            tags: r.tags.split_whitespace().map(String::from).collect(),
            csat: r.csat,
        }
    }
}

/// Back from a snooze: with its agent, or waiting if it has none.
fn unsnooze(row: &mut HandoffRow) {
    row.status = if row.agent_id.is_some() {
        "assigned"
    } else {
        "queued"
    }
    .into();
    row.snoozed_until = None;
}

fn preview(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// The hand-off a turn requests, if it emitted one: the new row (queued) and the
/// entry telling the participant where they stand. `ids` are the conversation's,
/// its contact's and its flow's.
pub fn requested(
    app: &App,
    ids: [&str; 3],
    state: &State,
    effects: &[Effect],
    now_ms: i64,
) -> Option<(HandoffRow, wire::Entry)> {
    let (queue, reason, priority) = effects.iter().rev().find_map(|e| match e {
        Effect::Handoff {
            queue,
            reason,
            priority,
            ..
        } => Some((queue, reason, priority)),
        _ => None,
    })?;
    let queue = queue
        .clone()
        .unwrap_or_else(|| app.config.handoff.default_queue.clone());
    let [conversation, contact, flow] = ids;
    let row = HandoffRow {
        conversation_id: conversation.into(),
        contact_id: contact.into(),
        flow_id: flow.into(),
        queue: queue.clone(),
        priority: priority_rank(*priority),
        reason: reason.clone(),
        status: "queued".into(),
        requested_at: now_ms,
        last_message_at: now_ms,
        preview: preview(reason.as_deref().unwrap_or("Asked for a person")),
        updated_at: now_ms,
        ..Default::default()
    };
    let entry = wire::entry("queue", &standing_notice(app, &row, state, now_ms));
    Some((row, entry))
}

/// What a participant is told on joining a queue: the truth, computed now.
#[derive(Debug, Serialize)]
struct Standing {
    queue: String,
    /// Place in the queue, 1 = next.
    position: usize,
    /// Agents taking conversations for this queue now.
    agents_available: usize,
    /// From recent real waits, when there are some and someone is available.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_wait_ms: Option<i64>,
    /// Outside business hours: when the queue opens (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_by: Option<String>,
    /// The sentence to show.
    text: String,
}

fn standing_notice(app: &App, row: &HandoffRow, state: &State, now_ms: i64) -> Standing {
    let queue = &row.queue;
    let (position, agents, room) = app.desk.standing(queue, row);
    let now = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let zone = state
        .contact
        .timezone
        .as_deref()
        .and_then(volley_flow::zone)
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let hours = app
        .config
        .handoff
        .queues
        .get(queue)
        .and_then(|q| q.hours.as_ref());
    let reopens = hours
        .filter(|c| !c.is_open(now))
        .and_then(|c| c.next_open(now));
    let mut standing = Standing {
        queue: queue.clone(),
        position,
        agents_available: agents,
        expected_wait_ms: None,
        reply_by: None,
        text: String::new(),
    };
    standing.text = if let Some(open) = reopens {
        standing.reply_by = Some(open.to_string());
        let local = open.to_zoned(zone.clone());
        let same_week = open.duration_since(now).as_hours() < 24 * 6;
        let when = if same_week {
            local.strftime("%A %H:%M").to_string()
        } else {
            local.strftime("%A %-d %B %H:%M").to_string()
        };
        let zone_name = zone.iana_name().unwrap_or("UTC");
        format!(
            "We're closed right now. We will reply by {when} your time ({zone_name}). You can leave: the reply will reach you here."
        )
    } else if agents == 0 {
        NOBODY_AVAILABLE.to_string()
    } else {
        standing.expected_wait_ms = app.desk.expected_wait(queue, position, agents);
        line_text(position, standing.expected_wait_ms, room)
    };
    standing
}

const NOBODY_AVAILABLE: &str = "No one is available right now. Leave your message: a person will reply here as soon as someone is available, even if you have left.";

/// Where someone stands in line, in words.
fn line_text(position: usize, expected_wait_ms: Option<i64>, room: bool) -> String {
    let place = if position == 1 {
        "You're next in line.".to_string()
    } else {
        format!("You're number {position} in line.")
    };
    match expected_wait_ms {
        Some(ms) => {
            let minutes = (ms as f64 / 60_000.0).ceil().max(1.0) as i64;
            let unit = if minutes == 1 { "minute" } else { "minutes" };
            format!("{place} Expected wait: about {minutes} {unit}.")
        }
        None if room => format!("{place} A person will be with you shortly."),
        None => format!(
            "All our agents are busy right now. {place} A person will reply here as soon as one is free."
        ),
    }
}

/// Tells participants still waiting whose place in line moved where they stand now
/// (a `queue` signal, not logged: the log keeps the notice given on joining).
fn tell_new_places(app: &App) {
    for (conversation, queue, position, agents, room) in app.desk.moved_places() {
        let Some(conv) = app.convs.in_memory_conv(&conversation) else {
            continue;
        };
        if let Some(frame) = place_frame(app, &queue, position, agents, room) {
            conv.signal(frame);
        }
    }
}

/// A `queue` signal, or none while the queue is closed by its business hours (then
/// the logged notice, "we will reply by …", stays true whatever the place).
fn place_frame(
    app: &App,
    queue: &str,
    position: usize,
    agents: usize,
    room: bool,
) -> Option<String> {
    let now = Timestamp::from_millisecond(app.clock.now_ms()).unwrap_or(Timestamp::UNIX_EPOCH);
    let hours = app
        .config
        .handoff
        .queues
        .get(queue)
        .and_then(|q| q.hours.as_ref());
    if hours.is_some_and(|c| !c.is_open(now)) {
        return None;
    }
    let expected = app.desk.expected_wait(queue, position, agents);
    let text = if agents == 0 {
        NOBODY_AVAILABLE.to_string()
    } else {
        line_text(position, expected, room)
    };
    Some(
        json!({
            "type": "queue",
            "position": position,
            "expected_wait_ms": expected,
            "text": text,
        })
        .to_string(),
    )
}

/// The `queue` signal for a participant (re)connecting while waiting in line: where
/// they stand now (the logged notice is from when they joined).
pub fn place_now(app: &App, conversation: &str) -> Option<String> {
    let row = app
        .desk
        .row(conversation)
        .filter(|r| r.status == "queued")?;
    let (position, agents, room) = app.desk.standing(&row.queue, &row);
    place_frame(app, &row.queue, position, agents, room)
}

/// Runs assignment whenever the desk changes (a hand-off queued or resolved, an agent
/// online, away or back): one task per server.
pub async fn run(app: Arc<App>) {
    let mut shutdown = app.shutdown.clone();
    loop {
        tokio::select! {
            () = app.desk.kick.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Everything asked for up to here is covered by this round.
        let asked = app.desk.kicks.load(std::sync::atomic::Ordering::SeqCst);
        for (conv, agent) in app.desk.plan() {
            let actor = Actor {
                id: agent.id.clone(),
                name: agent.name.clone(),
            };
            let result = assign(&app, &conv, &agent, "auto", &actor).await;
            app.desk.release(&conv);
            if let Err(e) = result {
                tracing::warn!(conversation = %conv, error = %e.message, "assignment failed");
            }
        }
        tell_new_places(&app);
        app.desk.rounds.send_replace(asked);
    }
}

async fn conv(app: &App, id: &str) -> Result<Arc<crate::conversation::Conv>, ApiError> {
    app.convs
        .get(app, id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown-conversation", "no such conversation"))
}

/// The open hand-off of a conversation, or a conflict.
fn open_row(now: &Current) -> Result<HandoffRow, ApiError> {
    match &now.handoff {
        Some(row) if row.status != "resolved" && now.status == "human" => Ok(row.clone()),
        _ => Err(ApiError::conflict(
            "not-handed-off",
            "this conversation is not with a person",
        )),
    }
}

/// Only the agent it is assigned to (or an admin acting on any) may act on it; a
/// conversation still queued may be picked by anyone.
fn check_owner(row: &HandoffRow, actor: &Actor, admin: bool) -> Result<(), ApiError> {
    match &row.agent_id {
        Some(agent) if agent != &actor.id && !admin => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not-yours",
            "this conversation is assigned to another agent",
        )),
        _ => Ok(()),
    }
}

/// Gives a conversation to an agent (`by`: `auto`, `pick` or `transfer`).
pub async fn assign(
    app: &App,
    conversation: &str,
    agent: &AgentInfo,
    by: &'static str,
    actor: &Actor,
) -> Result<i64, ApiError> {
    let now_ms = app.clock.now_ms();
    conv(app, conversation)
        .await?
        .manual(app, None, |now| {
            let mut row = open_row(now)?;
            if by == "auto" && row.status != "queued" {
                return Err(ApiError::conflict("taken", "already assigned"));
            }
            row.status = "assigned".into();
            row.agent_id = Some(agent.id.clone());
            row.assigned_at = Some(now_ms);
            row.snoozed_until = None;
            row.updated_at = now_ms;
            Ok(Manual {
                entries: vec![wire::entry(
                    "assigned",
                    &json!({"agent_id": agent.id, "agent": agent.name, "by": by, "by_id": actor.id, "queue": row.queue}),
                )],
                handoff: Some(row),
                ..Default::default()
            })
        })
        .await
}

/// An agent's reply: shown to the participant with the agent's name. It reaches
/// them later if they are away (offline delivery: a notification after a while).
pub async fn reply(
    app: &App,
    conversation: &str,
    actor: &Actor,
    admin: bool,
    text: &str,
    client_id: Option<&str>,
) -> Result<i64, ApiError> {
    let text = checked_text(text)?;
    let now_ms = app.clock.now_ms();
    let notify = !app.channels.is_empty();
    conv(app, conversation)
        .await?
        .manual(app, client_id, |now| {
            let mut row = open_row(now)?;
            check_owner(&row, actor, admin)?;
            let mut entries = Vec::new();
            if row.agent_id.is_none() {
                // Replying to a queued conversation takes it.
                entries.push(wire::entry(
                    "assigned",
                    &json!({"agent_id": actor.id, "agent": actor.name, "by": "reply", "by_id": actor.id, "queue": row.queue}),
                ));
                row.agent_id = Some(actor.id.clone());
                row.assigned_at = Some(now_ms);
            }
            row.status = "assigned".into();
            row.snoozed_until = None;
            row.first_reply_at.get_or_insert(now_ms);
            row.last_message_at = now_ms;
            row.preview = preview(&text);
            row.updated_at = now_ms;
            entries.push(wire::entry(
                "message",
                &json!({"from": "agent", "agent_id": actor.id, "agent": actor.name, "text": text, "html": markdown::to_html(&text)}),
            ));
            let seq = now.last_seq + entries.len() as i64;
            // Unseen a while later: the contact is notified (as after a wait's follow-up).
            let timers = notify.then(|| {
                vec![NewTimer {
                    due_at: now_ms + app.config.channels.notify_after_ms as i64,
                    kind: "notify".into(),
                    late_after: None,
                    owner: None,
                    data: json!({ "upto": seq }).to_string(),
                }]
            });
            Ok(Manual {
                entries,
                handoff: Some(row),
                timers,
                ..Default::default()
            })
        })
        .await
}

fn checked_text(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::unprocessable("empty", "the message is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::unprocessable(
            "too-long",
            format!("at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(text.to_string())
}

/// A private note: agents see it, the participant never does.
pub async fn note(
    app: &App,
    conversation: &str,
    actor: &Actor,
    text: &str,
    client_id: Option<&str>,
) -> Result<i64, ApiError> {
    let text = checked_text(text)?;
    conv(app, conversation)
        .await?
        .manual(app, client_id, |_| {
            Ok(Manual {
                entries: vec![wire::entry(
                    "note",
                    &json!({"agent_id": actor.id, "agent": actor.name, "text": text, "html": markdown::to_html(&text)}),
                )],
                ..Default::default()
            })
        })
        .await
}

/// Replaces the conversation's tags (lowercased, deduplicated).
pub async fn set_tags(
    app: &App,
    conversation: &str,
    actor: &Actor,
    tags: &[String],
) -> Result<i64, ApiError> {
    let mut clean: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_lowercase();
        if t.is_empty() {
            continue;
        }
        if t.chars().count() > MAX_TAG_CHARS || t.chars().any(char::is_whitespace) {
            return Err(ApiError::unprocessable(
                "bad-tag",
                format!("a tag is one word of at most {MAX_TAG_CHARS} characters: `{t}`"),
            ));
        }
        if !clean.contains(&t) {
            clean.push(t);
        }
    }
    if clean.len() > MAX_TAGS {
        return Err(ApiError::unprocessable(
            "too-many-tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let now_ms = app.clock.now_ms();
    conv(app, conversation)
        .await?
        .manual(app, None, |now| {
            let Some(mut row) = now.handoff.clone() else {
                return Err(ApiError::conflict(
                    "not-handed-off",
                    "this conversation was never with a person",
                ));
            };
            row.tags = clean.join(" ");
            row.updated_at = now_ms;
            Ok(Manual {
                entries: vec![wire::entry(
                    "tags",
                    &json!({"agent_id": actor.id, "tags": clean}),
                )],
                handoff: Some(row),
                ..Default::default()
            })
        })
        .await
}

/// Hides a conversation from the lists until `until` (or until the participant
/// writes); the agent keeps it.
pub async fn snooze(
    app: &App,
    conversation: &str,
    actor: &Actor,
    admin: bool,
    until: i64,
) -> Result<i64, ApiError> {
    let now_ms = app.clock.now_ms();
    if until <= now_ms || until - now_ms > MAX_SNOOZE_MS {
        return Err(ApiError::unprocessable(
            "bad-snooze",
            "snooze until a time in the future, at most 90 days ahead",
        ));
    }
    conv(app, conversation)
        .await?
        .manual(app, None, |now| {
            let mut row = open_row(now)?;
            check_owner(&row, actor, admin)?;
            if row.agent_id.is_none() {
                row.agent_id = Some(actor.id.clone());
                row.assigned_at = Some(now_ms);
            }
            row.status = "snoozed".into();
            row.snoozed_until = Some(until);
            row.updated_at = now_ms;
            Ok(Manual {
                entries: vec![wire::entry(
                    "snoozed",
                    &json!({"agent_id": actor.id, "until": until}),
                )],
                handoff: Some(row),
                schedule: vec![NewTimer {
                    due_at: until,
                    kind: "snooze".into(),
                    late_after: None,
                    owner: Some(format!("snooze:{conversation}")),
                    data: json!({"conversation": conversation, "until": until}).to_string(),
                }],
                ..Default::default()
            })
        })
        .await
}

/// A snooze's wake-up (a timer): the conversation is back in its agent's list. A
/// snooze already ended (the participant wrote, the agent replied) changes nothing.
pub async fn wake(app: &App, timer: &TimerRow) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Data {
        conversation: String,
        until: i64,
    }
    let data: Data =
        serde_json::from_str(&timer.data).map_err(|e| ApiError::internal("snooze timer", e))?;
    let now_ms = app.clock.now_ms();
    let result = conv(app, &data.conversation)
        .await?
        .manual(app, None, |now| {
            let row = open_row(now)
                .ok()
                .filter(|r| r.status == "snoozed" && r.snoozed_until == Some(data.until));
            let Some(mut row) = row else {
                return Err(ApiError::conflict("stale", "no longer snoozed"));
            };
            unsnooze(&mut row);
            row.updated_at = now_ms;
            Ok(Manual {
                entries: vec![wire::entry("woke", &json!({"until": data.until}))],
                handoff: Some(row),
                fired_timer: Some(timer.id),
                ..Default::default()
            })
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code == "stale" || e.code == "not-handed-off" => {
            app.store.delete_timer(timer.id).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Where a transfer goes.
pub enum Target {
    Agent(AgentInfo),
    Queue(String),
}

/// Passes a conversation to another agent, or back to a queue (then assigned anew).
pub async fn transfer(
    app: &App,
    conversation: &str,
    actor: &Actor,
    admin: bool,
    target: Target,
) -> Result<i64, ApiError> {
    let now_ms = app.clock.now_ms();
    conv(app, conversation)
        .await?
        .manual(app, None, |now| {
            let mut row = open_row(now)?;
            check_owner(&row, actor, admin)?;
            let from = row.agent_id.clone();
            let mut entries = Vec::new();
            match &target {
                Target::Agent(agent) => {
                    entries.push(wire::entry(
                        "transferred",
                        &json!({"by_id": actor.id, "from_agent": from, "to_agent": agent.id, "queue": row.queue}),
                    ));
                    entries.push(wire::entry(
                        "assigned",
                        &json!({"agent_id": agent.id, "agent": agent.name, "by": "transfer", "by_id": actor.id, "queue": row.queue}),
                    ));
                    row.status = "assigned".into();
                    row.agent_id = Some(agent.id.clone());
                    row.assigned_at = Some(now_ms);
                }
                Target::Queue(queue) => {
                    entries.push(wire::entry(
                        "transferred",
                        &json!({"by_id": actor.id, "from_agent": from, "from_queue": row.queue, "queue": queue}),
                    ));
                    row.status = "queued".into();
                    row.queue = queue.clone();
                    row.agent_id = None;
                    row.assigned_at = None;
                }
            }
            row.snoozed_until = None;
            row.updated_at = now_ms;
            Ok(Manual {
                entries,
                handoff: Some(row),
                ..Default::default()
            })
        })
        .await
}

/// Ends the person's part. Without `step`, the conversation ends (`resolved`) and
/// the participant is asked for a rating when CSAT is on; with `step`, the flow
/// continues there with the variables kept (and `vars` set).
pub async fn resolve(
    app: &App,
    conversation: &str,
    actor: &Actor,
    admin: bool,
    to_flow: Option<(
        String,
        std::collections::BTreeMap<String, serde_json::Value>,
    )>,
) -> Result<i64, ApiError> {
    let now_ms = app.clock.now_ms();
    conv(app, conversation)
        .await?
        .manual(app, None, |now| {
            let mut row = open_row(now)?;
            check_owner(&row, actor, admin)?;
            row.status = "resolved".into();
            row.resolved_at = Some(now_ms);
            row.snoozed_until = None;
            row.agent_id.get_or_insert_with(|| actor.id.clone());
            row.updated_at = now_ms;
            let returning = to_flow.as_ref().map(|(step, _)| step.clone());
            let mut entries = vec![wire::entry(
                "resolved",
                &json!({"agent_id": actor.id, "agent": actor.name, "returned_to": returning}),
            )];
            let input = match to_flow.clone() {
                Some((step, vars)) => Input::Jump { step, vars },
                None => {
                    let queue = app.config.handoff.queues.get(&row.queue);
                    let csat = queue
                        .and_then(|q| q.csat)
                        .unwrap_or(app.config.handoff.csat);
                    if csat {
                        entries.push(wire::entry(
                            "csat_request",
                            &json!({"question": app.config.handoff.csat_question, "scale": 5}),
                        ));
                    }
                    Input::Close {
                        outcome: RESOLVED.into(),
                    }
                }
            };
            Ok(Manual {
                entries,
                handoff: Some(row),
                input: Some(input),
                ..Default::default()
            })
        })
        .await
}

/// A participant's message while a person has the conversation (the bot stays
/// silent): logged for the agent; a snoozed conversation wakes up.
pub async fn participant_message(
    app: &App,
    conv: &crate::conversation::Conv,
    text: &str,
    client_id: Option<&str>,
) -> Result<i64, ApiError> {
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(ApiError::unprocessable("empty", "the message is empty"));
    }
    if text.len() > volley_flow::MAX_INPUT_BYTES {
        return Err(ApiError::unprocessable(
            "too-long",
            format!(
                "messages are limited to {} bytes",
                volley_flow::MAX_INPUT_BYTES
            ),
        ));
    }
    let now_ms = app.clock.now_ms();
    conv.manual(app, client_id, |now| {
        let mut row = open_row(now)?;
        if row.status == "snoozed" {
            unsnooze(&mut row);
        }
        row.last_message_at = now_ms;
        row.preview = preview(&text);
        row.updated_at = now_ms;
        Ok(Manual {
            entries: vec![wire::entry(
                "input",
                &json!({"text": text, "label": text, "to": "human"}),
            )],
            handoff: Some(row),
            ..Default::default()
        })
    })
    .await
}

/// The participant's rating after a resolved hand-off (1–5, once).
pub async fn csat(
    app: &App,
    conv: &crate::conversation::Conv,
    score: i64,
    client_id: Option<&str>,
) -> Result<i64, ApiError> {
    if !(1..=5).contains(&score) {
        return Err(ApiError::unprocessable("bad-score", "a rating is 1 to 5"));
    }
    let now_ms = app.clock.now_ms();
    // Asked only when the latest resolve logged a `csat_request` (it ended the
    // conversation rather than handing it back to the flow). Entries are never
    // removed, so reading them before taking the conversation's lock is safe.
    let (_, last_seq, _) = conv.summary().await;
    let tail = app
        .store
        .events_after(&conv.id, (last_seq - 200).max(0), 200)
        .await?;
    let asked = tail
        .iter()
        .rev()
        .find(|e| e.kind == "resolved" || e.kind == "csat_request")
        .is_some_and(|e| e.kind == "csat_request");
    conv.manual(app, client_id, |now| {
        let row = now
            .handoff
            .clone()
            .filter(|r| asked && r.status == "resolved");
        let Some(mut row) = row else {
            return Err(ApiError::conflict(
                "no-rating-asked",
                "there is nothing to rate",
            ));
        };
        if row.csat.is_some() {
            return Err(ApiError::conflict("rated", "already rated"));
        }
        row.csat = Some(score);
        row.updated_at = now_ms;
        Ok(Manual {
            entries: vec![wire::entry(
                "csat",
                &json!({"score": score, "agent_id": row.agent_id, "queue": row.queue}),
            )],
            handoff: Some(row),
            ..Default::default()
        })
    })
    .await
}

/// An agent is typing (or stopped): shown to the participant, not logged.
pub async fn typing(
    app: &App,
    conversation: &str,
    actor: &Actor,
    on: bool,
) -> Result<(), ApiError> {
    let conv = conv(app, conversation).await?;
    let frame = json!({"type": "typing", "on": on, "from": "agent", "agent": actor.name});
    conv.signal(frame.to_string());
    Ok(())
}
