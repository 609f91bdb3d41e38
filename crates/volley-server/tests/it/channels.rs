//! Notification channels against real receivers: a real SMTP server (Python's
//! `aiosmtpd`, parsing each email with Python's own `email` package) and a real HTTP
//! receiver (axum on port 0) that records every request.
//!
//! The SMTP tests run when `python3 -c "import aiosmtpd"` works (`pip install
//! aiosmtpd`). With `VOLLEY_SMTP_TESTS=1` (set by `scripts/test.sh`, so in CI) a
//! missing `aiosmtpd` is a failure, not a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use serde_json::{Value, json};
use volley_server::channels::{
    AssistantInfo, Channel, ChannelError, Channels, ChannelsConfig, Email, EmailConfig, FlowInfo,
    Message, Notification, Recipient, Webhook, WebhookConfig,
};
use volley_server::{Clock, Config};

use crate::support::{Client, TestServer, config, hello, receiver};

const SECRET_BYTES: &[u8] = b"a test secret of 32 bytes length";

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET_BYTES)
    )
}

fn notification(email: Option<&str>, name: &str, assistant: &str) -> Notification {
    Notification {
        id: Notification::stable_id("cv_test", 3),
        contact: Recipient {
            id: "ct_1".into(),
            name: Some(name.into()),
            email: email.map(Into::into),
            external_id: Some("user-42".into()),
        },
        flow: FlowInfo {
            id: "coffee".into(),
            title: "Coffee order".into(),
        },
        conversation_id: "cv_test".into(),
        assistant: AssistantInfo {
            name: Some(assistant.into()),
            label: "Automated assistant".into(),
        },
        messages: vec![
            Message {
                text: "Your latte is ready.".into(),
                html: "<p>Your <strong>latte</strong> is ready.</p>".into(),
            },
            Message {
                text: "Pick it up at the counter.".into(),
                html: "<p>Pick it up at the counter.</p>".into(),
            },
        ],
        continue_url: Notification::continue_url("https://chat.example.com/", "coffee"),
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------
// SMTP

/// The SMTP server: records each accepted email as JSON parsed by Python's `email`
/// package; refuses two recipients with a transient and a permanent reply. It exits when
/// its standard input closes (the test process ended) or after five minutes.
const SMTP_SERVER: &str = r#"
import email, email.policy, json, os, sys, threading
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]
REFUSE = {
    "busy@example.com": "451 4.3.0 Mailbox busy, try again later",
    "nobody@example.com": "550 5.1.1 No such user",
}

class Handler:
    def __init__(self):
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in REFUSE:
            return REFUSE[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        def body(kind):
            part = msg.get_body(preferencelist=(kind,))
            return None if part is None else part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": [[k, str(v)] for k, v in msg.items()],
            "to": [a.addr_spec for a in msg["To"].addresses],
            "to_names": [a.display_name for a in msg["To"].addresses],
            "text": body("plain"),
            "html": body("html"),
            "raw": raw.decode("utf-8", "replace"),
        }
        self.count += 1
        tmp = os.path.join(out, f"{self.count}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(out, f"{self.count}.json"))
        return "250 Message accepted"

controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
threading.Timer(300, lambda: os._exit(0)).start()
sys.stdin.read()
os._exit(0)
"#;

struct SmtpServer {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Starts the server, or returns `None` (skip) when `aiosmtpd` is not installed and
    /// `VOLLEY_SMTP_TESTS` is not `1`.
    fn start() -> Option<SmtpServer> {
        let required = std::env::var("VOLLEY_SMTP_TESTS").is_ok_and(|v| v == "1");
        let available = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(
                !required,
                "VOLLEY_SMTP_TESTS=1 but python3 cannot import aiosmtpd (pip install aiosmtpd)"
            );
            eprintln!("skipping SMTP test: python3 cannot import aiosmtpd");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, SMTP_SERVER).unwrap();
        let received = dir.path().join("received");
        std::fs::create_dir(&received).unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&received)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let stdout = child.stdout.take().unwrap();
        let server = SmtpServer { port, child, dir };
        // Bounded wait for the server's "ready" line (it has bound the port then).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the SMTP server starts within 30 s");
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Some(server)
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn received_dir(&self) -> PathBuf {
        self.dir.path().join("received")
    }

    /// The emails accepted so far, in order.
    fn received(&self) -> Vec<Value> {
        read_received(&self.received_dir())
    }
}

fn read_received(dir: &Path) -> Vec<Value> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let n = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (n, p)
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

fn email_config(url: String, from: &str) -> EmailConfig {
    EmailConfig {
        url: Some(url),
        from: Some(from.into()),
        reply_to: Some("Support <support@example.com>".into()),
        timeout_ms: 10_000,
        ..EmailConfig::default()
    }
}

fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_email_arrives_with_text_html_and_the_continue_link() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let email = Email::new(&email_config(smtp.url(), "noreply@example.com")).unwrap();
    let n = notification(Some("ann@example.com"), "Ann Example", "Coffee Bot");
    assert!(email.reaches(&n));
    email.send(&n).await.expect("the email is accepted");

    let received = smtp.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let mail = &received[0];
    assert_eq!(mail["mail_from"], "noreply@example.com");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["ann@example.com"]));
    assert_eq!(mail["to"], serde_json::json!(["ann@example.com"]));
    assert_eq!(mail["to_names"], serde_json::json!(["Ann Example"]));
    // Without a name of its own, the sender is shown as the assistant.
    assert_eq!(header(mail, "From"), ["Coffee Bot <noreply@example.com>"]);
    assert_eq!(header(mail, "Reply-To"), ["Support <support@example.com>"]);
    assert_eq!(header(mail, "Subject"), ["New message from Coffee Bot"]);
    assert_eq!(header(mail, "Auto-Submitted"), ["auto-generated"]);
    assert_eq!(
        header(mail, "Message-ID"),
        [format!("<{}@example.com>", n.id).as_str()]
    );

    let text = mail["text"]
        .as_str()
        .expect("a text/plain part")
        .replace("\r\n", "\n");
    for part in [
        "Coffee Bot sent you a new message in \"Coffee order\"",
        "Your latte is ready.\n\nPick it up at the counter.",
        "Continue the conversation: https://chat.example.com/f/coffee",
        "sent by an automated assistant (Automated assistant)",
    ] {
        assert!(
            text.contains(part),
            "{part:?} not in the text part:\n{text}"
        );
    }
    let html = mail["html"].as_str().expect("a text/html part");
    for part in [
        "<strong>Coffee Bot</strong> sent you a new message in <em>Coffee order</em>",
        "<p>Your <strong>latte</strong> is ready.</p>",
        "<p>Pick it up at the counter.</p>",
        "<a href=\"https://chat.example.com/f/coffee\">Continue the conversation</a>",
        "sent by an automated assistant (Automated assistant)",
    ] {
        assert!(
            html.contains(part),
            "{part:?} not in the HTML part:\n{html}"
        );
    }
}

