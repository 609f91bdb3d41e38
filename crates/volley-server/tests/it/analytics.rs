//! The hand-off report on generated conversations with known timestamps: exact first
//! response, wait and resolution times in calendar time and business hours, rates and
//! CSAT, overall, per queue and per agent (docs/metrics.md).

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
        "overall,,4,3,3,2,120,234000,78050,120,60,600,600,2,50,100"
    );
    server.stop().await;
}
