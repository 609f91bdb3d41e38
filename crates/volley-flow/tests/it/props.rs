//! Property tests: the engine never panics, states round-trip, check never panics,
//! waits never end before they start.

use jiff::Timestamp;
use proptest::prelude::*;
use volley_flow::{Contact, Effect, Flow, Input, State};

use crate::support::*;

fn flows() -> &'static Vec<Flow> {
    static FLOWS: std::sync::OnceLock<Vec<Flow>> = std::sync::OnceLock::new();
    FLOWS.get_or_init(|| {
        let mut v: Vec<Flow> = files_with(&data_dir(), "yaml")
            .iter()
            .map(|p| load(p))
            .collect();
        v.extend(files_with(&examples_dir(), "yaml").iter().map(|p| load(p)));
        v
    })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ,.@:/+-]{0,30}",
        any::<String>(),
        Just("yes".to_string()),
        Just("1".to_string()),
        Just("2026-12-31".to_string()),
        Just("ana@example.com".to_string()),
        Just("+31612345678".to_string()),
        Just("{{ 1/0 }}".to_string()),
        Just("\u{0}\u{202e}😀".to_string()),
    ]
}

fn any_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => any_text().prop_map(|text| Input::Text { text }),
        2 => prop::collection::vec(any_text(), 0..4).prop_map(|values| Input::Choice { values }),
        1 => Just(Input::Back),
        1 => Just(Input::Skip),
        1 => Just(Input::Timeout),
        1 => Just(Input::Resume),
        1 => "[a-z_/-]{0,12}".prop_map(|step| Input::Jump { step, vars: Default::default() }),
        1 => (100u16..600, any_text()).prop_map(|(status, b)| Input::HttpResponse { status, body: serde_json::json!({"status": b, "items": [b]}) }),
        1 => any_text().prop_map(|error| Input::HttpFailed { error }),
        1 => Just(Input::Late),
        1 => Just(Input::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_never_panics_and_states_round_trip(
        which in 0usize..64,
        seed in any::<u64>(),
        inputs in prop::collection::vec((any_input(), 0u64..200_000), 0..25),
    ) {
        let flows = flows();
        let flow = &flows[which % flows.len()];
        let mut now: Timestamp = "2026-03-06T22:00:00Z".parse().unwrap();
        let contact = Contact { id: format!("c{seed}"), timezone: Some("Australia/Lord_Howe".into()), ..Contact::default() };
        let mut state = flow.start(contact, now, seed).state;
        for (input, advance_s) in inputs {
            now = now.checked_add(jiff::SignedDuration::from_secs(advance_s as i64)).unwrap();
            let turn = flow.handle(&state, input, now).unwrap();
            for e in &turn.effects {
                if let Effect::Wait { until, .. } = e {
                    prop_assert!(*until > now, "a wait ends before it starts");
                    if let Some(q) = flow.quiet_hours() {
                        let zone = flow.contact_zone(&state.contact);
                        prop_assert!(!q.is_quiet(*until, &zone), "a wait ends in quiet hours");
                    }
                }
                if let Effect::Ask(q) = e
                    && let (Some(at), Some(quiet)) = (q.timeout_at, flow.quiet_hours())
                {
                    let zone = flow.contact_zone(&state.contact);
                    prop_assert!(!quiet.is_quiet(at, &zone), "a timeout ends in quiet hours");
                }
            }
            let json = serde_json::to_string(&turn.state).unwrap();
            let back: State = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &turn.state);
            state = turn.state;
        }
    }

    #[test]
    fn check_never_panics_on_arbitrary_text(src in any::<String>()) {
        let _ = volley_flow::compile(&src);
    }

    #[test]
    fn check_never_panics_on_mutated_flows(
        which in 0usize..64,
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in "[ a-z:\\-{}\\[\\]\"'#|>\n]{0,12}",
    ) {
        let paths: Vec<_> = files_with(&data_dir(), "yaml").into_iter().chain(files_with(&examples_dir(), "yaml")).collect();
        let src = std::fs::read_to_string(&paths[which % paths.len()]).unwrap();
        let mut bytes = src.into_bytes();
        let at = cut.index(bytes.len());
        let end = (at + len).min(bytes.len());
        bytes.splice(at..end, insert.bytes());
        if let Ok(mutated) = String::from_utf8(bytes) {
            let checked = volley_flow::compile(&mutated);
            for d in &checked.diagnostics {
                let _ = d.render("m.yaml", &mutated, false);
            }
        }
    }
}