#[tokio::test]
async fn names_with_line_breaks_cannot_add_headers() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let email = Email::new(&email_config(smtp.url(), "Volley <noreply@example.com>")).unwrap();
    let mut n = notification(
        Some("ann@example.com"),
        "Ann\r\nBcc: x@y",
        "Coffee Bot\r\nBcc: x@y\r\n",
    );
    n.flow.title = "Coffee\r\nBcc: x@y".into();
    email.send(&n).await.expect("the email is accepted");

    // An address with a line break is refused before anything is sent.
    let mut bad = n.clone();
    bad.contact.email = Some("ann@example.com\r\nBcc: x@y".into());
    match email.send(&bad).await {
        Err(ChannelError::Permanent(msg)) => assert!(msg.contains("invalid email address")),
        other => panic!("expected a permanent failure, got {other:?}"),
    }

    let received = smtp.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let mail = &received[0];
    assert!(header(mail, "Bcc").is_empty(), "{mail:#?}");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["ann@example.com"]));
    assert_eq!(mail["to"], serde_json::json!(["ann@example.com"]));
    assert_eq!(mail["to_names"], serde_json::json!(["Ann Bcc: x@y"]));
    // A configured sender name is kept.
    assert_eq!(header(mail, "From"), ["Volley <noreply@example.com>"]);
    assert_eq!(
        header(mail, "Subject"),
        ["New message from Coffee Bot Bcc: x@y"]
    );
    let raw = mail["raw"].as_str().unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        !head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{raw}"
    );
}

