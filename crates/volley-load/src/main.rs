//! volley-load: drives a Volley server with many WebSocket clients from one process and
//! reports throughput, latency percentiles and server memory (docs/BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod analytics;
mod crash;
mod handoff;
mod http;
mod premiere;
mod server;
mod timers;

#[derive(Parser)]
#[command(name = "volley-load", about = "Load generator for Volley")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open many widget sessions (hello + welcome) and keep them idle; report server RSS.
    Idle {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        #[arg(long)]
        flow: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connections opened at a time while ramping up.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Seconds to hold all connections open before measuring.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// The server's process id, to read its RSS from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Participants complete a flow concurrently, answering as soon as each question opens.
    Complete {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        #[arg(long)]
        flow: String,
        #[arg(long, default_value_t = 100)]
        participants: usize,
        /// The server's /metrics URL, for server-side latency.
        #[arg(long)]
        metrics: Option<String>,
        /// Offered answers per second across all participants (open loop): each
        /// participant answers on its own fixed schedule, one answer every
        /// participants/rate seconds, the schedules staggered evenly, so answers
        /// arrive at a constant rate whatever the server's latency (an answer whose
        /// question arrives late is sent at once). Without it, everyone answers the
        /// instant a question opens (closed loop).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// The crash test: a campaign's timers fire while participants answer; the server
    /// is killed (SIGKILL) mid-firing and restarted; the database must show every
    /// timer fired exactly once and no acknowledged answer lost. Exits non-zero if not.
    Crash {
        /// The `volley` binary to run.
        #[arg(long, default_value = "target/release/volley")]
        volley: std::path::PathBuf,
        /// Timers to fire (half campaign sends, half the waits those conversations reach).
        #[arg(long, default_value_t = 100_000)]
        timers: usize,
        /// WebSocket participants answering during the test.
        #[arg(long, default_value_t = 50)]
        participants: usize,
    },
    /// Timer benchmarks on a real server process: accepting timers (campaigns a month
    /// ahead for every contact), RSS with them pending, lateness while firing at a
    /// steady rate, and recovery of an overdue backlog after kill -9.
    Timers {
        #[arg(long, default_value = "target/release/volley")]
        volley: std::path::PathBuf,
        /// Contacts imported (each campaign targets all of them).
        #[arg(long, default_value_t = 1_000_000)]
        contacts: usize,
        /// Campaigns a month ahead: pending timers = contacts × campaigns.
        #[arg(long, default_value_t = 5)]
        campaigns: usize,
        /// Timers per second fired in the lateness measurement.
        #[arg(long, default_value_t = 5_000)]
        fire_rate: u32,
        /// Timers fired in the lateness measurement.
        #[arg(long, default_value_t = 50_000)]
        fire_count: usize,
        /// Overdue timers at restart in the recovery measurement.
        #[arg(long, default_value_t = 1_000_000)]
        backlog: usize,
    },
    /// Hand-off on a real server process: agents signed in with the console open and
    /// participants handed off at once; agent replies timed until the participant
    /// receives them; console pages timed with many conversations in the store.
    Handoff {
        #[arg(long, default_value = "target/release/volley")]
        volley: std::path::PathBuf,
        #[arg(long, default_value_t = 200)]
        agents: usize,
        #[arg(long, default_value_t = 5_000)]
        participants: usize,
        /// Agent replies per conversation.
        #[arg(long, default_value_t = 3)]
        replies: usize,
        /// Offered agent replies per second (all agents together).
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        /// Other conversations started first (the store is not empty).
        #[arg(long, default_value_t = 95_000)]
        seed: usize,
    },
    /// Premiere chat: thousands of viewers in one event chat, Volley's
    /// `/events/{id}/ws` against a socket.io 4 room broadcast with the same client code;
    /// delivery latency, losses and server memory per viewer, side by side.
    Premiere(premiere::Args),
    /// Flow analytics on a real server process: N generated conversations aggregated
    /// (timed) and the flow dashboard served (timed), against rescanning the log.
    Analytics {
        #[arg(long, default_value = "target/release/volley")]
        volley: std::path::PathBuf,
        /// The flow the conversations run (its sample answers, some abandoned).
        #[arg(long, default_value = "examples/mortgage-calculator.yaml")]
        flow: std::path::PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        conversations: usize,
        /// Contacts the conversations belong to (round robin).
        #[arg(long, default_value_t = 200_000)]
        contacts: usize,
        /// Days the conversations' starts are spread over.
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Dashboard requests timed.
        #[arg(long, default_value_t = 20)]
        requests: usize,
    },
    /// Premiere clock sync: viewers with skewed clocks run the clock-offset protocol of
    /// docs/watching.md; reports how far their live position is from the server's.
    PremiereSync(premiere::SyncArgs),
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn open(url: &str, flow: &str) -> anyhow::Result<(Ws, Value)> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), false).await?;
    ws.send(Message::Text(
        json!({"type": "hello", "v": 1, "flow": flow})
            .to_string()
            .into(),
    ))
    .await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)?;
                if v["type"] == "welcome" {
                    return Ok((ws, v));
                }
                anyhow::bail!("unexpected first frame: {v}");
            }
            Some(Ok(_)) => continue,
            other => anyhow::bail!("connection closed before welcome: {other:?}"),
        }
    }
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn idle(
    url: String,
    flow: String,
    n: usize,
    batch: usize,
    hold: u64,
    pid: Option<u32>,
) -> anyhow::Result<Value> {
    let before = pid.and_then(rss_kib);
    let started = Instant::now();
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    for chunk_start in (0..n).step_by(batch) {
        let mut ramp = Vec::new();
        for _ in chunk_start..(chunk_start + batch).min(n) {
            let (url, flow, opened, failed) =
                (url.clone(), flow.clone(), opened.clone(), failed.clone());
            let mut release = release_rx.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            tasks.push(tokio::spawn(async move {
                match open(&url, &flow).await {
                    Ok((mut ws, _)) => {
                        opened.fetch_add(1, Ordering::Relaxed);
                        let _ = ready_tx.send(());
                        // Stay connected and answer pings until released.
                        loop {
                            tokio::select! {
                                m = ws.next() => if m.is_none() || matches!(m, Some(Err(_))) { break },
                                _ = release.changed() => break,
                            }
                        }
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("connection failed: {e}");
                        }
                        let _ = ready_tx.send(());
                    }
                }
            }));
            ramp.push(ready_rx);
        }
        for r in ramp {
            let _ = r.await;
        }
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = pid.and_then(rss_kib);
    let open_now = opened.load(Ordering::Relaxed);
    let _ = release_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if open_now > 0 => {
            Some((a.saturating_sub(b)) as f64 * 1024.0 / open_now as f64)
        }
        _ => None,
    };
    Ok(json!({
        "scenario": "idle",
        "connections": open_now,
        "failed": failed.load(Ordering::Relaxed),
        "ramp_seconds": (ramp_secs * 10.0).round() / 10.0,
        "server_rss_before_kib": before,
        "server_rss_after_kib": after,
        "server_rss_after_mib": after.map(|a| (a as f64 / 1024.0 * 10.0).round() / 10.0),
        "server_bytes_per_connection": per_conn.map(|b| b.round()),
    }))
}

