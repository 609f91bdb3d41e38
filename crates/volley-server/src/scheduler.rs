//! Durable timers: one task per process fires them when due, in order, exactly once.
//!
//! Timers are rows in the store (written with the log entries that created them). This
//! task keeps only the near future in memory: the timers due within [`WINDOW_MS`], at
//! most [`MAX_IN_MEMORY`] of them, read in `(due_at, id)` order behind a cursor; timers
//! committed later and due before the cursor are handed to it directly. It sleeps on
//! the injected clock until the earliest one is due, then fires it through the normal
//! conversation path: the firing appends the conversation's new events and deletes the
//! timer in one transaction, so a timer fired twice (a retry, a restart) changes
//! nothing the second time, and one interrupted by a crash fires again on restart.
//!
//! See docs/scheduling.md for the guarantees.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use volley_flow::Input;
use volley_store::TimerRow;

use crate::App;
use crate::campaigns::{self, SendOutcome};
use crate::conversation::Action;
use crate::handoff;
use crate::notify::{self, Notified};
use crate::premiere;
use crate::telemetry::names;

/// How far ahead timers are read into memory.
pub const WINDOW_MS: i64 = 60_000;
/// Most timers held in memory at once (the rest wait in the store).
pub const MAX_IN_MEMORY: usize = 100_000;
/// Timers read from the store per query.
const PAGE: i64 = 10_000;
/// Timers being fired at once (their writes share commits).
pub const MAX_FIRING: usize = 1_024;
/// Delay before retrying a timer whose firing failed for a passing reason.
const RETRY_MS: i64 = 1_000;

type Key = (i64, i64);

fn key(t: &TimerRow) -> Key {
    (t.due_at, t.id)
}

/// The handle other parts of the server use to tell the scheduler about new timers.
pub struct Scheduler {
    added: mpsc::UnboundedSender<Vec<TimerRow>>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Vec<TimerRow>>>>,
    /// Set when many timers changed in the store at once (a campaign created or
    /// resumed): the scheduler reads its window again.
    rescan: tokio::sync::Notify,
    /// After each turn of the loop: (turn, every timer due at or before this instant
    /// has fired). See [`Scheduler::settled`].
    settled: tokio::sync::watch::Sender<(u64, i64)>,
    /// Asks the loop for a turn (to publish a fresh `settled`).
    poke: tokio::sync::Notify,
}

impl Default for Scheduler {
    fn default() -> Self {
        let (added, rx) = mpsc::unbounded_channel();
        Scheduler {
            added,
            receiver: std::sync::Mutex::new(Some(rx)),
            rescan: tokio::sync::Notify::new(),
            settled: tokio::sync::watch::channel((0, i64::MIN)).0,
            poke: tokio::sync::Notify::new(),
        }
    }
}

impl Scheduler {
    /// Timers just committed to the store.
    pub fn added(&self, timers: impl IntoIterator<Item = TimerRow>) {
        let timers: Vec<TimerRow> = timers.into_iter().collect();
        if !timers.is_empty() {
            let _ = self.added.send(timers);
        }
    }

    /// Many timers were written or moved in the store: read the near future again.
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }

    /// Waits until every timer due at or before `at` has fired, its effects committed
    /// (as seen by a turn of the loop that starts after this call). Lets tests on
    /// virtual time check that nothing happened without sleeping.
    pub async fn settled(&self, at: i64) {
        let mut rx = self.settled.subscribe();
        let start = rx.borrow_and_update().0;
        loop {
            self.poke.notify_one();
            if rx.changed().await.is_err() {
                return;
            }
            let (turn, through) = *rx.borrow_and_update();
            if turn > start + 1 && through >= at {
                return;
            }
        }
    }
}

/// What happened to one firing.
enum Fired {
    /// Done: the timer is gone from the store.
    Done(i64),
    /// Failed for a passing reason: try again later.
    Retry(TimerRow),
}

