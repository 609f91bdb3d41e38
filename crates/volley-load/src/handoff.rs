//! The hand-off benchmark on a real server process: agents with the console open
//! (signed in, desk stream connected) and participants handed off at once; each agent
//! reply is timed from the agent's request to the participant's widget receiving it;
//! and the console's pages are timed with many conversations in the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::http;
use crate::server::{self, KEY, free_port, ready};

pub struct Options {
    pub volley: PathBuf,
    pub agents: usize,
    pub participants: usize,
    /// Replies per conversation.
    pub replies: usize,
    /// Offered agent replies per second (all agents together).
    pub rate: f64,
    /// Other conversations in the store (a flow without hand-off).
    pub seed: usize,
}

const DESK_FLOW: &str = "volley: 1\nid: desk\ntitle: Desk\npacing: { off: true }\nsteps:\n  - say: Hello\n  - handoff: support\n";
const NOTE_FLOW: &str =
    "volley: 1\nid: note\ntitle: Note\npacing: { off: true }\nsteps:\n  - say: Hi\n  - end: done\n";
const PASSWORD: &str = "load-test-password-1";

struct AgentSession {
    id: String,
    cookie: String,
    csrf: String,
}

fn cookie_of(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        if !name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let pair = value.trim().split(';').next()?;
        pair.starts_with("volley_session=")
            .then(|| pair.to_string())
    })
}

async fn sign_in(addr: &str, i: usize, capacity: usize) -> anyhow::Result<AgentSession> {
    let headers = [
        ("Authorization", format!("Bearer {KEY}")),
        ("Content-Type", "application/json".to_string()),
    ];
    let user = json!({"email": format!("agent{i}@load.test"), "name": format!("Agent {i}"), "role": "agent", "capacity": capacity});
    let (status, _, created) = http::call(
        addr,
        "POST",
        "/api/users",
        &headers,
        Some(&user.to_string()),
    )
    .await?;
    ensure!(status == 201, "POST /api/users: {status} {created}");
    let created: Value = serde_json::from_str(&created)?;
    let id = created["user"]["id"]
        .as_str()
        .context("user id")?
        .to_string();
    let link = created["setup_link"].as_str().context("setup link")?;
    let token = link.split("token=").nth(1).context("token")?;
    let form = format!("token={token}&password={PASSWORD}&confirm={PASSWORD}");
    let headers = [
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("Origin", format!("http://{addr}")),
    ];
    let (status, head, body) =
        http::call(addr, "POST", "/console/setup", &headers, Some(&form)).await?;
    let cookie = cookie_of(&head)
        .with_context(|| format!("setup gave no session cookie ({status}): {body}"))?;
    let (status, _, me) =
        http::call(addr, "GET", "/api/me", &[("Cookie", cookie.clone())], None).await?;
    ensure!(status == 200, "GET /api/me: {status} {me}");
    let me: Value = serde_json::from_str(&me)?;
    Ok(AgentSession {
        id,
        cookie,
        csrf: me["csrf"].as_str().context("csrf")?.to_string(),
    })
}

