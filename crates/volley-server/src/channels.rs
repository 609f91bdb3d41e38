//! Channel adapters: how a contact is told, outside the chat, that messages are waiting
//! for them (offline delivery) — by email through an SMTP relay or by a signed webhook.
//!
//! The scheduler decides *when* to notify and builds a [`Notification`]; this module only
//! knows *how* to send one. Every send has a deadline and size limits, and a failure is
//! either [`ChannelError::Temporary`] (retry later, with the same notification `id`) or
//! [`ChannelError::Permanent`] (give up). Channels are configured in `[channels]` (see
//! docs/operations.md); each is off until its `url` is set.

use std::fmt::Write as _;
use std::time::Duration;
use volley_flow::markdown::escape_html;

use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::config::{ChannelsConfig, EmailConfig, WebhookConfig};
use crate::webhooks::{self, PostError, Signer};

/// Messages a notification shows: the latest ones; earlier ones are only counted.
pub const MAX_MESSAGES: usize = 20;

/// Characters kept from a name or title placed in an email header.
const MAX_HEADER_CHARS: usize = 100;

/// Counter of notifications by `channel` and `result` (`sent`, `skipped`, `temporary`,
/// `permanent`).
const NOTIFICATIONS_METRIC: &str = "volley_notifications_total";

/// What to tell a contact: the messages that reached them while they were away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable across retries of the same notification (idempotency key): the webhook's
    /// `webhook-id` and the email's `Message-ID`. See [`Notification::stable_id`].
    pub id: String,
    pub contact: Recipient,
    pub flow: FlowInfo,
    pub conversation_id: String,
    pub assistant: AssistantInfo,
    /// The new messages, oldest first (at most [`MAX_MESSAGES`], the latest, are shown).
    pub messages: Vec<Message>,
    /// Where the participant continues, e.g. `{public_url}/f/{flow}`
    /// (see [`Notification::continue_url`]).
    pub continue_url: String,
}

/// The contact being notified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub id: String,
    /// Display name, if known.
    pub name: Option<String>,
    /// Without one, the email channel skips this contact.
    pub email: Option<String>,
    /// The user id of a signed identity, if any.
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowInfo {
    pub id: String,
    pub title: String,
}

/// Who wrote the messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantInfo {
    /// The flow's assistant name; without one, the flow's title stands in.
    pub name: Option<String>,
    /// The honest automation label, e.g. "Automated assistant".
    pub label: String,
}

/// One new message, as plain text and as the server's safe HTML rendering of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    pub html: String,
}

impl Notification {
    /// An id that is the same every time the same messages are notified: derived from
    /// the conversation and the `seq` of the last message included.
    pub fn stable_id(conversation_id: &str, last_seq: i64) -> String {
        let digest = Sha256::digest(format!("{conversation_id}\n{last_seq}").as_bytes());
        format!("ntf_{}", hex::encode(&digest[..16]))
    }

    /// The full-page chat of a flow under `base_url` (e.g. [`crate::Config::base_url`]).
    pub fn continue_url(base_url: &str, flow_id: &str) -> String {
        let mut url = format!("{}/f/", base_url.trim_end_matches('/'));
        for b in flow_id.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                url.push(char::from(b));
            } else {
                let _ = write!(url, "%{b:02X}");
            }
        }
        url
    }

    /// The name the messages come from: the assistant's, else the flow's title.
    pub fn sender(&self) -> &str {
        match self.assistant.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name,
            _ => &self.flow.title,
        }
    }

    /// The messages shown (the latest [`MAX_MESSAGES`]) and how many earlier ones are not.
    fn shown(&self) -> (&[Message], usize) {
        let skip = self.messages.len().saturating_sub(MAX_MESSAGES);
        (&self.messages[skip..], skip)
    }
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Sending again will fail the same way: an invalid or refused address, an HTTP
    /// 4xx answer, a permanent (5xx) SMTP reply, a misconfigured channel.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// Sending again later may work: a timeout, a refused connection, an HTTP 5xx
    /// (or 408, 425, 429) answer, a transient (4xx) SMTP reply.
    #[error("temporary failure: {0}")]
    Temporary(String),
}

impl ChannelError {
    /// Whether a retry (with the same notification) may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, ChannelError::Temporary(_))
    }
}

/// One way of reaching a contact.
#[async_trait]
pub trait Channel: Send + Sync {
    /// `"email"`, `"webhook"`.
    fn name(&self) -> &'static str;

