//! Engine throughput (inputs handled per second) and `check` time on a large flow.
//!
//! Run: `cargo bench -p volley-flow --bench engine`. Figures go to docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use volley_flow::{Contact, Effect, Flow, Input, State};

fn load(name: &str) -> Flow {
    let path = format!("{}/../../examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    volley_flow::compile(&src)
        .flow
        .unwrap_or_else(|| panic!("{path} does not compile"))
}

/// Plays one whole conversation with sample answers; returns the inputs handled.
fn play(flow: &Flow, now: Timestamp, variant: usize) -> usize {
    let contact = Contact {
        id: "bench".into(),
        name: Some("Ana Souza".into()),
        ..Contact::default()
    };
    let t = flow.start(contact, now, variant as u64);
    let mut state: State = t.state;
    let mut effects = t.effects;
    let mut inputs = 0;
    for k in 0..200 {
        let Some(q) = effects.iter().rev().find_map(|e| {
            if let Effect::Ask(q) = e {
                Some(q.clone())
            } else {
                None
            }
        }) else {
            match effects
                .iter()
                .find(|e| matches!(e, Effect::Handoff { .. } | Effect::Wait { .. }))
            {
                Some(_) if !state.is_ended() => {
                    let far = now
                        .checked_add(jiff::SignedDuration::from_hours(24 * 30))
                        .unwrap();
                    let turn = flow.handle(&state, Input::Resume, far).unwrap();
                    state = turn.state;
                    effects = turn.effects;
                    inputs += 1;
                    continue;
                }
                _ => break,
            }
        };
        let turn = flow
            .handle(&state, volley_flow::sample::answer(&q, k + variant), now)
            .unwrap();
        state = black_box(turn.state);
        effects = turn.effects;
        inputs += 1;
    }
    inputs
}

fn engine(c: &mut Criterion) {
    let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let mut group = c.benchmark_group("engine");
    for name in ["product-quiz", "mortgage-calculator"] {
        let flow = load(name);
        let inputs = play(&flow, now, 0);
        assert!(inputs >= 4, "{name}: only {inputs} inputs");
        group.throughput(Throughput::Elements(inputs as u64));
        group.bench_function(format!("{name} ({inputs} inputs per conversation)"), |b| {
            b.iter(|| play(&flow, now, 0))
        });
    }
    group.finish();
}

include!("gen.rs");

fn check(c: &mut Criterion) {
    let src = generated_flow(10_000);
    let checked = volley_flow::compile(&src);
    assert!(
        checked.flow.is_some() && checked.diagnostics.is_empty(),
        "{:?}",
        checked.diagnostics.first()
    );
    let mut group = c.benchmark_group("check");
    group.sample_size(20);
    group.bench_function("generated flow, 10000 steps", |b| {
        b.iter(|| volley_flow::compile(black_box(&src)))
    });
    group.finish();
}

criterion_group!(benches, engine, check);
criterion_main!(benches);
