//! Premieres being watched, on virtual time: the shared chat and its moderators, polls,
//! offers, Q&A, registration with reminders through a real webhook receiver, replays,
//! and a room rebuilt from its log after a restart. Real server, real SQLite file, real
//! WebSocket clients.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use volley_server::{Config, ManualClock};

use crate::support::*;

const SHOWING: &str = "talk@2026-12-10T19:00:00Z";

/// A ten-minute talk at 19:00 UTC with a Q&A from 20 s, a poll at 30 s (results from
/// 45 s, closed at 60 s), an offer at 40 s, a day of replay and two reminders.
const TALK: &str = r#"volley: 1
event: talk
title: The talk
timezone: UTC
media: { url: "https://example.com/talk.mp4", duration: 10m }
schedule: { once: 2026-12-10T19:00 }
replay: { window: 1d }
registration: { fields: [name, email, company] }
reminders: [1h, 5m]
timeline:
  - { at: 10s, say: "Hello **everyone**" }
  - at: 20s
    qa: { until: 5m }
  - at: 30s
    poll: { id: fav, question: Which?, options: [A, B, C], close_at: 60s, results_at: 45s }
  - at: 40s
    offer: { id: buy, text: Buy it, url: "https://example.com/buy", until: 2m }
"#;

fn at(instant: &str) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(instant.parse().unwrap()))
}