#[tokio::test]
async fn smtp_replies_are_sorted_into_temporary_and_permanent() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let email = Email::new(&email_config(smtp.url(), "noreply@example.com")).unwrap();

    let busy = notification(Some("busy@example.com"), "Busy", "Coffee Bot");
    match email.send(&busy).await {
        Err(e @ ChannelError::Temporary(_)) => {
            assert!(e.is_temporary());
            assert!(e.to_string().contains("451"), "{e}");
        }
        other => panic!("a 451 reply is temporary, got {other:?}"),
    }
    let nobody = notification(Some("nobody@example.com"), "Nobody", "Coffee Bot");
    match email.send(&nobody).await {
        Err(e @ ChannelError::Permanent(_)) => {
            assert!(!e.is_temporary());
            assert!(e.to_string().contains("550"), "{e}");
        }
        other => panic!("a 550 reply is permanent, got {other:?}"),
    }
    // A contact without an address is skipped, not an error, and nothing is sent.
    let none = notification(None, "No Address", "Coffee Bot");
    assert!(!email.reaches(&none));
    email.send(&none).await.expect("skipped");
    assert!(smtp.received().is_empty());
}

#[tokio::test]
async fn send_all_uses_every_channel_that_reaches_the_contact() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let rx = receiver().await;
    let channels = Channels::from_config(
        &ChannelsConfig {
            email: email_config(smtp.url(), "noreply@example.com"),
            webhook: webhook_config(rx.url("ok")),
            ..ChannelsConfig::default()
        },
        false,
    )
    .unwrap();
    assert_eq!(channels.names(), ["email", "webhook"]);

    let with_email = notification(Some("ann@example.com"), "Ann", "Coffee Bot");
    let deliveries = channels.send_all(&with_email).await;
    let sent: Vec<_> = deliveries.iter().map(|d| d.channel).collect();
    assert_eq!(sent, ["email", "webhook"]);
    assert!(
        deliveries.iter().all(|d| d.result.is_ok()),
        "{deliveries:?}"
    );

    // Without an address, email is not tried.
    let without = notification(None, "Bo", "Coffee Bot");
    assert!(channels.reaches(&without));
    let deliveries = channels.send_all(&without).await;
    let sent: Vec<_> = deliveries.iter().map(|d| d.channel).collect();
    assert_eq!(sent, ["webhook"]);
    channels.send_to("email", &without).await.expect("skipped");

    assert_eq!(smtp.received().len(), 1);
    assert_eq!(rx.count(), 2);
}

#[tokio::test]
async fn an_smtp_server_that_is_down_is_a_temporary_failure() {
    let email = Email::new(&email_config(
        format!("smtp://127.0.0.1:{}", free_port()),
        "noreply@example.com",
    ))
    .unwrap();
    let n = notification(Some("ann@example.com"), "Ann", "Coffee Bot");
    match email.send(&n).await {
        Err(e) => assert!(e.is_temporary(), "connection refused is temporary: {e}"),
        Ok(()) => panic!("sent to a closed port"),
    }
}

// ---------------------------------------------------------------------------------------
// Webhook

fn webhook_config(url: String) -> WebhookConfig {
    WebhookConfig {
        url: Some(url),
        secret: Some(secret()),
        timeout_ms: 200,
        response_bytes: 1024,
        allow_private: true,
    }
}

fn webhook(url: String) -> Webhook {
    Webhook::new(&webhook_config(url), false).unwrap()
}

/// Standard Webhooks verification, written from the specification.
fn verify(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    use hmac::{KeyInit, Mac};
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    let id = get("webhook-id")?;
    let timestamp = get("webhook-timestamp")?;
    let signatures = get("webhook-signature")?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET_BYTES).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    {
        Ok(())
    } else {
        Err(format!("no valid signature in {signatures:?}"))
    }
}

