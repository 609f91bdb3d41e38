//! The analytics benchmark (docs/BENCHMARKS.md): a database holding N conversations
//! of an example flow, each run through the real engine with sample answers (some
//! abandoned part-way) and written as the server writes its log, spread over D days;
//! a real server then aggregates them (timed: entries per second) and serves the
//! flow dashboard (timed), compared in the same run with computing the funnel by
//! rescanning the log in SQL — what a report without pre-aggregation has to do.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use sqlx::Connection;
use volley_flow::{Contact, Effect, Input, sample};

use crate::http;
use crate::server::{self, KEY, free_port, ready};

pub struct Options {
    pub volley: PathBuf,
    pub flow: PathBuf,
    pub conversations: usize,
    pub contacts: usize,
    pub days: i64,
    pub requests: usize,
}

/// 2026-11-01T00:00:00Z: the first day of generated conversations.
const BASE_MS: i64 = 1_793_491_200_000;
/// Conversations written per transaction.
const CHUNK: usize = 5_000;

/// A log row as the server writes it: kind and JSON data (volley-server's wire.rs).
fn log_row(effect: &Effect) -> (String, String) {
    match effect {
        Effect::Message(m) => (
            "message".into(),
            json!({"from": "bot", "step": m.step, "text": m.text}).to_string(),
        ),
        Effect::Ask(q) => ("ask".into(), serde_json::to_string(q).unwrap_or_default()),
        other => {
            let mut v = serde_json::to_value(other).unwrap_or_default();
            let kind = v["type"].as_str().unwrap_or("unknown").to_string();
            if let Some(o) = v.as_object_mut() {
                o.remove("type");
            }
            (kind, v.to_string())
        }
    }
}

fn input_row(input: &Input, step: &str) -> String {
    match input {
        Input::Text { text } => json!({"step": step, "text": text}),
        Input::Choice { values } => json!({"step": step, "values": values}),
        _ => json!({"action": "other"}),
    }
    .to_string()
}

/// Cheap deterministic pseudo-randomness (splitmix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rows {
    conversations: Vec<(i64, String, i64, String, String, i64, i64)>,
    events: Vec<(i64, i64, String, i64, String)>,
}

/// Runs conversation `i` through the engine: its rows.
fn conversation(flow: &volley_flow::Flow, i: usize, o: &Options, rows: &mut Rows) {
    let no = i as i64 + 1;
    let span_ms = o.days * 86_400_000;
    let mut at = BASE_MS + (i as i64 * span_ms) / o.conversations as i64;
    let started = at;
    let contact = format!("ct-{}", i % o.contacts);
    let now = |ms: i64| jiff::Timestamp::from_millisecond(ms).expect("a valid time");
    let mut turn = flow.start(
        Contact {
            id: contact.clone(),
            ..Contact::default()
        },
        now(at),
        i as u64,
    );
    let mut seq = 0;
    let mut r = mix(i as u64);
    for _ in 0..50 {
        let mut open = None;
        for e in &turn.effects {
            if let Effect::Ask(q) = e {
                open = Some(q.clone());
            }
            let (kind, data) = log_row(e);
            seq += 1;
            rows.events.push((no, seq, kind, at, data));
        }
        let Some(q) = open else { break };
        // One in ten participants leaves at each question.
        r = mix(r);
        if r.is_multiple_of(10) {
            break;
        }
        at += 5_000 + (r % 55_000) as i64;
        let input = sample::answer(&q, (r >> 8) as usize % 4);
        seq += 1;
        rows.events
            .push((no, seq, "input".into(), at, input_row(&input, &q.step)));
        match flow.handle(&turn.state, input, now(at)) {
            Ok(t) => turn = t,
            Err(_) => break,
        }
    }
    rows.conversations.push((
        no,
        format!("cv-{i}"),
        seq,
        contact,
        "active".into(),
        started,
        at,
    ));
}

