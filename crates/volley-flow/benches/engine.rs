//! Engine throughput (inputs handled per second) and `check` time on a large flow.
//!
//! Run: `cargo bench -p volley-flow --bench engine`. Figures go to docs/BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use volley_flow::{Contact, Effect, Flow, Input, State};

fn load(name: &str) -> Flow {
    let path = format!("{}/../../examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    volley_flow::compile(&src)
        .flow
        .unwrap_or_else(|| panic!("{path} does not compile"))
}

fn contact() -> Contact {
    Contact {
        id: "bench".into(),
        name: Some("Ana Souza".into()),
        ..Contact::default()
    }
}

/// Answers every question of a started conversation with sample answers (resuming
/// hand-offs and waits) until it ends; returns the inputs handled.
fn play(flow: &Flow, start: volley_flow::Turn, now: Timestamp) -> usize {
    let mut state: State = start.state;
    let mut effects = start.effects;
    let mut inputs = 0;
    for k in 0..200 {
        let input = match effects.iter().rev().find_map(|e| {
            if let Effect::Ask(q) = e {
                Some(q)
            } else {
                None
            }
        }) {
            Some(q) => volley_flow::sample::answer(q, k),
            None if !state.is_ended()
                && effects
                    .iter()
                    .any(|e| matches!(e, Effect::Handoff { .. } | Effect::Wait { .. })) =>
            {
                Input::Resume
            }
            None => break,
        };
        let at = if matches!(input, Input::Resume) {
            now.checked_add(jiff::SignedDuration::from_hours(24 * 30))
                .unwrap()
        } else {
            now
        };
        let turn = flow.handle(&state, input, at).unwrap();
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
        let inputs = play(&flow, flow.start(contact(), now, 0), now);
        assert!(inputs >= 4, "{name}: only {inputs} inputs");
        // A step is one input handled (templates, validation, effects); starting the
        // conversation is measured on its own below.
        group.throughput(Throughput::Elements(inputs as u64));
        group.bench_function(format!("{name}: inputs ({inputs} per conversation)"), |b| {
            b.iter_batched(
                || flow.start(contact(), now, 0),
                |t| play(&flow, t, now),
                BatchSize::SmallInput,
            )
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}: start"), |b| {
            b.iter(|| flow.start(contact(), now, 0))
        });
    }
    group.finish();
}

include!("gen.rs");

fn check(c: &mut Criterion) {
    let src = generated_flow(10_000);
    let checked = volley_flow::check(&src);
    assert!(
        checked.errors() == 0 && checked.diagnostics.is_empty(),
        "{:?}",
        checked.diagnostics.first()
    );
    let mut group = c.benchmark_group("check");
    group.sample_size(20);
    group.bench_function("generated flow, 10000 steps", |b| {
        b.iter(|| volley_flow::check(black_box(&src)))
    });
    group.finish();
}

criterion_group!(benches, engine, check);
criterion_main!(benches);
