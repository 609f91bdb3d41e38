//! Durable timers on virtual time: waits and question timeouts fire by themselves,
//! while the participant is connected or away, and after a restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use volley_server::ManualClock;

use crate::support::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn start_time() -> jiff::Timestamp {
    "2026-03-06T10:00:00Z".parse().unwrap()
}

fn clock_now_ms(server: &TestServer) -> i64 {
    server.running.app.clock.now_ms()
}

fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event"]["text"].as_str().map(String::from))
        .collect()
}

/// Waits (in real time, briefly) until the conversation's log shows `text`.
async fn eventually_logged(server: &TestServer, token: &str, conv: &str, text: &str) -> Vec<Value> {
    for _ in 0..200 {
        let h = full_history(server, token, conv).await;
        if texts(&h).iter().any(|t| t == text) {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("`{text}` never logged");
}

#[tokio::test]
async fn a_wait_resumes_by_itself_while_the_participant_watches() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    let mut c = Client::connect(&server, hello("follow-up")).await;
    let wait = c
        .until(|v| v["event"]["kind"] == "wait")
        .await
        .pop()
        .unwrap();
    assert_eq!(wait["event"]["until"], "2026-03-08T10:00:00Z");
    // Nothing happens before the time: a day later, still waiting.
    clock.advance(DAY);
    let early = tokio::time::timeout(Duration::from_millis(200), c.recv()).await;
    assert!(early.is_err(), "fired early: {early:?}");
    clock.advance(DAY);
    let q = c.next_question().await;
    assert_eq!(q["step"], "how");
    assert!(texts(&c.events).contains(&"It has been two days. How is it going?".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn a_question_timeout_nudges_and_an_answer_cancels_it() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    // Participant 1 does not answer: the nudge comes after 10 minutes.
    let mut c = Client::connect(&server, hello("follow-up")).await;
    c.until(|v| v["event"]["kind"] == "wait").await;
    clock.advance(2 * DAY);
    let q = c.next_question().await;
    assert!(q["timeout_at"].is_string(), "{q}");
    clock.advance(Duration::from_secs(9 * 60));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.recv())
            .await
            .is_err()
    );
    clock.advance(Duration::from_secs(60));
    let end = c.next_question().await;
    assert_eq!(end, json!({"kind": "end", "outcome": "nudged"}));
    assert!(texts(&c.events).contains(&"Still there? No rush.".to_string()));

    // Participant 2 answers in time: the timeout never fires.
    let mut d = Client::connect(&server, hello("follow-up")).await;
    d.until(|v| v["event"]["kind"] == "wait").await;
    clock.advance(2 * DAY);
    let q = d.next_question().await;
    let ack = d
        .input(json!({"type": "answer", "id": "g1", "step": q["step"], "values": ["Great"]}))
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(d.next_question().await["outcome"], "answered");
    clock.advance(DAY);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let token = d.welcome["token"].as_str().unwrap().to_string();
    let log = full_history(&server, &token, &d.conversation()).await;
    assert!(!texts(&log).contains(&"Still there? No rush.".to_string()));
    assert_eq!(
        server.running.app.store.pending_timers().await.unwrap(),
        0,
        "no timer is left behind"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wait_fires_while_the_participant_is_away_and_waits_for_them() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    let mut c = Client::connect(&server, hello("follow-up")).await;
    let token = c.welcome["token"].as_str().unwrap().to_string();
    let conv = c.conversation();
    c.until(|v| v["event"]["kind"] == "wait").await;
    let seen = c.max_seq();
    drop(c);
    clock.advance(2 * DAY);
    eventually_logged(
        &server,
        &token,
        &conv,
        "It has been two days. How is it going?",
    )
    .await;
    // Coming back, the participant gets what arrived while away, once, in order.
    let mut h = hello("follow-up");
    h["token"] = token.clone().into();
    h["conversation"] = conv.clone().into();
    h["last_seq"] = seen.into();
    let mut back = Client::connect(&server, h).await;
    let q = back.next_question().await;
    assert_eq!(q["step"], "how");
    assert!(back.seqs().iter().all(|s| *s > seen));
    server.stop().await;
}

#[tokio::test]
async fn an_overdue_timer_fires_when_the_server_starts_again() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    let mut c = Client::connect(&server, hello("follow-up")).await;
    let token = c.welcome["token"].as_str().unwrap().to_string();
    let conv = c.conversation();
    c.until(|v| v["event"]["kind"] == "wait").await;
    drop(c);
    let dir = server.stop().await;
    // Down for three days: the wait's time passes while no server runs.
    clock.advance(3 * DAY);
    let server = TestServer::start_on(dir.clone(), config(dir.path()), clock.clone()).await;
    let log = eventually_logged(
        &server,
        &token,
        &conv,
        "It has been two days. How is it going?",
    )
    .await;
    let follow_ups = texts(&log)
        .iter()
        .filter(|t| t.starts_with("It has been two days"))
        .count();
    assert_eq!(follow_ups, 1);
    server.stop().await;
}

/// Answers the reminder flow's question and returns the participant's token and
/// conversation.
async fn ask_for_a_reminder(server: &TestServer) -> (String, String) {
    let mut c = Client::connect(server, hello("reminder")).await;
    let q = c.next_question().await;
    c.input(json!({"type": "answer", "id": "y1", "step": q["step"], "text": "yes"}))
        .await;
    c.until(|v| v["event"]["kind"] == "wait").await;
    (
        c.welcome["token"].as_str().unwrap().to_string(),
        c.conversation(),
    )
}

#[tokio::test]
async fn a_wait_resumed_too_late_follows_its_lateness_policy() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    // On time (within the minute `late: skip` allows): the reminder.
    let (token, conv) = ask_for_a_reminder(&server).await;
    clock.advance(Duration::from_secs(3600));
    eventually_logged(&server, &token, &conv, "This is your reminder.").await;
    // The server is down when the next one is due and comes back 2 hours later:
    // too late for `late: skip`, so the flow goes to `on_late`.
    let (token, conv) = ask_for_a_reminder(&server).await;
    let dir = server.stop().await;
    clock.advance(Duration::from_secs(3 * 3600));
    let server = TestServer::start_on(dir.clone(), config(dir.path()), clock.clone()).await;
    let log = eventually_logged(
        &server,
        &token,
        &conv,
        "Sorry, I missed the moment for your reminder.",
    )
    .await;
    assert!(!texts(&log).contains(&"This is your reminder.".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn a_conversation_without_input_expires() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    let mut c = Client::connect(&server, hello("reminder")).await;
    let q = c.next_question().await;
    // No answer for three days (`expire_after: 3d`): the conversation ends.
    clock.advance(Duration::from_secs(3 * 24 * 3600 - 60));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.recv())
            .await
            .is_err()
    );
    clock.advance(Duration::from_secs(60));
    let end = c.next_question().await;
    assert_eq!(end, json!({"kind": "end", "outcome": "expired"}));
    let late = c
        .input(json!({"type": "answer", "id": "y2", "step": q["step"], "text": "yes"}))
        .await;
    assert_eq!(late["code"], "ended");
    // An answer restarts the expiry period: a day later, still open.
    let mut d = Client::connect(
        &server,
        json!({"type": "hello", "v": 1, "flow": "reminder", "restart": true}),
    )
    .await;
    let q = d.next_question().await;
    clock.advance(Duration::from_secs(2 * 24 * 3600));
    d.input(json!({"type": "answer", "id": "n1", "step": q["step"], "text": "no"}))
        .await;
    let answered = clock_now_ms(&server);
    let timers = server
        .running
        .app
        .store
        .timers_due(i64::MAX / 4, (i64::MIN, 0), 100)
        .await
        .unwrap();
    let expiry: Vec<i64> = timers
        .iter()
        .filter(|t| t.kind == "expire" && t.conversation_id.as_deref() == Some(&d.conversation()))
        .map(|t| t.due_at)
        .collect();
    assert_eq!(expiry, [answered + 3 * 24 * 3600 * 1000]);
    server.stop().await;
}
