//! Campaigns over the HTTP API on virtual time: contacts imported from CSV, a send at
//! 09:00 in each contact's zone, preview, pause, resume, cancel, and the participant
//! finding the conversation when they open the widget.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use volley_server::{Clock, ManualClock};

use crate::support::*;

const CSV: &str = "external_id,name,timezone,tags,plan\n\
                   u-berlin,Ana,Europe/Berlin,beta,pro\n\
                   u-ny,Bo,America/New_York,beta;vip,free\n\
                   u-none,Cy,,,pro\n";

async fn campaign(server: &TestServer, id: &str) -> Value {
    admin(server, "GET", &format!("/api/campaigns/{id}"), None)
        .await
        .1
}

/// Polls (briefly, in real time) until the campaign has sent `n`.
async fn sent(server: &TestServer, id: &str, n: i64) -> Value {
    for _ in 0..300 {
        let c = campaign(server, id).await;
        if c["sent"] == n {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "campaign {id} never reached {n} sent: {}",
        campaign(server, id).await
    );
}

#[tokio::test]
async fn a_campaign_sends_at_nine_in_each_contacts_zone_and_can_pause_resume_and_cancel() {
    let clock = Arc::new(ManualClock::new("2026-11-30T12:00:00Z".parse().unwrap()));
    let server = TestServer::on_clock(&clock).await;

    let (status, body) = admin(&server, "POST", "/api/contacts/import", Some(CSV.into())).await;
    assert_eq!((status, &body), (200, &json!({"created": 3, "updated": 0})));

    let spec = json!({
        "name": "December check-in",
        "flow": "checkin",
        "audience": {"tags": ["beta"]},
        "schedule": {"date": "2026-12-01", "time": "09:00"},
    });
    let (status, preview) = admin(
        &server,
        "POST",
        "/api/campaigns?preview=true",
        Some(spec.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        preview["by_hour"],
        json!([{"from": "2026-12-01T08:00:00Z", "count": 1}, {"from": "2026-12-01T14:00:00Z", "count": 1}])
    );
    assert_eq!(preview["audience"], 2);
    assert_eq!(
        admin(&server, "GET", "/api/campaigns", None).await.1,
        json!([]),
        "preview writes nothing"
    );

    let (status, created) = admin(&server, "POST", "/api/campaigns", Some(spec.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        (created["pending"].clone(), created["sent"].clone()),
        (json!(2), json!(0))
    );

    // 09:00 in Berlin: Ana's conversation starts; New York's is still to come.
    clock.set("2026-12-01T08:00:00Z".parse().unwrap());
    let c = sent(&server, &id, 1).await;
    assert_eq!(c["pending"], 1);

    // Ana opens the site, signed in: the campaign's conversation is waiting for her.
    let mut h = hello("checkin");
    h["identity"] = json!({"user_id": "u-berlin", "signature": sign("u-berlin")});
    let mut ana = Client::connect(&server, h).await;
    let q = ana.next_question().await;
    assert_eq!(q["input"], "yes_no");
    assert_eq!(
        ana.events[0]["event"]["text"],
        "Good morning Ana! Ready for your check-in?"
    );

    // Paused before New York's 09:00 (14:00Z): nothing is sent while paused.
    let (status, paused) =
        admin(&server, "POST", &format!("/api/campaigns/{id}/pause"), None).await;
    assert_eq!((status, paused["status"].clone()), (200, json!("paused")));
    let (status, again) = admin(&server, "POST", &format!("/api/campaigns/{id}/pause"), None).await;
    assert_eq!(
        (status, again["code"].clone()),
        (409, json!("campaign-status"))
    );
    clock.set("2026-12-01T15:00:00Z".parse().unwrap());
    server.running.app.scheduler.settled(clock.now_ms()).await;
    assert_eq!(campaign(&server, &id).await["sent"], 1);
    // Resumed at 15:00Z after 7 hours paused: the send comes 7 hours later, 21:00Z.
    let (_, resumed) = admin(
        &server,
        "POST",
        &format!("/api/campaigns/{id}/resume"),
        None,
    )
    .await;
    assert_eq!(
        resumed["upcoming"],
        json!([{"from": "2026-12-01T21:00:00Z", "count": 1}])
    );
    clock.set("2026-12-01T20:59:00Z".parse().unwrap());
    server.running.app.scheduler.settled(clock.now_ms()).await;
    assert_eq!(campaign(&server, &id).await["sent"], 1);
    clock.set("2026-12-01T21:00:00Z".parse().unwrap());
    let done = sent(&server, &id, 2).await;
    assert_eq!(
        (done["pending"].clone(), done["skipped"].clone()),
        (json!(0), json!(0))
    );

    // A second campaign, cancelled before it sends anything.
    let spec2 = json!({
        "name": "Pro users",
        "flow": "checkin",
        "audience": {"attributes": {"plan": "pro"}},
        "schedule": {"at": "2026-12-05T10:00:00Z"},
        "rate_per_minute": 1,
    });
    let (_, c2) = admin(&server, "POST", "/api/campaigns", Some(spec2.to_string())).await;
    assert_eq!(
        c2["upcoming"],
        json!([{"from": "2026-12-05T10:00:00Z", "count": 2}])
    );
    let id2 = c2["id"].as_str().unwrap();
    let (_, cancelled) = admin(
        &server,
        "POST",
        &format!("/api/campaigns/{id2}/cancel"),
        None,
    )
    .await;
    assert_eq!(
        (
            cancelled["status"].clone(),
            cancelled["cancelled"].clone(),
            cancelled["pending"].clone()
        ),
        (json!("cancelled"), json!(2), json!(0))
    );
    clock.set("2026-12-06T00:00:00Z".parse().unwrap());
    server.running.app.scheduler.settled(clock.now_ms()).await;
    assert_eq!(campaign(&server, id2).await["sent"], 0);
    assert_eq!(server.running.app.store.pending_timers().await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn sends_due_together_fire_in_batches_exactly_once_and_stay_out_of_memory() {
    let clock = Arc::new(ManualClock::new("2026-11-30T12:00:00Z".parse().unwrap()));
    let server = TestServer::on_clock(&clock).await;
    let app = &server.running.app;
    // 600 sends at one instant: more than two batches (256 each), and the last short.
    let mut csv = String::from("external_id,name,timezone\n");
    for i in 0..600 {
        csv.push_str(&format!("u{i},Name {i},Europe/Berlin\n"));
    }
    let (status, _) = admin(&server, "POST", "/api/contacts/import", Some(csv)).await;
    assert_eq!(status, 200);
    let spec = json!({
        "name": "All at once", "flow": "checkin", "audience": {"all": true},
        "schedule": {"at": "2026-12-01T09:00:00Z"},
    });
    let (status, created) = admin(&server, "POST", "/api/campaigns", Some(spec.to_string())).await;
    assert_eq!((status, created["pending"].clone()), (201, json!(600)));
    let id = created["id"].as_str().unwrap().to_string();

    clock.set("2026-12-01T09:00:00Z".parse().unwrap());
    let done = sent(&server, &id, 600).await;
    app.scheduler.settled(clock.now_ms()).await;
    assert_eq!(
        (done["pending"].clone(), done["skipped"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(app.store.pending_timers().await.unwrap(), 0);
    // Exactly one conversation each, first and last of each batch included.
    for i in [0, 255, 256, 511, 512, 599] {
        let contact = app
            .store
            .contact_by_external_id(&format!("u{i}"))
            .await
            .unwrap()
            .expect("imported");
        let convs = app
            .store
            .contact_conversations(&contact.id, 10)
            .await
            .unwrap();
        assert_eq!(convs.len(), 1, "u{i}: {convs:?}");
    }
    assert_eq!(campaign(&server, &id).await["sent"], 600, "and no more");
    // Nobody has opened them: none is held in memory.
    assert_eq!(app.convs.in_memory(), 0);

    // One participant opens the site: their conversation is read from the store.
    let mut h = hello("checkin");
    h["identity"] = json!({"user_id": "u300", "signature": sign("u300")});
    let mut p = Client::connect(&server, h).await;
    assert_eq!(p.next_question().await["input"], "yes_no");
    assert_eq!(
        p.events[0]["event"]["text"],
        "Good morning Name 300! Ready for your check-in?"
    );
    assert_eq!(app.convs.in_memory(), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_campaigns_and_csvs_change_nothing() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let r = http
        .post(server.http("/api/contacts/import"))
        .body(CSV)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the admin key is required");
    let (status, err) = admin(
        &server,
        "POST",
        "/api/contacts/import",
        Some("external_id,timezone\nu1,UTC\nu2,Nowhere/Land\n".into()),
    )
    .await;
    assert_eq!((status, err["code"].clone()), (422, json!("invalid-csv")));
    assert_eq!(err["details"]["rows"][0]["line"], 3);
    let everyone = json!({"name": "x", "flow": "checkin", "audience": {"all": true}, "schedule": {"time": "09:00"}});
    let (_, p) = admin(
        &server,
        "POST",
        "/api/campaigns?preview=true",
        Some(everyone.to_string()),
    )
    .await;
    assert_eq!(p["audience"], 0, "the bad CSV imported nobody");
    for (body, code) in [
        (
            json!({"name": "x", "flow": "nope", "audience": {"all": true}, "schedule": {"time": "09:00"}}),
            "unknown-flow",
        ),
        (
            json!({"name": "x", "flow": "checkin", "audience": {}, "schedule": {"time": "09:00"}}),
            "invalid-campaign",
        ),
        (
            json!({"name": "x", "flow": "checkin", "audience": {"all": true}, "schedule": {"cron": "nope"}}),
            "invalid-campaign",
        ),
        (
            json!({"name": "x", "flow": "checkin", "audience": {"all": true}, "schedule": {"time": "09:00"}, "extra": 1}),
            "bad-json",
        ),
    ] {
        let (status, e) = admin(&server, "POST", "/api/campaigns", Some(body.to_string())).await;
        assert!((400..500).contains(&status), "{body}: {status}");
        assert_eq!(e["code"], code, "{body}");
    }
    assert_eq!(
        admin(&server, "GET", "/api/campaigns", None).await.1,
        json!([])
    );
    let (status, _) = admin(&server, "POST", "/api/campaigns/cmp_nope/pause", None).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_large_csv_is_imported_and_one_over_the_limit_is_refused_as_json() {
    let server = TestServer::start().await;
    // Over 2 MiB (axum's own default for bodies), far below the import's 20 MiB.
    let mut csv = String::from("external_id,name,note\n");
    for i in 0..60_000 {
        csv.push_str(&format!("u{i},Name {i},{}\n", "x".repeat(30)));
    }
    assert!(csv.len() > 2 << 20);
    let (status, body) = admin(&server, "POST", "/api/contacts/import", Some(csv)).await;
    assert_eq!(
        (status, body),
        (200, json!({"created": 60_000, "updated": 0}))
    );
    let big = "x".repeat(21 << 20);
    let (status, body) = admin(&server, "POST", "/api/contacts/import", Some(big)).await;
    assert_eq!((status, body["code"].clone()), (413, json!("too-large")));
    server.stop().await;
}
