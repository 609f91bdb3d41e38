//! One showing's room: the shared chat, moderation, polls, offers and Q&A, as a state
//! machine owned by one task.
//!
//! Every change is a row of the showing's log (`showing_log`), numbered by the room.
//! Commands from viewers' connections are taken in batches: each batch is applied to
//! the state, its rows are committed in one store write, and only then are the results
//! broadcast and the senders answered, so nobody sees what a crash could lose. The state
//! is rebuilt from the log when the room opens and after a failed write.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use jiff::SignedDuration;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use volley_events::{CueKind, Event, Occurrence, Phase};
use volley_store::{ShowingRow, Store};

use super::limits::*;
use crate::telemetry::names;

/// Who a broadcast is for.
#[derive(Debug, Clone, PartialEq)]
pub enum To {
    All,
    Moderators,
    Viewer(String),
}

/// One message for the room's connections, serialised and framed once: the same bytes
/// are written to every socket it is for.
#[derive(Debug)]
pub struct Out {
    pub to: To,
    /// The WebSocket text frame.
    pub frame: Bytes,
}

/// Who sends a command.
#[derive(Debug, Clone)]
pub struct Sender {
    pub viewer_id: String,
    /// A console user (moderator or admin): their name and user id.
    pub moderator: Option<(String, String)>,
    /// Watching a replay (or on-demand): positions are the viewer's own.
    pub replay: bool,
}

/// What a connection asks of the room.
#[derive(Debug)]
pub enum Command {
    /// A viewer arrives: log it, answer with the state and a subscription taken at the
    /// same instant (nothing missed, nothing twice).
    Join {
        sender: Arc<Sender>,
        name: Option<String>,
        reply: oneshot::Sender<Joined>,
    },
    Leave {
        sender: Arc<Sender>,
        watched: Value,
    },
    /// A client message (`t` and its fields), answered with `Ok` or an error.
    Client {
        sender: Arc<Sender>,
        message: Value,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
}

/// Why a client message was refused: `code` per docs/watching.md.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// A handle on a running room.
pub struct Room {
    /// The showing id (and the viewer's id, on demand).
    pub key: String,
    pub showing: Occurrence,
    pub commands: mpsc::Sender<Command>,
    /// Connections currently joined.
    pub present: AtomicUsize,
}

/// Everything the room task needs from the server.
pub struct Context {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn crate::Clock>,
    pub event: Arc<Event>,
    pub showing: Occurrence,
    pub banned: HashSet<String>,
    /// Told to the asker of a question answered while they are away.
    pub answered: mpsc::UnboundedSender<Answered>,
}

/// An answer to tell its asker through the channels.
#[derive(Debug, Clone)]
pub struct Answered {
    pub event_id: String,
    pub asker: String,
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Clone)]
struct Chat {
    id: String,
    viewer_id: String,
    name: String,
    text: String,
    at: i64,
    pos: i64,
    moderator: bool,
    replay: bool,
}

impl Chat {
    fn json(&self) -> Value {
        json!({"id": self.id, "viewer_id": self.viewer_id, "name": self.name, "text": self.text,
            "at": self.at, "pos": self.pos, "moderator": self.moderator, "replay": self.replay})
    }
}

#[derive(Debug, Default)]
struct PollState {
    counts: Vec<u64>,
    voters: HashMap<String, Vec<usize>>,
    /// Votes since the last `poll` broadcast.
    dirty: bool,
    /// Results have been broadcast since `results_at` was reached live.
    announced: bool,
}

#[derive(Debug, Clone)]
struct Question {
    id: String,
    viewer_id: String,
    name: String,
    text: String,
    voters: HashSet<String>,
    answer: Option<String>,
}

impl Question {
    fn json(&self) -> Value {
        json!({"id": self.id, "viewer_id": self.viewer_id, "name": self.name, "text": self.text,
            "votes": self.voters.len(), "answer": self.answer})
    }
}

/// What the room knows of a viewer (one per viewer who ever joined: kept small).
#[derive(Debug, Default)]
struct Viewer {
    name: Option<String>,
    muted_until: i64,
    /// The rate limits' counts, from the viewer's first post, ask or report on (most
    /// viewers only watch).
    limits: Option<Box<Limits>>,
}

#[derive(Debug, Default)]
struct Limits {
    /// Chat token bucket: tokens and when they were counted (ms).
    tokens: f64,
    tokens_at: i64,
    last_post: i64,
    asks: VecDeque<i64>,
    reports: VecDeque<i64>,
}

