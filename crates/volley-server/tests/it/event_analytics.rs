//! Event analytics on a generated showing, on virtual time: viewers join and leave at
//! known instants, watch known stretches, chat, vote and click, so every figure of
//! `GET /api/analytics/events/{id}` (JSON and CSV) and the console page is known
//! exactly; and the figures survive a restart without counting anything twice.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use volley_server::ManualClock;

use crate::support::*;

const SHOWING: &str = "talk@2026-12-10T19:00:00Z";

/// A ten-minute talk at 19:00 UTC: a poll open from 30 s to 60 s, an offer at 40 s.
const TALK: &str = r#"volley: 1
event: talk
title: The talk
timezone: UTC
media: { url: "https://example.com/talk.mp4", duration: 10m }
schedule: { once: 2026-12-10T19:00 }
replay: { window: 1d }
registration: { fields: [name, email] }
timeline:
  - at: 30s
    poll: { id: fav, question: Which one?, options: [A, B, C], close_at: 60s, results_at: 45s }
  - at: 40s
    offer: { id: buy, text: Buy it, url: "https://example.com/buy", until: 2m }
"#;

async fn start(dir: Arc<tempfile::TempDir>, clock: Arc<ManualClock>) -> TestServer {
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("talk.yaml"), TALK).unwrap();
    let mut cfg = config(dir.path());
    cfg.flows = Some(flows);
    TestServer::start_on(dir, cfg, clock).await
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Viewer {
    ws: Ws,
    id: String,
    token: String,
    n: u64,
}

impl Viewer {
    async fn join(server: &TestServer, token: Option<&str>) -> Viewer {
        let query = token.map(|t| format!("viewer={t}")).unwrap_or_default();
        Viewer::join_with(server, &query).await
    }

