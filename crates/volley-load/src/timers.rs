//! Timer benchmarks against a real server process (docs/BENCHMARKS.md):
//!
//! 1. accepting timers: campaigns scheduled a month ahead for every contact, timed;
//! 2. memory: the server's RSS with all of them pending;
//! 3. lateness: a campaign firing at a steady rate while the rest stay pending,
//!    measured by the server's `volley_timer_lateness_seconds` histogram;
//! 4. recovery: a backlog of overdue timers after `kill -9` and a restart, timed until
//!    every one has fired.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::http;
use crate::server::{self, KEY, Server, free_port, ready};

const NOTE: &str = "volley: 1
id: note
title: Note (timer benchmark)
pacing: { off: true }
steps:
  - say: A scheduled note for {{ contact.name }}.
  - end: done
";

pub struct Options {
    pub volley: PathBuf,
    pub contacts: usize,
    pub campaigns: usize,
    pub fire_rate: u32,
    pub fire_count: usize,
    pub backlog: usize,
}

async fn create_campaign(
    addr: &str,
    name: &str,
    audience: Value,
    schedule: Value,
    rate: Option<u32>,
) -> anyhow::Result<(String, f64)> {
    let mut spec = json!({
        "name": name, "flow": "note", "audience": audience, "schedule": schedule, "late": "fire",
    });
    if let Some(r) = rate {
        spec["rate_per_minute"] = r.into();
    }
    let started = Instant::now();
    let c = http::json(
        addr,
        "POST",
        "/api/campaigns",
        Some(KEY),
        Some(&spec.to_string()),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    Ok((c["id"].as_str().context("campaign id")?.to_string(), secs))
}

async fn pending(addr: &str, id: &str) -> anyhow::Result<i64> {
    let c = http::json(
        addr,
        "GET",
        &format!("/api/campaigns/{id}"),
        Some(KEY),
        None,
    )
    .await?;
    Ok(c["pending"].as_i64().unwrap_or(-1))
}

/// Timers fired for good so far (the server's counter, since it started).
async fn fired(addr: &str) -> anyhow::Result<u64> {
    crate::counter_of(
        &format!("http://{addr}/metrics"),
        "volley_timers_fired_total",
        "result=\"done\"",
    )
    .await
}

/// Waits until a campaign has no pending sends; returns the seconds waited.
///
/// Reading the campaign counts its pending sends in the store, which costs a scan of
/// them, so it is read only once the server's counter (a page of metrics: cheap) says
/// `sends` more timers have fired since `fired_before`, or has stopped moving; the
/// store has the last word.
async fn drained(
    addr: &str,
    id: &str,
    fired_before: u64,
    sends: u64,
    limit: Duration,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let now = fired(addr).await?;
        let check = now >= fired_before + sends || last == Some(now);
        if check && pending(addr, id).await? == 0 {
            return Ok(started.elapsed().as_secs_f64());
        }
        last = Some(now);
        ensure!(
            started.elapsed() < limit,
            "campaign {id} still pending after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0)
}

pub async fn run(o: Options) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("volley-timers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows"))?;
    std::fs::write(dir.join("flows/note.yaml"), NOTE)?;
    let port = free_port()?;
    let mut srv: Server = server::start(&o.volley, &dir, port, &[])?;
    ready(&mut srv).await?;
    let addr = srv.addr.clone();

    // Contacts, 200,000 per CSV (the import limit).
    let started = Instant::now();
    for chunk in (0..o.contacts).collect::<Vec<_>>().chunks(200_000) {
        let mut csv = String::from("external_id,name,timezone\n");
        for i in chunk {
            let zone = [
                "Europe/Berlin",
                "America/New_York",
                "Asia/Kolkata",
                "Australia/Lord_Howe",
            ][i % 4];
            csv.push_str(&format!("c{i},Contact {i},{zone}\n"));
        }
        http::json(&addr, "POST", "/api/contacts/import", Some(KEY), Some(&csv)).await?;
    }
    let import_secs = started.elapsed().as_secs_f64();

    // 1. Accepting timers: every contact, a month ahead at 09:00 in their zone.
    let month = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let mut accept = Vec::new();
    for k in 0..o.campaigns {
        let (_, secs) = create_campaign(
            &addr,
            &format!("pending {k}"),
            json!({"all": true}),
            json!({"date": month.to_string(), "time": "09:00"}),
            None,
        )
        .await?;
        accept.push((o.contacts as f64 / secs).round());
    }
    let pending_timers = o.contacts * o.campaigns;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_pending = srv.rss_kib();
    let split = srv.rss_split_kib();

    // 3. Lateness while firing at a steady rate.
    let metrics = format!("http://{addr}/metrics");
    let before = crate::histogram_of(&metrics, "volley_timer_lateness_seconds").await?;
    let fired_before = fired(&addr).await?;
    let fire_ids: Vec<String> = (0..o.fire_count.min(o.contacts))
        .map(|i| format!("c{i}"))
        .collect();
    // Due well after its creation ends (writing 50,000 sends among millions takes
    // seconds): sends written after their due time would count as late.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
    let (fire_id, _) = create_campaign(
        &addr,
        "steady",
        json!({"external_ids": fire_ids}),
        json!({"at": at.to_string()}),
        Some(o.fire_rate * 60),
    )
    .await?;
    let expected = fire_ids.len() as f64 / o.fire_rate as f64;
    let until_at = at
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64()
        .max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(until_at)).await;
    let fire_secs = drained(
        &addr,
        &fire_id,
        fired_before,
        fire_ids.len() as u64,
        Duration::from_secs((expected as u64 + 5) * 10),
    )
    .await?;
    let after = crate::histogram_of(&metrics, "volley_timer_lateness_seconds").await?;
    // Beyond the largest bucket, the bound is reported as text (JSON has no infinity).
    let largest = after
        .iter()
        .rev()
        .find(|(b, _)| b.is_finite())
        .map_or(0.0, |b| b.0);
    let lateness = |p| match crate::bucket_percentile(&before, &after, p) {
        Some(s) if s.is_finite() => json!(s * 1000.0),
        Some(_) => json!(format!("> {} ms", largest * 1000.0)),
        None => Value::Null,
    };

    // 4. Recovery: a backlog overdue at restart.
    let backlog_ids: Vec<String> = (0..o.backlog.min(o.contacts))
        .map(|i| format!("c{i}"))
        .collect();
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let (backlog_id, _) = create_campaign(
        &addr,
        "backlog",
        json!({"external_ids": backlog_ids}),
        json!({"at": at.to_string()}),
        None,
    )
    .await?;
    srv.child.kill()?;
    srv.child.wait()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = Instant::now();
    let mut srv = server::start(&o.volley, &dir, port, &[])?;
    ready(&mut srv).await?;
    let ready_secs = restarted.elapsed().as_secs_f64();
    // The restarted server's counter starts at 0.
    drained(
        &addr,
        &backlog_id,
        0,
        backlog_ids.len() as u64,
        Duration::from_secs(3600),
    )
    .await?;
    let recovery_secs = restarted.elapsed().as_secs_f64();
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "scenario": "timers",
        "contacts": o.contacts,
        "contacts_import_seconds": (import_secs * 10.0).round() / 10.0,
        "accept_timers_per_second": accept,
        "pending_timers": pending_timers,
        "server_rss_mib_with_pending": mib(rss_pending),
        "server_rss_heap_mib": mib(split.map(|s| s.0)),
        "server_rss_mapped_file_mib": mib(split.map(|s| s.1)),
        "steady_firing": {
            "timers": fire_ids.len(),
            "offered_per_second": o.fire_rate,
            "achieved_per_second": (fire_ids.len() as f64 / fire_secs).round(),
            "lateness_p50_le_ms": lateness(0.50),
            "lateness_p99_le_ms": lateness(0.99),
        },
        "backlog_after_kill": {
            "timers": backlog_ids.len(),
            "seconds_to_ready": (ready_secs * 100.0).round() / 100.0,
            "seconds_until_all_fired": (recovery_secs * 10.0).round() / 10.0,
        },
    }))
}