/// The room's state: everything in it can be rebuilt from the log.
struct State {
    next_seq: i64,
    chat: VecDeque<Chat>,
    pinned: Option<Value>,
    slow: u64,
    viewers: HashMap<Box<str>, Viewer>,
    polls: HashMap<String, PollState>,
    questions: Vec<Question>,
    reports: HashMap<String, HashSet<String>>,
    present: usize,
    peak: usize,
}

impl State {
    /// A viewer's rate-limit counts (made on first use).
    fn limits(&mut self, viewer_id: &str) -> &mut Limits {
        self.viewers
            .entry(viewer_id.into())
            .or_default()
            .limits
            .get_or_insert_with(Default::default)
    }
}

/// What a joining viewer gets: the room's part of `hello` and its subscription.
type Joined = (Value, broadcast::Receiver<Arc<Out>>);
/// A client message's answer, to send once its rows are committed.
type Reply = (oneshot::Sender<Result<(), Refusal>>, Result<(), Refusal>);

/// The effects of one batch, released after its rows are committed.
#[derive(Default)]
struct Batch {
    rows: Vec<ShowingRow>,
    outs: Vec<Out>,
    replies: Vec<Reply>,
    joins: Vec<(
        oneshot::Sender<Joined>,
        Value,
        broadcast::Receiver<Arc<Out>>,
    )>,
    answered: Vec<Answered>,
}

impl Batch {
    fn out(&mut self, to: To, value: Value) {
        self.outs.push(Out {
            to,
            frame: super::wire::text_frame(value.to_string().as_bytes()),
        });
    }
}

fn ms(d: SignedDuration) -> i64 {
    d.as_millis() as i64
}

fn text_field<'a>(m: &'a Value, key: &str) -> Result<&'a str, Refusal> {
    m[key]
        .as_str()
        .ok_or_else(|| refuse("bad_message", format!("`{key}` must be a string")))
}

/// A user-written text, trimmed, non-empty, at most `max` characters.
fn user_text(m: &Value, key: &str, max: usize) -> Result<String, Refusal> {
    let text = text_field(m, key)?.trim();
    if text.is_empty() {
        return Err(refuse("bad_message", format!("`{key}` is empty")));
    }
    if text.chars().count() > max {
        return Err(refuse(
            "too_long",
            format!("at most {max} characters, please"),
        ));
    }
    Ok(text.to_string())
}

pub struct RoomTask {
    cx: Context,
    state: State,
    tx: broadcast::Sender<Arc<Out>>,
    rx: mpsc::Receiver<Command>,
    room: Arc<Room>,
}

