//! The integration API through the real server: contacts upserted by external id, a
//! flow started for a contact and a message sent into it, with scoped keys, and
//! retries made safe by idempotency keys.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::*;

async fn post(
    server: &TestServer,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, HeaderMap, Value) {
    let mut req = http()
        .post(server.http(path))
        .bearer_auth(ADMIN_KEY)
        .json(&body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn contacts_flows_and_messages_from_another_system_with_safe_retries() {
    let server = TestServer::start().await;

    // Contacts by external id: created, then merged.
    let (status, _, c) = post(
        &server,
        "/api/contacts",
        None,
        json!({"external_id": "crm-1", "profile": {"name": "Ana", "timezone": "Europe/Lisbon"}}),
    )
    .await;
    assert_eq!(
        (status, &c["created"], &c["profile"]["name"]),
        (201, &json!(true), &json!("Ana"))
    );
    let (status, _, c2) = post(
        &server,
        "/api/contacts",
        None,
        json!({"external_id": "crm-1", "profile": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(
        (status, &c2["id"], &c2["profile"]),
        (
            200,
            &c["id"],
            &json!({"name": "Ana", "timezone": "Europe/Lisbon", "plan": "pro"})
        )
    );
    for bad in [
        json!({"external_id": ""}),
        json!({"external_id": "x", "profile": {"name": 5}}),
        json!({"profile": {}}),
        json!({"external_id": "x", "extra": 1}),
    ] {
        let (status, _, v) = post(&server, "/api/contacts", None, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {v}");
    }

    // Start a flow for the contact, retried with the same key: one conversation.
    let start = json!({"external_id": "crm-1"});
    let (status, h1, s1) = post(
        &server,
        "/api/flows/quick/start",
        Some("start-crm-1"),
        start.clone(),
    )
    .await;
    assert_eq!(status, 201, "{s1}");
    assert!(h1.get("idempotency-replayed").is_none());
    let (status, h2, s2) = post(
        &server,
        "/api/flows/quick/start",
        Some("start-crm-1"),
        start.clone(),
    )
    .await;
    assert_eq!((status, &s2), (201, &s1), "the first answer again");
    assert_eq!(h2["idempotency-replayed"], "true");
    assert_eq!(
        server
            .running
            .app
            .store
            .conversations_by_origin("api")
            .await
            .unwrap(),
        1
    );
    let (status, _, v) = post(
        &server,
        "/api/flows/quick/start",
        Some("start-crm-1"),
        json!({"external_id": "crm-2"}),
    )
    .await;
    assert_eq!(
        (status, &v["code"]),
        (422, &json!("idempotency-key-reused"))
    );
    let (status, _, v) = post(
        &server,
        "/api/flows/quick/start",
        Some(&"k".repeat(256)),
        start.clone(),
    )
    .await;
    assert_eq!((status, &v["code"]), (400, &json!("bad-idempotency-key")));
    // Refusals are kept too: the same key answers the same 404.
    let (status, _, _) = post(
        &server,
        "/api/flows/nope/start",
        Some("nope-1"),
        start.clone(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, h, _) = post(
        &server,
        "/api/flows/nope/start",
        Some("nope-1"),
        start.clone(),
    )
    .await;
    assert_eq!(
        (status, h["idempotency-replayed"].to_str().unwrap()),
        (404, "true")
    );
    // A new key is a new request; an unknown contact is created.
    let (status, _, s3) = post(
        &server,
        "/api/flows/quick/start",
        Some("start-crm-2"),
        json!({"external_id": "crm-2", "profile": {"name": "Bo"}}),
    )
    .await;
    assert_eq!(status, 201, "{s3}");
    assert_eq!(
        server
            .running
            .app
            .store
            .conversations_by_origin("api")
            .await
            .unwrap(),
        2
    );

    // A message into the conversation, retried safely.
    let conv = s1["conversation"].as_str().unwrap().to_string();
    let path = format!("/api/conversations/{conv}/messages");
    let (status, _, m1) = post(
        &server,
        &path,
        Some("msg-1"),
        json!({"text": "Your order **shipped**."}),
    )
    .await;
    assert_eq!(status, 201, "{m1}");
    let (_, _, m2) = post(
        &server,
        &path,
        Some("msg-1"),
        json!({"text": "Your order **shipped**."}),
    )
    .await;
    assert_eq!(m1, m2);
    let (status, _, _) = post(&server, &path, None, json!({"text": ""})).await;
    assert_eq!(status, 400);
    let (status, _, _) = post(
        &server,
        "/api/conversations/cv_nope/messages",
        None,
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(status, 404);

    // The contact (signed identity) finds the flow's first question and the message, once.
    let mut h = hello("quick");
    h["identity"] = json!({"user_id": "crm-1", "signature": sign("crm-1")});
    let c = Client::connect(&server, h).await;
    assert_eq!(c.conversation(), conv);
    let mut c = c;
    c.next_question().await;
    c.until(|e| e["event"]["text"] == "Your order **shipped**.")
        .await;
    let texts: Vec<String> = c
        .events
        .iter()
        .filter_map(|e| e["event"]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.as_str() == "Your order **shipped**.")
            .count(),
        1,
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t == "Hello Ana!"), "{texts:?}");

    // Keys are per caller: another credential's same key is its own.
    let (_, key) = {
        let (status, v) = api(
            &server,
            "POST",
            "/api/keys",
            json!({"name": "crm", "scopes": ["conversations:write"]}),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        (status, v["key"].as_str().unwrap().to_string())
    };
    let r = http()
        .post(server.http("/api/flows/quick/start"))
        .bearer_auth(&key)
        .header("idempotency-key", "start-crm-1")
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("idempotency-replayed").is_none());
    server.stop().await;
}
