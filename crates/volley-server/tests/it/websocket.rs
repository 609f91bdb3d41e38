//! The WebSocket protocol: full conversations, resume, idempotency, pacing, restarts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn a_whole_conversation_over_the_websocket() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    assert!(
        c.welcome["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("vt_")),
        "{}",
        c.welcome
    );
    assert_eq!(
        c.welcome["flow"]["assistant"]["label"],
        "Automated assistant"
    );
    let q = c.next_question().await;
    assert_eq!(q["step"], "name");
    assert_eq!(c.events[0]["event"]["text"], "Hello friend!");
    let ack = c
        .input(json!({"type": "answer", "id": "a1", "step": "name", "text": "Al"}))
        .await;
    assert_eq!(ack, json!({"type": "ack", "id": "a1", "seq": ack["seq"]}));
    let q = c.next_question().await;
    assert_eq!(
        q["options"],
        json!([{"value": "Red", "label": "Red"}, {"value": "Green", "label": "Green"}, {"value": "Blue", "label": "Blue"}])
    );
    c.input(json!({"type": "answer", "id": "a2", "step": "colour", "values": ["Green"]}))
        .await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "a3", "step": "count", "text": "3"}))
        .await;
    let end = c.next_question().await;
    assert_eq!(end, json!({"kind": "end", "outcome": "done"}));
    let texts: Vec<&str> = c
        .events
        .iter()
        .filter_map(|e| e["event"]["text"].as_str())
        .collect();
    assert!(texts.contains(&"Thanks Al: 3 × Green."), "{texts:?}");
    // The participant's own inputs come back as events, with labels.
    let labels: Vec<&str> = c
        .events
        .iter()
        .filter(|e| e["event"]["kind"] == "input")
        .map(|e| e["event"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Al", "Green", "3"]);
    let seqs = c.seqs();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_at_every_point_loses_and_repeats_nothing() {
    let server = TestServer::start().await;
    // Inputs are cut off at each position: before their ack, the client reconnects,
    // re-sends the unacknowledged input with its id, and continues.
    for cut in 0..3 {
        let mut c = Client::connect(&server, hello("quick")).await;
        let token = c.welcome["token"].as_str().unwrap().to_string();
        let conv = c.conversation();
        let mut seen: Vec<Value> = Vec::new();
        let mut k = 0;
        loop {
            let q = c.next_question().await;
            if q["kind"] == "end" {
                break;
            }
            let frame = c.answer_for(&q, k);
            if k == cut {
                c.send(frame.clone()).await;
                seen.append(&mut c.events);
                let last = seen
                    .iter()
                    .map(|e| e["seq"].as_i64().unwrap())
                    .max()
                    .unwrap();
                drop(c);
                let mut h = hello("quick");
                h["token"] = token.clone().into();
                h["conversation"] = conv.clone().into();
                h["last_seq"] = last.into();
                c = Client::connect(&server, h).await;
                assert_eq!(c.conversation(), conv);
                let ack = c.input(frame).await;
                assert_eq!(
                    ack["type"], "ack",
                    "the retried input is accepted once: {ack}"
                );
            } else {
                c.input(frame).await;
            }
            k += 1;
        }
        seen.append(&mut c.events);
        let got: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        let reference: Vec<i64> = full_history(&server, &token, &conv)
            .await
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(
            got, reference,
            "cut at input {cut}: every visible event exactly once, in order"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_retried_input_is_applied_once() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    c.next_question().await;
    let frame = json!({"type": "answer", "id": "same", "step": "name", "text": "Bo"});
    c.send(frame.clone()).await;
    c.send(frame).await;
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let v = c.recv().await;
        if v["type"] == "ack" {
            acks.push(v["seq"].clone());
        }
    }
    assert_eq!(
        acks[0], acks[1],
        "both sends acknowledged with the same seq"
    );
    let history = full_history(
        &server,
        c.welcome["token"].as_str().unwrap(),
        &c.conversation(),
    )
    .await;
    let inputs = history
        .iter()
        .filter(|e| e["event"]["kind"] == "input")
        .count();
    assert_eq!(inputs, 1, "one input event for two sends");
    server.stop().await;
}

#[tokio::test]
async fn pacing_is_applied_by_the_server_and_survives_a_reload() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let mut c = Client::connect(&server, hello("paced")).await;
    let first = c.recv().await;
    assert_eq!(first["event"]["text"], "First message, at once.");
    // The second message comes after a typing indicator, not before its pause.
    let typing = c.recv().await;
    assert_eq!(typing, json!({"type": "typing", "on": true}));
    // Reload during the pause: the new connection neither skips nor replays it.
    let token = c.welcome["token"].as_str().unwrap().to_string();
    let conv = c.conversation();
    let last = c.max_seq();
    drop(c);
    let mut h = hello("paced");
    h["token"] = token.into();
    h["conversation"] = conv.into();
    h["last_seq"] = last.into();
    let mut c = Client::connect(&server, h).await;
    let frames = c.until(|v| v["type"] == "event").await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the pause is kept across the reload"
    );
    let second = frames.last().unwrap();
    assert_eq!(second["event"]["text"], "Second, after a pause.");
    assert_eq!(second["event"]["delay_ms"], 400);
    assert!(
        c.events
            .iter()
            .all(|e| e["event"]["text"] != "First message, at once."),
        "nothing replayed"
    );
    let q = c.next_question().await;
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(q["input"], "yes_no");
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_continues_after_a_server_restart() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    let token = c.welcome["token"].as_str().unwrap().to_string();
    let conv = c.conversation();
    c.next_question().await;
    let ack = c
        .input(json!({"type": "answer", "id": "r1", "step": "name", "text": "Cleo"}))
        .await;
    assert_eq!(ack["type"], "ack");
    c.next_question().await;
    let last = c.max_seq();
    drop(c);
    let dir = server.stop().await;
    // A new process on the same database file.
    let server = TestServer::start_with(dir.clone(), config(dir.path())).await;
    let mut h = hello("quick");
    h["token"] = token.clone().into();
    h["last_seq"] = last.into();
    let mut c = Client::connect(&server, h).await;
    assert_eq!(c.conversation(), conv, "the latest conversation is resumed");
    // The acknowledged answer survived; the retry of it is recognised.
    let again = c
        .input(json!({"type": "answer", "id": "r1", "step": "name", "text": "Cleo"}))
        .await;
    assert_eq!(again["seq"], ack["seq"]);
    c.input(json!({"type": "answer", "id": "r2", "step": "colour", "values": ["Red"]}))
        .await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "r3", "step": "count", "text": "2"}))
        .await;
    assert_eq!(c.next_question().await["kind"], "end");
    let texts: Vec<String> = full_history(&server, &token, &conv)
        .await
        .iter()
        .filter_map(|e| e["event"]["text"].as_str().map(String::from))
        .collect();
    assert!(
        texts.contains(&"Thanks Cleo: 2 × Red.".to_string()),
        "{texts:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn back_and_restart_work_over_the_socket() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("quick")).await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "b1", "step": "name", "text": "Dee"}))
        .await;
    c.next_question().await;
    let ack = c.input(json!({"type": "back", "id": "b2"})).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(c.next_question().await["step"], "name");
    let old = c.conversation();
    c.send(json!({"type": "restart", "id": "b3"})).await;
    let w = c.until(|v| v["type"] == "welcome").await.pop().unwrap();
    assert_ne!(w["conversation"], old);
    assert_eq!(w["last_seq"], 5, "enter, message, enter, message, ask");
    c.events.clear();
    assert_eq!(c.next_question().await["step"], "name");
    server.stop().await;
}
