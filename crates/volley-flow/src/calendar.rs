//! Weekly schedules in a time zone: business-hours calendars and quiet hours.
//!
//! A flow's `calendars:` say when a team is open (`is_open("support")`,
//! `wait: {until_open: support}`); its `quiet_hours:` say when the bot must not wake a
//! contact up. Both are weekly wall-clock ranges turned into instants day by day, so a
//! 09:00 opening is 09:00 local time on both sides of a DST change. The server reuses
//! these types (human-agent queues, proactive sends), so they are public, parse from
//! plain strings and deserialize with serde.
//!
//! Rules (documented in docs/flows.md):
//! - a range belongs to the day it starts on; one that crosses midnight (`22:00-02:00`)
//!   runs into the next day, and a closed date closes the ranges that start on it;
//! - a boundary resolves by [`crate::time::resolve_boundary`]: inside a DST gap it is
//!   the moment the clocks jump (so a range inside a skipped hour is empty that day), a
//!   repeated local time is its first occurrence;
//! - searches look at most [`SEARCH_DAYS`] days ahead.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::time;

/// How far ahead [`Calendar::next_open`], [`Calendar::next_close`] and
/// [`QuietHours::defer`] look: two years of days.
pub const SEARCH_DAYS: i32 = 2 * 366;
/// Most time ranges one day may have in a calendar's `hours`.
pub const MAX_RANGES_PER_DAY: usize = 24;

/// Day names, Monday first.
pub(crate) const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const ALL_DAYS: u8 = 0b111_1111;
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A problem in a calendar or in quiet hours, with the part it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub part: SchedulePart,
    pub message: String,
    /// How to fix it ("did you mean …", an example).
    pub help: Option<String>,
}

/// Which part of a schedule a [`ScheduleError`] is about. Indexes count the `hours`
/// entries and `closed` items in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulePart {
    Timezone,
    /// The `hours` as a whole (e.g. empty).
    Hours,
    /// The days of the n-th `hours` entry (`mon-fri`).
    HoursDays(usize),
    /// The times of the n-th `hours` entry (`09:00-17:30`).
    HoursTimes(usize),
    /// The n-th `closed` item.
    Closed(usize),
    /// Quiet hours' `from`.
    From,
    /// Quiet hours' `to`.
    To,
    /// Quiet hours' `on`.
    On,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScheduleError {}

fn problem(part: SchedulePart, message: impl Into<String>, help: Option<String>) -> ScheduleError {
    ScheduleError {
        part,
        message: message.into(),
        help,
    }
}

/// Business hours: weekly opening hours and closed dates, in one time zone.
///
/// ```
/// use volley_flow::Calendar;
/// let support = Calendar::new(
///     "Europe/Berlin",
///     [("mon-fri", "09:00-17:30"), ("sat", "10:00-14:00")],
///     ["2026-12-24", "2026-12-31..2027-01-01"],
/// )
/// .unwrap();
/// let saturday_night: jiff::Timestamp = "2026-11-21T22:00:00Z".parse().unwrap();
/// assert!(!support.is_open(saturday_night));
/// assert_eq!(
///     support.next_open(saturday_night).unwrap().to_string(),
///     "2026-11-23T08:00:00Z", // Monday 09:00 in Berlin
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Calendar {
    timezone: String,
    tz: TimeZone,
    week: Week,
    /// Closed date ranges (inclusive), sorted and merged.
    closed: Vec<(Date, Date)>,
}

