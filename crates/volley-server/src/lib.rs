//! volley-server: the HTTP API, the WebSocket protocol and the web widget, on one port.
//!
//! Flow semantics live in volley-flow and persistence in volley-store; this crate
//! connects them to the network: it applies participant inputs through the engine,
//! logs the results durably, paces and delivers them, and serves the embedded web
//! files. See ARCHITECTURE.md for the map.

mod analytics;
mod api;
mod assets;
mod audience;
pub mod auth;
mod campaigns;
pub mod channels;
mod charts;
mod clock;
mod config;
mod console;
mod contacts;
mod conversation;
mod dashboards;
mod desk_api;
mod error;
mod event_stats;
mod events;
mod exports;
mod flows;
pub mod handoff;
mod ids;
mod inbound;
mod notify;
mod outbound;
mod premiere;
mod scheduler;
mod session;
pub mod stats;
mod tailer;
mod telemetry;
pub mod webhooks;
mod wire;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};
use tokio::sync::watch;
use volley_store::{SqliteOptions, SqliteStore};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, Limits, QueueConfig};
pub use error::ApiError;
pub use events::DEMO_EVENT;
pub use flows::DEMO_FLOWS;
pub use volley_store::Store;
pub use volley_store::{Backup, backup_sqlite as backup};

/// Everything a request handler can reach.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub flows: flows::Registry,
    /// Published events (premieres) and where their videos are.
    pub events: events::Registry,
    pub convs: conversation::Conversations,
    /// Flips to `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Open WebSocket connections.
    pub connections: AtomicUsize,
    /// Requests of flows' HTTP steps, waiting to be sent.
    pub outbound: outbound::Outbound,
    /// Durable timers (waits, timeouts, campaign sends).
    pub scheduler: scheduler::Scheduler,
    /// Campaigns being sent (read once, not once per send).
    pub campaigns: campaigns::Cache,
    /// Notification channels (email, webhook) enabled by the configuration.
    pub channels: channels::Channels,
    /// Open hand-offs and the agents online.
    pub desk: handoff::Desk,
    /// Failed console sign-ins (rate limits).
    pub logins: auth::LoginLimiter,
    /// Premieres being watched: a room per showing.
    pub premieres: premiere::Rooms,
    /// Requests with an idempotency key being answered.
    pub in_flight: inbound::InFlight,
    /// Outbound webhooks: the endpoints and the dispatcher's and sender's signals.
    pub webhooks: webhooks::Webhooks,
    /// Event analytics: the tailer's progress.
    pub event_stats: event_stats::EventStats,
    /// Where the analytics aggregator has read the conversation log up to (a rowid).
    pub stats: watch::Sender<i64>,
}

/// How large a route's request body may be.
#[derive(Clone, Copy, PartialEq)]
enum Body {
    /// One protocol message or form (`limits.max_frame_bytes`).
    Message,
    /// A flow's YAML source.
    FlowSource,
    /// A CSV upload or a campaign with its CSV.
    Upload,
}

/// One route. Every route is a row of [`endpoints`]; [`routes`] lists them for the
/// access-matrix test (tests/it/auth.rs), which fails on a route it does not know.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Body,
    handler: MethodRouter<Arc<App>>,
}

fn endpoint<H, T>(method: Method, path: &'static str, body: Body, handler: H) -> Endpoint
where
    H: axum::handler::Handler<T, Arc<App>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method the router serves");
    Endpoint {
        method,
        path,
        body,
        handler: on(filter, handler),
    }
}

