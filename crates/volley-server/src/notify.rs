//! Offline delivery: tells a contact, through the configured channels (email,
//! webhook), about messages that reached their conversation while they were away.
//!
//! A proactive turn (a wait's follow-up, a campaign's first message) schedules a
//! `notify` timer with the conversation's other timers; any input from the participant
//! replaces it. When it fires, the messages after the last one a client acknowledged
//! are sent; if a client has acknowledged them all by then, nothing is sent.

use std::time::Duration;

use serde_json::Value;
use volley_store::TimerRow;

use crate::App;
use crate::channels::{AssistantInfo, FlowInfo, Message, Notification, Recipient};

/// Messages read from the log for one notification (the channels show the latest 20).
const MAX_READ: i64 = 200;
/// Pauses before the retries of a temporary failure (real time: it is the network).
const RETRIES: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(10)];

/// What firing a `notify` timer did.
pub enum Notified {
    /// Sent, not needed, or failed for good: the timer can go.
    Done,
    /// The store could not be read: try again later.
    Retry,
}

/// The notification a timer stands for, or `None` when there is nothing to send.
async fn build(app: &App, timer: &TimerRow) -> Result<Option<Notification>, ()> {
    let Some(conv_id) = timer.conversation_id.as_deref() else {
        return Ok(None);
    };
    let upto = serde_json::from_str::<Value>(&timer.data)
        .ok()
        .and_then(|d| d["upto"].as_i64())
        .unwrap_or(0);
    let seen = match app.convs.get(app, conv_id).await {
        Ok(Some(c)) => c.acked_seq(),
        Ok(None) => return Ok(None),
        Err(_) => return Err(()),
    };
    if seen >= upto {
        return Ok(None);
    }
    let Ok(Some(row)) = app.store.conversation(conv_id).await else {
        return Err(());
    };
    let Ok(Some(contact)) = app.store.contact(&row.contact_id).await else {
        return Err(());
    };
    let flow = app
        .flows
        .version(app.store.as_ref(), &row.flow_id, row.flow_version)
        .await
        .map_err(|_| ())?;
    let from = seen.max(upto - MAX_READ);
    let events = app
        .store
        .events_after(conv_id, from, MAX_READ)
        .await
        .map_err(|_| ())?;
    let messages: Vec<Message> = events
        .iter()
        .filter(|e| e.kind == "message" && e.seq <= upto)
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|d| d["from"] == "bot")
        .filter_map(|d| {
            let text = d["text"].as_str()?;
            Some(Message {
                text: volley_flow::markdown::to_plain(text),
                html: volley_flow::markdown::to_html(text),
            })
        })
        .collect();
    if messages.is_empty() {
        return Ok(None);
    }
    let profile: volley_flow::Contact = serde_json::from_str(&contact.profile).unwrap_or_default();
    let assistant = &flow.flow.assistant;
    Ok(Some(Notification {
        id: Notification::stable_id(conv_id, upto),
        contact: Recipient {
            id: contact.id.clone(),
            name: profile.name,
            email: profile.email,
            external_id: contact.external_id,
        },
        flow: FlowInfo {
            id: flow.id.clone(),
            title: flow.flow.title.clone(),
        },
        conversation_id: conv_id.to_string(),
        assistant: AssistantInfo {
            name: assistant.name.clone(),
            label: assistant.label.clone(),
        },
        messages,
        continue_url: Notification::continue_url(&app.config.base_url(), &flow.id),
    }))
}

/// Fires a `notify` timer: sends through every channel that reaches the contact,
/// retrying temporary failures twice, then deletes the timer.
pub async fn fire(app: &App, timer: &TimerRow) -> Notified {
    let notification = match build(app, timer).await {
        Ok(n) => n,
        Err(()) => return Notified::Retry,
    };
    if let Some(n) = notification.filter(|n| app.channels.reaches(n)) {
        for delivery in app.channels.send_all(&n).await {
            let mut result = delivery.result;
            for pause in RETRIES {
                match &result {
                    Err(e) if e.is_temporary() => {
                        tokio::time::sleep(pause).await;
                        result = app.channels.send_to(delivery.channel, &n).await;
                    }
                    _ => break,
                }
            }
            if let Err(e) = result {
                tracing::warn!(channel = delivery.channel, conversation = %n.conversation_id, %e, "notification not delivered");
            }
        }
    }
    match app.store.delete_timer(timer.id).await {
        Ok(_) => Notified::Done,
        Err(_) => Notified::Retry,
    }
}
