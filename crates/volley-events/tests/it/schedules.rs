//! Every schedule kind in virtual time: DST transitions, hours of operation, blackout
//! dates, month ends and leap years, phases.

use volley_events::{
    Phase, Schedule, allowed_position, current_or_next, next_occurrence, occurrences, phase,
};

use crate::support::*;

#[test]
fn once_at_a_local_time_or_an_offset() {
    let e = event("Europe/Berlin", "42m30s", "{ once: 2026-12-10T19:00 }", "");
    assert_eq!(
        starts(&e, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", None),
        ["2026-12-10T18:00:00Z"]
    );
    let o = next_occurrence(&e, ts("2026-12-10T18:00:00Z"), None).unwrap();
    assert_eq!(o.id, "t@2026-12-10T18:00:00Z");
    assert_eq!(o.ends_at, ts("2026-12-10T18:42:30Z"));
    assert!(!o.per_viewer && !o.on_demand);
    assert_eq!(next_occurrence(&e, ts("2026-12-10T18:00:01Z"), None), None);
    let z = event("Europe/Berlin", "1h", "{ once: 2026-12-10T18:00Z }", "");
    assert_eq!(
        next_occurrence(&z, ts("2026-01-01T00:00:00Z"), None)
            .unwrap()
            .starts_at,
        ts("2026-12-10T18:00:00Z")
    );
    let offset = event(
        "Asia/Kolkata",
        "1h",
        "{ once: \"2026-12-10T19:00+01:00\" }",
        "",
    );
    assert_eq!(
        next_occurrence(&offset, ts("2026-01-01T00:00:00Z"), None)
            .unwrap()
            .starts_at,
        ts("2026-12-10T18:00:00Z")
    );
}

#[test]
fn once_inside_a_dst_gap_moves_forward_by_the_gap() {
    // 2026-03-08 02:30 does not exist in New York: 03:30 EDT.
    let e = event("America/New_York", "30m", "{ once: 2026-03-08T02:30 }", "");
    assert_eq!(
        next_occurrence(&e, ts("2026-03-01T00:00:00Z"), None)
            .unwrap()
            .starts_at,
        ts("2026-03-08T07:30:00Z")
    );
    // 2026-11-01 01:30 happens twice: the first (EDT).
    let e = event("America/New_York", "30m", "{ once: 2026-11-01T01:30 }", "");
    assert_eq!(
        next_occurrence(&e, ts("2026-10-01T00:00:00Z"), None)
            .unwrap()
            .starts_at,
        ts("2026-11-01T05:30:00Z")
    );
}

#[test]
fn recurring_keeps_local_time_across_berlin_dst_end() {
    let e = event(
        "Europe/Berlin",
        "42m30s",
        "{ recurring: { cron: \"0 19 * * 2,4\" } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-10-19T00:00:00Z", "2026-10-31T00:00:00Z", None),
        [
            "2026-10-20T17:00:00Z", // Tue 19:00 CEST
            "2026-10-22T17:00:00Z", // Thu
            "2026-10-27T18:00:00Z", // Tue 19:00 CET, after the change on the 25th
            "2026-10-29T18:00:00Z",
        ]
    );
    assert!(matches!(e.schedule, Schedule::Recurring(ref r) if r.expression == "0 19 * * 2,4"));
}

#[test]
fn recurring_in_the_new_york_spring_gap_and_autumn_fold() {
    let e = event(
        "America/New_York",
        "20m",
        "{ recurring: { cron: \"30 2 * * *\" } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z", None),
        [
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:30:00Z", // 02:30 does not exist: 03:30 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]
    );
    let e = event(
        "America/New_York",
        "20m",
        "{ recurring: { cron: \"30 1 * * *\" } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z", None),
        [
            "2026-10-31T05:30:00Z", // 01:30 EDT
            "2026-11-01T05:30:00Z", // 01:30 twice: the first (EDT) only
            "2026-11-02T06:30:00Z", // 01:30 EST
        ]
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    // Lord Howe Island: +10:30, +11:00 in summer; clocks go 02:00 → 02:30 on
    // 2026-10-04 and 02:00 → 01:30 on 2026-04-05.
    let e = event(
        "Australia/Lord_Howe",
        "10m",
        "{ recurring: { cron: \"15 2 * * *\" } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-10-02T00:00:00Z", "2026-10-05T00:00:00Z", None),
        [
            "2026-10-02T15:45:00Z", // 02:15 +10:30
            "2026-10-03T15:45:00Z", // 02:15 does not exist: 02:45 +11:00
            "2026-10-04T15:15:00Z", // 02:15 +11:00
        ]
    );
    let e = event(
        "Australia/Lord_Howe",
        "10m",
        "{ recurring: { cron: \"45 1 * * *\" } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-04-03T00:00:00Z", "2026-04-06T00:00:00Z", None),
        [
            "2026-04-03T14:45:00Z", // 01:45 +11:00
            "2026-04-04T14:45:00Z", // 01:45 twice: the first (+11:00)
            "2026-04-05T15:15:00Z", // 01:45 +10:30
        ]
    );
}

