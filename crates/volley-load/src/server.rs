//! Real `volley serve` processes for the crash test and the timer benchmarks: started
//! on a loopback port with a data directory, waited for, killed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::http;

/// The admin key the server processes are started with.
pub const KEY: &str = "load-test-admin-key";

pub struct Server {
    pub child: Child,
    pub addr: String,
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn start(volley: &Path, dir: &Path, port: u16, extra: &[&str]) -> anyhow::Result<Server> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    let child = Command::new(volley)
        .args(["serve", "--no-demo", "--pacing", "off", "--admin-key", KEY])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(dir.join("volley.db"))
        .arg("--flows")
        .arg(dir.join("flows"))
        .args(extra)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot run {}", volley.display()))?;
    Ok(Server {
        child,
        addr: format!("127.0.0.1:{port}"),
    })
}

pub async fn ready(server: &mut Server) -> anyhow::Result<()> {
    for _ in 0..3000 {
        if let Some(status) = server.child.try_wait()? {
            bail!("the server exited at start-up: {status}");
        }
        if let Ok((200, _)) = http::request(&server.addr, "GET", "/healthz", None, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the server did not become ready in 30 s")
}

/// A server left running when a run fails is stopped with it.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.child.id())
    }

    /// Resident memory split into anonymous (heap) and file-backed (the database
    /// mapped into memory) KiB, from /proc/PID/smaps_rollup.
    pub fn rss_split_kib(&self) -> Option<(u64, u64)> {
        let text =
            std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id())).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        };
        Some((
            field("Anonymous:")?,
            field("Rss:")?.saturating_sub(field("Anonymous:")?),
        ))
    }
}
