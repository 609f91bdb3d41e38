//! Server configuration: defaults, an optional TOML file, environment variables and
//! flags, in increasing precedence (the CLI merges them into one [`Config`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://path.db` (created if missing).
    pub database: String,
    /// A directory of flow files published at start-up.
    pub flows: Option<PathBuf>,
    /// Publish the built-in demo flows at start-up.
    pub demo: bool,
    /// The URL people reach this server at (for embed snippets and links).
    pub public_url: Option<String>,
    /// Admin API key; generated and printed once on first start when absent.
    pub admin_key: Option<String>,
    /// Email of the admin account created on first start (when there is no user).
    pub admin_email: String,
    /// Secret for verifying signed identities (HMAC-SHA256 of the user id).
    pub identity_secret: Option<String>,
    /// Human-like pacing of bot messages (turn off for load tests).
    pub pacing: bool,
    /// fsync every commit (SQLite `synchronous=FULL`).
    pub durable: bool,
    /// JSON logs instead of human-readable ones.
    pub log_json: bool,
    /// Let flows' HTTP steps reach private, loopback and link-local addresses.
    pub allow_private_http: bool,
    pub limits: Limits,
    /// Notification channels (email, webhook): all off by default.
    pub channels: ChannelsConfig,
    /// Hand-off to people: queues, business hours, CSAT.
    pub handoff: HandoffConfig,
    /// Outbound webhooks (docs/webhooks.md): how they are sent.
    pub webhooks: WebhooksConfig,
}

/// The `[webhooks]` table: limits of outbound webhook requests. Endpoints themselves are
/// managed through the API (`/api/webhooks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Longest time one attempt may take, the answer included (milliseconds).
    pub timeout_ms: u64,
    /// Bytes of an answer read (for the delivery log); the rest is not read.
    pub response_bytes: usize,
    /// Attempts in flight at once (more wait their turn).
    pub concurrency: usize,
    /// Days delivered and dead-lettered deliveries stay in the delivery log (0: for
    /// ever).
    pub retention_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 10_000,
            response_bytes: 64 * 1024,
            concurrency: 16,
            retention_days: 30,
        }
    }
}

/// The `[handoff]` table (docs/handoff.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// The queue of a hand-off that names none.
    pub default_queue: String,
    /// Ask the participant for a 1–5 rating when a person resolves the conversation.
    pub csat: bool,
    /// The CSAT question.
    pub csat_question: String,
    /// Queues with settings of their own; any other queue name works with defaults.
    pub queues: std::collections::BTreeMap<String, QueueConfig>,
}

/// `[handoff.queues.<name>]`: a queue with its own business hours.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Shown to agents.
    pub title: Option<String>,
    /// When people answer this queue (`timezone`, `hours`, `closed`, as flows'
    /// calendars); outside them participants are told when to expect a reply.
    pub hours: Option<volley_flow::Calendar>,
    /// Overrides `[handoff] csat` for this queue.
    pub csat: Option<bool>,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            default_queue: "support".into(),
            csat: true,
            csat_question: "How would you rate the help you received?".into(),
            queues: Default::default(),
        }
    }
}

/// Every limit the server enforces (documented in docs/protocol.md and docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent WebSocket connections.
    pub max_connections: usize,
    /// Largest accepted WebSocket frame or HTTP body, in bytes.
    pub max_frame_bytes: usize,
    /// Outgoing frames queued per connection before the client is disconnected.
    pub queue_frames: usize,
    /// Messages per second per connection (sustained).
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst.
    pub message_burst: u32,
    /// Seconds to send `hello` after connecting.
    pub hello_timeout_secs: u64,
    /// Seconds without any frame from the client before closing.
    pub idle_timeout_secs: u64,
    /// Seconds between server pings.
    pub ping_interval_secs: u64,
    /// Longest long-poll wait, in seconds.
    pub max_poll_secs: u64,
    /// Conversations kept in memory without any activity or subscriber (seconds).
    pub idle_conversation_secs: u64,
    /// Largest response body an HTTP step reads, in bytes.
    pub http_response_bytes: usize,
    /// Longest timeout an HTTP step may ask for, in seconds.
    pub http_timeout_secs: u64,
    /// HTTP step requests in flight at once (more wait their turn).
    pub http_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_frame_bytes: 16 * 1024,
            queue_frames: 512,
            messages_per_second: 20,
            message_burst: 40,
            hello_timeout_secs: 10,
            idle_timeout_secs: 90,
            ping_interval_secs: 25,
            max_poll_secs: 30,
            idle_conversation_secs: 600,
            http_response_bytes: 1024 * 1024,
            http_timeout_secs: 30,
            http_concurrency: 64,
        }
    }
}

/// The `[channels]` table: how contacts are notified of messages while away (see
/// `channels.rs` and docs/operations.md). A channel is on when its `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// How long proactive messages (a wait's follow-up, a campaign's first message)
    /// may stay unseen before the contact is notified (milliseconds).
    pub notify_after_ms: u64,
    pub email: EmailConfig,
    pub webhook: WebhookConfig,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            notify_after_ms: 120_000,
            email: EmailConfig::default(),
            webhook: WebhookConfig::default(),
        }
    }
}

/// `[channels.email]`: notifications by email through an SMTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://host[:port]` (no TLS: a local relay), `smtp://host?tls=required`
    /// (STARTTLS), `smtps://host` (TLS); `user:password@` may be part of it. Unset: off.
    pub url: Option<String>,
    /// SMTP user name (overrides the URL's).
    pub username: Option<String>,
    /// SMTP password (overrides the URL's).
    pub password: Option<String>,
    /// The sender, `noreply@example.com` or `Example <noreply@example.com>`; required.
    pub from: Option<String>,
    /// Where replies go, if not to `from`.
    pub reply_to: Option<String>,
    /// Longest time one email may take to send, connecting included (milliseconds).
    pub timeout_ms: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            url: None,
            username: None,
            password: None,
            from: None,
            reply_to: None,
            timeout_ms: 30_000,
        }
    }
}

/// `[channels.webhook]`: notifications POSTed as signed JSON (Standard Webhooks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The `http://` or `https://` endpoint. Unset: off.
    pub url: Option<String>,
    /// Signing secret (`whsec_` + base64, or any other string used as is); required.
    pub secret: Option<String>,
    /// Longest time one request may take, response included (milliseconds).
    pub timeout_ms: u64,
    /// Response bytes read (for the error message); the rest is not read.
    pub response_bytes: usize,
    /// Let this URL be a private, loopback or link-local address (also allowed by
    /// `allow_private_http`).
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: None,
            timeout_ms: 10_000,
            response_bytes: 64 * 1024,
            allow_private: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            database: "sqlite://volley.db".into(),
            flows: None,
            demo: true,
            public_url: None,
            admin_key: None,
            admin_email: "admin@localhost".into(),
            identity_secret: None,
            pacing: true,
            durable: true,
            log_json: false,
            allow_private_http: false,
            limits: Limits::default(),
            channels: ChannelsConfig::default(),
            handoff: HandoffConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML configuration file (unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The base URL shown to people: `public_url`, else derived from `listen`.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}