#[test]
fn just_in_time_aligns_to_the_local_clock_in_kolkata() {
    let e = event(
        "Asia/Kolkata",
        "45m",
        "{ just_in_time: { every: 15m } }",
        "",
    );
    // 15:37 IST → the next slot is 15:45 IST.
    let o = next_occurrence(&e, ts("2026-06-01T10:07:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-06-01T10:15:00Z"));
    // A viewer arriving exactly on a slot gets it.
    let o = next_occurrence(&e, ts("2026-06-01T10:15:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-06-01T10:15:00Z"));
    let e = event("Asia/Kolkata", "45m", "{ just_in_time: { every: 1h } }", "");
    assert_eq!(
        starts(&e, "2026-06-01T10:00:00Z", "2026-06-01T12:00:00Z", None),
        ["2026-06-01T10:30:00Z", "2026-06-01T11:30:00Z"] // 16:00 and 17:00 IST
    );
}

#[test]
fn just_in_time_across_dst_follows_the_rule() {
    // New York spring gap: 02:00 and 02:30 resolve to 03:00 and 03:30, the same
    // instants as the real 03:00 and 03:30 slots: one showing each.
    let e = event(
        "America/New_York",
        "20m",
        "{ just_in_time: { every: 30m } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-03-08T06:00:00Z", "2026-03-08T08:30:00Z", None),
        [
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T07:30:00Z",
            "2026-03-08T08:00:00Z",
        ]
    );
    // Berlin fall back (03:00 CEST → 02:00 CET): the repeated 02:00 and 02:30 take the
    // first occurrence, so the second pass has no slots.
    let e = event(
        "Europe/Berlin",
        "20m",
        "{ just_in_time: { every: 30m } }",
        "",
    );
    assert_eq!(
        starts(&e, "2026-10-24T23:30:00Z", "2026-10-25T02:30:00Z", None),
        [
            "2026-10-24T23:30:00Z", // 01:30 CEST
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T02:00:00Z", // 03:00 CET
        ]
    );
}

#[test]
fn hours_of_operation_skip_slots_that_do_not_fit() {
    let hours = "hours: { timezone: Europe/Berlin, hours: { mon-fri: \"09:00-21:00\" }, closed: [\"2026-12-24..2026-12-25\"] }\n";
    let e = event(
        "Europe/Berlin",
        "42m30s",
        "{ just_in_time: { every: 30m } }",
        hours,
    );
    // Friday 2026-12-11: 09:00 … 20:00 fit (20:00 + 42m30s = 20:42:30); 20:30 would end
    // at 21:12:30, so it is skipped, not moved; the weekend has none.
    let s = starts(&e, "2026-12-11T00:00:00Z", "2026-12-14T08:00:00Z", None);
    assert_eq!(s.len(), 23, "{s:?}");
    assert_eq!(s.first().unwrap(), "2026-12-11T08:00:00Z");
    assert_eq!(s[22], "2026-12-11T19:00:00Z");
    // Monday starts again at 09:00.
    let o = next_occurrence(&e, ts("2026-12-11T19:00:01Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-12-14T08:00:00Z"));
    // Closed dates: nothing on the 24th or 25th (Thu, Fri); next is Monday the 28th.
    let o = next_occurrence(&e, ts("2026-12-23T20:00:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-12-28T08:00:00Z"));
}

#[test]
fn blackout_dates_skip_whole_days() {
    let e = event(
        "Europe/Berlin",
        "1h",
        "{ recurring: { cron: \"0 19 * * *\" } }",
        "blackout: [\"2026-12-31\", \"2027-01-02..2027-01-03\"]\n",
    );
    assert_eq!(
        starts(&e, "2026-12-30T00:00:00Z", "2027-01-05T00:00:00Z", None),
        [
            "2026-12-30T18:00:00Z",
            "2027-01-01T18:00:00Z",
            "2027-01-04T18:00:00Z",
        ]
    );
}

