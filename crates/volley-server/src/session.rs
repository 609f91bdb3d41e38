//! Opening a participant session (shared by the WebSocket and HTTP APIs): resolve
//! the contact, then resume or start the conversation with the requested flow.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::App;
use crate::contacts::{self, Hints, Identity};
use crate::conversation::Conv;
use crate::error::ApiError;
use crate::flows::Published;

/// What a client asks for when it opens a session.
pub struct Open<'a> {
    pub flow: &'a str,
    pub token: Option<&'a str>,
    pub identity: Option<&'a Identity>,
    pub conversation: Option<&'a str>,
    pub hints: Hints,
    pub restart: bool,
}

pub struct Session {
    pub contact_id: String,
    pub new_token: Option<String>,
    pub conv: Arc<Conv>,
    pub flow: Arc<Published>,
}

/// The `welcome` payload.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Welcome {
    pub contact: String,
    pub conversation: String,
    /// Present only when a new anonymous contact was created: the client keeps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub flow: FlowInfo,
    /// The conversation's latest sequence number.
    pub last_seq: i64,
    /// `active`, `waiting`, `human` or `ended`.
    pub status: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowInfo {
    pub id: String,
    pub title: String,
    pub version: i64,
    #[schema(value_type = Object)]
    pub assistant: volley_flow::Assistant,
}

impl Session {
    pub async fn welcome(&self) -> Welcome {
        let (status, last_seq, _) = self.conv.summary().await;
        Welcome {
            contact: self.contact_id.clone(),
            conversation: self.conv.id.clone(),
            token: self.new_token.clone(),
            flow: FlowInfo {
                id: self.flow.id.clone(),
                title: self.flow.flow.title.clone(),
                version: self.flow.version,
                assistant: self.flow.flow.assistant.clone(),
            },
            last_seq,
            status: status.to_string(),
        }
    }
}

/// Resolves the contact and finds or starts the conversation.
pub async fn open(app: &App, req: Open<'_>) -> Result<Session, ApiError> {
    let latest = app.flows.latest(req.flow).ok_or_else(|| {
        ApiError::not_found("unknown-flow", format!("no published flow `{}`", req.flow))
    })?;
    let who = contacts::resolve(app, req.token, req.identity, &req.hints).await?;
    let existing = match (req.restart, req.conversation) {
        (true, _) => None,
        (false, Some(id)) => {
            let conv = app.convs.get(app, id).await?;
            match conv {
                Some(c) if c.contact_id == who.row.id && c.flow_id == latest.id => Some(c),
                _ => {
                    return Err(ApiError::not_found(
                        "unknown-conversation",
                        "no such conversation for this contact",
                    ));
                }
            }
        }
        (false, None) => match app
            .store
            .latest_conversation(&who.row.id, &latest.id)
            .await?
        {
            Some(row) => app.convs.get(app, &row.id).await?,
            None => None,
        },
    };
    let (conv, flow) = match existing {
        Some(conv) => {
            let (_, _, version) = conv.summary().await;
            let flow = app
                .flows
                .version(app.store.as_ref(), &conv.flow_id, version)
                .await?;
            (conv, flow)
        }
        None => (
            app.convs
                .start(
                    app,
                    &who.row.id,
                    who.profile.clone(),
                    latest.clone(),
                    Default::default(),
                )
                .await?,
            latest,
        ),
    };
    Ok(Session {
        contact_id: who.row.id,
        new_token: who.new_token,
        conv,
        flow,
    })
}

/// Visible history after `after`, up to `upto`, in order.
pub async fn history(
    app: &App,
    conv: &Conv,
    after: i64,
    upto: i64,
) -> Result<Vec<Arc<crate::conversation::Delivery>>, ApiError> {
    let mut out = Vec::new();
    let mut cursor = after;
    while cursor < upto {
        let rows = app
            .store
            .events_after(&conv.id, cursor, crate::conversation::PAGE)
            .await?;
        let Some(last) = rows.last() else { break };
        cursor = last.seq;
        out.extend(
            rows.iter()
                .filter(|r| r.seq <= upto)
                .filter_map(crate::conversation::Delivery::from_row)
                .map(Arc::new),
        );
    }
    Ok(out)
}

