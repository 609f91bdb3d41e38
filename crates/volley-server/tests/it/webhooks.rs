//! Outbound webhooks through the real server: a conversation and a premiere produce
//! signed deliveries (checked by the reference implementation, the PyPI package
//! `standardwebhooks`), failures are retried on the schedule in virtual time and then
//! dead-lettered, replays send the same message again, a restart loses and repeats
//! nothing, and private addresses are refused unless allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use reqwest::header::{CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use volley_server::handoff::{self, Actor, AgentInfo, Desk};
use volley_server::webhooks::RETRY_MS;
use volley_server::{Clock, Config, ManualClock};
use volley_store::Store;

use crate::support::*;

/// Verifies requests with the reference implementation: reads
/// `[{"headers": {…}, "body": "…"}]` on stdin, prints `[{"ok": …, "type"|"error": …}]`.
const REFERENCE: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook

webhook = Webhook(sys.argv[1])
out = []
for r in json.load(sys.stdin):
    try:
        payload = webhook.verify(r["body"], r["headers"])
        out.append({"ok": True, "type": payload["type"]})
    except Exception as e:
        out.append({"ok": False, "error": str(e)})
print(json.dumps(out))
"#;

/// The reference's verdict on each request (`None`: skipped, when python3 cannot import
/// `standardwebhooks` and `VOLLEY_WEBHOOK_TESTS` is not `1`).
fn reference_verify(secret: &str, requests: &[(HeaderMap, Vec<u8>)]) -> Option<Vec<Value>> {
    let required = std::env::var("VOLLEY_WEBHOOK_TESTS").is_ok_and(|v| v == "1");
    let available = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            !required,
            "VOLLEY_WEBHOOK_TESTS=1 but python3 cannot import standardwebhooks \
             (pip install standardwebhooks)"
        );
        eprintln!("skipping the reference check: python3 cannot import standardwebhooks");
        return None;
    }
    let input: Vec<Value> = requests
        .iter()
        .map(|(headers, body)| {
            let h: BTreeMap<&str, &str> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
                .collect();
            json!({"headers": h, "body": String::from_utf8_lossy(body)})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("verify.py");
    std::fs::write(&script, REFERENCE).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&input).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference script failed");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The signature checked here too (HMAC-SHA256 of `id.timestamp.body`, base64).
fn signed_with(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let h = |k: &str| headers[k].to_str().unwrap().to_string();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    h("webhook-signature").split(' ').any(|s| s == expected)
}

fn server_config(dir: &Path, allow_private: bool) -> Config {
    Config {
        allow_private_http: allow_private,
        ..config(dir)
    }
}

async fn start(clock: Option<Arc<ManualClock>>, allow_private: bool) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let cfg = server_config(dir.path(), allow_private);
    match clock {
        Some(c) => TestServer::start_on(dir, cfg, c).await,
        None => TestServer::start_with(dir, cfg).await,
    }
}