impl Calendar {
    /// Builds a calendar from an IANA zone, `hours` entries (days → times) and `closed`
    /// dates, reporting every problem found.
    ///
    /// - days: `mon` … `sun` (or full names), ranges such as `mon-fri` or `fri-mon`,
    ///   lists such as `mon, wed`, or `weekdays`, `weekends`, `daily`; a day may appear
    ///   in one entry only; days not given are closed;
    /// - times: `09:00-17:30`, several ranges as `09:00-12:00, 13:00-17:00`, a range
    ///   crossing midnight such as `22:00-02:00`, `24h` (all day) or `closed`;
    /// - closed: `2026-12-24` or an inclusive range `2026-12-31..2027-01-01`, dates in
    ///   the calendar's zone.
    pub fn new<'a>(
        timezone: &str,
        hours: impl IntoIterator<Item = (&'a str, &'a str)>,
        closed: impl IntoIterator<Item = &'a str>,
    ) -> Result<Calendar, Vec<ScheduleError>> {
        let mut errors = Vec::new();
        let tz = time::zone(timezone);
        if tz.is_none() {
            errors.push(problem(
                SchedulePart::Timezone,
                format!("unknown time zone `{timezone}`"),
                crate::diag::did_you_mean(timezone, time::zone_names())
                    .or_else(|| Some("use an IANA name such as `Europe/Berlin`".into())),
            ));
        }
        let mut week = Week::default();
        // For each day, the days-text of the entry that gave it hours.
        let mut given: [Option<String>; 7] = Default::default();
        let mut any_entry = false;
        for (i, (days, times)) in hours.into_iter().enumerate() {
            any_entry = true;
            let bits = match parse_day_set(days) {
                Ok(b) => Some(b),
                Err((message, help)) => {
                    errors.push(problem(SchedulePart::HoursDays(i), message, help));
                    None
                }
            };
            let ranges = match parse_day_hours(times) {
                Ok(r) => Some(r),
                Err(message) => {
                    errors.push(problem(
                        SchedulePart::HoursTimes(i),
                        message,
                        Some(
                            "write `09:00-17:30`, `09:00-12:00, 13:00-17:00`, `24h` or `closed`"
                                .into(),
                        ),
                    ));
                    None
                }
            };
            let Some(bits) = bits else { continue };
            for (d, slot) in given.iter_mut().enumerate() {
                if bits & (1 << d) == 0 {
                    continue;
                }
                if let Some(first) = slot {
                    errors.push(problem(
                        SchedulePart::HoursDays(i),
                        format!("{} already has hours (from `{first}`)", DAY_NAMES[d]),
                        Some("give each day its hours once".into()),
                    ));
                    break;
                }
                *slot = Some(days.trim().to_string());
                if let Some(r) = &ranges {
                    week.days[d] = r.clone();
                }
            }
        }
        if !any_entry {
            errors.push(problem(
                SchedulePart::Hours,
                "no opening hours: this calendar never opens",
                Some("add e.g. `mon-fri: \"09:00-17:00\"`".into()),
            ));
        }
        let mut dates = Vec::new();
        for (i, item) in closed.into_iter().enumerate() {
            match parse_closed(item) {
                Ok(range) => dates.push(range),
                Err(message) => errors.push(problem(
                    SchedulePart::Closed(i),
                    message,
                    Some("write a date `2026-12-24` or a range `2026-12-31..2027-01-01`".into()),
                )),
            }
        }
        match tz {
            Some(tz) if errors.is_empty() => Ok(Calendar {
                timezone: timezone.to_string(),
                tz,
                week,
                closed: merge_dates(dates),
            }),
            _ => Err(errors),
        }
    }

    /// The IANA zone the hours are in.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The zone the hours are in.
    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    /// True when `date` (in the calendar's zone) is a closed date.
    pub fn is_closed_on(&self, date: Date) -> bool {
        closed_through(&self.closed, date).is_some()
    }

    /// True when the calendar is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.periods(at)
            .find_after(at)
            .is_some_and(|(s, _)| s <= at)
    }

    /// The first instant at or after `at` when the calendar is open: `at` itself when
    /// it is open, else the next opening. `None` when it does not open within
    /// [`SEARCH_DAYS`] days.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        self.periods(at).find_after(at).map(|(s, _)| s.max(at))
    }

    /// When the current opening period ends (or, when closed at `at`, the next one).
    /// Back-to-back ranges (`24h` on consecutive days, `09:00-12:00, 12:00-17:00`) count
    /// as one period. `None` when no period starts and ends within [`SEARCH_DAYS`] days.
    pub fn next_close(&self, at: Timestamp) -> Option<Timestamp> {
        let mut periods = self.periods(at);
        let (_, end) = periods.find_after(at)?;
        periods.run_end(end)
    }

    /// True when the calendar is open at every instant of `from..to` (back-to-back
    /// periods count as one). Looks only as far as `to`, so it stays cheap for
    /// calendars open around the clock (events check that a showing fits).
    pub fn is_open_throughout(&self, from: Timestamp, to: Timestamp) -> bool {
        let mut periods = self.periods(from);
        let Some((start, mut end)) = periods.find_after(from) else {
            return false;
        };
        if start > from {
            return false;
        }
        while end < to {
            match periods.next() {
                Some((s, e)) if s <= end => end = end.max(e),
                _ => return false,
            }
        }
        true
    }

    /// How long the calendar is open within `from..to` ("business hours" between two
    /// instants: a reply time counted only while the team works). Zero when `to` is not
    /// after `from`. Looks [`SEARCH_DAYS`] days ahead at a time, so any range works.
    pub fn open_duration(&self, from: Timestamp, to: Timestamp) -> jiff::SignedDuration {
        let mut total = jiff::SignedDuration::ZERO;
        let mut at = from;
        while at < to {
            let mut periods = self.periods(at);
            let before = at;
            for (s, e) in periods.by_ref() {
                if s >= to {
                    return total;
                }
                let (s, e) = (s.max(at), e.min(to));
                if e > s {
                    total += s.duration_until(e);
                    at = e;
                }
            }
            if at == before {
                // Closed for the whole search window.
                let horizon = at
                    .to_zoned(self.tz.clone())
                    .checked_add(jiff::Span::new().days(SEARCH_DAYS))
                    .map(|z| z.timestamp());
                match horizon {
                    Ok(h) if h > at => at = h,
                    _ => return total,
                }
            }
        }
        total
    }

    fn periods(&self, from: Timestamp) -> Periods<'_> {
        Periods::new(&self.week, &self.tz, &self.closed, from)
    }
}

