//! volley-server: the HTTP API, the WebSocket protocol and the web widget, on one port.
//!
//! Flow semantics live in volley-flow and persistence in volley-store; this crate
//! connects them to the network: it applies participant inputs through the engine,
//! logs the results durably, paces and delivers them, and serves the embedded web
//! files. See ARCHITECTURE.md for the map.

mod api;
mod assets;
mod audience;
mod campaigns;
pub mod channels;
mod clock;
mod config;
mod contacts;
mod conversation;
mod error;
mod flows;
pub mod handoff;
mod ids;
mod notify;
mod outbound;
mod scheduler;
mod session;
mod telemetry;
mod wire;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::watch;
use volley_store::{SqliteOptions, SqliteStore, Store};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, Limits};
pub use error::ApiError;
pub use flows::DEMO_FLOWS;

/// Everything a request handler can reach.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub flows: flows::Registry,
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
}

/// The router: every route of the server. Request bodies are limited per route: flow
/// sources and CSV uploads may be large, everything else is one protocol message.
pub fn router(app: Arc<App>) -> Router {
    use tower_http::limit::RequestBodyLimitLayer as Limit;
    let message = app.config.limits.max_frame_bytes;
    let upload = audience::MAX_CSV_BYTES + 64 * 1024;
    // Where our limit is above axum's own (2 MiB for body extractors), axum's is lifted.
    let flows = Router::new()
        .route("/api/flows", get(api::list_flows).post(api::publish_flow))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(Limit::new(volley_flow::MAX_SOURCE_BYTES + 1024));
    let uploads = Router::new()
        .route("/api/contacts/import", post(audience::import_csv))
        .route(
            "/api/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(Limit::new(upload));
    Router::new()
        .route("/", get(assets::index))
        .route("/f/{flow}", get(assets::chat))
        .route("/widget.js", get(assets::widget))
        .route("/ws", get(ws::handler))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/flows/{id}", get(api::flow_detail))
        .route("/api/campaigns/{id}", get(campaigns::detail))
        .route("/api/campaigns/{id}/pause", post(campaigns::pause))
        .route("/api/campaigns/{id}/resume", post(campaigns::resume))
        .route("/api/campaigns/{id}/cancel", post(campaigns::cancel))
        .route("/api/conversations", post(api::start))
        .route("/api/conversations/{id}/inputs", post(api::input))
        .route("/api/conversations/{id}/events", get(api::events))
        .route("/api/conversations/{id}/stream", get(api::stream))
        .route("/metrics", get(telemetry::render))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .layer(Limit::new(message))
        .merge(flows)
        .merge(uploads)
        .layer(axum::middleware::map_response(error::json_too_large))
        .with_state(app)
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    /// The admin key generated on first start (shown once), if any.
    pub new_admin_key: Option<String>,
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

/// Opens the store, publishes flows, and starts serving.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Running, String> {
    let mut options = SqliteOptions::new(config.database.clone());
    options.durable = config.durable;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(options)
            .await
            .map_err(|e| format!("cannot open {}: {e}", config.database))?,
    );
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
        convs: conversation::Conversations::default(),
        shutdown,
        connections: AtomicUsize::new(0),
        outbound: outbound::Outbound::new(),
        scheduler: scheduler::Scheduler::default(),
        campaigns: campaigns::Cache::default(),
        channels,
        desk: handoff::Desk::default(),
    });
    let now = app.clock.now_ms();
    app.flows
        .load(app.store.as_ref())
        .await
        .map_err(|e| e.message)?;
    if app.config.demo {
        let published = DEMO_FLOWS
            .iter()
            .map(|(file, src)| app.flows.publish(app.store.as_ref(), file, src, now));
        for r in futures_util::future::join_all(published).await {
            r.map_err(|e| e.message)?;
        }
    }
    if let Some(dir) = &app.config.flows {
        app.flows.publish_dir(app.store.as_ref(), dir, now).await?;
    }
    campaigns::abandon_unfinished(&app)
        .await
        .map_err(|e| e.message)?;
    app.desk.load(
        app.store.open_handoffs().await.map_err(|e| e.to_string())?,
        app.store.agent_queues().await.map_err(|e| e.to_string())?,
    );
    let new_admin_key = contacts::bootstrap_admin_key(&app)
        .await
        .map_err(|e| e.message)?;

    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = router(app.clone());
    let mut stopping = app.shutdown.clone();
    let sweeper_app = app.clone();
    let outbound = tokio::spawn(outbound::run(app.clone()));
    let scheduler = tokio::spawn(scheduler::run(app.clone()));
    let desk = tokio::spawn(handoff::run(app.clone()));
    let task = tokio::spawn(async move {
        let sweeper = tokio::spawn(async move {
            let idle = sweeper_app.config.limits.idle_conversation_secs as i64 * 1000;
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                sweeper_app.convs.sweep(sweeper_app.clock.now_ms(), idle);
            }
        });
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(%e, "server stopped");
        }
        sweeper.abort();
        outbound.abort();
        let _ = scheduler.await;
        let _ = desk.await;
    });
    Ok(Running {
        addr,
        app,
        new_admin_key,
        stop,
        task,
    })
}
