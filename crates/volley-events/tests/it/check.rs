//! Diagnostics: broken event files give the recorded output (codes, spans, help), the
//! example is clean, and the checked event holds what the file says.

use std::collections::BTreeSet;

use volley_events::{CueKind, MediaSource, Schedule};

use crate::support::*;

#[test]
fn diagnostics_match_fixtures() {
    let dir = data_dir().join("check");
    let mut errors = Vec::new();
    for path in files_with(&dir, "yaml") {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = volley_events::compile(&src);
        assert!(
            checked.event.is_none(),
            "{} should not compile",
            path.display()
        );
        let name = path.file_name().unwrap().to_str().unwrap();
        let rendered: String = checked
            .diagnostics
            .iter()
            .map(|d| d.render(name, &src, false))
            .collect();
        if let Err(e) = expect_file(&path.with_extension("diagnostics"), &rendered) {
            errors.push(e);
        }
        for d in &checked.diagnostics {
            let span = d
                .span
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no span: {d:?}"));
            assert!(span.end <= src.len() + 1 && d.line > 0, "{name}: {d:?}");
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

/// Every code the checker can report appears in some fixture.
#[test]
fn fixtures_cover_every_code() {
    let mut seen = BTreeSet::new();
    for path in files_with(&data_dir().join("check"), "yaml") {
        let src = std::fs::read_to_string(&path).unwrap();
        seen.extend(
            volley_events::compile(&src)
                .diagnostics
                .iter()
                .map(|d| d.code),
        );
    }
    let all = [
        "cron-never-fires",
        "duplicate-field",
        "duplicate-id",
        "duplicate-option",
        "duplicate-reminder",
        "empty-text",
        "empty-title",
        "format-version",
        "hidden-label",
        "invalid-chapters",
        "invalid-cron",
        "invalid-cue",
        "invalid-date",
        "invalid-duration",
        "invalid-field",
        "invalid-hours",
        "invalid-id",
        "invalid-media",
        "invalid-poll",
        "invalid-schedule",
        "invalid-url",
        "invalid-window",
        "no-occurrence",
        "not-applicable",
        "outside-media",
        "over-limit",
        "unknown-field",
        "unknown-timezone",
        "yaml",
    ];
    let missing: Vec<&&str> = all.iter().filter(|c| !seen.contains(**c)).collect();
    assert!(missing.is_empty(), "no fixture reports {missing:?}");
}

#[test]
fn the_example_event_is_clean() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/events/product-launch.yaml");
    let src = std::fs::read_to_string(path).unwrap();
    let checked = volley_events::compile(&src);
    assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
    let e = checked.event.unwrap();
    assert_eq!(e.id, "product-launch");
    assert_eq!(e.label, "Premiere · pre-recorded");
    assert_eq!(e.media.source, MediaSource::File("media/launch.mp4".into()));
    assert_eq!(e.media.duration, secs(90), "the length of media/launch.mp4");
    assert_eq!(e.media.chapters.len(), 3);
    assert!(matches!(e.schedule, Schedule::Recurring(_)));
    assert_eq!(e.replay_window, jiff::SignedDuration::from_hours(7 * 24));
    assert_eq!(e.registration.fields, ["name", "email"]);
    let offsets: Vec<&str> = e.reminders.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(offsets, ["24h", "1h", "5m"]);
    assert_eq!(e.timeline.len(), 5);
    let CueKind::Poll(p) = &e.timeline[1].kind else {
        panic!("a poll")
    };
    assert_eq!(
        (p.close_at, p.results_at, p.multiple),
        (secs(30), secs(30), false)
    );
}

#[test]
fn a_too_large_file_is_refused_before_parsing() {
    let src = "#".repeat(volley_events::MAX_SOURCE_BYTES + 1);
    let checked = volley_events::compile(&src);
    assert_eq!(checked.diagnostics[0].code, "too-large");
}

#[test]
fn the_label_defaults_and_can_be_reworded() {
    let e = event(
        "UTC",
        "1h",
        "{ once: 2026-12-10T19:00 }",
        "label: Avant-première · enregistrée\n",
    );
    assert_eq!(e.label, "Avant-première · enregistrée");
    assert_eq!(e.replay_label, "Replay · pre-recorded");
}

#[test]
fn event_files_are_told_apart_from_flows() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let event = std::fs::read_to_string(dir.join("events/product-launch.yaml")).unwrap();
    assert!(volley_events::is_event_source(&event));
    for flow in files_with(&dir, "yaml") {
        let src = std::fs::read_to_string(&flow).unwrap();
        assert!(!volley_events::is_event_source(&src), "{}", flow.display());
    }
}
