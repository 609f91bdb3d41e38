//! When showings happen: occurrences of every schedule kind, and where a showing is
//! at a given instant (upcoming, live, replay, over).
//!
//! Pure functions of the event and instants passed in. A recurring, just-in-time or
//! local schedule is a stream of *wall-clock* times in a zone; each resolves to an
//! instant by the DST rule of docs/flows.md: a time that does not exist (spring
//! forward) moves forward by the length of the gap (02:30 → 03:30), a time that
//! happens twice (fall back) is its first occurrence. Two wall-clock times that
//! resolve to the same instant make one showing. A slot outside the hours of
//! operation or on a blackout date is skipped, never moved.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::event::{Event, Schedule};

/// How far ahead `next_occurrence` looks: two years of days (as calendars do).
pub const SEARCH_DAYS: i64 = 2 * 366;
/// Most occurrences one `occurrences` call returns (the earliest ones).
pub const MAX_OCCURRENCES: usize = 10_000;

/// Local times are looked up from this long before the instant searched from, so a
/// time inside a DST gap that resolves forward into the searched range is not missed
/// (the longest gap in the tz database is a day: Samoa, 2011).
const LOOKBACK: SignedDuration = SignedDuration::from_hours(26);
/// Most restarts of a search after a closed period or blackout (bounds the work).
const MAX_SKIPS: usize = 10_000;

/// One showing of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// Stable: `{event}@{start}` (RFC 3339, UTC), e.g.
    /// `product-launch@2026-12-10T18:00:00Z`. Viewers whose slots start at the same
    /// instant share it (one chat). On-demand showings end in `~on-demand` and belong
    /// to one viewer: the caller scopes them to the viewer.
    pub id: String,
    pub starts_at: Timestamp,
    /// Start plus the media duration.
    pub ends_at: Timestamp,
    /// The end plus the replay window (equal to `ends_at` without replay).
    pub replay_until: Timestamp,
    /// The start depends on the viewer's zone (`local` and `on_demand` schedules).
    pub per_viewer: bool,
    /// Started by the viewer's arrival, watched alone, labelled as a replay.
    pub on_demand: bool,
}

/// Where a showing is at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The lobby: a countdown.
    Upcoming { starts_in: SignedDuration },
    /// Everyone is at `position` (now − start); nobody can be ahead of it.
    Live { position: SignedDuration },
    /// A replay (or an on-demand showing): each viewer has their own position and may
    /// seek anywhere in the media, until `replay_until`.
    Replay { replay_until: Timestamp },
    /// Nothing more to watch.
    Over,
}

