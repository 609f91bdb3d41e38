//! Finding flow and transcript files on disk, and loading flows with readable errors.

use std::path::{Path, PathBuf};

use anyhow::Context;
use volley_flow::Flow;

pub fn is_flow_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

pub fn is_transcript(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some("transcript")
}

/// Files matching `keep` among `paths` (files as given, directories recursively), sorted.
pub fn find(paths: &[PathBuf], keep: fn(&Path) -> bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            walk(p, keep, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, keep: fn(&Path) -> bool, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            walk(&path, keep, out)?;
        } else if keep(&path) {
            out.push(path);
        }
    }
    Ok(())
}

pub fn show_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Colors on a terminal, unless NO_COLOR is set.
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Loads one flow, printing its diagnostics; fails when it has errors.
pub fn load_flow(path: &Path) -> anyhow::Result<Flow> {
    let src =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let checked = volley_flow::compile(&src);
    let name = path.display().to_string();
    for d in &checked.diagnostics {
        if d.is_error() {
            eprint!("{}", d.render(&name, &src, use_color()));
        }
    }
    checked
        .flow
        .ok_or_else(|| anyhow::anyhow!("{name} has errors; run `volley check {name}`"))
}