    /// Whether this channel can reach the notification's contact (email needs an
    /// address). [`Channel::send`] to a contact it cannot reach does nothing.
    fn reaches(&self, _notification: &Notification) -> bool {
        true
    }

    /// Sends the notification once, within the channel's timeout.
    async fn send(&self, notification: &Notification) -> Result<(), ChannelError>;
}

/// The outcome of one channel in [`Channels::send_all`].
#[derive(Debug)]
pub struct Delivery {
    pub channel: &'static str,
    pub result: Result<(), ChannelError>,
}

/// The enabled channels.
#[derive(Default)]
pub struct Channels {
    list: Vec<Box<dyn Channel>>,
}

impl Channels {
    /// The channels the configuration enables (none by default). Fails on an invalid
    /// setting, so that a misconfigured channel stops the start.
    pub fn from_config(
        config: &ChannelsConfig,
        allow_private_http: bool,
    ) -> Result<Channels, String> {
        let mut list: Vec<Box<dyn Channel>> = Vec::new();
        if config.email.url.is_some() {
            list.push(Box::new(Email::new(&config.email)?));
        }
        if config.webhook.url.is_some() {
            list.push(Box::new(Webhook::new(&config.webhook, allow_private_http)?));
        }
        Ok(Channels { list })
    }

    /// A registry of the given channels (e.g. a channel of one's own in a test).
    pub fn new(list: Vec<Box<dyn Channel>>) -> Channels {
        Channels { list }
    }

    /// No channel is enabled.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The names of the enabled channels, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|c| c.name()).collect()
    }

    /// The enabled channel with this name.
    pub fn get(&self, name: &str) -> Option<&dyn Channel> {
        self.list
            .iter()
            .find(|c| c.name() == name)
            .map(|c| c.as_ref())
    }

    /// Whether any enabled channel can reach the notification's contact.
    pub fn reaches(&self, notification: &Notification) -> bool {
        self.list.iter().any(|c| c.reaches(notification))
    }

    /// Sends through every enabled channel that reaches the contact, concurrently; one
    /// [`Delivery`] per channel tried. Retry the temporary failures with
    /// [`Channels::send_to`], naming the channel, with the same notification.
    pub async fn send_all(&self, notification: &Notification) -> Vec<Delivery> {
        let sends = self
            .list
            .iter()
            .filter(|c| c.reaches(notification))
            .map(|c| async move {
                Delivery {
                    channel: c.name(),
                    result: send_counted(c.as_ref(), notification).await,
                }
            });
        futures_util::future::join_all(sends).await
    }

    /// Sends through one channel by name. A channel that is not enabled (any more) is a
    /// permanent failure; a contact it cannot reach is skipped (`Ok`).
    pub async fn send_to(
        &self,
        channel: &str,
        notification: &Notification,
    ) -> Result<(), ChannelError> {
        match self.get(channel) {
            Some(c) => send_counted(c, notification).await,
            None => Err(ChannelError::Permanent(format!(
                "the {channel} channel is not enabled"
            ))),
        }
    }
}

async fn send_counted(
    channel: &dyn Channel,
    notification: &Notification,
) -> Result<(), ChannelError> {
    let (result, label) = if channel.reaches(notification) {
        let result = channel.send(notification).await;
        let label = match &result {
            Ok(()) => "sent",
            Err(ChannelError::Temporary(_)) => "temporary",
            Err(ChannelError::Permanent(_)) => "permanent",
        };
        (result, label)
    } else {
        (Ok(()), "skipped")
    };
    metrics::counter!(NOTIFICATIONS_METRIC, "channel" => channel.name(), "result" => label)
        .increment(1);
    result
}

/// Text safe for one email header: control characters (CR, LF, …) become spaces, runs
/// of white space one space, and it is cut to [`MAX_HEADER_CHARS`].
fn header_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_HEADER_CHARS * 4));
    for word in s
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    match out.char_indices().nth(MAX_HEADER_CHARS) {
        Some((cut, _)) => {
            out.truncate(cut);
            out.push('…');
            out
        }
        None => out,
    }
}

/// Notifications by email, through an SMTP relay (lettre; TLS by rustls with ring).
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    timeout: Duration,
}