/// The showings starting in `from..until` (half-open), earliest first, at most
/// [`MAX_OCCURRENCES`]. `viewer_zone` matters for `local` schedules (the event's zone
/// is used without one). An on-demand event has no scheduled showings: it starts when
/// a viewer arrives (see [`next_occurrence`]).
pub fn occurrences(
    event: &Event,
    from: Timestamp,
    until: Timestamp,
    viewer_zone: Option<&TimeZone>,
) -> Vec<Occurrence> {
    if matches!(event.schedule, Schedule::OnDemand) || until <= from {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut search = Search::new(event, viewer_zone, from, until);
    while out.len() < MAX_OCCURRENCES {
        match search.next_allowed() {
            Some(t) if t < until => out.push(occurrence(event, t)),
            _ => break,
        }
    }
    out
}

/// The first showing starting at or after `after`, within [`SEARCH_DAYS`] days. For an
/// on-demand event: a showing starting at `after` when the hours and blackout dates
/// allow one then, else at the first instant they do.
pub fn next_occurrence(
    event: &Event,
    after: Timestamp,
    viewer_zone: Option<&TimeZone>,
) -> Option<Occurrence> {
    let horizon = after
        .checked_add(SignedDuration::from_hours(24 * SEARCH_DAYS))
        .unwrap_or(Timestamp::MAX);
    if matches!(event.schedule, Schedule::OnDemand) {
        return next_on_demand(event, after, horizon).map(|t| occurrence(event, t));
    }
    Search::new(event, viewer_zone, after, horizon)
        .next_allowed()
        .map(|t| occurrence(event, t))
}

/// The showing a viewer arriving at `now` should join: the latest one that is live
/// (a late joiner joins at the live position), else the next one. On-demand: a new
/// showing starting now (or at the next allowed instant).
pub fn current_or_next(
    event: &Event,
    now: Timestamp,
    viewer_zone: Option<&TimeZone>,
) -> Option<Occurrence> {
    if !matches!(event.schedule, Schedule::OnDemand) {
        let since = now
            .checked_sub(event.media.duration)
            .unwrap_or(Timestamp::MIN);
        // Slots are at least a minute apart, so this is short.
        let live = occurrences(event, since, now, viewer_zone)
            .into_iter()
            .rev()
            .find(|o| o.starts_at <= now && now < o.ends_at);
        if live.is_some() {
            return live;
        }
    }
    next_occurrence(event, now, viewer_zone)
}

/// Where `occurrence` is at `now`. On-demand showings are replays from their start.
pub fn phase(occurrence: &Occurrence, now: Timestamp) -> Phase {
    if now < occurrence.starts_at {
        return Phase::Upcoming {
            starts_in: now.duration_until(occurrence.starts_at),
        };
    }
    if occurrence.on_demand {
        return if now < occurrence.replay_until {
            Phase::Replay {
                replay_until: occurrence.replay_until,
            }
        } else {
            Phase::Over
        };
    }
    if now < occurrence.ends_at {
        Phase::Live {
            position: occurrence.starts_at.duration_until(now),
        }
    } else if now < occurrence.replay_until {
        Phase::Replay {
            replay_until: occurrence.replay_until,
        }
    } else {
        Phase::Over
    }
}

/// The position a viewer may play at `now` when they ask for `wanted`: live, at most
/// the live position (pausing falls behind, never ahead); in a replay, anywhere in the
/// media. `None` when nothing can be played (upcoming or over).
pub fn allowed_position(
    occurrence: &Occurrence,
    now: Timestamp,
    wanted: SignedDuration,
) -> Option<SignedDuration> {
    let length = occurrence.starts_at.duration_until(occurrence.ends_at);
    match phase(occurrence, now) {
        Phase::Live { position } => Some(wanted.clamp(SignedDuration::ZERO, position)),
        Phase::Replay { .. } => Some(wanted.clamp(SignedDuration::ZERO, length)),
        Phase::Upcoming { .. } | Phase::Over => None,
    }
}

impl Event {
    /// The label to show in `phase`: [`Event::replay_label`] for replays and
    /// on-demand showings, [`Event::label`] otherwise. Never empty.
    pub fn label_for(&self, phase: &Phase) -> &str {
        match phase {
            Phase::Replay { .. } => &self.replay_label,
            _ => &self.label,
        }
    }
}

fn occurrence(event: &Event, start: Timestamp) -> Occurrence {
    let ends_at = start
        .checked_add(event.media.duration)
        .unwrap_or(Timestamp::MAX);
    let on_demand = matches!(event.schedule, Schedule::OnDemand);
    Occurrence {
        id: if on_demand {
            format!("{}@{start}~on-demand", event.id)
        } else {
            format!("{}@{start}", event.id)
        },
        starts_at: start,
        ends_at,
        replay_until: ends_at
            .checked_add(event.replay_window)
            .unwrap_or(Timestamp::MAX),
        per_viewer: matches!(event.schedule, Schedule::Local { .. } | Schedule::OnDemand),
        on_demand,
    }
}

/// True when the local date of `at` in `zone` is a blackout date.
pub(crate) fn in_blackout(blackout: &[(Date, Date)], at: Timestamp, zone: &TimeZone) -> bool {
    blackout_end(blackout, at.to_zoned(zone.clone()).date()).is_some()
}

/// The last day of the blackout range containing `date`.
fn blackout_end(blackout: &[(Date, Date)], date: Date) -> Option<Date> {
    let i = blackout.partition_point(|(start, _)| *start <= date);
    let (_, end) = blackout.get(i.checked_sub(1)?)?;
    (*end >= date).then_some(*end)
}

/// The first instant of the day after `date` in `zone`.
fn start_of_day_after(date: Date, zone: &TimeZone) -> Option<Timestamp> {
    let next = date.tomorrow().ok()?;
    volley_flow::time::resolve_boundary(next.to_datetime(Time::midnight()), zone)
}

/// Why a slot cannot be used, and from when to look again.
enum Verdict {
    Allowed,
    /// Skip this slot only.
    Skip,
    /// Skip every slot before this instant (a blackout, a closed period).
    SkipTo(Timestamp),
    /// Nothing later is allowed.
    Never,
}

fn verdict(event: &Event, start: Timestamp, zone: &TimeZone) -> Verdict {
    let date = start.to_zoned(zone.clone()).date();
    if let Some(end) = blackout_end(&event.blackout, date) {
        return start_of_day_after(end, zone).map_or(Verdict::Never, Verdict::SkipTo);
    }
    let Some(hours) = &event.hours else {
        return Verdict::Allowed;
    };
    let Ok(end) = start.checked_add(event.media.duration) else {
        return Verdict::Never;
    };
    if hours.is_open_throughout(start, end) {
        Verdict::Allowed
    } else if hours.is_open(start) {
        Verdict::Skip
    } else {
        match hours.next_open(start) {
            Some(open) => Verdict::SkipTo(open),
            None => Verdict::Never,
        }
    }
}

fn next_on_demand(event: &Event, after: Timestamp, horizon: Timestamp) -> Option<Timestamp> {
    let mut t = after;
    for _ in 0..MAX_SKIPS {
        if t > horizon {
            return None;
        }
        match verdict(event, t, &event.zone) {
            Verdict::Allowed => return Some(t),
            Verdict::SkipTo(next) => t = next.max(t + SignedDuration::from_secs(1)),
            // Open now but closing before the showing would end: try the next opening.
            Verdict::Skip => {
                let hours = event.hours.as_ref()?;
                let close = hours.next_close(t)?;
                t = hours.next_open(close)?;
            }
            Verdict::Never => return None,
        }
    }
    None
}

/// Slots of a scheduled event in order, with hours and blackout dates applied.
struct Search<'a> {
    event: &'a Event,
    zone: TimeZone,
    horizon: Timestamp,
    slots: Slots<'a>,
    skips: usize,
}

