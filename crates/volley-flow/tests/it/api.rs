//! The engine API: state round-trips, versions, pacing, splits and runtime bounds.

use jiff::Timestamp;
use volley_flow::{Contact, Effect, EngineError, Flow, Input, Lateness, State, compile};

use crate::support::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn flow(src: &str) -> Flow {
    let c = compile(src);
    let d: Vec<String> = c
        .diagnostics
        .iter()
        .map(|d| d.render("t", src, false))
        .collect();
    c.flow.unwrap_or_else(|| panic!("{}", d.join("\n")))
}

fn text(t: &str) -> Input {
    Input::Text { text: t.into() }
}

fn messages(effects: &[Effect]) -> Vec<&volley_flow::Message> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Message(m) = e {
                Some(&**m)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn state_survives_serialisation_mid_conversation() {
    let f = load(&examples_dir().join("lead-qualification.yaml"));
    let now = ts("2026-11-21T10:00:00Z");
    let start = f.start(
        Contact {
            id: "c1".into(),
            name: Some("Ana".into()),
            ..Contact::default()
        },
        now,
        3,
    );
    let a = f.handle(&start.state, text("Acme"), now).unwrap();
    let json = serde_json::to_string(&a.state).unwrap();
    let restored: State = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, a.state);
    let direct = f.handle(&a.state, text("11-50"), now).unwrap();
    let resumed = f.handle(&restored, text("11-50"), now).unwrap();
    assert_eq!(direct.effects, resumed.effects);
    assert_eq!(direct.state, resumed.state);
}

#[test]
fn a_state_only_runs_on_the_version_it_started_on() {
    let v1 =
        flow("volley: 1\nid: v\ntitle: V\nsteps:\n  - ask: text\n    say: Name?\n    save: name\n");
    let v2 = flow(
        "volley: 1\nid: v\ntitle: V\nsteps:\n  - ask: text\n    say: Your name?\n    save: name\n",
    );
    assert_ne!(v1.version, v2.version);
    let s = v1
        .start(Contact::default(), ts("2026-01-01T00:00:00Z"), 1)
        .state;
    let err = v2
        .handle(&s, text("x"), ts("2026-01-01T00:00:00Z"))
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongFlow { .. }), "{err}");
    let mut old = s.clone();
    old.format = 99;
    assert_eq!(
        v1.handle(&old, text("x"), ts("2026-01-01T00:00:00Z"))
            .unwrap_err(),
        EngineError::Format(99)
    );
}

#[test]
fn pacing_follows_length_with_bounds_and_never_delays_the_first_message() {
    let f = flow(
        r#"volley: 1
id: p
title: P
pacing: { wpm: 120, min: 500ms, max: 3s }
steps:
  - say: First message is immediate even though it is rather long for a greeting.
  - say: Two words.
  - say: This message has exactly ten words in it, believe me.
  - say: "A very long message that would take far too long to type at this speed, so the maximum applies and caps the delay for the participant."
  - say: Exact.
    delay: 1.5s
  - say: Untyped.
    typing: false
  - ask: text
    say: Jitter?
    delay: 2s..5s
    save: x
"#,
    );
    let t = f.start(Contact::default(), ts("2026-01-01T00:00:00Z"), 42);
    let d: Vec<(u64, bool)> = messages(&t.effects)
        .iter()
        .map(|m| (m.delay_ms, m.typing))
        .collect();
    assert_eq!(d[0], (0, false), "first message is immediate");
    assert_eq!(d[1], (1000, true), "2 words at 120 wpm = 1s");
    assert_eq!(d[2], (3000, true), "10 words = 5s, capped at max 3s");
    assert_eq!(d[3], (3000, true), "long messages are capped");
    assert_eq!(d[4], (1500, true), "explicit delay");
    assert_eq!(
        d[5],
        (500, false),
        "typing off still paces, without the indicator"
    );
    assert!(
        (2000..=5000).contains(&d[6].0),
        "jitter within range: {:?}",
        d[6]
    );
    let again = f.start(Contact::default(), ts("2026-01-01T00:00:00Z"), 42);
    assert_eq!(
        messages(&again.effects)[6].delay_ms,
        d[6].0,
        "same seed, same jitter"
    );
    let spread: std::collections::HashSet<u64> = (0..20)
        .map(|seed| {
            messages(
                &f.start(Contact::default(), ts("2026-01-01T00:00:00Z"), seed)
                    .effects,
            )[6]
            .delay_ms
        })
        .collect();
    assert!(spread.len() > 5, "jitter varies with the seed: {spread:?}");
}

