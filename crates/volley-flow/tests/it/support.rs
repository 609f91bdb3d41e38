//! Shared helpers: fixture paths, expect-style comparison, loading flows.

use std::path::{Path, PathBuf};

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

pub fn updating() -> bool {
    std::env::var("VOLLEY_UPDATE").is_ok_and(|v| v == "1")
}

pub fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    v.sort();
    v
}

pub fn load(path: &Path) -> volley_flow::Flow {
    let src = std::fs::read_to_string(path).unwrap();
    let checked = volley_flow::compile(&src);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(|d| d.render("flow", &src, false))
        .collect();
    checked.flow.unwrap_or_else(|| {
        panic!(
            "{} does not compile:\n{}",
            path.display(),
            rendered.join("\n")
        )
    })
}

/// Compares `actual` with the file's content; rewrites the file when updating.
pub fn expect_file(path: &Path, actual: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if updating() {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    Err(format!(
        "{} differs (run with VOLLEY_UPDATE=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    ))
}