impl Email {
    /// The channel `[channels.email]` describes.
    pub fn new(config: &EmailConfig) -> Result<Email, String> {
        let url = config
            .url
            .as_deref()
            .ok_or("channels.email.url is not set")?;
        let from: Mailbox = config
            .from
            .as_deref()
            .ok_or("channels.email.from is required with channels.email.url")?
            .parse()
            .map_err(|e| format!("channels.email.from: {e}"))?;
        let reply_to = match config.reply_to.as_deref() {
            Some(r) => Some(
                r.parse::<Mailbox>()
                    .map_err(|e| format!("channels.email.reply_to: {e}"))?,
            ),
            None => None,
        };
        if config.timeout_ms == 0 {
            return Err("channels.email.timeout_ms must be above 0".into());
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("channels.email.url: {e}"))?
            .timeout(Some(timeout));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            (None, None) => {}
            _ => {
                return Err(
                    "channels.email: set both username and password, or neither (credentials \
                     may also be part of the URL)"
                        .into(),
                );
            }
        }
        // lettre would send a password over plain SMTP; refuse that.
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("channels.email.url: {e}"))?;
        let encrypted = parsed.scheme() == "smtps"
            || parsed
                .query_pairs()
                .any(|(k, v)| k == "tls" && v == "required");
        if !encrypted && (config.username.is_some() || parsed.password().is_some()) {
            return Err(
                "channels.email: a password is only sent over TLS: use smtps:// or \
                 smtp://…?tls=required"
                    .into(),
            );
        }
        Ok(Email {
            transport: builder.build(),
            from,
            reply_to,
            timeout,
        })
    }

    /// The email for one notification, to `address`.
    fn message(&self, n: &Notification, address: &str) -> Result<lettre::Message, ChannelError> {
        let address: Address = address
            .trim()
            .parse()
            .map_err(|e| ChannelError::Permanent(format!("invalid email address: {e}")))?;
        let name = n
            .contact
            .name
            .as_deref()
            .map(header_text)
            .filter(|s| !s.is_empty());
        let sender = header_text(n.sender());
        let from = match self.from.name {
            Some(_) => self.from.clone(),
            None => Mailbox::new(Some(sender.clone()), self.from.email.clone()),
        };
        let message_id: String =
            n.id.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(128)
                .collect();
        let mut builder = lettre::Message::builder()
            .from(from)
            .to(Mailbox::new(name, address))
            .subject(format!("New message from {sender}"))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ));
        if !message_id.is_empty() {
            builder =
                builder.message_id(Some(format!("<{message_id}@{}>", self.from.email.domain())));
        }
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                email_text(n),
                email_html(n),
            ))
            .map_err(|e| ChannelError::Permanent(format!("cannot build the email: {e}")))
    }
}

fn email_text(n: &Notification) -> String {
    let (shown, earlier) = n.shown();
    let mut out = format!(
        "{} sent you a new message in \"{}\":\n\n",
        header_text(n.sender()),
        header_text(&n.flow.title)
    );
    if earlier > 0 {
        let _ = writeln!(out, "({earlier} earlier messages not shown)\n");
    }
    for m in shown {
        out.push_str(m.text.trim());
        out.push_str("\n\n");
    }
    let _ = write!(
        out,
        "Continue the conversation: {}\n\n-- \nThis message was sent by an automated \
         assistant ({}), not by a person.\n",
        n.continue_url, n.assistant.label
    );
    out
}

fn email_html(n: &Notification) -> String {
    let (shown, earlier) = n.shown();
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n",
    );
    let _ = writeln!(
        out,
        "<p><strong>{}</strong> sent you a new message in <em>{}</em>:</p>",
        escape_html(n.sender()),
        escape_html(&n.flow.title)
    );
    if earlier > 0 {
        let _ = writeln!(out, "<p>({earlier} earlier messages not shown)</p>");
    }
    for m in shown {
        // Already safe: the server's Markdown rendering escapes everything else.
        let _ = writeln!(
            out,
            "<div style=\"border-left: 3px solid #ccc; padding-left: 12px; margin: 12px 0\">{}</div>",
            m.html
        );
    }
    let _ = write!(
        out,
        "<p><a href=\"{}\">Continue the conversation</a></p>\n\
         <p style=\"color: #666; font-size: 12px\">This message was sent by an automated \
         assistant ({}), not by a person.</p>\n</body></html>\n",
        escape_html(&n.continue_url),
        escape_html(&n.assistant.label)
    );
    out
}