impl<'a> Search<'a> {
    fn new(
        event: &'a Event,
        viewer_zone: Option<&TimeZone>,
        from: Timestamp,
        horizon: Timestamp,
    ) -> Self {
        let zone = match (&event.schedule, viewer_zone) {
            (Schedule::Local { .. }, Some(z)) => z.clone(),
            _ => event.zone.clone(),
        };
        let slots = Slots::new(event, &zone, from, horizon);
        Search {
            event,
            zone,
            horizon,
            slots,
            skips: 0,
        }
    }

    fn next_allowed(&mut self) -> Option<Timestamp> {
        loop {
            let t = self.slots.next()?;
            if t > self.horizon {
                return None;
            }
            match verdict(self.event, t, &self.zone) {
                Verdict::Allowed => return Some(t),
                Verdict::Skip => {}
                Verdict::SkipTo(next) => {
                    self.skips += 1;
                    if self.skips > MAX_SKIPS {
                        return None;
                    }
                    self.slots = Slots::new(self.event, &self.zone, next, self.horizon);
                }
                Verdict::Never => return None,
            }
        }
    }
}

/// The wall-clock times of a schedule, as a stream of civil date-times.
enum Clock<'a> {
    Cron(&'a croner::Cron),
    /// Every so many minutes from local midnight.
    Every(i64),
    Local {
        at: Time,
        days: u8,
    },
}