/// Times of day when the bot must not wake a contact: waits and question timeouts
/// that would end inside them are deferred to their end, in the contact's zone.
///
/// ```
/// use volley_flow::QuietHours;
/// let quiet = QuietHours::new("21:00", "08:00", &[]).unwrap();
/// let berlin = volley_flow::zone("Europe/Berlin").unwrap();
/// let late: jiff::Timestamp = "2026-11-20T22:30:00Z".parse().unwrap(); // 23:30 local
/// assert_eq!(
///     quiet.defer(late, &berlin).to_string(),
///     "2026-11-21T07:00:00Z", // 08:00 local the next morning
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    week: Week,
}

impl QuietHours {
    /// Quiet from `from` to `to` (`HH:MM`; `to` may be `24:00`; `to` before `from`
    /// crosses midnight), on the days `on` lists (`weekdays`, `weekends`, `any`,
    /// `mon`, `mon-fri`; empty means every day). A quiet period belongs to the day it
    /// starts on: `21:00`–`08:00` on weekdays includes Friday night, not Sunday night.
    pub fn new(from: &str, to: &str, on: &[&str]) -> Result<QuietHours, Vec<ScheduleError>> {
        let mut errors = Vec::new();
        let start = parse_minute(from).filter(|m| *m < MINUTES_PER_DAY);
        if start.is_none() {
            errors.push(problem(
                SchedulePart::From,
                format!("`{from}` is not a time of day (use HH:MM, 24-hour)"),
                None,
            ));
        }
        let end = parse_minute(to);
        if end.is_none() {
            errors.push(problem(
                SchedulePart::To,
                format!("`{to}` is not a time of day (use HH:MM, 24-hour, or 24:00)"),
                None,
            ));
        }
        let mut days = if on.is_empty() { ALL_DAYS } else { 0 };
        for item in on {
            match parse_day_set(item) {
                Ok(bits) => days |= bits,
                Err((message, help)) => errors.push(problem(SchedulePart::On, message, help)),
            }
        }
        let (Some(start), Some(end)) = (start, end) else {
            return Err(errors);
        };
        let range = match end_of(start, end) {
            Some(r) => r,
            None => {
                errors.push(problem(
                    SchedulePart::To,
                    format!("quiet hours from {from} to {to} are empty"),
                    Some("`to` must differ from `from`".into()),
                ));
                return Err(errors);
            }
        };
        if days == ALL_DAYS && range.end - range.start == MINUTES_PER_DAY {
            errors.push(problem(
                SchedulePart::To,
                "these quiet hours never end: nothing could ever be sent",
                Some("leave some hours outside, e.g. `from: \"21:00\"`, `to: \"08:00\"`".into()),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut week = Week::default();
        for (d, ranges) in week.days.iter_mut().enumerate() {
            if days & (1 << d) != 0 {
                ranges.push(range);
            }
        }
        Ok(QuietHours { week })
    }

    /// True when `at` falls inside quiet hours in `zone`.
    pub fn is_quiet(&self, at: Timestamp, zone: &TimeZone) -> bool {
        Periods::new(&self.week, zone, &[], at)
            .find_after(at)
            .is_some_and(|(s, _)| s <= at)
    }

    /// `at` itself when it is outside quiet hours in `zone`, else the end of that quiet
    /// period (back-to-back periods count as one: quiet all weekend ends Monday).
    pub fn defer(&self, at: Timestamp, zone: &TimeZone) -> Timestamp {
        let mut periods = Periods::new(&self.week, zone, &[], at);
        match periods.find_after(at) {
            Some((start, end)) if start <= at => periods.run_end(end).unwrap_or(at),
            _ => at,
        }
    }
}

/// A time range within a day, in minutes from the start of the day it belongs to:
/// `start < end <= start + 1440` (an end past 1440 runs into the next day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u16,
    end: u16,
}

/// Ranges per weekday, Monday first, each day sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Week {
    days: [Vec<Range>; 7],
}

impl Week {
    /// Adds the periods of the ranges starting on `date`, in start order. A range that
    /// resolves to nothing (inside a DST gap) is left out.
    fn push_periods(&self, date: Date, tz: &TimeZone, out: &mut VecDeque<(Timestamp, Timestamp)>) {
        let day = date.weekday().to_monday_zero_offset() as usize;
        for r in &self.days[day] {
            if let (Some(s), Some(e)) = (at_minute(date, r.start, tz), at_minute(date, r.end, tz))
                && s < e
            {
                out.push_back((s, e));
            }
        }
    }
}

/// The instant of `minute` minutes after the start of `date` (local), by the boundary rule.
fn at_minute(date: Date, minute: u16, tz: &TimeZone) -> Option<Timestamp> {
    let (date, minute) = if minute >= MINUTES_PER_DAY {
        (date.tomorrow().ok()?, minute - MINUTES_PER_DAY)
    } else {
        (date, minute)
    };
    let t = Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0).ok()?;
    time::resolve_boundary(date.to_datetime(t), tz)
}