/// Histogram buckets of `volley_input_seconds` from a Prometheus text page.
async fn histogram(url: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    histogram_of(url, "volley_input_seconds").await
}

/// A Prometheus text page.
async fn metrics_page(url: &str) -> anyhow::Result<String> {
    let url = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--metrics must be http://host:port/metrics"))?;
    let (host, path) = url.split_once('/').unwrap_or((url, "metrics"));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// Histogram buckets of a metric from a Prometheus text page.
pub(crate) async fn histogram_of(url: &str, metric: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    let bucket = format!("{metric}_bucket");
    let body = metrics_page(url).await?;
    let mut out = Vec::new();
    for line in body.lines().filter(|l| l.starts_with(&bucket)) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("+Inf");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        let count: u64 = line.rsplit(' ').next().unwrap_or("0").parse::<f64>()? as u64;
        out.push((bound, count));
    }
    Ok(out)
}

/// The sum of a counter's series whose labels contain `label` (e.g. `result="done"`).
pub(crate) async fn counter_of(url: &str, metric: &str, label: &str) -> anyhow::Result<u64> {
    let body = metrics_page(url).await?;
    let mut total = 0;
    for line in body
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .filter(|l| l.contains(label))
    {
        total += line.rsplit(' ').next().unwrap_or("0").parse::<f64>()? as u64;
    }
    Ok(total)
}

/// The smallest bucket bound holding `p` of the observations between two snapshots.
pub(crate) fn bucket_percentile(
    before: &[(f64, u64)],
    after: &[(f64, u64)],
    p: f64,
) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(b, c)| {
            (
                *b,
                c - before.iter().find(|(x, _)| x == b).map_or(0, |x| x.1),
            )
        })
        .collect();
    let total = delta.last()?.1;
    let want = (total as f64 * p).ceil() as u64;
    delta.iter().find(|(_, c)| *c >= want).map(|(b, _)| *b)
}

