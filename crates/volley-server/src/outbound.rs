//! Carries out flows' HTTP steps: the request the engine asked for, with the step's
//! timeout, a response size limit, a cap on concurrent requests and a guard against
//! private addresses; the outcome goes back into the conversation as an input.
//!
//! A conversation waiting for a response has the status `calling`. When the server
//! restarts, those conversations' requests are sent again (at least once: an endpoint
//! should tolerate a repeat, as with any webhook).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use volley_flow::{HttpRequest, Input};

use crate::App;
use crate::conversation::Action;

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// A request to send for a conversation waiting at an HTTP step.
pub struct Call {
    pub conversation: String,
    pub request: HttpRequest,
}

/// The outbound HTTP client and its queue.
pub struct Outbound {
    tx: mpsc::UnboundedSender<Call>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Call>>>,
}

impl Outbound {
    pub fn new() -> Outbound {
        // Bounded in practice: a conversation has at most one request pending.
        let (tx, rx) = mpsc::unbounded_channel();
        Outbound {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Queues a request; it is sent once the dispatcher runs.
    pub fn send(&self, call: Call) {
        let _ = self.tx.send(call);
    }
}

/// What every refusal by the SSRF guard says (after the host).
pub(crate) const REFUSED: &str = "is a private, loopback or link-local address";

/// Why a request was not sent or not answered (becomes the flow's `http_error`).
pub(crate) fn refused(host: &str) -> String {
    format!("refused: {host} {REFUSED} (set allow_private_http to allow it)")
}

/// Whether an address is on the public internet (the SSRF guard).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// Resolves names like the system does, then drops non-public addresses.
pub(crate) struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(refused(&host).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A host given as an IP literal skips DNS, so it is checked here.
pub(crate) fn literal_allowed(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_or(true, is_public),
        None => false,
    }
}

/// Makes ring the process's TLS crypto provider (idempotent; done at start-up, before
/// any HTTP client is built).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(allow_private: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("Volley/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .connect_timeout(Duration::from_secs(10));
    if allow_private {
        b = b.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
    } else {
        b = b
            .dns_resolver(Arc::new(GuardedResolver))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if !literal_allowed(attempt.url()) {
                    let host = attempt.url().host_str().unwrap_or_default().to_string();
                    attempt.error(refused(&host))
                } else {
                    attempt.follow()
                }
            }));
    }
    b.build().expect("the HTTP client builds")
}

/// Sends one request; the result is the engine input that reports it.
async fn perform(
    client: &reqwest::Client,
    req: &HttpRequest,
    allow_private: bool,
    max_bytes: usize,
    max_timeout: Duration,
) -> Input {
    match try_perform(client, req, allow_private, max_bytes, max_timeout).await {
        Ok((status, body)) => Input::HttpResponse { status, body },
        Err(error) => Input::HttpFailed { error },
    }
}

async fn try_perform(
    client: &reqwest::Client,
    req: &HttpRequest,
    allow_private: bool,
    max_bytes: usize,
    max_timeout: Duration,
) -> Result<(u16, Value), String> {
    let url = reqwest::Url::parse(&req.url).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme `{}`", url.scheme()));
    }
    if !allow_private && !literal_allowed(&url) {
        return Err(refused(url.host_str().unwrap_or_default()));
    }
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("invalid method `{}`", req.method))?;
    let timeout = Duration::from_millis(req.timeout_ms).min(max_timeout);
    let mut builder = client.request(method, url).timeout(timeout);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    if let Some(body) = &req.body {
        builder = builder.json(body);
    }
    let mut resp = builder.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(format!("response larger than {max_bytes} bytes"));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(format!("response larger than {max_bytes} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, body))
}

/// The error a flow author sees: short, without Rust type names.
pub(crate) fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut msg = String::new();
    let mut source: Option<&dyn Error> = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    if msg.is_empty() {
        msg = e.to_string();
    }
    if e.is_connect() {
        format!("could not connect: {msg}")
    } else {
        msg
    }
}

/// Sends queued requests until the server stops; re-sends those interrupted by a restart.
pub async fn run(app: Arc<App>) {
    let Some(mut rx) = app.outbound.rx.lock().expect("outbound lock").take() else {
        return;
    };
    let limits = &app.config.limits;
    let client = Arc::new(client(app.config.allow_private_http));
    let permits = Arc::new(Semaphore::new(limits.http_concurrency.max(1)));
    resend_interrupted(&app).await;
    let mut stopping = app.shutdown.clone();
    loop {
        let call = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => return },
            _ = stopping.wait_for(|s| *s) => return,
        };
        let (app, client, permits) = (app.clone(), client.clone(), permits.clone());
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let limits = &app.config.limits;
            let input = perform(
                &client,
                &call.request,
                app.config.allow_private_http,
                limits.http_response_bytes,
                Duration::from_secs(limits.http_timeout_secs),
            )
            .await;
            deliver(&app, &call.conversation, input).await;
        });
    }
}

async fn deliver(app: &App, conversation: &str, input: Input) {
    let result = match app.convs.get(app, conversation).await {
        Ok(Some(conv)) => conv
            .input(app, None, Action::System(input))
            .await
            .map(|_| ()),
        Ok(None) => return,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        // e.g. the conversation was restarted or a person took over meanwhile.
        tracing::warn!(
            conversation,
            code = e.code,
            "HTTP step result not applied: {}",
            e.message
        );
    }
}

/// Requests pending when the server stopped: found by status, read from the log.
async fn resend_interrupted(app: &App) {
    let ids = match app.store.calling_conversations().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(%e, "cannot list conversations waiting for HTTP");
            return;
        }
    };
    for id in ids {
        match pending_request(app, &id).await {
            Some(request) => app.outbound.send(Call {
                conversation: id,
                request,
            }),
            None => tracing::warn!(conversation = id, "waiting for HTTP but no request logged"),
        }
    }
}

async fn pending_request(app: &App, id: &str) -> Option<HttpRequest> {
    let row = app.store.conversation(id).await.ok()??;
    let events = app
        .store
        .events_after(id, (row.last_seq - 64).max(0), 64)
        .await
        .ok()?;
    let http = events.iter().rev().find(|e| e.kind == "http")?;
    let data: Value = serde_json::from_str(&http.data).ok()?;
    serde_json::from_value(data["request"].clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
