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

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
pub const MAX_FIRING: usize = 2_048;
/// Campaign sends due together are fired as one batch of at most this many: one read
/// for their contacts, their starts committed together.
const SEND_BATCH: usize = 256;
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

/// A read of the store's timers, answered to the loop while it goes on firing.
struct Load {
    /// The queue's generation when it was asked (a rewind makes it stale).
    generation: u64,
    until: i64,
    asked: usize,
    rows: Result<Vec<TimerRow>, volley_store::StoreError>,
}

/// The scheduler task. Runs until the server shuts down.
pub async fn run(app: Arc<App>) {
    let Some(mut added) = app.scheduler.receiver.lock().expect("lock").take() else {
        return;
    };
    let (done_tx, mut done) = mpsc::unbounded_channel::<Fired>();
    let (load_tx, mut loads) = mpsc::unbounded_channel::<Load>();
    let firing = Arc::new(Semaphore::new(MAX_FIRING));
    let mut queue = Queue::default();
    let mut shutdown = app.shutdown.clone();
    loop {
        let now = app.clock.now_ms();
        if queue.wants_more(now) {
            // Read in its own task: firing from memory goes on while the store answers.
            let (until, after) = (now + WINDOW_MS, queue.cursor);
            let asked = queue.room().min(PAGE as usize);
            let generation = queue.generation;
            queue.loading = true;
            let (app, load_tx) = (app.clone(), load_tx.clone());
            tokio::spawn(async move {
                let rows = app.store.timers_due(until, after, asked as i64).await;
                let _ = load_tx.send(Load {
                    generation,
                    until,
                    asked,
                    rows,
                });
            });
        }
        // Timers committed meanwhile (compared with the cursor as it is now).
        while let Ok(rows) = added.try_recv() {
            queue.add(rows);
        }
        let now = app.clock.now_ms();
        while let Ok(f) = done.try_recv() {
            queue.finished(f, now);
        }
        // Fire everything due, in order, as long as firing slots are free.
        let mut sends = Vec::new();
        while firing.available_permits() > 0 {
            let Some(timer) = queue.take_due(now) else {
                break;
            };
            let permit = firing
                .clone()
                .try_acquire_owned()
                .expect("a permit is free");
            if timer.kind == "campaign" {
                sends.push((timer, permit));
                if sends.len() == SEND_BATCH {
                    fire_sends(&app, &done_tx, std::mem::take(&mut sends));
                }
                continue;
            }
            let (app, done_tx) = (app.clone(), done_tx.clone());
            tokio::spawn(async move {
                let result = fire(&app, timer).await;
                drop(permit);
                let _ = done_tx.send(result);
            });
        }
        if !sends.is_empty() {
            fire_sends(&app, &done_tx, sends);
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
            Some(load) = loads.recv() => queue.loaded(load, app.clock.now_ms()),
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
    /// A read of the store is under way.
    loading: bool,
    /// Counts rewinds: a read asked before the latest one is stale.
    generation: u64,
    /// Timers committed after the cursor while a read is under way: the read may not
    /// see them, so they are compared again with the cursor it leaves.
    held: Vec<TimerRow>,
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
        !self.loading
            && now >= self.retry_load_at
            && self.has_room()
            && self.complete_until < now + WINDOW_MS / 2
    }

    /// A read of the store answered: rows up to `until`, after the cursor, at most
    /// `asked`.
    fn loaded(&mut self, load: Load, now: i64) {
        if load.generation != self.generation {
            // Asked before a rewind, which started over (and cleared `loading`).
            return;
        }
        self.loading = false;
        let rows = match load.rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(%e, "cannot read timers; retrying");
                self.retry_load_at = now + RETRY_MS;
                let held = std::mem::take(&mut self.held);
                self.add(held);
                return;
            }
        };
        match rows.last() {
            Some(last) if rows.len() >= load.asked => self.cursor = key(last),
            _ => {
                self.cursor = self.cursor.max((load.until, i64::MAX));
                self.complete_until = load.until;
            }
        }
        for row in rows {
            if !self.busy(row.id) {
                self.due.insert(key(&row), row);
            }
        }
        let held = std::mem::take(&mut self.held);
        self.add(held);
    }

    /// Being fired, or waiting to be retried.
    fn busy(&self, id: i64) -> bool {
        self.firing.contains(&id) || self.retrying.iter().any(|(_, r)| r.id == id)
    }

    /// Timers just committed: kept if they fall before the cursor (later ones are read
    /// from the store when the cursor gets there).
    fn add(&mut self, rows: Vec<TimerRow>) {
        for row in rows {
            if key(&row) <= self.cursor {
                if !self.busy(row.id) {
                    self.due.insert(key(&row), row);
                }
            } else if self.loading {
                self.held.push(row);
            }
        }
        // Over the memory bound: the latest go back to the store, the cursor with them.
        while self.len() > MAX_IN_MEMORY {
            let Some((last, _)) = self.due.pop_last() else {
                break;
            };
            self.cursor = (last.0, last.1 - 1);
            self.complete_until = self.complete_until.min(last.0 - 1);
            // A read under way started from the old cursor, past what was just dropped:
            // its answer is stale (a new read starts from here).
            if self.loading {
                self.loading = false;
                self.generation += 1;
                self.held.clear();
            }
        }
    }

    /// Forgets what it read from the store (which is the truth), so the next read
    /// starts again from the beginning. Timers being fired are kept out of it.
    fn rewind(&mut self) {
        self.due.clear();
        self.held.clear();
        self.cursor = (i64::MIN, 0);
        self.complete_until = i64::MIN;
        self.retry_load_at = 0;
        self.loading = false;
        self.generation += 1;
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
        // A read under way wakes the loop when it answers.
        let refill = if self.has_room() && !self.loading {
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

/// Records how late a timer starts firing; returns the lateness (ms).
fn started_late(app: &App, timer: &TimerRow) -> i64 {
    let lateness = app.clock.now_ms() - timer.due_at;
    metrics::histogram!(names::TIMER_LATENESS_SECONDS).record(lateness.max(0) as f64 / 1000.0);
    lateness
}

fn record(outcome: &Fired, started: Instant) {
    let result = match outcome {
        Fired::Done(_) => "done",
        Fired::Retry(_) => "retry",
    };
    metrics::counter!(names::TIMERS_FIRED, "result" => result).increment(1);
    metrics::histogram!(names::TIMER_FIRE_SECONDS).record(started.elapsed().as_secs_f64());
}

/// Fires a batch of campaign sends in its own task (see [`campaigns::fire`]).
fn fire_sends(
    app: &Arc<App>,
    done_tx: &mpsc::UnboundedSender<Fired>,
    sends: Vec<(TimerRow, OwnedSemaphorePermit)>,
) {
    let (app, done_tx) = (app.clone(), done_tx.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let (timers, permits): (Vec<TimerRow>, Vec<_>) = sends.into_iter().unzip();
        for timer in &timers {
            started_late(&app, timer);
        }
        let outcomes = campaigns::fire(&app, &timers).await;
        drop(permits);
        for (timer, outcome) in timers.into_iter().zip(outcomes) {
            let fired = match outcome {
                SendOutcome::Done | SendOutcome::Parked => Fired::Done(timer.id),
                SendOutcome::Retry => Fired::Retry(timer),
            };
            record(&fired, started);
            let _ = done_tx.send(fired);
        }
    });
}

/// Fires one timer (not a campaign send) through the conversation path.
async fn fire(app: &App, timer: TimerRow) -> Fired {
    let started = Instant::now();
    let lateness = started_late(app, &timer);
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
        _ => {
            tracing::warn!(id = timer.id, kind = %timer.kind, "timer of unknown kind dropped");
            delete(app, timer).await
        }
    };
    record(&outcome, started);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(due_at: i64, id: i64) -> TimerRow {
        TimerRow {
            id,
            due_at,
            kind: "campaign".into(),
            conversation_id: None,
            late_after: None,
            owner: None,
            data: "{}".into(),
        }
    }

    /// A queue that has read everything up to `cursor` and is reading on from there.
    fn reading_from(cursor: i64) -> Queue {
        Queue {
            cursor: (cursor, i64::MAX),
            complete_until: cursor,
            loading: true,
            ..Queue::default()
        }
    }

    fn answer(q: &Queue, until: i64, rows: Vec<TimerRow>) -> Load {
        Load {
            generation: q.generation,
            until,
            asked: 10,
            rows: Ok(rows),
        }
    }

    fn due(q: &Queue) -> Vec<Key> {
        q.due.keys().copied().collect()
    }

    #[test]
    fn a_timer_committed_while_a_read_is_under_way_is_not_lost() {
        let mut q = reading_from(100);
        // Committed after the read's snapshot, after the cursor: the read cannot see it.
        q.add(vec![timer(150, 7), timer(50, 8)]);
        assert_eq!(due(&q), [(50, 8)], "before the cursor: kept at once");
        let load = answer(&q, 200, vec![timer(120, 3)]);
        q.loaded(load, 0);
        assert!(!q.loading);
        assert_eq!(due(&q), [(50, 8), (120, 3), (150, 7)]);
        // After the read, later timers are left to the store.
        q.add(vec![timer(300, 9)]);
        assert_eq!(due(&q).len(), 3);
    }

    #[test]
    fn a_read_asked_before_a_rewind_or_an_overflow_is_ignored() {
        let mut q = reading_from(100);
        let stale = answer(&q, 200, vec![timer(120, 3)]);
        q.rewind();
        q.loaded(stale, 0);
        assert!(due(&q).is_empty() && q.cursor == (i64::MIN, 0));
        assert!(q.wants_more(0), "the rewound queue reads again");

        // More timers committed before the cursor than memory holds: the latest go
        // back to the store and the cursor moves back, so a read from the old cursor
        // would skip them.
        let mut q = reading_from(i64::MAX - 1);
        let stale = answer(&q, i64::MAX, vec![timer(5_000_000, 1)]);
        q.add((0..MAX_IN_MEMORY as i64 + 1).map(|i| timer(i, i)).collect());
        assert_eq!(q.len(), MAX_IN_MEMORY);
        assert_eq!(q.cursor, (MAX_IN_MEMORY as i64, MAX_IN_MEMORY as i64 - 1));
        q.loaded(stale, 0);
        assert_eq!(q.len(), MAX_IN_MEMORY, "the stale answer is dropped");
        assert!(!q.loading);
    }

    #[test]
    fn a_failed_read_is_retried_later_and_keeps_what_was_held() {
        let mut q = reading_from(100);
        q.add(vec![timer(150, 7)]);
        let generation = q.generation;
        q.loaded(
            Load {
                generation,
                until: 200,
                asked: 10,
                rows: Err(volley_store::StoreError::Closed),
            },
            1_000,
        );
        assert_eq!(q.retry_load_at, 1_000 + RETRY_MS);
        assert!(!q.wants_more(1_000) && q.wants_more(1_000 + RETRY_MS));
        // The held timer is after the unchanged cursor: it is read with the retry.
        assert!(due(&q).is_empty() && q.held.is_empty());
    }
}
