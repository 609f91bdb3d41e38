//! Bad input and abuse: every case gets a clear error with a stable code, nothing else
//! changes, nothing panics, and nothing executes in a browser.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::*;

async fn error_code(c: &mut Client) -> String {
    let v = c.until(|v| v["type"] == "error").await.pop().unwrap();
    v["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_session_stays_usable() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    c.next_question().await;
    c.ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(error_code(&mut c).await, "bad-json");
    c.send(json!({"type": "dance"})).await;
    assert_eq!(error_code(&mut c).await, "unknown-type");
    c.send(json!({"type": "answer", "step": "name"})).await;
    assert_eq!(error_code(&mut c).await, "bad-json");
    c.ws.send(Message::Text("x".repeat(20_000).into()))
        .await
        .unwrap();
    assert_eq!(error_code(&mut c).await, "too-large");
    c.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(error_code(&mut c).await, "binary-frame");
    c.send(json!({"type": "answer", "id": "x", "step": "colour", "values": ["Red"]}))
        .await;
    assert_eq!(error_code(&mut c).await, "stale-question");
    c.send(json!({"type": "answer", "id": "y", "step": "name", "text": "A"}))
        .await;
    // An invalid answer is not an error: the flow re-asks with a message.
    let frames = c
        .until(|v| v["type"] == "event" && v["event"]["kind"] == "ask")
        .await;
    assert!(
        frames.iter().any(|f| f["event"]["invalid"] == true),
        "{frames:?}"
    );
    // After all that, the conversation is exactly where it was.
    let ack = c
        .input(json!({"type": "answer", "id": "z", "step": "name", "text": "Ann"}))
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(c.next_question().await["step"], "colour");
    server.stop().await;
}

#[tokio::test]
async fn the_first_frame_must_be_hello() {
    let server = TestServer::start().await;
    let mut ws = Client::raw(&server).await;
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("an error frame")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&t).unwrap()["code"],
        "not-hello"
    );
    assert!(matches!(
        ws.next().await,
        Some(Ok(Message::Close(_))) | None
    ));
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_only_that_connection() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    c.next_question().await;
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    let _ = c.ws.send(Message::Frame(frame)).await;
    // The server drops the connection…
    loop {
        match c.ws.next().await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    // …and keeps serving everyone else.
    let mut other = Client::connect(&server, hello("quick")).await;
    assert_eq!(other.next_question().await["step"], "name");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    for _ in 0..60 {
        c.send(json!({"type": "ping"})).await;
    }
    let frames = c.until(|v| v["type"] == "error").await;
    assert_eq!(frames.last().unwrap()["code"], "rate-limited");
    server.stop().await;
}

