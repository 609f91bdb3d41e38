//! Hand-off to people: assignment (capacity, fairness, backlog when an agent frees
//! up or comes online), the bot's silence, returning to the flow, snooze on virtual
//! time, CSAT.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use volley_server::ManualClock;
use volley_server::handoff::{self, Actor, AgentInfo, Desk, Target};

use crate::support::*;

fn agent(id: &str, capacity: usize) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("Agent {id}"),
        capacity,
    }
}

fn actor(id: &str) -> Actor {
    Actor {
        id: id.into(),
        name: format!("Agent {id}"),
    }
}

/// A participant who answered the name question and now waits for a person.
async fn handed_off(server: &TestServer, name: &str) -> Client {
    let mut c = Client::connect(server, hello("desk")).await;
    let ask = c.next_question().await;
    let id = c.fresh_id();
    let ack = c
        .input(json!({"type": "answer", "id": id, "step": ask["step"], "text": name}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    c.until(|v| v["event"]["kind"] == "queue").await;
    c
}

/// Waits (briefly, in real time) until the store's hand-off row satisfies `ok`.
async fn row_until(
    server: &TestServer,
    conv: &str,
    ok: impl Fn(&volley_store::HandoffRow) -> bool,
) -> volley_store::HandoffRow {
    for _ in 0..300 {
        if let Some(row) = server.running.app.store.handoff(conv).await.unwrap()
            && ok(&row)
        {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "hand-off of {conv} never matched: {:?}",
        server.running.app.store.handoff(conv).await.unwrap()
    );
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event"]["kind"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn waiting_conversations_go_to_agents_within_capacity_longest_waiting_first() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let mut convs = Vec::new();
    for i in 0..5 {
        let c = handed_off(&server, &format!("P{i}")).await;
        let queue = c.events.last().unwrap()["event"].clone();
        assert_eq!(queue["position"], i + 1, "{queue}");
        assert_eq!(queue["agents_available"], 0);
        assert!(
            queue["text"]
                .as_str()
                .unwrap()
                .contains("No one is available"),
            "{queue}"
        );
        convs.push(c.conversation());
    }
    // Nobody online: all wait.
    for c in &convs {
        assert_eq!(
            app.store.handoff(c).await.unwrap().unwrap().status,
            "queued"
        );
    }
    // Agents come online: the backlog is assigned, oldest first, within capacity.
    let _a = Desk::connect(app, agent("a", 2));
    let _b = Desk::connect(app, agent("b", 1));
    let mut owners = Vec::new();
    for c in &convs[..3] {
        let row = row_until(&server, c, |r| r.status == "assigned").await;
        owners.push(row.agent_id.unwrap());
    }
    owners.sort();
    assert_eq!(owners, ["a", "a", "b"]);
    // Once assignment has caught up, nobody is over capacity: the rest still wait.
    app.desk.settled().await;
    for c in &convs[3..] {
        let row = app.store.handoff(c).await.unwrap().unwrap();
        assert_eq!(row.status, "queued", "over capacity: {row:?}");
    }
    // B resolves theirs: the longest waiting of the rest goes to B.
    let b_conv = {
        let mut found = None;
        for c in &convs[..3] {
            if app
                .store
                .handoff(c)
                .await
                .unwrap()
                .unwrap()
                .agent_id
                .as_deref()
                == Some("b")
            {
                found = Some(c.clone());
            }
        }
        found.unwrap()
    };
    handoff::resolve(app, &b_conv, &actor("b"), false, None)
        .await
        .unwrap();
    let row = row_until(&server, &convs[3], |r| r.status == "assigned").await;
    assert_eq!(row.agent_id.as_deref(), Some("b"));
    assert_eq!(
        app.store.handoff(&convs[4]).await.unwrap().unwrap().status,
        "queued"
    );
}

#[tokio::test]
async fn agents_with_room_take_turns() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 10));
    let _b = Desk::connect(app, agent("b", 10));
    let mut owners = Vec::new();
    for i in 0..4 {
        let c = handed_off(&server, &format!("P{i}")).await;
        let row = row_until(&server, &c.conversation(), |r| r.status == "assigned").await;
        owners.push(row.agent_id.unwrap());
    }
    assert_ne!(owners[0], owners[1], "{owners:?}");
    assert_eq!(owners[0], owners[2], "{owners:?}");
    assert_eq!(owners[1], owners[3], "{owners:?}");
    // An agent who goes away gets nothing new; their colleague does.
    assert!(app.desk.set_available(&owners[0], false));
    let c = handed_off(&server, "P4").await;
    let row = row_until(&server, &c.conversation(), |r| r.status == "assigned").await;
    assert_eq!(row.agent_id.as_ref(), Some(&owners[1]));
}

