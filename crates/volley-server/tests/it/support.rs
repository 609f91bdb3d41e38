//! A real server on an ephemeral port with a temporary SQLite file, and a WebSocket
//! client that speaks the protocol.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use volley_server::{Config, ManualClock, Running, SystemClock};

pub const ADMIN_KEY: &str = "test-admin-key";
pub const IDENTITY_SECRET: &str = "test-identity-secret";

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub struct TestServer {
    pub running: Running,
    pub dir: Arc<tempfile::TempDir>,
}

pub fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: format!("sqlite://{}", dir.join("volley.db").display()),
        demo: false,
        flows: Some(data_dir()),
        admin_key: Some(ADMIN_KEY.into()),
        identity_secret: Some(IDENTITY_SECRET.into()),
        durable: false,
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_with(dir.clone(), config(dir.path())).await
    }

    pub async fn start_with(dir: Arc<tempfile::TempDir>, config: Config) -> TestServer {
        Self::start_on(dir, config, Arc::new(SystemClock)).await
    }

    /// A fresh server (new directory, test configuration) on virtual time.
    pub async fn on_clock(clock: &Arc<ManualClock>) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_on(dir.clone(), config(dir.path()), clock.clone()).await
    }

    /// A server whose time is `clock` (virtual time in tests).
    pub async fn start_on(
        dir: Arc<tempfile::TempDir>,
        config: Config,
        clock: Arc<dyn volley_server::Clock>,
    ) -> TestServer {
        let running = volley_server::start(config, clock)
            .await
            .expect("server starts");
        TestServer { running, dir }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.running.addr)
    }

    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.running.shutdown().await;
        self.dir
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
    /// Every `event` frame received, in order.
    pub events: Vec<Value>,
    /// The latest `ask` or `end` received since the last input was sent.
    open: Option<Value>,
    next_id: u32,
}

pub fn hello(flow: &str) -> Value {
    json!({"type": "hello", "v": 1, "flow": flow, "timezone": "Europe/Lisbon", "locale": "en-GB"})
}