/// The periods of a week in a zone, day by day from the day before `from` (a range
/// crossing midnight may still run) to [`SEARCH_DAYS`] days after it, skipping closed
/// dates. Starts never decrease (local times resolve monotonically).
struct Periods<'a> {
    week: &'a Week,
    tz: &'a TimeZone,
    closed: &'a [(Date, Date)],
    /// The next day to expand; `None` once the search is over.
    date: Option<Date>,
    last: Date,
    queue: VecDeque<(Timestamp, Timestamp)>,
}

impl<'a> Periods<'a> {
    fn new(week: &'a Week, tz: &'a TimeZone, closed: &'a [(Date, Date)], from: Timestamp) -> Self {
        let today = from.to_zoned(tz.clone()).date();
        let empty = week.days.iter().all(Vec::is_empty);
        Periods {
            week,
            tz,
            closed,
            date: (!empty).then(|| today.yesterday().unwrap_or(today)),
            last: today
                .checked_add(jiff::Span::new().days(SEARCH_DAYS))
                .unwrap_or(Date::MAX),
            queue: VecDeque::new(),
        }
    }

    /// The first period that has not ended at `t` (it contains `t` or starts after it).
    fn find_after(&mut self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        self.find(|p| p.1 > t)
    }

    /// The end of the run of periods that overlap or touch one ending at `end`; `None`
    /// when the run lasts until the end of the search.
    fn run_end(&mut self, mut end: Timestamp) -> Option<Timestamp> {
        for (s, e) in self.by_ref() {
            if s > end {
                return Some(end);
            }
            end = end.max(e);
        }
        // Nothing more was found: the run is over unless it reaches the day after the
        // search, whose periods were not looked at.
        let horizon = self
            .last
            .tomorrow()
            .ok()
            .and_then(|d| at_minute(d, 0, self.tz));
        horizon.filter(|h| end < *h).map(|_| end)
    }
}