impl RoomTask {
    /// Opens a room: reads the showing's log and starts its task.
    pub async fn open(key: String, cx: Context) -> Result<Arc<Room>, volley_store::StoreError> {
        let state = rebuild(&cx).await?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (tx, _) = broadcast::channel(VIEWER_QUEUE);
        let room = Arc::new(Room {
            key,
            showing: cx.showing.clone(),
            commands,
            present: AtomicUsize::new(0),
        });
        let task = RoomTask {
            cx,
            state,
            tx,
            rx,
            room: room.clone(),
        };
        tokio::spawn(task.run());
        Ok(room)
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut commands, MAX_BATCH) => {
                    if n == 0 { break; }
                    let mut batch = Batch::default();
                    for c in commands.drain(..) {
                        self.apply(c, &mut batch);
                    }
                    self.tick(&mut batch);
                    self.release(batch).await;
                }
                _ = tick.tick() => {
                    let mut batch = Batch::default();
                    self.tick(&mut batch);
                    self.release(batch).await;
                }
            }
        }
    }

    /// Commits the batch's rows, then broadcasts and answers. A failed write answers
    /// `unavailable` and rebuilds the state from the log (dropping what was not saved).
    async fn release(&mut self, batch: Batch) {
        if batch.rows.is_empty() && batch.outs.is_empty() && batch.replies.is_empty() {
            for (reply, hello, rx) in batch.joins {
                let _ = reply.send((hello, rx));
            }
            return;
        }
        if let Err(e) = self.cx.store.append_showing(batch.rows).await {
            tracing::warn!(room = %self.room.key, error = %e, "showing log write failed");
            for (reply, _) in batch.replies {
                let _ = reply.send(Err(refuse(
                    "unavailable",
                    "the server could not save this; try again",
                )));
            }
            // Joins were logged in the failed write too; they still get the state.
            if let Ok(state) = rebuild(&self.cx).await {
                self.state = State {
                    present: self.state.present,
                    peak: self.state.peak,
                    ..state
                };
            }
            for (reply, hello, rx) in batch.joins {
                let _ = reply.send((hello, rx));
            }
            return;
        }
        for out in batch.outs {
            let _ = self.tx.send(Arc::new(out));
        }
        for (reply, result) in batch.replies {
            let _ = reply.send(result);
        }
        for (reply, hello, rx) in batch.joins {
            let _ = reply.send((hello, rx));
        }
        for a in batch.answered {
            let _ = self.cx.answered.send(a);
        }
    }

    fn now(&self) -> i64 {
        self.cx.clock.now_ms()
    }

    /// The live position now (ms since the start; negative before it).
    fn live_pos(&self) -> i64 {
        self.now() - self.cx.showing.starts_at.as_millisecond()
    }

    fn phase(&self) -> Phase {
        volley_events::phase(&self.cx.showing, self.cx.clock.now())
    }

    fn row(&mut self, batch: &mut Batch, kind: &str, viewer: Option<&str>, data: Value) -> i64 {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        batch.rows.push(ShowingRow {
            showing_id: self.cx.showing.id.clone(),
            seq,
            kind: kind.into(),
            viewer_id: viewer.map(str::to_string),
            data: data.to_string(),
            at: self.now(),
        });
        seq
    }

    fn apply(&mut self, command: Command, batch: &mut Batch) {
        match command {
            Command::Join {
                sender,
                name,
                reply,
            } => {
                self.state.present += 1;
                metrics::gauge!(names::EVENT_VIEWERS).increment(1.0);
                self.state.peak = self.state.peak.max(self.state.present);
                self.room
                    .present
                    .store(self.state.present, Ordering::Relaxed);
                let v = self
                    .state
                    .viewers
                    .entry(sender.viewer_id.as_str().into())
                    .or_default();
                if v.name.is_none() {
                    v.name = name;
                }
                let pos = self.live_pos();
                self.row(
                    batch,
                    "join",
                    Some(&sender.viewer_id),
                    json!({"pos": pos, "replay": sender.replay, "present": self.state.present,
                        "moderator": sender.moderator.is_some()}),
                );
                let hello = self.snapshot(&sender);
                batch.joins.push((reply, hello, self.tx.subscribe()));
            }
            Command::Leave { sender, watched } => {
                self.state.present = self.state.present.saturating_sub(1);
                metrics::gauge!(names::EVENT_VIEWERS).decrement(1.0);
                self.room
                    .present
                    .store(self.state.present, Ordering::Relaxed);
                self.row(batch, "leave", Some(&sender.viewer_id), watched);
            }
            Command::Client {
                sender,
                message,
                reply,
            } => {
                let result = self.client(&sender, &message, batch);
                batch.replies.push((reply, result));
            }
        }
    }

    /// The state a joining viewer gets (the `hello` fields the room owns).
    fn snapshot(&self, sender: &Sender) -> Value {
        let s = &self.state;
        let replay = sender.replay;
        let keep = if replay { REPLAY_CHAT } else { HELLO_CHAT };
        let chat: Vec<Value> = s
            .chat
            .iter()
            .skip(s.chat.len().saturating_sub(keep))
            .map(Chat::json)
            .collect();
        let live = self.live_pos();
        let polls: Vec<Value> = self
            .cx
            .event
            .timeline
            .iter()
            .filter_map(|c| match &c.kind {
                CueKind::Poll(p) if replay || live >= ms(p.results_at) => {
                    Some(self.poll_json(&p.id))
                }
                _ => None,
            })
            .collect();
        let me = s.viewers.get(sender.viewer_id.as_str());
        let votes: serde_json::Map<String, Value> = s
            .polls
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), json!(p.voters.get(&sender.viewer_id)?))))
            .collect();
        let questions: Vec<Value> = s
            .questions
            .iter()
            .skip(s.questions.len().saturating_sub(HELLO_QUESTIONS))
            .map(Question::json)
            .collect();
        let reports: Vec<Value> = if sender.moderator.is_some() {
            s.reports
                .iter()
                .map(|(m, r)| json!({"message": m, "reports": r.len()}))
                .collect()
        } else {
            Vec::new()
        };
        let name = match &sender.moderator {
            Some((name, _)) => Some(name.clone()),
            None => me.and_then(|v| v.name.clone()),
        };
        json!({
            "name": name,
            "chat": chat,
            "pinned": s.pinned,
            "slow": s.slow,
            "polls": polls,
            "questions": questions,
            "mine": {"votes": votes},
            "muted_until": me.map(|v| v.muted_until).filter(|m| *m > self.now()),
            "banned": self.cx.banned.contains(&sender.viewer_id),
            "reports": reports,
            "present": s.present,
        })
    }

    fn poll_json(&self, id: &str) -> Value {
        let p = self.state.polls.get(id);
        let options = self
            .cx
            .event
            .timeline
            .iter()
            .find_map(|c| match &c.kind {
                CueKind::Poll(p) if p.id == id => Some(p.options.len()),
                _ => None,
            })
            .unwrap_or(0);
        let mut counts = p.map(|p| p.counts.clone()).unwrap_or_default();
        counts.resize(options, 0);
        json!({"t": "poll", "id": id, "counts": counts,
            "voters": p.map_or(0, |p| p.voters.len())})
    }

    /// Periodic work: poll results once `results_at` is reached live, then after votes.
    fn tick(&mut self, batch: &mut Batch) {
        let live = self.live_pos();
        let replay = !matches!(self.phase(), Phase::Live { .. } | Phase::Upcoming { .. });
        let due: Vec<String> = self
            .cx
            .event
            .timeline
            .iter()
            .filter_map(|c| match &c.kind {
                CueKind::Poll(p) if replay || live >= ms(p.results_at) => Some(p.id.clone()),
                _ => None,
            })
            .collect();
        for id in due {
            let p = self.state.polls.entry(id.clone()).or_default();
            if !p.announced || p.dirty {
                p.announced = true;
                p.dirty = false;
                let v = self.poll_json(&id);
                batch.out(To::All, v);
            }
        }
    }

    fn client(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let t = m["t"].as_str().unwrap_or("");
        let moderator_only = matches!(t, "delete" | "mute" | "ban" | "slow" | "pin" | "answer");
        if moderator_only && s.moderator.is_none() {
            return Err(refuse("forbidden", "only moderators can do this"));
        }
        match t {
            "name" => self.name(s, m, batch),
            "chat" => self.chat(s, m, batch),
            "vote" => self.vote(s, m, batch),
            "impression" | "click" => self.offer(s, t, m, batch),
            "ask" => self.ask(s, m, batch),
            "upvote" => self.upvote(s, m, batch),
            "report" => self.report(s, m, batch),
            "progress" => Ok(()),
            "delete" => self.delete(s, m, batch),
            "mute" => self.mute(s, m, batch),
            "ban" => self.ban(s, m, batch),
            "slow" => self.slow(s, m, batch),
            "pin" => self.pin(s, m, batch),
            "answer" => self.answer(s, m, batch),
            _ => Err(refuse("bad_message", format!("unknown message type `{t}`"))),
        }
    }

    /// Refuses viewers who may not take part (banned, muted); moderators always may.
    fn may_post(&self, s: &Sender) -> Result<(), Refusal> {
        if s.moderator.is_some() {
            return Ok(());
        }
        if self.cx.banned.contains(&s.viewer_id) {
            return Err(refuse(
                "banned",
                "you cannot take part in this event's chat",
            ));
        }
        let until = self
            .state
            .viewers
            .get(s.viewer_id.as_str())
            .map_or(0, |v| v.muted_until);
        if until > self.now() {
            return Err(refuse(
                "muted",
                format!("a moderator muted you for {}", fmt_left(until - self.now())),
            ));
        }
        Ok(())
    }

    fn display_name(&self, s: &Sender) -> Option<String> {
        if let Some((name, _)) = &s.moderator {
            return Some(name.clone());
        }
        self.state.viewers.get(s.viewer_id.as_str())?.name.clone()
    }

    fn name(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let name = user_text(m, "name", MAX_NAME_CHARS)?;
        self.row(batch, "name", Some(&s.viewer_id), json!({"name": name}));
        self.state
            .viewers
            .entry(s.viewer_id.as_str().into())
            .or_default()
            .name = Some(name);
        Ok(())
    }

    fn chat(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        self.may_post(s)?;
        let text = user_text(m, "text", MAX_CHAT_CHARS)?;
        let name = self
            .display_name(s)
            .ok_or_else(|| refuse("no_name", "choose a display name first"))?;
        let now = self.now();
        if s.moderator.is_none() {
            let slow = self.state.slow;
            let v = self.state.limits(&s.viewer_id);
            if slow > 0 && now - v.last_post < (slow * 1000) as i64 {
                let wait = (slow * 1000) as i64 - (now - v.last_post);
                return Err(refuse(
                    "slow_mode",
                    format!("slow mode: you can post again in {}", fmt_left(wait)),
                ));
            }
            let elapsed = (now - v.tokens_at).max(0) as f64 / 1000.0;
            let tokens = if v.tokens_at == 0 {
                CHAT_BURST
            } else {
                (v.tokens + elapsed * CHAT_PER_SECOND).min(CHAT_BURST)
            };
            if tokens < 1.0 {
                return Err(refuse(
                    "rate_limited",
                    "you are sending messages too fast; wait a second",
                ));
            }
            v.tokens = tokens - 1.0;
            v.tokens_at = now;
            v.last_post = now;
        }
        let pos = self.position(s, m);
        let replay = self.replaying(s);
        let data = json!({"name": name, "text": text, "pos": pos,
            "moderator": s.moderator.is_some(), "replay": replay});
        let seq = self.row(batch, "chat", Some(&s.viewer_id), data);
        let chat = Chat {
            id: format!("m{seq}"),
            viewer_id: s.viewer_id.clone(),
            name,
            text,
            at: now,
            pos,
            moderator: s.moderator.is_some(),
            replay,
        };
        metrics::counter!(names::EVENT_CHAT).increment(1);
        let mut out = chat.json();
        out["t"] = "chat".into();
        batch.out(To::All, out);
        self.state.chat.push_back(chat);
        if self.state.chat.len() > REPLAY_CHAT {
            self.state.chat.pop_front();
        }
        Ok(())
    }

    /// Whether a viewer's messages are about their own position: they joined a replay,
    /// or the showing they watched live has ended since.
    fn replaying(&self, s: &Sender) -> bool {
        s.replay || self.live_pos() >= ms(self.cx.event.media.duration)
    }

    /// The position a message is about: live, the showing's; in a replay, the one the
    /// viewer reports (clamped to the media).
    fn position(&self, s: &Sender, m: &Value) -> i64 {
        let length = ms(self.cx.event.media.duration);
        if self.replaying(s) {
            m["pos"].as_i64().unwrap_or(0).clamp(0, length)
        } else {
            self.live_pos().min(length)
        }
    }

    fn vote(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        self.may_post(s)?;
        let id = text_field(m, "poll")?;
        let poll = self
            .cx
            .event
            .timeline
            .iter()
            .find_map(|c| match &c.kind {
                CueKind::Poll(p) if p.id == id => Some((c.at, p)),
                _ => None,
            })
            .ok_or_else(|| refuse("not_found", format!("no poll `{id}`")))?;
        let (at, p) = poll;
        let pos = self.position(s, m);
        if pos < ms(at) || pos >= ms(p.close_at) {
            return Err(refuse("closed", "this poll is not taking votes now"));
        }
        let options: Vec<usize> = m["options"]
            .as_array()
            .ok_or_else(|| refuse("bad_message", "`options` must be a list of option numbers"))?
            .iter()
            .map(|o| o.as_u64().map(|o| o as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| refuse("bad_message", "`options` must be option numbers"))?;
        let mut picked = options.clone();
        picked.sort_unstable();
        picked.dedup();
        if picked.is_empty()
            || picked.len() != options.len()
            || picked.iter().any(|o| *o >= p.options.len())
            || (!p.multiple && picked.len() > 1)
        {
            return Err(refuse(
                "bad_message",
                if p.multiple {
                    "pick one or more of the poll's options, each once"
                } else {
                    "pick one of the poll's options"
                },
            ));
        }
        let n_options = p.options.len();
        let id = id.to_string();
        let state = self.state.polls.entry(id.clone()).or_default();
        if state.voters.contains_key(&s.viewer_id) {
            return Err(refuse("already", "you have voted in this poll"));
        }
        state.counts.resize(n_options, 0);
        for o in &picked {
            state.counts[*o] += 1;
        }
        state.voters.insert(s.viewer_id.clone(), picked.clone());
        state.dirty = true;
        self.row(
            batch,
            "vote",
            Some(&s.viewer_id),
            json!({"poll": id, "options": picked, "pos": pos, "replay": self.replaying(s)}),
        );
        Ok(())
    }

    fn offer(&mut self, s: &Sender, t: &str, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let id = text_field(m, "offer")?;
        let known = self
            .cx
            .event
            .timeline
            .iter()
            .any(|c| matches!(&c.kind, CueKind::Offer(o) if o.id == id));
        if !known {
            return Err(refuse("not_found", format!("no offer `{id}`")));
        }
        let pos = self.position(s, m);
        let id = id.to_string();
        self.row(
            batch,
            t,
            Some(&s.viewer_id),
            json!({"offer": id, "pos": pos, "replay": self.replaying(s)}),
        );
        Ok(())
    }

    /// A Q&A window is open at the message's position (live: the live position; in a
    /// replay: the viewer's own).
    fn qa_open(&self, s: &Sender, m: &Value) -> bool {
        let pos = SignedDuration::from_millis(self.position(s, m));
        (self.replaying(s) || self.live_pos() >= 0)
            && volley_events::active_at(&self.cx.event, pos).qa_open
    }

    fn ask(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        self.may_post(s)?;
        let text = user_text(m, "text", MAX_QUESTION_CHARS)?;
        if !self.qa_open(s, m) {
            return Err(refuse("closed", "questions are not being taken now"));
        }
        let name = self
            .display_name(s)
            .ok_or_else(|| refuse("no_name", "choose a display name first"))?;
        let now = self.now();
        if s.moderator.is_none() {
            let v = self.state.limits(&s.viewer_id);
            if !within_rate(&mut v.asks, now, ASKS_PER_MINUTE) {
                return Err(refuse(
                    "rate_limited",
                    format!("at most {ASKS_PER_MINUTE} questions a minute"),
                ));
            }
        }
        if self.state.questions.len() >= MAX_QUESTIONS {
            return Err(refuse(
                "closed",
                "this showing has all the questions it can take",
            ));
        }
        let seq = self.row(
            batch,
            "ask",
            Some(&s.viewer_id),
            json!({"name": name, "text": text}),
        );
        let q = Question {
            id: format!("q{seq}"),
            viewer_id: s.viewer_id.clone(),
            name,
            text,
            voters: HashSet::new(),
            answer: None,
        };
        let mut out = q.json();
        out["t"] = "question".into();
        batch.out(To::All, out);
        self.state.questions.push(q);
        Ok(())
    }

    fn question_mut(&mut self, m: &Value) -> Result<&mut Question, Refusal> {
        let id = text_field(m, "question")?;
        self.state
            .questions
            .iter_mut()
            .find(|q| q.id == id)
            .ok_or_else(|| refuse("not_found", format!("no question `{id}`")))
    }

    fn upvote(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        self.may_post(s)?;
        let q = self.question_mut(m)?;
        if !q.voters.insert(s.viewer_id.clone()) {
            return Err(refuse("already", "you have upvoted this question"));
        }
        let mut out = q.json();
        out["t"] = "question".into();
        let id = q.id.clone();
        batch.out(To::All, out);
        self.row(batch, "upvote", Some(&s.viewer_id), json!({"question": id}));
        Ok(())
    }

    fn report(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let id = text_field(m, "message")?.to_string();
        let reason = m["reason"]
            .as_str()
            .map(|r| r.chars().take(MAX_REASON_CHARS).collect::<String>());
        if !self.state.chat.iter().any(|c| c.id == id) {
            return Err(refuse("not_found", format!("no message `{id}`")));
        }
        let now = self.now();
        let v = self.state.limits(&s.viewer_id);
        if !within_rate(&mut v.reports, now, REPORTS_PER_MINUTE) {
            return Err(refuse(
                "rate_limited",
                format!("at most {REPORTS_PER_MINUTE} reports a minute"),
            ));
        }
        let reporters = self.state.reports.entry(id.clone()).or_default();
        if !reporters.insert(s.viewer_id.clone()) {
            return Err(refuse("already", "you have reported this message"));
        }
        let n = reporters.len();
        self.row(
            batch,
            "report",
            Some(&s.viewer_id),
            json!({"message": id, "reason": reason}),
        );
        batch.out(
            To::Moderators,
            json!({"t": "report", "message": id, "reports": n}),
        );
        Ok(())
    }

    fn delete(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let id = text_field(m, "message")?.to_string();
        if !self.state.chat.iter().any(|c| c.id == id) {
            return Err(refuse("not_found", format!("no message `{id}`")));
        }
        self.remove_messages(std::slice::from_ref(&id), batch);
        self.row(
            batch,
            "delete",
            None,
            json!({"ids": [id], "by": moderator_id(s)}),
        );
        Ok(())
    }

    fn remove_messages(&mut self, ids: &[String], batch: &mut Batch) {
        self.state.chat.retain(|c| !ids.contains(&c.id));
        for id in ids {
            self.state.reports.remove(id);
        }
        let unpin = self
            .state
            .pinned
            .as_ref()
            .and_then(|p| p["id"].as_str())
            .is_some_and(|p| ids.iter().any(|i| i == p));
        if unpin {
            self.state.pinned = None;
            batch.out(To::All, json!({"t": "pinned", "message": null}));
        }
        batch.out(To::All, json!({"t": "deleted", "ids": ids}));
    }

    fn target_viewer(&self, m: &Value) -> Result<String, Refusal> {
        let id = text_field(m, "viewer_id")?;
        if !self.state.viewers.contains_key(id) {
            return Err(refuse("not_found", format!("no viewer `{id}` here")));
        }
        Ok(id.to_string())
    }

    fn mute(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let viewer = self.target_viewer(m)?;
        let minutes = match &m["minutes"] {
            Value::Null => DEFAULT_MUTE_MINUTES,
            v => v
                .as_u64()
                .filter(|n| (1..=MAX_MUTE_MINUTES).contains(n))
                .ok_or_else(|| {
                    refuse(
                        "bad_message",
                        format!("`minutes` is 1 to {MAX_MUTE_MINUTES}"),
                    )
                })?,
        };
        let until = self.now() + (minutes * 60_000) as i64;
        self.state
            .viewers
            .entry(viewer.as_str().into())
            .or_default()
            .muted_until = until;
        self.row(
            batch,
            "mute",
            Some(&viewer),
            json!({"until": until, "by": moderator_id(s)}),
        );
        batch.out(
            To::Viewer(viewer.clone()),
            json!({"t": "muted", "until": until}),
        );
        Ok(())
    }

    fn ban(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let viewer = self.target_viewer(m)?;
        self.cx.banned.insert(viewer.clone());
        let ids: Vec<String> = self
            .state
            .chat
            .iter()
            .filter(|c| c.viewer_id == viewer)
            .map(|c| c.id.clone())
            .collect();
        if !ids.is_empty() {
            self.remove_messages(&ids, batch);
        }
        self.row(
            batch,
            "ban",
            Some(&viewer),
            json!({"ids": ids, "by": moderator_id(s)}),
        );
        batch.out(To::Viewer(viewer), json!({"t": "banned"}));
        Ok(())
    }

    fn slow(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let seconds = m["seconds"]
            .as_u64()
            .filter(|n| *n <= MAX_SLOW_SECONDS)
            .ok_or_else(|| {
                refuse(
                    "bad_message",
                    format!("`seconds` is 0 to {MAX_SLOW_SECONDS}"),
                )
            })?;
        self.state.slow = seconds;
        self.row(
            batch,
            "slow",
            None,
            json!({"seconds": seconds, "by": moderator_id(s)}),
        );
        batch.out(To::All, json!({"t": "slow", "seconds": seconds}));
        Ok(())
    }

    fn pin(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let pinned = match &m["message"] {
            Value::Null => None,
            Value::String(id) => {
                let c = self
                    .state
                    .chat
                    .iter()
                    .find(|c| &c.id == id)
                    .ok_or_else(|| refuse("not_found", format!("no message `{id}`")))?;
                Some(c.json())
            }
            _ => return Err(refuse("bad_message", "`message` is a message id or null")),
        };
        self.row(
            batch,
            "pin",
            None,
            json!({"message": pinned, "by": moderator_id(s)}),
        );
        self.state.pinned = pinned.clone();
        batch.out(To::All, json!({"t": "pinned", "message": pinned}));
        Ok(())
    }

    fn answer(&mut self, s: &Sender, m: &Value, batch: &mut Batch) -> Result<(), Refusal> {
        let text = user_text(m, "text", MAX_CHAT_CHARS)?;
        let live = m["live"].as_bool().unwrap_or(false);
        let event_id = self.cx.event.id.clone();
        let q = self.question_mut(m)?;
        q.answer = Some(text.clone());
        let mut out = q.json();
        out["t"] = "question".into();
        let (qid, asker, question) = (q.id.clone(), q.viewer_id.clone(), q.text.clone());
        batch.out(To::All, out);
        let by = s
            .moderator
            .as_ref()
            .map(|m| m.0.clone())
            .unwrap_or_default();
        let data = json!({"question": qid, "text": question, "answer": text, "by": by,
            "event": event_id, "live": live});
        self.row(batch, "answer", Some(&asker), data);
        if live {
            let pinned = json!({"id": qid, "question": question, "answer": text, "name": by});
            self.state.pinned = Some(pinned.clone());
            batch.out(To::All, json!({"t": "pinned", "message": pinned}));
        }
        batch.answered.push(Answered {
            event_id,
            asker,
            question,
            answer: text,
        });
        Ok(())
    }
}