/// Keeps an agent's desk stream open (they are online while it is) and reports each
/// conversation assigned to them.
async fn desk_stream(
    addr: String,
    agent: Arc<AgentSession>,
    assigned: mpsc::UnboundedSender<(Arc<AgentSession>, String)>,
) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    // HTTP/1.0: the body is the raw event stream, not chunked.
    let req = format!(
        "GET /api/desk/stream HTTP/1.0\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
        agent.cookie
    );
    stream.write_all(req.as_bytes()).await?;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let mut seen = std::collections::HashSet::new();
    while let Some(line) = lines.next_line().await? {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        let h = &v["handoff"];
        if v["type"] == "handoff" && h["status"] == "assigned" && h["agent"] == agent.id.as_str() {
            let conv = h["conversation"].as_str().unwrap_or_default().to_string();
            if seen.insert(conv.clone()) {
                let _ = assigned.send((agent.clone(), conv));
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    (sorted[i] * 100.0).round() / 100.0
}

async fn timed_gets(addr: &str, path: &str, cookie: &str, n: usize) -> anyhow::Result<Value> {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, _, body) =
            http::call(addr, "GET", path, &[("Cookie", cookie.to_string())], None).await?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    ms.sort_by(f64::total_cmp);
    Ok(
        json!({"p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "max_ms": percentile(&ms, 1.0), "bytes": bytes}),
    )
}

pub async fn run(o: Options) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("volley-handoff-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows"))?;
    std::fs::write(dir.join("flows/desk.yaml"), DESK_FLOW)?;
    std::fs::write(dir.join("flows/note.yaml"), NOTE_FLOW)?;
    let port = free_port()?;
    let limit = (o.participants / o.agents.max(1) + 1).to_string();
    let mut srv = server::start(&o.volley, &dir, port, &[])?;
    ready(&mut srv).await?;
    let addr = srv.addr.clone();

    // Other conversations in the store.
    let started = Instant::now();
    let seeded = futures_util::stream::iter(0..o.seed)
        .map(|_| {
            let addr = addr.clone();
            async move {
                let json = [("Content-Type", "application/json".to_string())];
                match http::call(
                    &addr,
                    "POST",
                    "/api/conversations",
                    &json,
                    Some(r#"{"flow":"note"}"#),
                )
                .await
                {
                    Ok((200, _, _)) => Ok(()),
                    Ok((status, _, body)) => Err(anyhow::anyhow!("{status} {body}")),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures_util::future::ready(r.is_ok()))
        .count()
        .await;
    ensure!(
        seeded == o.seed,
        "seeded {seeded} of {} conversations",
        o.seed
    );
    let seed_secs = started.elapsed().as_secs_f64();

    // Agents: signed in, console open (desk stream), room for their share.
    let capacity: usize = limit.parse()?;
    let mut agents = Vec::new();
    for i in 0..o.agents {
        agents.push(Arc::new(sign_in(&addr, i, capacity).await?));
    }
    let (assigned_tx, mut assigned_rx) = mpsc::unbounded_channel();
    for a in &agents {
        tokio::spawn(desk_stream(addr.clone(), a.clone(), assigned_tx.clone()));
    }
    // Every agent online (their desk streams open) before anyone is handed off.
    let cookie = agents[0].cookie.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, desk) = http::call(
            &addr,
            "GET",
            "/api/desk",
            &[("Cookie", cookie.clone())],
            None,
        )
        .await?;
        let online = serde_json::from_str::<Value>(&desk)?["agents"]
            .as_array()
            .map_or(0, Vec::len);
        if online == o.agents {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {online} of {} agents online",
            o.agents
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Participants: each handed off as it connects; replies timed on arrival.
    let base = Instant::now();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("ws://{addr}/ws");
    let started = Instant::now();
    for chunk in (0..o.participants).collect::<Vec<_>>().chunks(200) {
        let opened =
            futures_util::future::join_all(chunk.iter().map(|_| crate::open(&url, "desk"))).await;
        for r in opened {
            let (mut ws, _) = r?;
            let latencies = latencies.clone();
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&t) else {
                        continue;
                    };
                    let ev = &v["event"];
                    if ev["kind"] == "message" && ev["from"] == "agent" {
                        if let Some(sent) = ev["text"]
                            .as_str()
                            .and_then(|t| t.strip_prefix("t="))
                            .and_then(|t| t.parse::<u64>().ok())
                        {
                            let now = base.elapsed().as_micros() as u64;
                            latencies
                                .lock()
                                .unwrap()
                                .push(now.saturating_sub(sent) as f64 / 1000.0);
                            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let seq = v["seq"].as_i64().unwrap_or(0);
                        let _ = ws
                            .send(Message::Text(
                                json!({"type": "ack", "seq": seq}).to_string().into(),
                            ))
                            .await;
                    }
                }
            });
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();

    // Every participant assigned to an agent.
    let mut conversations: Vec<(Arc<AgentSession>, String)> = Vec::with_capacity(o.participants);
    let deadline = Instant::now() + Duration::from_secs(120);
    while conversations.len() < o.participants {
        match tokio::time::timeout_at(deadline.into(), assigned_rx.recv()).await {
            Ok(Some(pair)) => conversations.push(pair),
            _ => bail!(
                "only {} of {} conversations assigned",
                conversations.len(),
                o.participants
            ),
        }
    }
    let assign_secs = started.elapsed().as_secs_f64();
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    for (a, _) in &conversations {
        *per_agent.entry(a.id.clone()).or_default() += 1;
    }

    // Agent replies, open loop at `rate` per second.
    let total = conversations.len() * o.replies;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let started = Instant::now();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for k in 0..total {
        let (agent, conv) = conversations[k % conversations.len()].clone();
        tokio::time::sleep_until((started + period * k as u32).into()).await;
        let addr = addr.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            let text = format!("t={}", base.elapsed().as_micros());
            let body = json!({"id": format!("r{k}"), "text": text}).to_string();
            let headers = [
                ("Cookie", agent.cookie.clone()),
                ("X-CSRF-Token", agent.csrf.clone()),
                ("Content-Type", "application/json".to_string()),
            ];
            match http::call(
                &addr,
                "POST",
                &format!("/api/handoffs/{conv}/reply"),
                &headers,
                Some(&body),
            )
            .await
            {
                Ok((200, _, _)) => {}
                _ => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(std::sync::atomic::Ordering::Relaxed)
        + failures.load(std::sync::atomic::Ordering::Relaxed)
        < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply_secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);

    // Console pages with everything in the store.
    let cookie = agents[0].cookie.clone();
    let console = timed_gets(&addr, "/console", &cookie, 50).await.ok();
    let desk = timed_gets(&addr, "/api/desk", &cookie, 50).await?;
    let rss = srv.rss_kib();
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "scenario": "handoff",
        "agents": o.agents,
        "participants": o.participants,
        "other_conversations": o.seed,
        "seed_seconds": (seed_secs * 10.0).round() / 10.0,
        "participants_connected_seconds": (connect_secs * 10.0).round() / 10.0,
        "all_assigned_seconds": (assign_secs * 10.0).round() / 10.0,
        "most_per_agent": per_agent.values().max(),
        "fewest_per_agent": per_agent.values().min(),
        "replies": {
            "offered_per_second": o.rate,
            "sent": total,
            "failed": failures.load(std::sync::atomic::Ordering::Relaxed),
            "received": lat.len(),
            "seconds": (reply_secs * 10.0).round() / 10.0,
            "latency_p50_ms": percentile(&lat, 0.5),
            "latency_p99_ms": percentile(&lat, 0.99),
            "latency_max_ms": percentile(&lat, 1.0),
        },
        "console_queue_page": console,
        "api_desk": desk,
        "server_rss_mib": rss.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
    }))
}
