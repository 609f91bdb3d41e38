//! Cue firing windows, replay offsets and what is open at a position.

use volley_events::{CueKind, active_at, cues_between, replay_cues};

use crate::support::*;

fn example() -> volley_events::Event {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/events/product-launch.yaml"),
    )
    .unwrap();
    compile(&src)
}

/// The cues' kinds with their offsets in seconds (the example video lasts 90s).
fn kinds<'a>(cues: impl Iterator<Item = &'a volley_events::Cue>) -> Vec<String> {
    cues.map(|c| match &c.kind {
        CueKind::Say(_) => format!("say@{}", c.at.as_secs()),
        CueKind::Poll(p) => format!("poll:{}@{}", p.id, c.at.as_secs()),
        CueKind::Offer(o) => format!("offer:{}@{}", o.id, c.at.as_secs()),
        CueKind::Qa { .. } => format!("qa@{}", c.at.as_secs()),
        CueKind::Flow(f) => format!("flow:{f}@{}", c.at.as_secs()),
    })
    .collect()
}

#[test]
fn cues_fire_in_half_open_windows_in_order() {
    let e = example();
    assert_eq!(
        kinds(cues_between(&e, secs(0), secs(20))),
        ["say@5"],
        "a cue at 20s is not in 0..20s"
    );
    assert_eq!(
        kinds(cues_between(&e, secs(20), secs(53))),
        ["poll:fav@20", "offer:early-bird@32", "qa@42"]
    );
    assert_eq!(
        kinds(cues_between(&e, secs(53), secs(54))),
        ["flow:product-quiz@53"]
    );
    assert_eq!(
        kinds(cues_between(&e, secs(54), secs(999))),
        Vec::<String>::new()
    );
    assert_eq!(cues_between(&e, secs(0), secs(90)).count(), 5);
}

#[test]
fn cues_at_the_same_offset_keep_the_order_written() {
    let e = event(
        "UTC",
        "30m",
        "{ once: 2026-12-10T19:00 }",
        "timeline:\n  - { at: 5m, say: second }\n  - { at: 1m, say: first }\n  - { at: 5m, say: third }\n",
    );
    let said: Vec<&str> = cues_between(&e, mins(0), mins(30))
        .map(|c| match &c.kind {
            CueKind::Say(t) => t.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(said, ["first", "second", "third"]);
}

#[test]
fn replays_fire_the_same_cues_at_the_same_offsets() {
    let e = example();
    for (from, to) in [(0, 20), (20, 53), (19, 43), (0, 90)] {
        assert_eq!(
            kinds(replay_cues(&e, secs(from), secs(to))),
            kinds(cues_between(&e, secs(from), secs(to)))
        );
    }
    // Seeking back fires nothing.
    assert_eq!(replay_cues(&e, secs(64), secs(10)).count(), 0);
}

#[test]
fn polls_offers_and_qa_are_open_in_their_windows() {
    let e = example();
    let at = |t| active_at(&e, secs(t));
    let s = at(19);
    assert!(s.polls_open.is_empty() && s.offers.is_empty() && !s.qa_open);
    let s = at(20);
    assert_eq!(s.polls_open.len(), 1);
    assert!(s.polls_showing_results.is_empty());
    let s = active_at(&e, secs(30) - jiff::SignedDuration::from_millis(1));
    assert_eq!(s.polls_open.len(), 1);
    let s = at(30);
    assert!(s.polls_open.is_empty());
    assert_eq!(s.polls_showing_results[0].id, "fav");
    let s = at(32);
    assert_eq!(s.offers[0].id, "early-bird");
    let s = at(42);
    assert!(s.qa_open && s.offers.len() == 1);
    let s = at(64);
    assert!(s.offers.is_empty() && s.qa_open);
    let s = at(75);
    assert!(!s.qa_open);
    assert_eq!(s.polls_showing_results.len(), 1, "results stay to the end");
}

#[test]
fn windows_default_to_the_end_of_the_media() {
    let e = event(
        "UTC",
        "30m",
        "{ once: 2026-12-10T19:00 }",
        "timeline:\n  - at: 1m\n    poll: { id: p, question: Q, options: [a, b] }\n  - { at: 2m, qa: {} }\n",
    );
    let s = active_at(&e, mins(29));
    assert_eq!(s.polls_open.len(), 1);
    assert!(s.qa_open);
    let s = active_at(&e, mins(30));
    assert!(s.polls_open.is_empty() && !s.qa_open);
    assert_eq!(s.polls_showing_results.len(), 1);
}
