//! `volley test`: runs transcript files and reports failures with file:line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use volley_flow::Flow;
use volley_flow::transcript;

pub fn run(paths: &[PathBuf], update: bool) -> anyhow::Result<ExitCode> {
    let transcripts = crate::files::find(paths, crate::files::is_transcript)?;
    if transcripts.is_empty() {
        anyhow::bail!(
            "no transcripts (*.transcript) found in {}",
            crate::files::show_paths(paths)
        );
    }
    // Flows live next to their transcripts (or one directory up, for `tests/` folders).
    let mut flows: HashMap<PathBuf, Result<Flow, String>> = HashMap::new();
    let mut by_key: HashMap<String, PathBuf> = HashMap::new();
    let mut dirs: Vec<PathBuf> = transcripts
        .iter()
        .filter_map(|t| t.parent().map(Path::to_path_buf))
        .collect();
    dirs.extend(
        dirs.clone()
            .iter()
            .filter_map(|d| d.parent().map(Path::to_path_buf)),
    );
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !crate::files::is_flow_file(&path) || flows.contains_key(&path) {
                continue;
            }
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|src| {
                    let checked = volley_flow::compile(&src);
                    checked.flow.ok_or_else(|| {
                        format!(
                            "{} has errors; run `volley check {}`",
                            path.display(),
                            path.display()
                        )
                    })
                });
            if let Ok(f) = &loaded {
                by_key.entry(f.id.clone()).or_insert_with(|| path.clone());
            }
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                by_key
                    .entry(stem.to_string())
                    .or_insert_with(|| path.clone());
            }
            flows.insert(path, loaded);
        }
    }

    let (mut passed, mut failed) = (0usize, 0usize);
    for path in &transcripts {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)?;
        let parsed = match transcript::parse(&text) {
            Ok(t) => t,
            Err(e) => {
                println!("{name}:{}: {}", e.line, e.message);
                failed += 1;
                continue;
            }
        };
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let default_key = stem.split('.').next().unwrap_or(stem).to_string();
        let results = transcript::run(&parsed, |case| {
            let key = case.flow.clone().unwrap_or_else(|| default_key.clone());
            let flow_path = by_key.get(&key).ok_or_else(|| {
                format!("no flow `{key}` next to this transcript (set `flow:` to its id)")
            })?;
            flows[flow_path].as_ref().map_err(|e| e.clone())
        });
        for r in &results {
            if r.passed() {
                passed += 1;
            } else {
                failed += 1;
                for f in &r.failures {
                    println!("{name}:{}: [{}] {}", f.line, r.name, f.message);
                }
            }
        }
        if update && results.iter().any(|r| !r.passed()) {
            std::fs::write(path, transcript::update(&parsed, &results))?;
            println!("{name}: updated");
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed > 0 && !update {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
