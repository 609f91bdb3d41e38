//! Shared helpers: building events from YAML snippets, instants, fixtures.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use volley_events::Event;

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

pub fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

pub fn zone(name: &str) -> jiff::tz::TimeZone {
    volley_flow::zone(name).unwrap()
}

/// Compiles an event file, panicking with the rendered diagnostics when it has errors.
pub fn compile(src: &str) -> Event {
    let checked = volley_events::compile(src);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .map(|d| d.render("event.yaml", src, false))
        .collect();
    checked
        .event
        .unwrap_or_else(|| panic!("does not compile:\n{}", rendered.join("\n")))
}

/// A minimal event in `timezone` with `schedule` (YAML flow mapping) and extra keys.
pub fn event(timezone: &str, duration: &str, schedule: &str, extra: &str) -> Event {
    compile(&format!(
        "volley: 1\nevent: t\ntitle: T\nmedia: {{ file: v.mp4, duration: {duration} }}\n\
         timezone: {timezone}\nschedule: {schedule}\n{extra}"
    ))
}

/// Start instants of the occurrences in `from..until`, as RFC 3339 text.
pub fn starts(event: &Event, from: &str, until: &str, viewer: Option<&str>) -> Vec<String> {
    let z = viewer.map(zone);
    volley_events::occurrences(event, ts(from), ts(until), z.as_ref())
        .iter()
        .map(|o| o.starts_at.to_string())
        .collect()
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
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

/// Compares `actual` with the file's content; rewrites it with `VOLLEY_UPDATE=1`.
pub fn expect_file(path: &Path, actual: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if std::env::var("VOLLEY_UPDATE").is_ok_and(|v| v == "1") {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    Err(format!(
        "{} differs (run with VOLLEY_UPDATE=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    ))
}
