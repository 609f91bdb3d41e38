//! The HTTP API: participant protocol over HTTP, publishing, versions, OpenAPI.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

async fn start_conversation(server: &TestServer, flow: &str) -> (String, String, Value) {
    let r: Value = reqwest::Client::new()
        .post(server.http("/api/conversations"))
        .json(&json!({"flow": flow}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        r["token"].as_str().unwrap().into(),
        r["conversation"].as_str().unwrap().into(),
        r,
    )
}

#[tokio::test]
async fn a_conversation_over_plain_http_with_long_poll() {
    let server = TestServer::start().await;
    let (token, conv, first) = start_conversation(&server, "quick").await;
    let kinds: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "message", "ask"]);
    let http = reqwest::Client::new();
    let last = first["last_seq"].as_i64().unwrap();
    // A long-poll waiting for events, answered while it waits.
    let poll = {
        let url = server.http(&format!(
            "/api/conversations/{conv}/events?after={last}&wait=10"
        ));
        let http = http.clone();
        let token = token.clone();
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ack: Value = http
        .post(server.http(&format!("/api/conversations/{conv}/inputs")))
        .bearer_auth(&token)
        .json(&json!({"id": "h1", "type": "answer", "step": "name", "text": "Eve"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack["seq"], last + 1);
    let page = poll.await.unwrap();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events[0]["event"]["label"], "Eve", "{page}");
    // Without the token: refused.
    let r = http
        .get(server.http(&format!("/api/conversations/{conv}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(server.http(&format!("/api/conversations/{conv}/events")))
        .bearer_auth("vt_guessed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn server_sent_events_stream_the_conversation() {
    let server = TestServer::start().await;
    let (token, conv, _) = start_conversation(&server, "quick").await;
    let mut r = reqwest::Client::new()
        .get(server.http(&format!("/api/conversations/{conv}/stream?after=0")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\"ask\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("id: 1\n") || text.contains("id:1\n") || text.contains("id: 2"),
        "{text}"
    );
    assert!(text.contains("Hello friend!"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn publishing_needs_the_admin_key_and_reports_check_diagnostics() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let good = "volley: 1\nid: hello\ntitle: Hello\nsteps:\n  - say: Hi!\n";
    let r = http
        .post(server.http("/api/flows"))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(server.http("/api/flows"))
        .bearer_auth("wrong")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(server.http("/api/flows"))
        .bearer_auth(ADMIN_KEY)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["id"].as_str(),
            v["version"].as_i64(),
            v["created"].as_bool()
        ),
        (Some("hello"), Some(1), Some(true))
    );
    let r = http
        .post(server.http("/api/flows"))
        .bearer_auth(ADMIN_KEY)
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "unchanged source: no new version");
    let bad = "volley: 1\nid: broken\ntitle: Broken\nsteps:\n  - say: Hi\n    next: nowhere\n";
    let r = http
        .post(server.http("/api/flows"))
        .bearer_auth(ADMIN_KEY)
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid-flow");
    assert_eq!(v["details"]["diagnostics"][0]["code"], "dangling-target");
    let expected: String = volley_flow::check(bad)
        .diagnostics
        .iter()
        .map(|d| d.render("flow.yaml", bad, false))
        .collect();
    assert_eq!(
        v["details"]["rendered"],
        expected.as_str(),
        "the same diagnostics as `volley check`"
    );
    let list: Value = http
        .get(server.http("/api/flows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"hello") && !ids.contains(&"broken"),
        "{ids:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_keeps_the_version_it_started_on() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let v1 = "volley: 1\nid: versioned\ntitle: V\nsteps:\n  - ask: text\n    say: Question one?\n    save: a\n  - say: Version one says bye.\n";
    let v2 = v1.replace("Version one", "Version two");
    for src in [v1.to_string()] {
        http.post(server.http("/api/flows"))
            .bearer_auth(ADMIN_KEY)
            .body(src)
            .send()
            .await
            .unwrap();
    }
    let mut old = Client::connect(&server, hello("versioned")).await;
    let q = old.next_question().await;
    let r = http
        .post(server.http("/api/flows"))
        .bearer_auth(ADMIN_KEY)
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    let frame = old.answer_for(&q, 0);
    old.input(frame).await;
    old.next_question().await;
    assert!(
        old.events
            .iter()
            .any(|e| e["event"]["text"] == "Version one says bye.")
    );
    let mut new = Client::connect(
        &server,
        json!({"type": "hello", "flow": "versioned", "restart": true}),
    )
    .await;
    assert_eq!(new.welcome["flow"]["version"], 2);
    let q = new.next_question().await;
    let frame = new.answer_for(&q, 0);
    new.input(frame).await;
    new.next_question().await;
    assert!(
        new.events
            .iter()
            .any(|e| e["event"]["text"] == "Version two says bye.")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_covers_every_api_route() {
    let server = TestServer::start().await;
    let doc: Value = reqwest::get(server.http("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/api/flows",
        "/api/flows/{id}",
        "/api/conversations",
        "/api/conversations/{id}/inputs",
        "/api/conversations/{id}/events",
        "/api/conversations/{id}/stream",
        "/api/contacts/import",
        "/api/campaigns",
        "/api/campaigns/{id}",
        "/api/campaigns/{id}/pause",
        "/api/campaigns/{id}/resume",
        "/api/campaigns/{id}/cancel",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.iter().any(|k| *k == p), "{p} missing from {paths:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let r = http
        .post(server.http("/api/conversations"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "bad-json");
    let big = format!("{{\"flow\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = http
        .post(server.http("/api/conversations"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "too-large");
    let r = http
        .post(server.http("/api/conversations"))
        .json(&json!({"flow": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unknown-flow");
    server.stop().await;
}

#[tokio::test]
async fn the_demo_pages_and_widget_are_served() {
    let server = TestServer::start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/f/quick", "text/html"),
        ("/widget.js", "text/javascript"),
    ] {
        let r = reqwest::get(server.http(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn readiness_is_503_when_the_database_fails() {
    let server = TestServer::start().await;
    let r = reqwest::get(server.http("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    // Closing the store makes every query fail (the read pool is closed).
    server.running.app.store.close().await;
    let r = reqwest::get(server.http("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "unavailable");
    server.stop().await;
}

#[tokio::test]
async fn a_long_poll_returns_at_once_when_the_server_shuts_down() {
    let server = TestServer::start().await;
    let (token, conv, first) = start_conversation(&server, "quick").await;
    let last = first["last_seq"].as_i64().unwrap();
    // The conversation leaves memory; the long-poll's request loads it back, so once it
    // is in memory again the request is being handled.
    let convs = &server.running.app.convs;
    assert_eq!(convs.sweep(i64::MAX, 1), 0);
    let url = server.http(&format!(
        "/api/conversations/{conv}/events?after={last}&wait=30"
    ));
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json::<Value>().await.unwrap(), started.elapsed())
    });
    let waiting = Instant::now();
    while convs.in_memory() == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the long-poll never arrived"
        );
        tokio::task::yield_now().await;
    }
    let stopping = Instant::now();
    server.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let (status, page, took) = poll.await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["events"],
        json!([]),
        "nothing new: what it has is nothing"
    );
    assert!(took < Duration::from_secs(5), "the long-poll took {took:?}");
}

#[tokio::test]
async fn server_sent_events_end_when_the_server_shuts_down() {
    let server = TestServer::start().await;
    let (token, conv, _) = start_conversation(&server, "quick").await;
    let mut r = reqwest::Client::new()
        .get(server.http(&format!("/api/conversations/{conv}/stream?after=0")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    // The headers arrived: the stream is open and waits for the next event.
    assert_eq!(r.status(), 200);
    let stopping = Instant::now();
    let stop = tokio::spawn(server.stop());
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream is still open after 5 s");
    stop.await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn requests_are_counted_and_timed_by_route_and_status() {
    let server = TestServer::start().await;
    let (status, _) = api(&server, "GET", "/api/flows/quick", Value::Null).await;
    assert_eq!(status, 200);
    let (status, _) = api(&server, "GET", "/api/flows/no-such-flow", Value::Null).await;
    assert_eq!(status, 404);
    let text = http()
        .get(server.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The recorder is shared by the tests of this process: counts are at least ours.
    let count = |status: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("volley_http_requests_total{")
                    && l.contains("route=\"/api/flows/{id}\"")
                    && l.contains("method=\"GET\"")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("200") >= 1 && count("404") >= 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("volley_http_request_seconds_bucket{")
                && l.contains("route=\"/api/flows/{id}\"")),
        "{text}"
    );
    // Figures read from the store on scrape.
    for gauge in ["volley_timers_pending ", "volley_analytics_entries_behind "] {
        assert!(
            text.lines().any(|l| l.starts_with(gauge)),
            "{gauge}in {text}"
        );
    }
    server.stop().await;
}
