//! The loop every log reader runs (the analytics aggregator, event statistics, the
//! webhook dispatcher): a round after every commit that wrote to a log, again at once
//! while a round says there may be more, a pause after a store error, until shutdown.
//! What a round reads and writes (with its cursors' move, in one transaction) is the
//! reader's own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use volley_store::StoreError;

use crate::App;

/// Pause after the store failed, before reading again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// A reader of the logs.
pub trait Reader: Send {
    /// For the logs: what the reader is.
    const NAME: &'static str;
    /// One round; `Ok(true)` when there may be more to read at once.
    fn round<'a>(
        &'a mut self,
        app: &'a App,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'a;
    /// Forgets where it was (after an error or a wake-up): the next round reads the
    /// cursors from the store.
    fn reset(&mut self);
    /// Besides commits, what wakes the reader up (and resets it).
    fn wake(_app: &App) -> Option<&Notify> {
        None
    }
}

/// Runs `reader` until the server shuts down or the store closes.
pub async fn follow<R: Reader>(app: Arc<App>, mut reader: R) {
    let mut written = app.store.log_written();
    let mut shutdown = app.shutdown.clone();
    let never = Notify::new();
    loop {
        written.borrow_and_update();
        let more = match reader.round(&app).await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(%e, "{}: cannot read the logs; retrying", R::NAME);
                reader.reset();
                tokio::select! {
                    () = tokio::time::sleep(STORE_RETRY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                true
            }
        };
        if more {
            continue;
        }
        let wake = R::wake(&app).unwrap_or(&never);
        tokio::select! {
            changed = written.changed() => if changed.is_err() {
                return; // the store has closed
            },
            () = wake.notified() => reader.reset(),
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
