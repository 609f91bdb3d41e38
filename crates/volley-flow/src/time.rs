//! Time arithmetic for flows: durations, relative dates and wait targets, in the
//! contact's time zone.
//!
//! The engine never reads the clock: `now` is always an argument. Time zones come from
//! the tz database bundled into the binary, so results do not depend on the machine.
//!
//! DST rule (documented in docs/flows.md): a local time that does not exist (spring
//! forward gap) resolves to the instant after the gap, a local time that happens twice
//! (fall back) resolves to the first occurrence. This is jiff's "compatible" strategy,
//! the same as RFC 5545 and most calendars.

use std::sync::OnceLock;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::{Span, SpanRelativeTo, Timestamp, Unit, Zoned};

fn tzdb() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// Looks up an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn zone(name: &str) -> Option<TimeZone> {
    if name.eq_ignore_ascii_case("utc") {
        return Some(TimeZone::UTC);
    }
    tzdb().get(name).ok()
}

/// Names of the bundled time zones (for "did you mean" suggestions).
pub fn zone_names() -> impl Iterator<Item = &'static str> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES
        .get_or_init(|| tzdb().available().map(|n| n.as_str().to_string()).collect())
        .iter()
        .map(String::as_str)
}

/// Parses a duration: `500ms`, `2s`, `1.5s`, `10m`, `1h30m`, `2d`, `1w`, `-1h`, or ISO
/// 8601 (`PT2H`). Days and weeks are calendar days in the contact's zone.
pub fn parse_span(s: &str) -> Result<Span, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let span: Span = body
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try `30s`, `10m`, `2h`, `1d`, `1h30m`)"))?;
    Ok(if neg { span.negate() } else { span })
}

/// A duration made only of time units (no days), as milliseconds. For pacing delays.
pub fn parse_millis(s: &str) -> Result<u64, String> {
    let span = parse_span(s)?;
    if span.get_years() != 0
        || span.get_months() != 0
        || span.get_weeks() != 0
        || span.get_days() != 0
    {
        return Err(format!(
            "`{s}`: use hours, minutes, seconds or milliseconds here"
        ));
    }
    let ms = span.total(Unit::Millisecond).map_err(|e| e.to_string())?;
    if ms < 0.0 {
        return Err(format!("`{s}` is negative"));
    }
    Ok(ms.round() as u64)
}

/// A fixed length of time in milliseconds: `90s`, `2h`, `30d`, `1w`. Days and weeks
/// count 24 hours each (for lateness allowances and expiry, where no zone applies);
/// months and years are refused (their length varies). Must be positive.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let span = parse_span(s)?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "`{s}`: months and years vary in length; use days or weeks"
        ));
    }
    let ms = span
        .total((Unit::Millisecond, SpanRelativeTo::days_are_24_hours()))
        .map_err(|e| e.to_string())?;
    if ms <= 0.0 {
        return Err(format!("`{s}` must be positive"));
    }
    Ok(ms.round() as u64)
}

/// The instant of a local date-time used as a schedule boundary (opening hours, quiet
/// hours), by the documented DST rule: a time inside a spring-forward gap resolves to
/// the moment the gap ends (the instant the clocks jump), a repeated time to its first
/// occurrence. So a range lying entirely inside a gap is empty that day. `None` only
/// at the edges of the representable range.
pub fn resolve_boundary(dt: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, the time falls before the transition; the
            // next transition from there is the end of the gap.
            let probe = after.to_timestamp(dt).ok()?;
            tz.following(probe).next().map(|t| t.timestamp())
        }
    }
}

/// Adds a span to an instant, counting days in the given zone (so "1d" across a DST
/// change is 23 or 25 hours and lands on the same wall-clock time).
pub fn add_span(now: Timestamp, tz: &TimeZone, span: Span) -> Result<Timestamp, String> {
    now.to_zoned(tz.clone())
        .checked_add(span)
        .map(|z| z.timestamp())
        .map_err(|e| e.to_string())
}

/// Today's date in a zone.
pub fn today(now: Timestamp, tz: &TimeZone) -> Date {
    now.to_zoned(tz.clone()).date()
}

/// Day-of-week bit set: bit 0 = Monday … bit 6 = Sunday.
pub const ALL_DAYS: u8 = 0b111_1111;
pub const WEEKDAYS: u8 = 0b001_1111;
pub const WEEKENDS: u8 = 0b110_0000;