fn moderator_id(s: &Sender) -> Option<String> {
    s.moderator.as_ref().map(|m| m.1.clone())
}

/// Keeps the instants of the last minute; false when `max` are already in it.
fn within_rate(times: &mut VecDeque<i64>, now: i64, max: usize) -> bool {
    while times.front().is_some_and(|t| now - t >= 60_000) {
        times.pop_front();
    }
    if times.len() >= max {
        return false;
    }
    times.push_back(now);
    true
}

fn fmt_left(ms: i64) -> String {
    let s = (ms + 999) / 1000;
    if s >= 60 {
        format!("{} min", (s + 59) / 60)
    } else {
        format!("{s} s")
    }
}

/// Reads the showing's log into a fresh state.
async fn rebuild(cx: &Context) -> Result<State, volley_store::StoreError> {
    let mut state = State {
        next_seq: 1,
        chat: VecDeque::new(),
        pinned: None,
        slow: 0,
        viewers: HashMap::new(),
        polls: HashMap::new(),
        questions: Vec::new(),
        reports: HashMap::new(),
        present: 0,
        peak: 0,
    };
    let mut after = 0;
    loop {
        let rows = cx.store.showing_log(&cx.showing.id, after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            replay_row(&mut state, row);
        }
    }
    state.next_seq = after + 1;
    Ok(state)
}