/// The scheduler task. Runs until the server shuts down.
pub async fn run(app: Arc<App>) {
    let Some(mut added) = app.scheduler.receiver.lock().expect("lock").take() else {
        return;
    };
    let (done_tx, mut done) = mpsc::unbounded_channel::<Fired>();
    let firing = Arc::new(Semaphore::new(MAX_FIRING));
    let mut queue = Queue::default();
    let mut shutdown = app.shutdown.clone();
    loop {
        let now = app.clock.now_ms();
        if queue.wants_more(now) {
            match app
                .store
                .timers_due(
                    now + WINDOW_MS,
                    queue.cursor,
                    queue.room().min(PAGE as usize) as i64,
                )
                .await
            {
                Ok(rows) => queue.loaded(rows, now + WINDOW_MS, PAGE as usize),
                Err(e) => {
                    tracing::warn!(%e, "cannot read timers; retrying");
                    queue.retry_load_at = now + RETRY_MS;
                }
            }
        }
        // Timers committed meanwhile (compared with the cursor just moved).
        while let Ok(rows) = added.try_recv() {
            queue.add(rows);
        }
        let now = app.clock.now_ms();
        while let Ok(f) = done.try_recv() {
            queue.finished(f, now);
        }
        // Fire everything due, in order, as long as firing slots are free.
        while firing.available_permits() > 0 {
            let Some(timer) = queue.take_due(now) else {
                break;
            };
            let permit = firing
                .clone()
                .try_acquire_owned()
                .expect("a permit is free");
            let (app, done_tx) = (app.clone(), done_tx.clone());
            tokio::spawn(async move {
                let result = fire(&app, timer).await;
                drop(permit);
                let _ = done_tx.send(result);
            });
        }
        metrics::gauge!(names::TIMERS_IN_MEMORY).set(queue.len() as f64);
        let through = queue.fired_through(now);
        app.scheduler
            .settled
            .send_modify(|(turn, t)| (*turn, *t) = (*turn + 1, through));
        let wake = queue.wake_at();
        let slots_full = firing.available_permits() == 0;
        tokio::select! {
            () = app.clock.sleep_until(wake), if !slots_full && wake < i64::MAX => {}
            Some(rows) = added.recv() => queue.add(rows),
            Some(f) = done.recv() => queue.finished(f, app.clock.now_ms()),
            () = app.scheduler.rescan.notified() => queue.rewind(),
            () = app.scheduler.poke.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The timers in memory, behind the cursor.
#[derive(Default)]
struct Queue {
    /// Pending timers in memory, earliest first.
    due: BTreeMap<Key, TimerRow>,
    /// Ids being fired now.
    firing: HashSet<i64>,
    /// Timers whose firing failed for a passing reason, with when to try again.
    retrying: Vec<(i64, TimerRow)>,
    /// Every pending timer at or before the cursor is in `due`, `firing` or `retrying`.
    cursor: Key,
    /// The store has been read up to here (a read returned fewer rows than asked).
    complete_until: i64,
    /// No store reads before this (after a failed read).
    retry_load_at: i64,
}

impl Queue {
    fn len(&self) -> usize {
        self.due.len() + self.firing.len() + self.retrying.len()
    }

    fn room(&self) -> usize {
        MAX_IN_MEMORY.saturating_sub(self.len()).max(1)
    }

    /// Whether reading more could bring timers: memory is not mostly used yet.
    fn has_room(&self) -> bool {
        self.due.len() < MAX_IN_MEMORY / 2 && self.len() < MAX_IN_MEMORY
    }

    /// Whether to read more timers from the store now.
    fn wants_more(&self, now: i64) -> bool {
        now >= self.retry_load_at && self.has_room() && self.complete_until < now + WINDOW_MS / 2
    }

    /// Rows read from the store (up to `until`, after the cursor, at most `asked`).
    fn loaded(&mut self, rows: Vec<TimerRow>, until: i64, asked: usize) {
        match rows.last() {
            Some(last) if rows.len() >= asked => self.cursor = key(last),
            _ => {
                self.cursor = self.cursor.max((until, i64::MAX));
                self.complete_until = until;
            }
        }
        for row in rows {
            if !self.busy(row.id) {
                self.due.insert(key(&row), row);
            }
        }
    }

    /// Being fired, or waiting to be retried.
    fn busy(&self, id: i64) -> bool {
        self.firing.contains(&id) || self.retrying.iter().any(|(_, r)| r.id == id)
    }

    /// Timers just committed: kept if they fall before the cursor (later ones are read
    /// from the store when the cursor gets there).
    fn add(&mut self, rows: Vec<TimerRow>) {
        for row in rows {
            if key(&row) <= self.cursor && !self.busy(row.id) {
                self.due.insert(key(&row), row);
            }
        }
        // Over the memory bound: the latest go back to the store, the cursor with them.
        while self.len() > MAX_IN_MEMORY {
            let Some((last, _)) = self.due.pop_last() else {
                break;
            };
            self.cursor = (last.0, last.1 - 1);
            self.complete_until = self.complete_until.min(last.0 - 1);
        }
    }

    /// Forgets what it read from the store (which is the truth), so the next read
    /// starts again from the beginning. Timers being fired are kept out of it.
    fn rewind(&mut self) {
        self.due.clear();
        self.cursor = (i64::MIN, 0);
        self.complete_until = i64::MIN;
        self.retry_load_at = 0;
    }

    fn first_due(&self) -> Option<i64> {
        self.due.first_key_value().map(|(k, _)| k.0)
    }

    /// The next timer to fire at `now`: a retry whose time has come, else the earliest
    /// due timer.
    fn take_due(&mut self, now: i64) -> Option<TimerRow> {
        let row = if let Some(i) = self.retrying.iter().position(|(at, _)| *at <= now) {
            self.retrying.swap_remove(i).1
        } else if self.first_due().is_some_and(|d| d <= now) {
            self.due.pop_first()?.1
        } else {
            return None;
        };
        self.firing.insert(row.id);
        Some(row)
    }

    fn finished(&mut self, fired: Fired, now: i64) {
        match fired {
            Fired::Done(id) => {
                self.firing.remove(&id);
            }
            Fired::Retry(row) => {
                self.firing.remove(&row.id);
                self.retrying.push((now + RETRY_MS, row));
            }
        }
    }

    /// When the loop must next wake up by itself.
    /// The latest instant through which every timer has fired (nothing due at or
    /// before it is waiting, retrying or being fired, and the store has been read to it).
    fn fired_through(&self, now: i64) -> i64 {
        if !self.firing.is_empty() {
            return i64::MIN;
        }
        let pending = self
            .first_due()
            .into_iter()
            .chain(self.retrying.iter().map(|(at, _)| *at))
            .min()
            .map_or(i64::MAX, |d| d - 1);
        let read = if self.wants_more(now) {
            now - 1
        } else {
            self.complete_until
        };
        pending.min(read)
    }

    fn wake_at(&self) -> i64 {
        let refill = if self.has_room() {
            (self.complete_until - WINDOW_MS / 2).max(self.retry_load_at)
        } else {
            i64::MAX
        };
        let retry = self
            .retrying
            .iter()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or(i64::MAX);
        self.first_due().unwrap_or(i64::MAX).min(refill).min(retry)
    }
}

/// Fires one timer through the conversation path.
async fn fire(app: &App, timer: TimerRow) -> Fired {
    let started = Instant::now();
    let now = app.clock.now_ms();
    let lateness = now - timer.due_at;
    metrics::histogram!(names::TIMER_LATENESS_SECONDS).record(lateness.max(0) as f64 / 1000.0);
    let too_late = timer.late_after.is_some_and(|limit| lateness > limit);
    let input = match timer.kind.as_str() {
        "resume" if too_late => Some(Input::Late),
        "resume" => Some(Input::Resume),
        "timeout" => Some(Input::Timeout),
        "expire" => Some(Input::Expire),
        _ => None,
    };
    let outcome = match (input, &timer.conversation_id) {
        (Some(input), Some(conv_id)) => fire_conversation(app, &timer, conv_id, input).await,
        (None, Some(_)) if timer.kind == "notify" => match notify::fire(app, &timer).await {
            Notified::Done => Fired::Done(timer.id),
            Notified::Retry => Fired::Retry(timer),
        },
        (None, None) if timer.kind == "snooze" => match handoff::wake(app, &timer).await {
            Ok(()) => Fired::Done(timer.id),
            Err(e) => {
                tracing::warn!(id = timer.id, error = %e.message, "snooze wake-up failed");
                Fired::Retry(timer)
            }
        },
        (None, None) if timer.kind == "reminder" => match premiere::remind(app, &timer).await {
            premiere::Reminded::Done => delete(app, timer).await,
            premiere::Reminded::Retry => Fired::Retry(timer),
        },
        (None, None) if timer.kind == "campaign" => match campaigns::fire(app, &timer).await {
            SendOutcome::Done | SendOutcome::Parked => Fired::Done(timer.id),
            SendOutcome::Retry => Fired::Retry(timer),
        },
        _ => {
            tracing::warn!(id = timer.id, kind = %timer.kind, "timer of unknown kind dropped");
            delete(app, timer).await
        }
    };
    let result = match &outcome {
        Fired::Done(_) => "done",
        Fired::Retry(_) => "retry",
    };
    metrics::counter!(names::TIMERS_FIRED, "result" => result).increment(1);
    metrics::histogram!(names::TIMER_FIRE_SECONDS).record(started.elapsed().as_secs_f64());
    outcome
}

async fn fire_conversation(app: &App, timer: &TimerRow, conv_id: &str, input: Input) -> Fired {
    let conv = match app.convs.get(app, conv_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return delete(app, timer.clone()).await,
        Err(_) => return Fired::Retry(timer.clone()),
    };
    let action = Action::Timer {
        timer: timer.id,
        input,
    };
    match conv.input(app, None, action).await {
        Ok(_) => Fired::Done(timer.id),
        // Fired or replaced already (the store refused the second firing).
        Err(e) if e.code == "conflict" => Fired::Done(timer.id),
        // The conversation moved on (answered, ended, handed over): nothing to do.
        Err(e) if e.status.is_client_error() => {
            tracing::debug!(id = timer.id, code = e.code, "stale timer dropped");
            delete(app, timer.clone()).await
        }
        Err(_) => Fired::Retry(timer.clone()),
    }
}

async fn delete(app: &App, timer: TimerRow) -> Fired {
    match app.store.delete_timer(timer.id).await {
        Ok(_) => Fired::Done(timer.id),
        Err(_) => Fired::Retry(timer),
    }
}
