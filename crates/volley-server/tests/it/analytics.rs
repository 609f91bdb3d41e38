//! The hand-off report on generated conversations with known timestamps: exact first
//! response, wait and resolution times in calendar time and business hours, rates and
//! CSAT, overall, per queue and per agent (docs/metrics.md); flow and contact reports
//! from the aggregator on real conversations with known answers and times.

use std::sync::Arc;

use serde_json::{Value, json};
use volley_server::QueueConfig;
use volley_store::{Append, HandoffRow, NewContact, NewConversation};

use crate::support::*;

fn ms(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn handoff(conv: &str, queue: &str, agent: Option<&str>, requested: &str) -> HandoffRow {
    HandoffRow {
        conversation_id: conv.into(),
        contact_id: "ct-1".into(),
        flow_id: "quick".into(),
        queue: queue.into(),
        priority: 1,
        reason: None,
        status: "queued".into(),
        agent_id: agent.map(String::from),
        requested_at: ms(requested),
        assigned_at: None,
        first_reply_at: None,
        last_message_at: ms(requested),
        preview: String::new(),
        snoozed_until: None,
        resolved_at: None,
        tags: String::new(),
        csat: None,
        updated_at: ms(requested),
    }
}

#[tokio::test]
async fn the_handoff_report_is_exact() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    let berlin_office =
        volley_flow::Calendar::new("Europe/Berlin", [("mon-fri", "09:00-17:00")], []).unwrap();
    cfg.handoff.queues.insert(
        "support".into(),
        QueueConfig {
            title: None,
            hours: Some(berlin_office),
            csat: None,
        },
    );
    let server = TestServer::start_with(dir, cfg).await;
    let store = server.running.app.store.clone();
    store
        .create_contact(NewContact {
            id: "ct-1".into(),
            token_hash: None,
            external_id: None,
            profile: "{}".into(),
            at: 1,
        })
        .await
        .unwrap();

    // Ten conversations in the week, four handed off.
    let s = 1000;
    let mut h1 = handoff("cv-1", "support", Some("u-1"), "2026-12-07T09:00:00Z"); // Mon 10:00 Berlin
    (h1.assigned_at, h1.first_reply_at, h1.resolved_at, h1.csat) = (
        Some(h1.requested_at + 60 * s),
        Some(h1.requested_at + 120 * s),
        Some(h1.requested_at + 3600 * s),
        Some(5),
    );
    let mut h2 = handoff("cv-2", "support", Some("u-2"), "2026-12-04T15:30:00Z"); // Fri 16:30 Berlin
    h2.assigned_at = Some(ms("2026-12-07T08:30:00Z")); // Mon 09:30 Berlin
    h2.first_reply_at = h2.assigned_at;
    let mut h3 = handoff("cv-3", "sales", Some("u-1"), "2026-12-05T10:00:00Z"); // sales: no hours
    (h3.assigned_at, h3.first_reply_at, h3.resolved_at, h3.csat) = (
        Some(h3.requested_at),
        Some(h3.requested_at + 30 * s),
        Some(h3.requested_at + 600 * s),
        Some(3),
    );
    let h4 = handoff("cv-4", "support", None, "2026-12-06T12:00:00Z"); // still waiting
    let mut handoffs = vec![Some(h1), Some(h2), Some(h3), Some(h4)];
    handoffs.resize(10, None);
    for (i, h) in handoffs.into_iter().enumerate() {
        let at = h
            .as_ref()
            .map_or(ms("2026-12-03T12:00:00Z") + i as i64, |h| h.requested_at);
        store
            .append(Append {
                conversation_id: format!("cv-{}", i + 1),
                after_seq: 0,
                events: Vec::new(),
                state: "{}".into(),
                status: "active".into(),
                at,
                create: Some(NewConversation {
                    flow_id: "quick".into(),
                    flow_version: 1,
                    contact_id: "ct-1".into(),
                    origin: None,
                }),
                timers: None,
                fired_timer: None,
                schedule: Vec::new(),
                handoff: h,
            })
            .await
            .unwrap();
    }
    let (status, r) = api(
        &server,
        "GET",
        "/api/analytics/handoffs?from=2026-12-01T00:00:00Z&to=2026-12-08T00:00:00Z",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            &r["conversations_started"],
            &r["handoff_rate_percent"],
            &r["containment_rate_percent"]
        ),
        (&json!(10), &json!(40.0), &json!(60.0))
    );
    let o = &r["overall"];
    assert_eq!(
        (
            &o["handoffs"],
            &o["assigned"],
            &o["replied"],
            &o["resolved"]
        ),
        (&json!(4), &json!(3), &json!(3), &json!(2))
    );
    // First responses: 120 s, 65 h (Fri 16:30 → Mon 09:30), 30 s.
    assert_eq!(
        o["first_response"],
        json!({"count": 3, "mean_s": 78050.0, "p50_s": 120.0, "p90_s": 234000.0, "max_s": 234000.0})
    );
    // In business hours the weekend does not count: 30 min Friday + 30 min Monday.
    assert_eq!(
        o["first_response_business"],
        json!({"count": 3, "mean_s": 1250.0, "p50_s": 120.0, "p90_s": 3600.0, "max_s": 3600.0})
    );
    assert_eq!(o["wait"]["p50_s"], json!(60.0));
    assert_eq!(
        o["resolution"],
        json!({"count": 2, "mean_s": 2100.0, "p50_s": 600.0, "p90_s": 3600.0, "max_s": 3600.0})
    );
    assert_eq!(
        o["csat"],
        json!({"responses": 2, "satisfied": 1, "satisfied_percent": 50.0, "response_rate_percent": 100.0})
    );
    let queues: Vec<(&str, i64)> = r["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["queue"].as_str().unwrap(),
                q["handoffs"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(queues, [("sales", 1), ("support", 3)]);
    let agents: Vec<(&str, i64, &Value)> = r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap(),
                a["handoffs"].as_i64().unwrap(),
                &a["csat"]["satisfied_percent"],
            )
        })
        .collect();
    assert_eq!(agents, [("u-1", 2, &json!(50.0)), ("u-2", 1, &Value::Null)]);

    // A period without them; bad periods are refused; CSV has the same numbers.
    let (_, empty) = api(
        &server,
        "GET",
        "/api/analytics/handoffs?from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z",
        Value::Null,
    )
    .await;
    assert_eq!(
        (
            &empty["overall"]["handoffs"],
            &empty["handoff_rate_percent"]
        ),
        (&json!(0), &Value::Null)
    );
    for bad in [
        "from=2026-12-08T00:00:00Z&to=2026-12-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from=monday&to=2026-12-01T00:00:00Z",
    ] {
        let (status, _) = api(
            &server,
            "GET",
            &format!("/api/analytics/handoffs?{bad}"),
            Value::Null,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    let csv = http()
        .get(server.http(
            "/api/analytics/handoffs?from=2026-12-01T00:00:00Z&to=2026-12-08T00:00:00Z&format=csv",
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first = csv.lines().nth(1).unwrap();
    assert_eq!(
        first,
        "overall,,4,3,3,2,120,234000,78050,120,0,,,60,600,600,2,50,100"
    );
    server.stop().await;
}

/// One participant of the survey: how far they go, on virtual time.
struct Run {
    plan: Option<&'static str>,
    name: Option<&'static str>,
}

async fn report(server: &TestServer, query: &str) -> Value {
    volley_server::stats::caught_up(&server.running.app)
        .await
        .unwrap();
    let (status, r) = api(
        server,
        "GET",
        &format!("/api/analytics/{query}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    r
}

fn step<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {r}"))
}

#[tokio::test]
async fn the_flow_report_counts_generated_conversations_exactly() {
    let clock = Arc::new(volley_server::ManualClock::new(
        "2026-12-01T10:00:00Z".parse().unwrap(),
    ));
    let server = TestServer::on_clock(&clock).await;
    let runs = [
        Run {
            plan: Some("Basic"),
            name: Some("Ann"),
        },
        Run {
            plan: Some("Pro"),
            name: Some("Bob"),
        },
        Run {
            plan: Some("Pro"),
            name: None,
        },
        Run {
            plan: None,
            name: None,
        },
        Run {
            plan: Some("Basic"),
            name: Some("Cy"),
        },
    ];
    // Which arm each participant saw, and whether they completed.
    let mut arms = Vec::new();
    let mut tokens = Vec::new();
    for run in &runs {
        let mut c = Client::connect(&server, hello("survey")).await;
        tokens.push(c.welcome["token"].as_str().unwrap().to_string());
        let ask = c.next_question().await;
        assert_eq!(ask["step"], "plan");
        let short = c
            .events
            .iter()
            .any(|e| e["event"]["text"] == "Short intro.");
        arms.push((if short { "short" } else { "long" }, run.name.is_some()));
        if let Some(plan) = run.plan {
            clock.advance(std::time::Duration::from_secs(10));
            let id = c.fresh_id();
            let ack = c
                .input(json!({"type": "answer", "id": id, "step": "plan", "values": [plan]}))
                .await;
            assert_eq!(ack["type"], "ack", "{ack}");
            assert_eq!(c.next_question().await["step"], "name");
        }
        if let Some(name) = run.name {
            clock.advance(std::time::Duration::from_secs(20));
            let id = c.fresh_id();
            c.input(json!({"type": "answer", "id": id, "step": "name", "text": name}))
                .await;
            assert_eq!(c.next_question().await["kind"], "end");
        }
    }

    let r = report(&server, "flows/survey").await;
    assert_eq!(r["from"], "2026-11-02");
    assert_eq!(r["to"], "2026-12-01");
    assert_eq!(r["started"], 5);
    assert_eq!(r["completed"], 3);
    assert_eq!(r["completion_percent"], 60.0);
    assert_eq!(r["outcomes"], json!([{"outcome": "done", "count": 3}]));
    // The funnel: every conversation reached the question; 4 answered it, 1 stopped
    // there; 3 of the 4 at `name` answered.
    let plan = step(&r, "plan");
    assert_eq!(plan["reached"], 5);
    assert_eq!(plan["stopped_here"], 1);
    assert_eq!(plan["drop_off_percent"], 20.0);
    assert_eq!(plan["answers"], 4);
    assert_eq!(plan["time"]["count"], 4);
    assert_eq!(plan["time"]["mean_s"], 10.0);
    let name = step(&r, "name");
    assert_eq!(name["reached"], 4);
    assert_eq!(name["conversion_percent"], 80.0);
    assert_eq!(name["stopped_here"], 1);
    assert_eq!(name["time"]["mean_s"], 20.0);
    // p50 is the upper bound of 20 s's histogram bucket (≤ 19 % above).
    let p50 = name["time"]["p50_s"].as_f64().unwrap();
    assert!((20.0..23.8).contains(&p50), "{p50}");
    assert_eq!(step(&r, "signed")["reached"], 3);
    assert_eq!(step(&r, "bye")["stopped_here"], 0);
    let edge = |from: &str, to: &str| {
        r["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .map_or(0, |e| e["count"].as_i64().unwrap())
    };
    assert_eq!(edge("(start)", "intro"), 5);
    assert_eq!(edge("plan", "name"), 4);
    assert_eq!(edge("bye", "(end)"), 3);
    let shorts = arms.iter().filter(|a| a.0 == "short").count() as i64;
    assert_eq!(edge("short_intro", "plan"), shorts);
    assert_eq!(edge("long_intro", "plan"), 5 - shorts);
    // After a branch, conversion is against the branch point: the arms share it.
    assert_eq!(
        step(&r, "short_intro")["conversion_percent"],
        (shorts as f64 * 20.0 * 10.0).round() / 10.0
    );
    assert_eq!(plan["conversion_percent"], 100.0);
    // Answers by value (text answers are counted, not listed).
    let q = &r["questions"];
    assert_eq!(q[0]["step"], "plan");
    assert_eq!(q[0]["type"], "choice");
    assert_eq!(
        q[0]["values"],
        json!([{"value": "Basic", "count": 2, "percent": 50.0}, {"value": "Pro", "count": 2, "percent": 50.0}])
    );
    assert_eq!(q[1]["answers"], 3);
    assert_eq!(q[1]["values"], json!([]));
    assert_eq!(
        r["goals"],
        json!([{"goal": "signed-up", "reached": 3, "conversion_percent": 60.0, "value": 30.0}])
    );
    // The split: each arm's completions as observed.
    let split = &r["splits"][0];
    assert_eq!(split["step"], "intro");
    for arm in split["arms"].as_array().unwrap() {
        let name = arm["arm"].as_str().unwrap();
        let n = arms.iter().filter(|a| a.0 == name).count() as i64;
        let done = arms.iter().filter(|a| a.0 == name && a.1).count() as i64;
        assert_eq!(arm["conversations"], n, "{arm}");
        assert_eq!(arm["converted"], done, "{arm}");
    }
    assert_eq!(r["handoffs"], 0);
    assert_eq!(r["containment_percent"], 100.0);
    // Pacing is off: every answer followed by a question was answered at once.
    assert_eq!(r["bot_response"]["count"], 4);
    assert_eq!(r["bot_response"]["p99_s"], 0.0);

    // CSV tables carry the same numbers.
    let csv = http()
        .get(server.http("/api/analytics/flows/survey?format=csv&table=answers"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv,
        "step,var,type,value,count,percent\nplan,plan,choice,Basic,2,50\nplan,plan,choice,Pro,2,50\n"
    );
    // Bad input is refused without a server error.
    for (query, code) in [
        ("flows/survey?from=2026-13-01", "bad-date"),
        ("flows/survey?from=2026-12-02&to=2026-12-01", "bad-period"),
        ("flows/survey?from=2024-01-01&to=2026-12-01", "bad-period"),
        ("flows/survey?format=xml", "bad-format"),
        ("flows/survey?format=csv&table=nope", "bad-table"),
        ("flows/nope", "unknown-flow"),
        ("flows/survey?version=9", "unknown-flow"),
    ] {
        let (status, e) = api(
            &server,
            "GET",
            &format!("/api/analytics/{query}"),
            Value::Null,
        )
        .await;
        assert!(status == 400 || status == 404, "{query}: {status}");
        assert_eq!(e["code"], code, "{query}: {e}");
    }
    // The console pages draw the same numbers, each chart with its table.
    let admin = user(&server, "boss@example.com", "admin").await;
    let page = async |path: &str| console_page(&server, &admin.token, path).await;
    let (status, html) = page("/console/analytics/flows/survey").await;
    assert_eq!(status, 200);
    for needle in [
        "<title>Flow graph of survey: steps with conversations reached and stopped, transitions by count</title>",
        "plan · 5 reached · 1 stopped here",
        "<title>plan → name: 4</title>",
        "<title>Conversations reaching each step</title>",
        "<td>plan</td><td>5</td><td>100 %</td><td>1</td><td>20 %</td>",
        "<title>Answers to plan</title>",
        "<td>Basic</td><td>2</td><td>50 %</td>",
        "<td>signed-up</td><td>3</td><td>60 %</td><td>30</td>",
        "href=\"/api/analytics/flows/survey?format=csv&amp;table=steps&amp;from=2026-11-02&amp;to=2026-12-01\"",
    ] {
        assert!(html.contains(needle), "{needle:?} in the flow page");
    }
    let (status, html) = page("/console/analytics/flows/survey?from=nope").await;
    assert_eq!(status, 400, "{html}");
    let (status, _) = page("/console/analytics/flows/nope").await;
    assert_eq!(status, 404);
    let (status, html) = page("/console/analytics").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("href=\"/console/analytics/flows/survey\""),
        "{html}"
    );
    // Another period holds nothing.
    let r = report(&server, "flows/survey?from=2026-11-01&to=2026-11-30").await;
    assert_eq!(r["started"], 0);

    // Contacts: five new today.
    let c = report(&server, "contacts").await;
    assert_eq!(c["new"], 5);
    assert_eq!(c["returning"], 0);
    let dir = server.stop().await;
    // After a restart nothing is counted twice, and new activity still counts.
    let server = TestServer::start_on(dir.clone(), config(dir.path()), clock.clone()).await;
    let r = report(&server, "flows/survey").await;
    assert_eq!(r["started"], 5);
    assert_eq!(step(&r, "plan")["reached"], 5);
    clock.advance(std::time::Duration::from_secs(86_400));
    // The two who stopped come back: one answers the name, one the plan.
    for (token, answer) in [
        (&tokens[2], json!({"step": "name", "text": "Dee"})),
        (&tokens[3], json!({"step": "plan", "values": ["Pro"]})),
    ] {
        let mut h = hello("survey");
        h["token"] = token.clone().into();
        let mut c = Client::connect(&server, h).await;
        let mut frame = answer;
        frame["type"] = "answer".into();
        frame["id"] = c.fresh_id().into();
        let ack = c.input(frame).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let c = report(&server, "contacts?from=2026-12-01&to=2026-12-02").await;
    assert_eq!(c["new"], 5);
    assert_eq!(c["returning"], 2);
    assert_eq!(c["returning_percent"], 28.6);
    assert_eq!(
        c["days"],
        json!([{"day": "2026-12-01", "new": 5, "returning": 0}, {"day": "2026-12-02", "new": 0, "returning": 2}])
    );
    assert_eq!(c["cohorts"][0]["day"], "2026-12-01");
    assert_eq!(c["cohorts"][0]["contacts"], 5);
    assert_eq!(c["cohorts"][0]["d1"], 2);
    assert_eq!(c["cohorts"][0]["d1_percent"], 40.0);
    // Day 7 has not come yet: unknown, not zero.
    assert_eq!(c["cohorts"][0]["d7"], Value::Null);
    let admin = user(&server, "boss2@example.com", "admin").await;
    let (_, html) = console_page(
        &server,
        &admin.token,
        "/console/analytics/contacts?from=2026-12-01&to=2026-12-02",
    )
    .await;
    for needle in [
        "<title>New and returning contacts per day, 2026-12-01 to 2026-12-02</title>",
        "<td>2026-12-02</td><td>0</td><td>2</td>",
        "<td>2026-12-01</td><td>5</td><td>2 (40 %)</td><td>–</td><td>–</td>",
    ] {
        assert!(html.contains(needle), "{needle:?} in the contacts page");
    }
    // Answers count on the day their conversation started.
    let r = report(&server, "flows/survey?from=2026-12-02&to=2026-12-02").await;
    assert_eq!(r["started"], 0);
    let r = report(&server, "flows/survey").await;
    assert_eq!(r["started"], 5);
    assert_eq!(r["completed"], 4);
    assert_eq!(step(&r, "plan")["answers"], 5);
    assert_eq!(step(&r, "plan")["stopped_here"], 0);
    assert_eq!(step(&r, "name")["answers"], 4);
    assert_eq!(step(&r, "name")["stopped_here"], 1);
    server.stop().await;
}

#[tokio::test]
async fn every_reply_of_a_person_is_timed_from_the_message_it_answers() {
    use volley_server::handoff::{self, Actor, AgentInfo, Desk};
    let clock = Arc::new(volley_server::ManualClock::new(
        "2026-12-01T10:00:00Z".parse().unwrap(),
    ));
    let server = TestServer::on_clock(&clock).await;
    let app = &server.running.app;
    let _desk = Desk::connect(
        app,
        AgentInfo {
            id: "a".into(),
            name: "Agent a".into(),
            capacity: 5,
        },
    );
    let agent = Actor {
        id: "a".into(),
        name: "Agent a".into(),
    };
    let mut c = Client::connect(&server, hello("desk")).await;
    let ask = c.next_question().await;
    let id = c.fresh_id();
    c.input(json!({"type": "answer", "id": id, "step": ask["step"], "text": "Sam"}))
        .await;
    c.until(|v| v["event"]["kind"] == "assigned").await;
    let conv = c.conversation();
    let say = async |c: &mut Client, text: &str| {
        let id = c.fresh_id();
        let ack = c
            .input(json!({"type": "say", "id": id, "text": text}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    };
    let secs = |s| std::time::Duration::from_secs(s);
    // 30 s for the first reply; the second answers two messages, 60 s after the first.
    say(&mut c, "Hello?").await;
    clock.advance(secs(30));
    handoff::reply(app, &conv, &agent, false, "Hi Sam.", None)
        .await
        .unwrap();
    say(&mut c, "I have a question").await;
    clock.advance(secs(10));
    say(&mut c, "about billing").await;
    clock.advance(secs(50));
    handoff::reply(app, &conv, &agent, false, "Sure.", None)
        .await
        .unwrap();
    // A reply nobody waited for is not timed.
    handoff::reply(app, &conv, &agent, false, "Anything else?", None)
        .await
        .unwrap();

    let r = report(
        &server,
        "handoffs?from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z",
    )
    .await;
    let reply = &r["overall"]["reply"];
    assert_eq!(reply["count"], 2, "{r}");
    assert_eq!(reply["p50_s"], 30.0);
    assert_eq!(reply["p90_s"], 60.0);
    assert_eq!(reply["mean_s"], 45.0);
    assert_eq!(r["queues"][0]["queue"], "support");
    assert_eq!(r["queues"][0]["reply"]["count"], 2);
    assert_eq!(r["agents"][0]["agent_id"], "a");
    assert_eq!(r["agents"][0]["reply"]["max_s"], 60.0);
    // The flow's report: one hand-off, the person's response times, and the bot is
    // not charged for the time a person had the conversation.
    let f = report(&server, "flows/desk").await;
    assert_eq!(f["handoffs"], 1);
    assert_eq!(f["handoff_percent"], 100.0);
    assert_eq!(f["human_response"]["count"], 2);
    assert_eq!(f["human_response"]["mean_s"], 45.0);
    assert_eq!(f["bot_response"]["count"], 0);
    server.stop().await;
}