/// Applies one logged row to the state (the same effects as when it was written).
fn replay_row(state: &mut State, row: &ShowingRow) {
    let d: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
    let viewer = row.viewer_id.clone().unwrap_or_default();
    let ids = |d: &Value| -> Vec<String> {
        d["ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match row.kind.as_str() {
        "name" => {
            state.viewers.entry(viewer.into()).or_default().name =
                d["name"].as_str().map(str::to_string)
        }
        "join" => {
            state.viewers.entry(viewer.into()).or_default();
        }
        "chat" => {
            state.chat.push_back(Chat {
                id: format!("m{}", row.seq),
                viewer_id: viewer,
                name: d["name"].as_str().unwrap_or_default().into(),
                text: d["text"].as_str().unwrap_or_default().into(),
                at: row.at,
                pos: d["pos"].as_i64().unwrap_or(0),
                moderator: d["moderator"].as_bool().unwrap_or(false),
                replay: d["replay"].as_bool().unwrap_or(false),
            });
            if state.chat.len() > REPLAY_CHAT {
                state.chat.pop_front();
            }
        }
        "delete" | "ban" => {
            let ids = ids(&d);
            state.chat.retain(|c| !ids.contains(&c.id));
            let unpin = state
                .pinned
                .as_ref()
                .and_then(|p| p["id"].as_str())
                .is_some_and(|p| ids.iter().any(|i| i == p));
            if unpin {
                state.pinned = None;
            }
        }
        "mute" => {
            state.viewers.entry(viewer.into()).or_default().muted_until =
                d["until"].as_i64().unwrap_or(0)
        }
        "slow" => state.slow = d["seconds"].as_u64().unwrap_or(0),
        "pin" => state.pinned = Some(d["message"].clone()).filter(|m| !m.is_null()),
        "vote" => {
            let poll = state
                .polls
                .entry(d["poll"].as_str().unwrap_or_default().into())
                .or_default();
            let picked: Vec<usize> = d["options"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o.as_u64().map(|o| o as usize))
                        .collect()
                })
                .unwrap_or_default();
            for o in &picked {
                if poll.counts.len() <= *o {
                    poll.counts.resize(o + 1, 0);
                }
                poll.counts[*o] += 1;
            }
            poll.voters.insert(viewer, picked);
        }
        "ask" => state.questions.push(Question {
            id: format!("q{}", row.seq),
            viewer_id: viewer,
            name: d["name"].as_str().unwrap_or_default().into(),
            text: d["text"].as_str().unwrap_or_default().into(),
            voters: HashSet::new(),
            answer: None,
        }),
        "upvote" | "answer" => {
            let id = d["question"].as_str().unwrap_or_default();
            if let Some(q) = state.questions.iter_mut().find(|q| q.id == id) {
                if row.kind == "upvote" {
                    q.voters.insert(viewer);
                } else {
                    q.answer = d["answer"].as_str().map(str::to_string);
                    if d["live"].as_bool().unwrap_or(false) {
                        state.pinned = Some(json!({"id": q.id, "question": q.text,
                            "answer": q.answer, "name": d["by"]}));
                    }
                }
            }
        }
        "report" => {
            state
                .reports
                .entry(d["message"].as_str().unwrap_or_default().into())
                .or_default()
                .insert(viewer);
        }
        _ => {}
    }
}

/// How often the room checks the clock for poll results.
const TICK: Duration = Duration::from_millis(250);