async fn write(db: &mut sqlx::SqliteConnection, flow_id: &str, rows: &Rows) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    for c in &rows.conversations {
        sqlx::query(
            "INSERT INTO conversations (no, id, flow_id, flow_version, contact_id, status, last_seq, state, origin, created_at, updated_at)
             VALUES (?, ?, ?, 1, ?, ?, ?, '{}', NULL, ?, ?)",
        )
        .bind(c.0)
        .bind(&c.1)
        .bind(flow_id)
        .bind(&c.3)
        .bind(&c.4)
        .bind(c.2)
        .bind(c.5)
        .bind(c.6)
        .execute(&mut *tx)
        .await?;
    }
    for chunk in rows.events.chunks(500) {
        let values = vec!["(?, ?, ?, ?, ?, NULL, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO events (conversation, seq, kind, at, visible_at, client_id, data) VALUES {values}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(e.0)
                .bind(e.1)
                .bind(&e.2)
                .bind(e.3)
                .bind(e.3)
                .bind(&e.4);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The funnel (conversations reaching each step) and the answers by value, computed
/// by reading the log: what the dashboard costs without pre-aggregation.
async fn rescan(db: &mut sqlx::SqliteConnection, flow_id: &str) -> anyhow::Result<(f64, i64)> {
    let started = Instant::now();
    let reached: Vec<(String, i64)> = sqlx::query_as(
        "SELECT json_extract(e.data, '$.step'), COUNT(DISTINCT e.conversation)
         FROM events e JOIN conversations c ON c.no = e.conversation
         WHERE c.flow_id = ? AND e.kind = 'enter' GROUP BY 1",
    )
    .bind(flow_id)
    .fetch_all(&mut *db)
    .await?;
    let answers: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT json_extract(e.data, '$.step'), CAST(json_extract(e.data, '$.value') AS TEXT), COUNT(*)
         FROM events e JOIN conversations c ON c.no = e.conversation
         WHERE c.flow_id = ? AND e.kind = 'answer' GROUP BY 1, 2",
    )
    .bind(flow_id)
    .fetch_all(&mut *db)
    .await?;
    let secs = started.elapsed().as_secs_f64();
    Ok((secs, (reached.len() + answers.len()) as i64))
}

pub async fn run(o: Options) -> anyhow::Result<Value> {
    let source = std::fs::read_to_string(&o.flow)
        .with_context(|| format!("cannot read {}", o.flow.display()))?;
    let compiled = volley_flow::compile(&source);
    let flow = compiled.flow.context("the flow does not compile")?;
    let flow_id = flow.id.clone();
    let dir = std::env::temp_dir().join(format!("volley-analytics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows"))?;
    std::fs::write(dir.join("flows").join("flow.yaml"), &source)?;
    let port = free_port()?;

    // The schema and the flow's version 1, from a first start.
    let mut s = server::start(&o.volley, &dir, port, &[])?;
    ready(&mut s).await?;
    drop(s);

    let url = format!("sqlite://{}", dir.join("volley.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await?;
    sqlx::query("PRAGMA synchronous = OFF")
        .execute(&mut db)
        .await?;
    let t = Instant::now();
    for c in 0..o.contacts {
        if c % CHUNK == 0 {
            if c > 0 {
                sqlx::query("COMMIT").execute(&mut db).await?;
            }
            sqlx::query("BEGIN").execute(&mut db).await?;
        }
        sqlx::query(
            "INSERT INTO contacts (id, token_hash, external_id, profile, created_at, updated_at)
             VALUES (?, NULL, NULL, '{}', ?, ?)",
        )
        .bind(format!("ct-{c}"))
        .bind(BASE_MS)
        .bind(BASE_MS)
        .execute(&mut db)
        .await?;
    }
    sqlx::query("COMMIT").execute(&mut db).await?;
    let mut events = 0usize;
    let mut i = 0;
    while i < o.conversations {
        let mut rows = Rows {
            conversations: Vec::with_capacity(CHUNK),
            events: Vec::new(),
        };
        for k in i..(i + CHUNK).min(o.conversations) {
            conversation(&flow, k, &o, &mut rows);
        }
        events += rows.events.len();
        write(&mut db, &flow_id, &rows).await?;
        i += CHUNK;
    }
    let generate_s = t.elapsed().as_secs_f64();
    db.close().await?;
    let db_mib = std::fs::metadata(dir.join("volley.db"))?.len() as f64 / 1048576.0;

    // The server aggregates the whole log after it starts.
    let to = jiff::Timestamp::from_millisecond(BASE_MS + (o.days - 1) * 86_400_000)?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let from = jiff::Timestamp::from_millisecond(BASE_MS)?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let path = format!("/api/analytics/flows/{flow_id}?from={from}&to={to}");
    let t = Instant::now();
    let mut s = server::start(&o.volley, &dir, port, &[])?;
    ready(&mut s).await?;
    let started_at = |r: &Value| r["started"].as_u64().unwrap_or(0) as usize;
    let mut report = Value::Null;
    for _ in 0..36_000 {
        let previous = report["completed"].clone();
        report = http::json(&s.addr, "GET", &path, Some(KEY), None).await?;
        // Done once every conversation has started and the last ones' ends are in.
        if started_at(&report) >= o.conversations && report["completed"] == previous {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        started_at(&report) == o.conversations,
        "the aggregator counted {} of {} conversations",
        started_at(&report),
        o.conversations
    );
    let aggregate_s = t.elapsed().as_secs_f64();
    let rss_mib = s.rss_kib().unwrap_or(0) as f64 / 1024.0;

    // The dashboard: the JSON report and the console page's data, timed.
    let mut ms = Vec::new();
    for _ in 0..o.requests {
        let t = Instant::now();
        let r = http::json(&s.addr, "GET", &path, Some(KEY), None).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ensure!(started_at(&r) == o.conversations, "report changed: {r}");
    }
    ms.sort_by(f64::total_cmp);
    drop(s);

    let mut db = sqlx::SqliteConnection::connect(&url).await?;
    let (rescan_s, groups) = rescan(&mut db, &flow_id).await?;
    db.close().await?;
    let _ = std::fs::remove_dir_all(&dir);
    let p50 = ms[ms.len() / 2];
    Ok(json!({
        "benchmark": "analytics",
        "flow": flow_id,
        "conversations": o.conversations,
        "contacts": o.contacts,
        "days": o.days,
        "log_entries": events,
        "database_mib": (db_mib * 10.0).round() / 10.0,
        "generate_s": (generate_s * 10.0).round() / 10.0,
        "aggregate_s": (aggregate_s * 10.0).round() / 10.0,
        "aggregated_entries_per_s": (events as f64 / aggregate_s).round(),
        "server_rss_mib": (rss_mib * 10.0).round() / 10.0,
        "report_ms_p50": (p50 * 10.0).round() / 10.0,
        "report_ms_max": (ms[ms.len() - 1] * 10.0).round() / 10.0,
        "rescan_ms": (rescan_s * 10000.0).round() / 10.0,
        "rescan_groups": groups,
        "report_vs_rescan": ((p50 / (rescan_s * 1000.0)) * 10000.0).round() / 10000.0,
        "completed": report["completed"],
        "steps": report["steps"].as_array().map_or(0, |s| s.len()),
    }))
}