/// What a subscription yields next.
pub enum Next {
    /// A log event that is due now.
    Event(Arc<crate::conversation::Delivery>),
    /// The assistant starts "typing" the next message.
    Typing,
}

/// A client's view of a conversation: the history it missed, then live events, each
/// delivered when due. Unsubscribes when dropped.
pub struct Subscription {
    pub conv: Arc<Conv>,
    id: u64,
    rx: mpsc::Receiver<Arc<crate::conversation::Delivery>>,
    pending: VecDeque<Arc<crate::conversation::Delivery>>,
    queued_upto: i64,
    typing_for: Option<i64>,
}

impl Subscription {
    /// Subscribes, then reads the history after `after` from the log.
    pub async fn open(app: &App, conv: Arc<Conv>, after: i64) -> Result<Subscription, ApiError> {
        let (tx, rx) = mpsc::channel(app.config.limits.queue_frames);
        let id = app.convs.next_subscriber_id();
        let upto = conv.subscribe(id, tx).await;
        let mut s = Subscription {
            conv,
            id,
            rx,
            pending: VecDeque::new(),
            queued_upto: after,
            typing_for: None,
        };
        for d in history(app, &s.conv, after, upto).await? {
            s.queue(d);
        }
        s.queued_upto = s.queued_upto.max(upto);
        // Waiting for a person: where they stand now, after the history.
        if let Some(frame) = crate::handoff::place_now(app, &s.conv.id) {
            s.queue(Arc::new(crate::conversation::Delivery {
                seq: 0,
                visible_at: 0,
                typing_from: None,
                frame: frame.into(),
            }));
        }
        Ok(s)
    }

    fn queue(&mut self, d: Arc<crate::conversation::Delivery>) {
        // A signal outside the log (seq 0, an agent typing): sent as it comes, after
        // what is already due.
        if d.seq == 0 {
            self.pending.push_back(d);
            return;
        }
        if d.seq > self.queued_upto {
            self.queued_upto = d.seq;
            self.pending.push_back(d);
        }
    }

    /// Events already due, without waiting (long-poll).
    pub fn drain_due(&mut self, now_ms: i64) -> Vec<Arc<crate::conversation::Delivery>> {
        while let Ok(d) = self.rx.try_recv() {
            self.queue(d);
        }
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|d| d.visible_at <= now_ms) {
            out.push(self.pending.pop_front().expect("front exists"));
        }
        out
    }

    /// The next event if it is due now, without waiting.
    pub fn try_due(&mut self, now_ms: i64) -> Option<Arc<crate::conversation::Delivery>> {
        while let Ok(d) = self.rx.try_recv() {
            self.queue(d);
        }
        if self.pending.front().is_some_and(|d| d.visible_at <= now_ms) {
            let d = self.pending.pop_front()?;
            if self.typing_for == Some(d.seq) {
                self.typing_for = None;
            }
            return Some(d);
        }
        None
    }

    /// Whether a typing pause is in progress.
    pub fn typing(&self, now_ms: i64) -> bool {
        self.pending
            .front()
            .and_then(|d| d.typing_from)
            .is_some_and(|t| t <= now_ms)
    }

    /// Waits for the next event to become due (or a typing pause to begin). `None`
    /// when the server dropped this subscriber because it could not keep up.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next(&mut self, app: &App) -> Option<Next> {
        loop {
            let now_ms = app.clock.now_ms();
            let wake = match self.pending.front() {
                Some(d) if d.visible_at <= now_ms => {
                    let d = self.pending.pop_front().expect("front exists");
                    if self.typing_for == Some(d.seq) {
                        self.typing_for = None;
                    }
                    return Some(Next::Event(d));
                }
                Some(d) => match d.typing_from {
                    Some(t) if t <= now_ms && self.typing_for != Some(d.seq) => {
                        self.typing_for = Some(d.seq);
                        return Some(Next::Typing);
                    }
                    Some(t) if t > now_ms => Some(t),
                    _ => Some(d.visible_at),
                },
                None => None,
            };
            let sleep = async {
                match wake {
                    Some(at) => app.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                d = self.rx.recv() => self.queue(d?),
                () = sleep => {}
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.conv.unsubscribe(self.id);
    }
}