impl Iterator for Periods<'_> {
    type Item = (Timestamp, Timestamp);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Some(p);
            }
            let date = self.date.filter(|d| *d <= self.last)?;
            if let Some(end) = closed_through(self.closed, date) {
                self.date = end.tomorrow().ok();
                continue;
            }
            self.week.push_periods(date, self.tz, &mut self.queue);
            self.date = date.tomorrow().ok();
        }
    }
}

/// The last day of the closed range containing `date`, if any.
fn closed_through(closed: &[(Date, Date)], date: Date) -> Option<Date> {
    let i = closed.partition_point(|(start, _)| *start <= date);
    let (_, end) = closed.get(i.checked_sub(1)?)?;
    (*end >= date).then_some(*end)
}

/// Sorts date ranges and merges those that overlap or touch.
fn merge_dates(mut dates: Vec<(Date, Date)>) -> Vec<(Date, Date)> {
    dates.sort();
    let mut out: Vec<(Date, Date)> = Vec::with_capacity(dates.len());
    for (s, e) in dates {
        if let Some(last) = out.last_mut()
            && last.1.tomorrow().is_ok_and(|next| s <= next)
        {
            last.1 = last.1.max(e);
            continue;
        }
        out.push((s, e));
    }
    out
}

/// `HH:MM` as minutes from midnight, `24:00` included.
fn parse_minute(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let minute = h * 60 + m;
    (m < 60 && minute <= MINUTES_PER_DAY).then_some(minute)
}

/// The range from `start` to `end` (before `start`: the next day); `None` when empty.
fn end_of(start: u16, end: u16) -> Option<Range> {
    match end.cmp(&start) {
        std::cmp::Ordering::Greater => Some(Range { start, end }),
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some(Range {
            start,
            end: end + MINUTES_PER_DAY,
        }),
    }
}

/// `09:00-17:30`, `09:00-12:00, 13:00-17:00`, `22:00-02:00`, `24h` or `closed`.
fn parse_day_hours(s: &str) -> Result<Vec<Range>, String> {
    let t = s.trim().to_ascii_lowercase();
    match t.as_str() {
        "24h" | "24 h" | "all day" => {
            return Ok(vec![Range {
                start: 0,
                end: MINUTES_PER_DAY,
            }]);
        }
        "closed" => return Ok(Vec::new()),
        "" => return Err("no hours given".into()),
        _ => {}
    }
    let mut out = Vec::new();
    for part in t.split(',') {
        let part = part.trim();
        let Some((a, b)) = part.split_once(['-', '–']) else {
            return Err(format!("`{part}` is not a time range"));
        };
        let start = parse_minute(a)
            .filter(|m| *m < MINUTES_PER_DAY)
            .ok_or_else(|| format!("`{}` is not a time of day (use HH:MM, 24-hour)", a.trim()))?;
        let end = parse_minute(b)
            .ok_or_else(|| format!("`{}` is not a time of day (use HH:MM, 24-hour)", b.trim()))?;
        let range = end_of(start, end)
            .ok_or_else(|| format!("`{part}` is empty (for a whole day write `24h`)"))?;
        out.push(range);
    }
    if out.len() > MAX_RANGES_PER_DAY {
        return Err(format!(
            "{} ranges in one day; the limit is {MAX_RANGES_PER_DAY}",
            out.len()
        ));
    }
    out.sort_by_key(|r| r.start);
    Ok(out)
}

