//! The checked event: what `compile` returns when a file has no errors.
//!
//! Every value here has been validated (offsets inside the media, windows that end
//! after they start, zones that exist, a cron that fires), so schedules, reminders and
//! the timeline can rely on them without re-checking. Spans are kept where tools point
//! at a part of the file later (cues).

use std::ops::Range;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use volley_flow::Calendar;

/// The label shown while a scheduled showing plays, unless the file rewords it.
pub const DEFAULT_LABEL: &str = "Premiere · pre-recorded";
/// The label shown during replays and on-demand showings, unless the file rewords it.
pub const DEFAULT_REPLAY_LABEL: &str = "Replay · pre-recorded";

/// A checked event definition.
#[derive(Debug, Clone)]
pub struct Event {
    /// Stable id (same rules as flow ids).
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    /// Shown at all times while a scheduled showing is live or upcoming (never empty).
    pub label: String,
    /// Shown during replays and on-demand showings (never empty).
    pub replay_label: String,
    pub media: Media,
    /// The IANA name of [`Event::zone`].
    pub timezone: String,
    pub(crate) zone: TimeZone,
    pub schedule: Schedule,
    /// Hours of operation: a showing must lie entirely inside one opening period.
    pub hours: Option<Calendar>,
    /// Extra closed dates (inclusive ranges, sorted and merged): no showing starts on
    /// them, in the zone of the schedule (the viewer's for `local`).
    pub blackout: Vec<(Date, Date)>,
    /// How long after the end a replay is offered (zero: none).
    pub replay_window: SignedDuration,
    pub registration: Registration,
    /// Reminder offsets before the start, largest first, all positive and distinct.
    pub reminders: Vec<ReminderOffset>,
    /// Cues ordered by offset, then by the order written.
    pub timeline: Vec<Cue>,
}

impl Event {
    /// The event's time zone (`timezone`).
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }
}

/// The video and what is known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub source: MediaSource,
    /// Its length: every showing lasts exactly this long.
    pub duration: SignedDuration,
    /// Chapters, in increasing offset order.
    pub chapters: Vec<Chapter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    /// A file served by Volley, relative to the event file's directory (`media/launch.mp4`).
    File(String),
    /// An external `https://` (or `http://`) URL.
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chapter {
    pub at: SignedDuration,
    pub title: String,
}

/// When showings start.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// One showing at an instant.
    Once(Timestamp),
    /// A cron expression in the event's zone.
    Recurring(Recurring),
    /// A showing every `every`, on the local clock of the event's zone from midnight
    /// (`15m`: :00, :15, :30, :45). `every` divides a day.
    JustInTime { every: SignedDuration },
    /// `at` on `days` in each viewer's own zone (the event's when the viewer's is unknown).
    Local {
        at: Time,
        /// Bit set, bit 0 = Monday … bit 6 = Sunday.
        days: u8,
    },
    /// Starts when the viewer arrives, for them alone; labelled as a replay.
    OnDemand,
}

/// A parsed cron schedule (5 fields, minute resolution; `L`, `#`, `W`, names allowed).
#[derive(Debug, Clone)]
pub struct Recurring {
    /// The expression as written.
    pub expression: String,
    pub(crate) cron: Box<croner::Cron>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Fields asked at registration, in order (`name`, `email`, custom identifiers).
    pub fields: Vec<String>,
    /// A flow run at registration instead of (or after) the form.
    pub flow: Option<String>,
}

/// One reminder, `offset` before the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderOffset {
    pub offset: SignedDuration,
    /// As written (`24h`), for messages and ids.
    pub label: String,
}

/// Something that happens at an offset of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub at: SignedDuration,
    pub kind: CueKind,
    /// Where the cue is written in the source.
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CueKind {
    /// A host message (Markdown source).
    Say(String),
    Poll(Poll),
    Offer(Offer),
    /// Questions are taken from `at` until `until`.
    Qa {
        until: SignedDuration,
    },
    /// Run this flow for each viewer.
    Flow(String),
}

/// A poll: open for votes in `[at, close_at)`, results shown from `results_at` to the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    pub id: String,
    pub question: String,
    pub options: Vec<String>,
    /// Several options may be picked.
    pub multiple: bool,
    pub close_at: SignedDuration,
    pub results_at: SignedDuration,
}

/// A call to action shown in `[at, until)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub id: String,
    pub text: String,
    pub url: String,
    pub until: SignedDuration,
}