/// Every route of the server. A path's methods share one body class.
fn endpoints() -> Vec<Endpoint> {
    use Body::*;
    use Method as M;
    vec![
        endpoint(M::GET, "/", Message, assets::index),
        endpoint(M::GET, "/f/{flow}", Message, assets::chat),
        endpoint(M::GET, "/widget.js", Message, assets::widget),
        endpoint(M::GET, "/ws", Message, ws::handler),
        endpoint(M::GET, "/api/openapi.json", Message, api::openapi),
        endpoint(M::GET, "/api/flows", FlowSource, api::list_flows),
        endpoint(M::POST, "/api/flows", FlowSource, api::publish_flow),
        endpoint(M::GET, "/api/flows/{id}", Message, api::flow_detail),
        endpoint(M::GET, "/api/flows/{id}/results", Message, exports::results),
        endpoint(
            M::GET,
            "/api/conversations/{id}/transcript",
            Message,
            exports::transcript,
        ),
        endpoint(
            M::GET,
            "/api/events/{id}/attendance",
            Message,
            exports::attendance,
        ),
        endpoint(
            M::GET,
            "/api/analytics/events/{id}",
            Message,
            event_stats::event,
        ),
        endpoint(
            M::POST,
            "/api/events/{id}/conversions",
            Message,
            event_stats::record_conversion,
        ),
        endpoint(
            M::GET,
            "/console/analytics/events/{id}",
            Message,
            dashboards::event_page,
        ),
        endpoint(
            M::GET,
            "/console/analytics/handoffs",
            Message,
            dashboards::handoffs_page,
        ),
        endpoint(
            M::GET,
            "/console/analytics",
            Message,
            dashboards::index_page,
        ),
        endpoint(
            M::GET,
            "/console/analytics/flows/{id}",
            Message,
            dashboards::flow_page,
        ),
        endpoint(
            M::GET,
            "/console/analytics/contacts",
            Message,
            dashboards::contacts_page,
        ),
        endpoint(M::GET, "/api/events", FlowSource, events::list),
        endpoint(M::POST, "/api/events", FlowSource, events::publish_event),
        endpoint(M::GET, "/api/events/{id}", Message, events::detail),
        endpoint(M::GET, "/events/{id}/media", Message, events::media),
        endpoint(M::GET, "/events/{id}", Message, premiere::page),
        endpoint(M::GET, "/events/{id}/ws", Message, premiere::socket),
        endpoint(M::GET, "/event.js", Message, premiere::script),
        endpoint(M::GET, "/event.css", Message, premiere::style),
        endpoint(
            M::POST,
            "/api/events/{id}/register",
            Message,
            premiere::register,
        ),
        endpoint(
            M::POST,
            "/api/contacts/import",
            Upload,
            audience::import_csv,
        ),
        endpoint(M::GET, "/api/campaigns", Upload, campaigns::list),
        endpoint(M::POST, "/api/campaigns", Upload, campaigns::create),
        endpoint(M::GET, "/api/campaigns/{id}", Message, campaigns::detail),
        endpoint(
            M::POST,
            "/api/campaigns/{id}/pause",
            Message,
            campaigns::pause,
        ),
        endpoint(
            M::POST,
            "/api/campaigns/{id}/resume",
            Message,
            campaigns::resume,
        ),
        endpoint(
            M::POST,
            "/api/campaigns/{id}/cancel",
            Message,
            campaigns::cancel,
        ),
        endpoint(M::POST, "/api/conversations", Message, api::start),
        endpoint(M::POST, "/api/contacts", Message, inbound::upsert_contact),
        endpoint(
            M::POST,
            "/api/flows/{id}/start",
            Message,
            inbound::start_flow,
        ),
        endpoint(
            M::POST,
            "/api/conversations/{id}/messages",
            Message,
            inbound::send_message,
        ),
        endpoint(
            M::POST,
            "/api/conversations/{id}/inputs",
            Message,
            api::input,
        ),
        endpoint(
            M::GET,
            "/api/conversations/{id}/events",
            Message,
            api::events,
        ),
        endpoint(
            M::GET,
            "/api/conversations/{id}/stream",
            Message,
            api::stream,
        ),
        endpoint(M::GET, "/api/me", Message, auth::me),
        endpoint(M::GET, "/api/users", Message, auth::list_users),
        endpoint(M::POST, "/api/users", Message, auth::create_user_api),
        endpoint(M::PATCH, "/api/users/{id}", Message, auth::update_user),
        endpoint(
            M::POST,
            "/api/users/{id}/setup-link",
            Message,
            auth::user_setup_link,
        ),
        endpoint(M::GET, "/api/keys", Message, auth::list_keys),
        endpoint(M::POST, "/api/keys", Message, auth::create_key),
        endpoint(M::DELETE, "/api/keys/{id}", Message, auth::delete_key),
        endpoint(M::GET, "/console/login", Message, auth::login_page),
        endpoint(M::POST, "/console/login", Message, auth::login),
        endpoint(M::POST, "/console/logout", Message, auth::logout),
        endpoint(
            M::POST,
            "/console/logout-everywhere",
            Message,
            auth::logout_everywhere,
        ),
        endpoint(M::GET, "/console/setup", Message, auth::setup_page),
        endpoint(M::POST, "/console/setup", Message, auth::setup),
        endpoint(M::GET, "/console/account", Message, auth::account_page),
        endpoint(M::GET, "/console/console.css", Message, auth::asset_css),
        endpoint(M::GET, "/console/console.js", Message, auth::asset_js),
        endpoint(M::GET, "/console", Message, console::queue_page),
        endpoint(
            M::GET,
            "/console/c/{id}",
            Message,
            console::conversation_page,
        ),
        endpoint(M::GET, "/console/desk.js", Message, console::script),
        endpoint(M::GET, "/console/desk.css", Message, console::style),
        endpoint(M::GET, "/api/desk", Message, desk_api::desk),
        endpoint(M::GET, "/api/desk/stream", Message, desk_api::desk_stream),
        endpoint(M::POST, "/api/desk/status", Message, desk_api::set_status),
        endpoint(
            M::GET,
            "/api/handoffs/resolved",
            Message,
            desk_api::resolved,
        ),
        endpoint(M::GET, "/api/handoffs/{id}", Message, desk_api::detail),
        endpoint(
            M::GET,
            "/api/handoffs/{id}/stream",
            Message,
            desk_api::stream,
        ),
        endpoint(M::POST, "/api/handoffs/{id}/pick", Message, desk_api::pick),
        endpoint(
            M::POST,
            "/api/handoffs/{id}/reply",
            Message,
            desk_api::reply,
        ),
        endpoint(M::POST, "/api/handoffs/{id}/note", Message, desk_api::note),
        endpoint(M::POST, "/api/handoffs/{id}/tags", Message, desk_api::tags),
        endpoint(
            M::POST,
            "/api/handoffs/{id}/snooze",
            Message,
            desk_api::snooze,
        ),
        endpoint(
            M::POST,
            "/api/handoffs/{id}/transfer",
            Message,
            desk_api::transfer,
        ),
        endpoint(
            M::POST,
            "/api/handoffs/{id}/resolve",
            Message,
            desk_api::resolve,
        ),
        endpoint(
            M::POST,
            "/api/handoffs/{id}/typing",
            Message,
            desk_api::typing,
        ),
        endpoint(M::GET, "/api/canned", Message, desk_api::list_canned),
        endpoint(M::POST, "/api/canned", Message, desk_api::create_canned),
        endpoint(M::PUT, "/api/canned/{id}", Message, desk_api::update_canned),
        endpoint(
            M::DELETE,
            "/api/canned/{id}",
            Message,
            desk_api::delete_canned,
        ),
        endpoint(
            M::PUT,
            "/api/users/{id}/queues",
            Message,
            desk_api::set_queues,
        ),
        endpoint(M::GET, "/api/webhooks", Message, webhooks::list),
        endpoint(M::POST, "/api/webhooks", Message, webhooks::create),
        endpoint(M::DELETE, "/api/webhooks/{id}", Message, webhooks::delete),
        endpoint(M::PATCH, "/api/webhooks/{id}", Message, webhooks::update),
        endpoint(
            M::POST,
            "/api/webhooks/{id}/rotate-secret",
            Message,
            webhooks::rotate_secret,
        ),
        endpoint(
            M::GET,
            "/api/webhooks/{id}/deliveries",
            Message,
            webhooks::deliveries,
        ),
        endpoint(
            M::POST,
            "/api/webhooks/{id}/deliveries/{delivery}/replay",
            Message,
            webhooks::replay,
        ),
        endpoint(M::GET, "/console/webhooks", Message, webhooks::console_page),
        endpoint(
            M::POST,
            "/console/webhooks/replay",
            Message,
            webhooks::console_replay,
        ),
        endpoint(
            M::GET,
            "/api/analytics/handoffs",
            Message,
            analytics::handoffs,
        ),
        endpoint(
            M::GET,
            "/api/analytics/flows/{id}",
            Message,
            analytics::flows::flow,
        ),
        endpoint(
            M::GET,
            "/api/analytics/contacts",
            Message,
            analytics::flows::contacts,
        ),
        endpoint(M::GET, "/metrics", Message, telemetry::render),
        endpoint(M::GET, "/healthz", Message, api::healthz),
        endpoint(M::GET, "/readyz", Message, api::readyz),
    ]
}