/// `2026-12-24` or `2026-12-31..2027-01-01` (inclusive).
fn parse_closed(s: &str) -> Result<(Date, Date), String> {
    let date = |d: &str| {
        let d = d.trim();
        d.parse::<Date>()
            .map_err(|_| format!("`{d}` is not a date (use YYYY-MM-DD)"))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (date(a)?, date(b)?);
            if b < a {
                return Err(format!("`{}` ends before it starts", s.trim()));
            }
            Ok((a, b))
        }
        None => date(s).map(|d| (d, d)),
    }
}

/// A day (`mon`, `monday`, `tues`) as its Monday-first index.
fn parse_day(s: &str) -> Option<usize> {
    let s = s.trim();
    DAY_NAMES
        .iter()
        .position(|full| s.len() >= 3 && full.starts_with(s))
}

/// Days as a bit set (bit 0 = Monday): `mon`, `mon-fri`, `fri-mon`, `mon, wed`,
/// `weekdays`, `weekends`, `daily`/`any`. Errors come with a suggestion.
fn parse_day_set(s: &str) -> Result<u8, (String, Option<String>)> {
    const SUGGEST: [&str; 11] = [
        "mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekends", "daily", "any",
    ];
    let unknown = |part: &str| {
        (
            format!("`{part}` is not a day"),
            crate::diag::did_you_mean(part, SUGGEST.iter().copied()).or_else(|| {
                Some("use `mon` … `sun`, a range such as `mon-fri`, `weekdays`, `weekends` or `daily`".into())
            }),
        )
    };
    let mut bits = 0u8;
    for part in s.split(',') {
        let part = part.trim().to_ascii_lowercase();
        bits |= match part.as_str() {
            "any" | "daily" | "every day" => ALL_DAYS,
            "weekdays" | "weekday" => 0b001_1111,
            "weekends" | "weekend" => 0b110_0000,
            _ => match part.split_once(['-', '–']) {
                Some((a, b)) => {
                    let a = parse_day(a).ok_or_else(|| unknown(a.trim()))?;
                    let b = parse_day(b).ok_or_else(|| unknown(b.trim()))?;
                    let mut set = 0u8;
                    let mut d = a;
                    loop {
                        set |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                    set
                }
                None => 1 << parse_day(&part).ok_or_else(|| unknown(&part))?,
            },
        };
    }
    Ok(bits)
}

/// `Calendar` as the server reads it from configuration (serde), e.g. TOML:
/// `timezone = "Europe/Berlin"`, `hours = { mon-fri = "09:00-17:00" }`,
/// `closed = ["2026-12-24"]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarConfig {
    timezone: String,
    hours: BTreeMap<String, String>,
    #[serde(default)]
    closed: Vec<String>,
}

impl<'de> Deserialize<'de> for Calendar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = CalendarConfig::deserialize(d)?;
        Calendar::new(
            &c.timezone,
            c.hours.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            c.closed.iter().map(String::as_str),
        )
        .map_err(|e| serde::de::Error::custom(join(&e)))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OnConfig {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuietHoursConfig {
    from: String,
    to: String,
    #[serde(default)]
    on: Option<OnConfig>,
}

impl<'de> Deserialize<'de> for QuietHours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let c = QuietHoursConfig::deserialize(d)?;
        let on: Vec<&str> = match &c.on {
            None => Vec::new(),
            Some(OnConfig::One(s)) => vec![s.as_str()],
            Some(OnConfig::Many(v)) => v.iter().map(String::as_str).collect(),
        };
        QuietHours::new(&c.from, &c.to, &on).map_err(|e| serde::de::Error::custom(join(&e)))
    }
}

