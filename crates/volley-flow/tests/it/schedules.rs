//! Calendars (business hours) and quiet hours: opening, closing and deferral across
//! DST changes, holidays, midnight-crossing ranges, leap days and month ends.

use jiff::Timestamp;
use volley_flow::{Calendar, QuietHours, zone};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cal(tz: &str, hours: &[(&str, &str)], closed: &[&str]) -> Calendar {
    Calendar::new(tz, hours.iter().copied(), closed.iter().copied())
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// `next_open` as the instant in the calendar's zone, for readable assertions.
fn next_open(c: &Calendar, at: &str) -> Option<String> {
    c.next_open(ts(at))
        .map(|t| t.to_zoned(c.zone().clone()).to_string())
}

fn next_close(c: &Calendar, at: &str) -> Option<String> {
    c.next_close(ts(at))
        .map(|t| t.to_zoned(c.zone().clone()).to_string())
}

#[test]
fn new_york_opening_hours_keep_local_time_across_both_dst_changes() {
    let c = cal("America/New_York", &[("mon-fri", "09:00-17:00")], &[]);
    // Friday 2026-03-06 17:30 EST; clocks spring forward on Sunday 2026-03-08.
    assert!(!c.is_open(ts("2026-03-06T22:30:00Z")));
    assert_eq!(
        next_open(&c, "2026-03-06T22:30:00Z").unwrap(),
        "2026-03-09T09:00:00-04:00[America/New_York]"
    );
    assert!(!c.is_open(ts("2026-03-09T12:59:59Z")));
    assert!(c.is_open(ts("2026-03-09T13:00:00Z")));
    assert_eq!(
        next_close(&c, "2026-03-09T14:00:00Z").unwrap(),
        "2026-03-09T17:00:00-04:00[America/New_York]"
    );
    // Friday 2026-10-30; clocks fall back on Sunday 2026-11-01.
    assert_eq!(
        next_open(&c, "2026-10-30T21:30:00Z").unwrap(),
        "2026-11-02T09:00:00-05:00[America/New_York]"
    );
    // Open: next_open is the instant itself; closed after 17:00 local.
    assert_eq!(
        c.next_open(ts("2026-11-02T15:00:00Z")),
        Some(ts("2026-11-02T15:00:00Z"))
    );
    assert!(!c.is_open(ts("2026-11-02T22:00:00Z")));
}

#[test]
fn a_range_inside_the_skipped_hour_has_no_time_that_day() {
    // 2026-03-08 02:00 → 03:00 in New York.
    let c = cal("America/New_York", &[("sun", "02:10-02:50")], &[]);
    assert_eq!(
        next_open(&c, "2026-03-07T17:00:00Z").unwrap(),
        "2026-03-15T02:10:00-04:00[America/New_York]",
        "nothing on 8 March, the next Sunday instead"
    );
    // A range reaching into the gap ends when the clocks jump.
    let c = cal("America/New_York", &[("sun", "01:30-02:30")], &[]);
    assert!(c.is_open(ts("2026-03-08T06:45:00Z"))); // 01:45 EST
    assert_eq!(
        next_close(&c, "2026-03-08T06:45:00Z").unwrap(),
        "2026-03-08T03:00:00-04:00[America/New_York]"
    );
    assert!(!c.is_open(ts("2026-03-08T07:00:00Z")));
    // A range starting in the gap starts when the clocks jump.
    let c = cal("America/New_York", &[("sun", "02:30-04:00")], &[]);
    assert_eq!(
        next_open(&c, "2026-03-08T05:00:00Z").unwrap(),
        "2026-03-08T03:00:00-04:00[America/New_York]"
    );
}

#[test]
fn a_repeated_hour_opens_on_its_first_occurrence_only() {
    // 2026-11-01 01:00-02:00 happens twice in New York (EDT, then EST).
    let c = cal("America/New_York", &[("sun", "01:00-01:30")], &[]);
    assert!(c.is_open(ts("2026-11-01T05:15:00Z"))); // 01:15 EDT
    assert!(!c.is_open(ts("2026-11-01T06:15:00Z"))); // 01:15 EST, the second time
    assert_eq!(
        next_open(&c, "2026-11-01T05:45:00Z").unwrap(),
        "2026-11-08T01:00:00-05:00[America/New_York]"
    );
}

#[test]
fn berlin_support_with_weekends_and_holidays() {
    let c = cal(
        "Europe/Berlin",
        &[("mon-fri", "09:00-17:30"), ("sat", "10:00-14:00")],
        &["2026-12-24", "2026-12-31..2027-01-01"],
    );
    // Saturday 2026-03-28 15:00 CET; summer time starts on Sunday 2026-03-29.
    assert_eq!(
        next_open(&c, "2026-03-28T14:00:00Z").unwrap(),
        "2026-03-30T09:00:00+02:00[Europe/Berlin]"
    );
    assert_eq!(
        next_open(&c, "2026-03-27T17:00:00Z").unwrap(),
        "2026-03-28T10:00:00+01:00[Europe/Berlin]"
    );
    // Winter time from Sunday 2026-10-25.
    assert_eq!(
        next_open(&c, "2026-10-24T13:00:00Z").unwrap(),
        "2026-10-26T09:00:00+01:00[Europe/Berlin]"
    );
    // Holidays: Thursday 24 December closed, Friday 25 open (not listed).
    assert_eq!(
        next_open(&c, "2026-12-23T17:00:00Z").unwrap(),
        "2026-12-25T09:00:00+01:00[Europe/Berlin]"
    );
    assert!(!c.is_open(ts("2026-12-24T10:00:00Z")));
    // 31 December to 1 January closed: Saturday 2 January 10:00.
    assert_eq!(
        next_open(&c, "2026-12-30T17:00:00Z").unwrap(),
        "2027-01-02T10:00:00+01:00[Europe/Berlin]"
    );
    assert!(c.is_closed_on("2027-01-01".parse().unwrap()));
    assert!(!c.is_closed_on("2027-01-02".parse().unwrap()));
}

#[test]
fn lord_howe_shifts_by_thirty_minutes() {
    // Australia/Lord_Howe: +10:30, and +11 in summer. Summer time ends on Sunday
    // 2026-04-05 (02:00 → 01:30) and starts on Sunday 2026-10-04 (02:00 → 02:30).
    let c = cal("Australia/Lord_Howe", &[("mon-fri", "09:00-17:00")], &[]);
    assert_eq!(
        next_open(&c, "2026-04-03T07:00:00Z").unwrap(),
        "2026-04-06T09:00:00+10:30[Australia/Lord_Howe]"
    );
    assert_eq!(
        next_open(&c, "2026-10-02T07:00:00Z").unwrap(),
        "2026-10-05T09:00:00+11:00[Australia/Lord_Howe]"
    );
    // A range inside the 30-minute gap is empty; one reaching into it ends at 02:30.
    let c = cal("Australia/Lord_Howe", &[("sun", "02:05-02:25")], &[]);
    assert_eq!(
        next_open(&c, "2026-10-03T12:00:00Z").unwrap(),
        "2026-10-11T02:05:00+11:00[Australia/Lord_Howe]"
    );
    let c = cal("Australia/Lord_Howe", &[("sun", "01:00-02:15")], &[]);
    assert_eq!(
        next_close(&c, "2026-10-03T14:45:00Z").unwrap(), // 01:15 +10:30
        "2026-10-04T02:30:00+11:00[Australia/Lord_Howe]"
    );
    // The repeated half hour (01:30-02:00 on 5 April) opens the first time only.
    let c = cal("Australia/Lord_Howe", &[("sun", "01:40-01:50")], &[]);
    assert!(c.is_open(ts("2026-04-04T14:45:00Z"))); // 01:45 +11
    assert!(!c.is_open(ts("2026-04-04T15:15:00Z"))); // 01:45 +10:30
}

#[test]
fn kolkata_has_half_hour_offset_and_no_dst() {
    let c = cal(
        "Asia/Kolkata",
        &[("mon-fri", "09:30-18:00")],
        &["2026-01-26"],
    );
    // Friday 2026-03-06 18:30 IST.
    assert_eq!(
        next_open(&c, "2026-03-06T13:00:00Z").unwrap(),
        "2026-03-09T09:30:00+05:30[Asia/Kolkata]"
    );
    assert!(c.is_open(ts("2026-03-09T04:00:00Z")));
    assert!(!c.is_open(ts("2026-03-09T03:59:00Z")));
    assert_eq!(
        next_close(&c, "2026-03-09T04:00:00Z").unwrap(),
        "2026-03-09T18:00:00+05:30[Asia/Kolkata]"
    );
    // Republic Day (Monday 2026-01-26) is closed.
    assert_eq!(
        next_open(&c, "2026-01-23T13:00:00Z").unwrap(),
        "2026-01-27T09:30:00+05:30[Asia/Kolkata]"
    );
}

#[test]
fn ranges_crossing_midnight_belong_to_the_day_they_start() {
    let c = cal(
        "Europe/Berlin",
        &[("fri-sat", "22:00-02:00")],
        &["2026-11-27"],
    );
    // Saturday 2026-11-21 01:00 local: Friday night's range.
    assert!(c.is_open(ts("2026-11-21T00:00:00Z")));
    // Sunday 01:00: Saturday night's range.
    assert!(c.is_open(ts("2026-11-22T00:00:00Z")));
    // Monday 01:00: Sunday has no range.
    assert!(!c.is_open(ts("2026-11-23T00:00:00Z")));
    assert_eq!(
        next_close(&c, "2026-11-20T22:00:00Z").unwrap(),
        "2026-11-21T02:00:00+01:00[Europe/Berlin]"
    );
    // Friday 27 November is closed, so is its night; Saturday's night still opens.
    assert!(!c.is_open(ts("2026-11-28T00:00:00Z")));
    assert_eq!(
        next_open(&c, "2026-11-27T12:00:00Z").unwrap(),
        "2026-11-28T22:00:00+01:00[Europe/Berlin]"
    );
}

#[test]
fn back_to_back_ranges_close_once() {
    let c = cal(
        "Europe/Berlin",
        &[("mon-fri", "09:00-12:00, 12:00-17:00"), ("sat-sun", "24h")],
        &[],
    );
    assert_eq!(
        next_close(&c, "2026-11-23T09:00:00Z").unwrap(),
        "2026-11-23T17:00:00+01:00[Europe/Berlin]"
    );
    // Saturday and Sunday are one period, from Saturday 00:00 to Monday 00:00.
    assert_eq!(
        next_close(&c, "2026-11-21T12:00:00Z").unwrap(),
        "2026-11-23T00:00:00+01:00[Europe/Berlin]"
    );
    // Closed on Friday evening: the next period's end.
    assert_eq!(
        next_close(&c, "2026-11-20T18:00:00Z").unwrap(),
        "2026-11-23T00:00:00+01:00[Europe/Berlin]"
    );
}

#[test]
fn always_open_never_closes_and_never_open_never_opens() {
    let always = cal("UTC", &[("daily", "24h")], &[]);
    assert!(always.is_open(ts("2026-06-01T12:00:00Z")));
    assert_eq!(always.next_close(ts("2026-06-01T12:00:00Z")), None);
    let closed_long = cal(
        "UTC",
        &[("mon", "09:00-10:00")],
        &["2026-01-01..2029-01-01"],
    );
    assert_eq!(closed_long.next_open(ts("2026-06-01T12:00:00Z")), None);
    assert_eq!(closed_long.next_close(ts("2026-06-01T12:00:00Z")), None);
    assert!(!closed_long.is_open(ts("2026-06-01T09:30:00Z")));
}

#[test]
fn next_open_crosses_long_holidays_leap_days_and_month_ends() {
    let c = cal(
        "Europe/Berlin",
        &[("mon-fri", "09:00-17:00")],
        &["2026-12-01..2027-03-31", "2028-02-28..2028-02-29"],
    );
    // A four-month closure: Thursday 1 April 2027 (summer time by then).
    assert_eq!(
        next_open(&c, "2026-11-30T17:00:00Z").unwrap(),
        "2027-04-01T09:00:00+02:00[Europe/Berlin]"
    );
    // Monday 28 and Tuesday 29 February 2028 closed: Wednesday 1 March.
    assert_eq!(
        next_open(&c, "2028-02-25T17:00:00Z").unwrap(),
        "2028-03-01T09:00:00+01:00[Europe/Berlin]"
    );
    // Month end: Friday 30 April 2027 evening → Monday 3 May.
    assert_eq!(
        next_open(&c, "2027-04-30T16:00:00Z").unwrap(),
        "2027-05-03T09:00:00+02:00[Europe/Berlin]"
    );
    // Year end 2027 (Friday 31 December) → Monday 3 January 2028.
    assert_eq!(
        next_open(&c, "2027-12-31T17:00:00Z").unwrap(),
        "2028-01-03T09:00:00+01:00[Europe/Berlin]"
    );
    // A leap day that is a working day is an ordinary day.
    let c = cal("Asia/Kolkata", &[("tue", "10:00-11:00")], &[]);
    assert_eq!(
        next_open(&c, "2028-02-23T06:00:00Z").unwrap(),
        "2028-02-29T10:00:00+05:30[Asia/Kolkata]"
    );
}

#[test]
fn quiet_hours_defer_to_the_morning_across_midnight() {
    let q = QuietHours::new("21:00", "08:00", &[]).unwrap();
    let berlin = zone("Europe/Berlin").unwrap();
    let defer =
        |at: &str, tz: &jiff::tz::TimeZone| q.defer(ts(at), tz).to_zoned(tz.clone()).to_string();
    assert_eq!(
        defer("2026-11-20T22:30:00Z", &berlin),
        "2026-11-21T08:00:00+01:00[Europe/Berlin]"
    );
    // After midnight, the same night's period.
    assert_eq!(
        defer("2026-11-21T02:00:00Z", &berlin),
        "2026-11-21T08:00:00+01:00[Europe/Berlin]"
    );
    // The edges: 20:59 is not quiet, 21:00 is, 08:00 is not.
    assert!(!q.is_quiet(ts("2026-11-20T19:59:00Z"), &berlin));
    assert!(q.is_quiet(ts("2026-11-20T20:00:00Z"), &berlin));
    assert_eq!(
        q.defer(ts("2026-11-21T07:00:00Z"), &berlin),
        ts("2026-11-21T07:00:00Z")
    );
    // Kolkata: the same rule at +05:30.
    let kolkata = zone("Asia/Kolkata").unwrap();
    assert_eq!(
        defer("2026-11-20T17:00:00Z", &kolkata),
        "2026-11-21T08:00:00+05:30[Asia/Kolkata]"
    );
}

#[test]
fn quiet_hours_end_at_local_time_across_dst() {
    let q = QuietHours::new("21:00", "08:00", &[]).unwrap();
    let ny = zone("America/New_York").unwrap();
    // Saturday 2026-03-07 23:00 EST → Sunday 08:00 EDT (a 8-hour night, not 9).
    assert_eq!(
        q.defer(ts("2026-03-08T04:00:00Z"), &ny),
        ts("2026-03-08T12:00:00Z")
    );
    // Saturday 2026-10-31 23:00 EDT → Sunday 08:00 EST (a 10-hour night).
    assert_eq!(
        q.defer(ts("2026-11-01T03:00:00Z"), &ny),
        ts("2026-11-01T13:00:00Z")
    );
    // Lord Howe: quiet until 02:15, which is skipped on 4 October 2026: until 02:30.
    let q = QuietHours::new("01:00", "02:15", &[]).unwrap();
    let lh = zone("Australia/Lord_Howe").unwrap();
    assert_eq!(
        q.defer(ts("2026-10-03T15:00:00Z"), &lh) // 01:30 +10:30
            .to_zoned(lh.clone())
            .to_string(),
        "2026-10-04T02:30:00+11:00[Australia/Lord_Howe]"
    );
    // The repeated half hour on 5 April: quiet 01:00-01:45 ends at the first 01:45.
    let q = QuietHours::new("01:00", "01:45", &[]).unwrap();
    assert_eq!(
        q.defer(ts("2026-04-04T14:10:00Z"), &lh), // 01:10 +11
        ts("2026-04-04T14:45:00Z")
    );
    assert!(
        !q.is_quiet(ts("2026-04-04T15:10:00Z"), &lh),
        "01:40 +10:30, the second time"
    );
}

#[test]
fn quiet_hours_on_some_days_belong_to_the_day_they_start() {
    let q = QuietHours::new("21:00", "08:00", &["weekdays"]).unwrap();
    let berlin = zone("Europe/Berlin").unwrap();
    // Friday 23:00: quiet until Saturday 08:00.
    assert_eq!(
        q.defer(ts("2026-11-20T22:00:00Z"), &berlin),
        ts("2026-11-21T07:00:00Z")
    );
    // Sunday 23:00 is not quiet (Sunday is not a weekday).
    assert!(!q.is_quiet(ts("2026-11-22T22:00:00Z"), &berlin));
    // Quiet all weekend: Saturday morning defers to Monday 00:00.
    let q = QuietHours::new("00:00", "24:00", &["weekends"]).unwrap();
    assert_eq!(
        q.defer(ts("2026-11-21T09:00:00Z"), &berlin),
        ts("2026-11-22T23:00:00Z")
    );
}
