//! Flows' HTTP steps: real requests to a real local endpoint, the response mapped into
//! variables, failures routed to `on_error`, the private-address guard, and a request
//! interrupted by a restart sent again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Client, TestServer, config, hello};

/// A stand-in for an order API. The first `hang_first` calls never answer.
struct OrderApi {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
}

async fn order_api(hang_first: usize) -> OrderApi {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/orders/{id}",
            get(
                async |State(calls): State<(Arc<AtomicUsize>, usize)>, Path(id): Path<String>| {
                    let n = calls.0.fetch_add(1, Ordering::SeqCst);
                    if n < calls.1 {
                        std::future::pending::<()>().await;
                    }
                    if id == "404" {
                        return (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({})));
                    }
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"status": "shipped", "eta": {"day": "Friday"}})),
                    )
                },
            ),
        )
        .with_state((calls.clone(), hang_first));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    OrderApi { addr, calls }
}

fn lookup_flow(api: &OrderApi) -> String {
    format!(
        r#"volley: 1
id: lookup
title: Order lookup
steps:
  - ask: text
    id: order
    say: Which order?
    save: order
  - id: fetch
    http:
      url: http://{}/orders/{{{{ order }}}}
      timeout: 5s
      save:
        state: response.body.status
        day: response.body.eta.day
      on_error: failed
  - say: "Order {{{{ order }}}} is {{{{ state }}}}, arriving {{{{ day }}}}."
  - end: found
  - id: failed
    say: "Sorry, the lookup failed ({{{{ http_error }}}})."
  - end: failed
"#,
        api.addr
    )
}

async fn server_with(api: &OrderApi, allow_private: bool) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.allow_private_http = allow_private;
    cfg.pacing = false;
    let server = TestServer::start_with(dir, cfg).await;
    publish(&server, api).await;
    server
}

async fn publish(server: &TestServer, api: &OrderApi) {
    let r = reqwest::Client::new()
        .post(server.http("/api/flows"))
        .bearer_auth(ADMIN_KEY)
        .body(lookup_flow(api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Answers the order question and returns the bot's next message text.
async fn ask_for(c: &mut Client, order: &str) -> String {
    let q = c.next_question().await;
    assert_eq!(q["step"], "order");
    let id = c.fresh_id();
    c.input(json!({"type": "answer", "id": id, "step": "order", "text": order}))
        .await;
    let frames = c
        .until(|v| v["event"]["kind"] == "message" && v["event"]["step"] != "order")
        .await;
    // The participant is told the assistant is busy (no URL or headers leak).
    let http = frames
        .iter()
        .find(|v| v["event"]["kind"] == "http")
        .expect("an http event");
    assert_eq!(http["event"], json!({"kind": "http"}));
    frames.last().unwrap()["event"]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_response_is_saved_into_variables() {
    let api = order_api(0).await;
    let server = server_with(&api, true).await;
    let mut c = Client::connect(&server, hello("lookup")).await;
    assert_eq!(
        ask_for(&mut c, "A-17").await,
        "Order A-17 is shipped, arriving Friday."
    );
    assert_eq!(c.next_question().await["outcome"], "found");
    assert_eq!(api.calls.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_request_follows_on_error_with_the_reason() {
    let api = order_api(0).await;
    let server = server_with(&api, true).await;
    let mut c = Client::connect(&server, hello("lookup")).await;
    assert_eq!(
        ask_for(&mut c, "404").await,
        "Sorry, the lookup failed (HTTP status 404)."
    );
    server.stop().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let api = order_api(0).await;
    let server = server_with(&api, false).await;
    let mut c = Client::connect(&server, hello("lookup")).await;
    let text = ask_for(&mut c, "A-17").await;
    assert!(
        text.starts_with("Sorry, the lookup failed (refused: 127.0.0.1 is a private"),
        "{text}"
    );
    assert_eq!(api.calls.load(Ordering::SeqCst), 0, "nothing was sent");
    server.stop().await;
}

#[tokio::test]
async fn a_request_interrupted_by_a_restart_is_sent_again() {
    let api = order_api(1).await;
    let server = server_with(&api, true).await;
    let mut c = Client::connect(&server, hello("lookup")).await;
    let token = c.welcome["token"].as_str().unwrap().to_string();
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "o1", "step": "order", "text": "B-2"}))
        .await;
    c.until(|v| v["event"]["kind"] == "http").await;
    let last = c.max_seq();
    drop(c);
    // The API never answers the first call; the server stops while waiting.
    let dir = server.stop().await;
    let mut cfg = config(dir.path());
    cfg.allow_private_http = true;
    cfg.pacing = false;
    let server = TestServer::start_with(dir, cfg).await;
    let mut h = hello("lookup");
    h["token"] = token.into();
    h["last_seq"] = last.into();
    let mut c = Client::connect(&server, h).await;
    let frames = c.until(|v| v["event"]["kind"] == "message").await;
    assert_eq!(
        frames.last().unwrap()["event"]["text"],
        "Order B-2 is shipped, arriving Friday."
    );
    assert_eq!(api.calls.load(Ordering::SeqCst), 2);
    let status: Value = c.next_question().await;
    assert_eq!(status["outcome"], "found");
    server.stop().await;
}