#[tokio::test]
async fn a_webhook_is_posted_as_signed_json() {
    let rx = receiver().await;
    let n = notification(Some("ann@example.com"), "Ann", "Coffee Bot");
    webhook(rx.url("ok")).send(&n).await.expect("delivered");

    let requests = rx.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.path, "ok");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(req.headers["webhook-id"], n.id.as_str());
    verify(&req.headers, &req.body).expect("the signature verifies");
    let timestamp: i64 = req.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!((now - timestamp).abs() < 300, "{timestamp} vs {now}");

    // Any change to the body, id or timestamp breaks the signature.
    let mut tampered = req.body.to_vec();
    tampered[10] ^= 1;
    assert!(verify(&req.headers, &tampered).is_err());
    let mut other_id = req.headers.clone();
    other_id.insert("webhook-id", "ntf_other".parse().unwrap());
    assert!(verify(&other_id, &req.body).is_err());

    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["type"], "notification");
    let sent_at: jiff::Timestamp = body["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(sent_at.as_second(), timestamp);
    assert_eq!(body["data"], serde_json::to_value(&n).unwrap());
    assert_eq!(body["data"]["contact"]["external_id"], "user-42");
    assert_eq!(
        body["data"]["messages"][0]["html"],
        "<p>Your <strong>latte</strong> is ready.</p>"
    );
    assert_eq!(
        body["data"]["continue_url"],
        "https://chat.example.com/f/coffee"
    );
    // The payload reads back into a notification.
    let back: Notification = serde_json::from_value(body["data"].clone()).unwrap();
    assert_eq!(back, n);
}

#[tokio::test]
async fn webhook_answers_are_sorted_into_temporary_and_permanent() {
    let rx = receiver().await;
    let n = notification(None, "Ann", "Coffee Bot");
    for (outcome, temporary, quoted) in [
        (
            "fail",
            true,
            "HTTP 500 Internal Server Error: database down",
        ),
        ("busy", true, "HTTP 429"),
        ("bad", false, "HTTP 400 Bad Request: unknown field `data`"),
        ("moved", false, "HTTP 308"),
        ("missing", false, "HTTP 404"),
    ] {
        match webhook(rx.url(outcome)).send(&n).await {
            Err(e) => {
                assert_eq!(e.is_temporary(), temporary, "{outcome}: {e}");
                assert!(e.to_string().contains(quoted), "{outcome}: {e}");
            }
            Ok(()) => panic!("{outcome}: reported as delivered"),
        }
    }
    // Redirects are not followed.
    assert_eq!(rx.count(), 5);
    // A large answer is read only up to the limit and does not fail a delivery.
    webhook(rx.url("big")).send(&n).await.expect("delivered");
}

#[tokio::test]
async fn a_slow_webhook_receiver_times_out_as_temporary() {
    let rx = receiver().await;
    let n = notification(None, "Ann", "Coffee Bot");
    let started = Instant::now();
    match webhook(rx.url("slow")).send(&n).await {
        Err(e) => {
            assert!(e.is_temporary(), "{e}");
            assert!(e.to_string().contains("timed out"), "{e}");
        }
        Ok(()) => panic!("delivered despite the timeout"),
    }
    // Cut off by the 200 ms timeout, well before the receiver's 5 s answer.
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(rx.count(), 1);

    // Nothing listening: a refused connection is temporary too.
    let down = webhook(format!("http://127.0.0.1:{}/ok", free_port()));
    let e = down.send(&n).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
}