/// A server publishing the talk (in its own flows directory), on `clock`.
async fn talk_server(clock: Arc<ManualClock>, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(flows.join("talk.yaml"), TALK).unwrap();
    let mut cfg = config(dir.path());
    cfg.flows = Some(flows);
    tweak(&mut cfg);
    TestServer::start_on(dir, cfg, clock).await
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A viewer (or a moderator, with a console session) connected to the talk.
struct Viewer {
    ws: Ws,
    hello: Value,
    /// Frames received and not yet looked at.
    seen: Vec<Value>,
}

impl Viewer {
    async fn join(server: &TestServer, query: &str, session: Option<&Session>) -> Viewer {
        let url = format!("ws://{}/events/talk/ws?{query}", server.running.addr);
        let mut req = url.into_client_request().unwrap();
        if let Some(s) = session {
            req.headers_mut().insert(
                "cookie",
                format!("volley_session={}", s.token).parse().unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connects");
        let mut v = Viewer {
            ws,
            hello: Value::Null,
            seen: Vec::new(),
        };
        v.hello = v.frame().await;
        assert_eq!(v.hello["t"], "hello", "{}", v.hello);
        v
    }

    fn token(&self) -> String {
        self.hello["viewer"].as_str().unwrap().into()
    }

    fn id(&self) -> String {
        self.hello["viewer_id"].as_str().unwrap().into()
    }

    async fn frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("the socket is open")
                .unwrap();
            if let Message::Text(t) = msg {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The first frame (received now or earlier) of type `t` matching `pred`.
    async fn until(&mut self, t: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.seen.iter().position(|f| f["t"] == t && pred(f)) {
            return self.seen.remove(i);
        }
        loop {
            let f = self.frame().await;
            if f["t"] == t && pred(&f) {
                return f;
            }
            self.seen.push(f);
        }
    }

    /// Sends `v` with a `ref` and returns the `ok` or `error` answering it.
    async fn ask(&mut self, mut v: Value) -> Value {
        let r = format!("r{}", rand_ref());
        v["ref"] = r.clone().into();
        self.send(v).await;
        self.until_ref(&r).await
    }

    async fn until_ref(&mut self, r: &str) -> Value {
        loop {
            let f = self.frame().await;
            if f["ref"] == r && (f["t"] == "ok" || f["t"] == "error") {
                return f;
            }
            self.seen.push(f);
        }
    }

    /// Asserts the request is refused with `code`.
    async fn refused(&mut self, v: Value, code: &str) {
        let a = self.ask(v.clone()).await;
        assert_eq!(
            (a["t"].as_str(), a["code"].as_str()),
            (Some("error"), Some(code)),
            "{v} → {a}"
        );
    }

    async fn accepted(&mut self, v: Value) {
        let a = self.ask(v.clone()).await;
        assert_eq!(a["t"], "ok", "{v} → {a}");
    }
}

fn rand_ref() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test]
async fn viewers_share_one_chat_that_moderators_keep_civil() {
    let clock = at("2026-12-10T19:00:15Z");
    let server = talk_server(clock.clone(), |_| {}).await;
    let mut a = Viewer::join(&server, "", None).await;
    let h = &a.hello;
    assert!(h["viewer"].as_str().unwrap().starts_with("vw_"), "{h}");
    assert_eq!(h["moderator"], false);
    assert_eq!(h["showing"]["id"], SHOWING);
    assert_eq!(h["event"]["label"], "Premiere · pre-recorded");
    assert_eq!(
        h["event"]["timeline"][0]["html"],
        "<p>Hello <strong>everyone</strong></p>"
    );
    assert_eq!(h["event"]["timeline"][2]["options"], json!(["A", "B", "C"]));
    // The listing names the live showing (to join it by id).
    let (_, detail) = api(&server, "GET", "/api/events/talk", Value::Null).await;
    assert_eq!(detail["occurrences"][0]["id"], SHOWING, "{detail}");
    let mut b = Viewer::join(&server, &format!("showing={SHOWING}"), None).await;
    assert_eq!(b.hello["showing"]["id"], SHOWING);
    assert_ne!(a.id(), b.id());

    a.refused(json!({"t": "chat", "text": "hi"}), "no_name")
        .await;
    a.accepted(json!({"t": "name", "name": "Ana"})).await;
    b.accepted(json!({"t": "name", "name": "Bo"})).await;
    a.accepted(json!({"t": "chat", "text": "  hello all  "}))
        .await;
    for v in [&mut a, &mut b] {
        let m = v.until("chat", |_| true).await;
        assert_eq!(
            (&m["name"], &m["text"], &m["pos"]),
            (&json!("Ana"), &json!("hello all"), &json!(15_000))
        );
    }
    b.refused(json!({"t": "chat", "text": "x".repeat(501)}), "too_long")
        .await;
    b.refused(json!({"t": "chat", "text": "   "}), "bad_message")
        .await;
    b.refused(json!({"t": "shout"}), "bad_message").await;
    b.refused(json!({"t": "delete", "message": "m1"}), "forbidden")
        .await;
    b.send(json!("not an object")).await;
    assert_eq!(b.until("error", |_| true).await["code"], "bad_message");

    // A moderator signed in to the console joins the same chat with its tools.
    let session = user(&server, "mod@example.com", "moderator").await;
    let mut m = Viewer::join(&server, "", Some(&session)).await;
    assert_eq!(m.hello["moderator"], true);
    assert_eq!(m.hello["chat"][0]["text"], "hello all");
    let first = m.hello["chat"][0]["id"].as_str().unwrap().to_string();
    // An agent's session is not a moderator's.
    let agent = user(&server, "agent@example.com", "agent").await;
    let ag = Viewer::join(&server, "", Some(&agent)).await;
    assert_eq!(ag.hello["moderator"], false);

    // A report reaches moderators only.
    b.accepted(json!({"t": "report", "message": first, "reason": "rude"}))
        .await;
    b.refused(json!({"t": "report", "message": first}), "already")
        .await;
    let r = m.until("report", |_| true).await;
    assert_eq!((&r["message"], &r["reports"]), (&json!(first), &json!(1)));

    // Delete: gone for everyone, now and for later joiners.
    m.accepted(json!({"t": "delete", "message": first})).await;
    for v in [&mut a, &mut b] {
        assert_eq!(v.until("deleted", |_| true).await["ids"], json!([first]));
    }
    let late = Viewer::join(&server, "", None).await;
    assert_eq!(late.hello["chat"], json!([]));

    // Pin, slow mode, mute.
    a.accepted(json!({"t": "chat", "text": "second"})).await;
    let second = a.until("chat", |c| c["text"] == "second").await["id"].clone();
    m.accepted(json!({"t": "pin", "message": second})).await;
    assert_eq!(
        b.until("pinned", |_| true).await["message"]["text"],
        "second"
    );
    m.accepted(json!({"t": "slow", "seconds": 30})).await;
    assert_eq!(a.until("slow", |_| true).await["seconds"], 30);
    b.accepted(json!({"t": "chat", "text": "one"})).await;
    b.refused(json!({"t": "chat", "text": "two"}), "slow_mode")
        .await;
    m.accepted(json!({"t": "chat", "text": "moderators are exempt"}))
        .await;
    m.accepted(json!({"t": "chat", "text": "from slow mode"}))
        .await;
    clock.advance(Duration::from_secs(30));
    b.accepted(json!({"t": "chat", "text": "two"})).await;
    m.accepted(json!({"t": "slow", "seconds": 0})).await;
    m.refused(json!({"t": "slow", "seconds": 601}), "bad_message")
        .await;
    m.accepted(json!({"t": "mute", "viewer_id": b.id(), "minutes": 5}))
        .await;
    assert!(b.until("muted", |_| true).await["until"].as_i64().unwrap() > 0);
    b.refused(json!({"t": "chat", "text": "am I muted?"}), "muted")
        .await;
    clock.advance(Duration::from_secs(5 * 60));
    b.accepted(json!({"t": "chat", "text": "back"})).await;
    clock.advance(Duration::from_secs(5));

    // Rate limit: a burst of five, then one a second.
    for i in 0..5 {
        b.accepted(json!({"t": "chat", "text": format!("burst {i}")}))
            .await;
    }
    b.refused(json!({"t": "chat", "text": "too fast"}), "rate_limited")
        .await;
    clock.advance(Duration::from_secs(1));
    b.accepted(json!({"t": "chat", "text": "after a second"}))
        .await;

    // Ban: their messages go, they cannot post, ask or vote again (any showing).
    m.accepted(json!({"t": "ban", "viewer_id": a.id()})).await;
    a.until("banned", |_| true).await;
    let gone = b.until("deleted", |_| true).await["ids"].clone();
    assert_eq!(gone, json!([second]));
    assert_eq!(b.until("pinned", |_| true).await["message"], Value::Null);
    a.refused(json!({"t": "chat", "text": "let me back"}), "banned")
        .await;
    let again = Viewer::join(&server, &format!("viewer={}", a.token()), None).await;
    assert_eq!(again.hello["banned"], true);
    m.refused(json!({"t": "ban", "viewer_id": "vnobody"}), "not_found")
        .await;

    // Everything is in the showing's log.
    let log = server
        .running
        .app
        .store
        .showing_log(SHOWING, 0, 1000)
        .await
        .unwrap();
    let kinds: Vec<&str> = log.iter().map(|r| r.kind.as_str()).collect();
    for k in [
        "join", "name", "chat", "report", "delete", "pin", "slow", "mute", "ban",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert!(
        log.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "gapless sequence"
    );
    server.stop().await;
}

/// A viewer's next messages are read while earlier ones await their commit: messages
/// sent back to back are all answered, in the order they were sent (a ping at once).
#[tokio::test]
async fn messages_sent_back_to_back_are_answered_in_order() {
    let clock = at("2026-12-10T19:00:15Z");
    let server = talk_server(clock.clone(), |_| {}).await;
    let mut a = Viewer::join(&server, "", None).await;
    let mut b = Viewer::join(&server, "", None).await;
    // A name, six chat messages (one more than the burst), an unknown poll, a ping.
    let mut sent = vec![json!({"t": "name", "name": "Ana", "ref": "n"})];
    for i in 0..6 {
        sent.push(json!({"t": "chat", "text": format!("quick {i}"), "ref": format!("c{i}")}));
    }
    sent.push(json!({"t": "vote", "poll": "nope", "options": [0], "ref": "v"}));
    sent.push(json!({"t": "ping", "c": 7}));
    for m in sent {
        a.send(m).await;
    }
    let mut answers = Vec::new();
    while answers.len() < 8 {
        let f = a.frame().await;
        match f["t"].as_str() {
            Some("ok" | "error") => answers.push((f["ref"].clone(), f["code"].clone())),
            _ => a.seen.push(f),
        }
    }
    let mut expected = vec![(json!("n"), Value::Null)];
    expected.extend((0..5).map(|i| (json!(format!("c{i}")), Value::Null)));
    expected.push((json!("c5"), json!("rate_limited")));
    expected.push((json!("v"), json!("not_found")));
    assert_eq!(answers, expected);
    assert_eq!(a.until("pong", |_| true).await["c"], 7);
    for i in 0..5 {
        let m = b.until("chat", |_| true).await;
        assert_eq!(m["text"], format!("quick {i}"));
    }
    // A WebSocket ping gets its pong, and the frames around it arrive whole.
    clock.advance(Duration::from_secs(5));
    a.ws.send(Message::Ping("hi".into())).await.unwrap();
    a.send(json!({"t": "chat", "text": "after the ping", "ref": "p"}))
        .await;
    let (mut pong, mut ok) = (false, false);
    while !(pong && ok) {
        match tokio::time::timeout(Duration::from_secs(10), a.ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .unwrap()
        {
            Message::Pong(p) => pong = &p[..] == b"hi",
            Message::Text(t) => ok |= serde_json::from_str::<Value>(&t).unwrap()["ref"] == "p",
            _ => {}
        }
    }
    assert_eq!(b.until("chat", |_| true).await["text"], "after the ping");
    server.stop().await;
}

#[tokio::test]
async fn polls_offers_and_the_clock_follow_the_timeline() {
    let clock = at("2026-12-10T19:00:15Z");
    let server = talk_server(clock.clone(), |_| {}).await;
    let mut a = Viewer::join(&server, "zone=Europe/Lisbon", None).await;
    let mut b = Viewer::join(&server, "", None).await;

    // The clock-offset protocol: the server's time, with the client's echoed.
    a.send(json!({"t": "ping", "c": 1234.5})).await;
    let pong = a.until("pong", |_| true).await;
    assert_eq!(pong["c"], 1234.5);
    let expected = "2026-12-10T19:00:15Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond() as f64;
    assert_eq!(pong["s"].as_f64().unwrap(), expected);

    a.refused(
        json!({"t": "vote", "poll": "fav", "options": [1]}),
        "closed",
    )
    .await;
    clock.advance(Duration::from_secs(20)); // 35 s: open
    a.accepted(json!({"t": "vote", "poll": "fav", "options": [1]}))
        .await;
    a.refused(
        json!({"t": "vote", "poll": "fav", "options": [2]}),
        "already",
    )
    .await;
    b.refused(
        json!({"t": "vote", "poll": "fav", "options": [0, 1]}),
        "bad_message",
    )
    .await;
    b.refused(
        json!({"t": "vote", "poll": "fav", "options": [3]}),
        "bad_message",
    )
    .await;
    b.refused(
        json!({"t": "vote", "poll": "fav", "options": "B"}),
        "bad_message",
    )
    .await;
    b.refused(
        json!({"t": "vote", "poll": "nope", "options": [0]}),
        "not_found",
    )
    .await;
    b.accepted(json!({"t": "vote", "poll": "fav", "options": [1]}))
        .await;
    assert!(
        a.seen.iter().all(|f| f["t"] != "poll"),
        "no results before 45 s"
    );
    clock.advance(Duration::from_secs(11)); // 46 s: results shown
    for v in [&mut a, &mut b] {
        let p = v.until("poll", |_| true).await;
        assert_eq!(
            (&p["id"], &p["counts"], &p["voters"]),
            (&json!("fav"), &json!([0, 2, 0]), &json!(2))
        );
    }
    let mut c = Viewer::join(&server, "", None).await;
    assert_eq!(
        c.hello["polls"][0]["counts"],
        json!([0, 2, 0]),
        "joiners see results"
    );
    c.accepted(json!({"t": "vote", "poll": "fav", "options": [2]}))
        .await;
    assert_eq!(
        a.until("poll", |_| true).await["counts"],
        json!([0, 2, 1]),
        "results follow votes"
    );
    clock.advance(Duration::from_secs(15)); // 61 s: closed
    c.refused(
        json!({"t": "vote", "poll": "fav", "options": [0]}),
        "closed",
    )
    .await;

    a.accepted(json!({"t": "impression", "offer": "buy"})).await;
    a.accepted(json!({"t": "click", "offer": "buy"})).await;
    a.refused(json!({"t": "click", "offer": "nope"}), "not_found")
        .await;
    let log = server
        .running
        .app
        .store
        .showing_log(SHOWING, 0, 1000)
        .await
        .unwrap();
    let click = log
        .iter()
        .find(|r| r.kind == "click")
        .expect("the click is logged");
    let d: Value = serde_json::from_str(&click.data).unwrap();
    assert_eq!((&d["offer"], &d["pos"]), (&json!("buy"), &json!(61_000)));
    assert_eq!(log.iter().filter(|r| r.kind == "vote").count(), 3);

    // Watching is recorded when a viewer leaves: seconds played and time watched.
    for pos in [46_000, 51_000, 56_000, 61_000] {
        c.send(json!({"t": "progress", "pos": pos, "playing": true}))
            .await;
    }
    c.accepted(json!({"t": "name", "name": "Cy"})).await;
    let c_id = c.id();
    drop(c);
    let store = server.running.app.store.clone();
    let leave = wait_for(|| {
        let store = store.clone();
        let c_id = c_id.clone();
        async move {
            let log = store.showing_log(SHOWING, 0, 1000).await.unwrap();
            log.into_iter()
                .find(|r| r.kind == "leave" && r.viewer_id.as_deref() == Some(&c_id))
        }
    })
    .await;
    let d: Value = serde_json::from_str(&leave.data).unwrap();
    assert_eq!(
        (&d["watched_ms"], &d["furthest"]),
        (&json!(15_000), &json!(61_000))
    );

    // The attendance export: one row per viewer, from the log.
    let r = http()
        .get(server.http(&format!("/api/events/talk/attendance?showing={SHOWING}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    let rows: Vec<Vec<String>> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 3, "{csv}");
    let cy = rows.iter().find(|r| r[0] == c_id).expect("Cy's row");
    // name, registered, watched seconds and %, live, replay, chat, votes, clicks, questions
    assert_eq!(
        [
            &cy[1], &cy[2], &cy[6], &cy[7], &cy[8], &cy[9], &cy[10], &cy[11], &cy[12], &cy[13]
        ],
        [
            "Cy", "false", "15", "2.5", "true", "false", "0", "1", "0", "0"
        ]
    );
    let ana = rows.iter().find(|r| r[0] == a.id()).expect("a's row");
    assert_eq!(
        (ana[11].as_str(), ana[12].as_str()),
        ("1", "1"),
        "a voted and clicked"
    );
    server.stop().await;
}

/// Waits until the receiver has had exactly `n` requests (and not more).
async fn deliveries(rx: &Receiver, n: usize) {
    for _ in 0..500 {
        match rx.count() {
            c if c == n => return,
            c if c > n => panic!("{c} deliveries, expected {n}"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("{} deliveries after 5 s, expected {n}", rx.count());
}

/// Polls `probe` until it gives something (the server works in the background).
async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(t) = probe().await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s");
}

#[tokio::test]
async fn questions_are_answered_even_after_the_asker_left_and_rooms_survive_a_restart() {
    let clock = at("2026-12-10T19:00:15Z");
    let rx = receiver().await;
    let hook = rx.url("ok");
    let webhook = move |cfg: &mut Config| {
        cfg.channels.webhook.url = Some(hook.clone());
        cfg.channels.webhook.secret = Some("a webhook secret".into());
        cfg.channels.webhook.allow_private = true;
    };
    let server = talk_server(clock.clone(), webhook.clone()).await;
    // The asker registered (with an email), so they can be told later.
    let (status, reg) = api(
        &server,
        "POST",
        "/api/events/talk/register",
        json!({"name": "Ana", "email": "ana@example.com", "fields": {"company": "Acme"}}),
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    let token = reg["viewer"].as_str().unwrap().to_string();
    assert_eq!(reg["reminders"][0]["kind"], "live_now");
    deliveries(&rx, 1).await;
    let mut a = Viewer::join(&server, &format!("viewer={token}"), None).await;
    assert_eq!(a.hello["name"], "Ana", "a registrant's name is used");
    let mut b = Viewer::join(&server, "", None).await;
    b.accepted(json!({"t": "name", "name": "Bo"})).await;

    a.refused(json!({"t": "ask", "text": "Too early?"}), "closed")
        .await;
    clock.advance(Duration::from_secs(10)); // 25 s: Q&A open
    a.accepted(json!({"t": "ask", "text": "Will it ship in June?"}))
        .await;
    let q = b.until("question", |_| true).await;
    let qid = q["id"].as_str().unwrap().to_string();
    assert_eq!((&q["name"], &q["votes"]), (&json!("Ana"), &json!(0)));
    b.accepted(json!({"t": "upvote", "question": qid})).await;
    b.refused(json!({"t": "upvote", "question": qid}), "already")
        .await;
    assert_eq!(
        a.until("question", |q| q["votes"] == 1).await["id"],
        json!(qid)
    );
    for i in 0..3 {
        b.accepted(json!({"t": "ask", "text": format!("question {i}")}))
            .await;
    }
    b.refused(json!({"t": "ask", "text": "a fourth"}), "rate_limited")
        .await;
    b.accepted(json!({"t": "chat", "text": "kept across restarts"}))
        .await;
    drop(a);

    // Answered after the asker left: told through the channels, and on their next visit.
    let session = user(&server, "mod@example.com", "moderator").await;
    let mut m = Viewer::join(&server, "", Some(&session)).await;
    m.accepted(json!({"t": "answer", "question": qid, "text": "Yes, in June.", "live": true}))
        .await;
    let answered = b.until("question", |q| !q["answer"].is_null()).await;
    assert_eq!(answered["answer"], "Yes, in June.");
    assert_eq!(
        b.until("pinned", |_| true).await["message"]["answer"],
        "Yes, in June."
    );
    deliveries(&rx, 2).await;
    let body: Value = serde_json::from_slice(&rx.requests.lock().unwrap()[1].body).unwrap();
    let text = body.to_string();
    assert!(
        text.contains("Will it ship in June?") && text.contains("Yes, in June."),
        "{text}"
    );
    assert!(text.contains("ana@example.com"), "{text}");

    // A restart: the room is rebuilt from its log.
    let dir = server.stop().await;
    let flows = dir.path().join("flows");
    let mut cfg = config(dir.path());
    cfg.flows = Some(flows);
    webhook(&mut cfg);
    let server = TestServer::start_on(dir, cfg, clock.clone()).await;
    let a = Viewer::join(&server, &format!("viewer={token}"), None).await;
    let h = &a.hello;
    assert_eq!(
        h["answers"],
        json!([{"question": "Will it ship in June?", "answer": "Yes, in June."}])
    );
    let q = h["questions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == json!(qid))
        .unwrap();
    assert_eq!(
        (&q["votes"], &q["answer"]),
        (&json!(1), &json!("Yes, in June."))
    );
    assert_eq!(h["pinned"]["answer"], "Yes, in June.");
    assert!(
        h["chat"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["text"] == "kept across restarts")
    );
    let mut b2 = Viewer::join(&server, &format!("viewer={}", b.token()), None).await;
    assert_eq!(b2.hello["name"], "Bo");
    b2.accepted(json!({"t": "chat", "text": "after the restart"}))
        .await;
    let log = server
        .running
        .app
        .store
        .showing_log(SHOWING, 0, 10_000)
        .await
        .unwrap();
    assert!(
        log.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "numbering continues"
    );
    server.stop().await;
}

#[tokio::test]
async fn registrants_get_each_reminder_once_and_late_ones_hear_it_is_starting() {
    let clock = at("2026-12-10T17:00:00Z");
    let rx = receiver().await;
    let hook = rx.url("ok");
    let server = talk_server(clock.clone(), move |cfg| {
        cfg.channels.webhook.url = Some(hook);
        cfg.channels.webhook.secret = Some("a webhook secret".into());
        cfg.channels.webhook.allow_private = true;
    })
    .await;
    let register = |body: Value| {
        let server = &server;
        async move { api(server, "POST", "/api/events/talk/register", body).await }
    };
    let ana = json!({"name": "Ana", "email": "ana@example.com", "timezone": "Europe/Lisbon",
        "fields": {"company": "Acme"}, "showing": SHOWING});
    let (status, reg) = register(ana.clone()).await;
    assert_eq!(status, 201, "{reg}");
    let kinds: Vec<(&str, &str)> = reg["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["label"].as_str().unwrap(), r["at"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("1h", "2026-12-10T18:00:00Z"),
            ("5m", "2026-12-10T18:55:00Z")
        ]
    );
    let mut again = ana.clone();
    again["viewer"] = reg["viewer"].clone();
    let (status, same) = register(again).await;
    assert_eq!(
        (status, &same["new"], &same["registration"]),
        (200, &json!(false), &reg["registration"])
    );

    // Bad registrations change nothing.
    for (body, code) in [
        (json!({"name": "Bo", "email": "bo@example.com"}), 400),
        (
            json!({"name": "Bo", "email": "not an email", "fields": {"company": "X"}}),
            400,
        ),
        (
            json!({"name": "", "email": "bo@example.com", "fields": {"company": "X"}}),
            400,
        ),
        (
            json!({"name": "Bo", "email": "bo@example.com", "fields": {"company": "X", "age": "9"}}),
            400,
        ),
        (
            json!({"name": "Bo", "email": "bo@example.com", "fields": {"company": "X"}, "timezone": "Mars/Base"}),
            400,
        ),
        (
            json!({"name": "Bo", "email": "bo@example.com", "fields": {"company": "X"}, "showing": "talk@2026-12-11T19:00:00Z"}),
            404,
        ),
        (
            json!({"name": "Bo", "email": "bo@example.com", "fields": {"company": "X"}, "viewer": "forged"}),
            400,
        ),
        (json!({"name": "Bo", "surname": "B"}), 422),
    ] {
        let (status, v) = register(body.clone()).await;
        assert_eq!(status, code, "{body} → {v}");
    }
    let (status, _) = api(
        &server,
        "POST",
        "/api/events/nope/register",
        json!({"name": "Bo"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        server
            .running
            .app
            .store
            .registrations(SHOWING)
            .await
            .unwrap(),
        1
    );

    // The 1h reminder, once.
    clock.set("2026-12-10T18:00:01Z".parse().unwrap());
    deliveries(&rx, 1).await;
    let first: Value = serde_json::from_slice(&rx.requests.lock().unwrap()[0].body).unwrap();
    let text = first.to_string();
    assert!(
        text.contains("starts in 1h") && text.contains("19:00 (WET)"),
        "{text}"
    );
    assert!(
        text.contains("/events/talk?showing=talk%402026-12-10T19%3A00%3A00Z"),
        "{text}"
    );

    // A late registrant, inside the last window: one immediate "starting soon".
    clock.set("2026-12-10T18:57:00Z".parse().unwrap());
    let (status, late) =
        register(json!({"name": "Cy", "email": "cy@example.com", "fields": {"company": "C"}}))
            .await;
    assert_eq!(status, 201, "{late}");
    assert_eq!(late["reminders"][0]["kind"], "starting_soon");
    // Ana's 5m reminder (due 18:55) and Cy's immediate one: three in all, no repeats.
    deliveries(&rx, 3).await;
    let bodies: Vec<String> = rx
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies[1..]
            .iter()
            .any(|b| b.contains("cy@example.com") && b.contains("starts in 3m")),
        "{bodies:?}"
    );
    assert!(
        bodies[1..]
            .iter()
            .any(|b| b.contains("ana@example.com") && b.contains("starts in 5m")),
        "{bodies:?}"
    );
    let store = server.running.app.store.clone();
    wait_for(|| {
        let store = store.clone();
        async move { (store.pending_timers().await.unwrap() == 0).then_some(()) }
    })
    .await;

    // While it is live: "live now".
    clock.set("2026-12-10T19:01:00Z".parse().unwrap());
    let (_, live) =
        register(json!({"name": "Di", "email": "di@example.com", "fields": {"company": "D"}}))
            .await;
    assert_eq!(live["reminders"][0]["kind"], "live_now");
    deliveries(&rx, 4).await;
    // After the end there is nothing to register for.
    clock.set("2026-12-10T19:10:01Z".parse().unwrap());
    let (status, over) = register(json!({"name": "Ed", "email": "ed@example.com", "fields": {"company": "E"}, "showing": SHOWING})).await;
    assert_eq!(status, 400, "{over}");
    server.stop().await;
}

/// A replay's `hello` carries up to 5,000 messages, far more than a socket takes at
/// once: it arrives whole.
#[tokio::test]
async fn a_replay_hello_of_thousands_of_messages_arrives_whole() {
    let clock = at("2026-12-10T19:30:00Z");
    let server = talk_server(clock.clone(), |_| {}).await;
    let text = "y".repeat(400);
    let rows = (1..=3000)
        .map(|seq| volley_store::ShowingRow {
            showing_id: SHOWING.into(),
            seq,
            kind: "chat".into(),
            viewer_id: Some("vsomeone".into()),
            data: json!({"name": "Ana", "text": format!("{seq} {text}"), "pos": seq,
                "moderator": false, "replay": false})
            .to_string(),
            at: 1_796_000_000_000 + seq,
        })
        .collect();
    server.running.app.store.append_showing(rows).await.unwrap();
    let mut r = Viewer::join(&server, &format!("showing={SHOWING}"), None).await;
    let chat = r.hello["chat"].as_array().unwrap();
    assert_eq!(chat.len(), 3000);
    assert_eq!(chat[2999]["text"], format!("3000 {text}"));
    // The connection goes on after it.
    r.send(json!({"t": "ping", "c": 1})).await;
    assert_eq!(r.until("pong", |_| true).await["c"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_replay_brings_back_the_chat_at_its_offsets_and_labels_itself() {
    let clock = at("2026-12-10T19:00:15Z");
    let server = talk_server(clock.clone(), |_| {}).await;
    let mut a = Viewer::join(&server, "", None).await;
    a.accepted(json!({"t": "name", "name": "Ana"})).await;
    a.accepted(json!({"t": "chat", "text": "at fifteen"})).await;
    clock.advance(Duration::from_secs(30));
    a.accepted(json!({"t": "chat", "text": "at forty-five"}))
        .await;
    clock.set("2026-12-10T19:30:00Z".parse().unwrap()); // over; replay for a day
    // A viewer who watched live and stays after the end is replaying from then on.
    a.accepted(json!({"t": "chat", "text": "stayed", "pos": 50_000}))
        .await;
    let m = a.until("chat", |c| c["text"] == "stayed").await;
    assert_eq!((&m["pos"], &m["replay"]), (&json!(50_000), &json!(true)));
    drop(a);

    clock.set("2026-12-10T19:30:00Z".parse().unwrap()); // over; replay for a day
    let mut r = Viewer::join(&server, "", None).await;
    assert_eq!(
        r.hello["showing"]["id"], SHOWING,
        "the latest replay is offered"
    );
    let chat: Vec<(&str, i64)> = r.hello["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["text"].as_str().unwrap(), c["pos"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        chat,
        [
            ("at fifteen", 15_000),
            ("at forty-five", 45_000),
            ("stayed", 50_000)
        ]
    );
    assert_eq!(
        r.hello["polls"][0]["id"], "fav",
        "replays show poll results"
    );
    // Replay viewers chat at their own position (clamped to the media).
    r.accepted(json!({"t": "name", "name": "Ray"})).await;
    r.accepted(json!({"t": "chat", "text": "watching later", "pos": 20_000}))
        .await;
    let m = r.until("chat", |_| true).await;
    assert_eq!((&m["pos"], &m["replay"]), (&json!(20_000), &json!(true)));
    r.accepted(json!({"t": "vote", "poll": "fav", "options": [0], "pos": 35_000}))
        .await;
    // Questions in a replay: only inside a Q&A window at the viewer's own position.
    r.refused(
        json!({"t": "ask", "text": "before the window?", "pos": 10_000}),
        "closed",
    )
    .await;
    r.accepted(json!({"t": "ask", "text": "inside the window?", "pos": 30_000}))
        .await;

    // The page: the label in the markup; unknown events and showings are refused.
    let page = http()
        .get(server.http("/events/talk"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Premiere · pre-recorded") && html.contains("id=\"label\""),
        "{html}"
    );
    let page = http()
        .get(server.http("/events/talk?showing=%3Cb%3E"))
        .send()
        .await
        .unwrap();
    assert!(
        !page.text().await.unwrap().contains("<b>"),
        "query text is escaped"
    );
    assert_eq!(
        http()
            .get(server.http("/events/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    for (path, status) in [
        ("/events/nope/ws", 404),
        ("/events/talk/ws?showing=talk@2026-12-11T19:00:00Z", 404),
        ("/events/talk/ws?showing=other@2026-12-10T19:00:00Z", 400),
    ] {
        let url = format!("ws://{}{path}", server.running.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), status, "{path}")
            }
            other => panic!("{path}: {:?}", other.map(|_| ())),
        }
    }
    // After the replay window nothing is offered.
    clock.set("2026-12-11T19:20:00Z".parse().unwrap());
    let url = format!("ws://{}/events/talk/ws", server.running.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn events_are_published_through_the_api_with_checked_flows_and_media() {
    let clock = at("2026-12-10T18:00:00Z");
    let server = talk_server(clock, |_| {}).await;
    let publish = |body: String, key: Option<&'static str>| {
        let server = &server;
        async move {
            let mut req = http().post(server.http("/api/events")).body(body);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let api_talk = TALK.replace("event: talk", "event: api-talk");
    assert_eq!(publish(api_talk.clone(), None).await.0, 401);
    let (status, v) = publish(api_talk.clone(), Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, &v["id"], &v["version"], &v["created"]),
        (201, &json!("api-talk"), &json!(1), &json!(true))
    );
    let (status, v) = publish(api_talk, Some(ADMIN_KEY)).await;
    assert_eq!((status, &v["created"]), (200, &json!(false)));
    let (status, v) = api(&server, "GET", "/api/events/api-talk", Value::Null).await;
    assert_eq!((status, &v["title"]), (200, &json!("The talk")));

    // Flows it names must be published; media files must exist; errors as `volley check`.
    let quiz = TALK.replace("event: talk", "event: quiz-talk").replace(
        "  - { at: 10s, say: \"Hello **everyone**\" }",
        "  - { at: 10s, flow: no-such-flow }",
    );
    let (status, v) = publish(quiz, Some(ADMIN_KEY)).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(
        v["details"]["diagnostics"][0]["code"], "unknown-flow",
        "{v}"
    );
    assert!(
        v["details"]["rendered"]
            .as_str()
            .unwrap()
            .contains("no-such-flow"),
        "{v}"
    );
    let file = TALK
        .replace("event: talk", "event: file-talk")
        .replace("url: \"https://example.com/talk.mp4\"", "file: missing.mp4");
    let (status, v) = publish(file, Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, &v["details"]["diagnostics"][0]["code"]),
        (422, &json!("missing-media")),
        "{v}"
    );
    let (status, v) = publish("volley: 1\nevent: [".into(), Some(ADMIN_KEY)).await;
    assert_eq!(status, 422, "{v}");
    let (_, list) = api(&server, "GET", "/api/events", Value::Null).await;
    let ids: Vec<&str> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["api-talk", "talk"], "refused files publish nothing");
    server.stop().await;
}
