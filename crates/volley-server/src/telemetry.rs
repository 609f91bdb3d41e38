//! Prometheus metrics (`/metrics`): one process-wide recorder, rendered on request.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets (seconds) for latency histograms: fine below 10 ms, where targets are.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.015, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// The process's metrics handle (installed on first use).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("valid buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Several servers in one process (tests) share the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Names of the metrics this crate records.
pub mod names {
    /// Open WebSocket connections (gauge).
    pub const CONNECTIONS: &str = "volley_ws_connections";
    /// Participant inputs applied, by `result` (`ok`, `error`).
    pub const INPUTS: &str = "volley_inputs_total";
    /// Server time per input: from the frame or request to the durable acknowledgement.
    pub const INPUT_SECONDS: &str = "volley_input_seconds";
    /// Conversation log entries written.
    pub const EVENTS: &str = "volley_events_total";
    /// Conversations started.
    pub const CONVERSATIONS: &str = "volley_conversations_started_total";
    /// Clients disconnected because their queue overflowed.
    pub const SLOW_CLIENTS: &str = "volley_slow_clients_total";
    /// Timers fired, by `result` (`done`, `retry`).
    pub const TIMERS_FIRED: &str = "volley_timers_fired_total";
    /// How late timers start firing: from their due time to the start of the firing.
    pub const TIMER_LATENESS_SECONDS: &str = "volley_timer_lateness_seconds";
    /// Time to fire a timer: from the start of the firing to its durable effects.
    pub const TIMER_FIRE_SECONDS: &str = "volley_timer_fire_seconds";
    /// Timers held in memory by the scheduler (the near future; the rest is in the store).
    pub const TIMERS_IN_MEMORY: &str = "volley_timers_in_memory";
    /// Timers pending in the store (counted at most every 10 s, when scraped).
    pub const TIMERS_PENDING: &str = "volley_timers_pending";
    /// Conversation log entries the analytics aggregator has not counted yet.
    pub const ANALYTICS_BEHIND: &str = "volley_analytics_entries_behind";
    /// Viewers watching premieres (gauge).
    pub const EVENT_VIEWERS: &str = "volley_event_viewers";
    /// Premiere chat messages posted.
    pub const EVENT_CHAT: &str = "volley_event_chat_messages_total";
    /// Webhook delivery attempts, by `result` (`delivered`, `retry`, `dead`).
    pub const WEBHOOK_DELIVERIES: &str = "volley_webhook_deliveries_total";
    /// HTTP requests answered, by `route` (the path template), `method` and `status`.
    pub const HTTP_REQUESTS: &str = "volley_http_requests_total";
    /// Time to answer an HTTP request (to its response head: streams and upgrades
    /// count until they start), by `route`.
    pub const HTTP_SECONDS: &str = "volley_http_request_seconds";
}

/// Middleware (after routing): counts every request by route, method and status, and
/// times it. Errors are the 4xx and 5xx statuses of the counter.
pub async fn track(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(names::HTTP_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// How often a scrape may count the pending timers (a count over the timers table).
const COUNT_EVERY_MS: i64 = 10_000;

/// `GET /metrics`: every metric, with the figures read from the store on scrape
/// refreshed first (pending timers at most every 10 s).
pub async fn render(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<crate::App>>,
) -> String {
    use std::sync::atomic::{AtomicI64, Ordering};
    static COUNTED_AT: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = app.clock.now_ms();
    let last = COUNTED_AT.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= COUNT_EVERY_MS
        && COUNTED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        && let Ok(n) = app.store.pending_timers().await
    {
        metrics::gauge!(names::TIMERS_PENDING).set(n as f64);
    }
    if let Ok((_, end)) = app.store.events_since(0, &[], 0).await {
        let at = *app.stats.borrow();
        metrics::gauge!(names::ANALYTICS_BEHIND).set((end - at).max(0) as f64);
    }
    handle().render()
}