impl Client {
    pub async fn raw(server: &TestServer) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("connects");
        ws
    }

    pub async fn connect(server: &TestServer, hello: Value) -> Client {
        let mut ws = Self::raw(server).await;
        ws.send(Message::Text(hello.to_string().into()))
            .await
            .unwrap();
        let mut c = Client {
            ws,
            welcome: Value::Null,
            events: Vec::new(),
            open: None,
            next_id: 0,
        };
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.welcome = w;
        c
    }

    pub fn conversation(&self) -> String {
        self.welcome["conversation"].as_str().unwrap().to_string()
    }

    pub async fn send(&mut self, v: Value) {
        if matches!(
            v["type"].as_str(),
            Some("answer" | "back" | "skip" | "restart")
        ) {
            self.open = None;
        }
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next frame (events are also recorded in `events`).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("the connection is open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "event" {
                        if matches!(v["event"]["kind"].as_str(), Some("ask" | "end")) {
                            self.open = Some(v["event"].clone());
                        }
                        self.events.push(v.clone());
                    }
                    return v;
                }
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Frames up to and including the first one `stop` accepts.
    pub async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.recv().await;
            let done = stop(&v);
            out.push(v);
            if done {
                return out;
            }
        }
    }

    /// Waits for the next open question (or the end); returns its `ask` (or `end`) event.
    pub async fn next_question(&mut self) -> Value {
        if let Some(q) = self.open.take() {
            return q;
        }
        self.until(|v| matches!(v["event"]["kind"].as_str(), Some("ask" | "end")))
            .await;
        self.open.take().expect("just received")
    }

    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("m{}-{}", self.next_id, rand_suffix())
    }

    /// The answer frame for a question, with sample values.
    pub fn answer_for(&mut self, ask: &Value, k: usize) -> Value {
        let q: volley_flow::Question = serde_json::from_value(ask.clone()).expect("an ask event");
        let id = self.fresh_id();
        match volley_flow::sample::answer(&q, k) {
            volley_flow::Input::Text { text } => {
                json!({"type": "answer", "id": id, "step": q.step, "text": text})
            }
            volley_flow::Input::Choice { values } => {
                json!({"type": "answer", "id": id, "step": q.step, "values": values})
            }
            other => panic!("unexpected sample {other:?}"),
        }
    }

    /// Sends an input and waits for its ack (or error); returns that frame.
    pub async fn input(&mut self, frame: Value) -> Value {
        let id = frame["id"].clone();
        self.send(frame).await;
        self.until(|v| (v["type"] == "ack" || v["type"] == "error") && v["id"] == id)
            .await
            .pop()
            .unwrap()
    }

    pub fn seqs(&self) -> Vec<i64> {
        self.events
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect()
    }

    pub fn max_seq(&self) -> i64 {
        self.seqs().into_iter().max().unwrap_or(0)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Every visible event of a conversation that is due, read from the log over HTTP.
pub async fn full_history(server: &TestServer, token: &str, conversation: &str) -> Vec<Value> {
    let page: Value = reqwest::Client::new()
        .get(server.http(&format!("/api/conversations/{conversation}/events?after=0")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"].as_array().unwrap().clone()
}

/// hex(HMAC-SHA256(the test site secret, user id)): what an embedding site computes.
pub fn sign(user_id: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(IDENTITY_SECRET.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An admin API call: (status, JSON body).
pub async fn admin(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut req = http
        .request(method.parse().unwrap(), server.http(path))
        .bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

// Console accounts (docs/accounts.md): users made through the API, signed in by
// their setup link.

/// The password test users set.
pub const PASSWORD: &str = "correct horse battery";

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A JSON call with the admin key: (status, body).
pub async fn api(server: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http()
        .request(method.parse().unwrap(), server.http(path))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A session: the cookie's token and its CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub csrf: String,
}

pub fn session_token(r: &reqwest::Response) -> Option<String> {
    let c = r.headers().get(SET_COOKIE)?.to_str().ok()?;
    let token = c.strip_prefix("volley_session=")?.split(';').next()?;
    (!token.is_empty()).then(|| token.to_string())
}

pub async fn me(server: &TestServer, token: &str) -> (u16, Value) {
    let r = http()
        .get(server.http("/api/me"))
        .header(COOKIE, format!("volley_session={token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

pub async fn session_of(server: &TestServer, token: String) -> Session {
    let (status, me) = me(server, &token).await;
    assert_eq!(status, 200, "{me}");
    Session {
        token,
        csrf: me["csrf"].as_str().unwrap().into(),
    }
}

/// Creates a user through the API; returns (id, setup link path).
pub async fn create_user(server: &TestServer, email: &str, role: &str) -> (String, String) {
    let (status, v) = api(
        server,
        "POST",
        "/api/users",
        json!({"email": email, "name": format!("{role} user"), "role": role}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    (
        v["user"]["id"].as_str().unwrap().into(),
        v["setup_link"].as_str().unwrap().into(),
    )
}

pub fn token_of(link: &str) -> &str {
    link.split_once("token=").unwrap().1
}

pub async fn post_setup(
    server: &TestServer,
    link: &str,
    pw: &str,
    confirm: &str,
) -> reqwest::Response {
    http()
        .post(server.http("/console/setup"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", token_of(link)),
            ("password", pw),
            ("confirm", confirm),
        ]))
        .send()
        .await
        .unwrap()
}

/// A user with a password, signed in (by the setup link).
pub async fn user(server: &TestServer, email: &str, role: &str) -> Session {
    let (_, link) = create_user(server, email, role).await;
    let r = post_setup(server, &link, PASSWORD, PASSWORD).await;
    assert_eq!(r.status(), 303);
    session_of(server, session_token(&r).expect("a session cookie")).await
}

// ---------------------------------------------------------------------------------------
// A local webhook receiver

pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A local HTTP receiver: `POST /{outcome}` answers by outcome (`ok`, `fail` 500, `busy`
/// 429, `bad` 400, `moved` 308, `slow` after 5 s, `big` 8 MiB) and records the request.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn url(&self, outcome: &str) -> String {
        format!("http://{}/{outcome}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

pub async fn receiver() -> Receiver {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/{outcome}",
            post(
                async |State(requests): State<Arc<Mutex<Vec<Received>>>>,
                       UrlPath(outcome): UrlPath<String>,
                       headers: HeaderMap,
                       body: Bytes|
                       -> Response {
                    requests.lock().unwrap().push(Received {
                        path: outcome.clone(),
                        headers,
                        body,
                    });
                    match outcome.as_str() {
                        "ok" => StatusCode::NO_CONTENT.into_response(),
                        "fail" => {
                            (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response()
                        }
                        "busy" => StatusCode::TOO_MANY_REQUESTS.into_response(),
                        "bad" => (StatusCode::BAD_REQUEST, "unknown field `data`").into_response(),
                        "moved" => {
                            (StatusCode::PERMANENT_REDIRECT, [("location", "/ok")]).into_response()
                        }
                        "slow" => {
                            // The one sleep: a receiver slower than the sender's timeout.
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            StatusCode::NO_CONTENT.into_response()
                        }
                        "big" => (StatusCode::OK, vec![b'x'; 8 << 20]).into_response(),
                        _ => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { addr, requests }
}

/// A console page fetched with a signed-in user's session: its status and HTML.
pub async fn console_page(server: &TestServer, session: &str, path: &str) -> (u16, String) {
    let r = http()
        .get(server.http(path))
        .header("cookie", format!("volley_session={session}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
