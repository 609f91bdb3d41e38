//! The premiere benchmarks: thousands of viewers in one event chat, Volley's
//! `/events/{id}/ws` side by side with a socket.io 4 room broadcast, both driven by the
//! same client code through a protocol adapter ([`Protocol`]); and `premiere-sync`, how
//! close the clock-offset protocol of docs/watching.md puts viewers with skewed clocks
//! to the server's timeline.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::server::{self, free_port, ready};
use crate::{Ws, http, ws_config};

/// How long one viewer may take to connect and join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The event the load tool publishes when it starts Volley itself.
const EVENT: &str = "load-premiere";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerChoice {
    Socketio,
    Volley,
    Both,
}

/// Where the Volley server is: started by the tool, or already running.
#[derive(clap::Args)]
pub struct VolleyTarget {
    /// The `volley` binary started for the run (unless --volley-addr is given).
    #[arg(long, default_value = "target/release/volley")]
    volley: PathBuf,
    /// A Volley server already running (host:port); --event names its event.
    #[arg(long)]
    volley_addr: Option<String>,
    /// That server's process id, to read its RSS and CPU time from /proc.
    #[arg(long)]
    volley_pid: Option<u32>,
    /// The event on a running server (a showing of it must be live).
    #[arg(long, default_value = EVENT)]
    event: String,
    /// The showing to join on a running server (default: the live one the listing
    /// names, else none: the server picks the live showing).
    #[arg(long)]
    showing: Option<String>,
}