/// Adds an endpoint; returns its id and secret.
async fn add_endpoint(server: &TestServer, url: &str, types: Value) -> (String, String) {
    let (status, v) = api(
        server,
        "POST",
        "/api/webhooks",
        json!({"url": url, "types": types, "description": "test receiver"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (v["id"].as_str().unwrap().into(), secret)
}

async fn deliveries(server: &TestServer, endpoint: &str, query: &str) -> Vec<Value> {
    let (status, v) = api(
        server,
        "GET",
        &format!("/api/webhooks/{endpoint}/deliveries{query}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

/// Waits (briefly, in real time) until `ok` holds.
async fn until(what: &str, ok: impl Fn() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the server has recorded `n` attempts since it started.
async fn attempts(server: &TestServer, n: u64) {
    let mut rx = server.running.app.webhooks.attempts();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| *a >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} attempts were never recorded"))
        .unwrap();
}

fn body_of(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header(r: &Received, name: &str) -> String {
    r.headers[name].to_str().unwrap().to_string()
}

async fn start_conversation(server: &TestServer, flow: &str) -> String {
    let v: Value = http()
        .post(server.http("/api/conversations"))
        .json(&json!({"flow": flow}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["conversation"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_conversation_sends_signed_deliveries_of_every_type() {
    let all_rx = receiver().await;
    let some_rx = receiver().await;
    let server = start(None, true).await;
    let app = &server.running.app;
    let (all, secret) = add_endpoint(&server, &all_rx.url("ok"), json!(["*"])).await;
    let (some, some_secret) = add_endpoint(
        &server,
        &some_rx.url("ok"),
        json!(["goal.reached", "csat.submitted"]),
    )
    .await;
    let _agent = Desk::connect(
        app,
        AgentInfo {
            id: "a".into(),
            name: "Agent A".into(),
            capacity: 5,
        },
    );

    // Name, goal, hand-off; an agent takes it and resolves it; the participant rates.
    let mut c = Client::connect(&server, hello("hooks")).await;
    let conv = c.conversation();
    let ask = c.next_question().await;
    let id = c.fresh_id();
    let ack = c
        .input(json!({"type": "answer", "id": id, "step": ask["step"], "text": "Kim"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    c.until(|v| v["event"]["kind"] == "queue").await;
    let started = Instant::now();
    while app.store.handoff(&conv).await.unwrap().unwrap().status != "assigned" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never assigned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let agent = Actor {
        id: "a".into(),
        name: "Agent A".into(),
    };
    handoff::resolve(app, &conv, &agent, false, None)
        .await
        .unwrap();
    c.until(|v| v["event"]["kind"] == "end").await;
    let id = c.fresh_id();
    let ack = c.input(json!({"type": "rate", "id": id, "score": 4})).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    app.webhooks.settled(app).await;
    attempts(&server, 10).await;
    until("8 + 2 deliveries", || {
        all_rx.count() == 8 && some_rx.count() == 2
    })
    .await;

    let mut by_type: BTreeMap<String, (Value, String)> = BTreeMap::new();
    // What the reference implementation checks: every request, and one tampered with.
    let mut checked: Vec<(HeaderMap, Vec<u8>)> = Vec::new();
    for r in all_rx.requests.lock().unwrap().iter() {
        checked.push((r.headers.clone(), r.body.to_vec()));
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(signed_with(&secret, &r.headers, &r.body), "signed");
        assert!(!signed_with(&some_secret, &r.headers, &r.body));
        let body = body_of(r);
        let kind = body["type"].as_str().unwrap().to_string();
        let id = header(r, "webhook-id");
        assert!(id.starts_with("msg_"), "{id}");
        let ts: i64 = header(r, "webhook-timestamp").parse().unwrap();
        assert!((jiff::Timestamp::now().as_second() - ts).abs() < 300);
        assert!(by_type.insert(kind, (body, id)).is_none(), "one of each");
    }
    let types: Vec<&str> = by_type.keys().map(String::as_str).collect();
    assert_eq!(
        types,
        [
            "answer.submitted",
            "conversation.completed",
            "conversation.started",
            "csat.submitted",
            "goal.reached",
            "handoff.assigned",
            "handoff.requested",
            "handoff.resolved",
        ]
    );
    let ids: BTreeSet<&String> = by_type.values().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 8, "every message has its own id");
    let data = |t: &str| by_type[t].0["data"].clone();
    for (t, (body, _)) in &by_type {
        let d = &body["data"];
        assert_eq!(d["conversation_id"], conv.as_str(), "{t}");
        assert_eq!(d["flow_id"], "hooks", "{t}");
        assert!(
            d["contact"]["id"].as_str().unwrap().starts_with("ct"),
            "{t}"
        );
        let at: jiff::Timestamp = body["timestamp"].as_str().unwrap().parse().unwrap();
        assert!(
            (jiff::Timestamp::now() - at).get_seconds().abs() < 300,
            "{t}"
        );
    }
    assert_eq!(data("conversation.started")["origin"], Value::Null);
    let answer = data("answer.submitted");
    assert_eq!(
        (&answer["variable"], &answer["value"]),
        (&json!("name"), &json!("Kim"))
    );
    let goal = data("goal.reached");
    assert_eq!(
        (&goal["goal"], &goal["value"]),
        (&json!("named"), &json!(5.0))
    );
    let requested = data("handoff.requested");
    assert_eq!(
        (
            &requested["queue"],
            &requested["reason"],
            &requested["priority"]
        ),
        (&json!("support"), &json!("Help Kim"), &json!("normal")),
        "the default queue stands in for none"
    );
    let assigned = data("handoff.assigned");
    assert_eq!(assigned["agent"], json!({"id": "a", "name": "Agent A"}));
    assert_eq!(assigned["queue"], "support");
    assert_eq!(data("handoff.resolved")["agent"]["id"], "a");
    assert_eq!(data("conversation.completed")["outcome"], "resolved");
    assert_eq!(data("csat.submitted")["score"], 4);

    // The reference implementation agrees, and refuses a tampered body.
    let mut tampered = checked[0].clone();
    tampered.1[12] ^= 1;
    checked.push(tampered);
    if let Some(verdicts) = reference_verify(&secret, &checked) {
        let (last, good) = verdicts.split_last().unwrap();
        assert!(good.iter().all(|v| v["ok"] == true), "{verdicts:?}");
        assert_eq!(last["ok"], false, "a tampered body verifies: {last}");
    }

    // The other endpoint got its two types: the same messages (same ids).
    for r in some_rx.requests.lock().unwrap().iter() {
        assert!(signed_with(&some_secret, &r.headers, &r.body));
        let body = body_of(r);
        let (same, id) = &by_type[body["type"].as_str().unwrap()];
        assert_eq!((&body, id), (same, &header(r, "webhook-id")));
    }

    // The delivery log: every one delivered at the first attempt.
    let log = deliveries(&server, &all, "").await;
    assert_eq!(log.len(), 8);
    for d in &log {
        assert_eq!(
            (&d["status"], &d["attempts"]),
            (&json!("delivered"), &json!(1))
        );
        let a = &d["attempt_log"][0];
        assert_eq!(
            (&a["n"], &a["status"], &a["error"]),
            (&json!(1), &json!(204), &Value::Null)
        );
        let (body, id) = &by_type[d["type"].as_str().unwrap()];
        assert_eq!((&d["payload"], &d["message_id"]), (body, &json!(id)));
    }
    assert_eq!(
        deliveries(&server, &some, "?status=delivered").await.len(),
        2
    );
    assert!(deliveries(&server, &all, "?status=dead").await.is_empty());
    let page = deliveries(&server, &all, "?limit=3").await;
    assert_eq!(page.len(), 3);
    let (status, _) = api(
        &server,
        "GET",
        &format!("/api/webhooks/{all}/deliveries?status=lost"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 422);

    let (status, list) = api(&server, "GET", "/api/webhooks", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list[0].get("secret").is_none(), "secrets are shown once");
    assert_eq!(
        list[0]["deliveries"],
        json!({"pending": 0, "delivered": 8, "dead": 0})
    );
    assert_eq!(list[1]["types"], json!(["goal.reached", "csat.submitted"]));
    let metrics = http()
        .get(server.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("volley_webhook_deliveries_total{result=\"delivered\"}"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_then_dead_lettered_and_replayed() {
    let clock = Arc::new(ManualClock::new("2026-05-04T10:00:00Z".parse().unwrap()));
    let server = start(Some(clock.clone()), true).await;
    let rx = receiver().await;
    let (hook, secret) =
        add_endpoint(&server, &rx.url("fail"), json!(["conversation.started"])).await;
    start_conversation(&server, "quick").await;
    attempts(&server, 1).await;

    let only = |list: Vec<Value>| {
        assert_eq!(list.len(), 1, "{list:?}");
        list.into_iter().next().unwrap()
    };
    for (i, wait) in RETRY_MS.iter().enumerate() {
        let d = only(deliveries(&server, &hook, "").await);
        assert_eq!(
            (&d["status"], &d["attempts"]),
            (&json!("pending"), &json!(i + 1)),
            "{d}"
        );
        let now = clock.now().as_millisecond();
        assert_eq!(d["next_at"], now + wait, "retry {} after {wait} ms", i + 1);
        clock.advance(Duration::from_millis(*wait as u64));
        attempts(&server, i as u64 + 2).await;
    }
    let dead = only(deliveries(&server, &hook, "?status=dead").await);
    assert_eq!(
        (&dead["attempts"], &dead["next_at"]),
        (&json!(9), &Value::Null)
    );
    let log = dead["attempt_log"].as_array().unwrap();
    let start = log[0]["at"].as_i64().unwrap();
    let mut expected_at = start;
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a["n"], i + 1);
        assert_eq!(a["at"], expected_at);
        assert_eq!(a["status"], 500);
        assert_eq!(a["error"], "HTTP 500 Internal Server Error: database down");
        expected_at += RETRY_MS.get(i).copied().unwrap_or(0);
    }
    until("9 requests", || rx.count() == 9).await;
    let (first_id, first_body) = {
        let requests = rx.requests.lock().unwrap();
        let ids: BTreeSet<String> = requests.iter().map(|r| header(r, "webhook-id")).collect();
        assert_eq!(ids.len(), 1, "every attempt has the message's id");
        assert!(requests.iter().all(|r| r.body == requests[0].body));
        assert!(
            requests
                .iter()
                .all(|r| signed_with(&secret, &r.headers, &r.body))
        );
        (header(&requests[0], "webhook-id"), requests[0].body.clone())
    };
    assert_eq!(dead["message_id"], first_id.as_str());

    // A replay sends it again now; failing again, it starts the schedule afresh.
    let id = dead["id"].as_i64().unwrap();
    let (status, v) = api(
        &server,
        "POST",
        &format!("/api/webhooks/{hook}/deliveries/{id}/replay"),
        Value::Null,
    )
    .await;
    assert_eq!((status, &v["status"]), (202, &json!("pending")), "{v}");
    attempts(&server, 10).await;
    until("the replay", || rx.count() == 10).await;
    {
        let requests = rx.requests.lock().unwrap();
        assert_eq!(header(&requests[9], "webhook-id"), first_id);
        assert_eq!(requests[9].body, first_body);
    }
    let d = only(deliveries(&server, &hook, "").await);
    let now = clock.now().as_millisecond();
    assert_eq!(
        (&d["status"], &d["attempts"], &d["next_at"]),
        (&json!("pending"), &json!(10), &json!(now + RETRY_MS[0]))
    );
    for (path, code) in [
        (format!("/api/webhooks/{hook}/deliveries/999/replay"), 404),
        (format!("/api/webhooks/{hook}/deliveries/x/replay"), 404),
        (format!("/api/webhooks/wh_nope/deliveries/{id}/replay"), 404),
    ] {
        assert_eq!(
            api(&server, "POST", &path, Value::Null).await.0,
            code,
            "{path}"
        );
    }

    // The console lists it with a replay button (a form with the session's CSRF token);
    // the agent console links to it for admins.
    let admin = user(&server, "root@example.com", "admin").await;
    let desk = http()
        .get(server.http("/console"))
        .header(COOKIE, format!("volley_session={}", admin.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(desk.contains("href=\"/console/webhooks\""), "{desk}");
    let page = http()
        .get(server.http("/console/webhooks"))
        .header(COOKIE, format!("volley_session={}", admin.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&rx.url("fail")), "{page}");
    assert!(page.contains(&first_id) && page.contains("HTTP 500 Internal Server Error"));
    assert!(page.contains(&format!("name=\"csrf\" value=\"{}\"", admin.csrf)));
    let r = http()
        .post(server.http("/console/webhooks/replay"))
        .header(COOKIE, format!("volley_session={}", admin.token))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("csrf", &admin.csrf),
            ("endpoint", &hook),
            ("delivery", &id.to_string()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(
        to.starts_with(&format!("/console/webhooks?replayed={id}")),
        "{to}"
    );
    attempts(&server, 11).await;
    until("the console's replay", || rx.count() == 11).await;
    // Without the CSRF token, nothing is replayed.
    let r = http()
        .post(server.http("/console/webhooks/replay"))
        .header(COOKIE, format!("volley_session={}", admin.token))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("endpoint", &hook), ("delivery", &id.to_string())]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let agent = user(&server, "agent@example.com", "agent").await;
    let r = http()
        .get(server.http("/console/webhooks"))
        .header(COOKIE, format!("volley_session={}", agent.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let metrics = http()
        .get(server.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for result in ["retry", "dead"] {
        let line = format!("volley_webhook_deliveries_total{{result=\"{result}\"}}");
        assert!(metrics.contains(&line), "{line}");
    }
    server.stop().await;
}

/// A receiver that answers 500 while `failing`, else 204, and records every request.
struct Switch {
    addr: std::net::SocketAddr,
    failing: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<(StatusCode, Received)>>>,
}

type SwitchState = (Arc<AtomicBool>, Arc<Mutex<Vec<(StatusCode, Received)>>>);

async fn switch() -> Switch {
    let failing = Arc::new(AtomicBool::new(true));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                async |State((failing, requests)): State<SwitchState>,
                       headers: HeaderMap,
                       body: Bytes|
                       -> Response {
                    let status = if failing.load(Ordering::SeqCst) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    };
                    let r = Received {
                        path: "hook".into(),
                        headers,
                        body,
                    };
                    requests.lock().unwrap().push((status, r));
                    status.into_response()
                },
            ),
        )
        .with_state((failing.clone(), requests.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Switch {
        addr,
        failing,
        requests,
    }
}

#[tokio::test]
async fn a_restart_loses_and_repeats_nothing() {
    let clock = Arc::new(ManualClock::new("2026-05-04T10:00:00Z".parse().unwrap()));
    let hook = switch().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server =
        TestServer::start_on(dir.clone(), server_config(dir.path(), true), clock.clone()).await;
    let (endpoint, secret) =
        add_endpoint(&server, &format!("http://{}/hook", hook.addr), json!(["*"])).await;
    let mut convs = Vec::new();
    for _ in 0..3 {
        convs.push(start_conversation(&server, "quick").await);
    }
    // Each tried once (and failed): pending when the server stops.
    server
        .running
        .app
        .webhooks
        .settled(&server.running.app)
        .await;
    attempts(&server, 3).await;
    let before = server.running.app.store.log_cursors().await.unwrap();
    assert!(before.events > 0);
    let dir = server.stop().await;

    // The log moves on while no dispatcher runs (as between a commit and a crash).
    let db = dir.path().join("volley.db");
    let store =
        volley_store::SqliteStore::open(volley_store::SqliteOptions::new(db.display().to_string()))
            .await
            .unwrap();
    let row = store.conversation(&convs[0]).await.unwrap().unwrap();
    let at = clock.now().as_millisecond();
    store
        .append(volley_store::Append {
            conversation_id: row.id.clone(),
            after_seq: row.last_seq,
            events: vec![volley_store::NewEvent {
                kind: "goal".into(),
                at,
                visible_at: at,
                client_id: None,
                data: json!({"name": "offline", "value": 2.5}).to_string(),
            }],
            state: row.state.clone(),
            status: row.status.clone(),
            at,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.log_cursors().await.unwrap(), before);
    store.close().await;

    hook.failing.store(false, Ordering::SeqCst);
    let server =
        TestServer::start_on(dir.clone(), server_config(dir.path(), true), clock.clone()).await;
    let app = &server.running.app;
    app.webhooks.settled(app).await;
    // The new goal goes at once; the three pending ones when their retry is due.
    attempts(&server, 1).await;
    clock.advance(Duration::from_millis(RETRY_MS[0] as u64));
    attempts(&server, 4).await;

    let log = deliveries(&server, &endpoint, "").await;
    let mut kinds: Vec<&str> = log.iter().map(|d| d["type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "conversation.started",
            "conversation.started",
            "conversation.started",
            "goal.reached"
        ]
    );
    assert!(log.iter().all(|d| d["status"] == "delivered"), "{log:?}");
    // Each message id: failed once and delivered once (started), or delivered once.
    let mut by_id: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    {
        let requests = hook.requests.lock().unwrap();
        assert_eq!(requests.len(), 7, "3 failed, 3 retried, 1 new");
        for (status, r) in requests.iter() {
            assert!(signed_with(&secret, &r.headers, &r.body));
            by_id
                .entry(header(r, "webhook-id"))
                .or_default()
                .push(status.as_u16());
        }
    }
    assert_eq!(by_id.len(), 4);
    for d in &log {
        let id = d["message_id"].as_str().unwrap();
        let expected: &[u16] = if d["type"] == "goal.reached" {
            &[204]
        } else {
            &[500, 204]
        };
        assert_eq!(by_id[id], expected, "{d}");
    }
    let goal = log.iter().find(|d| d["type"] == "goal.reached").unwrap();
    assert_eq!(goal["payload"]["data"]["goal"], "offline");
    assert_eq!(
        goal["payload"]["data"]["conversation_id"],
        convs[0].as_str()
    );

    // Settled deliveries leave the log after the retention (30 days).
    clock.advance(Duration::from_secs(31 * 24 * 3600));
    let started = Instant::now();
    while !deliveries(&server, &endpoint, "").await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "never pruned");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, list) = api(&server, "GET", "/api/webhooks", Value::Null).await;
    assert_eq!(list[0]["id"], endpoint.as_str(), "the endpoint stays");
    server.stop().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed_and_endpoints_are_checked() {
    let rx = receiver().await;
    let server = start(None, false).await;
    let literal = add_endpoint(&server, &rx.url("ok"), json!(["conversation.started"])).await;
    let named = add_endpoint(
        &server,
        &format!("http://localhost:{}/ok", rx.addr.port()),
        json!(["conversation.started"]),
    )
    .await;
    start_conversation(&server, "quick").await;
    attempts(&server, 2).await;
    for (id, _) in [&literal, &named] {
        let log = deliveries(&server, id, "?status=dead").await;
        assert_eq!(log.len(), 1, "refused at once, not retried: {log:?}");
        let a = &log[0]["attempt_log"][0];
        assert_eq!(a["status"], Value::Null);
        let error = a["error"].as_str().unwrap();
        assert!(error.contains("private, loopback or link-local"), "{error}");
    }
    assert_eq!(rx.count(), 0, "a refused request reached the receiver");

    // Bad endpoints are refused when added.
    for (body, status, code) in [
        (
            json!({"url": "ftp://example.com/x", "types": ["*"]}),
            422,
            "invalid-url",
        ),
        (
            json!({"url": "not a url", "types": ["*"]}),
            422,
            "invalid-url",
        ),
        (
            json!({"url": "https://u:p@example.com/", "types": ["*"]}),
            422,
            "invalid-url",
        ),
        (
            json!({"url": "https://example.com/", "types": []}),
            422,
            "invalid-types",
        ),
        (
            json!({"url": "https://example.com/", "types": ["nope"]}),
            422,
            "invalid-types",
        ),
        (
            json!({"url": "https://example.com/", "types": ["*", "goal.reached"]}),
            422,
            "invalid-types",
        ),
        (json!({"url": "https://example.com/"}), 400, "bad-json"),
    ] {
        let (got, v) = api(&server, "POST", "/api/webhooks", body.clone()).await;
        assert_eq!((got, v["code"].as_str()), (status, Some(code)), "{body}");
    }
    // Deleting one stops its deliveries and removes its log.
    let path = format!("/api/webhooks/{}", literal.0);
    assert_eq!(api(&server, "DELETE", &path, Value::Null).await.0, 204);
    assert_eq!(api(&server, "DELETE", &path, Value::Null).await.0, 404);
    let (status, _) = api(&server, "GET", &format!("{path}/deliveries"), Value::Null).await;
    assert_eq!(status, 404);
    let (_, list) = api(&server, "GET", "/api/webhooks", Value::Null).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    server.stop().await;
}

/// A ten-minute talk at 19:00 UTC with an offer at 40 s.
const TALK: &str = r#"volley: 1
event: talk
title: The talk
timezone: UTC
media: { url: "https://example.com/talk.mp4", duration: 10m }
schedule: { once: 2026-12-10T19:00 }
registration: { fields: [name, email, company] }
timeline:
  - at: 40s
    offer: { id: buy, text: Buy it, url: "https://example.com/buy", until: 2m }
"#;

const SHOWING: &str = "talk@2026-12-10T19:00:00Z";

/// Joins the talk as a viewer; returns the socket and its `hello`.
async fn join(
    server: &TestServer,
    token: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Value,
) {
    let url = format!("ws://{}/events/talk/ws?viewer={token}", server.running.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = next_frame(&mut ws, |f| f["t"] == "hello").await;
    (ws, hello)
}

async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if ok(&v) {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_premiere_sends_registrations_attendance_and_offer_clicks() {
    let clock = Arc::new(ManualClock::new("2026-12-10T19:00:45Z".parse().unwrap()));
    let rx = receiver().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(flows.join("talk.yaml"), TALK).unwrap();
    let mut cfg = server_config(dir.path(), true);
    cfg.flows = Some(flows);
    let server = TestServer::start_on(dir, cfg, clock.clone()).await;
    let (hook, _) = add_endpoint(
        &server,
        &rx.url("ok"),
        json!(["event.registered", "event.attended", "event.offer_clicked"]),
    )
    .await;

    let (status, reg) = api(
        &server,
        "POST",
        "/api/events/talk/register",
        json!({"name": "Ana", "email": "ana@example.com", "fields": {"company": "Acme"},
               "showing": SHOWING}),
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    let token = reg["viewer"].as_str().unwrap();
    let (mut ws, hello) = join(&server, token).await;
    let viewer = hello["viewer_id"].as_str().unwrap().to_string();
    ws.send(Message::Text(
        json!({"t": "click", "offer": "buy", "ref": "c1"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let ok = next_frame(&mut ws, |f| f["ref"] == "c1").await;
    assert_eq!(ok["t"], "ok", "{ok}");
    drop(ws);
    // A second visit is not a second attendance.
    let (_ws, _) = join(&server, token).await;

    let app = &server.running.app;
    app.webhooks.settled(app).await;
    let log = deliveries(&server, &hook, "").await;
    let by_type: BTreeMap<&str, &Value> = log
        .iter()
        .map(|d| (d["type"].as_str().unwrap(), &d["payload"]["data"]))
        .collect();
    assert_eq!(log.len(), 3, "{log:?}");
    let registered = by_type["event.registered"];
    assert_eq!(
        (
            &registered["event_id"],
            &registered["showing_id"],
            &registered["name"]
        ),
        (&json!("talk"), &json!(SHOWING), &json!("Ana"))
    );
    assert_eq!(registered["email"], "ana@example.com");
    assert_eq!(registered["fields"]["company"], "Acme");
    assert_eq!(registered["registration_id"], reg["registration"]);
    let attended = by_type["event.attended"];
    assert_eq!(
        (
            &attended["viewer_id"],
            &attended["replay"],
            &attended["position_ms"]
        ),
        (&json!(viewer), &json!(false), &json!(45_000))
    );
    let clicked = by_type["event.offer_clicked"];
    assert_eq!(
        clicked["offer"],
        json!({"id": "buy", "text": "Buy it", "url": "https://example.com/buy"})
    );
    assert_eq!(
        (&clicked["event_id"], &clicked["viewer_id"]),
        (&json!("talk"), &json!(viewer))
    );
    attempts(&server, 3).await;
    until("3 deliveries", || rx.count() == 3).await;
    server.stop().await;
}

#[tokio::test]
async fn a_paused_endpoint_holds_its_deliveries_and_a_rotated_secret_overlaps() {
    let rx = receiver().await;
    let clock = Arc::new(ManualClock::new("2026-12-01T10:00:00Z".parse().unwrap()));
    let server = start(Some(clock), true).await;
    let app = &server.running.app;
    let (id, old) = add_endpoint(&server, &rx.url("ok"), json!(["conversation.started"])).await;
    let path = format!("/api/webhooks/{id}");
    let (status, v) = api(
        &server,
        "PATCH",
        &path,
        json!({"enabled": false, "description": "paused for maintenance"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], false);
    assert_eq!(v["description"], "paused for maintenance");
    // While paused, deliveries are queued but none is tried.
    start_conversation(&server, "quick").await;
    start_conversation(&server, "quick").await;
    app.webhooks.settled(app).await;
    let held = deliveries(&server, &id, "").await;
    assert_eq!(held.len(), 2);
    assert!(
        held.iter()
            .all(|d| d["status"] == "pending" && d["attempts"] == 0)
    );
    assert_eq!(*app.webhooks.attempts().borrow(), 0);
    assert_eq!(rx.count(), 0);

    // A new secret; the previous one keeps signing for 24 hours.
    let (status, v) = api(
        &server,
        "POST",
        &format!("{path}/rotate-secret"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let new = v["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    let overlap_ends = v["previous_secret_until"].as_i64().unwrap();
    let now = app.clock.now_ms();
    assert_eq!(overlap_ends - now, 24 * 3_600_000, "{v}");

    // Resumed: the held deliveries go out, each signed with both secrets.
    let (status, v) = api(&server, "PATCH", &path, json!({"enabled": true})).await;
    assert_eq!(status, 200, "{v}");
    attempts(&server, 2).await;
    until("both delivered", || rx.count() == 2).await;
    let requests: Vec<(HeaderMap, Vec<u8>)> = rx
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.headers.clone(), r.body.to_vec()))
        .collect();
    for (headers, body) in &requests {
        assert!(signed_with(&new, headers, body));
        assert!(signed_with(&old, headers, body));
    }
    for secret in [&new, &old] {
        if let Some(verdicts) = reference_verify(secret, &requests) {
            assert!(verdicts.iter().all(|v| v["ok"] == true), "{verdicts:?}");
        }
    }

    // Bad changes are refused and change nothing.
    for (body, status, code) in [
        (json!({"url": "ftp://example.com/x"}), 422, "invalid-url"),
        (json!({"types": ["nope"]}), 422, "invalid-types"),
        (
            json!({"description": "a\u{7}b"}),
            422,
            "invalid-description",
        ),
        (json!({"colour": "red"}), 400, "bad-json"),
    ] {
        let (s, e) = api(&server, "PATCH", &path, body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
        assert_eq!(e["code"], code, "{body}: {e}");
    }
    let (s, e) = api(
        &server,
        "PATCH",
        "/api/webhooks/wh_nope",
        json!({"enabled": true}),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("unknown-webhook")));
    let (s, _) = api(
        &server,
        "POST",
        "/api/webhooks/wh_nope/rotate-secret",
        Value::Null,
    )
    .await;
    assert_eq!(s, 404);
    let (_, list) = api(&server, "GET", "/api/webhooks", Value::Null).await;
    assert_eq!(list[0]["url"], rx.url("ok"));
    assert_eq!(list[0]["types"], json!(["conversation.started"]));
    assert_eq!(list[0]["enabled"], true);
    server.stop().await;
}