#[tokio::test]
async fn private_webhook_addresses_are_refused_unless_allowed() {
    let rx = receiver().await;
    let n = notification(None, "Ann", "Coffee Bot");
    let guarded = |url: String| {
        Webhook::new(
            &WebhookConfig {
                allow_private: false,
                ..webhook_config(url)
            },
            false,
        )
        .unwrap()
    };
    // An IP literal, and a name that resolves to loopback.
    for url in [
        rx.url("ok"),
        format!("http://localhost:{}/ok", rx.addr.port()),
    ] {
        match guarded(url.clone()).send(&n).await {
            Err(ChannelError::Permanent(msg)) => {
                assert!(
                    msg.contains("private, loopback or link-local"),
                    "{url}: {msg}"
                )
            }
            other => panic!("{url}: expected a permanent refusal, got {other:?}"),
        }
    }
    assert_eq!(rx.count(), 0, "a refused request reached the receiver");

    // Allowed by the server-wide allow_private_http or the channel's allow_private.
    let allowed = Webhook::new(
        &WebhookConfig {
            allow_private: false,
            ..webhook_config(rx.url("ok"))
        },
        true,
    )
    .unwrap();
    allowed
        .send(&n)
        .await
        .expect("allowed by allow_private_http");
    webhook(rx.url("ok"))
        .send(&n)
        .await
        .expect("allowed by channels.webhook.allow_private");
    assert_eq!(rx.count(), 2);
}

// ---------------------------------------------------------------------------------------
// Configuration and the registry

#[test]
fn channels_are_configured_in_toml_and_off_by_default() {
    let c = Config::default();
    assert!(c.channels.email.url.is_none() && c.channels.webhook.url.is_none());
    assert!(
        Channels::from_config(&ChannelsConfig::default(), false)
            .unwrap()
            .is_empty()
    );

    let c = Config::from_toml(
        r#"
        [channels.email]
        url = "smtps://user:pass@smtp.example.com"
        from = "Volley <noreply@example.com>"
        reply_to = "support@example.com"
        timeout_ms = 5000

        [channels.webhook]
        url = "https://hooks.example.com/volley"
        secret = "whsec_c2VjcmV0"
        timeout_ms = 2000
        response_bytes = 4096
        "#,
    )
    .unwrap();
    assert_eq!(c.channels.email.timeout_ms, 5000);
    assert_eq!(c.channels.webhook.response_bytes, 4096);
    assert!(!c.channels.webhook.allow_private);
    let channels = Channels::from_config(&c.channels, false).unwrap();
    assert_eq!(channels.names(), ["email", "webhook"]);
    assert!(channels.get("email").is_some() && channels.get("sms").is_none());

    for (toml, error) in [
        (
            "[channels.email]\nurl = \"smtp://localhost\"\nfrm = \"x@y\"",
            "unknown field",
        ),
        ("[channels.sms]\nurl = \"x\"", "unknown field"),
    ] {
        let e = Config::from_toml(toml).unwrap_err();
        assert!(e.contains(error), "{toml}: {e}");
    }
    let invalid = [
        (
            r#"[channels.email]
            url = "smtp://localhost""#,
            "channels.email.from is required",
        ),
        (
            r#"[channels.email]
            url = "smtp://localhost"
            from = "not an address""#,
            "channels.email.from",
        ),
        (
            r#"[channels.email]
            url = "ftp://localhost"
            from = "a@example.com""#,
            "channels.email.url",
        ),
        (
            r#"[channels.email]
            url = "smtp://localhost"
            from = "a@example.com"
            username = "only-me""#,
            "both username and password",
        ),
        (
            r#"[channels.email]
            url = "smtp://user:secret@smtp.example.com"
            from = "a@example.com""#,
            "only sent over TLS",
        ),
        (
            r#"[channels.email]
            url = "smtp://smtp.example.com?tls=opportunistic"
            from = "a@example.com"
            username = "user"
            password = "secret""#,
            "only sent over TLS",
        ),
        (
            r#"[channels.webhook]
            url = "https://hooks.example.com""#,
            "channels.webhook.secret is required",
        ),
        (
            r#"[channels.webhook]
            url = "ftp://hooks.example.com"
            secret = "s""#,
            "http:// or https://",
        ),
        (
            r#"[channels.webhook]
            url = "https://hooks.example.com"
            secret = "whsec_!!""#,
            "invalid base64",
        ),
    ];
    for (toml, error) in invalid {
        let c = Config::from_toml(toml).unwrap();
        match Channels::from_config(&c.channels, false) {
            Err(e) => assert!(e.contains(error), "{toml}: {e}"),
            Ok(_) => panic!("{toml}: accepted"),
        }
    }
}