fn join(errors: &[ScheduleError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod open_duration_tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn counts_only_open_time() {
        let cal = Calendar::new(
            "Europe/Berlin",
            [("mon-fri", "09:00-17:00")],
            ["2026-12-25"],
        )
        .unwrap();
        let h = |from: &str, to: &str| cal.open_duration(t(from), t(to)).as_secs() as f64 / 3600.0;
        // Friday 16:00 Berlin (15:00Z) to Monday 10:00 Berlin (09:00Z): 1 h + 1 h.
        assert_eq!(h("2026-12-04T15:00:00Z", "2026-12-07T09:00:00Z"), 2.0);
        // Inside one day.
        assert_eq!(h("2026-12-07T09:00:00Z", "2026-12-07T10:30:00Z"), 1.5);
        // Christmas Friday is closed: Thursday 16:00 to Monday 10:00 is 1 h + 1 h.
        assert_eq!(h("2026-12-24T15:00:00Z", "2026-12-28T09:00:00Z"), 2.0);
        // A whole week: five days of eight hours.
        assert_eq!(h("2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"), 40.0);
        assert_eq!(h("2026-12-07T10:00:00Z", "2026-12-07T09:00:00Z"), 0.0);
        // Across a whole year (more than one search window of periods is not needed, but
        // many periods are): 52 weeks minus holidays.
        assert!(h("2026-01-05T00:00:00Z", "2027-01-04T00:00:00Z") > 2000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_sets_parse_ranges_lists_and_names() {
        assert_eq!(parse_day_set("mon-fri").unwrap(), 0b001_1111);
        assert_eq!(parse_day_set("fri-mon").unwrap(), 0b111_0001);
        assert_eq!(parse_day_set("Mon, wed").unwrap(), 0b000_0101);
        assert_eq!(parse_day_set("tues").unwrap(), 0b000_0010);
        assert_eq!(parse_day_set("weekends").unwrap(), 0b110_0000);
        let (msg, help) = parse_day_set("mon-fry").unwrap_err();
        assert_eq!(msg, "`fry` is not a day");
        assert_eq!(help.as_deref(), Some("did you mean `fri`?"));
        assert!(parse_day_set("mo").is_err(), "two letters are ambiguous");
    }

    #[test]
    fn hours_parse_ranges_midnight_and_all_day() {
        assert_eq!(
            parse_day_hours("13:00-17:00, 09:00-12:00").unwrap(),
            [
                Range {
                    start: 540,
                    end: 720
                },
                Range {
                    start: 780,
                    end: 1020
                }
            ]
        );
        assert_eq!(
            parse_day_hours("22:00-02:00").unwrap(),
            [Range {
                start: 1320,
                end: 1560
            }]
        );
        assert_eq!(
            parse_day_hours("24h").unwrap(),
            [Range {
                start: 0,
                end: 1440
            }]
        );
        assert_eq!(
            parse_day_hours("18:00-24:00").unwrap(),
            [Range {
                start: 1080,
                end: 1440
            }]
        );
        assert!(parse_day_hours("closed").unwrap().is_empty());
        assert!(
            parse_day_hours("09:00-09:00")
                .unwrap_err()
                .contains("empty")
        );
        assert!(parse_day_hours("9-17").is_err());
        assert!(parse_day_hours("24:00-02:00").is_err());
        assert!(parse_day_hours("09:60-10:00").is_err());
    }

    #[test]
    fn closed_dates_validate_leap_days_and_order() {
        assert!(parse_closed("2028-02-29").is_ok());
        assert_eq!(
            parse_closed("2027-02-29").unwrap_err(),
            "`2027-02-29` is not a date (use YYYY-MM-DD)"
        );
        assert!(
            parse_closed("2027-01-02..2026-12-31")
                .unwrap_err()
                .contains("ends before")
        );
        let d = |s: &str| s.parse::<Date>().unwrap();
        assert_eq!(
            merge_dates(vec![
                (d("2026-12-31"), d("2027-01-01")),
                (d("2026-12-24"), d("2026-12-26")),
                (d("2026-12-27"), d("2026-12-27")),
            ]),
            [
                (d("2026-12-24"), d("2026-12-27")),
                (d("2026-12-31"), d("2027-01-01"))
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_part() {
        let e = Calendar::new(
            "Europe/Berln",
            [
                ("mon-fri", "09:00-17:00"),
                ("fri", "10:00-12:00"),
                ("sun", "9-5"),
            ],
            ["2026-13-01"],
        )
        .unwrap_err();
        let parts: Vec<SchedulePart> = e.iter().map(|e| e.part).collect();
        assert_eq!(
            parts,
            [
                SchedulePart::Timezone,
                SchedulePart::HoursDays(1),
                SchedulePart::HoursTimes(2),
                SchedulePart::Closed(0)
            ]
        );
        assert_eq!(e[0].help.as_deref(), Some("did you mean `Europe/Berlin`?"));
        assert_eq!(e[1].message, "friday already has hours (from `mon-fri`)");
        let e = Calendar::new("UTC", [], []).unwrap_err();
        assert_eq!(e[0].part, SchedulePart::Hours);
    }

    #[test]
    fn open_throughout_needs_one_unbroken_run() {
        let c = Calendar::new(
            "Europe/Berlin",
            [
                ("mon-fri", "09:00-12:00, 12:00-17:00"),
                ("sat", "22:00-02:00"),
            ],
            ["2026-12-25"],
        )
        .unwrap();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        // Thursday 2026-12-10, back-to-back ranges make one run.
        assert!(c.is_open_throughout(t("2026-12-10T10:30:00Z"), t("2026-12-10T11:30:00Z")));
        assert!(c.is_open_throughout(t("2026-12-10T08:00:00Z"), t("2026-12-10T16:00:00Z")));
        assert!(!c.is_open_throughout(t("2026-12-10T15:30:00Z"), t("2026-12-10T16:30:00Z")));
        assert!(!c.is_open_throughout(t("2026-12-10T07:30:00Z"), t("2026-12-10T08:30:00Z")));
        // Across midnight on Saturday night; a closed date closes its day.
        assert!(c.is_open_throughout(t("2026-12-12T22:30:00Z"), t("2026-12-13T00:30:00Z")));
        assert!(!c.is_open_throughout(t("2026-12-25T10:00:00Z"), t("2026-12-25T10:30:00Z")));
    }

    #[test]
    fn quiet_hours_reject_empty_and_endless_periods() {
        assert_eq!(
            QuietHours::new("21:00", "21:00", &[]).unwrap_err()[0].part,
            SchedulePart::To
        );
        assert!(
            QuietHours::new("00:00", "24:00", &[]).unwrap_err()[0]
                .message
                .contains("never end")
        );
        assert!(QuietHours::new("00:00", "24:00", &["weekends"]).is_ok());
        assert_eq!(
            QuietHours::new("25:00", "08:00", &["mon", "sund"]).unwrap_err()[0].part,
            SchedulePart::From
        );
        assert_eq!(
            QuietHours::new("21:00", "08:00", &["someday"]).unwrap_err()[0].part,
            SchedulePart::On
        );
    }

    #[test]
    fn calendars_and_quiet_hours_deserialize_from_configuration() {
        let c: Calendar = serde_json::from_value(serde_json::json!({
            "timezone": "Asia/Kolkata",
            "hours": {"mon-fri": "09:30-18:00"},
            "closed": ["2026-01-26"],
        }))
        .unwrap();
        assert_eq!(c.timezone(), "Asia/Kolkata");
        assert!(c.is_closed_on("2026-01-26".parse().unwrap()));
        let q: QuietHours = serde_json::from_value(
            serde_json::json!({"from": "22:00", "to": "07:00", "on": "weekdays"}),
        )
        .unwrap();
        assert_eq!(q, QuietHours::new("22:00", "07:00", &["weekdays"]).unwrap());
        let e = serde_json::from_value::<Calendar>(
            serde_json::json!({"timezone": "Mars/Base", "hours": {}}),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown time zone `Mars/Base`"),
            "{e}"
        );
    }
}