async fn complete(
    url: String,
    flow: String,
    n: usize,
    metrics: Option<String>,
    rate: Option<f64>,
) -> anyhow::Result<Value> {
    // Open loop: participant i sends its k-th answer at start + (i/n + k) * period.
    let period = rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    // Everyone connects first, then all start answering together.
    let mut sessions = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(chunk.iter().map(|_| open(&url, &flow))).await;
        for s in opened {
            sessions.push(s?);
        }
    }
    let before = match &metrics {
        Some(m) => Some(histogram(m).await?),
        None => None,
    };
    let answers = Arc::new(AtomicU64::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for (i, (mut ws, _)) in sessions.into_iter().enumerate() {
        let (answers, start) = (answers.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let began = tokio::time::Instant::now();
            let mut due = period.map(|p| began + p.mul_f64(i as f64 / n as f64));
            let mut latencies: Vec<u64> = Vec::new();
            let mut pending: Option<(String, Instant)> = None;
            let mut k = i;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                match (v["type"].as_str(), v["event"]["kind"].as_str()) {
                    (Some("ack"), _) => {
                        if let Some((id, sent)) = pending.take()
                            && v["id"] == id.as_str()
                        {
                            latencies.push(sent.elapsed().as_micros() as u64);
                            answers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (Some("error"), _) => anyhow::bail!("server error: {v}"),
                    (Some("event"), Some("ask")) => {
                        let q: volley_flow::Question = serde_json::from_value(v["event"].clone())?;
                        k += 1;
                        if let (Some(at), Some(p)) = (due, period) {
                            tokio::time::sleep_until(at).await;
                            due = Some(at + p);
                        }
                        let id = format!("l{i}-{k}");
                        let frame = match volley_flow::sample::answer(&q, k) {
                            volley_flow::Input::Text { text } => json!({"type": "answer", "id": id, "step": q.step, "text": text}),
                            volley_flow::Input::Choice { values } => json!({"type": "answer", "id": id, "step": q.step, "values": values}),
                            _ => anyhow::bail!("unexpected sample answer"),
                        };
                        pending = Some((id, Instant::now()));
                        ws.send(Message::Text(frame.to_string().into())).await?;
                    }
                    (Some("event"), Some("end")) => break,
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    start.wait().await;
    let started = Instant::now();
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        match t.await? {
            Ok(l) => all.extend(l),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("participant failed: {e}");
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let total = answers.load(Ordering::Relaxed);
    let server = match (&metrics, before) {
        (Some(m), Some(b)) => {
            let after = histogram(m).await?;
            Some(json!({
                "p50_le_ms": bucket_percentile(&b, &after, 0.50).map(|s| s * 1000.0),
                "p99_le_ms": bucket_percentile(&b, &after, 0.99).map(|s| s * 1000.0),
            }))
        }
        _ => None,
    };
    Ok(json!({
        "scenario": "complete",
        "offered_rate": rate,
        "participants": n,
        "failed_participants": failures,
        "answers": total,
        "seconds": (secs * 100.0).round() / 100.0,
        "answers_per_second": (total as f64 / secs).round(),
        "client_ack_latency_ms": {
            "p50": percentile(&all, 0.50) as f64 / 1000.0,
            "p99": percentile(&all, 0.99) as f64 / 1000.0,
            "max": all.last().copied().unwrap_or(0) as f64 / 1000.0,
        },
        "server_input_time_ms": server,
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Idle {
                url,
                flow,
                connections,
                batch,
                hold,
                server_pid,
            } => idle(url, flow, connections, batch, hold, server_pid).await,
            Scenario::Complete {
                url,
                flow,
                participants,
                metrics,
                rate,
            } => complete(url, flow, participants, metrics, rate).await,
            Scenario::Crash {
                volley,
                timers,
                participants,
            } => crash::run(volley, timers, participants).await,
            Scenario::Timers {
                volley,
                contacts,
                campaigns,
                fire_rate,
                fire_count,
                backlog,
            } => {
                timers::run(timers::Options {
                    volley,
                    contacts,
                    campaigns,
                    fire_rate,
                    fire_count,
                    backlog,
                })
                .await
            }
            Scenario::Handoff {
                volley,
                agents,
                participants,
                replies,
                rate,
                seed,
            } => {
                handoff::run(handoff::Options {
                    volley,
                    agents,
                    participants,
                    replies,
                    rate,
                    seed,
                })
                .await
            }
            Scenario::Premiere(args) => premiere::run(args).await,
            Scenario::Analytics {
                volley,
                flow,
                conversations,
                contacts,
                days,
                requests,
            } => {
                analytics::run(analytics::Options {
                    volley,
                    flow,
                    conversations,
                    contacts,
                    days,
                    requests,
                })
                .await
            }
            Scenario::PremiereSync(args) => premiere::sync(args).await,
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