#[derive(clap::Args)]
pub struct Args {
    /// Viewers connected to the chat (each one receives every message).
    #[arg(long, default_value_t = 9_000)]
    viewers: usize,
    /// Messages sent (ignored with --duration).
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Viewers that send, round-robin (default: ceil(rate); Volley lets a viewer post
    /// one message a second after a burst of five).
    #[arg(long)]
    senders: Option<usize>,
    /// Which server(s) to measure, one after the other.
    #[arg(long, value_enum, default_value_t = PeerChoice::Both)]
    peer: PeerChoice,
    /// Sustained mode: send at --rate for this many seconds instead of --messages.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds to wait after the last message for deliveries still on their way.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Viewers connecting at a time.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Seconds between start-up (or the last connection) and reading the server's RSS.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    #[command(flatten)]
    target: VolleyTarget,
    /// Node.js, to run the socket.io server.
    #[arg(long, default_value = "node")]
    node: PathBuf,
    /// The socket.io server script (`npm ci --prefix bench/socketio` first).
    #[arg(long, default_value = "bench/socketio/server.js")]
    socketio_server: PathBuf,
    /// A socket.io server already running (host:port).
    #[arg(long)]
    socketio_addr: Option<String>,
    /// That server's process id, to read its RSS and CPU time from /proc.
    #[arg(long)]
    socketio_pid: Option<u32>,
}

#[derive(clap::Args)]
pub struct SyncArgs {
    /// Simulated viewers, each with its own clock skew.
    #[arg(long, default_value_t = 1_000)]
    viewers: usize,
    /// Each viewer's clock is off by a random amount in ±this many milliseconds.
    #[arg(long, default_value_t = 5_000.0)]
    skew_ms: f64,
    /// Pings per viewer (docs/watching.md: 8, 200 ms apart).
    #[arg(long, default_value_t = 8)]
    pings: usize,
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Seed of the skews.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chat posted meanwhile, messages per second, by ceil(rate) extra viewers (every
    /// viewer receives it, so pongs queue behind chat frames); 0 for none.
    #[arg(long, default_value_t = 0.0)]
    chat_rate: f64,
    /// Viewers connecting at a time.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    target: VolleyTarget,
}

// ---------------------------------------------------------------------------------
// Clocks and numbers

/// Wall-clock microseconds since the Unix epoch (sender and receivers share it).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A latency histogram shared by every receiver: exact below 128 µs, then 64
/// sub-buckets per power of two (under 1.6 % error); the maximum is exact.
struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..Self::index(u64::MAX) + 1)
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize; // 7..=63
        128 + (e - 7) * 64 + ((v >> (e - 6)) & 63) as usize
    }

    fn lower(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let (e, m) = ((i - 128) / 64 + 7, (i - 128) % 64);
        (64 + m as u64) << (e - 6)
    }

    fn record(&self, v: u64) {
        self.buckets[Self::index(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    /// The middle of the bucket holding the `p` quantile (at most the maximum).
    fn quantile(&self, p: f64) -> u64 {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return 0;
        }
        let want = ((count as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                let (lo, hi) = (Self::lower(i), Self::lower(i + 1));
                return (lo + (hi - lo) / 2).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// splitmix64: reproducible skews without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// User plus system CPU time of a process, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// How busy the machine is: the 1-minute load average and the share of the last 10 s
/// in which some runnable task waited for a CPU (PSI), to read the figures against.
fn machine_load() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok());
    let pressure = std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|p| {
            p.lines()
                .find(|l| l.starts_with("some"))?
                .split_whitespace()
                .find_map(|f| f.strip_prefix("avg10="))?
                .parse::<f64>()
                .ok()
        });
    json!({"loadavg_1m": load, "cpu_pressure_some_avg10_pct": pressure})
}

/// The soft limit of open files of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn check_open_files(viewers: usize) -> anyhow::Result<()> {
    if let Some(limit) = open_files_limit() {
        ensure!(
            limit as usize > viewers + 64,
            "{viewers} viewers need more open files than this process may have ({limit}): \
             raise it first (ulimit -n; the server inherits it)"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The protocol adapter

/// The wire protocol one viewer speaks; everything else in a viewer is shared.
#[derive(Clone)]
enum Protocol {
    /// Volley's event protocol (docs/watching.md): JSON objects with a `t` field.
    Volley { addr: String, path: String },
    /// socket.io 4 over a plain WebSocket: Engine.IO v4 packets (`0` open, `2`/`3`
    /// ping/pong, `4` message) carrying socket.io v5 packets (`0` connect, `2` event).
    SocketIo { addr: String },
}

/// A frame from the server, as far as a viewer cares.
enum Incoming {
    /// A chat message of this run: its sequence number and send time.
    Chat {
        seq: u64,
        sent_us: u64,
    },
    /// The server refused a message this viewer sent.
    Refused {
        seq: Option<u64>,
        why: String,
    },
    /// Must be answered with this frame at once (Engine.IO's pong).
    Reply(&'static str),
    /// A clock-offset reply: the ping's `c` and the server's time `s` (ms).
    Pong {
        c: f64,
        s: f64,
    },
    /// The server ended the session.
    Closed,
    Other,
}

/// Finds `pm:{seq}:{sent_us}` in a frame: the text of every message this tool sends.
fn marker(frame: &str) -> Option<(u64, u64)> {
    let at = frame.find("pm:")? + 3;
    let mut parts = frame[at..].splitn(3, |c: char| !c.is_ascii_digit());
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((seq, sent))
}

impl Protocol {
    fn name(&self) -> &'static str {
        match self {
            Protocol::Volley { .. } => "volley",
            Protocol::SocketIo { .. } => "socketio",
        }
    }

    fn url(&self) -> String {
        match self {
            Protocol::Volley { addr, path } => format!("ws://{addr}{path}"),
            Protocol::SocketIo { addr } => {
                format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
            }
        }
    }

    /// Connects and joins: Volley's `hello` (returned), socket.io's namespace connect.
    async fn join(&self) -> anyhow::Result<(Ws, Value)> {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(self.url(), Some(ws_config()), false)
                .await?;
        match self {
            Protocol::Volley { .. } => loop {
                let t = next_text(&mut ws).await?;
                let v: Value = serde_json::from_str(&t)?;
                match v["t"].as_str() {
                    Some("hello") => return Ok((ws, v)),
                    Some("error") => bail!("refused: {v}"),
                    _ => {}
                }
            },
            Protocol::SocketIo { .. } => loop {
                let t = next_text(&mut ws).await?;
                if t.starts_with("40") {
                    return Ok((ws, Value::Null));
                } else if t.starts_with('0') {
                    ws.send(Message::Text("40".into())).await?;
                } else if t == "2" {
                    ws.send(Message::Text("3".into())).await?;
                } else if t.starts_with("44") {
                    bail!("namespace refused: {t}");
                }
            },
        }
    }

    /// Gives a sender its display name (Volley refuses chat from a viewer without one).
    async fn set_name(&self, ws: &mut Ws, name: &str) -> anyhow::Result<()> {
        let Protocol::Volley { .. } = self else {
            return Ok(());
        };
        let frame = json!({"t": "name", "name": name, "ref": "name"});
        ws.send(Message::Text(frame.to_string().into())).await?;
        loop {
            let t = next_text(ws).await?;
            let v: Value = serde_json::from_str(&t)?;
            if v["ref"] == "name" {
                ensure!(v["t"] == "ok", "name refused: {v}");
                return Ok(());
            }
        }
    }

    fn chat(&self, seq: u64, text: &str) -> String {
        match self {
            Protocol::Volley { .. } => {
                json!({"t": "chat", "text": text, "ref": format!("c{seq}")}).to_string()
            }
            Protocol::SocketIo { .. } => {
                format!("42{}", json!(["chat", {"text": text}]))
            }
        }
    }

    /// A clock-offset ping (Volley only).
    fn ping(&self, c: u64) -> String {
        json!({"t": "ping", "c": c}).to_string()
    }

    fn decode(&self, frame: &str) -> Incoming {
        match self {
            Protocol::Volley { .. } => {
                // Chat frames are most of the traffic: no JSON tree for them.
                if frame.contains(r#""t":"chat""#) {
                    return match marker(frame) {
                        Some((seq, sent_us)) => Incoming::Chat { seq, sent_us },
                        None => Incoming::Other,
                    };
                }
                let Ok(v) = serde_json::from_str::<Value>(frame) else {
                    return Incoming::Other;
                };
                match v["t"].as_str() {
                    Some("pong") => Incoming::Pong {
                        c: v["c"].as_f64().unwrap_or(f64::NAN),
                        s: v["s"].as_f64().unwrap_or(f64::NAN),
                    },
                    Some("error") => Incoming::Refused {
                        seq: v["ref"]
                            .as_str()
                            .and_then(|r| r.strip_prefix('c'))
                            .and_then(|s| s.parse().ok()),
                        why: v["code"].as_str().unwrap_or("?").to_string(),
                    },
                    _ => Incoming::Other,
                }
            }
            Protocol::SocketIo { .. } => {
                if frame.starts_with("42") {
                    match marker(frame) {
                        Some((seq, sent_us)) => Incoming::Chat { seq, sent_us },
                        None => Incoming::Other,
                    }
                } else if frame == "2" {
                    Incoming::Reply("3")
                } else if frame == "1" || frame.starts_with("41") {
                    Incoming::Closed
                } else {
                    Incoming::Other
                }
            }
        }
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(c))) => bail!("closed by the server: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Servers

/// A server under test: started by the tool (stopped when dropped) or already running.
struct Peer {
    protocol: Protocol,
    pid: Option<u32>,
    /// Keeps a started process alive for the run.
    _process: Option<Process>,
}

enum Process {
    Volley(server::Server, PathBuf),
    Node(Child),
}

impl Drop for Process {
    fn drop(&mut self) {
        match self {
            Process::Volley(srv, dir) => {
                let _ = srv.child.kill();
                let _ = srv.child.wait();
                let _ = std::fs::remove_dir_all(dir);
            }
            Process::Node(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn event_file(id: &str, start: jiff::Timestamp) -> String {
    format!(
        "volley: 1\nevent: {id}\ntitle: Load premiere\nlabel: \"Premiere · pre-recorded\"\n\
         media: {{ url: \"https://example.com/v.mp4\", duration: 2h }}\ntimezone: UTC\n\
         schedule: {{ once: \"{start}\" }}\n"
    )
}

/// The id of the showing of `event` live now, from `GET /api/events/{id}`.
async fn live_showing(addr: &str, event: &str) -> anyhow::Result<Option<String>> {
    let v = http::json(addr, "GET", &format!("/api/events/{event}"), None, None).await?;
    let now = jiff::Timestamp::now();
    let mut candidates: Vec<&Value> = v["occurrences"].as_array().into_iter().flatten().collect();
    candidates.push(&v["next"]);
    for o in candidates {
        let at = |k: &str| {
            o[k].as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        };
        if let (Some(start), Some(end), Some(id)) =
            (at("starts_at"), at("ends_at"), o["id"].as_str())
            && start <= now
            && now < end
        {
            return Ok(Some(id.to_string()));
        }
    }
    Ok(None)
}

fn volley_path(event: &str, showing: &str) -> String {
    let showing = showing.replace('@', "%40").replace(':', "%3A");
    format!("/events/{event}/ws?showing={showing}")
}

/// Starts Volley with an event whose only showing began ten seconds ago (or uses the
/// running one given).
async fn volley_peer(t: &VolleyTarget) -> anyhow::Result<Peer> {
    if let Some(addr) = &t.volley_addr {
        let showing = match &t.showing {
            Some(s) => Some(s.clone()),
            None => live_showing(addr, &t.event).await?,
        };
        let path = match showing {
            Some(s) => volley_path(&t.event, &s),
            None => format!("/events/{}/ws", t.event),
        };
        return Ok(Peer {
            protocol: Protocol::Volley {
                addr: addr.clone(),
                path,
            },
            pid: t.volley_pid,
            _process: None,
        });
    }
    let dir = std::env::temp_dir().join(format!("volley-premiere-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows"))?;
    let start = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 10)?;
    std::fs::write(
        dir.join("flows").join(format!("{EVENT}.yaml")),
        event_file(EVENT, start),
    )?;
    let mut srv = server::start(&t.volley, &dir, free_port()?, &[]).with_context(|| {
        format!(
            "run {} (cargo build --release -p volley)",
            t.volley.display()
        )
    })?;
    ready(&mut srv).await.with_context(|| {
        format!(
            "server log: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        )
    })?;
    let addr = srv.addr.clone();
    // The listing may name the live showing (it lists those starting from now on);
    // its id is `{event}@{start}` in any case.
    let showing = match live_showing(&addr, EVENT).await {
        Ok(Some(id)) => id,
        _ => format!("{EVENT}@{}", start.strftime("%Y-%m-%dT%H:%M:%SZ")),
    };
    Ok(Peer {
        protocol: Protocol::Volley {
            addr,
            path: volley_path(EVENT, &showing),
        },
        pid: Some(srv.child.id()),
        _process: Some(Process::Volley(srv, dir)),
    })
}

/// Starts `node bench/socketio/server.js` on a free port (or uses the running one given).
async fn socketio_peer(a: &Args) -> anyhow::Result<Peer> {
    if let Some(addr) = &a.socketio_addr {
        return Ok(Peer {
            protocol: Protocol::SocketIo { addr: addr.clone() },
            pid: a.socketio_pid,
            _process: None,
        });
    }
    let modules = a
        .socketio_server
        .parent()
        .unwrap_or(Path::new("."))
        .join("node_modules/socket.io");
    ensure!(
        modules.exists(),
        "{} is missing: run `npm ci --prefix {}` first",
        modules.display(),
        a.socketio_server
            .parent()
            .unwrap_or(Path::new("."))
            .display()
    );
    let mut child = Command::new(&a.node)
        .arg(&a.socketio_server)
        .arg(free_port()?.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", a.node.display()))?;
    let stdout = child.stdout.take().context("node's stdout")?;
    let process = Process::Node(child);
    // Its first line is {"pid":…,"port":…} once it listens.
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await
    .context("the socket.io server did not start in 30 s")???;
    let started: Value = serde_json::from_str(&line)
        .with_context(|| format!("the socket.io server said {line:?}"))?;
    let port = started["port"].as_u64().context("port")?;
    let Process::Node(child) = &process else {
        unreachable!()
    };
    Ok(Peer {
        protocol: Protocol::SocketIo {
            addr: format!("127.0.0.1:{port}"),
        },
        pid: Some(child.id()),
        _process: Some(process),
    })
}

// ---------------------------------------------------------------------------------
// The chat run

/// What every viewer of one run shares.
struct Shared {
    /// Messages in the run.
    total: usize,
    latency: Histogram,
    /// Distinct messages received by viewers still connected.
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    sent: Vec<AtomicBool>,
    sent_count: AtomicU64,
    refused: Vec<AtomicBool>,
    refused_count: AtomicU64,
    refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Viewers connected and not dropped.
    alive: AtomicUsize,
    /// Orders a sender could not carry out (its connection was gone).
    send_failed: AtomicU64,
    join_errors: std::sync::Mutex<Vec<String>>,
}

struct ViewerEnd {
    connected: bool,
    dropped: bool,
    received: Vec<u64>,
}

async fn next_order(orders: &mut Option<mpsc::UnboundedReceiver<u64>>) -> Option<u64> {
    match orders {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn viewer(
    i: usize,
    protocol: Arc<Protocol>,
    shared: Arc<Shared>,
    ready: oneshot::Sender<bool>,
    mut orders: Option<mpsc::UnboundedReceiver<u64>>,
    mut stop: watch::Receiver<bool>,
) -> ViewerEnd {
    let sender = orders.is_some();
    let joined = tokio::time::timeout(JOIN_TIMEOUT, async {
        let (mut ws, _) = protocol.join().await?;
        if sender {
            protocol.set_name(&mut ws, &format!("v{i}")).await?;
        }
        anyhow::Ok(ws)
    })
    .await
    .map_err(|_| anyhow::anyhow!("no join in {JOIN_TIMEOUT:?}"))
    .and_then(|r| r);
    let mut ws = match joined {
        Ok(ws) => ws,
        Err(e) => {
            let mut errors = shared.join_errors.lock().unwrap();
            if errors.len() < 5 {
                errors.push(format!("{e:#}"));
            }
            drop(errors);
            let _ = ready.send(false);
            if let Some(rx) = &mut orders {
                rx.close();
            }
            return ViewerEnd {
                connected: false,
                dropped: false,
                received: Vec::new(),
            };
        }
    };
    shared.alive.fetch_add(1, Ordering::Relaxed);
    let _ = ready.send(true);
    let mut received = vec![0u64; shared.total.div_ceil(64)];
    let mut mine = 0;
    let mut dropped = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            order = next_order(&mut orders) => match order {
                Some(seq) => {
                    let text = format!("pm:{seq}:{} from v{i}", now_us());
                    if ws.send(Message::Text(protocol.chat(seq, &text).into())).await.is_err() {
                        shared.send_failed.fetch_add(1, Ordering::Relaxed);
                        dropped = true;
                        break;
                    }
                    shared.sent[seq as usize].store(true, Ordering::Relaxed);
                    shared.sent_count.fetch_add(1, Ordering::Relaxed);
                }
                None => orders = None,
            },
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => match protocol.decode(&t) {
                    Incoming::Chat { seq, sent_us } if (seq as usize) < shared.total => {
                        shared.latency.record(now_us().saturating_sub(sent_us));
                        let (word, bit) = (seq as usize / 64, 1u64 << (seq % 64));
                        if received[word] & bit != 0 {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        } else {
                            received[word] |= bit;
                            mine += 1;
                            shared.deliveries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Incoming::Refused { seq, why } => {
                        if let Some(seq) = seq.filter(|s| (*s as usize) < shared.total)
                            && !shared.refused[seq as usize].swap(true, Ordering::Relaxed)
                        {
                            shared.refused_count.fetch_add(1, Ordering::Relaxed);
                        }
                        *shared.refusals.lock().unwrap().entry(why).or_default() += 1;
                    }
                    Incoming::Reply(r) if ws.send(Message::Text(r.into())).await.is_err() => {
                        dropped = true;
                        break;
                    }
                    Incoming::Closed => {
                        dropped = true;
                        break;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    dropped = true;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    if dropped {
        shared.alive.fetch_sub(1, Ordering::Relaxed);
        shared.deliveries.fetch_sub(mine, Ordering::Relaxed);
        // A sender gone: the orders still queued for it fail.
        if let Some(rx) = &mut orders {
            rx.close();
            while rx.try_recv().is_ok() {
                shared.send_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    ViewerEnd {
        connected: true,
        dropped,
        received,
    }
}

async fn run_peer(a: &Args, peer: Peer) -> anyhow::Result<Value> {
    let name = peer.protocol.name();
    let total = match a.duration {
        Some(d) => (a.rate * d).ceil() as usize,
        None => a.messages,
    };
    let senders = a
        .senders
        .unwrap_or(a.rate.ceil() as usize)
        .clamp(1, a.viewers.max(1));
    eprintln!(
        "{name}: {} viewers, {total} messages at {}/s from {senders} senders",
        a.viewers, a.rate
    );
    let hold = Duration::from_secs_f64(a.hold);
    let load_start = machine_load();
    tokio::time::sleep(hold).await;
    let rss_before = peer.pid.and_then(crate::rss_kib);
    let cpu_start = peer.pid.and_then(cpu_seconds);

    let shared = Arc::new(Shared {
        total,
        latency: Histogram::new(),
        deliveries: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        sent: (0..total).map(|_| AtomicBool::new(false)).collect(),
        sent_count: AtomicU64::new(0),
        refused: (0..total).map(|_| AtomicBool::new(false)).collect(),
        refused_count: AtomicU64::new(0),
        refusals: Default::default(),
        alive: AtomicUsize::new(0),
        send_failed: AtomicU64::new(0),
        join_errors: Default::default(),
    });
    let protocol = Arc::new(peer.protocol.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut orders = Vec::with_capacity(senders);
    let mut tasks = Vec::with_capacity(a.viewers);
    let mut connected = 0;
    let started = Instant::now();
    for chunk in (0..a.viewers).collect::<Vec<_>>().chunks(a.batch.max(1)) {
        let mut ramp = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let (ready_tx, ready_rx) = oneshot::channel();
            let rx = (i < senders).then(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                orders.push(tx);
                rx
            });
            tasks.push(tokio::spawn(viewer(
                i,
                protocol.clone(),
                shared.clone(),
                ready_tx,
                rx,
                stop_rx.clone(),
            )));
            ramp.push(ready_rx);
        }
        for r in ramp {
            connected += usize::from(r.await.unwrap_or(false));
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let cpu_connected = peer.pid.and_then(cpu_seconds);
    tokio::time::sleep(hold).await;
    let rss_after = peer.pid.and_then(crate::rss_kib);
    eprintln!("{name}: {connected} connected in {connect_secs:.1} s; sending");

    // Message k is sent by sender k mod senders at start + k / rate.
    let cpu_send = peer.pid.and_then(cpu_seconds);
    let client_cpu_send = cpu_seconds(std::process::id());
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let start = tokio::time::Instant::now();
    let mut dispatched = 0u64;
    for k in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
        if orders[k % senders].send(k as u64).is_ok() {
            dispatched += 1;
        } else {
            shared.send_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(orders);
    let send_secs = start.elapsed().as_secs_f64();
    // Until every connected viewer holds every accepted message, or --drain runs out.
    let last_sent = Instant::now();
    let deadline = last_sent + Duration::from_secs_f64(a.drain);
    let complete = loop {
        let sent = shared.sent_count.load(Ordering::Relaxed);
        let settled = sent + shared.send_failed.load(Ordering::Relaxed) >= dispatched;
        let accepted = sent.saturating_sub(shared.refused_count.load(Ordering::Relaxed));
        let want = accepted * shared.alive.load(Ordering::Relaxed) as u64;
        if settled && shared.deliveries.load(Ordering::Relaxed) >= want {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let drain_secs = last_sent.elapsed().as_secs_f64();
    let cpu_end = peer.pid.and_then(cpu_seconds);
    let rss_end = peer.pid.and_then(crate::rss_kib);
    let load_end = machine_load();
    let client_cpu_end = cpu_seconds(std::process::id());
    let _ = stop_tx.send(true);

    let accepted: Vec<bool> = (0..total)
        .map(|k| {
            shared.sent[k].load(Ordering::Relaxed) && !shared.refused[k].load(Ordering::Relaxed)
        })
        .collect();
    let accepted_count = accepted.iter().filter(|a| **a).count() as u64;
    let (mut healthy, mut dropped, mut failed) = (0u64, 0u64, 0u64);
    let (mut lost, mut lossy) = (0u64, 0u64);
    for t in tasks {
        let end = t.await?;
        if !end.connected {
            failed += 1;
        } else if end.dropped {
            dropped += 1;
        } else {
            healthy += 1;
            let missing = accepted
                .iter()
                .enumerate()
                .filter(|(k, a)| **a && end.received[k / 64] & (1 << (k % 64)) == 0)
                .count() as u64;
            lost += missing;
            lossy += u64::from(missing > 0);
        }
    }
    let l = &shared.latency;
    let rss_per_viewer_kb = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Some(round2(
            a.saturating_sub(b) as f64 * 1024.0 / 1000.0 / connected as f64,
        )),
        _ => None,
    };
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| round2(b - a));
    let errors = shared.join_errors.lock().unwrap().clone();
    let refusals = shared.refusals.lock().unwrap().clone();
    Ok(json!({
        "peer": name,
        "viewers": a.viewers,
        "connected": connected,
        "failed_connections": failed,
        "join_errors": errors,
        "connect_seconds": round2(connect_secs),
        "senders": senders,
        "messages": total,
        "sent": shared.sent_count.load(Ordering::Relaxed),
        "not_sent": shared.send_failed.load(Ordering::Relaxed),
        "refused": shared.refused_count.load(Ordering::Relaxed),
        "refusals": refusals,
        "accepted": accepted_count,
        "send_seconds": round2(send_secs),
        "all_delivered": complete,
        "drain_seconds": round2(drain_secs),
        "deliveries": l.count.load(Ordering::Relaxed),
        "deliveries_per_second": (l.count.load(Ordering::Relaxed) as f64 / (send_secs + drain_secs)).round(),
        "duplicates": shared.duplicates.load(Ordering::Relaxed),
        "latency_ms": {
            "p50": ms(l.quantile(0.50)),
            "p99": ms(l.quantile(0.99)),
            "max": ms(l.max.load(Ordering::Relaxed)),
        },
        "healthy_receivers": healthy,
        "lost_by_healthy": lost,
        "healthy_receivers_with_loss": lossy,
        "dropped_connections": dropped,
        "server_pid": peer.pid,
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "server_rss_after_mib": rss_after.map(|k| round2(k as f64 / 1024.0)),
        "rss_per_viewer_kb": rss_per_viewer_kb,
        "server_rss_end_mib": rss_end.map(|k| round2(k as f64 / 1024.0)),
        "server_cpu_seconds_connecting": diff(cpu_start, cpu_connected),
        "server_cpu_seconds_messages": diff(cpu_send, cpu_end),
        // CPU time the server spent per message delivered to a viewer (µs).
        "server_cpu_us_per_delivery": diff(cpu_send, cpu_end)
            .filter(|_| l.count.load(Ordering::Relaxed) > 0)
            .map(|c| round2(c * 1e6 / l.count.load(Ordering::Relaxed) as f64)),
        "client_cpu_seconds_messages": diff(client_cpu_send, client_cpu_end),
        "machine_at_start": load_start,
        "machine_at_end": load_end,
    }))
}

pub async fn run(a: Args) -> anyhow::Result<Value> {
    ensure!(a.rate > 0.0, "--rate must be positive");
    check_open_files(a.viewers)?;
    let mut peers = serde_json::Map::new();
    if matches!(a.peer, PeerChoice::Socketio | PeerChoice::Both) {
        let peer = socketio_peer(&a).await?;
        peers.insert("socketio".into(), run_peer(&a, peer).await?);
    }
    if matches!(a.peer, PeerChoice::Volley | PeerChoice::Both) {
        let peer = volley_peer(&a.target).await?;
        peers.insert("volley".into(), run_peer(&a, peer).await?);
    }
    let ratio = |path: &[&str]| {
        let get = |p: &str| {
            path.iter()
                .fold(&peers[p], |v, k| &v[*k])
                .as_f64()
                .filter(|x| *x > 0.0)
        };
        peers
            .contains_key("volley")
            .then_some(())
            .and(peers.contains_key("socketio").then_some(()))
            .and_then(|_| Some(round2(get("volley")? / get("socketio")?)))
    };
    let ratios = json!({
        "p99_latency_volley_over_socketio": ratio(&["latency_ms", "p99"]),
        "rss_per_viewer_volley_over_socketio": ratio(&["rss_per_viewer_kb"]),
    });
    Ok(json!({
        "scenario": "premiere",
        "mode": if a.duration.is_some() { "sustained" } else { "burst" },
        "viewers": a.viewers,
        "rate_per_second": a.rate,
        "duration_seconds": a.duration,
        "peers": peers,
        "ratios": ratios,
    }))
}

// ---------------------------------------------------------------------------------
// premiere-sync

/// One simulated viewer: its clock is `skew_ms` off; it runs the clock-offset protocol
/// and returns its live-position error (ms) and its round-trip delays.
async fn sync_viewer(
    protocol: Arc<Protocol>,
    skew_ms: f64,
    start_delay: Duration,
    o: Arc<(usize, u64)>,
    ready: oneshot::Sender<bool>,
    mut go: watch::Receiver<bool>,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let (pings, interval) = (o.0, Duration::from_millis(o.1));
    let joined = tokio::time::timeout(JOIN_TIMEOUT, protocol.join()).await;
    let (mut ws, hello) = match joined {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => {
            let _ = ready.send(false);
            return Err(e);
        }
        Err(_) => {
            let _ = ready.send(false);
            bail!("no hello in {JOIN_TIMEOUT:?}");
        }
    };
    let starts_at = hello["showing"]["starts_at"]
        .as_f64()
        .context("hello has no showing.starts_at")?;
    let _ = ready.send(true);
    let _ = go.wait_for(|g| *g).await;
    // The viewer's own clock, in ms: the machine's plus its skew.
    let local_ms = || now_us() as f64 / 1000.0 + skew_ms;
    tokio::time::sleep(start_delay).await;
    let mut ticker = tokio::time::interval(interval);
    let mut sent: Vec<(u64, f64)> = Vec::new(); // (c, t0)
    let mut samples: Vec<(f64, f64)> = Vec::new(); // (delay, offset)
    let mut deadline = None;
    while samples.len() < pings {
        tokio::select! {
            _ = ticker.tick(), if sent.len() < pings => {
                let t0 = local_ms();
                let c = t0.round() as u64;
                ws.send(Message::Text(protocol.ping(c).into())).await?;
                sent.push((c, t0));
                if sent.len() == pings {
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            frame = ws.next() => {
                let t = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    other => bail!("connection lost: {other:?}"),
                };
                if let Incoming::Pong { c, s } = protocol.decode(&t) {
                    let t3 = local_ms();
                    if let Some(&(_, t0)) = sent.iter().find(|(sc, _)| *sc as f64 == c) {
                        samples.push((t3 - t0, s - (t0 + t3) / 2.0));
                    }
                }
            }
        }
    }
    ensure!(!samples.is_empty(), "no pong");
    let delays: Vec<f64> = samples.iter().map(|s| s.0).collect();
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let best = &samples[..samples.len().min(3)];
    let offset = best.iter().map(|s| s.1).sum::<f64>() / best.len() as f64;
    // The same instant on both clocks: the viewer's estimate and the truth.
    let now = now_us() as f64 / 1000.0;
    let estimated = (now + skew_ms + offset) - starts_at;
    let truth = now - starts_at;
    Ok((estimated - truth, delays))
}

/// A viewer that posts a chat message every `every` from `go` until `done`; returns how
/// many it sent.
async fn chatter(
    protocol: Arc<Protocol>,
    i: usize,
    every: Duration,
    offset: Duration,
    mut go: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let (mut ws, _) = protocol.join().await?;
    protocol.set_name(&mut ws, &format!("chatter{i}")).await?;
    let _ = go.wait_for(|g| *g).await;
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(every);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = done.changed() => break,
            _ = tick.tick() => {
                let text = format!("pm:{seq}:{} from chatter{i}", now_us());
                ws.send(Message::Text(protocol.chat(seq, &text).into())).await?;
                seq += 1;
            }
            frame = ws.next() => match frame {
                Some(Ok(_)) => {}
                other => bail!("chatter {i} lost its connection: {other:?}"),
            },
        }
    }
    Ok(seq)
}

pub async fn sync(a: SyncArgs) -> anyhow::Result<Value> {
    check_open_files(a.viewers)?;
    let peer = volley_peer(&a.target).await?;
    let protocol = Arc::new(peer.protocol.clone());
    let mut rng = Rng(a.seed);
    let (go_tx, go_rx) = watch::channel(false);
    let opts = Arc::new((a.pings, a.interval_ms));
    let mut tasks = Vec::with_capacity(a.viewers);
    let mut skews = Vec::with_capacity(a.viewers);
    let mut connected = 0;
    let (done_tx, done_rx) = watch::channel(false);
    let chatters: Vec<_> = if a.chat_rate > 0.0 {
        let n = a.chat_rate.ceil() as usize;
        let every = Duration::from_secs_f64(n as f64 / a.chat_rate);
        (0..n)
            .map(|i| {
                tokio::spawn(chatter(
                    protocol.clone(),
                    i,
                    every,
                    every.mul_f64(i as f64 / n as f64),
                    go_rx.clone(),
                    done_rx.clone(),
                ))
            })
            .collect()
    } else {
        Vec::new()
    };
    for chunk in (0..a.viewers).collect::<Vec<_>>().chunks(a.batch.max(1)) {
        let mut ramp = Vec::new();
        for _ in chunk {
            let skew = (rng.unit() * 2.0 - 1.0) * a.skew_ms;
            skews.push(skew.abs());
            // Viewers do not all ping in the same millisecond.
            let delay = Duration::from_micros((rng.unit() * a.interval_ms as f64 * 1000.0) as u64);
            let (ready_tx, ready_rx) = oneshot::channel();
            tasks.push(tokio::spawn(sync_viewer(
                protocol.clone(),
                skew,
                delay,
                opts.clone(),
                ready_tx,
                go_rx.clone(),
            )));
            ramp.push(ready_rx);
        }
        for r in ramp {
            connected += usize::from(r.await.unwrap_or(false));
        }
    }
    let started = Instant::now();
    let load_start = machine_load();
    let _ = go_tx.send(true);
    let mut errors = Vec::new();
    let mut delays = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await? {
            Ok((e, d)) => {
                errors.push(e);
                delays.extend(d);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    let mut chat_sent = 0;
    for c in chatters {
        match c.await? {
            Ok(n) => chat_sent += n,
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    delays.sort_by(f64::total_cmp);
    skews.sort_by(f64::total_cmp);
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    let p99 = quantile(&abs, 0.99);
    Ok(json!({
        "scenario": "premiere-sync",
        "viewers": a.viewers,
        "connected": connected,
        "measured": errors.len(),
        "failed": failures.len(),
        "failures": failures.iter().take(5).collect::<Vec<_>>(),
        "pings_per_viewer": a.pings,
        "ping_interval_ms": a.interval_ms,
        "clock_skew_ms": format!("±{}", a.skew_ms),
        "skew_abs_p99_ms": round2(quantile(&skews, 0.99)),
        "chat_rate_per_second": a.chat_rate,
        "chat_messages_sent": chat_sent,
        "live_position_error_ms": {
            "p50": round2(quantile(&abs, 0.50)),
            "p99": round2(p99),
            "max": round2(quantile(&abs, 1.0)),
            "mean_signed": round2(mean),
        },
        "round_trip_ms": {
            "p50": round2(quantile(&delays, 0.50)),
            "p99": round2(quantile(&delays, 0.99)),
            "max": round2(quantile(&delays, 1.0)),
        },
        "target_p99_ms": 100,
        "met": p99 < 100.0,
        "seconds": round2(secs),
        "server_rss_mib": peer.pid.and_then(crate::rss_kib).map(|k| round2(k as f64 / 1024.0)),
        "machine_at_start": load_start,
        "machine_at_end": machine_load(),
    }))
}
