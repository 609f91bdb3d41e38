//! Reminders for one registrant of one showing.
//!
//! Each reminder offset (`24h`, `1h`, `5m`) is a message `offset` before the start.
//! A registrant gets every reminder still in the future when they register. Someone
//! who registers inside the last window (after the smallest offset's time, before the
//! start) gets one immediate "starting soon" instead, and someone who registers while
//! the showing is live gets one immediate "live now" (join at the live position).
//! After the end: nothing. The channels (email, webhook, widget) are the server's.

use jiff::{SignedDuration, Timestamp};

use crate::check::fmt_duration;
use crate::event::Event;
use crate::schedule::Occurrence;

/// A reminder to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    /// When to send it (the registration instant for immediate ones).
    pub at: Timestamp,
    /// Time from `at` to the start (negative for "live now": the start has passed).
    pub offset: SignedDuration,
    /// The offset as the author wrote it (`1h`) for `Before`; the time left (`3m20s`)
    /// for `StartingSoon`; `live` for `LiveNow`.
    pub offset_label: String,
    pub kind: ReminderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderKind {
    /// One of the event's `reminders`.
    Before,
    /// Immediate: registered inside the last reminder window.
    StartingSoon,
    /// Immediate: registered while the showing is live.
    LiveNow,
}

/// The reminders a registrant of `occurrence` who registers at `registered_at` gets,
/// in sending order. None for on-demand showings or events without `reminders`.
pub fn reminders_for(
    event: &Event,
    occurrence: &Occurrence,
    registered_at: Timestamp,
) -> Vec<Reminder> {
    let start = occurrence.starts_at;
    let Some(last) = event.reminders.last() else {
        return Vec::new();
    };
    if occurrence.on_demand || registered_at >= occurrence.ends_at {
        return Vec::new();
    }
    if registered_at >= start {
        return vec![Reminder {
            at: registered_at,
            offset: registered_at.duration_until(start),
            offset_label: "live".into(),
            kind: ReminderKind::LiveNow,
        }];
    }
    let last_window = start.checked_sub(last.offset).unwrap_or(Timestamp::MIN);
    if registered_at >= last_window {
        let left = registered_at.duration_until(start);
        return vec![Reminder {
            at: registered_at,
            offset: left,
            offset_label: fmt_duration(left),
            kind: ReminderKind::StartingSoon,
        }];
    }
    // Largest offset first, so the earliest reminder comes first.
    event
        .reminders
        .iter()
        .filter_map(|r| {
            let at = start.checked_sub(r.offset).ok()?;
            (at > registered_at).then(|| Reminder {
                at,
                offset: r.offset,
                offset_label: r.label.clone(),
                kind: ReminderKind::Before,
            })
        })
        .collect()
}