    async fn join_with(server: &TestServer, query: &str) -> Viewer {
        let url = format!("ws://{}/events/talk/ws?{query}", server.running.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        let mut v = Viewer {
            ws,
            id: String::new(),
            token: String::new(),
            n: 0,
        };
        let hello = v.frame().await;
        assert_eq!(hello["t"], "hello", "{hello}");
        v.id = hello["viewer_id"].as_str().unwrap().into();
        v.token = hello["viewer"].as_str().unwrap().into();
        v
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

    /// Sends `v` and waits for its `ok` (messages are answered in order).
    async fn ok(&mut self, mut v: Value) {
        self.n += 1;
        let r = format!("r{}", self.n);
        v["ref"] = r.clone().into();
        self.send(v.clone()).await;
        loop {
            let f = self.frame().await;
            if f["ref"] == r.as_str() {
                assert_eq!(f["t"], "ok", "{v} → {f}");
                return;
            }
        }
    }

    /// Plays `from..=to` (ms), reporting progress every 5 s as the page does.
    async fn watch(&mut self, from: i64, to: i64) {
        let mut pos = from;
        while pos <= to {
            self.send(json!({"t": "progress", "pos": pos, "playing": true}))
                .await;
            pos += 5_000;
        }
        // A ping after them: its pong means every progress message has been read.
        self.n += 1;
        let c = self.n;
        self.send(json!({"t": "ping", "c": c})).await;
        loop {
            let f = self.frame().await;
            if f["t"] == "pong" && f["c"] == c {
                return;
            }
        }
    }
}

/// Closes the viewer's socket and waits until the room has logged its leave (one more
/// `leave` row of the viewer: a viewer may have had connections before).
async fn leave(server: &TestServer, v: Viewer) {
    let store = server.running.app.store.clone();
    let leaves = || {
        let store = store.clone();
        let id = v.id.clone();
        async move {
            let log = store.showing_log(SHOWING, 0, 10_000).await.unwrap();
            log.iter()
                .filter(|r| r.kind == "leave" && r.viewer_id.as_deref() == Some(&id))
                .count()
        }
    };
    let before = leaves().await;
    let mut written = store.log_written();
    let mut ws = v.ws;
    let _ = ws.close(None).await;
    drop(ws);
    loop {
        written.borrow_and_update();
        if leaves().await > before {
            return;
        }
        tokio::time::timeout(Duration::from_secs(10), written.changed())
            .await
            .expect("the leave is logged within 10 s")
            .unwrap();
    }
}

async fn register(server: &TestServer, name: &str) -> String {
    let (status, reg) = api(
        server,
        "POST",
        "/api/events/talk/register",
        json!({"name": name, "email": format!("{}@example.com", name.to_lowercase()), "showing": SHOWING}),
    )
    .await;
    assert_eq!(status, 201, "{reg}");
    reg["viewer"].as_str().unwrap().to_string()
}

async fn report(server: &TestServer, query: &str) -> (u16, Value) {
    server
        .running
        .app
        .event_stats
        .settled(&server.running.app)
        .await;
    api(
        server,
        "GET",
        &format!("/api/analytics/events/talk{query}"),
        Value::Null,
    )
    .await
}

/// Plays the generated showing: three registrations, three attendees (two of them
/// registered), known watching, chat, votes and clicks; ends at 19:05.
async fn play(server: &TestServer, clock: &ManualClock) {
    let t1 = register(server, "Ana").await;
    let t2 = register(server, "Bo").await;
    let _t3 = register(server, "Di").await; // registers, never comes
    // 19:00:00: three viewers join; A chats (position 0: minute 0).
    let mut a = Viewer::join(server, Some(&t1)).await;
    let mut b = Viewer::join(server, Some(&t2)).await;
    let mut c = Viewer::join(server, None).await;
    c.ok(json!({"t": "name", "name": "Cy"})).await;
    a.ok(json!({"t": "chat", "text": "hello"})).await;
    // 30 s: the poll opens; A and B vote, C does not (but watches it).
    clock.advance(Duration::from_secs(30));
    a.ok(json!({"t": "vote", "poll": "fav", "options": [0]}))
        .await;
    b.ok(json!({"t": "vote", "poll": "fav", "options": [1]}))
        .await;
    // 40 s: the offer; A and B see it, A clicks; C chats.
    clock.advance(Duration::from_secs(10));
    a.ok(json!({"t": "impression", "offer": "buy"})).await;
    a.ok(json!({"t": "click", "offer": "buy"})).await;
    b.ok(json!({"t": "impression", "offer": "buy"})).await;
    c.ok(json!({"t": "chat", "text": "nice"})).await;
    // 70 s: B chats (minute 1).
    clock.advance(Duration::from_secs(30));
    b.ok(json!({"t": "chat", "text": "more"})).await;
    // What each played: A 0–115 s, B 0–55 s, C 30–90 s.
    a.watch(0, 115_000).await;
    b.watch(0, 55_000).await;
    c.watch(30_000, 90_000).await;
    // Leaves: C at 90 s, B at 120 s, A at 180 s.
    clock.advance(Duration::from_secs(20));
    leave(server, c).await;
    clock.advance(Duration::from_secs(30));
    leave(server, b).await;
    clock.advance(Duration::from_secs(60));
    leave(server, a).await;
    // Read at 19:05.
    clock.advance(Duration::from_secs(120));
}

fn expected_summary(r: &Value) {
    let pick = |k: &str| r[k].clone();
    assert_eq!(r["showing_id"], SHOWING, "{r}");
    assert_eq!(r["showings"], json!([SHOWING]));
    assert_eq!(r["length_s"], 600.0);
    assert_eq!(
        [
            pick("registrations"),
            pick("attendees"),
            pick("registered_attendees"),
            pick("attendance_rate_percent"),
            pick("live_attendees"),
            pick("replay_attendees"),
            pick("peak_concurrency"),
            pick("average_concurrency"),
        ],
        [
            json!(3),
            json!(3),
            json!(2),
            json!(66.7),
            json!(3),
            json!(0),
            json!(3),
            json!(1.3)
        ],
        "{r}"
    );
    // Concurrency per minute: 3 all minute 0; 3 then 2 from 90 s; 1; then none.
    let conc: Vec<(i64, Value)> = r["concurrency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["peak"].as_i64().unwrap(), c["average"].clone()))
        .collect();
    assert_eq!(conc.len(), 10);
    assert_eq!(
        conc[..6],
        [
            (3, json!(3.0)),
            (3, json!(2.5)),
            (1, json!(1.0)),
            (0, json!(0.0)),
            (0, json!(0.0)),
            (0, Value::Null)
        ]
    );
    // Retention: minute 0 all three, minute 1 A and C.
    let ret: Vec<(u64, Value)> = r["retention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["viewers"].as_u64().unwrap(), m["percent"].clone()))
        .collect();
    assert_eq!(ret.len(), 10);
    assert_eq!(
        ret[..3],
        [(3, json!(100.0)), (2, json!(66.7)), (0, json!(0.0))]
    );
    let w = &r["watch_time"];
    assert_eq!(
        (&w["total_s"], &w["mean_s"], &w["completed"]),
        (&json!(230.0), &json!(76.67), &json!(0)),
        "{w}"
    );
    assert_eq!(w["completion_rate_percent"], 0.0);
    let buckets: Vec<u64> = w["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["viewers"].as_u64().unwrap())
        .collect();
    // B 55 s (9 %) in 0–10 %; A 115 s (19 %) and C 60 s (10 %) in 10–20 %.
    assert_eq!(buckets, [1, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    let chat = &r["chat"];
    assert_eq!(
        (
            &chat["messages"],
            &chat["live"],
            &chat["replay"],
            &chat["lobby"]
        ),
        (&json!(3), &json!(3), &json!(0), &json!(0))
    );
    assert_eq!(chat["per_minute"][0]["messages"], 2);
    assert_eq!(chat["per_minute"][1]["messages"], 1);
    let poll = &r["polls"][0];
    assert_eq!(
        (
            &poll["id"],
            &poll["voters"],
            &poll["present"],
            &poll["participation_percent"]
        ),
        (&json!("fav"), &json!(2), &json!(3), &json!(66.7)),
        "{poll}"
    );
    let votes: Vec<(Value, Value)> = poll["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["option"].clone(), o["votes"].clone()))
        .collect();
    assert_eq!(
        votes,
        [
            (json!("A"), json!(1)),
            (json!("B"), json!(1)),
            (json!("C"), json!(0))
        ]
    );
    let offer = &r["offers"][0];
    assert_eq!(
        [
            &offer["id"],
            &offer["impressions"],
            &offer["viewers"],
            &offer["clicks"],
            &offer["clickers"],
            &offer["click_through_percent"]
        ],
        [
            &json!("buy"),
            &json!(2),
            &json!(2),
            &json!(1),
            &json!(1),
            &json!(50.0)
        ],
        "{offer}"
    );
}

fn at(instant: &str) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(instant.parse().unwrap()))
}

#[tokio::test]
async fn event_analytics_of_a_generated_showing_are_exact() {
    let clock = at("2026-12-10T19:00:00Z");
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = start(dir, clock.clone()).await;
    play(&server, &clock).await;

    let (status, r) = report(&server, "").await;
    assert_eq!(status, 200, "{r}");
    expected_summary(&r);
    let (status, same) = report(&server, &format!("?showing={SHOWING}")).await;
    assert_eq!((status, &same), (200, &r));

    // The CSV: one row per figure.
    let resp = http()
        .get(server.http("/api/analytics/events/talk?format=csv"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    for line in [
        "figure,item,value",
        "registrations,,3",
        "attendees,,3",
        "attendance_rate_percent,,66.7",
        "peak_concurrency,,3",
        "average_concurrency,,1.3",
        "concurrency_average,1,2.5",
        "retention_viewers,1,2",
        "retention_percent,1,66.7",
        "chat_per_minute,0,2",
        "watch_time_viewers,10-20%,2",
        "poll_votes,fav: A,1",
        "poll_participation_percent,fav,66.7",
        "offer_click_through_percent,buy,50",
    ] {
        assert!(csv.lines().any(|l| l == line), "{line:?} in\n{csv}");
    }

    // The seller reports a sale after the offer: by the registrant's email, then the
    // same order again (counted once).
    let sale = json!({"offer": "buy", "email": "ana@example.com", "value": 49.5, "order": "o-1"});
    let (status, c) = api(
        &server,
        "POST",
        "/api/events/talk/conversions",
        sale.clone(),
    )
    .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["showing"], SHOWING);
    let (status, again) = api(&server, "POST", "/api/events/talk/conversions", sale).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], c["id"]);
    for (body, status, code) in [
        (
            json!({"offer": "nope", "email": "ana@example.com"}),
            422,
            "unknown-offer",
        ),
        (json!({"offer": "buy"}), 422, "unknown-viewer"),
        (
            json!({"offer": "buy", "email": "zed@example.com"}),
            422,
            "unknown-viewer",
        ),
        (
            json!({"offer": "buy", "viewer": "v1", "showing": "other@2026-12-10T19:00:00Z"}),
            422,
            "unknown-viewer",
        ),
        (
            json!({"offer": "buy", "email": "ana@example.com", "value": -1}),
            422,
            "invalid-value",
        ),
        (
            json!({"offer": "buy", "email": "ana@example.com", "order": ""}),
            422,
            "invalid-order",
        ),
        (json!({"offer": "buy", "colour": "red"}), 400, "bad-json"),
    ] {
        let (s, e) = api(
            &server,
            "POST",
            "/api/events/talk/conversions",
            body.clone(),
        )
        .await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
    let (s, _) = api(
        &server,
        "POST",
        "/api/events/nope/conversions",
        json!({"offer": "buy"}),
    )
    .await;
    assert_eq!(s, 404);
    let (_, r) = report(&server, "").await;
    let offer = &r["offers"][0];
    assert_eq!(offer["conversions"], 1, "{offer}");
    assert_eq!(offer["converters"], 1);
    assert_eq!(offer["conversion_value"], 49.5);
    assert_eq!(offer["conversion_percent"], 100.0);

    // Bad input: clear 4xx JSON errors.
    for (query, status, code) in [
        ("?format=xml", 400, "bad-format"),
        ("?showing=other@2026-12-10T19:00:00Z", 400, "bad-showing"),
    ] {
        let (s, body) = report(&server, query).await;
        assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{body}");
    }
    let (s, body) = api(&server, "GET", "/api/analytics/events/nope", Value::Null).await;
    assert_eq!((s, body["code"].as_str()), (404, Some("unknown-event")));
    let r = http()
        .get(server.http("/api/analytics/events/talk"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "admins only");

    // The console page: charts with their tables, for admins.
    let admin = user(&server, "boss@example.com", "admin").await;
    let page = http()
        .get(server.http("/console/analytics/events/talk"))
        .header("cookie", format!("volley_session={}", admin.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in [
        "<svg",
        "role=\"img\"",
        "<title>Concurrent viewers over the live window</title>",
        "<title>Retention: attendees who watched each minute</title>",
        "<title>Chat messages per minute</title>",
        "<title>Which one?</title>",
        "<table class=\"figures\">",
        "<td>Buy it</td><td>2</td><td>2</td><td>1</td><td>1</td><td>50 %</td>",
        "href=\"/api/analytics/events/talk?format=csv&amp;showing=",
    ] {
        assert!(html.contains(needle), "{needle:?} in the page");
    }
    let agent = user(&server, "agent@example.com", "agent").await;
    let page = http()
        .get(server.http("/console/analytics/events/talk"))
        .header("cookie", format!("volley_session={}", agent.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403, "agents do not see analytics");

    // The hand-offs dashboard renders too (no hand-offs: empty charts).
    let page =
        http()
            .get(server.http(
                "/console/analytics/handoffs?from=2026-12-01T00:00:00Z&to=2026-12-11T00:00:00Z",
            ))
            .header("cookie", format!("volley_session={}", admin.token))
            .send()
            .await
            .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Hand-offs per queue</title>") && html.contains("No data"));
    assert!(html.contains(
        "/api/analytics/handoffs?from=2026-12-01T00%3A00%3A00Z&amp;to=2026-12-11T00%3A00%3A00Z&amp;format=csv"
    ));
    let page = http()
        .get(server.http("/console/analytics/handoffs?from=yesterday"))
        .header("cookie", format!("volley_session={}", admin.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400, "a bad period is the caller's mistake");
    server.stop().await;
}

#[tokio::test]
async fn event_analytics_survive_a_restart_without_counting_twice() {
    let clock = at("2026-12-10T19:00:00Z");
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = start(dir, clock.clone()).await;
    play(&server, &clock).await;
    let (_, before) = report(&server, "").await;
    expected_summary(&before);

    let dir = server.stop().await;
    let server = start(dir, clock.clone()).await;
    let (status, after) = report(&server, "").await;
    assert_eq!(status, 200);
    assert_eq!(after, before, "nothing counted twice");

    // Counting goes on from where it stopped: a fourth viewer, at 19:05.
    let mut d = Viewer::join(&server, None).await;
    d.watch(300_000, 310_000).await;
    leave(&server, d).await;
    let (_, r) = report(&server, "").await;
    assert_eq!(
        (&r["attendees"], &r["registrations"], &r["peak_concurrency"]),
        (&json!(4), &json!(3), &json!(3)),
        "{r}"
    );
    assert_eq!(r["retention"][5]["viewers"], 1);
    assert_eq!(r["watch_time"]["total_s"], 240.0);

    // 19:20, after the end: a fifth viewer replays the whole talk over five
    // connections of 115 s each (575 s of 600: a completion, summed over connections).
    clock.advance(Duration::from_secs(15 * 60));
    let mut token = String::new();
    for k in 0..5 {
        let query = if token.is_empty() {
            format!("showing={SHOWING}")
        } else {
            format!("showing={SHOWING}&viewer={token}")
        };
        let mut e = Viewer::join_with(&server, &query).await;
        token = e.token.clone();
        e.watch(k * 120_000, k * 120_000 + 115_000).await;
        leave(&server, e).await;
    }
    let (_, r) = report(&server, "").await;
    let pick = |k: &str| r[k].clone();
    assert_eq!(
        [
            pick("attendees"),
            pick("live_attendees"),
            pick("replay_attendees"),
            pick("peak_concurrency")
        ],
        [json!(5), json!(4), json!(1), json!(3)],
        "{r}"
    );
    let w = &r["watch_time"];
    assert_eq!(
        (
            &w["total_s"],
            &w["completed"],
            &w["completion_rate_percent"]
        ),
        (&json!(815.0), &json!(1), &json!(20.0)),
        "{w}"
    );
    assert_eq!(w["buckets"][9]["viewers"], 1);
    let retention: Vec<u64> = r["retention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["viewers"].as_u64().unwrap())
        .collect();
    // A, B, C and the replay; A, C and the replay; then the replay (and D at minute 5).
    assert_eq!(retention, [4, 3, 1, 1, 1, 2, 1, 1, 1, 1]);
    // The live window (now over) holds D's join at 19:05 (an instant: no time), and
    // not the replay, which came after it.
    let peaks: Vec<i64> = r["concurrency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["peak"].as_i64().unwrap())
        .collect();
    assert_eq!(peaks, [3, 3, 1, 0, 0, 1, 0, 0, 0, 0]);
    assert_eq!(r["concurrency"][9]["average"], 0.0);
    // (3 × 60 + 2.5 × 60 + 1 × 60) / 600 s.
    assert_eq!(r["average_concurrency"], 0.65);
    server.stop().await;
}