/// Sorts an SMTP failure: permanent replies (5xx) and client-side errors are permanent;
/// transient replies (4xx), timeouts, connection, network and TLS errors are temporary.
fn smtp_error(e: &lettre::transport::smtp::Error) -> ChannelError {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    if e.is_permanent() || e.is_client() {
        ChannelError::Permanent(msg)
    } else {
        ChannelError::Temporary(msg)
    }
}

#[async_trait]
impl Channel for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn reaches(&self, n: &Notification) -> bool {
        n.contact
            .email
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty())
    }

    async fn send(&self, n: &Notification) -> Result<(), ChannelError> {
        let address = match n.contact.email.as_deref() {
            Some(a) if self.reaches(n) => a,
            _ => return Ok(()),
        };
        let message = self.message(n, address)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(smtp_error(&e)),
            Err(_) => Err(ChannelError::Temporary(format!(
                "timed out after {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// Notifications POSTed as JSON to one URL, signed per Standard Webhooks (the signing
/// and the POST are `webhooks.rs`'s, shared with the outbound webhooks).
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    signer: Signer,
    timeout: Duration,
    response_bytes: usize,
    allow_private: bool,
}

/// The webhook body: a Standard Webhooks envelope around the notification.
#[derive(Serialize)]
struct Envelope<'a> {
    r#type: &'static str,
    timestamp: String,
    data: &'a Notification,
}

impl Webhook {
    /// The channel `[channels.webhook]` describes; private addresses are allowed with
    /// `allow_private_http` or the channel's own `allow_private`.
    pub fn new(config: &WebhookConfig, allow_private_http: bool) -> Result<Webhook, String> {
        let url = config
            .url
            .as_deref()
            .ok_or("channels.webhook.url is not set")?;
        let url = reqwest::Url::parse(url).map_err(|e| format!("channels.webhook.url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("channels.webhook.url must be an http:// or https:// URL".into());
        }
        let secret = config
            .secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or("channels.webhook.secret is required with channels.webhook.url")?;
        let signer = Signer::new(secret).map_err(|e| format!("channels.webhook.secret: {e}"))?;
        if config.timeout_ms == 0 {
            return Err("channels.webhook.timeout_ms must be above 0".into());
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let allow_private = allow_private_http || config.allow_private;
        Ok(Webhook {
            client: webhooks::client(allow_private, timeout)?,
            url,
            signer,
            timeout,
            response_bytes: config.response_bytes,
            allow_private,
        })
    }
}

#[async_trait]
impl Channel for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, n: &Notification) -> Result<(), ChannelError> {
        // The receiver checks the signature's timestamp against its own clock, so this is
        // the wall clock, not the server's injectable one.
        let now = jiff::Timestamp::now();
        let now = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        let body = serde_json::to_vec(&Envelope {
            r#type: "notification",
            timestamp: now.to_string(),
            data: n,
        })
        .map_err(|e| ChannelError::Permanent(format!("cannot encode the notification: {e}")))?;
        let signed = webhooks::Signed {
            url: &self.url,
            signer: &self.signer,
            also: None,
            id: &n.id,
            timestamp: now.as_second(),
            body,
        };
        let answer = webhooks::post_signed(
            &self.client,
            signed,
            self.allow_private,
            self.timeout,
            self.response_bytes,
        )
        .await
        .map_err(|e| match e {
            // A refused (private) destination or an invalid request fails the same way
            // every time; anything else (timeout, connection) may pass later.
            PostError::Refused(m) | PostError::Invalid(m) => ChannelError::Permanent(m),
            PostError::Failed(m) => ChannelError::Temporary(m),
        })?;
        let status = answer.status;
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
            Err(ChannelError::Temporary(answer.describe()))
        } else {
            Err(ChannelError::Permanent(answer.describe()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_one_short_line() {
        assert_eq!(header_text("Ann\r\nBcc: x@y"), "Ann Bcc: x@y");
        assert_eq!(header_text("  a\t\u{0}b  "), "a b");
        let long = "é".repeat(300);
        assert_eq!(header_text(&long).chars().count(), MAX_HEADER_CHARS + 1);
    }

    #[test]
    fn ids_and_urls_are_stable_and_encoded() {
        assert_eq!(
            Notification::stable_id("cv_1", 7),
            Notification::stable_id("cv_1", 7)
        );
        assert_ne!(
            Notification::stable_id("cv_1", 7),
            Notification::stable_id("cv_1", 8)
        );
        assert_eq!(
            Notification::continue_url("https://chat.example.com/", "coffee order/x"),
            "https://chat.example.com/f/coffee%20order%2Fx"
        );
    }
}
