//! The server's clock, injected so tests (and the scheduler) can run on virtual time.
//!
//! Everything that depends on *when* (pacing, timers, business hours) reads `now` and
//! sleeps through the clock, never through the OS or tokio directly. Connection
//! housekeeping (heartbeats, rate limits) uses real time: it is about the network.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    /// Completes once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: i64) -> Sleep;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        let wait = (at_ms - self.now_ms()).max(0) as u64;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            // Wall clocks may be adjusted: never wake early.
            loop {
                let left = at_ms - SystemClock.now_ms();
                if left <= 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(left as u64)).await;
            }
        })
    }
}

/// Virtual time for tests: it stands still until `advance` or `set` moves it, and
/// wakes every sleeper whose time has come.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: watch::Sender::new(start.as_millisecond()),
        }
    }

    /// Moves time forward by `by` (never backward).
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|t| *t += by.as_millis() as i64);
    }

    /// Moves time to `to` if that is later than now.
    pub fn set(&self, to: Timestamp) {
        self.now.send_modify(|t| *t = (*t).max(to.as_millisecond()));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(*self.now.borrow()).expect("time in range")
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|now| *now >= at_ms).await;
        })
    }
}
