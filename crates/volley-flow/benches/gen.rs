// Shared by the engine benchmark and profiling runs.
/// A realistic 10,000-step flow: messages, questions of several types, calculations,
/// branches and templates.
pub fn generated_flow(steps: usize) -> String {
    let mut s = String::from(
        "volley: 1\nid: generated\ntitle: Generated\nvariables:\n  score: 0\nsteps:\n",
    );
    let mut i = 0;
    while i < steps {
        let n = i;
        s.push_str(&format!("  - id: s{n}\n"));
        match n % 5 {
            0 => s.push_str(&format!("    say: \"Step {n}: hello {{{{ contact.first_name | default('you') }}}}, score {{{{ score }}}}.\"\n")),
            1 => s.push_str(&format!("    ask: number\n    say: Question {n}?\n    save: q{n}\n    min: 0\n    max: 100\n")),
            2 => s.push_str(&format!("    set:\n      score: \"score + (q{} or 0) * 2\"\n", n - 1)),
            3 => s.push_str(&format!("    ask: choice\n    say: Pick for {n}\n    save: c{n}\n    options: [Red, Green, Blue]\n")),
            _ => s.push_str(&format!(
                "    branch:\n      - if: c{} == \"Red\" and score > 10\n        then: s{}\n    else: s{}\n",
                n - 1,
                n + 1,
                n + 1
            )),
        }
        i += 1;
    }
    s.push_str(&format!("  - id: s{steps}\n    end: done\n"));
    s
}

