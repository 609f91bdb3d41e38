//! The SQLite store against a real database file.

use volley_store::*;

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(SqliteOptions::new(
        dir.path().join("t.db").display().to_string(),
    ))
    .await
    .unwrap()
}

fn event(kind: &str, client_id: Option<&str>) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        at: 1,
        visible_at: 1,
        client_id: client_id.map(Into::into),
        data: "{}".into(),
    }
}

async fn contact(store: &SqliteStore, id: &str) {
    store
        .create_contact(NewContact {
            id: id.into(),
            token_hash: Some(format!("h-{id}")),
            external_id: None,
            profile: "{}".into(),
            at: 1,
        })
        .await
        .unwrap();
}

fn start(id: &str, contact: &str, events: Vec<NewEvent>) -> Append {
    Append {
        conversation_id: id.into(),
        after_seq: 0,
        events,
        state: "{}".into(),
        status: "active".into(),
        at: 1,
        create: Some(NewConversation {
            flow_id: "f".into(),
            flow_version: 1,
            contact_id: contact.into(),
            origin: None,
        }),
        ..Default::default()
    }
}

fn timer(due_at: i64, kind: &str) -> NewTimer {
    NewTimer {
        due_at,
        kind: kind.into(),
        late_after: None,
        owner: None,
        data: "{}".into(),
    }
}

#[tokio::test]
async fn appends_are_durable_ordered_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    contact(&store, "c1").await;
    store
        .append(start(
            "v1",
            "c1",
            vec![event("message", None), event("ask", None)],
        ))
        .await
        .unwrap();
    let next = Append {
        after_seq: 2,
        create: None,
        events: vec![event("input", Some("m1")), event("message", None)],
        ..start("v1", "c1", vec![])
    };
    store.append(next.clone()).await.unwrap();
    // The same write again conflicts: the log moved on, nothing is duplicated.
    assert!(matches!(
        store.append(next).await,
        Err(StoreError::Conflict(_))
    ));
    let events = store.events_after("v1", 0, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(1, "message"), (2, "ask"), (3, "input"), (4, "message")]
    );
    assert_eq!(store.client_message("v1", "m1").await.unwrap(), Some(3));
    assert_eq!(store.conversation("v1").await.unwrap().unwrap().last_seq, 4);
    store.close().await;
    // Reopened, everything is still there.
    let store = open(&dir).await;
    assert_eq!(store.events_after("v1", 2, 100).await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test]
async fn concurrent_appends_commit_together_and_one_failure_spares_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir).await);
    contact(&store, "c").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Conversation 13 refers to a contact that does not exist: only it fails.
            let who = if i == 13 { "nobody" } else { "c" };
            store
                .append(start(
                    &format!("v{i}"),
                    who,
                    vec![event("message", None); 3],
                ))
                .await
        }));
    }
    let mut failed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap().is_err() {
            failed.push(i);
        }
    }
    assert_eq!(failed, [13]);
    for i in [0, 12, 14, 199] {
        assert_eq!(
            store
                .events_after(&format!("v{i}"), 0, 10)
                .await
                .unwrap()
                .len(),
            3,
            "v{i}"
        );
    }
    assert!(store.conversation("v13").await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn publishing_the_same_source_twice_keeps_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let (v1, new1) = store.publish_flow("f", "F", "h1", "src1", 1).await.unwrap();
    let (again, new2) = store.publish_flow("f", "F", "h1", "src1", 2).await.unwrap();
    let (v2, new3) = store
        .publish_flow("f", "F2", "h2", "src2", 3)
        .await
        .unwrap();
    assert_eq!(
        (v1.version, new1, again.version, new2, v2.version, new3),
        (1, true, 1, false, 2, true)
    );
    assert_eq!(
        store.flow_version("f", 1).await.unwrap().unwrap().source,
        "src1"
    );
    let latest = store.latest_flows().await.unwrap();
    assert_eq!(
        (latest.len(), latest[0].version, latest[0].title.as_str()),
        (1, 2, "F2")
    );
    assert_eq!(store.flow_versions("f").await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test]
async fn event_versions_are_kept_like_flow_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let (v1, new1) = store.publish_event("e", "h1", "src1", 1).await.unwrap();
    let (again, new2) = store.publish_event("e", "h1", "src1", 2).await.unwrap();
    let (v2, new3) = store.publish_event("e", "h2", "src2", 3).await.unwrap();
    let (other, _) = store.publish_event("f", "h1", "src1", 4).await.unwrap();
    assert_eq!(
        (v1.version, new1, again.version, new2, v2.version, new3),
        (1, true, 1, false, 2, true)
    );
    assert_eq!((again.created_at, other.version), (1, 1));
    let versions = store.event_versions("e").await.unwrap();
    let seen: Vec<(i64, &str, &str)> = versions
        .iter()
        .map(|v| (v.version, v.hash.as_str(), v.source.as_str()))
        .collect();
    assert_eq!(seen, [(1, "h1", "src1"), (2, "h2", "src2")]);
    store.close().await;
}

