//! volley-events: premieres and live events, the pure part.
//!
//! A pre-recorded video played to everyone as if live, honestly labelled. This crate
//! reads and checks event files ([`compile`]), computes when showings happen
//! ([`occurrences`], [`next_occurrence`], [`phase`]), which reminders a registrant
//! gets ([`reminders_for`]) and what the timeline does at a position ([`cues_between`],
//! [`active_at`]). No IO, no clock, no async: `now` is always an argument. The server
//! (HTTP, WebSocket, chat, storage, channels) builds on it.

mod check;
mod event;
mod model;
mod reminders;
mod schedule;
mod timeline;

pub use check::{
    Checked, FORMAT_VERSION, MAX_BLACKOUT, MAX_CHAPTERS, MAX_CUES, MAX_DESCRIPTION_CHARS,
    MAX_EVERY, MAX_FIELDS, MAX_LABEL_CHARS, MAX_MEDIA_DURATION, MAX_MEDIA_REF_BYTES,
    MAX_OPTION_CHARS, MAX_POLL_OPTIONS, MAX_QUESTION_CHARS, MAX_REMINDER_OFFSET, MAX_REMINDERS,
    MAX_REPLAY_WINDOW, MAX_SAY_CHARS, MAX_SOURCE_BYTES, MAX_TITLE_CHARS, MIN_EVERY,
    MIN_POLL_OPTIONS, compile,
};
pub use event::{
    Chapter, Cue, CueKind, DEFAULT_LABEL, DEFAULT_REPLAY_LABEL, Event, Media, MediaSource, Offer,
    Poll, Recurring, Registration, ReminderOffset, Schedule,
};
pub use reminders::{Reminder, ReminderKind, reminders_for};
pub use schedule::{
    MAX_OCCURRENCES, Occurrence, Phase, SEARCH_DAYS, allowed_position, current_or_next,
    next_occurrence, occurrences, phase,
};
pub use timeline::{ActiveState, active_at, cues_between, replay_cues};
pub use volley_flow::{Diagnostic, Severity};

/// True when `src` looks like an event file rather than a flow: it has a top-level
/// `event:` key (flows have `id:`). Lets `volley check` take both from one directory.
pub fn is_event_source(src: &str) -> bool {
    src.lines().any(|l| l.starts_with("event:"))
}