#[test]
fn splits_are_sticky_per_contact_and_follow_weights() {
    let f = flow(
        r#"volley: 1
id: ab
title: AB
steps:
  - split:
      - { weight: 3, then: a, name: A }
      - { weight: 1, then: b, name: B }
  - id: a
    end: a
  - id: b
    end: b
"#,
    );
    let arm = |id: &str, seed: u64| {
        let t = f.start(
            Contact {
                id: id.into(),
                ..Contact::default()
            },
            ts("2026-01-01T00:00:00Z"),
            seed,
        );
        t.effects
            .iter()
            .find_map(|e| {
                if let Effect::Split { arm, .. } = e {
                    Some(arm.clone())
                } else {
                    None
                }
            })
            .unwrap()
    };
    for id in ["x", "y", "z"] {
        assert_eq!(arm(id, 1), arm(id, 999), "sticky for {id}");
    }
    let a = (0..2000)
        .filter(|i| arm(&format!("contact-{i}"), 0) == "A")
        .count();
    assert!((1400..1600).contains(&a), "75% expected, got {a}/2000");
}

#[test]
fn recursion_through_sub_flows_is_stopped_not_crashed() {
    let f = flow(
        r#"volley: 1
id: rec
title: Recursion
subflows:
  again:
    steps:
      - call: again
steps:
  - call: again
  - say: never
"#,
    );
    let t = f.start(Contact::default(), ts("2026-01-01T00:00:00Z"), 1);
    assert!(t.state.is_ended());
    assert!(
        t.effects.iter().any(
            |e| matches!(e, Effect::Error { message, .. } if message.contains("nested deeper"))
        )
    );
    assert!(matches!(t.effects.last(), Some(Effect::End { outcome }) if outcome == "error"));
}

#[test]
fn an_early_timeout_is_rejected_and_changes_nothing() {
    let f = load(&data_dir().join("time.yaml"));
    let now = ts("2026-03-06T22:00:00Z");
    let t = f.start(Contact::default(), now, 1);
    let early = f.handle(&t.state, Input::Timeout, now).unwrap();
    assert!(matches!(&early.effects[..], [Effect::Rejected { code, .. }] if code == "not-due"));
    assert_eq!(early.state, t.state);
    let due = f
        .handle(&t.state, Input::Timeout, ts("2026-03-06T22:10:00Z"))
        .unwrap();
    assert!(due.state.is_ended());
}