impl Clock<'_> {
    /// The first wall-clock time at (`inclusive`) or after `t`.
    fn next(&self, t: DateTime, inclusive: bool) -> Option<DateTime> {
        match self {
            Clock::Cron(cron) => cron.find_next_occurrence(&t, inclusive).ok(),
            Clock::Every(minutes) => {
                let step = minutes * 60 * 1_000_000_000;
                let since_midnight = t.time().duration_since(Time::midnight()).as_nanos() as i64;
                let k = if inclusive {
                    (since_midnight + step - 1) / step
                } else {
                    since_midnight / step + 1
                };
                let midnight = t.date().to_datetime(Time::midnight());
                midnight
                    .checked_add(SignedDuration::from_nanos(k * step))
                    .ok()
            }
            Clock::Local { at, days } => {
                let mut date = t.date();
                for _ in 0..8 {
                    let candidate = date.to_datetime(*at);
                    let later = candidate > t || (inclusive && candidate == t);
                    let dow = date.weekday().to_monday_zero_offset();
                    if later && days & (1 << dow) != 0 {
                        return Some(candidate);
                    }
                    date = date.tomorrow().ok()?;
                }
                None
            }
        }
    }
}

/// Slot instants at or after `from`, in increasing order, without duplicates.
///
/// Wall-clock times resolve to instants out of order only around a DST gap (a time in
/// the gap moves forward past times after it), so resolved instants wait in a small
/// buffer until no later wall-clock time can resolve before them: a later time `c'`
/// resolves at or after the instant the clock first shows `c` (its boundary).
struct Slots<'a> {
    once: Option<Timestamp>,
    clock: Option<Clock<'a>>,
    zone: TimeZone,
    from: Timestamp,
    cursor: DateTime,
    inclusive: bool,
    end: DateTime,
    bound: Option<Timestamp>,
    buffer: BTreeSet<Timestamp>,
    last: Option<Timestamp>,
    done: bool,
}

impl<'a> Slots<'a> {
    fn new(event: &'a Event, zone: &TimeZone, from: Timestamp, horizon: Timestamp) -> Self {
        let (once, clock) = match &event.schedule {
            Schedule::Once(t) => (Some(*t).filter(|t| *t >= from), None),
            Schedule::Recurring(r) => (None, Some(Clock::Cron(&r.cron))),
            Schedule::JustInTime { every } => (None, Some(Clock::Every(every.as_mins()))),
            Schedule::Local { at, days } => (
                None,
                Some(Clock::Local {
                    at: *at,
                    days: *days,
                }),
            ),
            Schedule::OnDemand => (None, None),
        };
        let civil = |t: Timestamp| t.to_zoned(zone.clone()).datetime();
        let cursor = civil(from.checked_sub(LOOKBACK).unwrap_or(from));
        let end = civil(horizon.checked_add(LOOKBACK).unwrap_or(horizon));
        Slots {
            once,
            clock,
            zone: zone.clone(),
            from,
            cursor,
            inclusive: true,
            end,
            bound: None,
            buffer: BTreeSet::new(),
            last: None,
            done: false,
        }
    }
}

impl Iterator for Slots<'_> {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        let Some(clock) = &self.clock else {
            return self.once.take();
        };
        loop {
            if let Some(&t) = self.buffer.first()
                && (self.done || self.bound.is_some_and(|b| t < b))
            {
                self.buffer.pop_first();
                if t < self.from || self.last == Some(t) {
                    continue;
                }
                self.last = Some(t);
                return Some(t);
            }
            if self.done {
                return None;
            }
            match clock.next(self.cursor, self.inclusive) {
                Some(c) if c <= self.end => {
                    self.inclusive = false;
                    self.cursor = c;
                    if let Some(b) = volley_flow::time::resolve_boundary(c, &self.zone) {
                        self.bound = Some(b);
                    }
                    // The DST rule: gaps move forward by their length, folds take
                    // the first occurrence (jiff's "compatible" disambiguation).
                    if let Ok(z) = c.to_zoned(self.zone.clone()) {
                        self.buffer.insert(z.timestamp());
                    }
                }
                _ => self.done = true,
            }
        }
    }
}