#[tokio::test]
async fn the_server_sends_through_the_channels_it_was_configured_with() {
    let rx = receiver().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.channels.webhook = webhook_config(rx.url("ok"));
    cfg.channels.webhook.allow_private = false;
    cfg.allow_private_http = true;
    let server = TestServer::start_with(dir, cfg).await;
    let channels = &server.running.app.channels;
    assert_eq!(channels.names(), ["webhook"]);

    let n = notification(Some("ann@example.com"), "Ann", "Coffee Bot");
    assert!(channels.reaches(&n));
    let deliveries = channels.send_all(&n).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].channel, "webhook");
    assert!(deliveries[0].result.is_ok(), "{deliveries:?}");
    channels.send_to("webhook", &n).await.expect("resent");
    // The same notification keeps its id, so the receiver can drop the repeat.
    {
        let requests = rx.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0].headers["webhook-id"],
            requests[1].headers["webhook-id"]
        );
    }
    match channels.send_to("email", &n).await {
        Err(ChannelError::Permanent(msg)) => assert!(msg.contains("not enabled"), "{msg}"),
        other => panic!("email is not configured, got {other:?}"),
    }
    server.stop().await;

    // A misconfigured channel stops the start.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.channels.email.url = Some("smtp://localhost".into());
    let e = volley_server::start(cfg, Arc::new(volley_server::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(e.contains("channels.email.from"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Offline delivery: the scheduler notifies contacts who are away.

#[tokio::test]
async fn a_follow_up_unseen_for_two_minutes_is_notified_and_a_seen_one_is_not() {
    let rx = receiver().await;
    let clock = Arc::new(volley_server::ManualClock::new(
        "2026-12-01T10:00:00Z".parse().unwrap(),
    ));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.channels.webhook = webhook_config(rx.url("ok"));
    cfg.public_url = Some("https://chat.example.com".into());
    let server = TestServer::start_on(dir, cfg, clock.clone()).await;

    // Away: the participant leaves during the two-day wait.
    let mut away = Client::connect(&server, hello("follow-up")).await;
    away.until(|v| v["event"]["kind"] == "wait").await;
    let away_conv = away.conversation();
    // It showed (and acknowledged) everything up to the wait, then left.
    let shown = away.max_seq();
    away.send(json!({"type": "ack", "seq": shown})).await;
    away.send(json!({"type": "ping"})).await;
    away.until(|v| v["type"] == "pong").await;
    drop(away);
    // Watching: this one stays and acknowledges what it sees.
    let mut here = Client::connect(&server, hello("follow-up")).await;
    here.until(|v| v["event"]["kind"] == "wait").await;

    clock.advance(Duration::from_secs(2 * 24 * 3600));
    let ask = here.next_question().await;
    let seen = here.max_seq();
    here.send(json!({"type": "ack", "seq": seen})).await;
    assert_eq!(ask["step"], "how");
    // Nothing before the delay (two minutes by default).
    clock.advance(Duration::from_secs(119));
    server.running.app.scheduler.settled(clock.now_ms()).await;
    assert_eq!(rx.count(), 0);
    clock.advance(Duration::from_secs(1));
    let started = std::time::Instant::now();
    while rx.count() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never notified"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything due has fired: a second notification (the watched conversation's)
    // would be here by now.
    server.running.app.scheduler.settled(clock.now_ms()).await;
    let (count, envelope) = {
        let requests = rx.requests.lock().unwrap();
        verify(&requests[0].headers, &requests[0].body).expect("signed");
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        (requests.len(), body)
    };
    assert_eq!(count, 1, "only the unseen conversation is notified");
    assert_eq!(envelope["type"], "notification");
    let n = &envelope["data"];
    assert_eq!(n["conversation_id"], away_conv.as_str());
    assert_eq!(n["continue_url"], "https://chat.example.com/f/follow-up");
    let texts: Vec<&str> = n["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["It has been two days. How is it going?"],
        "the messages it missed, not the ones it saw before leaving"
    );
    server.stop().await;
}
