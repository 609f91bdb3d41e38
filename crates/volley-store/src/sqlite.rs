//! The embedded SQLite store: WAL, one writer task with group commit, pooled readers.
//!
//! Every write goes through one task that owns the write connection. It takes all
//! writes waiting in its queue (up to [`MAX_BATCH`]) and commits them in one
//! transaction, so many conversations share one fsync. Each caller is answered only
//! after the commit, so an acknowledged write is on disk. A batch that fails is
//! retried job by job, so one bad write never takes others down with it.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::*;

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Writes waiting for the writer before callers are slowed down (backpressure).
pub const QUEUE: usize = 16_384;
/// Rows per multi-row statement. A batch is cut into pieces of these sizes (largest
/// first), so only a few statement shapes exist and each stays prepared in the
/// connection's cache; preparing a fresh statement for every batch size cost more
/// than executing it.
const SHAPES: [usize; 5] = [256, 64, 16, 4, 1];

/// Splits `items` into runs whose lengths are all in [`SHAPES`].
fn shaped<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = *SHAPES.iter().find(|s| **s <= items.len())?;
        let (run, rest) = items.split_at(size);
        items = rest;
        Some(run)
    })
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `sqlite://path.db`, a plain path, or `sqlite::memory:` (tests).
    pub url: String,
    /// `synchronous=FULL` (fsync on every commit) when true; NORMAL otherwise.
    pub durable: bool,
    /// Reader connections.
    pub readers: u32,
}

impl SqliteOptions {
    pub fn new(url: impl Into<String>) -> Self {
        SqliteOptions {
            url: url.into(),
            durable: true,
            readers: 4,
        }
    }
}

pub struct SqliteStore {
    read: SqlitePool,
    writes: mpsc::Sender<Job>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bumped by the writer after commits that may have added log rows.
    log_written: watch::Receiver<u64>,
}

enum Write {
    Append(Box<Append>),
    Publish {
        flow_id: String,
        title: String,
        hash: String,
        source: String,
        at: Ms,
    },
    PublishEvent {
        event_id: String,
        hash: String,
        source: String,
        at: Ms,
    },
    Contact(NewContact),
    ContactProfile {
        id: String,
        profile: String,
        at: Ms,
    },
    ApiKey {
        id: String,
        hash: String,
        name: String,
        scopes: String,
        at: Ms,
    },
    Schedule(Vec<NewTimer>),
    DeleteTimer(i64),
    Upsert(Vec<ContactUpsert>, Ms),
    CreateCampaign(CampaignRow, Vec<NewTimer>),
    ChangeCampaign(String, CampaignChange, Ms),
    PutCanned(CannedRow),
    DeleteCanned(String),
    AgentQueues(String, Vec<String>),
    DeleteApiKey(String),
    CreateUser(UserRow, Option<SetupToken>),
    UpdateUser(String, UserChange),
    ReplaceSetupToken(SetupToken, bool),
    UseSetupToken {
        token_hash: String,
        password_hash: String,
        session: SessionRow,
    },
    CreateSession(SessionRow, Ms),
    TouchSession(String, Ms),
    DeleteSession(String),
    DeleteUserSessions(String),
    ShowingLog(Vec<ShowingRow>),
    /// Event analytics: figures and the tailer's cursors, in one transaction.
    SaveEventStats {
        from: StatsCursors,
        to: StatsCursors,
        showings: Vec<EventStatsRow>,
        viewers: Vec<ViewerStatsRow>,
    },
    Idempotent(IdempotentRow, Ms),
    Register(RegistrationRow, Vec<NewTimer>),
    Ban {
        event_id: String,
        viewer_id: String,
        by: String,
        at: Ms,
    },
    CreateWebhook(WebhookRow),
    Conversion(ConversionRow),
    UpdateWebhook(WebhookRow),
    DeleteWebhook(String),
    Stats(Box<StatsBatch>),
    Enqueue {
        from: LogCursors,
        to: LogCursors,
        deliveries: Vec<NewDelivery>,
    },
    RecordAttempt(AttemptOutcome),
    Replay {
        endpoint_id: String,
        id: i64,
        at: Ms,
    },
    PruneDeliveries {
        before: Ms,
        limit: i64,
    },
    /// Commit everything queued before this, then stop.
    Shutdown,
}

impl Write {
    /// Whether it may add rows to a log the webhook dispatcher reads.
    fn writes_log(&self) -> bool {
        matches!(
            self,
            Write::Append(_) | Write::ShowingLog(_) | Write::Register(..)
        )
    }
}

enum Output {
    Done,
    Published(FlowVersion, bool),
    PublishedEvent(EventVersion, bool),
    /// Ids of the timers scheduled.
    Timers(Vec<i64>),
    Deleted(bool),
    Count(i64),
    Registered(RegistrationRow, bool),
}

/// How far paused campaign sends are moved (ms, ~31,000 years): beyond any window.
const PARKED: i64 = 1_000_000_000_000_000;

struct Job {
    write: Write,
    done: oneshot::Sender<Result<Output>>,
}