#[tokio::test]
async fn the_bot_is_silent_with_a_person_and_the_flow_continues_where_they_return_it() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 5));
    let mut c = handed_off(&server, "Sam").await;
    let conv = c.conversation();
    c.until(|v| v["event"]["kind"] == "assigned").await;
    assert_eq!(c.events.last().unwrap()["event"]["agent"], "Agent a");
    assert!(
        c.events.last().unwrap()["event"].get("agent_id").is_none(),
        "account ids stay private"
    );
    // The participant writes; only their own message is logged: the bot says nothing.
    let id = c.fresh_id();
    let ack = c
        .input(json!({"type": "say", "id": id, "text": "Is anyone there?"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let log = app.store.events_after(&conv, 0, 100).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.kind, "input");
    assert!(last.data.contains("Is anyone there?"));
    assert!(!log.iter().any(|e| e.data.contains("Not shown")));
    // An answer meant for the bot is refused while a person has it.
    let id = c.fresh_id();
    let err = c
        .input(json!({"type": "answer", "id": id, "step": "name", "text": "x"}))
        .await;
    assert_eq!(err["code"], "with-human", "{err}");
    // The agent replies: the participant sees it with the agent's name.
    handoff::reply(app, &conv, &actor("a"), false, "Hi Sam, I'm here.", None)
        .await
        .unwrap();
    let msg = c
        .until(|v| v["event"]["kind"] == "message")
        .await
        .pop()
        .unwrap();
    assert_eq!(msg["event"]["from"], "agent");
    assert_eq!(msg["event"]["agent"], "Agent a");
    assert_eq!(msg["event"]["text"], "Hi Sam, I'm here.");
    let row = app.store.handoff(&conv).await.unwrap().unwrap();
    assert!(row.first_reply_at.is_some());
    assert_eq!(row.preview, "Hi Sam, I'm here.");
    // A private note never reaches the participant.
    handoff::note(app, &conv, &actor("a"), "VIP customer", None)
        .await
        .unwrap();
    // Back to the flow at a chosen step, variables kept.
    handoff::resolve(
        app,
        &conv,
        &actor("a"),
        false,
        Some(("back_with_bot".into(), Default::default())),
    )
    .await
    .unwrap();
    let ask = c.next_question().await;
    assert_eq!(ask["step"], "colour");
    let said: Vec<String> = c
        .events
        .iter()
        .filter_map(|e| e["event"]["text"].as_str().map(String::from))
        .collect();
    assert!(
        said.contains(&"Back with the assistant, Sam.".to_string()),
        "{said:?}"
    );
    assert!(!said.iter().any(|t| t.contains("VIP")), "{said:?}");
    assert!(!kinds(&c.events).contains(&"note".to_string()));
    let row = app.store.handoff(&conv).await.unwrap().unwrap();
    assert_eq!(row.status, "resolved");
    assert!(app.desk.row(&conv).is_none());
    // Returned to the flow: no rating is asked, and none is accepted.
    let id = c.fresh_id();
    let err = c.input(json!({"type": "rate", "id": id, "score": 5})).await;
    assert_eq!(err["code"], "no-rating-asked", "{err}");
}

#[tokio::test]
async fn typing_a_keyword_asks_for_a_person() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server, hello("desk")).await;
    let ask = c.next_question().await;
    let id = c.fresh_id();
    c.input(json!({"type": "answer", "id": id, "step": ask["step"], "text": "human"}))
        .await;
    let queue = c
        .until(|v| v["event"]["kind"] == "queue")
        .await
        .pop()
        .unwrap();
    assert_eq!(queue["event"]["queue"], "support");
    let row = server
        .running
        .app
        .store
        .handoff(&c.conversation())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "queued");
    assert_eq!(
        row.reason.as_deref(),
        Some("The participant asked for a person.")
    );
}