#[test]
fn acknowledgements_record_text_version_and_time() {
    let f = load(&data_dir().join("questions.yaml"));
    let now = ts("2026-11-21T10:00:00Z");
    let mut s = f.start(Contact::default(), now, 1).state;
    for a in [
        "Al",
        "12",
        "a@b.co",
        "+31612345678",
        "x.com",
        "2026-11-22",
        "2026-12-01 to 2026-12-02",
        "1, 2",
        "3",
        "5",
        "no",
    ] {
        s = f.handle(&s, text(a), now).unwrap().state;
    }
    s = f.handle(&s, Input::Skip, now).unwrap().state;
    let later = ts("2026-11-21T10:05:00Z");
    let t = f
        .handle(
            &s,
            Input::Choice {
                values: vec!["privacy".into(), "terms".into()],
            },
            later,
        )
        .unwrap();
    let ack = t
        .effects
        .iter()
        .find_map(|e| {
            if let Effect::Acknowledge { items, at, .. } = e {
                Some((items, at))
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(*ack.1, later);
    assert_eq!(ack.0[0].id, "terms");
    assert_eq!(ack.0[0].text, "I accept the **terms**.");
    assert_eq!(
        ack.0[0].version,
        volley_flow::content_hash("I accept the **terms**.")
    );
}

#[test]
fn effects_have_a_stable_json_shape() {
    let f = load(&data_dir().join("questions.yaml"));
    let t = f.start(Contact::default(), ts("2026-11-21T10:00:00Z"), 1);
    let json: Vec<serde_json::Value> = t
        .effects
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(
        json[0],
        serde_json::json!({"type": "enter", "step": "nick"})
    );
    assert_eq!(json[1]["type"], "message");
    assert_eq!(json[1]["text"], "Nickname?");
    assert_eq!(json[2]["type"], "ask");
    assert_eq!(json[2]["input"], "text");
    assert_eq!(json[2]["min_length"], 2);
    assert_eq!(
        json[2]["can_back"],
        serde_json::Value::Null,
        "no back before the first answer"
    );
    for e in &t.effects {
        let back: Effect = serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap();
        assert_eq!(&back, e);
    }
}

#[test]
fn oversized_and_unexpected_inputs_are_rejected_without_change() {
    let f = load(&data_dir().join("questions.yaml"));
    let now = ts("2026-11-21T10:00:00Z");
    let s = f.start(Contact::default(), now, 1).state;
    for input in [
        text(&"x".repeat(volley_flow::MAX_INPUT_BYTES + 1)),
        Input::Choice {
            values: vec!["a".into(); volley_flow::MAX_CHOICES + 1],
        },
        Input::Resume,
        Input::HttpResponse {
            status: 200,
            body: serde_json::Value::Null,
        },
        Input::Jump {
            step: "nick".into(),
            vars: [("not a name".to_string(), serde_json::json!(1))].into(),
        },
    ] {
        let t = f.handle(&s, input.clone(), now).unwrap();
        assert!(
            matches!(&t.effects[..], [Effect::Rejected { .. }]),
            "{input:?} → {:?}",
            t.effects
        );
        assert_eq!(t.state, s, "{input:?} changed the state");
    }
}

#[test]
fn rendered_messages_are_safe_html() {
    let f = load(&data_dir().join("logic.yaml"));
    let contact = Contact {
        name: Some("<img src=x onerror=alert(1)> [x](javascript:alert(1))".into()),
        ..Contact::default()
    };
    let t = f.start(contact, ts("2026-01-01T00:00:00Z"), 1);
    let last = messages(&t.effects).last().unwrap().text.clone().unwrap();
    let html = volley_flow::markdown::to_html(&last);
    assert!(!html.contains("<img") && !html.contains("href"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
}

fn ended_with(effects: &[Effect], outcome: &str) -> bool {
    matches!(effects, [Effect::End { outcome: o }] if o == outcome)
}

#[test]
fn expire_ends_the_conversation_in_every_state_but_ended() {
    let f = load(&data_dir().join("lateness.yaml"));
    assert_eq!(f.expire_after_ms(), Some(30 * 86_400_000));
    let now = ts("2026-11-20T10:00:00Z");
    let start = f.start(Contact::default(), now, 1).state;
    let pick = |value: &str| {
        f.handle(
            &start,
            Input::Choice {
                values: vec![value.into()],
            },
            now,
        )
        .unwrap()
        .state
    };
    // At a question, a wait, with a person, during an HTTP call.
    for state in [start.clone(), pick("skip"), pick("person"), pick("order")] {
        let t = f.handle(&state, Input::Expire, now).unwrap();
        assert!(ended_with(&t.effects, "expired"), "{:?}", t.effects);
        assert!(t.state.is_ended());
        let again = f.handle(&t.state, Input::Expire, now).unwrap();
        assert!(matches!(&again.effects[..], [Effect::Rejected { code, .. }] if code == "ended"));
        assert_eq!(again.state, t.state);
    }
}

#[test]
fn late_follows_the_wait_policy_and_is_never_early() {
    let f = load(&data_dir().join("lateness.yaml"));
    let now = ts("2026-11-20T10:00:00Z");
    let start = f.start(Contact::default(), now, 1).state;
    let wait = |value: &str| {
        let t = f
            .handle(
                &start,
                Input::Choice {
                    values: vec![value.into()],
                },
                now,
            )
            .unwrap();
        let (until, late) = t
            .effects
            .iter()
            .find_map(|e| match e {
                Effect::Wait { until, late, .. } => Some((*until, *late)),
                _ => None,
            })
            .expect("a wait");
        assert_eq!(t.state.wait_lateness(&f), Some(late));
        (t.state, until, late)
    };

    // `late: skip`: one minute, then `on_late`.
    let (s, until, late) = wait("skip");
    assert_eq!(late, Lateness::Expire { after_ms: 60_000 });
    let early = f.handle(&s, Input::Late, now).unwrap();
    assert!(matches!(&early.effects[..], [Effect::Rejected { code, .. }] if code == "not-due"));
    assert_eq!(early.state, s);
    let on_time = until
        .checked_add(jiff::SignedDuration::from_secs(60))
        .unwrap();
    assert!(!late.is_late(until, on_time));
    assert_eq!(late.resume_input(until, on_time), Input::Resume);
    let too_late = late.late_from(until).unwrap();
    assert_eq!(too_late, ts("2026-11-21T08:01:00.001Z"));
    assert_eq!(late.resume_input(until, too_late), Input::Late);
    let t = f.handle(&s, Input::Late, too_late).unwrap();
    assert!(
        t.effects
            .iter()
            .any(|e| matches!(e, Effect::Enter { step } if step == "missed"))
    );

    // `late: {expire: 2h}` without `on_late`: the conversation expires.
    let (s, until, late) = wait("expire");
    assert_eq!(late.after_ms(), Some(7_200_000));
    let t = f.handle(&s, Input::Late, until).unwrap();
    assert!(ended_with(&t.effects, "expired"), "{:?}", t.effects);

    // `late: fire`: never late; `late` is refused, `resume` works.
    let (s, until, late) = wait("fire");
    assert_eq!(late, Lateness::Fire);
    assert!(!late.is_late(until, ts("2030-01-01T00:00:00Z")));
    assert_eq!(late.late_from(until), None);
    let t = f.handle(&s, Input::Late, until).unwrap();
    assert!(matches!(&t.effects[..], [Effect::Rejected { code, .. }] if code == "never-late"));
    assert_eq!(t.state, s);

    // Late makes no sense anywhere but at a wait.
    let t = f.handle(&start, Input::Late, now).unwrap();
    assert!(matches!(&t.effects[..], [Effect::Rejected { .. }]));
    assert_eq!(t.state, start);
}

#[test]
fn the_wait_effect_carries_its_lateness_in_json() {
    let f = load(&data_dir().join("lateness.yaml"));
    let now = ts("2026-11-20T10:00:00Z");
    let s = f.start(Contact::default(), now, 1).state;
    let t = f
        .handle(
            &s,
            Input::Choice {
                values: vec!["expire".into()],
            },
            now,
        )
        .unwrap();
    let wait = t
        .effects
        .iter()
        .find(|e| matches!(e, Effect::Wait { .. }))
        .unwrap();
    assert_eq!(
        serde_json::to_value(wait).unwrap(),
        serde_json::json!({
            "type": "wait",
            "step": "expire",
            "until": "2026-11-20T12:00:00Z",
            "late": {"policy": "expire", "after_ms": 7_200_000},
        })
    );
    // Older log entries without `late` read as `fire`.
    let old: Effect = serde_json::from_value(
        serde_json::json!({"type": "wait", "step": "w", "until": "2026-01-01T00:00:00Z"}),
    )
    .unwrap();
    assert!(matches!(
        old,
        Effect::Wait {
            late: Lateness::Fire,
            ..
        }
    ));
    for input in [Input::Late, Input::Expire] {
        let json = serde_json::to_value(&input).unwrap();
        assert_eq!(serde_json::from_value::<Input>(json).unwrap(), input);
    }
    assert_eq!(
        serde_json::to_value(Input::Late).unwrap(),
        serde_json::json!({"type": "late"})
    );
}

#[test]
fn compiled_flows_expose_calendars_quiet_hours_and_zones() {
    let f = load(&data_dir().join("quiet.yaml"));
    let names: Vec<&str> = f.calendars().map(|(n, _)| n).collect();
    assert_eq!(names, ["kolkata", "mornings"]);
    assert_eq!(f.calendar("kolkata").unwrap().timezone(), "Asia/Kolkata");
    assert!(f.calendar("nope").is_none());
    assert_eq!(f.timezone(), Some("Europe/Berlin"));
    assert_eq!(f.expire_after_ms(), None);
    let q = f.quiet_hours().expect("quiet hours");
    // The server defers its own sends in the contact's zone, else the flow's.
    let ny = Contact {
        timezone: Some("America/New_York".into()),
        ..Contact::default()
    };
    let zone = f.contact_zone(&ny);
    assert_eq!(
        q.defer(ts("2026-11-21T03:00:00Z"), &zone), // 22:00 EST
        ts("2026-11-21T13:00:00Z")                  // 08:00 EST
    );
    let nowhere = Contact {
        timezone: Some("Mars/Olympus".into()),
        ..Contact::default()
    };
    assert_eq!(
        q.defer(ts("2026-11-20T22:00:00Z"), &f.contact_zone(&nowhere)), // 23:00 Berlin
        ts("2026-11-21T07:00:00Z")
    );
    let plain = load(&data_dir().join("time.yaml"));
    assert!(plain.quiet_hours().is_none());
    assert_eq!(plain.calendars().count(), 0);
}

#[test]
fn calendar_functions_fail_softly_at_run_time() {
    let f = flow(
        r#"volley: 1
id: cal
title: Cal
calendars:
  support: { timezone: UTC, hours: { mon-fri: "09:00-17:00" } }
steps:
  - set:
      name: "'supp' ~ 'ort'"
      wrong: "'nope'"
  - say: "{{ is_open(name) }} {{ next_open(wrong) }}"
  - say: "{{ local_time(none) | default('soon') }} {{ local_time(now, '%H:%M', 'Asia/Kolkata') }}"
  - say: "{{ local_time('yesterday') }}"
"#,
    );
    let t = f.start(Contact::default(), ts("2026-01-05T09:30:00Z"), 1);
    let errors: Vec<&str> = t
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Error { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("no calendar named `nope`"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("is not a date-time"), "{}", errors[1]);
    let texts: Vec<String> = messages(&t.effects)
        .iter()
        .filter_map(|m| m.text.clone())
        .collect();
    assert_eq!(texts[0], "");
    assert_eq!(texts[1], "soon 15:00");
}
