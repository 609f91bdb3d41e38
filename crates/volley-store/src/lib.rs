//! volley-store: where Volley keeps flows, contacts, conversations and their event log.
//!
//! The [`Store`] trait is what the server sees; [`SqliteStore`] is the embedded
//! default. SQL is kept portable (epoch-ms `BIGINT`, `TEXT` ids and JSON) for a
//! PostgreSQL implementation. No business rules live here: callers decide what to
//! write, the store makes it durable and atomic.

mod sqlite;

pub use sqlite::{Backup, SqliteOptions, SqliteStore, backup_sqlite};

/// Milliseconds since the Unix epoch.
pub type Ms = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The conversation moved on since the caller read it (another writer).
    #[error("conversation {0} changed concurrently")]
    Conflict(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("invalid database url `{0}`")]
    Url(String),
    /// A unique value is taken (e.g. a user's email).
    #[error("{0} already exists")]
    Exists(&'static str),
    /// A backup could not be written or failed its check.
    #[error("backup: {0}")]
    Backup(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One published, immutable version of a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowVersion {
    pub flow_id: String,
    pub version: i64,
    pub hash: String,
    pub title: String,
    pub source: String,
    pub created_at: Ms,
}

/// One published, immutable version of an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct EventVersion {
    pub event_id: String,
    pub version: i64,
    pub hash: String,
    pub source: String,
    pub created_at: Ms,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    pub id: String,
    pub external_id: Option<String>,
    /// JSON profile (`volley_flow::Contact` without the id).
    pub profile: String,
    pub created_at: Ms,
    pub updated_at: Ms,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewContact {
    pub id: String,
    pub token_hash: Option<String>,
    pub external_id: Option<String>,
    pub profile: String,
    pub at: Ms,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    pub id: String,
    pub flow_id: String,
    pub flow_version: i64,
    pub contact_id: String,
    pub status: String,
    pub last_seq: i64,
    /// Engine state (JSON) as of `last_seq`.
    pub state: String,
    pub created_at: Ms,
    pub updated_at: Ms,
}

/// An event to append to a conversation's log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub at: Ms,
    /// When a participant may see it (pacing); equal to `at` for bookkeeping events.
    pub visible_at: Ms,
    /// The client message id of a participant input, for idempotent retries.
    pub client_id: Option<String>,
    /// JSON.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub kind: String,
    pub at: Ms,
    pub visible_at: Ms,
    pub client_id: Option<String>,
    pub data: String,
}

/// An atomic write to one conversation: its new events (numbered from
/// `after_seq + 1`), its state snapshot and status. With `create`, the conversation
/// row is inserted (and `after_seq` must be 0).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Append {
    pub conversation_id: String,
    pub after_seq: i64,
    pub events: Vec<NewEvent>,
    pub state: String,
    pub status: String,
    pub at: Ms,
    pub create: Option<NewConversation>,
    /// Replaces the conversation's pending timers with these (`None`: keeps them).
    pub timers: Option<Vec<NewTimer>>,
    /// The timer this append is the firing of. It must still be pending (else the
    /// append fails with `Conflict` and changes nothing) and is deleted with it.
    pub fired_timer: Option<i64>,
    /// Timers that belong to an owner rather than to the conversation (a recurring
    /// campaign's next send), scheduled in the same transaction.
    pub schedule: Vec<NewTimer>,
    /// The conversation's hand-off as it stands after this append (inserted or
    /// replaced in the same transaction).
    pub handoff: Option<HandoffRow>,
}