#[tokio::test]
async fn resolving_ends_the_conversation_and_asks_for_one_rating() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 5));
    let mut c = handed_off(&server, "Kim").await;
    let conv = c.conversation();
    row_until(&server, &conv, |r| r.status == "assigned").await;
    // Someone else's conversation: not theirs to resolve (an admin may).
    let err = handoff::resolve(app, &conv, &actor("z"), false, None)
        .await
        .unwrap_err();
    assert_eq!(err.code, "not-yours");
    handoff::resolve(app, &conv, &actor("a"), false, None)
        .await
        .unwrap();
    let events = c.until(|v| v["event"]["kind"] == "end").await;
    let k = kinds(&events);
    assert!(k.contains(&"csat_request".to_string()), "{k:?}");
    assert_eq!(events.last().unwrap()["event"]["outcome"], "resolved");
    for (score, code) in [(0, "bad-score"), (6, "bad-score")] {
        let id = c.fresh_id();
        let err = c
            .input(json!({"type": "rate", "id": id, "score": score}))
            .await;
        assert_eq!(err["code"], code, "{err}");
    }
    let id = c.fresh_id();
    let ack = c.input(json!({"type": "rate", "id": id, "score": 4})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let id = c.fresh_id();
    let err = c.input(json!({"type": "rate", "id": id, "score": 1})).await;
    assert_eq!(err["code"], "rated", "{err}");
    let row = app.store.handoff(&conv).await.unwrap().unwrap();
    assert_eq!(row.csat, Some(4));
    assert!(row.resolved_at.is_some());
}

#[tokio::test]
async fn transfers_go_to_an_agent_or_back_to_a_queue() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 1));
    let c = handed_off(&server, "Lee").await;
    let conv = c.conversation();
    row_until(&server, &conv, |r| r.agent_id.as_deref() == Some("a")).await;
    handoff::transfer(app, &conv, &actor("a"), false, Target::Agent(agent("b", 1)))
        .await
        .unwrap();
    let row = app.store.handoff(&conv).await.unwrap().unwrap();
    assert_eq!(row.agent_id.as_deref(), Some("b"));
    // Back to a queue nobody takes from now (a is away): it waits there.
    assert!(app.desk.set_available("a", false));
    handoff::transfer(
        app,
        &conv,
        &actor("b"),
        false,
        Target::Queue("billing".into()),
    )
    .await
    .unwrap();
    let row = app.store.handoff(&conv).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.queue.as_str()),
        ("queued", "billing")
    );
    assert_eq!(row.agent_id, None);
    // Agent a is back, has room and serves every queue: it comes to them.
    assert!(app.desk.set_available("a", true));
    row_until(&server, &conv, |r| r.agent_id.as_deref() == Some("a")).await;
}

#[tokio::test]
async fn a_snoozed_conversation_comes_back_on_time_or_when_the_participant_writes() {
    let clock = Arc::new(ManualClock::new("2026-03-06T10:00:00Z".parse().unwrap()));
    let server = TestServer::on_clock(&clock).await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 5));
    let mut c = handed_off(&server, "Ada").await;
    let conv = c.conversation();
    row_until(&server, &conv, |r| r.status == "assigned").await;
    let hour = 3_600_000;
    let until = app.clock.now_ms() + hour;
    handoff::snooze(app, &conv, &actor("a"), false, until)
        .await
        .unwrap();
    assert_eq!(
        app.store.handoff(&conv).await.unwrap().unwrap().status,
        "snoozed"
    );
    // Its wake-up is a durable timer due exactly then (the scheduler never fires early:
    // tests/it/scheduling.rs).
    let before = app.store.timers_due(until - 1, (0, 0), 10).await.unwrap();
    assert!(before.iter().all(|t| t.kind != "snooze"), "{before:?}");
    let due = app.store.timers_due(until, (0, 0), 10).await.unwrap();
    assert!(
        due.iter().any(|t| t.kind == "snooze" && t.due_at == until),
        "{due:?}"
    );
    clock.advance(Duration::from_secs(61 * 60));
    let row = row_until(&server, &conv, |r| r.status == "assigned").await;
    assert_eq!(row.snoozed_until, None);
    let log = app.store.events_after(&conv, 0, 100).await.unwrap();
    assert!(log.iter().any(|e| e.kind == "woke"), "{log:?}");

    // Snoozed again; the participant writes: it is back at once, and the pending
    // wake-up later changes nothing.
    let until = app.clock.now_ms() + hour;
    handoff::snooze(app, &conv, &actor("a"), false, until)
        .await
        .unwrap();
    let id = c.fresh_id();
    c.input(json!({"type": "say", "id": id, "text": "Still there?"}))
        .await;
    let row = app.store.handoff(&conv).await.unwrap().unwrap();
    assert_eq!(row.status, "assigned");
    let before = app.store.events_after(&conv, 0, 100).await.unwrap().len();
    clock.advance(Duration::from_secs(2 * 3600));
    for _ in 0..100 {
        if app.store.pending_timers().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.store.pending_timers().await.unwrap(), 0);
    assert_eq!(
        app.store.events_after(&conv, 0, 100).await.unwrap().len(),
        before
    );
    // Bad snoozes change nothing.
    for bad in [app.clock.now_ms() - 1, app.clock.now_ms() + 91 * 24 * hour] {
        let err = handoff::snooze(app, &conv, &actor("a"), false, bad)
            .await
            .unwrap_err();
        assert_eq!(err.code, "bad-snooze");
    }
}

