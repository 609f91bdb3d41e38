//! Every transcript next to a flow in tests/data and examples/ passes.

use std::collections::HashMap;
use std::path::Path;

use volley_flow::transcript;

use crate::support::*;

fn run_dir(dir: &Path) -> usize {
    let flows: HashMap<String, volley_flow::Flow> = files_with(dir, "yaml")
        .iter()
        .map(|p| {
            let f = load(p);
            (f.id.clone(), f)
        })
        .collect();
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in files_with(dir, "transcript") {
        let text = std::fs::read_to_string(&path).unwrap();
        let t = transcript::parse(&text)
            .unwrap_or_else(|e| panic!("{}:{}: {}", path.display(), e.line, e.message));
        let stem = path
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_string();
        let results = transcript::run(&t, |case| {
            let key = case.flow.clone().unwrap_or_else(|| stem.clone());
            flows.get(&key).ok_or_else(|| format!("no flow `{key}`"))
        });
        cases += results.len();
        if updating() && results.iter().any(|r| !r.passed()) {
            std::fs::write(&path, transcript::update(&t, &results)).unwrap();
            continue;
        }
        for r in results {
            for f in r.failures {
                failures.push(format!(
                    "{}:{}: [{}] {}",
                    path.display(),
                    f.line,
                    r.name,
                    f.message
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "transcript failures:\n{}",
        failures.join("\n")
    );
    cases
}

#[test]
fn engine_fixtures_pass() {
    let cases = run_dir(&data_dir());
    assert!(cases >= 15, "only {cases} cases ran");
}

#[test]
fn examples_pass() {
    let cases = run_dir(&examples_dir());
    assert!(cases >= 1, "no example transcripts ran");
}

#[test]
fn a_wrong_expectation_fails_with_its_line() {
    let flow = load(&data_dir().join("navigation.yaml"));
    let t = transcript::parse("=== wrong\nbot: First pick\nbuttons: Red | Green\n> Red\nbot* Second pick*\nbuttons: Green | Yellow\nvar points = 2\n").unwrap();
    let results = transcript::run(&t, |_| Ok(&flow));
    let f = &results[0].failures;
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].line, 3);
    assert!(
        f[0].message
            .contains("expected `buttons: Red | Green`, got `buttons: Red | Blue`"),
        "{}",
        f[0].message
    );
    assert_eq!(f[1].line, 7);
    assert!(
        f[1].message.contains("expected `var points = 2`, got 1"),
        "{}",
        f[1].message
    );
}

#[test]
fn a_delay_outside_its_range_fails() {
    let flow = load(&data_dir().join("details.yaml"));
    let t = transcript::parse("=== d\nbot: Hi there!\ndelay: 0ms\nbot: Which term, in years?\ndelay: 10s..20s\nbuttons: 15 | 20 | 30\n").unwrap();
    let results = transcript::run(&t, |_| Ok(&flow));
    let f = &results[0].failures;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].line, 5);
    assert!(
        f[0].message
            .starts_with("expected delay 10000ms..20000ms, got "),
        "{}",
        f[0].message
    );
}