/// The current state of a conversation's latest hand-off to people (its history is
/// in the log).
#[derive(Debug, Clone, PartialEq, Default, sqlx::FromRow)]
pub struct HandoffRow {
    pub conversation_id: String,
    pub contact_id: String,
    pub flow_id: String,
    pub queue: String,
    /// 0 low, 1 normal, 2 high, 3 urgent.
    pub priority: i64,
    pub reason: Option<String>,
    /// `queued`, `assigned`, `snoozed` or `resolved`.
    pub status: String,
    pub agent_id: Option<String>,
    pub requested_at: Ms,
    pub assigned_at: Option<Ms>,
    pub first_reply_at: Option<Ms>,
    pub last_message_at: Ms,
    /// The latest message's text, shortened.
    pub preview: String,
    pub snoozed_until: Option<Ms>,
    pub resolved_at: Option<Ms>,
    /// Space-separated.
    pub tags: String,
    pub csat: Option<i64>,
    pub updated_at: Ms,
}

/// A saved reply agents insert by its short code.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CannedRow {
    pub id: String,
    pub code: String,
    pub title: String,
    pub body: String,
    pub created_at: Ms,
    pub updated_at: Ms,
}

/// One row of a showing's log (see migration 0008): what happened while an event was
/// watched. `seq` is assigned by the writer of the showing (one per process).
#[derive(Debug, Clone, PartialEq)]
pub struct ShowingRow {
    pub showing_id: String,
    pub seq: i64,
    pub kind: String,
    pub viewer_id: Option<String>,
    /// JSON.
    pub data: String,
    pub at: Ms,
}

/// A viewer registered for a showing.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRow {
    pub id: String,
    pub event_id: String,
    pub showing_id: String,
    pub viewer_id: String,
    pub name: String,
    pub email: Option<String>,
    pub zone: Option<String>,
    /// JSON object of the event's extra registration fields.
    pub fields: String,
    pub registered_at: Ms,
}

/// An offer conversion reported by the seller.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionRow {
    pub id: String,
    pub event_id: String,
    pub showing_id: String,
    pub viewer_id: String,
    pub offer: String,
    pub value: Option<f64>,
    pub order_id: Option<String>,
    pub at: Ms,
}

/// The first answer to a request sent with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentRow {
    /// A hash of the caller's credentials.
    pub caller: String,
    pub key: String,
    /// A hash of the method, path and body of the first request.
    pub request_hash: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub created_at: Ms,
}

/// A timer to schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimer {
    pub due_at: Ms,
    /// What firing it does (`resume`, `timeout`, `expire`, `campaign`, …).
    pub kind: String,
    /// Lateness (ms) beyond which it is too late; `None`: fire however late.
    pub late_after: Option<i64>,
    /// What it belongs to besides a conversation (`campaign:<id>`).
    pub owner: Option<String>,
    /// JSON payload.
    pub data: String,
}

/// A pending timer.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerRow {
    pub id: i64,
    pub due_at: Ms,
    pub kind: String,
    /// The conversation it belongs to, if any.
    pub conversation_id: Option<String>,
    pub late_after: Option<i64>,
    pub owner: Option<String>,
    pub data: String,
}

/// A contact to create or update by its external id (an import).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactUpsert {
    /// Used for a new contact only.
    pub id: String,
    pub external_id: String,
    /// JSON profile, merged into the stored one (its fields replace those stored;
    /// objects merge key by key).
    pub profile: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRow {
    pub id: String,
    pub name: String,
    pub flow_id: String,
    pub spec: String,
    pub status: String,
    pub audience: i64,
    pub cancelled: i64,
    pub paused_at: Option<Ms>,
    pub created_at: Ms,
    pub updated_at: Ms,
}

/// A change of a campaign's status, with what happens to its pending sends.
#[derive(Debug, Clone, PartialEq)]
pub enum CampaignChange {
    /// A campaign whose sends are all written (`planning` → `scheduled`).
    Activate,
    /// Its pending timers are parked far in the future.
    Pause,
    /// Parked timers come back, later by the time spent paused.
    Resume,
    /// Pending timers are deleted (counted as cancelled); also ends a campaign left
    /// `planning` by a crash.
    Cancel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewConversation {
    pub flow_id: String,
    pub flow_version: i64,
    pub contact_id: String,
    /// What started it when not the participant (`campaign:<id>`).
    pub origin: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub created_at: Ms,
}

/// A console account (admin, agent or moderator).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: String,
    /// Lowercased.
    pub email: String,
    pub name: String,
    /// `admin`, `agent` or `moderator`.
    pub role: String,
    /// Argon2id PHC string; `None` until a setup link is used.
    pub password_hash: Option<String>,
    /// Conversations the user handles at once (handoff).
    pub capacity: i64,
    pub disabled: bool,
    pub created_at: Ms,
}

