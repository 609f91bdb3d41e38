//! Exports through the real server: a flow's results as CSV and JSON Lines (with exact
//! answers, unfinished conversations, filters and neutralised formulas), a transcript,
//! and a showing's attendance.

use serde_json::{Value, json};

use crate::support::*;

async fn get(server: &TestServer, path: &str) -> (u16, String, String) {
    let r = http()
        .get(server.http(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// Runs the `quick` flow to its end with these answers; returns the conversation id.
async fn finished(server: &TestServer, name: &str, colour: &str, count: &str) -> String {
    let mut c = Client::connect(server, hello("quick")).await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "a1", "step": "name", "text": name}))
        .await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "a2", "step": "colour", "values": [colour]}))
        .await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "a3", "step": "count", "text": count}))
        .await;
    assert_eq!(c.next_question().await["kind"], "end");
    c.conversation()
}

#[tokio::test]
async fn results_export_every_conversation_with_its_answers_and_no_formulas() {
    let server = TestServer::start().await;
    let al = finished(&server, "Al", "Green", "3").await;
    let evil = finished(&server, "=HYPERLINK(\"http://x\")", "Red", "10").await;
    // One that stops after its name.
    let mut c = Client::connect(&server, hello("quick")).await;
    c.next_question().await;
    c.input(json!({"type": "answer", "id": "a1", "step": "name", "text": "Bo"}))
        .await;
    let open = c.conversation();

    let (status, ct, csv) = get(&server, "/api/flows/quick/results").await;
    assert_eq!((status, ct.as_str()), (200, "text/csv; charset=utf-8"));
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "conversation_id",
            "contact_id",
            "flow_version",
            "status",
            "outcome",
            "started_at",
            "updated_at",
            "goals",
            "name",
            "colour",
            "count"
        ]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    let pick = |r: &Vec<String>| {
        (
            r[0].clone(),
            r[4].clone(),
            r[8].clone(),
            r[9].clone(),
            r[10].clone(),
        )
    };
    assert_eq!(
        rows.iter().map(pick).collect::<Vec<_>>(),
        [
            (
                al.clone(),
                "done".into(),
                "Al".into(),
                "Green".into(),
                "3".into()
            ),
            (
                evil.clone(),
                "done".into(),
                "'=HYPERLINK(\"http://x\")".into(),
                "Red".into(),
                "10".into()
            ),
            (open.clone(), "".into(), "Bo".into(), "".into(), "".into()),
        ]
    );

    let (status, ct, jsonl) = get(&server, "/api/flows/quick/results?format=jsonl").await;
    assert_eq!((status, ct.as_str()), (200, "application/x-ndjson"));
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["answers"],
        json!({"name": "Al", "colour": "Green", "count": 3})
    );
    assert_eq!(
        lines[1]["answers"]["name"], "=HYPERLINK(\"http://x\")",
        "JSON keeps the text as typed"
    );
    assert_eq!(
        (&lines[2]["outcome"], &lines[2]["answers"]),
        (&Value::Null, &json!({"name": "Bo"}))
    );

    // Filters: by start instant, by version; bad input is refused.
    let (_, _, none) = get(
        &server,
        "/api/flows/quick/results?format=jsonl&from=2999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(none, "");
    let (_, _, v1) = get(&server, "/api/flows/quick/results?format=jsonl&version=1").await;
    assert_eq!(v1.lines().count(), 3);
    let (_, _, v2) = get(&server, "/api/flows/quick/results?format=jsonl&version=2").await;
    assert_eq!(v2.lines().count(), 0);
    assert_eq!(
        get(&server, "/api/flows/quick/results?format=xml").await.0,
        400
    );
    assert_eq!(
        get(&server, "/api/flows/quick/results?from=yesterday")
            .await
            .0,
        400
    );
    assert_eq!(get(&server, "/api/flows/nope/results").await.0, 404);

    // The transcript of one conversation, as JSON and as text.
    let (status, _, t) = get(&server, &format!("/api/conversations/{al}/transcript")).await;
    assert_eq!(status, 200);
    let t: Value = serde_json::from_str(&t).unwrap();
    let seqs: Vec<i64> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let (_, ct, text) = get(
        &server,
        &format!("/api/conversations/{al}/transcript?format=txt"),
    )
    .await;
    assert_eq!(ct, "text/plain; charset=utf-8");
    assert!(text.contains("bot: Thanks Al: 3 × Green."), "{text}");
    assert!(text.contains("participant: Al"), "{text}");
    assert_eq!(
        get(&server, "/api/conversations/cv_nope/transcript")
            .await
            .0,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn a_results_export_streams_many_pages() {
    let server = TestServer::start().await;
    // More conversations than one page (500): started and left at the first question.
    let n = 1_203;
    let mut ids = Vec::new();
    for _ in 0..n {
        let c = Client::connect(&server, hello("quick")).await;
        ids.push(c.conversation());
    }
    let (status, _, csv) = get(&server, "/api/flows/quick/results").await;
    assert_eq!(status, 200);
    let got: Vec<String> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(
        got, ids,
        "every conversation once, in the order they started"
    );
    server.stop().await;
}
