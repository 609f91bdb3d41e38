//! Property tests: scheduling never returns a start before it was asked for, and
//! occurrences are sorted and never on blackout dates or outside the hours.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use volley_events::{Schedule, next_occurrence, occurrences};

use crate::support::*;

const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Apia",
    "America/Sao_Paulo",
    "UTC",
];

fn schedule() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0 19 * * 2,4",
            "30 2 * * *",
            "*/20 * * * *",
            "0 12 L * *",
            "15 1 * * 0",
            "0 9 29 2 *",
        ])
        .prop_map(|c| format!("{{ recurring: {{ cron: \"{c}\" }} }}")),
        prop::sample::select(vec!["5m", "15m", "30m", "1h", "3h"])
            .prop_map(|e| format!("{{ just_in_time: {{ every: {e} }} }}")),
        (0u8..24, 0u8..60, 1u8..128).prop_map(|(h, m, days)| {
            let names: Vec<&str> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .enumerate()
                .filter(|(i, _)| days & (1 << i) != 0)
                .map(|(_, d)| *d)
                .collect();
            format!(
                "{{ local: {{ at: \"{h:02}:{m:02}\", days: [{}] }} }}",
                names.join(", ")
            )
        }),
        (0i64..2 * 365 * 24 * 60)
            .prop_map(|m| format!("{{ once: \"{}\" }}", base() + SignedDuration::from_mins(m))),
    ]
}

fn base() -> Timestamp {
    ts("2026-01-01T00:00:00Z")
}

fn extras() -> impl Strategy<Value = String> {
    let hours = prop_oneof![
        Just(String::new()),
        (
            prop::sample::select(ZONES),
            prop::sample::select(vec![
                "{ mon-fri: \"09:00-21:00\" }",
                "{ daily: \"22:00-02:00\" }",
                "{ sat: \"02:00-03:30\", sun: 24h }",
            ])
        )
            .prop_map(|(z, h)| format!(
                "hours: {{ timezone: {z}, hours: {h}, closed: [\"2026-12-24..2026-12-26\"] }}\n"
            )),
    ];
    let blackout = prop::collection::vec(0i64..800, 0..6).prop_map(|days| {
        if days.is_empty() {
            return String::new();
        }
        let dates: Vec<String> = days
            .iter()
            .map(|d| {
                let date = jiff::civil::date(2026, 1, 1)
                    .checked_add(jiff::Span::new().days(*d))
                    .unwrap();
                format!("\"{date}\"")
            })
            .collect();
        format!("blackout: [{}]\n", dates.join(", "))
    });
    (hours, blackout).prop_map(|(h, b)| h + &b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scheduling_never_fires_early_nor_when_closed(
        zone_name in prop::sample::select(ZONES),
        viewer in prop::sample::select(ZONES),
        schedule in schedule(),
        duration in prop::sample::select(vec!["10m", "42m30s", "2h"]),
        extras in extras(),
        after_min in 0i64..2 * 365 * 24 * 60,
    ) {
        let src = format!(
            "volley: 1\nevent: p\ntitle: P\nmedia: {{ file: v.mp4, duration: {duration} }}\n\
             timezone: {zone_name}\nschedule: {schedule}\n{extras}"
        );
        let checked = volley_events::compile(&src);
        // A `once` that falls on a closed slot is refused at check time; skip those.
        let Some(event) = checked.event else {
            prop_assert!(checked.diagnostics.iter().all(|d| d.code == "no-occurrence"), "{src}\n{:?}", checked.diagnostics);
            return Ok(());
        };
        let viewer = zone(viewer);
        let after = base() + SignedDuration::from_mins(after_min);
        let next = next_occurrence(&event, after, Some(&viewer));
        if let Some(o) = &next {
            prop_assert!(o.starts_at >= after, "{src}\n{o:?} before {after}");
        }
        let until = after + SignedDuration::from_hours(14 * 24);
        let all = occurrences(&event, after, until, Some(&viewer));
        prop_assert!(all.windows(2).all(|w| w[0].starts_at < w[1].starts_at), "{src}\nnot sorted");
        let slot_zone = match event.schedule {
            Schedule::Local { .. } => viewer.clone(),
            _ => event.zone().clone(),
        };
        for o in &all {
            prop_assert!(o.starts_at >= after && o.starts_at < until);
            let date = o.starts_at.to_zoned(slot_zone.clone()).date();
            prop_assert!(
                !event.blackout.iter().any(|(s, e)| *s <= date && date <= *e),
                "{src}\n{o:?} on a blackout date"
            );
            if let Some(h) = &event.hours {
                prop_assert!(h.is_open_throughout(o.starts_at, o.ends_at), "{src}\n{o:?} outside hours");
            }
        }
        if let Some(first) = all.first() {
            prop_assert_eq!(next.as_ref(), Some(first), "{}", src);
        }
    }
}