/// Fields of a user to change (`None`: kept).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<String>,
    pub capacity: Option<i64>,
    /// Disabling also deletes the user's sessions (same transaction).
    pub disabled: Option<bool>,
}

/// A console sign-in.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// SHA-256 of the cookie's token.
    pub token_hash: String,
    pub user_id: String,
    pub csrf: String,
    pub created_at: Ms,
    pub expires_at: Ms,
    pub last_seen_at: Ms,
}

/// A one-time setup link (its token hashed) for a user.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupToken {
    pub token_hash: String,
    pub user_id: String,
    pub expires_at: Ms,
}

/// A webhook endpoint (docs/webhooks.md).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// The signing secret, `whsec_` + base64.
    pub secret: String,
    /// Space-separated event types, or `*`.
    pub types: String,
    pub description: String,
    pub created_at: Ms,
    /// Paused: deliveries are queued but not sent.
    pub disabled: bool,
    /// The secret before the last rotation, which also signs until `previous_until`.
    pub previous_secret: Option<String>,
    pub previous_until: Option<Ms>,
}

/// How far the webhook dispatcher has read each log: the largest rowid dispatched of
/// `events`, `showing_log` and `event_registrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogCursors {
    pub events: i64,
    pub showings: i64,
    pub registrations: i64,
}

/// A conversation log entry with its conversation, read by rowid (the outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// The entry's rowid.
    pub position: i64,
    pub conversation_id: String,
    pub flow_id: String,
    pub flow_version: i64,
    pub contact_id: String,
    pub external_id: Option<String>,
    pub origin: Option<String>,
    pub seq: i64,
    pub kind: String,
    pub at: Ms,
    /// When the participant sees it (after its pacing pause).
    pub visible_at: Ms,
    pub data: String,
}

/// A showing-log row read by rowid (the outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedShowing {
    pub position: i64,
    pub row: ShowingRow,
    /// The row's viewer has an earlier row of the same kind in the same showing.
    pub repeat: bool,
}

/// A registration read by rowid (the outbox).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRegistration {
    pub position: i64,
    pub row: RegistrationRow,
}

/// Log rows after some [`LogCursors`], and the cursors they reach.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogPage {
    pub events: Vec<FeedEvent>,
    pub showings: Vec<FeedShowing>,
    pub registrations: Vec<FeedRegistration>,
    /// Past every row returned and every row of the kinds not asked for; below rows
    /// not read yet.
    pub upto: LogCursors,
}

/// Counters to add: `n` and `total` are added to the row of (flow, version, day,
/// metric, key).
#[derive(Debug, Clone, PartialEq)]
pub struct StatDelta {
    pub flow_id: String,
    pub version: i64,
    pub day: i64,
    pub metric: &'static str,
    pub key: String,
    pub n: i64,
    pub total: f64,
}

/// A counter summed over days.
#[derive(Debug, Clone, PartialEq)]
pub struct StatTotal {
    pub metric: String,
    pub key: String,
    pub n: i64,
    pub total: f64,
}

/// A person's reply in a hand-off, and how long the participant had waited for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyRow {
    pub conversation_id: String,
    pub at: Ms,
    pub agent_id: String,
    pub queue: String,
    pub wait_ms: i64,
}

/// What one round of the analytics aggregator writes (see [`Store::apply_stats`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsBatch {
    pub from: i64,
    pub to: i64,
    pub deltas: Vec<StatDelta>,
    /// `(conversation id, state)`, replacing what was saved.
    pub progress: Vec<(String, String)>,
    pub replies: Vec<ReplyRow>,
    /// `(contact id, day)`: the contact was active that day. The first activity of a
    /// contact on a day counts once in its cohort (first day, days since).
    pub activity: Vec<(String, i64)>,
}