#[test]
fn month_ends_and_leap_years() {
    let e = event(
        "Europe/Berlin",
        "1h",
        "{ recurring: { cron: \"0 12 31 * *\" } }",
        "",
    );
    let s = starts(&e, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", None);
    assert_eq!(s.len(), 7, "months with 31 days: {s:?}");
    let e = event(
        "Europe/Berlin",
        "1h",
        "{ recurring: { cron: \"0 12 29 2 *\" } }",
        "",
    );
    let o = next_occurrence(&e, ts("2026-03-01T00:00:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2028-02-29T11:00:00Z"));
    let e = event(
        "America/New_York",
        "1h",
        "{ recurring: { cron: \"0 18 L * *\" } }",
        "",
    );
    assert_eq!(
        starts(&e, "2028-01-15T00:00:00Z", "2028-04-01T00:00:00Z", None),
        [
            "2028-01-31T23:00:00Z",
            "2028-02-29T23:00:00Z", // leap year
            "2028-03-31T22:00:00Z", // EDT
        ]
    );
}

#[test]
fn local_slots_are_per_viewer() {
    let e = event(
        "Europe/Berlin",
        "30m",
        "{ local: { at: \"19:00\", days: [tue, thu] } }",
        "",
    );
    let tokyo = starts(
        &e,
        "2026-12-01T00:00:00Z",
        "2026-12-04T00:00:00Z",
        Some("Asia/Tokyo"),
    );
    assert_eq!(tokyo, ["2026-12-01T10:00:00Z", "2026-12-03T10:00:00Z"]);
    let ny = starts(
        &e,
        "2026-12-01T00:00:00Z",
        "2026-12-04T00:00:00Z",
        Some("America/New_York"),
    );
    assert_eq!(ny, ["2026-12-02T00:00:00Z"]); // Tue 19:00 EST; Thu's is on the 4th UTC
    // Without a viewer zone: the event's.
    let berlin = starts(&e, "2026-12-01T00:00:00Z", "2026-12-04T00:00:00Z", None);
    assert_eq!(berlin, ["2026-12-01T18:00:00Z", "2026-12-03T18:00:00Z"]);
    let o = next_occurrence(&e, ts("2026-12-01T00:00:00Z"), Some(&zone("Asia/Tokyo"))).unwrap();
    assert!(o.per_viewer);
    // Viewers of the same instant share the occurrence (and its chat).
    let seoul = next_occurrence(&e, ts("2026-12-01T00:00:00Z"), Some(&zone("Asia/Seoul"))).unwrap();
    assert_eq!(o.id, seoul.id);
}

#[test]
fn local_slots_in_the_viewers_dst_gap() {
    let e = event("UTC", "30m", "{ local: { at: \"02:30\" } }", "");
    assert_eq!(
        starts(
            &e,
            "2026-03-07T00:00:00Z",
            "2026-03-10T00:00:00Z",
            Some("America/New_York")
        ),
        [
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:30:00Z", // 03:30 EDT
            "2026-03-09T06:30:00Z",
        ]
    );
}

#[test]
fn on_demand_starts_on_arrival_within_hours() {
    let e = event(
        "Europe/Berlin",
        "30m",
        "{ on_demand: true }",
        "replay: { window: 0 }\n",
    );
    let now = ts("2026-12-12T03:00:00Z");
    let o = next_occurrence(&e, now, None).unwrap();
    assert_eq!(o.starts_at, now);
    assert!(o.on_demand && o.per_viewer);
    assert_eq!(o.id, "t@2026-12-12T03:00:00Z~on-demand");
    assert!(occurrences(&e, now, ts("2026-12-13T00:00:00Z"), None).is_empty());
    // On-demand is a replay from the start: labelled as one, seeking allowed.
    let p = phase(&o, now + mins(5));
    assert_eq!(
        p,
        Phase::Replay {
            replay_until: o.ends_at
        }
    );
    assert_eq!(e.label_for(&p), "Replay · pre-recorded");
    assert_eq!(
        allowed_position(&o, now + mins(5), mins(20)),
        Some(mins(20))
    );
    assert_eq!(phase(&o, o.ends_at), Phase::Over);

    let hours =
        "hours: { timezone: Europe/Berlin, hours: { daily: \"09:00-09:20, 10:00-18:00\" } }\n";
    let e = event("Europe/Berlin", "30m", "{ on_demand: true }", hours);
    // Saturday 03:00 Berlin: closed; 09:00-09:20 is too short for 30 minutes; 10:00.
    let o = next_occurrence(&e, ts("2026-12-12T02:00:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-12-12T09:00:00Z"));
    // Inside hours with room: at once.
    let o = next_occurrence(&e, ts("2026-12-12T12:00:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-12-12T12:00:00Z"));
    // 17:40 leaves 20 minutes: the next morning at 10:00 (09:00 slot too short).
    let o = next_occurrence(&e, ts("2026-12-12T16:40:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-12-13T09:00:00Z"));
}

#[test]
fn phases_of_a_showing() {
    let e = event(
        "Europe/Berlin",
        "42m30s",
        "{ once: 2026-12-10T19:00 }",
        "replay: { window: 7d }\n",
    );
    let o = next_occurrence(&e, ts("2026-12-01T00:00:00Z"), None).unwrap();
    assert_eq!(
        phase(&o, ts("2026-12-10T17:55:00Z")),
        Phase::Upcoming { starts_in: mins(5) }
    );
    let live = phase(&o, ts("2026-12-10T18:10:00Z"));
    assert_eq!(live, Phase::Live { position: mins(10) });
    assert_eq!(e.label_for(&live), "Premiere · pre-recorded");
    // Live: no seeking ahead of the live position; behind is fine.
    assert_eq!(
        allowed_position(&o, ts("2026-12-10T18:10:00Z"), mins(30)),
        Some(mins(10))
    );
    assert_eq!(
        allowed_position(&o, ts("2026-12-10T18:10:00Z"), mins(3)),
        Some(mins(3))
    );
    assert_eq!(
        phase(&o, ts("2026-12-10T18:42:30Z")),
        Phase::Replay {
            replay_until: ts("2026-12-17T18:42:30Z")
        }
    );
    assert_eq!(
        allowed_position(&o, ts("2026-12-11T00:00:00Z"), mins(40)),
        Some(mins(40))
    );
    assert_eq!(phase(&o, ts("2026-12-17T18:42:30Z")), Phase::Over);
    assert_eq!(
        allowed_position(&o, ts("2026-12-17T18:42:30Z"), mins(1)),
        None
    );
    // Without replay, the end is the end.
    let e = event("Europe/Berlin", "42m30s", "{ once: 2026-12-10T19:00 }", "");
    let o = next_occurrence(&e, ts("2026-12-01T00:00:00Z"), None).unwrap();
    assert_eq!(phase(&o, o.ends_at), Phase::Over);
}

#[test]
fn a_late_joiner_joins_the_live_showing() {
    let e = event(
        "Europe/Berlin",
        "42m",
        "{ just_in_time: { every: 15m } }",
        "",
    );
    // 10:20 UTC: the 10:15 showing is 5 minutes in (the 10:00 one too, 20 in): join
    // the latest one that is live.
    let o = current_or_next(&e, ts("2026-12-10T10:20:00Z"), None).unwrap();
    assert_eq!(o.starts_at, ts("2026-12-10T10:15:00Z"));
    let once = event("Europe/Berlin", "42m", "{ once: 2026-12-10T19:00 }", "");
    let o = current_or_next(&once, ts("2026-12-10T18:30:00Z"), None).unwrap();
    assert_eq!(
        phase(&o, ts("2026-12-10T18:30:00Z")),
        Phase::Live { position: mins(30) }
    );
    assert!(current_or_next(&once, ts("2026-12-10T18:42:00Z"), None).is_none());
}

#[test]
fn occurrences_are_capped() {
    let e = event("UTC", "10m", "{ just_in_time: { every: 5m } }", "");
    let all = occurrences(
        &e,
        ts("2026-01-01T00:00:00Z"),
        ts("2027-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(all.len(), volley_events::MAX_OCCURRENCES);
    assert!(
        all.windows(2)
            .all(|w| w[0].starts_at + mins(5) == w[1].starts_at)
    );
}

#[test]
fn a_schedule_that_never_opens_again_ends() {
    // Every slot is blacked out for the whole search: no occurrence, quickly.
    let e = event(
        "UTC",
        "10m",
        "{ just_in_time: { every: 5m } }",
        "blackout: [\"2026-01-01..2029-12-31\"]\n",
    );
    assert_eq!(next_occurrence(&e, ts("2026-06-01T00:00:00Z"), None), None);
}

#[test]
fn cron_day_of_month_or_day_of_week() {
    // Classic cron: with both given, either matches (the 13th, and every Friday).
    let e = event(
        "Europe/Berlin",
        "1h",
        "{ recurring: { cron: \"0 12 13 * 5\" } }",
        "",
    );
    let nov = starts(&e, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", None);
    assert_eq!(nov.len(), 4, "Fridays 6, 13, 20, 27: {nov:?}");
    let dec = starts(&e, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", None);
    assert_eq!(dec.len(), 5, "Fridays 4, 11, 18, 25 and Sunday 13: {dec:?}");
}