#[tokio::test]
async fn identities_cannot_be_forged_and_conversations_not_borrowed() {
    let server = TestServer::start().await;
    let mut h = hello("quick");
    h["identity"] =
        json!({"user_id": "u-1", "signature": "00".repeat(32), "profile": {"name": "Mallory"}});
    let mut ws = Client::raw(&server).await;
    ws.send(Message::Text(h.to_string().into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("an error frame")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&t).unwrap()["code"],
        "invalid-identity"
    );

    // Someone else's conversation id, with your own token, is refused.
    let victim = Client::connect(&server, hello("quick")).await;
    let mut h = hello("quick");
    h["conversation"] = victim.conversation().into();
    let mut ws = Client::raw(&server).await;
    ws.send(Message::Text(h.to_string().into())).await.unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("an error frame")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&t).unwrap()["code"],
        "unknown-conversation"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_valid_identity_is_the_same_contact_everywhere_and_personalises() {
    let server = TestServer::start().await;
    let signature = {
        // hex(HMAC-SHA256(secret, user id)), computed as the embedding site would.
        use std::process::Command;
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' 'u-42' | openssl dgst -sha256 -hmac '{IDENTITY_SECRET}' -hex | sed 's/.* //'"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut h = hello("quick");
    h["identity"] = json!({"user_id": "u-42", "signature": signature, "profile": {"name": "Zoë Quinn", "plan": "pro"}});
    let mut a = Client::connect(&server, h.clone()).await;
    assert!(
        a.welcome.get("token").is_none(),
        "identified contacts get no anonymous token"
    );
    a.next_question().await;
    assert_eq!(a.events[0]["event"]["text"], "Hello Zoë!");
    let b = Client::connect(&server, h).await;
    assert_eq!(a.welcome["contact"], b.welcome["contact"]);
    assert_eq!(
        a.conversation(),
        b.conversation(),
        "another device resumes the same conversation"
    );
    server.stop().await;
}

#[tokio::test]
async fn participant_text_never_becomes_markup() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    c.next_question().await;
    let evil = "<img src=x onerror=alert(1)>[x](javascript:alert(1))";
    c.input(json!({"type": "answer", "id": "e1", "step": "name", "text": evil}))
        .await;
    c.next_question().await;
    let msg = c
        .events
        .iter()
        .rev()
        .find(|e| e["event"]["kind"] == "message")
        .unwrap();
    let html = msg["event"]["html"].as_str().unwrap();
    assert!(!html.contains("<img") && !html.contains("href"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    server.stop().await;
}

/// The first frame the server sends on a fresh connection after `hello`.
async fn hello_reply(server: &TestServer, hello: &Value) -> Value {
    let mut ws = Client::raw(server).await;
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    let Some(Ok(Message::Text(t))) = ws.next().await else {
        panic!("a reply frame")
    };
    serde_json::from_str(&t).unwrap()
}

#[tokio::test]
async fn an_oversized_hello_is_refused_like_any_frame() {
    let server = TestServer::start().await;
    let mut h = hello("quick");
    h["locale"] = "x".repeat(20_000).into();
    let reply = hello_reply(&server, &h).await;
    assert_eq!(reply["code"], "too-large", "{reply}");
    server.stop().await;
}

#[tokio::test]
async fn raising_the_frame_limit_lets_larger_frames_through() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.limits.max_frame_bytes = 100 * 1024;
    let server = TestServer::start_with(dir, cfg).await;
    let mut c = Client::connect(&server, hello("quick")).await;
    // 80 KiB: over the socket's old fixed 64 KiB, under the configured limit.
    let padded = format!(
        "{}{}",
        json!({"type": "ping", "t": 7}),
        " ".repeat(80 * 1024)
    );
    c.ws.send(Message::Text(padded.into())).await.unwrap();
    let pong = c.until(|v| v["type"] == "pong").await.pop().unwrap();
    assert_eq!(pong["t"], 7);
    // Over the limit: refused, and the connection stays usable.
    c.ws.send(Message::Text(" ".repeat(120 * 1024).into()))
        .await
        .unwrap();
    assert_eq!(error_code(&mut c).await, "too-large");
    c.send(json!({"type": "ping", "t": 8})).await;
    let pong = c.until(|v| v["type"] == "pong").await.pop().unwrap();
    assert_eq!(pong["t"], 8);
    server.stop().await;
}

#[tokio::test]
async fn an_over_long_user_id_is_an_invalid_identity() {
    let server = TestServer::start().await;
    let user_id = "u".repeat(257);
    let mut h = hello("quick");
    h["identity"] = json!({"user_id": user_id, "signature": sign(&user_id)});
    let reply = hello_reply(&server, &h).await;
    assert_eq!(reply["code"], "invalid-identity", "{reply}");
    // The same over HTTP.
    let r = reqwest::Client::new()
        .post(server.http("/api/conversations"))
        .json(&json!({"flow": "quick", "identity": {"user_id": user_id, "signature": sign(&user_id)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid-identity");
    // 256 bytes is fine.
    let user_id = "u".repeat(256);
    h["identity"] = json!({"user_id": user_id, "signature": sign(&user_id)});
    assert_eq!(hello_reply(&server, &h).await["type"], "welcome");
    server.stop().await;
}