/// A message to deliver to an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub endpoint_id: String,
    pub message_id: String,
    pub kind: String,
    pub payload: String,
    /// When it is first due (and created).
    pub at: Ms,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: String,
    pub message_id: String,
    pub kind: String,
    pub payload: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub failures: i64,
    pub next_at: Ms,
    pub created_at: Ms,
    pub updated_at: Ms,
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub delivery_id: i64,
    /// 1 for the first attempt.
    pub n: i64,
    pub at: Ms,
    /// The HTTP status, when an answer came.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The outcome of an attempt, written with it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    pub attempt: AttemptRow,
    /// The delivery's new status.
    pub status: String,
    pub failures: i64,
    pub next_at: Ms,
}

/// Everything the server persists.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Publishes a flow version. When `hash` equals the latest version's hash, nothing
    /// is written and the latest version is returned (`false`); else a new version
    /// (`true`).
    async fn publish_flow(
        &self,
        flow_id: &str,
        title: &str,
        hash: &str,
        source: &str,
        at: Ms,
    ) -> Result<(FlowVersion, bool)>;
    /// The latest version of every flow.
    async fn latest_flows(&self) -> Result<Vec<FlowVersion>>;
    async fn flow_version(&self, flow_id: &str, version: i64) -> Result<Option<FlowVersion>>;
    /// All versions of a flow, oldest first (without sources).
    async fn flow_versions(&self, flow_id: &str) -> Result<Vec<FlowVersion>>;

    /// Publishes an event version, like [`Store::publish_flow`]: when `hash` equals the
    /// latest version's hash nothing is written and the latest is returned (`false`).
    async fn publish_event(
        &self,
        event_id: &str,
        hash: &str,
        source: &str,
        at: Ms,
    ) -> Result<(EventVersion, bool)>;
    /// All versions of an event, oldest first.
    async fn event_versions(&self, event_id: &str) -> Result<Vec<EventVersion>>;

    async fn create_contact(&self, contact: NewContact) -> Result<()>;
    async fn contact(&self, id: &str) -> Result<Option<ContactRow>>;
    /// The contacts of these ids that exist (in no particular order): one read for a
    /// batch of campaign sends.
    async fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRow>>;
    async fn contact_by_token(&self, token_hash: &str) -> Result<Option<ContactRow>>;
    async fn contact_by_external_id(&self, external_id: &str) -> Result<Option<ContactRow>>;
    async fn update_contact_profile(&self, id: &str, profile: &str, at: Ms) -> Result<()>;

    async fn conversation(&self, id: &str) -> Result<Option<ConversationRow>>;
    /// Ids of conversations waiting for an HTTP step's response (status `calling`).
    async fn calling_conversations(&self) -> Result<Vec<String>>;
    /// The most recently updated conversation of a contact with a flow.
    async fn latest_conversation(
        &self,
        contact_id: &str,
        flow_id: &str,
    ) -> Result<Option<ConversationRow>>;
    /// Appends atomically; concurrent appends from many conversations are committed
    /// together (group commit). Returns once durable, with the ids of the timers it
    /// scheduled (in order).
    async fn append(&self, append: Append) -> Result<Vec<i64>>;
    async fn events_after(
        &self,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>>;
    /// The sequence number of the input with this client message id, if recorded.
    async fn client_message(&self, conversation_id: &str, client_id: &str) -> Result<Option<i64>>;

    async fn insert_api_key(
        &self,
        id: &str,
        hash: &str,
        name: &str,
        scopes: &str,
        at: Ms,
    ) -> Result<()>;
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>>;
    async fn api_key_count(&self) -> Result<i64>;
    /// Every API key, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRow>>;
    /// `false` if there was no such key.
    async fn delete_api_key(&self, id: &str) -> Result<bool>;

    /// Creates a user, with its first setup link if any, in one transaction. A taken
    /// email is `StoreError::Exists("email")`.
    async fn create_user(&self, user: UserRow, setup: Option<SetupToken>) -> Result<()>;
    async fn user(&self, id: &str) -> Result<Option<UserRow>>;
    /// By lowercased email.
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>>;
    /// Every user, oldest first.
    async fn users(&self) -> Result<Vec<UserRow>>;
    async fn user_count(&self) -> Result<i64>;
    /// `false` if there is no such user.
    async fn update_user(&self, id: &str, change: UserChange) -> Result<bool>;
    /// Replaces the user's setup links with this one; with `end_sessions`, also deletes
    /// the user's sessions (a password reset).
    async fn replace_setup_token(&self, token: SetupToken, end_sessions: bool) -> Result<()>;
    /// The user of a setup token that has not expired at `now`.
    async fn setup_token_user(&self, token_hash: &str, now: Ms) -> Result<Option<UserRow>>;
    /// Uses a setup token once, atomically: deletes it (it must still exist, belong to
    /// `session.user_id` and not have expired at `session.created_at`), sets the
    /// password of the (enabled) user, replaces the user's sessions with `session`.
    /// `false` (and nothing written) when the token cannot be used.
    async fn use_setup_token(
        &self,
        token_hash: &str,
        password_hash: &str,
        session: SessionRow,
    ) -> Result<bool>;

    /// Creates a session; the user's sessions that expired (`expires_at` passed, or
    /// idle since before `idle_before`) are deleted with it.
    async fn create_session(&self, session: SessionRow, idle_before: Ms) -> Result<()>;
    /// A session with its user.
    async fn session(&self, token_hash: &str) -> Result<Option<(SessionRow, UserRow)>>;
    async fn touch_session(&self, token_hash: &str, at: Ms) -> Result<()>;
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
    /// Deletes every session of a user; returns how many.
    async fn delete_user_sessions(&self, user_id: &str) -> Result<i64>;

    /// Schedules timers that belong to no conversation; returns their ids.
    async fn schedule_timers(&self, timers: Vec<NewTimer>) -> Result<Vec<i64>>;
    /// Deletes a pending timer; `false` if it was not pending (fired or cancelled).
    async fn delete_timer(&self, id: i64) -> Result<bool>;
    /// Pending timers due at or before `until`, ordered by (`due_at`, `id`), after the
    /// cursor (`due_at`, `id`) exclusive; at most `limit`.
    async fn timers_due(&self, until: Ms, after: (Ms, i64), limit: i64) -> Result<Vec<TimerRow>>;
    /// How many timers are pending.
    async fn pending_timers(&self) -> Result<i64>;

    /// Contacts in id order after `after_id`, at most `limit` (audience scans).
    async fn contacts_after(&self, after_id: &str, limit: i64) -> Result<Vec<ContactRow>>;
    /// Creates or updates contacts by external id, in one transaction; returns how
    /// many were created.
    async fn upsert_contacts(&self, contacts: Vec<ContactUpsert>, at: Ms) -> Result<i64>;

    /// Creates a campaign with its first sends, in one transaction.
    async fn create_campaign(&self, campaign: CampaignRow, sends: Vec<NewTimer>) -> Result<()>;
    async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>>;
    async fn campaigns(&self) -> Result<Vec<CampaignRow>>;
    /// Pauses, resumes or cancels a campaign and its pending sends, in one
    /// transaction. `false` when the change does not apply to its status.
    async fn change_campaign(&self, id: &str, change: CampaignChange, at: Ms) -> Result<bool>;
    /// Pending timers of an owner, counted by `bucket_ms`-wide buckets of due time.
    async fn owner_timers_histogram(&self, owner: &str, bucket_ms: i64) -> Result<Vec<(Ms, i64)>>;
    /// Conversations started by `origin`.
    async fn conversations_by_origin(&self, origin: &str) -> Result<i64>;

    /// Hand-offs not resolved (the desk loads them at start-up).
    async fn open_handoffs(&self) -> Result<Vec<HandoffRow>>;
    async fn handoff(&self, conversation_id: &str) -> Result<Option<HandoffRow>>;
    /// Resolved hand-offs, most recent first, resolved before `before` (ms).
    async fn resolved_handoffs(&self, before: Ms, limit: i64) -> Result<Vec<HandoffRow>>;
    /// A contact's hand-offs, most recent first.
    async fn contact_handoffs(&self, contact_id: &str, limit: i64) -> Result<Vec<HandoffRow>>;
    /// A contact's conversations, most recent first.
    async fn contact_conversations(
        &self,
        contact_id: &str,
        limit: i64,
    ) -> Result<Vec<ConversationRow>>;
    async fn canned_responses(&self) -> Result<Vec<CannedRow>>;
    /// Inserts or replaces (by id) a canned response; `false` when its code is taken
    /// by another.
    async fn put_canned(&self, row: CannedRow) -> Result<bool>;
    async fn delete_canned(&self, id: &str) -> Result<bool>;
    /// `(user id, queue)` pairs: the queues each agent serves.
    async fn agent_queues(&self) -> Result<Vec<(String, String)>>;
    /// Replaces the queues an agent serves (empty: every queue).
    async fn set_agent_queues(&self, user_id: &str, queues: Vec<String>) -> Result<()>;

    // Webhooks (docs/webhooks.md).
    /// A count that changes after every commit that may have added log rows
    /// (conversation entries, showing-log rows, registrations): the webhook dispatcher
    /// waits on it.
    fn log_written(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Adds an endpoint. When it is the only one, the log cursors move to the ends of
    /// the logs in the same transaction (nothing was being dispatched).
    async fn create_webhook(&self, row: WebhookRow) -> Result<()>;
    /// Every endpoint, oldest first.
    async fn webhooks(&self) -> Result<Vec<WebhookRow>>;
    /// Deletes an endpoint with its deliveries; `false` if there was none.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;
    /// Replaces an endpoint's settings (url, secrets, types, description, disabled);
    /// `false` if there is no such endpoint.
    async fn update_webhook(&self, row: WebhookRow) -> Result<bool>;
    async fn log_cursors(&self) -> Result<LogCursors>;
    /// Log rows after `after`, in rowid order, at most `limit` of each log: conversation
    /// entries that are the first of their conversation or of `event_kinds`, showing-log
    /// rows of `showing_kinds`, every registration. With `limit` 0, nothing is read and
    /// `upto` is where the logs end.
    async fn log_since(
        &self,
        after: LogCursors,
        event_kinds: &[&str],
        showing_kinds: &[&str],
        limit: i64,
    ) -> Result<LogPage>;
    /// In one transaction: inserts the deliveries (skipping those already there or whose
    /// endpoint is gone) and moves the cursors from `from` to `to`. `false` (and
    /// nothing written) when the cursors are no longer at `from`.
    async fn enqueue_deliveries(
        &self,
        from: LogCursors,
        to: LogCursors,
        deliveries: Vec<NewDelivery>,
    ) -> Result<bool>;
    // Analytics (pre-aggregated as the log is written; docs/metrics.md).
    /// How far the analytics aggregator has read the conversation log (a rowid).
    async fn stats_cursor(&self) -> Result<i64>;
    /// Conversation log entries after rowid `after`, in rowid order, at most `limit`:
    /// those that are the first of their conversation or of `kinds`; with the rowid
    /// they reach (past every entry of other kinds, below entries not read yet).
    async fn events_since(
        &self,
        after: i64,
        kinds: &[&str],
        limit: i64,
    ) -> Result<(Vec<FeedEvent>, i64)>;
    /// The aggregator's saved state of these conversations (`(conversation id, data)`).
    async fn stats_progress(&self, conversation_ids: &[String]) -> Result<Vec<(String, String)>>;
    /// In one transaction: adds the counters, saves the conversations' state, records
    /// replies and contact activity, and moves the cursor from `batch.from` to
    /// `batch.to`. `false` (and nothing written) when the cursor is no longer at `from`.
    async fn apply_stats(&self, batch: StatsBatch) -> Result<bool>;
    /// A flow's counters summed over days `from_day..=to_day` (days since 1970-01-01,
    /// UTC), of one version or all.
    async fn flow_stats(
        &self,
        flow_id: &str,
        version: Option<i64>,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<StatTotal>>;
    /// Human replies in hand-offs sent in `from..to`, oldest first, at most `limit`.
    async fn replies_between(&self, from: Ms, to: Ms, limit: i64) -> Result<Vec<ReplyRow>>;
    /// Contact cohorts `(first day, days after it, contacts active that day)` whose
    /// first day, or the day counted, is in `from_day..=to_day`.
    async fn cohorts(&self, from_day: i64, to_day: i64) -> Result<Vec<(i64, i64, i64)>>;
    /// Pending deliveries due at `now` of endpoints not paused, earliest first, at most
    /// `limit`.
    async fn due_deliveries(&self, now: Ms, limit: i64) -> Result<Vec<DeliveryRow>>;
    /// When the earliest pending delivery due after `now` is due.
    async fn next_delivery_after(&self, now: Ms) -> Result<Option<Ms>>;
    /// Records an attempt and the delivery's new state, if the delivery still has
    /// `attempt.n - 1` attempts (else nothing is written: `false`).
    async fn record_attempt(&self, outcome: AttemptOutcome) -> Result<bool>;
    /// An endpoint's deliveries, newest first, of a status (all: `None`), with ids
    /// below `before`; at most `limit`.
    async fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>>;
    async fn delivery(&self, endpoint_id: &str, id: i64) -> Result<Option<DeliveryRow>>;
    /// Attempts of deliveries, in order.
    async fn attempts(&self, delivery_ids: &[i64]) -> Result<Vec<AttemptRow>>;
    /// Deliveries of an endpoint by status.
    async fn delivery_counts(&self, endpoint_id: &str) -> Result<Vec<(String, i64)>>;
    /// Queues a delivery again, due at `at`, with a fresh retry schedule; `false` if
    /// there is no such delivery.
    async fn replay_delivery(&self, endpoint_id: &str, id: i64, at: Ms) -> Result<bool>;
    /// Deletes deliveries no longer pending (with their attempts) last changed before
    /// `before`, oldest first, at most `limit`; returns how many.
    async fn prune_deliveries(&self, before: Ms, limit: i64) -> Result<i64>;

    /// Waits for pending writes and closes the database.
    /// A flow's conversations with `no > after` (the insertion order), at most `limit`,
    /// with their `no`: pages of an export.
    async fn flow_conversations(
        &self,
        flow_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, ConversationRow)>>;

    /// The saved answer for a caller's idempotency key, if saved at or after `since`.
    async fn idempotent(&self, caller: &str, key: &str, since: Ms)
    -> Result<Option<IdempotentRow>>;
    /// Saves an answer (the first one saved wins) and forgets those older than `expire_before`.
    async fn save_idempotent(&self, row: IdempotentRow, expire_before: Ms) -> Result<()>;

    /// Hand-offs requested in `from..to`, oldest first, at most `limit`.
    async fn handoffs_between(&self, from: Ms, to: Ms, limit: i64) -> Result<Vec<HandoffRow>>;
    /// Conversations started in `from..to`.
    async fn conversations_started(&self, from: Ms, to: Ms) -> Result<i64>;

    // Premieres (showings being watched).
    /// Appends rows to showing logs (one transaction, batched with other writes).
    async fn append_showing(&self, rows: Vec<ShowingRow>) -> Result<()>;
    /// Rows of a showing with `seq > after`, in order, at most `limit`.
    async fn showing_log(
        &self,
        showing_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ShowingRow>>;
    /// Rows of `kind` about a viewer, across showings, latest first.
    async fn viewer_rows(&self, viewer_id: &str, kind: &str, limit: i64)
    -> Result<Vec<ShowingRow>>;
    /// Registers a viewer with their reminder timers, in one transaction. An existing
    /// registration of the same viewer for the same showing is kept and returned
    /// (nothing is written): registering twice is harmless.
    async fn register_viewer(
        &self,
        registration: RegistrationRow,
        reminders: Vec<NewTimer>,
    ) -> Result<(RegistrationRow, bool)>;
    async fn registration(&self, id: &str) -> Result<Option<RegistrationRow>>;
    /// The viewer's latest registration for any showing of the event.
    async fn viewer_registration(
        &self,
        event_id: &str,
        viewer_id: &str,
    ) -> Result<Option<RegistrationRow>>;
    async fn registrations(&self, showing_id: &str) -> Result<i64>;
    /// The latest registration for the event with this email address.
    async fn registration_by_email(
        &self,
        event_id: &str,
        email: &str,
    ) -> Result<Option<RegistrationRow>>;
    /// Records a conversion; when the event already has one with the same `order_id`,
    /// that one is returned with `false` and nothing is written.
    async fn record_conversion(&self, row: ConversionRow) -> Result<(ConversionRow, bool)>;
    /// A showing's conversions by offer: `(offer, conversions, distinct viewers, value)`.
    async fn offer_conversions(&self, showing_id: &str) -> Result<Vec<(String, i64, i64, f64)>>;
    async fn ban_viewer(&self, event_id: &str, viewer_id: &str, by: &str, at: Ms) -> Result<()>;
    async fn event_bans(&self, event_id: &str) -> Result<Vec<String>>;

    async fn close(&self);

    // -----------------------------------------------------------------------------
    // Event analytics (the server's `event_stats.rs`). Kept together at the end.
    async fn stats_cursors(&self) -> Result<StatsCursors>;
    /// Showing-log rows and registrations after `after`, in rowid order, at most
    /// `limit` of each. With `limit` 0, nothing is read and `upto` is where they end.
    async fn stats_feed(&self, after: StatsCursors, limit: i64) -> Result<StatsFeed>;
    /// The figures of these showings (those that have some).
    async fn event_stats(&self, showing_ids: &[String]) -> Result<Vec<EventStatsRow>>;
    /// The figures of every showing of an event.
    async fn event_stats_of(&self, event_id: &str) -> Result<Vec<EventStatsRow>>;
    /// What is kept about these (showing, viewer) pairs (those that have a row).
    async fn viewer_stats(&self, keys: &[(String, String)]) -> Result<Vec<ViewerStatsRow>>;
    /// In one transaction: writes (replacing) the showings' and viewers' rows and moves
    /// the cursors from `from` to `to`. `false` (and nothing written) when the cursors
    /// are no longer at `from`.
    async fn save_event_stats(
        &self,
        from: StatsCursors,
        to: StatsCursors,
        showings: Vec<EventStatsRow>,
        viewers: Vec<ViewerStatsRow>,
    ) -> Result<bool>;
}

// ---------------------------------------------------------------------------------
// Event analytics (the server's `event_stats.rs`; migration 0013). Kept together at the
// end of the file.

/// How far the event-analytics tailer has read `showing_log` and
/// `event_registrations` (their largest rowid counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsCursors {
    pub showings: i64,
    pub registrations: i64,
}

/// Showing-log rows and registrations after some [`StatsCursors`], with their rowids.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsFeed {
    pub showings: Vec<(i64, ShowingRow)>,
    pub registrations: Vec<(i64, RegistrationRow)>,
    /// Past every row returned; below rows not read yet.
    pub upto: StatsCursors,
}

/// The aggregated figures of one showing (JSON the server writes and reads).
#[derive(Debug, Clone, PartialEq)]
pub struct EventStatsRow {
    pub showing_id: String,
    pub event_id: String,
    pub data: String,
    pub updated_at: Ms,
}

/// What the tailer keeps about one viewer of a showing (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerStatsRow {
    pub showing_id: String,
    pub viewer_id: String,
    pub data: String,
}
