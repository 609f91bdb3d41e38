//! The crash test: real server processes, `kill -9` while thousands of timers fire,
//! a restart, and a check in the database that every timer fired exactly once and no
//! answer acknowledged to a participant was lost.
//!
//! A campaign for `contacts` contacts starts a flow that waits two seconds and then
//! sends a follow-up: `2 × contacts` timers (the sends, then the waits' wake-ups).
//! Meanwhile participants answer questions over WebSocket and record every
//! acknowledgement. The server is killed (SIGKILL) once a third of the sends went out,
//! restarted on the same database, and the run waits until no timer is left.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_tungstenite::tungstenite::Message;

use crate::http;
use crate::server::{self, KEY, free_port, ready};

const PING: &str = "volley: 1
id: ping
title: Ping (crash test)
pacing: { off: true }
steps:
  - say: Hello {{ contact.name }}
  - wait: 2s
  - say: Follow-up
  - end: done
";

const LOOP: &str = "volley: 1
id: answers
title: Endless answers (crash test)
pacing: { off: true }
steps:
  - ask: text
    id: q
    save: x
  - goto: q
";

/// A participant: answers every question, recording each acknowledged answer, until
/// the connection drops.
async fn participant(url: String, acked: Arc<Mutex<Vec<(String, String)>>>, n: usize) {
    let Ok((mut ws, welcome)) = crate::open(&url, "answers").await else {
        return;
    };
    let conversation = welcome["conversation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut k = 0;
    let mut pending: Option<String> = None;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap_or_default();
        if v["type"] == "ack" {
            if let Some(id) = pending.take().filter(|id| v["id"] == id.as_str()) {
                acked.lock().expect("lock").push((conversation.clone(), id));
            }
        } else if v["type"] == "event" && v["event"]["kind"] == "ask" {
            k += 1;
            let id = format!("p{n}-{k}");
            let frame =
                json!({"type": "answer", "id": id, "step": "q", "text": format!("answer {k}")});
            pending = Some(id);
            if ws
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn campaign(addr: &str, id: &str) -> anyhow::Result<Value> {
    http::json(
        addr,
        "GET",
        &format!("/api/campaigns/{id}"),
        Some(KEY),
        None,
    )
    .await
}

async fn count(db: &mut sqlx::SqliteConnection, sql: &str, bind: &str) -> anyhow::Result<i64> {
    let row: (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(bind)
        .fetch_one(&mut *db)
        .await?;
    Ok(row.0)
}

async fn pending_timers(db: &mut sqlx::SqliteConnection) -> anyhow::Result<i64> {
    let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM timers")
        .fetch_one(&mut *db)
        .await?;
    Ok(row.0)
}

pub async fn run(volley: PathBuf, timers: usize, participants: usize) -> anyhow::Result<Value> {
    let contacts = (timers / 2).max(1);
    let dir = std::env::temp_dir().join(format!("volley-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows"))?;
    std::fs::write(dir.join("flows/ping.yaml"), PING)?;
    std::fs::write(dir.join("flows/answers.yaml"), LOOP)?;
    let port = free_port()?;
    let mut server = server::start(&volley, &dir, port, &[])?;
    ready(&mut server).await?;
    let addr = server.addr.clone();

    let mut csv = String::from("external_id,name\n");
    for i in 0..contacts {
        csv.push_str(&format!("c{i},Contact {i}\n"));
    }
    http::json(&addr, "POST", "/api/contacts/import", Some(KEY), Some(&csv)).await?;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let spec = json!({
        "name": "crash test", "flow": "ping", "audience": {"all": true},
        "schedule": {"at": at.to_string()}, "late": "fire",
    });
    let created = http::json(
        &addr,
        "POST",
        "/api/campaigns",
        Some(KEY),
        Some(&spec.to_string()),
    )
    .await?;
    let id = created["id"].as_str().context("campaign id")?.to_string();
    ensure!(created["pending"] == contacts, "planned sends: {created}");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let url = format!("ws://{addr}/ws");
    let answering: Vec<_> = (0..participants)
        .map(|n| tokio::spawn(participant(url.clone(), acked.clone(), n)))
        .collect();

    // Kill mid-firing.
    let started = Instant::now();
    let killed_at_sent = loop {
        let c = campaign(&addr, &id).await?;
        let sent = c["sent"].as_i64().unwrap_or(0);
        if sent as usize >= contacts / 3 {
            break sent;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "sends never started: {c}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.child.kill()?; // SIGKILL
    server.child.wait()?;
    for a in answering {
        let _ = a.await;
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));

    // Restart on the same database and wait for every timer to fire.
    let restarted = Instant::now();
    let mut server = server::start(&volley, &dir, port, &[])?;
    ready(&mut server).await?;
    let url = format!("sqlite://{}?mode=ro", dir.join("volley.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await?;
    let backlog = pending_timers(&mut db).await?;
    loop {
        let left = pending_timers(&mut db).await?;
        if left == 0 {
            break;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(900),
            "{left} timers never fired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = restarted.elapsed();
    let _ = server.child.kill();
    let _ = server.child.wait();

    // The proof, from the database.
    let origin = format!("campaign:{id}");
    let conversations = count(
        &mut db,
        "SELECT COUNT(*) FROM conversations WHERE origin = ?",
        &origin,
    )
    .await?;
    let distinct_contacts = count(
        &mut db,
        "SELECT COUNT(DISTINCT contact_id) FROM conversations WHERE origin = ?",
        &origin,
    )
    .await?;
    let ended = count(
        &mut db,
        "SELECT COUNT(*) FROM conversations WHERE origin = ? AND status = 'ended'",
        &origin,
    )
    .await?;
    let follow_ups = count(
        &mut db,
        "SELECT COUNT(*) FROM events e JOIN conversations c ON e.conversation = c.no
         WHERE c.origin = ? AND e.kind = 'message' AND json_extract(e.data, '$.text') = 'Follow-up'",
        &origin,
    )
    .await?;
    let most_follow_ups = count(
        &mut db,
        "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM events e JOIN conversations c ON e.conversation = c.no
         WHERE c.origin = ? AND e.kind = 'message' AND json_extract(e.data, '$.text') = 'Follow-up' GROUP BY e.conversation)",
        &origin,
    )
    .await?;
    let mut lost_answers = 0;
    for (conversation, client_id) in &acked {
        let found: Option<(i64,)> = sqlx::query_as(
            "SELECT e.seq FROM events e JOIN conversations c ON e.conversation = c.no WHERE c.id = ? AND e.client_id = ?",
        )
        .bind(conversation)
        .bind(client_id)
        .fetch_optional(&mut db)
        .await?;
        lost_answers += found.is_none() as usize;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let n = contacts as i64;
    let report = json!({
        "scenario": "crash",
        "timers": 2 * contacts,
        "killed_after_sends": killed_at_sent,
        "backlog_at_restart": backlog,
        "seconds_to_drain_after_restart": (drained.as_secs_f64() * 10.0).round() / 10.0,
        "conversations_started": conversations,
        "contacts_reached": distinct_contacts,
        "conversations_ended": ended,
        "follow_ups": follow_ups,
        "most_follow_ups_in_one_conversation": most_follow_ups,
        "answers_acknowledged_before_kill": acked.len(),
        "acknowledged_answers_lost": lost_answers,
    });
    ensure!(
        conversations == n && distinct_contacts == n && ended == n,
        "every send exactly once: {report}"
    );
    ensure!(
        follow_ups == n && most_follow_ups == 1,
        "every wait exactly once: {report}"
    );
    ensure!(
        lost_answers == 0 && !acked.is_empty(),
        "acknowledged answers: {report}"
    );
    Ok(report)
}