fn connect_options(url: &str, durable: bool) -> Result<SqliteConnectOptions> {
    let url = if url.starts_with("sqlite:") {
        url.to_string()
    } else {
        format!("sqlite://{url}")
    };
    let opts = SqliteConnectOptions::from_str(&url).map_err(|_| StoreError::Url(url.clone()))?;
    Ok(opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if durable {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        // Reads map at most 64 MiB of the file: mapped pages count as the process's
        // resident memory, and the timers and log of a large database would fill any
        // larger map.
        .pragma("mmap_size", "67108864"))
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    pub bytes: u64,
    pub conversations: i64,
    pub events: i64,
}

/// Copies the SQLite database at `url` into the new file `dest`, consistently even
/// while a server writes to it: `VACUUM INTO` reads one snapshot (a read transaction;
/// in WAL mode writers carry on) and writes a compact, self-contained copy, which is
/// then checked with `PRAGMA integrity_check`. Refuses to overwrite `dest`; a copy that
/// fails its check is deleted. Runs no migrations and writes nothing to the source.
pub async fn backup_sqlite(url: &str, dest: &std::path::Path) -> Result<Backup> {
    if dest.exists() {
        return Err(StoreError::Backup(format!(
            "{} exists; choose a new file",
            dest.display()
        )));
    }
    let dest_str = dest
        .to_str()
        .ok_or_else(|| StoreError::Backup("the destination path is not UTF-8".into()))?;
    let source = connect_options(url, false)?
        .read_only(true)
        .create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&source).await?;
    sqlx::query("VACUUM INTO ?")
        .bind(dest_str)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let copy = SqliteConnectOptions::new().filename(dest).read_only(true);
    let checked = async {
        let mut conn = SqliteConnection::connect_with(&copy).await?;
        let (verdict,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await?;
        let (conversations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM conversations")
            .fetch_one(&mut conn)
            .await?;
        let (events,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, StoreError>((verdict, conversations, events))
    }
    .await;
    match checked {
        Ok((verdict, conversations, events)) if verdict == "ok" => Ok(Backup {
            bytes: std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0),
            conversations,
            events,
        }),
        other => {
            let _ = std::fs::remove_file(dest);
            Err(StoreError::Backup(match other {
                Ok((verdict, ..)) => format!("the copy failed its integrity check: {verdict}"),
                Err(e) => format!("the copy cannot be read: {e}"),
            }))
        }
    }
}

impl SqliteStore {
    /// The latest registration for the event whose `column` (a fixed name) is `value`.
    async fn latest_registration(
        &self,
        event_id: &str,
        column: &'static str,
        value: &str,
    ) -> Result<Option<RegistrationRow>> {
        let row: Option<RegistrationTuple> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {REGISTRATION_COLUMNS} FROM event_registrations
             WHERE event_id = ? AND {column} = ? ORDER BY registered_at DESC LIMIT 1"
        )))
        .bind(event_id)
        .bind(value)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(registration_row))
    }

    /// Conversation log entries in `after..=end` by rowid that are the first of their
    /// conversation or of `kinds`, at most `limit` (the outboxes' reading).
    async fn conversation_feed(
        &self,
        after: i64,
        end: i64,
        kinds: &[&str],
        limit: i64,
    ) -> Result<Vec<FeedEvent>> {
        type EventTuple = (
            i64,
            String,
            String,
            i64,
            String,
            Option<String>,
            Option<String>,
            i64,
            String,
            i64,
            i64,
            String,
        );
        let sql = format!(
            "SELECT e.rowid, c.id, c.flow_id, c.flow_version, c.contact_id, k.external_id, c.origin,
                    e.seq, e.kind, e.at, e.visible_at, e.data
             FROM events e JOIN conversations c ON c.no = e.conversation
             LEFT JOIN contacts k ON k.id = c.contact_id
             WHERE e.rowid > ? AND e.rowid <= ? AND (e.seq = 1 OR e.kind IN ({}))
             ORDER BY e.rowid LIMIT ?",
            placeholders(kinds.len())
        );
        let mut q = sqlx::query_as::<_, EventTuple>(AssertSqlSafe(sql))
            .bind(after)
            .bind(end);
        for k in kinds {
            q = q.bind(*k);
        }
        Ok(q.bind(limit)
            .fetch_all(&self.read)
            .await?
            .into_iter()
            .map(|r| FeedEvent {
                position: r.0,
                conversation_id: r.1,
                flow_id: r.2,
                flow_version: r.3,
                contact_id: r.4,
                external_id: r.5,
                origin: r.6,
                seq: r.7,
                kind: r.8,
                at: r.9,
                visible_at: r.10,
                data: r.11,
            })
            .collect())
    }

    /// Opens (creating if needed) the database and runs migrations.
    pub async fn open(options: SqliteOptions) -> Result<Self> {
        let opts = connect_options(&options.url, options.durable)?;
        // The writer checkpoints the WAL itself every 1000 pages (SQLite's default), so
        // the WAL stays near 4 MB; a background checkpointer measured worse (it cannot
        // keep up under sustained writes and the WAL grows without bound).
        // A larger page cache keeps hot pages (conversation rows, index interiors) in
        // memory across batches; it fills only as the database is used.
        let write_opts = opts
            .clone()
            .pragma("cache_size", "-32768")
            .pragma("wal_autocheckpoint", "10000");
        let mut write = SqliteConnection::connect_with(&write_opts).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut write)
            .await?;
        let memory = options.url.contains(":memory:");
        // An in-memory database exists once per connection: read through the writer's.
        let read = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { options.readers.max(1) })
            .connect_with(opts.clone().read_only(!memory))
            .await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (log_tx, log_written) = watch::channel(0);
        let writer = tokio::spawn(writer_loop(write, rx, log_tx));
        Ok(SqliteStore {
            read,
            writes: tx,
            writer: Mutex::new(Some(writer)),
            log_written,
        })
    }

    async fn submit(&self, write: Write) -> Result<Output> {
        let (done, wait) = oneshot::channel();
        self.writes
            .send(Job { write, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    log_written: watch::Sender<u64>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut shutdown: Option<Job> = None;
    while shutdown.is_none() {
        let Some(first) = rx.recv().await else { break };
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Some(at) = jobs.iter().position(|j| matches!(j.write, Write::Shutdown)) {
            // Later jobs are dropped: their callers see `Closed`.
            jobs.truncate(at + 1);
            shutdown = jobs.pop();
        }
        if jobs.is_empty() {
            continue;
        }
        let writes_log = jobs.iter().any(|j| j.write.writes_log());
        match run_batch(&mut conn, &jobs).await {
            Ok(outputs) => {
                for (job, out) in jobs.drain(..).zip(outputs) {
                    let _ = job.done.send(Ok(out));
                }
            }
            Err(e) if jobs.len() == 1 => {
                let job = jobs.pop().expect("one job");
                let _ = job.done.send(Err(e));
            }
            Err(_) => {
                // Find the failing write: retry each in its own transaction.
                for job in jobs.drain(..) {
                    let result = run_batch(&mut conn, std::slice::from_ref(&job)).await;
                    let _ = job
                        .done
                        .send(result.map(|mut o| o.pop().expect("one output")));
                }
            }
        }
        if writes_log {
            log_written.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
    rx.close();
    let _ = conn.close().await;
    if let Some(job) = shutdown {
        let _ = job.done.send(Ok(Output::Done));
    }
}

/// Commits a batch in one transaction. Appends of all conversations are written
/// together (a few multi-row statements, not a few per conversation); other writes
/// are applied one by one, before them.
async fn run_batch(conn: &mut SqliteConnection, jobs: &[Job]) -> Result<Vec<Output>> {
    // IMMEDIATE takes the write lock up front (waiting for it), so a transaction
    // never fails half-way trying to upgrade from reading to writing.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut outputs = Vec::with_capacity(jobs.len());
    let mut appends = Vec::new();
    for job in jobs {
        match &job.write {
            Write::Append(a) => {
                appends.push(&**a);
                outputs.push(None);
            }
            other => outputs.push(Some(apply(&mut tx, other).await?)),
        }
    }
    let mut timer_ids = append_all(&mut tx, &appends).await?.into_iter();
    tx.commit().await?;
    Ok(outputs
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Output::Timers(timer_ids.next().unwrap_or_default())))
        .collect())
}

/// Writes appends; returns, for each, the ids of the timers it scheduled.
async fn append_all(tx: &mut SqliteConnection, appends: &[&Append]) -> Result<Vec<Vec<i64>>> {
    let (creates, updates): (Vec<&&Append>, Vec<&&Append>) =
        appends.iter().partition(|a| a.create.is_some());
    // The log refers to conversations by their integer `no`, which the statements
    // writing the conversation rows return.
    let mut numbers: HashMap<String, i64> = HashMap::with_capacity(appends.len());
    for chunk in shaped(&creates) {
        let sql = multi_row(
            "INSERT INTO conversations (id, flow_id, flow_version, contact_id, status, last_seq, state, origin, created_at, updated_at) VALUES ",
            10,
            chunk.len(),
        ) + " RETURNING id, no";
        let mut q = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql));
        for a in chunk {
            let c = a.create.as_ref().expect("partitioned");
            q = q
                .bind(&a.conversation_id)
                .bind(&c.flow_id)
                .bind(c.flow_version)
                .bind(&c.contact_id)
                .bind(&a.status)
                .bind(a.after_seq + a.events.len() as i64)
                .bind(&a.state)
                .bind(&c.origin)
                .bind(a.at)
                .bind(a.at);
        }
        remember(&mut numbers, chunk, q.fetch_all(&mut *tx).await?)?;
    }
    for chunk in shaped(&updates) {
        // One UPDATE for many conversations; each row only matches if its log has not
        // moved on (`last_seq` still equals the writer's `after_seq`).
        let values = multi_row("", 6, chunk.len());
        let sql = format!(
            "UPDATE conversations SET last_seq = v.column2, state = v.column3, status = v.column4, updated_at = v.column5
             FROM (VALUES {}) AS v WHERE conversations.id = v.column1 AND conversations.last_seq = v.column6
             RETURNING conversations.id, conversations.no",
            values.trim_start()
        );
        let mut q = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql));
        for a in chunk {
            q = q
                .bind(&a.conversation_id)
                .bind(a.after_seq + a.events.len() as i64)
                .bind(&a.state)
                .bind(&a.status)
                .bind(a.at)
                .bind(a.after_seq);
        }
        remember(&mut numbers, chunk, q.fetch_all(&mut *tx).await?)?;
    }
    let rows: Vec<(i64, i64, &NewEvent)> = appends
        .iter()
        .flat_map(|a| {
            let no = numbers[&a.conversation_id];
            a.events
                .iter()
                .enumerate()
                .map(move |(i, e)| (no, a.after_seq + 1 + i as i64, e))
        })
        .collect();
    for chunk in shaped(&rows) {
        let sql = multi_row(
            "INSERT INTO events (conversation, seq, kind, at, visible_at, client_id, data) VALUES ",
            7,
            chunk.len(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (no, seq, e) in chunk {
            q = q
                .bind(*no)
                .bind(*seq)
                .bind(&e.kind)
                .bind(e.at)
                .bind(e.visible_at)
                .bind(&e.client_id)
                .bind(&e.data);
        }
        q.execute(&mut *tx).await?;
    }
    let handoffs: Vec<&HandoffRow> = appends.iter().filter_map(|a| a.handoff.as_ref()).collect();
    for h in handoffs {
        upsert_handoff(tx, h).await?;
    }
    fire_and_replace_timers(tx, appends, &numbers).await
}

const HANDOFF_COLUMNS: &str = "conversation_id, contact_id, flow_id, queue, priority, reason, status, agent_id, requested_at, assigned_at, first_reply_at, last_message_at, preview, snoozed_until, resolved_at, tags, csat, updated_at";

async fn upsert_handoff(tx: &mut SqliteConnection, h: &HandoffRow) -> Result<()> {
    let sql = format!(
        "INSERT INTO handoffs ({HANDOFF_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (conversation_id) DO UPDATE SET contact_id = excluded.contact_id,
           flow_id = excluded.flow_id, queue = excluded.queue, priority = excluded.priority,
           reason = excluded.reason, status = excluded.status, agent_id = excluded.agent_id,
           requested_at = excluded.requested_at, assigned_at = excluded.assigned_at,
           first_reply_at = excluded.first_reply_at, last_message_at = excluded.last_message_at,
           preview = excluded.preview, snoozed_until = excluded.snoozed_until,
           resolved_at = excluded.resolved_at, tags = excluded.tags, csat = excluded.csat,
           updated_at = excluded.updated_at"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&h.conversation_id)
        .bind(&h.contact_id)
        .bind(&h.flow_id)
        .bind(&h.queue)
        .bind(h.priority)
        .bind(&h.reason)
        .bind(&h.status)
        .bind(&h.agent_id)
        .bind(h.requested_at)
        .bind(h.assigned_at)
        .bind(h.first_reply_at)
        .bind(h.last_message_at)
        .bind(&h.preview)
        .bind(h.snoozed_until)
        .bind(h.resolved_at)
        .bind(&h.tags)
        .bind(h.csat)
        .bind(h.updated_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Deletes the timers the appends are firings of (each must still be pending), then
/// replaces the pending timers of conversations that say so.
async fn fire_and_replace_timers(
    tx: &mut SqliteConnection,
    appends: &[&Append],
    numbers: &HashMap<String, i64>,
) -> Result<Vec<Vec<i64>>> {
    let fired: Vec<(i64, &str)> = appends
        .iter()
        .filter_map(|a| a.fired_timer.map(|t| (t, a.conversation_id.as_str())))
        .collect();
    for chunk in shaped(&fired) {
        let sql = format!(
            "DELETE FROM timers WHERE id IN ({}) RETURNING id",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query_as::<_, (i64,)>(AssertSqlSafe(sql));
        for (id, _) in chunk {
            q = q.bind(*id);
        }
        let deleted: Vec<(i64,)> = q.fetch_all(&mut *tx).await?;
        if let Some((_, conv)) = chunk.iter().find(|(id, _)| !deleted.contains(&(*id,))) {
            // Fired (or cancelled) already: this firing must change nothing.
            return Err(StoreError::Conflict((*conv).to_string()));
        }
    }
    let replaced: Vec<i64> = appends
        .iter()
        .filter(|a| a.timers.is_some() && a.create.is_none())
        .map(|a| numbers[&a.conversation_id])
        .collect();
    for chunk in shaped(&replaced) {
        let sql = format!(
            "DELETE FROM timers WHERE conversation IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for no in chunk {
            q = q.bind(*no);
        }
        q.execute(&mut *tx).await?;
    }
    // Each append's conversation timers, then its owned timers.
    let new: Vec<(Option<i64>, &NewTimer)> = appends
        .iter()
        .flat_map(|a| {
            let no = numbers[&a.conversation_id];
            let own = a.timers.iter().flatten().map(move |t| (Some(no), t));
            own.chain(a.schedule.iter().map(|t| (None, t)))
        })
        .collect();
    let mut ids = insert_timers(tx, &new).await?.into_iter();
    Ok(appends
        .iter()
        .map(|a| {
            let n = a.timers.as_ref().map_or(0, Vec::len) + a.schedule.len();
            ids.by_ref().take(n).collect()
        })
        .collect())
}

type RegistrationTuple = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
);
const REGISTRATION_COLUMNS: &str =
    "id, event_id, showing_id, viewer_id, name, email, zone, fields, registered_at";

fn registration_row(r: RegistrationTuple) -> RegistrationRow {
    RegistrationRow {
        id: r.0,
        event_id: r.1,
        showing_id: r.2,
        viewer_id: r.3,
        name: r.4,
        email: r.5,
        zone: r.6,
        fields: r.7,
        registered_at: r.8,
    }
}

type ShowingTuple = (String, i64, String, Option<String>, String, i64);

fn showing_row(r: ShowingTuple) -> ShowingRow {
    ShowingRow {
        showing_id: r.0,
        seq: r.1,
        kind: r.2,
        viewer_id: r.3,
        data: r.4,
        at: r.5,
    }
}

/// Inserts timers; returns their ids in the order given.
async fn insert_timers(
    tx: &mut SqliteConnection,
    timers: &[(Option<i64>, &NewTimer)],
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(timers.len());
    for chunk in shaped(timers) {
        let sql = multi_row(
            "INSERT INTO timers (due_at, kind, conversation, late_after, owner, data) VALUES ",
            6,
            chunk.len(),
        ) + " RETURNING id";
        let mut q = sqlx::query_as::<_, (i64,)>(AssertSqlSafe(sql));
        for (no, t) in chunk {
            q = q
                .bind(t.due_at)
                .bind(&t.kind)
                .bind(*no)
                .bind(t.late_after)
                .bind(&t.owner)
                .bind(&t.data);
        }
        // Rowids are assigned in insertion order (one writer, always max + 1), and
        // RETURNING does not promise an order: sorting restores it.
        let mut chunk_ids: Vec<i64> = q
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect();
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

async fn change_campaign(
    tx: &mut SqliteConnection,
    id: &str,
    change: &CampaignChange,
    at: Ms,
) -> Result<Output> {
    let owner = format!("campaign:{id}");
    let row: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT status, paused_at FROM campaigns WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((status, paused_at)) = row else {
        return Ok(Output::Deleted(false));
    };
    match (change, status.as_str()) {
        (CampaignChange::Activate, "planning") => {
            sqlx::query("UPDATE campaigns SET status = 'scheduled', updated_at = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        (CampaignChange::Pause, "scheduled") => {
            sqlx::query("UPDATE timers SET due_at = due_at + ? WHERE owner = ? AND due_at < ?")
                .bind(PARKED)
                .bind(&owner)
                .bind(PARKED)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE campaigns SET status = 'paused', paused_at = ?, updated_at = ? WHERE id = ?")
                .bind(at)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        (CampaignChange::Resume, "paused") => {
            let paused_for = (at - paused_at.unwrap_or(at)).max(0);
            sqlx::query(
                "UPDATE timers SET due_at = due_at - ? + ? WHERE owner = ? AND due_at >= ?",
            )
            .bind(PARKED)
            .bind(paused_for)
            .bind(&owner)
            .bind(PARKED)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE campaigns SET status = 'scheduled', paused_at = NULL, updated_at = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        (CampaignChange::Cancel, "scheduled" | "paused" | "planning") => {
            let gone = sqlx::query("DELETE FROM timers WHERE owner = ?")
                .bind(&owner)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
            sqlx::query("UPDATE campaigns SET status = 'cancelled', cancelled = cancelled + ?, updated_at = ? WHERE id = ?")
                .bind(gone)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        _ => return Ok(Output::Deleted(false)),
    }
    Ok(Output::Deleted(true))
}

/// Records the `no` of each conversation a statement wrote. A conversation missing
/// from `written` has moved on since its writer read it: the batch is retried write
/// by write, which names the one that conflicts.
fn remember(
    numbers: &mut HashMap<String, i64>,
    chunk: &[&&Append],
    written: Vec<(String, i64)>,
) -> Result<()> {
    let complete = written.len() == chunk.len();
    numbers.extend(written);
    match chunk
        .iter()
        .find(|a| !numbers.contains_key(&a.conversation_id))
    {
        Some(a) => Err(StoreError::Conflict(a.conversation_id.clone())),
        None if !complete => Err(StoreError::Conflict(chunk[0].conversation_id.clone())),
        None => Ok(()),
    }
}

/// `prefix` followed by `rows` groups of `columns` placeholders.
fn multi_row(prefix: &str, columns: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; columns].join(", "));
    let mut sql = String::with_capacity(prefix.len() + rows * (group.len() + 2));
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&group);
    }
    sql
}

async fn apply(tx: &mut SqliteConnection, write: &Write) -> Result<Output> {
    match write {
        Write::Append(a) => Ok(Output::Timers(
            append_all(tx, &[&**a]).await?.pop().unwrap_or_default(),
        )),
        Write::Schedule(timers) => {
            let rows: Vec<(Option<i64>, &NewTimer)> = timers.iter().map(|t| (None, t)).collect();
            Ok(Output::Timers(insert_timers(tx, &rows).await?))
        }
        Write::Upsert(contacts, at) => {
            let mut created = 0;
            for chunk in shaped(contacts) {
                let sql = multi_row(
                    "INSERT INTO contacts (id, external_id, profile, created_at, updated_at) VALUES ",
                    5,
                    chunk.len(),
                ) + " ON CONFLICT (external_id) DO UPDATE SET profile = json_patch(contacts.profile, excluded.profile),
                     updated_at = excluded.updated_at RETURNING created_at = updated_at";
                let mut q = sqlx::query_as::<_, (bool,)>(AssertSqlSafe(sql));
                for c in chunk {
                    q = q
                        .bind(&c.id)
                        .bind(&c.external_id)
                        .bind(&c.profile)
                        .bind(at)
                        .bind(at);
                }
                created += q.fetch_all(&mut *tx).await?.iter().filter(|r| r.0).count() as i64;
            }
            Ok(Output::Count(created))
        }
        Write::CreateCampaign(c, sends) => {
            sqlx::query(
                "INSERT INTO campaigns (id, name, flow_id, spec, status, audience, cancelled, paused_at, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&c.name)
            .bind(&c.flow_id)
            .bind(&c.spec)
            .bind(&c.status)
            .bind(c.audience)
            .bind(c.cancelled)
            .bind(c.paused_at)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(&mut *tx)
            .await?;
            let rows: Vec<(Option<i64>, &NewTimer)> = sends.iter().map(|t| (None, t)).collect();
            insert_timers(tx, &rows).await?;
            Ok(Output::Done)
        }
        Write::ChangeCampaign(id, change, at) => change_campaign(tx, id, change, *at).await,
        Write::DeleteTimer(id) => {
            let done = sqlx::query("DELETE FROM timers WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::Publish {
            flow_id,
            title,
            hash,
            source,
            at,
        } => {
            let latest: Option<(i64, String, i64)> = sqlx::query_as(
                "SELECT v.version, v.hash, v.created_at FROM flows f
                 JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.latest_version WHERE f.id = ?",
            )
            .bind(flow_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((version, old_hash, created_at)) = &latest
                && old_hash == hash
            {
                let v = FlowVersion {
                    flow_id: flow_id.clone(),
                    version: *version,
                    hash: hash.clone(),
                    title: title.clone(),
                    source: source.clone(),
                    created_at: *created_at,
                };
                return Ok(Output::Published(v, false));
            }
            let version = latest.map_or(1, |l| l.0 + 1);
            sqlx::query(
                "INSERT INTO flows (id, title, latest_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET title = excluded.title, latest_version = excluded.latest_version,
                 updated_at = excluded.updated_at",
            )
            .bind(flow_id)
            .bind(title)
            .bind(version)
            .bind(at)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO flow_versions (flow_id, version, hash, source, created_at) VALUES (?, ?, ?, ?, ?)")
                .bind(flow_id)
                .bind(version)
                .bind(hash)
                .bind(source)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            let v = FlowVersion {
                flow_id: flow_id.clone(),
                version,
                hash: hash.clone(),
                title: title.clone(),
                source: source.clone(),
                created_at: *at,
            };
            Ok(Output::Published(v, true))
        }
        Write::PublishEvent {
            event_id,
            hash,
            source,
            at,
        } => {
            let latest: Option<(i64, String, String, i64)> = sqlx::query_as(
                "SELECT version, hash, source, created_at FROM event_versions
                 WHERE event_id = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await?;
            let mut v = EventVersion {
                event_id: event_id.clone(),
                version: 1,
                hash: hash.clone(),
                source: source.clone(),
                created_at: *at,
            };
            if let Some((version, old_hash, old_source, created_at)) = latest {
                if old_hash == *hash {
                    v.version = version;
                    v.source = old_source;
                    v.created_at = created_at;
                    return Ok(Output::PublishedEvent(v, false));
                }
                v.version = version + 1;
            }
            sqlx::query(
                "INSERT INTO event_versions (event_id, version, hash, source, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(event_id)
            .bind(v.version)
            .bind(hash)
            .bind(source)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::PublishedEvent(v, true))
        }
        Write::Contact(c) => {
            sqlx::query(
                "INSERT INTO contacts (id, token_hash, external_id, profile, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&c.token_hash)
            .bind(&c.external_id)
            .bind(&c.profile)
            .bind(c.at)
            .bind(c.at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Done)
        }
        Write::ContactProfile { id, profile, at } => {
            sqlx::query("UPDATE contacts SET profile = ?, updated_at = ? WHERE id = ?")
                .bind(profile)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Done)
        }
        Write::Shutdown => Ok(Output::Done),
        Write::Conversion(c) => {
            let done = sqlx::query(
                "INSERT INTO offer_conversions (id, event_id, showing_id, viewer_id, offer, value, order_id, at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&c.id)
            .bind(&c.event_id)
            .bind(&c.showing_id)
            .bind(&c.viewer_id)
            .bind(&c.offer)
            .bind(c.value)
            .bind(&c.order_id)
            .bind(c.at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::UpdateWebhook(w) => {
            let done = sqlx::query(
                "UPDATE webhook_endpoints SET url = ?, secret = ?, types = ?, description = ?,
                 disabled = ?, previous_secret = ?, previous_until = ? WHERE id = ?",
            )
            .bind(&w.url)
            .bind(&w.secret)
            .bind(&w.types)
            .bind(&w.description)
            .bind(w.disabled)
            .bind(&w.previous_secret)
            .bind(w.previous_until)
            .bind(&w.id)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::CreateWebhook(w) => {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, url, secret, types, description, created_at,
                 disabled, previous_secret, previous_until)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&w.id)
            .bind(&w.url)
            .bind(&w.secret)
            .bind(&w.types)
            .bind(&w.description)
            .bind(w.created_at)
            .bind(w.disabled)
            .bind(&w.previous_secret)
            .bind(w.previous_until)
            .execute(&mut *tx)
            .await?;
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhook_endpoints")
                .fetch_one(&mut *tx)
                .await?;
            if n == 1 {
                // Nothing was being dispatched: start from the ends of the logs.
                for (source, table) in LOG_SOURCES {
                    sqlx::query(AssertSqlSafe(format!(
                        "UPDATE webhook_cursors SET position = (SELECT COALESCE(MAX(rowid), 0) FROM {table})
                         WHERE source = ?"
                    )))
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(Output::Done)
        }
        Write::DeleteWebhook(id) => {
            let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::Stats(b) => {
            let (at,): (i64,) = sqlx::query_as("SELECT position FROM stats_cursor WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
            if at != b.from {
                return Ok(Output::Deleted(false));
            }
            for chunk in shaped(&b.deltas) {
                let sql = multi_row(
                    "INSERT INTO flow_stats (flow_id, version, day, metric, key, n, total) VALUES ",
                    7,
                    chunk.len(),
                ) + " ON CONFLICT DO UPDATE SET n = n + excluded.n, total = total + excluded.total";
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for d in chunk {
                    q = q
                        .bind(&d.flow_id)
                        .bind(d.version)
                        .bind(d.day)
                        .bind(d.metric)
                        .bind(&d.key)
                        .bind(d.n)
                        .bind(d.total);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in shaped(&b.progress) {
                let sql = multi_row(
                    "INSERT OR REPLACE INTO stats_progress (conversation_id, data) VALUES ",
                    2,
                    chunk.len(),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (id, data) in chunk {
                    q = q.bind(id).bind(data);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in shaped(&b.replies) {
                let sql = multi_row(
                    "INSERT INTO handoff_replies (conversation_id, at, agent_id, queue, wait_ms) VALUES ",
                    5,
                    chunk.len(),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q
                        .bind(&r.conversation_id)
                        .bind(r.at)
                        .bind(&r.agent_id)
                        .bind(&r.queue)
                        .bind(r.wait_ms);
                }
                q.execute(&mut *tx).await?;
            }
            for (contact, day) in &b.activity {
                let new = sqlx::query(
                    "INSERT OR IGNORE INTO contact_days (contact_id, day) VALUES (?, ?)",
                )
                .bind(contact)
                .bind(day)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if new {
                    sqlx::query(
                        "INSERT INTO cohorts (first_day, days_after, n)
                         SELECT MIN(day), ? - MIN(day), 1 FROM contact_days WHERE contact_id = ?
                         ON CONFLICT DO UPDATE SET n = n + 1",
                    )
                    .bind(day)
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query("UPDATE stats_cursor SET position = ? WHERE id = 1")
                .bind(b.to)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Deleted(true))
        }
        Write::Enqueue {
            from,
            to,
            deliveries,
        } => {
            if read_cursors(tx).await? != *from {
                return Ok(Output::Deleted(false));
            }
            for chunk in shaped(deliveries) {
                let values = multi_row("", 5, chunk.len());
                let sql = format!(
                    "INSERT INTO webhook_deliveries (endpoint_id, message_id, type, payload, status, attempts, failures, next_at, created_at, updated_at)
                     SELECT v.column1, v.column2, v.column3, v.column4, 'pending', 0, 0, v.column5, v.column5, v.column5
                     FROM (VALUES {}) AS v WHERE v.column1 IN (SELECT id FROM webhook_endpoints)
                     ON CONFLICT (endpoint_id, message_id) DO NOTHING",
                    values.trim_start()
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for d in chunk {
                    q = q
                        .bind(&d.endpoint_id)
                        .bind(&d.message_id)
                        .bind(&d.kind)
                        .bind(&d.payload)
                        .bind(d.at);
                }
                q.execute(&mut *tx).await?;
            }
            let positions = [to.events, to.showings, to.registrations];
            for ((source, _), position) in LOG_SOURCES.iter().zip(positions) {
                sqlx::query("UPDATE webhook_cursors SET position = ? WHERE source = ?")
                    .bind(position)
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Output::Deleted(true))
        }
        Write::RecordAttempt(o) => {
            let a = &o.attempt;
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET attempts = ?, failures = ?, status = ?, next_at = ?, updated_at = ?
                 WHERE id = ? AND attempts = ?",
            )
            .bind(a.n)
            .bind(o.failures)
            .bind(&o.status)
            .bind(o.next_at)
            .bind(a.at)
            .bind(a.delivery_id)
            .bind(a.n - 1)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                return Ok(Output::Deleted(false));
            }
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, n, at, status, error, duration_ms)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(a.delivery_id)
            .bind(a.n)
            .bind(a.at)
            .bind(a.status)
            .bind(&a.error)
            .bind(a.duration_ms)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Deleted(true))
        }
        Write::PruneDeliveries { before, limit } => {
            // Oldest first by id: old deliveries are at the start of the table.
            let done = sqlx::query(
                "DELETE FROM webhook_deliveries WHERE id IN (
                   SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < ?
                   ORDER BY id LIMIT ?)",
            )
            .bind(before)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Count(done.rows_affected() as i64))
        }
        Write::Replay {
            endpoint_id,
            id,
            at,
        } => {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', failures = 0, next_at = ?, updated_at = ?
                 WHERE id = ? AND endpoint_id = ?",
            )
            .bind(at)
            .bind(at)
            .bind(id)
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::Idempotent(r, expire_before) => {
            sqlx::query("DELETE FROM idempotency WHERE created_at < ?")
                .bind(expire_before)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO idempotency (caller, key, request_hash, status, content_type, body, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (caller, key) DO NOTHING",
            )
            .bind(&r.caller)
            .bind(&r.key)
            .bind(&r.request_hash)
            .bind(i64::from(r.status))
            .bind(&r.content_type)
            .bind(&r.body)
            .bind(r.created_at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Done)
        }
        Write::ShowingLog(rows) => {
            for chunk in shaped(rows) {
                let sql = multi_row(
                    "INSERT INTO showing_log (showing_id, seq, kind, viewer_id, data, at) VALUES ",
                    6,
                    chunk.len(),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q
                        .bind(&r.showing_id)
                        .bind(r.seq)
                        .bind(&r.kind)
                        .bind(&r.viewer_id)
                        .bind(&r.data)
                        .bind(r.at);
                }
                q.execute(&mut *tx).await?;
            }
            Ok(Output::Done)
        }
        Write::SaveEventStats {
            from,
            to,
            showings,
            viewers,
        } => {
            if read_stats_cursors(tx).await? != *from {
                return Ok(Output::Deleted(false));
            }
            for chunk in shaped(showings) {
                let sql = multi_row(
                    "INSERT OR REPLACE INTO event_stats (showing_id, event_id, data, updated_at) VALUES ",
                    4,
                    chunk.len(),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q
                        .bind(&r.showing_id)
                        .bind(&r.event_id)
                        .bind(&r.data)
                        .bind(r.updated_at);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in shaped(viewers) {
                let sql = multi_row(
                    "INSERT OR REPLACE INTO event_stats_viewers (showing_id, viewer_id, data) VALUES ",
                    3,
                    chunk.len(),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q.bind(&r.showing_id).bind(&r.viewer_id).bind(&r.data);
                }
                q.execute(&mut *tx).await?;
            }
            for (source, position) in [
                ("showing_log", to.showings),
                ("event_registrations", to.registrations),
            ] {
                sqlx::query("UPDATE event_stats_cursors SET position = ? WHERE source = ?")
                    .bind(position)
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Output::Deleted(true))
        }
        Write::Register(r, reminders) => {
            let inserted = sqlx::query(
                "INSERT INTO event_registrations (id, event_id, showing_id, viewer_id, name, email, zone, fields, registered_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (showing_id, viewer_id) DO NOTHING",
            )
            .bind(&r.id)
            .bind(&r.event_id)
            .bind(&r.showing_id)
            .bind(&r.viewer_id)
            .bind(&r.name)
            .bind(&r.email)
            .bind(&r.zone)
            .bind(&r.fields)
            .bind(r.registered_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                let existing: RegistrationTuple = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT {REGISTRATION_COLUMNS} FROM event_registrations WHERE showing_id = ? AND viewer_id = ?"
                )))
                .bind(&r.showing_id)
                .bind(&r.viewer_id)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(Output::Registered(registration_row(existing), false));
            }
            let rows: Vec<(Option<i64>, &NewTimer)> = reminders.iter().map(|t| (None, t)).collect();
            insert_timers(tx, &rows).await?;
            Ok(Output::Registered(r.clone(), true))
        }
        Write::Ban {
            event_id,
            viewer_id,
            by,
            at,
        } => {
            sqlx::query(
                "INSERT INTO event_bans (event_id, viewer_id, by_user, at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (event_id, viewer_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(viewer_id)
            .bind(by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Done)
        }
        Write::PutCanned(c) => {
            let taken: Option<(String,)> =
                sqlx::query_as("SELECT id FROM canned_responses WHERE code = ? AND id <> ?")
                    .bind(&c.code)
                    .bind(&c.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() {
                return Ok(Output::Deleted(false));
            }
            sqlx::query(
                "INSERT INTO canned_responses (id, code, title, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET code = excluded.code, title = excluded.title,
                   body = excluded.body, updated_at = excluded.updated_at",
            )
            .bind(&c.id)
            .bind(&c.code)
            .bind(&c.title)
            .bind(&c.body)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Deleted(true))
        }
        Write::DeleteCanned(id) => {
            let done = sqlx::query("DELETE FROM canned_responses WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Deleted(done.rows_affected() > 0))
        }
        Write::AgentQueues(user, queues) => {
            sqlx::query("DELETE FROM agent_queues WHERE user_id = ?")
                .bind(user)
                .execute(&mut *tx)
                .await?;
            for q in queues {
                sqlx::query("INSERT INTO agent_queues (user_id, queue) VALUES (?, ?) ON CONFLICT DO NOTHING")
                    .bind(user)
                    .bind(q)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(Output::Done)
        }
        Write::DeleteApiKey(id) => {
            let done = sqlx::query("DELETE FROM api_keys WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::CreateUser(u, setup) => {
            sqlx::query(
                "INSERT INTO users (id, email, name, role, password_hash, capacity, disabled, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&u.id)
            .bind(&u.email)
            .bind(&u.name)
            .bind(&u.role)
            .bind(&u.password_hash)
            .bind(u.capacity)
            .bind(u.disabled)
            .bind(u.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match e.as_database_error() {
                Some(d) if d.is_unique_violation() => StoreError::Exists("email"),
                _ => e.into(),
            })?;
            if let Some(t) = setup {
                insert_setup_token(tx, t).await?;
            }
            Ok(Output::Done)
        }
        Write::UpdateUser(id, c) => {
            let done = sqlx::query(
                "UPDATE users SET name = COALESCE(?, name), role = COALESCE(?, role),
                 capacity = COALESCE(?, capacity), disabled = COALESCE(?, disabled) WHERE id = ?",
            )
            .bind(&c.name)
            .bind(&c.role)
            .bind(c.capacity)
            .bind(c.disabled)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if c.disabled == Some(true) {
                delete_user_sessions(tx, id).await?;
            }
            Ok(Output::Deleted(done.rows_affected() == 1))
        }
        Write::ReplaceSetupToken(t, end_sessions) => {
            sqlx::query("DELETE FROM setup_tokens WHERE user_id = ?")
                .bind(&t.user_id)
                .execute(&mut *tx)
                .await?;
            insert_setup_token(tx, t).await?;
            if *end_sessions {
                delete_user_sessions(tx, &t.user_id).await?;
            }
            Ok(Output::Done)
        }
        Write::UseSetupToken {
            token_hash,
            password_hash,
            session,
        } => {
            let used = sqlx::query(
                "DELETE FROM setup_tokens WHERE token_hash = ? AND user_id = ? AND expires_at > ?",
            )
            .bind(token_hash)
            .bind(&session.user_id)
            .bind(session.created_at)
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() != 1 {
                return Ok(Output::Deleted(false));
            }
            let set =
                sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND disabled = 0")
                    .bind(password_hash)
                    .bind(&session.user_id)
                    .execute(&mut *tx)
                    .await?;
            if set.rows_affected() != 1 {
                // A disabled user: the token is spent all the same.
                return Ok(Output::Deleted(false));
            }
            delete_user_sessions(tx, &session.user_id).await?;
            insert_session(tx, session).await?;
            Ok(Output::Deleted(true))
        }
        Write::CreateSession(session, idle_before) => {
            sqlx::query(
                "DELETE FROM user_sessions WHERE user_id = ? AND (expires_at <= ? OR last_seen_at < ?)",
            )
            .bind(&session.user_id)
            .bind(session.created_at)
            .bind(idle_before)
            .execute(&mut *tx)
            .await?;
            insert_session(tx, session).await?;
            Ok(Output::Done)
        }
        Write::TouchSession(token_hash, at) => {
            sqlx::query("UPDATE user_sessions SET last_seen_at = ? WHERE token_hash = ?")
                .bind(at)
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Done)
        }
        Write::DeleteSession(token_hash) => {
            sqlx::query("DELETE FROM user_sessions WHERE token_hash = ?")
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
            Ok(Output::Done)
        }
        Write::DeleteUserSessions(user_id) => {
            Ok(Output::Count(delete_user_sessions(tx, user_id).await?))
        }
        Write::ApiKey {
            id,
            hash,
            name,
            scopes,
            at,
        } => {
            sqlx::query(
                "INSERT INTO api_keys (id, hash, name, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(hash)
            .bind(name)
            .bind(scopes)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            Ok(Output::Done)
        }
    }
}

/// The logs the webhook dispatcher reads: (cursor name, table), in [`LogCursors`] order.
const LOG_SOURCES: [(&str, &str); 3] = [
    ("events", "events"),
    ("showing_log", "showing_log"),
    ("event_registrations", "event_registrations"),
];

async fn read_cursors(conn: &mut SqliteConnection) -> Result<LogCursors> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT source, position FROM webhook_cursors")
        .fetch_all(&mut *conn)
        .await?;
    let at = |name: &str| rows.iter().find(|(s, _)| s == name).map_or(0, |(_, p)| *p);
    Ok(LogCursors {
        events: at(LOG_SOURCES[0].0),
        showings: at(LOG_SOURCES[1].0),
        registrations: at(LOG_SOURCES[2].0),
    })
}

/// `?, ?, …` for a list (a `0` stands for none: `x IN (0)` matches no text).
fn placeholders(n: usize) -> String {
    if n == 0 {
        "0".into()
    } else {
        vec!["?"; n].join(", ")
    }
}

/// Where a read of at most `limit` rows got to: its last row when it was full, else
/// the end of the log as read before it.
fn reached(last: Option<i64>, n: usize, limit: i64, end: i64) -> i64 {
    match last {
        Some(last) if n as i64 >= limit => last,
        _ => end,
    }
}

/// Deliveries whose endpoint is not paused.
const NOT_PAUSED: &str = "endpoint_id NOT IN (SELECT id FROM webhook_endpoints WHERE disabled = 1)";

const DELIVERY_COLUMNS: &str = "id, endpoint_id, message_id, type, payload, status, attempts, failures, next_at, created_at, updated_at";

type DeliveryTuple = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
);

fn delivery_row(t: DeliveryTuple) -> DeliveryRow {
    DeliveryRow {
        id: t.0,
        endpoint_id: t.1,
        message_id: t.2,
        kind: t.3,
        payload: t.4,
        status: t.5,
        attempts: t.6,
        failures: t.7,
        next_at: t.8,
        created_at: t.9,
        updated_at: t.10,
    }
}

async fn insert_setup_token(tx: &mut SqliteConnection, t: &SetupToken) -> Result<()> {
    sqlx::query("INSERT INTO setup_tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?)")
        .bind(&t.token_hash)
        .bind(&t.user_id)
        .bind(t.expires_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn insert_session(tx: &mut SqliteConnection, s: &SessionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_sessions (token_hash, user_id, csrf, created_at, expires_at, last_seen_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&s.token_hash)
    .bind(&s.user_id)
    .bind(&s.csrf)
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(s.last_seen_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn delete_user_sessions(tx: &mut SqliteConnection, user_id: &str) -> Result<i64> {
    let done = sqlx::query("DELETE FROM user_sessions WHERE user_id = ?")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected() as i64)
}

const USER_COLUMNS: &str =
    "u.id, u.email, u.name, u.role, u.password_hash, u.capacity, u.disabled, u.created_at";

type UserTuple = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    bool,
    i64,
);

fn user_row(t: UserTuple) -> UserRow {
    UserRow {
        id: t.0,
        email: t.1,
        name: t.2,
        role: t.3,
        password_hash: t.4,
        capacity: t.5,
        disabled: t.6,
        created_at: t.7,
    }
}

type ConversationTuple = (String, String, i64, String, String, i64, String, i64, i64);

fn conversation_row(t: ConversationTuple) -> ConversationRow {
    ConversationRow {
        id: t.0,
        flow_id: t.1,
        flow_version: t.2,
        contact_id: t.3,
        status: t.4,
        last_seq: t.5,
        state: t.6,
        created_at: t.7,
        updated_at: t.8,
    }
}

const CONVERSATION_COLUMNS: &str =
    "id, flow_id, flow_version, contact_id, status, last_seq, state, created_at, updated_at";

type ContactTuple = (String, Option<String>, String, i64, i64);

type TimerTuple = (
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    String,
);

type CampaignTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    i64,
    i64,
);

const CAMPAIGN_COLUMNS: &str =
    "id, name, flow_id, spec, status, audience, cancelled, paused_at, created_at, updated_at";

fn campaign_row(t: CampaignTuple) -> CampaignRow {
    CampaignRow {
        id: t.0,
        name: t.1,
        flow_id: t.2,
        spec: t.3,
        status: t.4,
        audience: t.5,
        cancelled: t.6,
        paused_at: t.7,
        created_at: t.8,
        updated_at: t.9,
    }
}

fn contact_row(t: ContactTuple) -> ContactRow {
    ContactRow {
        id: t.0,
        external_id: t.1,
        profile: t.2,
        created_at: t.3,
        updated_at: t.4,
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn publish_flow(
        &self,
        flow_id: &str,
        title: &str,
        hash: &str,
        source: &str,
        at: Ms,
    ) -> Result<(FlowVersion, bool)> {
        let write = Write::Publish {
            flow_id: flow_id.into(),
            title: title.into(),
            hash: hash.into(),
            source: source.into(),
            at,
        };
        match self.submit(write).await? {
            Output::Published(v, new) => Ok((v, new)),
            _ => unreachable!("publish answers with a version"),
        }
    }

    async fn publish_event(
        &self,
        event_id: &str,
        hash: &str,
        source: &str,
        at: Ms,
    ) -> Result<(EventVersion, bool)> {
        let write = Write::PublishEvent {
            event_id: event_id.into(),
            hash: hash.into(),
            source: source.into(),
            at,
        };
        match self.submit(write).await? {
            Output::PublishedEvent(v, new) => Ok((v, new)),
            _ => unreachable!("publishing an event answers with a version"),
        }
    }

    async fn idempotent(
        &self,
        caller: &str,
        key: &str,
        since: Ms,
    ) -> Result<Option<IdempotentRow>> {
        type Row = (String, i64, Option<String>, Vec<u8>, i64);
        let row: Option<Row> = sqlx::query_as(
            "SELECT request_hash, status, content_type, body, created_at FROM idempotency
             WHERE caller = ? AND key = ? AND created_at >= ?",
        )
        .bind(caller)
        .bind(key)
        .bind(since)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| IdempotentRow {
            caller: caller.into(),
            key: key.into(),
            request_hash: r.0,
            status: r.1 as u16,
            content_type: r.2,
            body: r.3,
            created_at: r.4,
        }))
    }

    async fn save_idempotent(&self, row: IdempotentRow, expire_before: Ms) -> Result<()> {
        self.submit(Write::Idempotent(row, expire_before))
            .await
            .map(|_| ())
    }

    async fn append_showing(&self, rows: Vec<ShowingRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.submit(Write::ShowingLog(rows)).await.map(|_| ())
    }

    async fn showing_log(
        &self,
        showing_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ShowingRow>> {
        let rows: Vec<ShowingTuple> = sqlx::query_as(
            "SELECT showing_id, seq, kind, viewer_id, data, at FROM showing_log
             WHERE showing_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(showing_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(showing_row).collect())
    }

    async fn viewer_rows(
        &self,
        viewer_id: &str,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<ShowingRow>> {
        let rows: Vec<ShowingTuple> = sqlx::query_as(
            "SELECT showing_id, seq, kind, viewer_id, data, at FROM showing_log
             WHERE viewer_id = ? AND kind = ? ORDER BY at DESC LIMIT ?",
        )
        .bind(viewer_id)
        .bind(kind)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(showing_row).collect())
    }

    async fn register_viewer(
        &self,
        registration: RegistrationRow,
        reminders: Vec<NewTimer>,
    ) -> Result<(RegistrationRow, bool)> {
        match self
            .submit(Write::Register(registration, reminders))
            .await?
        {
            Output::Registered(r, new) => Ok((r, new)),
            _ => unreachable!("a registration answers with the registration"),
        }
    }

    async fn registration(&self, id: &str) -> Result<Option<RegistrationRow>> {
        let row: Option<RegistrationTuple> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {REGISTRATION_COLUMNS} FROM event_registrations WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(registration_row))
    }

    async fn viewer_registration(
        &self,
        event_id: &str,
        viewer_id: &str,
    ) -> Result<Option<RegistrationRow>> {
        self.latest_registration(event_id, "viewer_id", viewer_id)
            .await
    }

    async fn registration_by_email(
        &self,
        event_id: &str,
        email: &str,
    ) -> Result<Option<RegistrationRow>> {
        self.latest_registration(event_id, "email", email).await
    }

    async fn record_conversion(&self, row: ConversionRow) -> Result<(ConversionRow, bool)> {
        let created = match self.submit(Write::Conversion(row.clone())).await? {
            Output::Deleted(d) => d,
            _ => unreachable!("a conversion answers whether it was written"),
        };
        if created {
            return Ok((row, true));
        }
        type Tuple = (
            String,
            String,
            String,
            String,
            String,
            Option<f64>,
            Option<String>,
            i64,
        );
        let found: Option<Tuple> = sqlx::query_as(
            "SELECT id, event_id, showing_id, viewer_id, offer, value, order_id, at
             FROM offer_conversions WHERE event_id = ? AND order_id = ?",
        )
        .bind(&row.event_id)
        .bind(&row.order_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(match found {
            Some(r) => (
                ConversionRow {
                    id: r.0,
                    event_id: r.1,
                    showing_id: r.2,
                    viewer_id: r.3,
                    offer: r.4,
                    value: r.5,
                    order_id: r.6,
                    at: r.7,
                },
                false,
            ),
            None => (row, false),
        })
    }

    async fn offer_conversions(&self, showing_id: &str) -> Result<Vec<(String, i64, i64, f64)>> {
        Ok(sqlx::query_as(
            "SELECT offer, COUNT(*), COUNT(DISTINCT viewer_id), COALESCE(SUM(value), 0.0)
             FROM offer_conversions WHERE showing_id = ? GROUP BY offer ORDER BY offer",
        )
        .bind(showing_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn registrations(&self, showing_id: &str) -> Result<i64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM event_registrations WHERE showing_id = ?")
                .bind(showing_id)
                .fetch_one(&self.read)
                .await?;
        Ok(n)
    }

    async fn ban_viewer(&self, event_id: &str, viewer_id: &str, by: &str, at: Ms) -> Result<()> {
        self.submit(Write::Ban {
            event_id: event_id.into(),
            viewer_id: viewer_id.into(),
            by: by.into(),
            at,
        })
        .await
        .map(|_| ())
    }

    async fn event_bans(&self, event_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT viewer_id FROM event_bans WHERE event_id = ?")
                .bind(event_id)
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn event_versions(&self, event_id: &str) -> Result<Vec<EventVersion>> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT version, hash, source, created_at FROM event_versions
             WHERE event_id = ? ORDER BY version",
        )
        .bind(event_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| EventVersion {
                event_id: event_id.into(),
                version: r.0,
                hash: r.1,
                source: r.2,
                created_at: r.3,
            })
            .collect())
    }

    async fn latest_flows(&self) -> Result<Vec<FlowVersion>> {
        let rows: Vec<(String, i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT f.id, v.version, v.hash, f.title, v.source, v.created_at FROM flows f
             JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.latest_version ORDER BY f.id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| FlowVersion {
                flow_id: r.0,
                version: r.1,
                hash: r.2,
                title: r.3,
                source: r.4,
                created_at: r.5,
            })
            .collect())
    }

    async fn flow_version(&self, flow_id: &str, version: i64) -> Result<Option<FlowVersion>> {
        let row: Option<(String, String, String, i64)> = sqlx::query_as(
            "SELECT v.hash, f.title, v.source, v.created_at FROM flow_versions v JOIN flows f ON f.id = v.flow_id
             WHERE v.flow_id = ? AND v.version = ?",
        )
        .bind(flow_id)
        .bind(version)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| FlowVersion {
            flow_id: flow_id.into(),
            version,
            hash: r.0,
            title: r.1,
            source: r.2,
            created_at: r.3,
        }))
    }

    async fn flow_versions(&self, flow_id: &str) -> Result<Vec<FlowVersion>> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT v.version, v.hash, f.title, v.created_at FROM flow_versions v JOIN flows f ON f.id = v.flow_id
             WHERE v.flow_id = ? ORDER BY v.version",
        )
        .bind(flow_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| FlowVersion {
                flow_id: flow_id.into(),
                version: r.0,
                hash: r.1,
                title: r.2,
                source: String::new(),
                created_at: r.3,
            })
            .collect())
    }

    async fn create_contact(&self, contact: NewContact) -> Result<()> {
        self.submit(Write::Contact(contact)).await.map(|_| ())
    }

    async fn contact(&self, id: &str) -> Result<Option<ContactRow>> {
        let row: Option<ContactTuple> = sqlx::query_as(
            "SELECT id, external_id, profile, created_at, updated_at FROM contacts WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(contact_row))
    }

    async fn contacts(&self, ids: &[String]) -> Result<Vec<ContactRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in shaped(ids) {
            let sql = format!(
                "SELECT id, external_id, profile, created_at, updated_at FROM contacts WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as::<_, ContactTuple>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&self.read).await?.into_iter().map(contact_row));
        }
        Ok(out)
    }

    async fn contact_by_token(&self, token_hash: &str) -> Result<Option<ContactRow>> {
        let row: Option<ContactTuple> =
            sqlx::query_as("SELECT id, external_id, profile, created_at, updated_at FROM contacts WHERE token_hash = ?")
                .bind(token_hash)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(contact_row))
    }

    async fn contact_by_external_id(&self, external_id: &str) -> Result<Option<ContactRow>> {
        let row: Option<ContactTuple> =
            sqlx::query_as("SELECT id, external_id, profile, created_at, updated_at FROM contacts WHERE external_id = ?")
                .bind(external_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(contact_row))
    }

    async fn update_contact_profile(&self, id: &str, profile: &str, at: Ms) -> Result<()> {
        self.submit(Write::ContactProfile {
            id: id.into(),
            profile: profile.into(),
            at,
        })
        .await
        .map(|_| ())
    }

    async fn conversation(&self, id: &str) -> Result<Option<ConversationRow>> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?");
        let row: Option<ConversationTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(conversation_row))
    }

    async fn flow_conversations(
        &self,
        flow_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, ConversationRow)>> {
        let sql = format!(
            "SELECT no, {CONVERSATION_COLUMNS} FROM conversations
             WHERE flow_id = ? AND no > ? ORDER BY no LIMIT ?"
        );
        let rows: Vec<(i64, ConversationRow)> = sqlx::query(AssertSqlSafe(sql))
            .bind(flow_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?
            .into_iter()
            .map(|r| {
                use sqlx::Row;
                let no: i64 = r.get(0);
                let t: ConversationTuple = (
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                    r.get(9),
                );
                (no, conversation_row(t))
            })
            .collect();
        Ok(rows)
    }

    async fn calling_conversations(&self) -> Result<Vec<String>> {
        // A literal status, so the partial index `conversations_calling` applies.
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM conversations WHERE status = 'calling' ORDER BY id")
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn latest_conversation(
        &self,
        contact_id: &str,
        flow_id: &str,
    ) -> Result<Option<ConversationRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE contact_id = ? AND flow_id = ?
             ORDER BY updated_at DESC, created_at DESC LIMIT 1"
        );
        let row: Option<ConversationTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(contact_id)
            .bind(flow_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(conversation_row))
    }

    async fn append(&self, append: Append) -> Result<Vec<i64>> {
        match self.submit(Write::Append(Box::new(append))).await? {
            Output::Timers(ids) => Ok(ids),
            _ => unreachable!("an append answers with its timers"),
        }
    }

    async fn schedule_timers(&self, timers: Vec<NewTimer>) -> Result<Vec<i64>> {
        match self.submit(Write::Schedule(timers)).await? {
            Output::Timers(ids) => Ok(ids),
            _ => unreachable!("scheduling answers with ids"),
        }
    }

    async fn delete_timer(&self, id: i64) -> Result<bool> {
        match self.submit(Write::DeleteTimer(id)).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("a deletion answers whether it deleted"),
        }
    }

    async fn timers_due(&self, until: Ms, after: (Ms, i64), limit: i64) -> Result<Vec<TimerRow>> {
        let rows: Vec<TimerTuple> = sqlx::query_as(
            "SELECT t.id, t.due_at, t.kind, c.id, t.late_after, t.owner, t.data FROM timers t
             LEFT JOIN conversations c ON c.no = t.conversation
             WHERE t.due_at <= ? AND (t.due_at, t.id) > (?, ?)
             ORDER BY t.due_at, t.id LIMIT ?",
        )
        .bind(until)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TimerRow {
                id: r.0,
                due_at: r.1,
                kind: r.2,
                conversation_id: r.3,
                late_after: r.4,
                owner: r.5,
                data: r.6,
            })
            .collect())
    }

    async fn contacts_after(&self, after_id: &str, limit: i64) -> Result<Vec<ContactRow>> {
        let rows: Vec<ContactTuple> = sqlx::query_as(
            "SELECT id, external_id, profile, created_at, updated_at FROM contacts WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(contact_row).collect())
    }

    async fn upsert_contacts(&self, contacts: Vec<ContactUpsert>, at: Ms) -> Result<i64> {
        match self.submit(Write::Upsert(contacts, at)).await? {
            Output::Count(n) => Ok(n),
            _ => unreachable!("an upsert answers with a count"),
        }
    }

    async fn create_campaign(&self, campaign: CampaignRow, sends: Vec<NewTimer>) -> Result<()> {
        self.submit(Write::CreateCampaign(campaign, sends))
            .await
            .map(|_| ())
    }

    async fn campaign(&self, id: &str) -> Result<Option<CampaignRow>> {
        let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?");
        let row: Option<CampaignTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(campaign_row))
    }

    async fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_at DESC, id");
        let rows: Vec<CampaignTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(campaign_row).collect())
    }

    async fn change_campaign(&self, id: &str, change: CampaignChange, at: Ms) -> Result<bool> {
        match self
            .submit(Write::ChangeCampaign(id.into(), change, at))
            .await?
        {
            Output::Deleted(applied) => Ok(applied),
            _ => unreachable!("a campaign change answers whether it applied"),
        }
    }

    async fn owner_timers_histogram(&self, owner: &str, bucket_ms: i64) -> Result<Vec<(Ms, i64)>> {
        let bucket = bucket_ms.max(1);
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT (due_at / ?) * ?, COUNT(*) FROM timers WHERE owner = ? GROUP BY 1 ORDER BY 1",
        )
        .bind(bucket)
        .bind(bucket)
        .bind(owner)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    async fn conversations_by_origin(&self, origin: &str) -> Result<i64> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM conversations WHERE origin = ?")
            .bind(origin)
            .fetch_one(&self.read)
            .await?;
        Ok(row.0)
    }

    async fn pending_timers(&self) -> Result<i64> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM timers")
            .fetch_one(&self.read)
            .await?;
        Ok(row.0)
    }

    async fn events_after(
        &self,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows: Vec<(i64, String, i64, i64, Option<String>, String)> = sqlx::query_as(
            "SELECT e.seq, e.kind, e.at, e.visible_at, e.client_id, e.data FROM events e
             JOIN conversations c ON e.conversation = c.no
             WHERE c.id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?",
        )
        .bind(conversation_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| EventRow {
                seq: r.0,
                kind: r.1,
                at: r.2,
                visible_at: r.3,
                client_id: r.4,
                data: r.5,
            })
            .collect())
    }

    async fn client_message(&self, conversation_id: &str, client_id: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT e.seq FROM events e JOIN conversations c ON e.conversation = c.no WHERE c.id = ? AND e.client_id = ?")
                .bind(conversation_id)
                .bind(client_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| r.0))
    }

    async fn insert_api_key(
        &self,
        id: &str,
        hash: &str,
        name: &str,
        scopes: &str,
        at: Ms,
    ) -> Result<()> {
        let write = Write::ApiKey {
            id: id.into(),
            hash: hash.into(),
            name: name.into(),
            scopes: scopes.into(),
            at,
        };
        self.submit(write).await.map(|_| ())
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>> {
        let row: Option<(String, String, String, i64)> =
            sqlx::query_as("SELECT id, name, scopes, created_at FROM api_keys WHERE hash = ?")
                .bind(hash)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| ApiKeyRow {
            id: r.0,
            name: r.1,
            scopes: r.2,
            created_at: r.3,
        }))
    }

    async fn api_key_count(&self) -> Result<i64> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.read)
            .await?;
        Ok(row.0)
    }

    async fn open_handoffs(&self) -> Result<Vec<HandoffRow>> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE status <> 'resolved' ORDER BY requested_at"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?)
    }

    async fn handoff(&self, conversation_id: &str) -> Result<Option<HandoffRow>> {
        let sql = format!("SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE conversation_id = ?");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(conversation_id)
            .fetch_optional(&self.read)
            .await?)
    }

    async fn resolved_handoffs(&self, before: Ms, limit: i64) -> Result<Vec<HandoffRow>> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE status = 'resolved' AND last_message_at < ?
             ORDER BY last_message_at DESC LIMIT ?"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.read)
            .await?)
    }

    async fn handoffs_between(&self, from: Ms, to: Ms, limit: i64) -> Result<Vec<HandoffRow>> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE requested_at >= ? AND requested_at < ?
             ORDER BY requested_at LIMIT ?"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.read)
            .await?)
    }

    async fn conversations_started(&self, from: Ms, to: Ms) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM conversations WHERE created_at >= ? AND created_at < ?",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.read)
        .await?;
        Ok(n)
    }

    async fn contact_handoffs(&self, contact_id: &str, limit: i64) -> Result<Vec<HandoffRow>> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE contact_id = ? ORDER BY requested_at DESC LIMIT ?"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(contact_id)
            .bind(limit)
            .fetch_all(&self.read)
            .await?)
    }

    async fn contact_conversations(
        &self,
        contact_id: &str,
        limit: i64,
    ) -> Result<Vec<ConversationRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE contact_id = ?
             ORDER BY created_at DESC LIMIT ?"
        );
        let rows: Vec<ConversationTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(contact_id)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(conversation_row).collect())
    }

    async fn canned_responses(&self) -> Result<Vec<CannedRow>> {
        Ok(sqlx::query_as(
            "SELECT id, code, title, body, created_at, updated_at FROM canned_responses ORDER BY code",
        )
        .fetch_all(&self.read)
        .await?)
    }

    async fn put_canned(&self, row: CannedRow) -> Result<bool> {
        match self.submit(Write::PutCanned(row)).await? {
            Output::Deleted(ok) => Ok(ok),
            _ => unreachable!("a canned response write answers whether it applied"),
        }
    }

    async fn delete_canned(&self, id: &str) -> Result<bool> {
        match self.submit(Write::DeleteCanned(id.into())).await? {
            Output::Deleted(ok) => Ok(ok),
            _ => unreachable!("a delete answers whether it applied"),
        }
    }

    async fn agent_queues(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT user_id, queue FROM agent_queues ORDER BY user_id, queue")
                .fetch_all(&self.read)
                .await?,
        )
    }

    async fn set_agent_queues(&self, user_id: &str, queues: Vec<String>) -> Result<()> {
        self.submit(Write::AgentQueues(user_id.into(), queues))
            .await
            .map(|_| ())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT id, name, scopes, created_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ApiKeyRow {
                id: r.0,
                name: r.1,
                scopes: r.2,
                created_at: r.3,
            })
            .collect())
    }

    async fn delete_api_key(&self, id: &str) -> Result<bool> {
        match self.submit(Write::DeleteApiKey(id.into())).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("a deletion answers Deleted"),
        }
    }

    async fn create_user(&self, user: UserRow, setup: Option<SetupToken>) -> Result<()> {
        self.submit(Write::CreateUser(user, setup))
            .await
            .map(|_| ())
    }

    async fn user(&self, id: &str) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?");
        let row: Option<UserTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(user_row))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?");
        let row: Option<UserTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(user_row))
    }

    async fn users(&self) -> Result<Vec<UserRow>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at, u.id");
        let rows: Vec<UserTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.into_iter().map(user_row).collect())
    }

    async fn user_count(&self) -> Result<i64> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?;
        Ok(row.0)
    }

    async fn update_user(&self, id: &str, change: UserChange) -> Result<bool> {
        match self.submit(Write::UpdateUser(id.into(), change)).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("an update answers Deleted"),
        }
    }

    async fn replace_setup_token(&self, token: SetupToken, end_sessions: bool) -> Result<()> {
        self.submit(Write::ReplaceSetupToken(token, end_sessions))
            .await
            .map(|_| ())
    }

    async fn setup_token_user(&self, token_hash: &str, now: Ms) -> Result<Option<UserRow>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM setup_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ? AND t.expires_at > ?"
        );
        let row: Option<UserTuple> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(user_row))
    }

    async fn use_setup_token(
        &self,
        token_hash: &str,
        password_hash: &str,
        session: SessionRow,
    ) -> Result<bool> {
        let write = Write::UseSetupToken {
            token_hash: token_hash.into(),
            password_hash: password_hash.into(),
            session,
        };
        match self.submit(write).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("a setup answers Deleted"),
        }
    }

    async fn create_session(&self, session: SessionRow, idle_before: Ms) -> Result<()> {
        self.submit(Write::CreateSession(session, idle_before))
            .await
            .map(|_| ())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<(SessionRow, UserRow)>> {
        let sql = format!(
            "SELECT s.csrf, s.created_at, s.expires_at, s.last_seen_at, {USER_COLUMNS}
             FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?"
        );
        type Row = (
            String,
            i64,
            i64,
            i64,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
            bool,
            i64,
        );
        let row: Option<Row> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| {
            let user = user_row((r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11));
            let session = SessionRow {
                token_hash: token_hash.into(),
                user_id: user.id.clone(),
                csrf: r.0,
                created_at: r.1,
                expires_at: r.2,
                last_seen_at: r.3,
            };
            (session, user)
        }))
    }

    async fn touch_session(&self, token_hash: &str, at: Ms) -> Result<()> {
        self.submit(Write::TouchSession(token_hash.into(), at))
            .await
            .map(|_| ())
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        self.submit(Write::DeleteSession(token_hash.into()))
            .await
            .map(|_| ())
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<i64> {
        match self
            .submit(Write::DeleteUserSessions(user_id.into()))
            .await?
        {
            Output::Count(n) => Ok(n),
            _ => unreachable!("a deletion of sessions answers Count"),
        }
    }

    fn log_written(&self) -> watch::Receiver<u64> {
        self.log_written.clone()
    }

    async fn create_webhook(&self, row: WebhookRow) -> Result<()> {
        self.submit(Write::CreateWebhook(row)).await.map(|_| ())
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRow>> {
        type Tuple = (
            String,
            String,
            String,
            String,
            String,
            i64,
            bool,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Tuple> = sqlx::query_as(
            "SELECT id, url, secret, types, description, created_at, disabled, previous_secret,
                    previous_until
             FROM webhook_endpoints ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| WebhookRow {
                id: r.0,
                url: r.1,
                secret: r.2,
                types: r.3,
                description: r.4,
                created_at: r.5,
                disabled: r.6,
                previous_secret: r.7,
                previous_until: r.8,
            })
            .collect())
    }

    async fn update_webhook(&self, row: WebhookRow) -> Result<bool> {
        match self.submit(Write::UpdateWebhook(row)).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("an update answers whether it applied"),
        }
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        match self.submit(Write::DeleteWebhook(id.into())).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("a deletion answers Deleted"),
        }
    }

    async fn log_cursors(&self) -> Result<LogCursors> {
        let mut conn = self.read.acquire().await?;
        read_cursors(&mut conn).await
    }

    async fn log_since(
        &self,
        after: LogCursors,
        event_kinds: &[&str],
        showing_kinds: &[&str],
        limit: i64,
    ) -> Result<LogPage> {
        // The ends first: every row up to them is committed (one writer, rowids in
        // commit order), so reading up to them never skips a row committed later.
        let ends: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM events),
                    (SELECT COALESCE(MAX(rowid), 0) FROM showing_log),
                    (SELECT COALESCE(MAX(rowid), 0) FROM event_registrations)",
        )
        .fetch_one(&self.read)
        .await?;
        let events = self
            .conversation_feed(after.events, ends.0, event_kinds, limit)
            .await?;
        // `repeat` looks the viewer's rows up by `showing_log_viewer` (the unary `+`
        // keeps the planner off the primary key: a busy showing has many rows).
        let sql = format!(
            "SELECT s.rowid, s.showing_id, s.seq, s.kind, s.viewer_id, s.data, s.at,
                    EXISTS (SELECT 1 FROM showing_log p WHERE p.viewer_id = s.viewer_id
                            AND p.kind = s.kind AND +p.showing_id = s.showing_id AND +p.seq < s.seq)
             FROM showing_log s
             WHERE s.rowid > ? AND s.rowid <= ? AND s.kind IN ({})
             ORDER BY s.rowid LIMIT ?",
            placeholders(showing_kinds.len())
        );
        type ShowingFeedTuple = (i64, String, i64, String, Option<String>, String, i64, bool);
        let mut q = sqlx::query_as::<_, ShowingFeedTuple>(AssertSqlSafe(sql))
            .bind(after.showings)
            .bind(ends.1);
        for k in showing_kinds {
            q = q.bind(*k);
        }
        let showings: Vec<FeedShowing> = q
            .bind(limit)
            .fetch_all(&self.read)
            .await?
            .into_iter()
            .map(|r| FeedShowing {
                position: r.0,
                row: showing_row((r.1, r.2, r.3, r.4, r.5, r.6)),
                repeat: r.7,
            })
            .collect();
        type RegistrationFeedTuple = (
            i64,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
            i64,
        );
        let rows: Vec<RegistrationFeedTuple> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT rowid, {REGISTRATION_COLUMNS} FROM event_registrations
             WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        )))
        .bind(after.registrations)
        .bind(ends.2)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let registrations: Vec<FeedRegistration> = rows
            .into_iter()
            .map(|r| FeedRegistration {
                position: r.0,
                row: registration_row((r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)),
            })
            .collect();
        let upto = LogCursors {
            events: reached(
                events.last().map(|e| e.position),
                events.len(),
                limit,
                ends.0,
            )
            .max(after.events),
            showings: reached(
                showings.last().map(|e| e.position),
                showings.len(),
                limit,
                ends.1,
            )
            .max(after.showings),
            registrations: reached(
                registrations.last().map(|e| e.position),
                registrations.len(),
                limit,
                ends.2,
            )
            .max(after.registrations),
        };
        Ok(LogPage {
            events,
            showings,
            registrations,
            upto,
        })
    }

    async fn enqueue_deliveries(
        &self,
        from: LogCursors,
        to: LogCursors,
        deliveries: Vec<NewDelivery>,
    ) -> Result<bool> {
        match self
            .submit(Write::Enqueue {
                from,
                to,
                deliveries,
            })
            .await?
        {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("an enqueue answers whether it applied"),
        }
    }

    async fn stats_cursor(&self) -> Result<i64> {
        let (at,): (i64,) = sqlx::query_as("SELECT position FROM stats_cursor WHERE id = 1")
            .fetch_one(&self.read)
            .await?;
        Ok(at)
    }

    async fn events_since(
        &self,
        after: i64,
        kinds: &[&str],
        limit: i64,
    ) -> Result<(Vec<FeedEvent>, i64)> {
        // The end first: every row up to it is committed (see `log_since`).
        let (end,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(rowid), 0) FROM events")
            .fetch_one(&self.read)
            .await?;
        let events = self.conversation_feed(after, end, kinds, limit).await?;
        let upto = reached(events.last().map(|e| e.position), events.len(), limit, end).max(after);
        Ok((events, upto))
    }

    async fn stats_progress(&self, conversation_ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(conversation_ids.len());
        for chunk in shaped(conversation_ids) {
            let sql = format!(
                "SELECT conversation_id, data FROM stats_progress WHERE conversation_id IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&self.read).await?);
        }
        Ok(out)
    }

    async fn apply_stats(&self, batch: StatsBatch) -> Result<bool> {
        match self.submit(Write::Stats(Box::new(batch))).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("applying stats answers whether it applied"),
        }
    }

    async fn flow_stats(
        &self,
        flow_id: &str,
        version: Option<i64>,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<StatTotal>> {
        let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
            "SELECT metric, key, SUM(n), SUM(total) FROM flow_stats
             WHERE flow_id = ? AND day >= ? AND day <= ? AND (? IS NULL OR version = ?)
             GROUP BY metric, key ORDER BY metric, key",
        )
        .bind(flow_id)
        .bind(from_day)
        .bind(to_day)
        .bind(version)
        .bind(version)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(metric, key, n, total)| StatTotal {
                metric,
                key,
                n,
                total,
            })
            .collect())
    }

    async fn replies_between(&self, from: Ms, to: Ms, limit: i64) -> Result<Vec<ReplyRow>> {
        let rows: Vec<(String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT conversation_id, at, agent_id, queue, wait_ms FROM handoff_replies
             WHERE at >= ? AND at < ? ORDER BY at LIMIT ?",
        )
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(conversation_id, at, agent_id, queue, wait_ms)| ReplyRow {
                conversation_id,
                at,
                agent_id,
                queue,
                wait_ms,
            })
            .collect())
    }

    async fn cohorts(&self, from_day: i64, to_day: i64) -> Result<Vec<(i64, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT first_day, days_after, n FROM cohorts
             WHERE first_day BETWEEN ?1 AND ?2 OR first_day + days_after BETWEEN ?1 AND ?2
             ORDER BY first_day, days_after",
        )
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.read)
        .await?)
    }

    async fn due_deliveries(&self, now: Ms, limit: i64) -> Result<Vec<DeliveryRow>> {
        let rows: Vec<DeliveryTuple> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE status = 'pending' AND next_at <= ? AND {NOT_PAUSED}
             ORDER BY next_at, id LIMIT ?"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(delivery_row).collect())
    }

    async fn next_delivery_after(&self, now: Ms) -> Result<Option<Ms>> {
        let (at,): (Option<i64>,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT MIN(next_at) FROM webhook_deliveries
             WHERE status = 'pending' AND next_at > ? AND {NOT_PAUSED}"
        )))
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(at)
    }

    async fn record_attempt(&self, outcome: AttemptOutcome) -> Result<bool> {
        match self.submit(Write::RecordAttempt(outcome)).await? {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("an attempt answers whether it applied"),
        }
    }

    async fn deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        let filter = if status.is_some() {
            "AND status = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE endpoint_id = ? {filter} AND id < ? ORDER BY id DESC LIMIT ?"
        );
        let mut q = sqlx::query_as::<_, DeliveryTuple>(AssertSqlSafe(sql)).bind(endpoint_id);
        if let Some(s) = status {
            q = q.bind(s);
        }
        let rows = q.bind(before).bind(limit).fetch_all(&self.read).await?;
        Ok(rows.into_iter().map(delivery_row).collect())
    }

    async fn delivery(&self, endpoint_id: &str, id: i64) -> Result<Option<DeliveryRow>> {
        let row: Option<DeliveryTuple> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ? AND endpoint_id = ?"
        )))
        .bind(id)
        .bind(endpoint_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(delivery_row))
    }

    async fn attempts(&self, delivery_ids: &[i64]) -> Result<Vec<AttemptRow>> {
        let mut out = Vec::new();
        for chunk in delivery_ids.chunks(256) {
            let sql = format!(
                "SELECT delivery_id, n, at, status, error, duration_ms FROM webhook_attempts
                 WHERE delivery_id IN ({}) ORDER BY delivery_id, n",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as::<_, (i64, i64, i64, Option<i64>, Option<String>, i64)>(
                AssertSqlSafe(sql),
            );
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(
                q.fetch_all(&self.read)
                    .await?
                    .into_iter()
                    .map(|r| AttemptRow {
                        delivery_id: r.0,
                        n: r.1,
                        at: r.2,
                        status: r.3,
                        error: r.4,
                        duration_ms: r.5,
                    }),
            );
        }
        Ok(out)
    }

    async fn delivery_counts(&self, endpoint_id: &str) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM webhook_deliveries WHERE endpoint_id = ?
             GROUP BY status ORDER BY status",
        )
        .bind(endpoint_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn prune_deliveries(&self, before: Ms, limit: i64) -> Result<i64> {
        match self
            .submit(Write::PruneDeliveries { before, limit })
            .await?
        {
            Output::Count(n) => Ok(n),
            _ => unreachable!("pruning answers with a count"),
        }
    }

    async fn replay_delivery(&self, endpoint_id: &str, id: i64, at: Ms) -> Result<bool> {
        match self
            .submit(Write::Replay {
                endpoint_id: endpoint_id.into(),
                id,
                at,
            })
            .await?
        {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("a replay answers whether it applied"),
        }
    }

    async fn close(&self) {
        let _ = self.submit(Write::Shutdown).await;
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.await;
        }
        self.read.close().await;
    }

    // -----------------------------------------------------------------------------
    // Event analytics (the server's `event_stats.rs`). Kept together at the end.

    async fn stats_cursors(&self) -> Result<StatsCursors> {
        let mut conn = self.read.acquire().await?;
        read_stats_cursors(&mut conn).await
    }

    async fn stats_feed(&self, after: StatsCursors, limit: i64) -> Result<StatsFeed> {
        // The ends first: every row up to them is committed (one writer, rowids in
        // commit order), so reading up to them never skips a row committed later.
        let ends: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM showing_log),
                    (SELECT COALESCE(MAX(rowid), 0) FROM event_registrations)",
        )
        .fetch_one(&self.read)
        .await?;
        type Tuple = (i64, String, i64, String, Option<String>, String, i64);
        let showings: Vec<(i64, ShowingRow)> = sqlx::query_as::<_, Tuple>(
            "SELECT rowid, showing_id, seq, kind, viewer_id, data, at FROM showing_log
             WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
        )
        .bind(after.showings)
        .bind(ends.0)
        .bind(limit)
        .fetch_all(&self.read)
        .await?
        .into_iter()
        .map(|r| (r.0, showing_row((r.1, r.2, r.3, r.4, r.5, r.6))))
        .collect();
        let sql = format!(
            "SELECT rowid, {REGISTRATION_COLUMNS} FROM event_registrations
             WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        );
        type RegTuple = (
            i64,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
            i64,
        );
        let registrations: Vec<(i64, RegistrationRow)> =
            sqlx::query_as::<_, RegTuple>(AssertSqlSafe(sql))
                .bind(after.registrations)
                .bind(ends.1)
                .bind(limit)
                .fetch_all(&self.read)
                .await?
                .into_iter()
                .map(|r| {
                    (
                        r.0,
                        registration_row((r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)),
                    )
                })
                .collect();
        // A full page stops where it was cut; otherwise every row up to the ends is read.
        let upto = |rows: Option<i64>, n: usize, end: i64, from: i64| {
            if limit > 0 && n as i64 >= limit {
                rows.unwrap_or(from)
            } else {
                end.max(from)
            }
        };
        let upto = StatsCursors {
            showings: upto(
                showings.last().map(|r| r.0),
                showings.len(),
                ends.0,
                after.showings,
            ),
            registrations: upto(
                registrations.last().map(|r| r.0),
                registrations.len(),
                ends.1,
                after.registrations,
            ),
        };
        Ok(StatsFeed {
            showings,
            registrations,
            upto,
        })
    }

    async fn event_stats(&self, showing_ids: &[String]) -> Result<Vec<EventStatsRow>> {
        let mut out = Vec::with_capacity(showing_ids.len());
        for chunk in showing_ids.chunks(500) {
            let sql = format!(
                "SELECT showing_id, event_id, data, updated_at FROM event_stats WHERE showing_id IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String, String, i64)>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(
                q.fetch_all(&self.read)
                    .await?
                    .into_iter()
                    .map(|r| EventStatsRow {
                        showing_id: r.0,
                        event_id: r.1,
                        data: r.2,
                        updated_at: r.3,
                    }),
            );
        }
        Ok(out)
    }

    async fn event_stats_of(&self, event_id: &str) -> Result<Vec<EventStatsRow>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT showing_id, event_id, data, updated_at FROM event_stats
             WHERE event_id = ? ORDER BY showing_id",
        )
        .bind(event_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| EventStatsRow {
                showing_id: r.0,
                event_id: r.1,
                data: r.2,
                updated_at: r.3,
            })
            .collect())
    }

    async fn viewer_stats(&self, keys: &[(String, String)]) -> Result<Vec<ViewerStatsRow>> {
        let mut by_showing: HashMap<&str, Vec<&str>> = HashMap::new();
        for (showing, viewer) in keys {
            by_showing.entry(showing).or_default().push(viewer);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (showing, viewers) in by_showing {
            for chunk in viewers.chunks(500) {
                let sql = format!(
                    "SELECT viewer_id, data FROM event_stats_viewers
                     WHERE showing_id = ? AND viewer_id IN ({})",
                    placeholders(chunk.len())
                );
                let mut q = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql)).bind(showing);
                for v in chunk {
                    q = q.bind(*v);
                }
                out.extend(
                    q.fetch_all(&self.read)
                        .await?
                        .into_iter()
                        .map(|r| ViewerStatsRow {
                            showing_id: showing.to_string(),
                            viewer_id: r.0,
                            data: r.1,
                        }),
                );
            }
        }
        Ok(out)
    }

    async fn save_event_stats(
        &self,
        from: StatsCursors,
        to: StatsCursors,
        showings: Vec<EventStatsRow>,
        viewers: Vec<ViewerStatsRow>,
    ) -> Result<bool> {
        match self
            .submit(Write::SaveEventStats {
                from,
                to,
                showings,
                viewers,
            })
            .await?
        {
            Output::Deleted(d) => Ok(d),
            _ => unreachable!("saving event stats answers whether it applied"),
        }
    }
}

/// The event-analytics tailer's cursors.
async fn read_stats_cursors(conn: &mut SqliteConnection) -> Result<StatsCursors> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT source, position FROM event_stats_cursors")
            .fetch_all(&mut *conn)
            .await?;
    let at = |s: &str| rows.iter().find(|r| r.0 == s).map_or(0, |r| r.1);
    Ok(StatsCursors {
        showings: at("showing_log"),
        registrations: at("event_registrations"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_are_cut_into_a_few_statement_shapes() {
        for n in [0usize, 1, 3, 4, 5, 17, 255, 256, 300, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let runs: Vec<&[usize]> = super::shaped(&items).collect();
            assert_eq!(runs.concat(), items, "every item once, in order ({n})");
            assert!(runs.iter().all(|r| super::SHAPES.contains(&r.len())), "{n}");
        }
        let runs: Vec<usize> = super::shaped(&[0u8; 300]).map(<[u8]>::len).collect();
        assert_eq!(runs, [256, 16, 16, 4, 4, 4]);
    }
}