/// Parses `any`, `weekdays`, `weekends`, or a day name (`mon`, `monday`).
pub fn parse_days(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    Some(match s.as_str() {
        "any" | "every day" | "daily" => ALL_DAYS,
        "weekdays" | "weekday" => WEEKDAYS,
        "weekends" | "weekend" => WEEKENDS,
        _ => {
            const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            let ix = NAMES.iter().position(|n| s.starts_with(n))?;
            1 << ix
        }
    })
}

/// The first instant strictly after `now` at local `time` on an allowed day, in `tz`.
pub fn next_local_time(
    now: Timestamp,
    tz: &TimeZone,
    time: Time,
    days: u8,
) -> Result<Timestamp, String> {
    let local_now: Zoned = now.to_zoned(tz.clone());
    let mut date = local_now.date();
    for _ in 0..15 {
        let dow = date.weekday().to_monday_zero_offset();
        if days & (1 << dow) != 0 {
            let candidate = date
                .to_datetime(time)
                .to_zoned(tz.clone())
                .map_err(|e| e.to_string())?;
            if candidate.timestamp() > now {
                return Ok(candidate.timestamp());
            }
        }
        date = date.tomorrow().map_err(|e| e.to_string())?;
    }
    Err("no allowed day in the next two weeks".into())
}

/// Parses an instant written by a template: RFC 3339 (`2026-12-01T09:00:00Z`), or a
/// civil date-time / date interpreted in `tz`.
pub fn parse_instant(s: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(z) = s.parse::<Zoned>() {
        return Ok(z.timestamp());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "`{s}` is not a date-time (use RFC 3339, e.g. 2026-12-01T09:00:00Z)"
    ))
}

/// Parses `HH:MM` (24-hour).
pub fn parse_time_of_day(s: &str) -> Option<Time> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

/// Parses a date bound: `today`, `today+30d`, `today-18y`, or `2026-12-31`.
pub(crate) fn parse_rel_date(s: &str) -> Result<crate::flow::RelDate, String> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("today") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(crate::flow::RelDate::Today(Span::new()));
        }
        let span = parse_span(rest)?;
        if span.get_hours() != 0 || span.get_minutes() != 0 || span.get_seconds() != 0 {
            return Err(format!(
                "`{s}`: offsets of a date use days, weeks, months or years"
            ));
        }
        return Ok(crate::flow::RelDate::Today(span));
    }
    t.parse::<Date>()
        .map(crate::flow::RelDate::Fixed)
        .map_err(|_| format!("`{s}` is not a date (use `2026-12-31`, `today` or `today+30d`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn durations_parse_in_friendly_and_iso_forms() {
        assert_eq!(parse_millis("500ms").unwrap(), 500);
        assert_eq!(parse_millis("1.5s").unwrap(), 1500);
        assert_eq!(parse_millis("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_millis("PT2S").unwrap(), 2000);
        assert!(parse_millis("2d").is_err());
        assert!(parse_span("soon").is_err());
        assert_eq!(parse_span("-1h").unwrap().get_hours(), -1);
    }

    #[test]
    fn a_day_later_keeps_wall_clock_time_across_dst() {
        let berlin = zone("Europe/Berlin").unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin.
        let before = ts("2026-03-28T08:00:00Z"); // 09:00 local
        let after = add_span(before, &berlin, parse_span("1d").unwrap()).unwrap();
        assert_eq!(after, ts("2026-03-29T07:00:00Z")); // 09:00 local, 23h later
    }

    #[test]
    fn next_weekday_morning_skips_the_weekend() {
        let ny = zone("America/New_York").unwrap();
        // Friday 2026-11-20 15:00 local.
        let now = ts("2026-11-20T20:00:00Z");
        let t = next_local_time(now, &ny, Time::new(9, 0, 0, 0).unwrap(), WEEKDAYS).unwrap();
        assert_eq!(t, ts("2026-11-23T14:00:00Z")); // Monday 09:00 EST
    }

    #[test]
    fn a_local_time_inside_the_spring_gap_moves_after_the_gap() {
        let ny = zone("America/New_York").unwrap();
        // 2026-03-08 02:30 does not exist in New York; it resolves to 03:30 EDT.
        let now = ts("2026-03-08T05:00:00Z"); // 00:00 EST
        let t = next_local_time(now, &ny, Time::new(2, 30, 0, 0).unwrap(), ALL_DAYS).unwrap();
        assert_eq!(t, ts("2026-03-08T07:30:00Z"));
    }
}