#[tokio::test]
async fn open_hand_offs_survive_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(dir.clone(), config(dir.path())).await;
    let c = handed_off(&server, "Max").await;
    let conv = c.conversation();
    drop(c);
    let dir = server.stop().await;
    let server = TestServer::start_with(dir.clone(), config(dir.path())).await;
    let app = &server.running.app;
    assert_eq!(app.desk.row(&conv).unwrap().status, "queued");
    let _a = Desk::connect(app, agent("a", 1));
    row_until(&server, &conv, |r| r.status == "assigned").await;
}

/// A request from a console session (with its CSRF token unless `csrf` is false).
async fn as_staff(
    server: &TestServer,
    s: &Session,
    method: &str,
    path: &str,
    body: Option<Value>,
    csrf: bool,
) -> (u16, Value) {
    let mut req = http()
        .request(method.parse().unwrap(), server.http(path))
        .header(
            reqwest::header::COOKIE,
            format!("volley_session={}", s.token),
        );
    if csrf {
        req = req.header("x-csrf-token", &s.csrf);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Reads a Server-Sent Events response until a `data:` line satisfies `ok`.
async fn sse_until(resp: &mut reqwest::Response, ok: impl Fn(&Value) -> bool) -> Value {
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Some(data) = line.trim_end().strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                && ok(&v)
            {
                return v;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("the stream answered in time")
            .unwrap()
            .expect("the stream is open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn agents_work_the_desk_over_http() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let ann = user(&server, "ann@example.com", "agent").await;
    let bob = user(&server, "bob@example.com", "agent").await;
    let (_, ann_me) = me(&server, &ann.token).await;
    let ann_id = ann_me["id"].as_str().unwrap().to_string();
    // Availability needs an open console.
    let (status, err) = as_staff(
        &server,
        &bob,
        "POST",
        "/api/desk/status",
        Some(json!({"available": false})),
        true,
    )
    .await;
    assert_eq!((status, err["code"].as_str()), (409, Some("offline")));
    // Ann opens the console: online, the desk stream tells her what is hers.
    let mut desk = http()
        .get(server.http("/api/desk/stream"))
        .header(
            reqwest::header::COOKIE,
            format!("volley_session={}", ann.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(desk.status(), 200);
    let mut c = handed_off(&server, "Kim").await;
    let conv = c.conversation();
    let update = sse_until(&mut desk, |v| {
        v["type"] == "handoff" && v["handoff"]["status"] == "assigned"
    })
    .await;
    assert_eq!(update["handoff"]["conversation"], conv.as_str());
    assert_eq!(update["handoff"]["agent"], ann_id.as_str());
    let (status, view) = as_staff(&server, &ann, "GET", "/api/desk", None, false).await;
    assert_eq!(status, 200);
    assert_eq!(view["open"][0]["conversation"], conv.as_str());
    assert_eq!(view["agents"][0]["load"], 1);
    // A colleague may not take it or act on it.
    let reply = |text: &str, id: &str| json!({"id": id, "text": text});
    let path = |action: &str| format!("/api/handoffs/{conv}/{action}");
    let (status, err) = as_staff(&server, &bob, "POST", &path("pick"), None, true).await;
    assert_eq!((status, err["code"].as_str()), (403, Some("not-yours")));
    let (status, _) = as_staff(
        &server,
        &bob,
        "POST",
        &path("reply"),
        Some(reply("hi", "b1")),
        true,
    )
    .await;
    assert_eq!(status, 403);
    // Replies: CSRF needed, bad text refused, a retry applied once.
    let (status, _) = as_staff(
        &server,
        &ann,
        "POST",
        &path("reply"),
        Some(reply("Hello Kim", "r1")),
        false,
    )
    .await;
    assert_eq!(status, 403);
    for (text, code) in [("   ", "empty"), (&"x".repeat(4001)[..], "too-long")] {
        let (status, err) = as_staff(
            &server,
            &ann,
            "POST",
            &path("reply"),
            Some(reply(text, "bad")),
            true,
        )
        .await;
        assert_eq!((status, err["code"].as_str()), (422, Some(code)), "{err}");
    }
    let (status, first) = as_staff(
        &server,
        &ann,
        "POST",
        &path("reply"),
        Some(reply("Hello Kim", "r1")),
        true,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = as_staff(
        &server,
        &ann,
        "POST",
        &path("reply"),
        Some(reply("Hello Kim", "r1")),
        true,
    )
    .await;
    assert_eq!(first["seq"], again["seq"]);
    let msg = c
        .until(|v| v["event"]["kind"] == "message")
        .await
        .pop()
        .unwrap();
    assert_eq!(msg["event"]["agent"], "agent user");
    let log = app.store.events_after(&conv, 0, 100).await.unwrap();
    assert_eq!(
        log.iter().filter(|e| e.data.contains("Hello Kim")).count(),
        1
    );
    // The conversation's own stream shows private entries to agents.
    let mut watch = http()
        .get(server.http(&format!("{}?after=0", path("stream"))))
        .header(
            reqwest::header::COOKIE,
            format!("volley_session={}", ann.token),
        )
        .send()
        .await
        .unwrap();
    let (status, _) = as_staff(
        &server,
        &ann,
        "POST",
        &path("note"),
        Some(reply("Prefers email", "n1")),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let note = sse_until(&mut watch, |v| v["kind"] == "note").await;
    assert_eq!(note["data"]["text"], "Prefers email");
    // Tags: one word each, normalised.
    let (status, err) = as_staff(
        &server,
        &ann,
        "POST",
        &path("tags"),
        Some(json!({"tags": ["two words"]})),
        true,
    )
    .await;
    assert_eq!((status, err["code"].as_str()), (422, Some("bad-tag")));
    let (status, _) = as_staff(
        &server,
        &ann,
        "POST",
        &path("tags"),
        Some(json!({"tags": ["VIP", "vip", "billing"]})),
        true,
    )
    .await;
    assert_eq!(status, 200);
    // Canned responses: admins write them, agents get them filled in.
    let (status, _) = as_staff(
        &server,
        &ann,
        "POST",
        "/api/canned",
        Some(json!({"code": "hi", "title": "Greeting", "body": "x"})),
        true,
    )
    .await;
    assert_eq!(status, 403);
    let canned = json!({"code": "hi", "title": "Greeting", "body": "Hi {{ var.name }}, {{ agent.name }} here.{{ nope }}"});
    let (status, created) = api(&server, "POST", "/api/canned", canned.clone()).await;
    assert_eq!(status, 200, "{created}");
    let (status, err) = api(&server, "POST", "/api/canned", canned).await;
    assert_eq!((status, err["code"].as_str()), (409, Some("code-taken")));
    let (status, err) = api(
        &server,
        "POST",
        "/api/canned",
        json!({"code": "a b", "title": "t", "body": "b"}),
    )
    .await;
    assert_eq!((status, err["code"].as_str()), (422, Some("bad-code")));
    let (status, detail) = as_staff(
        &server,
        &ann,
        "GET",
        &format!("/api/handoffs/{conv}"),
        None,
        false,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(detail["canned"][0]["text"], "Hi Kim, agent user here.");
    assert_eq!(detail["handoff"]["tags"], json!(["vip", "billing"]));
    assert_eq!(detail["variables"]["name"], "Kim");
    assert!(
        detail["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "note")
    );
    // Bad snoozes, transfers and returns change nothing.
    let before = app.store.events_after(&conv, 0, 1000).await.unwrap().len();
    for (action, body, status, code) in [
        ("snooze", json!({"until": 0}), 422, "bad-snooze"),
        ("transfer", json!({"agent": "nobody"}), 422, "unknown-agent"),
        ("transfer", json!({}), 400, "bad-json"),
        (
            "resolve",
            json!({"step": "no-such-step"}),
            422,
            "invalid-input",
        ),
    ] {
        let (s, err) = as_staff(&server, &ann, "POST", &path(action), Some(body), true).await;
        assert_eq!(
            (s, err["code"].as_str()),
            (status, Some(code)),
            "{action}: {err}"
        );
    }
    assert_eq!(
        app.store.events_after(&conv, 0, 1000).await.unwrap().len(),
        before
    );
    // Resolved: listed with the resolved ones, gone from the desk.
    let (status, _) = as_staff(
        &server,
        &ann,
        "POST",
        &path("resolve"),
        Some(json!({})),
        true,
    )
    .await;
    assert_eq!(status, 200);
    let (_, resolved) = as_staff(&server, &ann, "GET", "/api/handoffs/resolved", None, false).await;
    assert_eq!(resolved[0]["conversation"], conv.as_str());
    let (_, view) = as_staff(&server, &ann, "GET", "/api/desk", None, false).await;
    assert_eq!(view["open"], json!([]));
}

#[tokio::test]
async fn waiting_participants_are_told_when_their_place_moves() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 1));
    let first = handed_off(&server, "P0").await;
    row_until(&server, &first.conversation(), |r| r.status == "assigned").await;
    let second = handed_off(&server, "P1").await;
    let mut third = handed_off(&server, "P2").await;
    let told = third.events.last().unwrap()["event"].clone();
    assert_eq!(told["position"], 2, "{told}");
    assert!(
        told["text"]
            .as_str()
            .unwrap()
            .contains("All our agents are busy"),
        "{told}"
    );
    // The agent frees up: P1 is assigned, and P2 hears they are next in line.
    handoff::resolve(app, &first.conversation(), &actor("a"), false, None)
        .await
        .unwrap();
    row_until(&server, &second.conversation(), |r| r.status == "assigned").await;
    let moved = third.until(|v| v["type"] == "queue").await.pop().unwrap();
    assert_eq!(moved["position"], 1, "{moved}");
    assert!(
        moved.get("seq").is_none(),
        "a signal, not a log entry: {moved}"
    );
    // Still true: the one agent is busy again (with P1).
    assert_eq!(
        moved["text"],
        "All our agents are busy right now. You're next in line. A person will reply here as soon as one is free.",
    );
}

#[tokio::test]
async fn a_participant_reconnecting_while_waiting_hears_where_they_stand_now() {
    let server = TestServer::start().await;
    let app = &server.running.app;
    let _a = Desk::connect(app, agent("a", 1));
    let first = handed_off(&server, "P0").await;
    row_until(&server, &first.conversation(), |r| r.status == "assigned").await;
    let _second = handed_off(&server, "P1").await;
    let third = handed_off(&server, "P2").await;
    let token = third.welcome["token"].as_str().unwrap().to_string();
    let conv = third.conversation();
    drop(third);
    let mut h = hello("desk");
    h["token"] = token.into();
    h["conversation"] = conv.clone().into();
    let mut again = Client::connect(&server, h).await;
    assert_eq!(again.welcome["status"], "human");
    // The history first (the notice from joining), then where they stand now.
    let now = again.until(|v| v["type"] == "queue").await;
    let logged = again
        .events
        .iter()
        .rev()
        .find(|e| e["event"]["kind"] == "queue")
        .expect("the logged notice");
    assert_eq!(logged["event"]["position"], 2);
    let current = now.last().unwrap();
    assert_eq!(current["position"], 2, "{current}");
    // P0 leaves the agent: P1 is assigned; P2 is next, and hears it.
    handoff::resolve(app, &first.conversation(), &actor("a"), false, None)
        .await
        .unwrap();
    let moved = again.until(|v| v["type"] == "queue").await.pop().unwrap();
    assert_eq!(moved["position"], 1, "{moved}");
}
