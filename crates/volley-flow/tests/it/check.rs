//! `check` diagnostics on broken flows match the recorded output exactly.

use crate::support::*;

#[test]
fn diagnostics_match_fixtures() {
    let dir = data_dir().join("check");
    let mut errors = Vec::new();
    for path in files_with(&dir, "yaml") {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = volley_flow::compile(&src);
        assert!(
            checked.flow.is_none(),
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
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

#[test]
fn examples_check_clean() {
    for path in files_with(&examples_dir(), "yaml") {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = volley_flow::compile(&src);
        let d: Vec<String> = checked
            .diagnostics
            .iter()
            .map(|d| d.render("x", &src, false))
            .collect();
        assert!(
            checked.diagnostics.is_empty(),
            "{}:\n{}",
            path.display(),
            d.join("\n")
        );
    }
}

#[test]
fn every_diagnostic_has_a_location_inside_the_file() {
    for path in files_with(&data_dir().join("check"), "yaml") {
        let src = std::fs::read_to_string(&path).unwrap();
        for d in volley_flow::compile(&src).diagnostics {
            if let Some(span) = &d.span {
                assert!(span.end <= src.len() + 1, "{}: {d:?}", path.display());
                assert!(d.line > 0 && d.column > 0, "{}: {d:?}", path.display());
            }
        }
    }
}

#[test]
fn warnings_alone_do_not_fail_a_flow() {
    let src = "volley: 1\nid: w\ntitle: W\nsteps:\n  - end: done\n  - id: orphan\n    say: never\n";
    let checked = volley_flow::compile(src);
    assert!(checked.flow.is_some());
    assert_eq!((checked.errors(), checked.warnings()), (0, 1));
    assert_eq!(checked.diagnostics[0].code, "unreachable");
    assert_eq!(
        (checked.diagnostics[0].line, checked.diagnostics[0].column),
        (6, 9)
    );
}

#[test]
fn implicit_question_ids_do_not_collide() {
    let src = "volley: 1\nid: w\ntitle: W\nsteps:\n  - ask: email\n    say: Email?\n    save: email\n  - ask: email\n    say: Again?\n    save: email\n";
    let flow = volley_flow::compile(src).flow.expect("compiles");
    let ids: Vec<&str> = flow.step_ids().collect();
    assert_eq!(ids, ["email", "email-2"]);
}

#[test]
fn check_and_compile_report_the_same_diagnostics() {
    let paths = files_with(&data_dir().join("check"), "yaml")
        .into_iter()
        .chain(files_with(&examples_dir(), "yaml"));
    for path in paths {
        let src = std::fs::read_to_string(&path).unwrap();
        let (a, b) = (volley_flow::check(&src), volley_flow::compile(&src));
        assert_eq!(a.diagnostics, b.diagnostics, "{}", path.display());
        assert!(a.flow.is_none());
        assert_eq!(a.id, b.id);
    }
}