#[tokio::test]
async fn writes_after_close_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.close().await;
    assert!(matches!(
        store
            .create_contact(NewContact {
                id: "x".into(),
                token_hash: None,
                external_id: None,
                profile: "{}".into(),
                at: 1
            })
            .await,
        Err(StoreError::Closed)
    ));
}

#[tokio::test]
async fn timers_are_written_replaced_and_fired_once_with_their_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    contact(&store, "c").await;
    let ids = store
        .append(Append {
            timers: Some(vec![timer(50, "timeout"), timer(10, "expire")]),
            ..start("v", "c", vec![event("ask", None)])
        })
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "ids follow the order given");
    let free = store
        .schedule_timers(vec![timer(30, "campaign")])
        .await
        .unwrap();
    // Due timers in order, across conversations and free ones, with their conversation.
    let due = store.timers_due(100, (i64::MIN, 0), 10).await.unwrap();
    let order: Vec<(i64, &str, Option<&str>)> = due
        .iter()
        .map(|t| (t.due_at, t.kind.as_str(), t.conversation_id.as_deref()))
        .collect();
    assert_eq!(
        order,
        [
            (10, "expire", Some("v")),
            (30, "campaign", None),
            (50, "timeout", Some("v"))
        ]
    );
    // The cursor pages through them; `until` bounds them.
    let page = store.timers_due(100, (10, ids[1]), 1).await.unwrap();
    assert_eq!(page[0].id, free[0]);
    assert_eq!(
        store.timers_due(20, (i64::MIN, 0), 10).await.unwrap().len(),
        1
    );

    // Firing the timeout: the append deletes it and replaces the conversation's timers.
    let fire = |after_seq: i64, fired: i64| Append {
        after_seq,
        create: None,
        fired_timer: Some(fired),
        timers: Some(vec![timer(500, "resume")]),
        ..start("v", "c", vec![event("message", None)])
    };
    let new = store.append(fire(1, ids[0])).await.unwrap();
    let pending: Vec<i64> = store
        .timers_due(i64::MAX, (i64::MIN, 0), 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(pending, [free[0], new[0]], "old timers replaced");
    // Firing it again changes nothing: it is no longer pending.
    assert!(matches!(
        store.append(fire(2, ids[0])).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.conversation("v").await.unwrap().unwrap().last_seq, 2);
    assert_eq!(store.pending_timers().await.unwrap(), 2);
    assert!(store.delete_timer(free[0]).await.unwrap());
    assert!(!store.delete_timer(free[0]).await.unwrap());
    store.close().await;
}

#[tokio::test]
async fn contacts_upsert_by_external_id_and_campaign_sends_pause_resume_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let up = |id: &str, ext: &str, profile: &str| ContactUpsert {
        id: id.into(),
        external_id: ext.into(),
        profile: profile.into(),
    };
    let created = store
        .upsert_contacts(
            vec![up("c1", "u1", r#"{"name":"A"}"#), up("c2", "u2", "{}")],
            1,
        )
        .await
        .unwrap();
    assert_eq!(created, 2);
    // Again with a change: updates, keeps the first id, creates the new one.
    let created = store
        .upsert_contacts(
            vec![up("zz", "u1", r#"{"name":"B"}"#), up("c3", "u3", "{}")],
            2,
        )
        .await
        .unwrap();
    assert_eq!(created, 1);
    let c1 = store.contact_by_external_id("u1").await.unwrap().unwrap();
    assert_eq!(
        (c1.id.as_str(), c1.profile.as_str()),
        ("c1", r#"{"name":"B"}"#)
    );
    let page = store.contacts_after("", 2).await.unwrap();
    assert_eq!(
        page.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    assert_eq!(store.contacts_after("c2", 10).await.unwrap().len(), 1);

    let send = |due: i64| NewTimer {
        owner: Some("campaign:k".into()),
        ..timer(due, "campaign")
    };
    let row = CampaignRow {
        id: "k".into(),
        name: "K".into(),
        flow_id: "f".into(),
        spec: "{}".into(),
        status: "scheduled".into(),
        audience: 3,
        cancelled: 0,
        paused_at: None,
        created_at: 10,
        updated_at: 10,
    };
    store
        .create_campaign(row, vec![send(1_000), send(2_000), send(90_000)])
        .await
        .unwrap();
    let hist = store
        .owner_timers_histogram("campaign:k", 60_000)
        .await
        .unwrap();
    assert_eq!(hist, [(0, 2), (60_000, 1)]);
    // Paused: nothing is due any more; resumed 500 ms later: everything moved by 500.
    assert!(
        store
            .change_campaign("k", CampaignChange::Pause, 100)
            .await
            .unwrap()
    );
    assert!(
        !store
            .change_campaign("k", CampaignChange::Pause, 100)
            .await
            .unwrap()
    );
    assert!(
        store
            .timers_due(100_000_000_000_000, (i64::MIN, 0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .change_campaign("k", CampaignChange::Resume, 600)
            .await
            .unwrap()
    );
    let due: Vec<i64> = store
        .timers_due(i64::MAX / 2, (i64::MIN, 0), 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.due_at)
        .collect();
    assert_eq!(due, [1_500, 2_500, 90_500]);
    assert!(
        store
            .change_campaign("k", CampaignChange::Cancel, 700)
            .await
            .unwrap()
    );
    let k = store.campaign("k").await.unwrap().unwrap();
    assert_eq!((k.status.as_str(), k.cancelled), ("cancelled", 3));
    assert_eq!(store.pending_timers().await.unwrap(), 0);
    assert!(
        !store
            .change_campaign("k", CampaignChange::Resume, 800)
            .await
            .unwrap()
    );
    assert!(
        !store
            .change_campaign("nope", CampaignChange::Pause, 800)
            .await
            .unwrap()
    );
    store.close().await;
}

#[tokio::test]
async fn a_backup_taken_while_writing_is_consistent_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(&dir).await);
    contact(&store, "c").await;
    let url = dir.path().join("t.db").display().to_string();
    // A writer keeps appending three-entry conversations while backups are taken.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let events = vec![event("a", None), event("b", None), event("c", None)];
                store
                    .append(start(&format!("cv{i}"), "c", events))
                    .await
                    .unwrap();
            }
        })
    };
    let mut taken = Vec::new();
    for k in 0..5 {
        let dest = dir.path().join(format!("backup-{k}.db"));
        let b = backup_sqlite(&url, &dest).await.unwrap();
        // One snapshot: every conversation in the copy has all its entries.
        assert_eq!(b.events, b.conversations * 3, "{b:?}");
        assert!(b.bytes > 0);
        taken.push(b.conversations);
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let last = dir.path().join("backup-last.db");
    let b = backup_sqlite(&url, &last).await.unwrap();
    assert_eq!((b.conversations, b.events), (400, 1200));
    assert!(taken.windows(2).all(|w| w[0] <= w[1]), "{taken:?}");
    // Never over an existing file, and nothing from a missing database.
    let again = backup_sqlite(&url, &last).await.unwrap_err();
    assert!(again.to_string().contains("exists"), "{again}");
    let missing = dir.path().join("nope.db").display().to_string();
    assert!(
        backup_sqlite(&missing, &dir.path().join("x.db"))
            .await
            .is_err()
    );
    assert!(!dir.path().join("x.db").exists());
    store.close().await;
}

fn delivery(endpoint: &str, message: &str, at: i64) -> NewDelivery {
    NewDelivery {
        endpoint_id: endpoint.into(),
        message_id: message.into(),
        kind: "goal.reached".into(),
        payload: "{}".into(),
        at,
    }
}

#[tokio::test]
async fn the_logs_are_read_as_an_outbox_behind_cursors_moved_with_the_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    contact(&store, "c").await;
    // Logged before any endpoint: not dispatched (the first endpoint starts at the end).
    store
        .append(start("old", "c", vec![event("enter", None)]))
        .await
        .unwrap();
    let endpoint = |id: &str| WebhookRow {
        id: id.into(),
        url: "https://example.com/hook".into(),
        secret: "whsec_AAAA".into(),
        types: "*".into(),
        description: String::new(),
        created_at: 1,
        disabled: false,
        previous_secret: None,
        previous_until: None,
    };
    store.create_webhook(endpoint("wh_a")).await.unwrap();
    let from = store.log_cursors().await.unwrap();
    assert!(from.events > 0);
    let mut written = store.log_written();
    written.borrow_and_update();
    store
        .append(start(
            "new",
            "c",
            vec![
                event("enter", None),
                event("message", None),
                event("goal", None),
            ],
        ))
        .await
        .unwrap();
    assert!(written.has_changed().unwrap(), "a log commit is signalled");

    // The first entry of a conversation and the kinds asked for, in order; a full page
    // stops at its last row, a short one at the end of the log.
    let page = store.log_since(from, &["goal"], &[], 1).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(
        (page.events[0].seq, page.events[0].conversation_id.as_str()),
        (1, "new")
    );
    assert_eq!(page.upto.events, page.events[0].position);
    let page = store.log_since(from, &["goal"], &[], 10).await.unwrap();
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(page.upto.events, page.events[1].position);
    assert_eq!(
        store
            .log_since(page.upto, &["goal"], &[], 10)
            .await
            .unwrap()
            .upto,
        page.upto,
        "nothing after the end"
    );

    // Deliveries go in with the cursors' move, once; a stale move changes nothing.
    let batch = vec![delivery("wh_a", "m1", 5), delivery("wh_gone", "m1", 5)];
    assert!(
        store
            .enqueue_deliveries(from, page.upto, batch.clone())
            .await
            .unwrap()
    );
    assert!(
        !store
            .enqueue_deliveries(from, page.upto, batch)
            .await
            .unwrap()
    );
    assert_eq!(store.log_cursors().await.unwrap(), page.upto);
    let due = store.due_deliveries(5, 10).await.unwrap();
    assert_eq!(due.len(), 1, "only endpoints that exist get deliveries");
    assert_eq!(store.next_delivery_after(5).await.unwrap(), None);

    // An attempt is recorded once (by the attempt count it expects).
    let d = &due[0];
    let outcome = AttemptOutcome {
        attempt: AttemptRow {
            delivery_id: d.id,
            n: 1,
            at: 5,
            status: Some(500),
            error: Some("HTTP 500".into()),
            duration_ms: 3,
        },
        status: "pending".into(),
        failures: 1,
        next_at: 10,
    };
    assert!(store.record_attempt(outcome.clone()).await.unwrap());
    assert!(!store.record_attempt(outcome).await.unwrap());
    assert!(store.due_deliveries(9, 10).await.unwrap().is_empty());
    assert_eq!(store.next_delivery_after(5).await.unwrap(), Some(10));
    let dead = AttemptOutcome {
        attempt: AttemptRow {
            delivery_id: d.id,
            n: 2,
            at: 10,
            status: None,
            error: Some("timed out".into()),
            duration_ms: 10_000,
        },
        status: "dead".into(),
        failures: 2,
        next_at: 10,
    };
    assert!(store.record_attempt(dead).await.unwrap());
    assert_eq!(
        store.delivery_counts("wh_a").await.unwrap(),
        [("dead".to_string(), 1)]
    );
    let attempts = store.attempts(&[d.id]).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.n).collect::<Vec<_>>(), [1, 2]);
    // A replay queues it again with a fresh schedule.
    assert!(store.replay_delivery("wh_a", d.id, 20).await.unwrap());
    assert!(!store.replay_delivery("wh_b", d.id, 20).await.unwrap());
    let again = store.delivery("wh_a", d.id).await.unwrap().unwrap();
    assert_eq!(
        (
            again.status.as_str(),
            again.failures,
            again.attempts,
            again.next_at
        ),
        ("pending", 0, 2, 20)
    );
    // Pending deliveries are never pruned; settled old ones are, attempts with them.
    assert_eq!(store.prune_deliveries(100, 10).await.unwrap(), 0);
    let delivered = AttemptOutcome {
        attempt: AttemptRow {
            delivery_id: d.id,
            n: 3,
            at: 20,
            status: Some(204),
            error: None,
            duration_ms: 2,
        },
        status: "delivered".into(),
        failures: 0,
        next_at: 20,
    };
    assert!(store.record_attempt(delivered).await.unwrap());
    assert_eq!(
        store.prune_deliveries(20, 10).await.unwrap(),
        0,
        "not older"
    );
    assert_eq!(store.prune_deliveries(21, 10).await.unwrap(), 1);
    assert!(store.attempts(&[d.id]).await.unwrap().is_empty());

    // A second endpoint keeps the cursors; deleting one removes its deliveries.
    store.create_webhook(endpoint("wh_b")).await.unwrap();
    assert_eq!(store.log_cursors().await.unwrap(), page.upto);
    assert!(store.delete_webhook("wh_b").await.unwrap());
    assert!(!store.delete_webhook("wh_b").await.unwrap());
    assert_eq!(store.webhooks().await.unwrap().len(), 1);
    store.close().await;
}