/// Every (method, path) the router serves.
pub fn routes() -> Vec<(Method, &'static str)> {
    endpoints()
        .into_iter()
        .map(|e| (e.method, e.path))
        .collect()
}

/// The router: every route of the server. Request bodies are limited per route: flow
/// sources and CSV uploads may be large, everything else is one protocol message.
pub fn router(app: Arc<App>) -> Router {
    use tower_http::limit::RequestBodyLimitLayer as Limit;
    let message = app.config.limits.max_frame_bytes;
    let upload = audience::MAX_CSV_BYTES + 64 * 1024;
    let [mut messages, mut flows, mut uploads] = [Router::new(), Router::new(), Router::new()];
    for e in endpoints() {
        let group = match e.body {
            Body::Message => &mut messages,
            Body::FlowSource => &mut flows,
            Body::Upload => &mut uploads,
        };
        *group = std::mem::take(group).route(e.path, e.handler);
    }
    // Where our limit is above axum's own (2 MiB for body extractors), axum's is lifted.
    // Idempotency keys apply inside each group's body limit.
    let idempotent = || axum::middleware::from_fn_with_state(app.clone(), inbound::idempotency);
    let track = || axum::middleware::from_fn(telemetry::track);
    let messages = messages.layer(idempotent()).route_layer(track());
    let flows = flows.layer(idempotent()).route_layer(track());
    let uploads = uploads.layer(idempotent()).route_layer(track());
    let flows = flows
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(Limit::new(volley_flow::MAX_SOURCE_BYTES + 1024));
    let uploads = uploads
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(Limit::new(upload));
    messages
        .layer(Limit::new(message))
        .merge(flows)
        .merge(uploads)
        .layer(axum::middleware::from_fn(auth::form_csrf))
        .layer(axum::middleware::map_response(error::json_too_large))
        .with_state(app)
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// The admin key generated on first start (shown once), if any.
    pub new_admin_key: Option<String>,
    /// The setup link (path) of the admin account created on first start (shown once).
    pub new_admin_setup: Option<String>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes connections, waits for in-flight writes, closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.app.store.close().await;
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Opens (creating and migrating) the configured database.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    let mut options = SqliteOptions::new(config.database.clone());
    options.durable = config.durable;
    Ok(Arc::new(SqliteStore::open(options).await.map_err(|e| {
        format!("cannot open {}: {e}", config.database)
    })?))
}

