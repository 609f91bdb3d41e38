//! Reminders, including late registrants.

use volley_events::{Reminder, ReminderKind, next_occurrence, reminders_for};

use crate::support::*;

fn launch() -> (volley_events::Event, volley_events::Occurrence) {
    let e = event(
        "Europe/Berlin",
        "42m30s",
        "{ once: 2026-12-10T19:00 }",
        "reminders: [5m, 24h, 1h]\n",
    );
    let o = next_occurrence(&e, ts("2026-01-01T00:00:00Z"), None).unwrap();
    (e, o)
}

fn summary(r: &[Reminder]) -> Vec<(String, String, ReminderKind)> {
    r.iter()
        .map(|r| (r.at.to_string(), r.offset_label.clone(), r.kind))
        .collect()
}

#[test]
fn an_early_registrant_gets_every_reminder_in_order() {
    let (e, o) = launch();
    let r = reminders_for(&e, &o, ts("2026-12-01T00:00:00Z"));
    assert_eq!(
        summary(&r),
        [
            (
                "2026-12-09T18:00:00Z".into(),
                "24h".into(),
                ReminderKind::Before
            ),
            (
                "2026-12-10T17:00:00Z".into(),
                "1h".into(),
                ReminderKind::Before
            ),
            (
                "2026-12-10T17:55:00Z".into(),
                "5m".into(),
                ReminderKind::Before
            ),
        ]
    );
    assert_eq!(r[1].offset, mins(60));
}

#[test]
fn a_late_registrant_gets_the_reminders_still_ahead() {
    let (e, o) = launch();
    let r = reminders_for(&e, &o, ts("2026-12-10T15:00:00Z"));
    assert_eq!(
        summary(&r),
        [
            (
                "2026-12-10T17:00:00Z".into(),
                "1h".into(),
                ReminderKind::Before
            ),
            (
                "2026-12-10T17:55:00Z".into(),
                "5m".into(),
                ReminderKind::Before
            ),
        ]
    );
    // Exactly at a reminder's time: that one has passed.
    let r = reminders_for(&e, &o, ts("2026-12-10T17:00:00Z"));
    assert_eq!(
        summary(&r),
        [(
            "2026-12-10T17:55:00Z".into(),
            "5m".into(),
            ReminderKind::Before
        )]
    );
}

#[test]
fn registering_inside_the_last_window_sends_starting_soon_at_once() {
    let (e, o) = launch();
    let at = ts("2026-12-10T17:56:40Z");
    let r = reminders_for(&e, &o, at);
    assert_eq!(
        summary(&r),
        [(at.to_string(), "3m20s".into(), ReminderKind::StartingSoon)]
    );
    assert_eq!(r[0].offset, jiff::SignedDuration::from_secs(200));
    // At the very start of the window too.
    let at = ts("2026-12-10T17:55:00Z");
    assert_eq!(
        reminders_for(&e, &o, at)[0].kind,
        ReminderKind::StartingSoon
    );
}

#[test]
fn registering_after_the_start_gets_live_now_then_nothing() {
    let (e, o) = launch();
    let at = ts("2026-12-10T18:10:00Z");
    let r = reminders_for(&e, &o, at);
    assert_eq!(
        summary(&r),
        [(at.to_string(), "live".into(), ReminderKind::LiveNow)]
    );
    assert_eq!(r[0].offset, -mins(10));
    assert!(reminders_for(&e, &o, o.ends_at).is_empty());
}

#[test]
fn no_reminders_configured_means_none() {
    let e = event("Europe/Berlin", "30m", "{ once: 2026-12-10T19:00 }", "");
    let o = next_occurrence(&e, ts("2026-01-01T00:00:00Z"), None).unwrap();
    assert!(reminders_for(&e, &o, ts("2026-12-10T17:59:00Z")).is_empty());
}