/// Opens the store, publishes flows and events, and starts serving.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Running, String> {
    let store = open_store(&config).await?;
    start_with_store(config, clock, store).await
}

pub async fn start_with_store(
    config: Config,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
) -> Result<Running, String> {
    telemetry::handle();
    outbound::install_crypto_provider();
    let channels = channels::Channels::from_config(&config.channels, config.allow_private_http)?;
    let (stop, shutdown) = watch::channel(false);
    let app = Arc::new(App {
        config,
        store,
        clock,
        flows: flows::Registry::default(),
        events: events::Registry::default(),
        convs: conversation::Conversations::default(),
        shutdown,
        connections: AtomicUsize::new(0),
        outbound: outbound::Outbound::new(),
        scheduler: scheduler::Scheduler::default(),
        campaigns: campaigns::Cache::default(),
        channels,
        desk: handoff::Desk::default(),
        logins: auth::LoginLimiter::default(),
        premieres: premiere::Rooms::default(),
        in_flight: inbound::InFlight::default(),
        webhooks: webhooks::Webhooks::default(),
        event_stats: event_stats::EventStats::default(),
        stats: watch::Sender::new(0),
    });
    let now = app.clock.now_ms();
    app.flows
        .load(app.store.as_ref())
        .await
        .map_err(|e| e.message)?;
    let store = app.store.as_ref();
    if app.config.demo {
        let demo: Vec<(String, String)> = DEMO_FLOWS
            .iter()
            .map(|(file, src)| (file.to_string(), src.to_string()))
            .collect();
        app.flows
            .publish_files(store, &demo, now)
            .await
            .map_err(flows::start_error)?;
        let (file, src) = DEMO_EVENT;
        app.events
            .publish(store, &app.flows, file, src, events::MediaRoot::Demo, now)
            .await
            .map_err(flows::start_error)?;
    }
    if let Some(dir) = &app.config.flows {
        // One directory holds both: event files are told apart by their `event:` key.
        let (event_files, flow_files): (Vec<_>, Vec<_>) = flows::read_dir(dir)?
            .into_iter()
            .partition(|(_, src)| volley_events::is_event_source(src));
        let flow_files: Vec<(String, String)> = flow_files
            .into_iter()
            .map(|(path, src)| (path.display().to_string(), src))
            .collect();
        app.flows
            .publish_files(store, &flow_files, now)
            .await
            .map_err(flows::start_error)?;
        app.events
            .publish_files(store, &app.flows, &event_files, now)
            .await
            .map_err(flows::start_error)?;
    }
    campaigns::abandon_unfinished(&app)
        .await
        .map_err(|e| e.message)?;
    webhooks::load(&app).await?;
    app.desk.load(
        app.store.open_handoffs().await.map_err(|e| e.to_string())?,
        app.store.agent_queues().await.map_err(|e| e.to_string())?,
    );
    let new_admin_key = contacts::bootstrap_admin_key(&app)
        .await
        .map_err(|e| e.message)?;
    let new_admin_setup = auth::bootstrap_admin(&app).await.map_err(|e| e.message)?;

    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = router(app.clone());
    let mut stopping = app.shutdown.clone();
    let sweeper_app = app.clone();
    let outbound = tokio::spawn(outbound::run(app.clone()));
    let scheduler = tokio::spawn(scheduler::run(app.clone()));
    premiere::start(app.clone());
    let desk = tokio::spawn(handoff::run(app.clone()));
    let webhook_tasks = webhooks::start(&app);
    let event_stats_task = event_stats::start(&app);
    let aggregator = tokio::spawn(stats::run(app.clone()));
    let task = tokio::spawn(async move {
        let sweeper = tokio::spawn(async move {
            let idle = sweeper_app.config.limits.idle_conversation_secs as i64 * 1000;
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                sweeper_app.convs.sweep(sweeper_app.clock.now_ms(), idle);
            }
        });
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, service).with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(%e, "server stopped");
        }
        sweeper.abort();
        outbound.abort();
        let _ = scheduler.await;
        let _ = desk.await;
        for t in webhook_tasks {
            let _ = t.await;
        }
        let _ = event_stats_task.await;
        let _ = aggregator.await;
    });
    Ok(Running {
        addr,
        app,
        new_admin_key,
        new_admin_setup,
        stop,
        task,
    })
}
