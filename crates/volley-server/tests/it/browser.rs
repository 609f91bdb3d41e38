//! Browser tests: the real widget in headless Chromium, driven over WebDriver
//! (chromedriver), talking to a real server with the example flows.
//!
//! They run when `chromedriver` and `chromium` are installed (Debian packages
//! `chromium chromium-driver`). With `VOLLEY_BROWSER_TESTS=1` (set by
//! `scripts/test.sh`, so in CI) a missing browser is a failure, not a skip.
//! Screenshots land in `target/test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::support::{TestServer, config};

/// How long the widget may take to show something before a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// One browser at a time: Chromium is heavy and the machine has two cores.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A server with the example flows (pacing off, so tests do not wait for typing).
async fn example_server() -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.flows = Some(examples_dir());
    cfg.pacing = false;
    TestServer::start_with(dir, cfg).await
}

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or returns `None` to skip.
    async fn launch() -> Option<Browser> {
        let required = std::env::var("VOLLEY_BROWSER_TESTS").is_ok_and(|v| v == "1");
        let driver_bin = find_program(&["chromedriver"]);
        let chrome_bin = find_program(&["chromium", "chromium-browser", "google-chrome"]);
        let (Some(driver_bin), Some(chrome_bin)) = (driver_bin, chrome_bin) else {
            assert!(
                !required,
                "VOLLEY_BROWSER_TESTS=1 but chromium/chromedriver are not installed \
                 (apt-get install -y chromium chromium-driver)"
            );
            eprintln!("skipping browser test: chromium or chromedriver not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chrome_bin,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--lang=en-US",
                    "--window-size=1100,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.as_object().unwrap().clone());
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            match builder.connect(&url).await {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start a WebDriver session: {e}"),
            }
        };
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    /// Runs a script with `root` bound to the widget's shadow root (null until mounted).
    async fn js(&self, body: &str, args: Vec<Value>) -> Value {
        let script = format!(
            "const host = document.querySelector('volley-chat');\n\
             const root = host ? host.shadowRoot : null;\n{body}"
        );
        self.client
            .execute(&script, args)
            .await
            .expect("script runs")
    }

    /// Polls `probe` (a script returning a value, or null while not ready).
    async fn wait_for(&self, what: &str, probe: &str, args: Vec<Value>) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(probe, args.clone()).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "timed out waiting for {what}\nconversation so far:\n{}",
                    self.log_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log_text(&self) -> String {
        self.js(
            "return root ? root.querySelector('.log').innerText : '(no widget)';",
            vec![],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits until the conversation shows `text` in a bot bubble.
    async fn expect_bot(&self, text: &str) {
        self.wait_for(
            &format!("a bot message containing {text:?}"),
            "if (!root) return null;\
             return [...root.querySelectorAll('.row.bot .bubble')].some(b => b.innerText.includes(arguments[0]));",
            vec![json!(text)],
        )
        .await;
    }

    /// The element a selector finds inside the widget, once it exists, is shown and enabled.
    async fn control(&self, what: &str, find: &str, args: Vec<Value>) -> Element {
        let probe = format!(
            "if (!root) return null; const e = (() => {{ {find} }})();\
             return e && !e.disabled && e.offsetParent !== null ? e : null;"
        );
        let v = self.wait_for(what, &probe, args).await;
        Element::from_element_id(self.client.clone(), element_ref(&v))
    }

    /// Clicks the answer button labelled `label` (buttons of the current question only).
    async fn click_option(&self, label: &str) {
        let b = self
            .control(
                &format!("an answer button {label:?}"),
                "return [...root.querySelectorAll('.card button.opt')].find(b => b.innerText.trim() === arguments[0]);",
                vec![json!(label)],
            )
            .await;
        b.click().await.expect("click");
    }

    async fn click_button(&self, text: &str) {
        let b = self
            .control(
                &format!("a button {text:?}"),
                "return [...root.querySelectorAll('.card button.btn')].find(b => b.innerText.trim().startsWith(arguments[0]));",
                vec![json!(text)],
            )
            .await;
        b.click().await.expect("click");
    }

    /// The composer's text field, once a question accepts typing.
    async fn field(&self) -> Element {
        self.control(
            "the answer field",
            "return root.querySelector('.composer .input');",
            vec![],
        )
        .await
    }

    /// Types an answer and presses Enter, as a participant would.
    async fn type_answer(&self, text: &str) {
        let f = self.field().await;
        f.send_keys(&format!("{text}{}", char::from(Key::Enter)))
            .await
            .expect("typing");
    }

    /// Presses keys wherever the focus is, like a keyboard-only participant.
    async fn press(&self, keys: &[Key]) {
        let mut seq = KeyActions::new("keyboard".into());
        for k in keys {
            let c = char::from(*k);
            seq = seq
                .then(KeyAction::Down { value: c })
                .then(KeyAction::Up { value: c });
        }
        self.client.perform_actions(seq).await.expect("keys");
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        // Let fade-ins finish so the picture shows what a participant reads.
        self.wait_for(
            "animations to settle",
            "return root.getAnimations().every(a => a.playState !== 'running') || null;",
            vec![],
        )
        .await;
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        let path = artifacts_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The number of participant bubbles: every answer shows exactly once.
    async fn user_bubbles(&self) -> Vec<String> {
        let v = self
            .js(
                "return [...root.querySelectorAll('.row.user .bubble')].map(b => b.innerText.trim());",
                vec![],
            )
            .await;
        serde_json::from_value(v).unwrap()
    }
}

fn element_ref(v: &Value) -> fantoccini::elements::ElementRef {
    let id = v
        .as_object()
        .and_then(|o| o.get("element-6066-11e4-a52e-4f735466cecf"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("not an element: {v}"));
    fantoccini::elements::ElementRef::from(id.to_string())
}

/// Starts a browser on `/f/{flow}` of a fresh example server; `None` skips the test.
async fn open_flow(flow: &str) -> Option<(TestServer, Browser)> {
    let browser = Browser::launch().await?;
    let server = example_server().await;
    browser
        .client
        .goto(&server.http(&format!("/f/{flow}")))
        .await
        .expect("page loads");
    Some((server, browser))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_quiz_by_clicking_and_typing_with_a_reload_mid_flow() {
    let _one = BROWSER_LOCK.lock().await;
    let Some((server, b)) = open_flow("product-quiz").await else {
        return;
    };
    b.expect_bot("I'm Bea, Moka & Co.'s machine finder").await;
    // Honestly labelled as automated.
    let label = b
        .wait_for("the automated label", "return root && root.querySelector('.label') ? root.querySelector('.label').innerText : null;", vec![])
        .await;
    assert!(label.as_str().unwrap().contains("Automated"), "{label}");

    b.click_option("Something milky").await;
    b.expect_bot("How much time do you want to spend").await;
    b.click_option("Under a minute").await;
    b.expect_bot("How many cups does your household drink")
        .await;

    // Reload mid-flow: the conversation comes back from the server, not duplicated.
    b.client.refresh().await.unwrap();
    b.expect_bot("How many cups does your household drink")
        .await;
    assert_eq!(
        b.user_bubbles().await,
        ["Something milky", "Under a minute"]
    );

    b.type_answer("3").await;
    b.expect_bot("Which of these matter to you?").await;
    b.click_option("Freshly ground beans").await;
    b.click_option("Quick clean-up").await;
    b.click_button("Send").await;
    b.expect_bot("How confident are you with coffee gear?")
        .await;
    b.type_answer("2").await;
    b.expect_bot("of free counter width").await;
    b.click_option("Yes").await;
    b.expect_bot("what's your budget for the machine").await;
    b.type_answer("€500").await;
    b.expect_bot("Your match: the Moka Automatica").await;
    // Markdown is rendered: the match is bold, the image is shown.
    let bold = b
        .wait_for(
            "the bold match",
            "return [...root.querySelectorAll('.row.bot strong')].some(s => s.innerText.includes('Your match'));",
            vec![],
        )
        .await;
    assert_eq!(bold, json!(true));
    b.click_option("Yes").await;
    b.expect_bot("Which email address should I send it to?")
        .await;
    b.type_answer("Ana.Souza@Example.COM").await;
    b.expect_bot("Check your inbox for the code").await;
    b.expect_bot("Happy brewing").await;
    let shot = b.screenshot("widget-product-quiz.png").await;
    eprintln!("screenshot: {}", shot.display());

    assert_eq!(
        b.user_bubbles().await,
        [
            "Something milky",
            "Under a minute",
            "3",
            "Freshly ground beans, Quick clean-up",
            "2",
            "Yes",
            "€500",
            "Yes",
            "Ana.Souza@Example.COM"
        ]
    );
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mortgage_calculator_shows_validation_and_goes_back() {
    let _one = BROWSER_LOCK.lock().await;
    let Some((server, b)) = open_flow("mortgage-calculator").await else {
        return;
    };
    b.expect_bot("How much would you like to borrow").await;

    // Client-side hint: a plain number out of range cannot be sent.
    let f = b.field().await;
    f.send_keys("5000").await.unwrap();
    let blocked = b
        .wait_for(
            "the out-of-range hint",
            "const h = root.querySelector('.hint');\
             return h.classList.contains('warn') && root.querySelector('.send').disabled ? h.innerText : null;",
            vec![],
        )
        .await;
    assert!(
        blocked
            .as_str()
            .unwrap()
            .contains("Between 10,000 and 2,000,000"),
        "{blocked}"
    );
    f.clear().await.unwrap();

    // Server-side validation: text the server cannot read is re-asked with the author's message.
    b.type_answer("a lot").await;
    b.wait_for(
        "the validation message",
        "return [...root.querySelectorAll('.row.bot.invalid')].some(r => r.innerText.includes('I can calculate loans between'));",
        vec![],
    )
    .await;

    b.type_answer("250k").await;
    b.expect_bot("What yearly interest rate have you been quoted?")
        .await;
    b.type_answer("3,45%").await;
    b.expect_bot("Over how many years would you like to repay it?")
        .await;
    b.click_option("20 years").await;
    b.expect_bot("net").await;

    // Back undoes the term; the question is asked again.
    let back = b
        .control(
            "the back button",
            "return root.querySelector('.nav .textbtn');",
            vec![],
        )
        .await;
    back.click().await.unwrap();
    b.wait_for(
        "the term asked again",
        "return root.querySelectorAll('.card button.opt').length === 4 ? true : null;",
        vec![],
    )
    .await;
    b.click_option("30 years").await;
    b.expect_bot("net").await;
    b.type_answer("€3,200").await;
    b.expect_bot("Monthly repayment: €1,115.65").await;
    b.expect_bot("34.9%").await;
    b.click_option("Yes").await;
    b.expect_bot("Your numbers are already filled in").await;
    let link = b
        .wait_for(
            "the application link",
            "const a = [...root.querySelectorAll('.row.bot a')].find(a => a.innerText.includes('agreement in principle'));\
             return a ? [a.getAttribute('href'), a.getAttribute('rel'), a.getAttribute('target')] : null;",
            vec![],
        )
        .await;
    assert_eq!(
        link[0],
        json!("https://harbourline.example/home-loans/apply?amount=250000&years=30")
    );
    assert!(
        link[1].as_str().unwrap_or_default().contains("noopener"),
        "{link}"
    );
    b.screenshot("widget-mortgage-calculator.png").await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_acknowledgement_with_keyboard_only_at_320px() {
    let _one = BROWSER_LOCK.lock().await;
    let Some((server, b)) = open_flow("policy-acknowledgement").await else {
        return;
    };
    b.client.set_window_size(320, 640).await.unwrap();
    b.expect_bot("Please tick each point").await;

    // Nothing is wider than a 320 px screen.
    let overflow = b
        .js(
            "return [document.documentElement.scrollWidth, root.querySelector('.log').scrollWidth,\
                     root.querySelector('.log').clientWidth, window.innerWidth];",
            vec![],
        )
        .await;
    let [page, log, log_client, inner] = [0, 1, 2, 3].map(|i| overflow[i].as_u64().unwrap());
    assert!(
        page <= inner && log <= log_client,
        "horizontal overflow at 320 px: {overflow}"
    );

    // Keyboard only: the first checkbox has focus; Space ticks, Tab moves on.
    b.wait_for(
        "focus on the checklist",
        "return root.activeElement && root.activeElement.type === 'checkbox' ? true : null;",
        vec![],
    )
    .await;
    b.press(&[Key::Space, Key::Tab, Key::Space, Key::Tab, Key::Space])
        .await;
    let confirm_disabled = b
        .js("return [...root.querySelectorAll('.card button.btn')].find(x => x.innerText.includes('Confirm')).disabled;", vec![])
        .await;
    assert_eq!(confirm_disabled, json!(true), "three of four ticked");
    b.press(&[Key::Tab, Key::Space, Key::Tab, Key::Enter]).await;
    b.expect_bot("your acknowledgement of version 2026.1 is recorded")
        .await;
    b.expect_bot("Do you already have a business trip planned")
        .await;
    // The buttons have focus now: Enter picks the first ("Yes").
    b.wait_for(
        "focus on the yes/no buttons",
        "return root.activeElement && root.activeElement.classList.contains('opt') ? true : null;",
        vec![],
    )
    .await;
    b.press(&[Key::Enter]).await;
    b.expect_bot("What date do you leave?").await;

    // A date typed in words; a past date first gets the author's message.
    b.type_answer("yesterday").await;
    b.wait_for(
        "the date validation message",
        "return [...root.querySelectorAll('.row.bot.invalid')].some(r => r.innerText.includes('Please give me a departure date'));",
        vec![],
    )
    .await;
    b.type_answer("in 10 days").await;
    b.expect_bot("is only 10 days away").await;
    b.click_option("No").await;
    b.expect_bot("That's everything. Have a good trip").await;
    let shot = b.screenshot("widget-policy-320px.png").await;
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(
        b.user_bubbles().await,
        ["✓ Confirmed", "Yes", "yesterday", "in 10 days", "No"]
    );
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_participant_types_executes_in_the_page() {
    let _one = BROWSER_LOCK.lock().await;
    let Some((server, b)) = open_flow("lead-qualification").await else {
        return;
    };
    b.field().await;
    let attack =
        "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>**bold**";
    b.js(
        "window.__pwned = 0; window.addEventListener('error', () => {});",
        vec![],
    )
    .await;
    b.type_answer(attack).await;
    // The participant's text shows literally, as text.
    b.wait_for(
        "the literal answer",
        "return [...root.querySelectorAll('.row.user .bubble')].some(x => x.innerText.includes('<img src=x'));",
        vec![],
    )
    .await;
    // The flow echoes the company name back in its next message, escaped.
    b.expect_bot("How many people would use Northwind at <img src=x")
        .await;
    b.expect_bot("**bold**").await;
    let pwned = b
        .js(
            "return [window.__pwned, root.querySelectorAll('.log img[src=x], .log script').length];",
            vec![],
        )
        .await;
    assert_eq!(pwned, json!([0, 0]), "{}", b.log_text().await);
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_follows_up_in_the_open_widget_and_after_a_reload() {
    let _one = BROWSER_LOCK.lock().await;
    let Some(b) = Browser::launch().await else {
        return;
    };
    let clock = Arc::new(volley_server::ManualClock::new(
        "2026-12-01T10:00:00Z".parse().unwrap(),
    ));
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_on(dir.clone(), config(dir.path()), clock.clone()).await;
    let page = server.http("/f/short-wait");
    b.client.goto(&page).await.unwrap();
    b.expect_bot("come back to you in a minute").await;
    // The minute passes (virtual time): the follow-up appears without a reload.
    clock.advance(Duration::from_secs(60));
    b.expect_bot("I am back with your follow-up.").await;
    b.click_option("Yes").await;
    b.expect_bot("You can close this page").await;
    // The page is closed; the hour passes; the message waits in the conversation.
    b.client.goto("about:blank").await.unwrap();
    clock.advance(Duration::from_secs(3600));
    let started = Instant::now();
    while server.running.app.store.pending_timers().await.unwrap() > 0 {
        assert!(started.elapsed() < PATIENCE, "the wait never fired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.client.goto(&page).await.unwrap();
    b.expect_bot("Welcome back! This arrived while you were away.")
        .await;
    assert_eq!(b.user_bubbles().await, ["Yes"]);
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bubble_launchers_are_named_and_restack_when_one_is_destroyed() {
    let _one = BROWSER_LOCK.lock().await;
    let Some((server, b)) = open_flow("policy-acknowledgement").await else {
        return;
    };
    b.expect_bot("Please tick each point").await;
    // Three bubbles for flows this browser never talked to: none connects before it opens.
    b.js(
        "window.__bubbles = ['support-triage', 'lead-qualification', 'mortgage-calculator']\
           .map(flow => Volley.mount({ flow }));",
        vec![],
    )
    .await;
    let launchers = "return window.__bubbles.filter(x => x.element)\
        .map(x => x.element.shadowRoot.querySelector('.launcher'))\
        .map(l => [getComputedStyle(l).right, l.getAttribute('aria-label')]);";
    let before = b
        .wait_for(
            "three launchers",
            &format!("const l = (() => {{ {launchers} }})(); return l.length === 3 ? l : null;"),
            vec![],
        )
        .await;
    assert_eq!(
        before,
        json!([
            ["20px", "Open chat"],
            ["96px", "Open chat"],
            ["172px", "Open chat"]
        ]),
        "side by side, with a label that does not need the assistant's name"
    );
    // Destroying the rightmost frees its place: the others move over.
    b.js(
        "window.__bubbles[0].destroy(); window.__bubbles.shift();",
        vec![],
    )
    .await;
    let after = b.js(launchers, vec![]).await;
    assert_eq!(after, json!([["20px", "Open chat"], ["96px", "Open chat"]]));
    // Once a bubble connects, its launcher names the assistant.
    b.js("window.__bubbles[1].open();", vec![]).await;
    b.wait_for(
        "the launcher named after the assistant",
        "const l = window.__bubbles[1].element.shadowRoot.querySelector('.launcher');\
         return l.getAttribute('aria-label') === 'Chat with Leo from Harbourline' || null;",
        vec![],
    )
    .await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_talks_to_a_person_and_rates_the_help() {
    use volley_server::handoff::{self, Actor, AgentInfo, Desk};

    let _one = BROWSER_LOCK.lock().await;
    let Some(b) = Browser::launch().await else {
        return;
    };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("help.yaml"),
        "volley: 1\nid: help\ntitle: Help desk\npacing: { off: true }\n\
         steps:\n  - say: Hi, let me find you a person.\n  - handoff: support\n",
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.flows = Some(flows);
    let server = TestServer::start_with(dir, cfg).await;
    let app = server.running.app.clone();
    b.client.goto(&server.http("/f/help")).await.unwrap();
    b.expect_bot("let me find you a person").await;

    // Nobody is online: the participant is told so, not promised a wait.
    b.wait_for(
        "the queue notice",
        "return [...root.querySelectorAll('.note')].some(n => n.innerText.includes('No one is available right now'));",
        vec![],
    )
    .await;
    let conv = b
        .wait_for(
            "the conversation id in localStorage",
            "const k = Object.keys(localStorage).find(k => k.endsWith(':help'));\
             return k ? JSON.parse(localStorage.getItem(k)).conversation : null;",
            vec![],
        )
        .await;
    let conv = conv.as_str().unwrap().to_string();

    // Ann comes online: the waiting conversation is hers.
    let _online = Desk::connect(
        &app,
        AgentInfo {
            id: "u_ann".into(),
            name: "Ann".into(),
            capacity: 3,
        },
    );
    let ann = Actor {
        id: "u_ann".into(),
        name: "Ann".into(),
    };
    b.wait_for(
        "Ann joining",
        "return [...root.querySelectorAll('.note')].some(n => n.innerText.includes('Ann joined the conversation'));",
        vec![],
    )
    .await;

    handoff::typing(&app, &conv, &ann, true).await.unwrap();
    b.wait_for(
        "Ann's typing indicator",
        "const r = root.querySelector('.row.agent.typing');\
         return r && !r.hidden && r.innerText.includes('Ann is typing') || null;",
        vec![],
    )
    .await;
    handoff::reply(&app, &conv, &ann, false, "Hello from **Ann**", None)
        .await
        .unwrap();
    // Her bubble: her name, rendered Markdown, nothing calling it automated.
    let bubble = b
        .wait_for(
            "Ann's message",
            "const r = [...root.querySelectorAll('.row.agent:not(.typing)')]\
               .find(r => r.innerText.includes('Hello from Ann'));\
             return r ? [r.querySelector('.who').innerText, r.querySelectorAll('strong').length,\
                         r.classList.contains('bot'), r.innerText.includes('Automated')] : null;",
            vec![],
        )
        .await;
    assert_eq!(bubble, json!(["Ann", 1, false, false]));
    let typing_hidden = b
        .js(
            "return root.querySelector('.row.agent.typing').hidden;",
            vec![],
        )
        .await;
    assert_eq!(typing_hidden, json!(true), "her message ends her typing");
    let header = b
        .js("return root.querySelector('.label').innerText;", vec![])
        .await;
    assert_eq!(header, json!("Person: Ann"));

    // The participant writes back in the composer: a `say`, logged for Ann.
    let placeholder = b
        .js(
            "return root.querySelector('.composer .input').placeholder;",
            vec![],
        )
        .await;
    assert_eq!(placeholder, json!("Write to the team…"));
    b.type_answer("Thanks Ann, my order is late").await;
    let started = Instant::now();
    loop {
        let events = app.store.events_after(&conv, 0, 100).await.unwrap();
        let said = events.iter().any(|e| {
            let data: Value = serde_json::from_str(&e.data).unwrap_or_default();
            e.kind == "input"
                && data["text"] == "Thanks Ann, my order is late"
                && data["to"] == "human"
        });
        if said {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the message never reached the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.wait_for(
        "the message shown once, sent",
        "const u = [...root.querySelectorAll('.row.user')];\
         return u.length === 1 && !u[0].classList.contains('sending') && u[0].hasAttribute('data-seq') || null;",
        vec![],
    )
    .await;
    assert_eq!(b.user_bubbles().await, ["Thanks Ann, my order is late"]);

    // Ann resolves: the participant is asked for a rating, keyboard first.
    handoff::resolve(&app, &conv, &ann, false, None)
        .await
        .unwrap();
    let labels = b
        .wait_for(
            "the rating question",
            "const r = root.querySelector('.csat');\
             return r && r.innerText.includes('How would you rate the help you received?')\
               ? [...r.querySelectorAll('button')].map(x => x.getAttribute('aria-label')) : null;",
            vec![],
        )
        .await;
    assert_eq!(
        labels,
        json!([
            "1 – very poor",
            "2 – poor",
            "3 – okay",
            "4 – good",
            "5 – excellent"
        ])
    );
    b.wait_for(
        "the end of the conversation",
        "return [...root.querySelectorAll('.note')].some(n => n.innerText.includes('This conversation has ended')) || null;",
        vec![],
    )
    .await;
    b.wait_for(
        "focus on the rating",
        "return root.activeElement && root.activeElement.getAttribute('aria-label') === '1 – very poor' || null;",
        vec![],
    )
    .await;
    b.screenshot("widget-handoff-rating.png").await;
    let four = b
        .control(
            "the rating button 4",
            "return [...root.querySelectorAll('.csat button')].find(x => x.innerText.trim() === '4');",
            vec![],
        )
        .await;
    four.click().await.expect("click");
    b.wait_for(
        "the thank-you",
        "const r = root.querySelector('.csat');\
         return r && r.innerText.includes('Thank you for your rating') && !r.querySelector('button') || null;",
        vec![],
    )
    .await;
    let started = Instant::now();
    loop {
        let row = app.store.handoff(&conv).await.unwrap().expect("a hand-off");
        if row.csat.is_some() {
            assert_eq!(row.csat, Some(4));
            assert_eq!(row.status, "resolved");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the rating was never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // After a reload the conversation reads the same, the rating already given.
    b.client.refresh().await.unwrap();
    b.wait_for(
        "the thank-you after a reload",
        "const r = root && root.querySelector('.csat');\
         return r && r.innerText.includes('Thank you for your rating (4 out of 5)') || null;",
        vec![],
    )
    .await;
    assert_eq!(b.user_bubbles().await, ["Thanks Ann, my order is late"]);
    b.screenshot("widget-handoff-csat.png").await;
    b.close().await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------
// The agent console (a page of its own, not the widget)

impl Browser {
    /// Polls `probe` on a console page (a script returning a value, or null/false while
    /// not ready); on timeout, fails with what the page shows.
    async fn page_wait(&self, what: &str, probe: &str, args: Vec<Value>) -> Value {
        let started = Instant::now();
        loop {
            let v = self
                .client
                .execute(probe, args.clone())
                .await
                .expect("script runs");
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if started.elapsed() > PATIENCE {
                let shown = self
                    .client
                    .execute(
                        "const a = document.getElementById('alert');\
                         return location.pathname + '\\n' + (a && !a.hidden ? 'ALERT: ' + a.innerText + '\\n' : '')\
                           + (document.body ? document.body.innerText : '');",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}\nthe page shows:\n{}",
                    shown.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A console element (CSS selector) once it exists, is shown and enabled.
    async fn page_control(&self, what: &str, selector: &str) -> Element {
        let v = self
            .page_wait(
                what,
                "const e = document.querySelector(arguments[0]);\
                 return e && !e.disabled && e.offsetParent !== null ? e : null;",
                vec![json!(selector)],
            )
            .await;
        Element::from_element_id(self.client.clone(), element_ref(&v))
    }

    /// Waits until the page's path is `path`.
    async fn page_at(&self, path: &str) {
        self.page_wait(
            &format!("the page {path}"),
            "return location.pathname === arguments[0] || null;",
            vec![json!(path)],
        )
        .await;
    }

    /// The console transcript entry (kind class: `participant`, `agent`, `note`,
    /// `system`…) whose text contains `text`: its `[who, body text]`.
    async fn console_entry(&self, class: &str, text: &str) -> Value {
        self.page_wait(
            &format!("a {class} entry with {text:?} in the console transcript"),
            "const e = [...document.querySelectorAll('#log .entry.' + arguments[0])]\
               .find(e => e.querySelector('.body').innerText.includes(arguments[1]));\
             return e ? [e.querySelector('.who') ? e.querySelector('.who').innerText : null,\
                         e.querySelector('.body').innerText] : null;",
            vec![json!(class), json!(text)],
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_and_a_participant_talk_live_then_the_participant_rates() {
    use volley_server::auth::{self, NewUser, Role};

    let _one = BROWSER_LOCK.lock().await;
    let Some(a) = Browser::launch().await else {
        return;
    };
    let Some(b) = Browser::launch().await else {
        a.close().await;
        return;
    };
    // The test flows (tests/data): `desk` asks a name, then hands off to `support`.
    let server = TestServer::start().await;
    let app = server.running.app.clone();
    let (_, token) = auth::create_user(
        app.store.as_ref(),
        app.clock.now_ms(),
        NewUser {
            email: "ann@example.com".into(),
            name: "Ann Agent".into(),
            role: Role::Agent,
            capacity: Some(3),
        },
    )
    .await
    .unwrap();
    const PASSWORD: &str = "correct-horse-battery";

    // Page A: without a session, the console sends the agent to sign in.
    a.client.goto(&server.http("/console")).await.unwrap();
    a.page_at("/console/login").await;
    // The agent sets a password with their one-time link: signed in, on the console.
    a.client
        .goto(&server.http(&format!("/console/setup?token={token}")))
        .await
        .unwrap();
    a.page_at("/console/setup").await;
    for field in ["password", "confirm"] {
        a.client
            .find(fantoccini::Locator::Id(field))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
    }
    a.client
        .find(fantoccini::Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    a.page_at("/console").await;
    // Live: the desk stream is open, so Ann is online and available.
    let presence = a
        .page_wait(
            "the console live",
            "const b = document.getElementById('availability');\
             return document.body.dataset.live === '1' && !b.disabled\
               ? [b.getAttribute('aria-pressed'), b.innerText.trim()] : null;",
            vec![],
        )
        .await;
    assert_eq!(presence, json!(["true", "Available"]));
    let empty = a
        .client
        .execute(
            "return [document.getElementById('count-mine').innerText, document.getElementById('empty-mine').hidden];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(empty, json!(["0", false]));

    // Page B: a participant answers the bot, then is handed to a person. What they
    // typed is markup that must never run in the console.
    b.client.goto(&server.http("/f/desk")).await.unwrap();
    b.expect_bot("Your name?").await;
    let name = "Pat <img src=x onerror=\"window.__pwned=1\">";
    b.type_answer(name).await;

    // Page A, without a reload: the conversation is Ann's (she is online), with a chime.
    let row = a
        .page_wait(
            "the conversation in Mine",
            "const r = document.querySelector('#list-mine li.row');\
             return r ? [r.dataset.conversation, r.querySelector('.preview').innerText,\
                         r.querySelector('.queue').innerText] : null;",
            vec![],
        )
        .await;
    let conv = row[0].as_str().unwrap().to_string();
    assert_eq!(row[1], json!(format!("Help {name}")));
    assert_eq!(row[2], json!("support"));
    let noticed = a
        .page_wait(
            "the new assignment noticed",
            "return Number(document.body.dataset.assignments || 0) >= 1\
               ? [document.title, document.getElementById('count-mine').innerText,\
                  document.getElementById('empty-mine').hidden] : null;",
            vec![],
        )
        .await;
    assert!(
        noticed[0].as_str().unwrap().contains("1 mine, 0 waiting"),
        "{noticed}"
    );
    assert_eq!(noticed[1], json!("1"));
    assert_eq!(noticed[2], json!(true));
    let png = a.client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts_dir().join("console-queue.png"), png).unwrap();

    // Ann opens it: the whole transcript, the participant's text as text.
    let link = a
        .page_control("the link to the conversation", "#list-mine li.row a")
        .await;
    link.click().await.unwrap();
    a.page_at(&format!("/console/c/{conv}")).await;
    a.console_entry("bot", "Your name?").await;
    let answer = a.console_entry("participant", "Pat <img").await;
    assert_eq!(answer, json!(["Participant", name]));
    a.console_entry("system", "Assigned to Ann Agent").await;
    a.page_wait(
        "the conversation page live",
        "return document.body.dataset.live === '1' || null;",
        vec![],
    )
    .await;

    // Ann types: the participant sees her typing, then her reply with her name.
    let reply = a.page_control("the reply box", "#reply").await;
    reply.send_keys("Hello Pat, I am **here**").await.unwrap();
    b.wait_for(
        "Ann's typing indicator",
        "const r = root.querySelector('.row.agent.typing');\
         return r && !r.hidden && r.innerText.includes('Ann Agent is typing') || null;",
        vec![],
    )
    .await;
    reply
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    let bubble = b
        .wait_for(
            "Ann's reply in the widget",
            "const r = [...root.querySelectorAll('.row.agent:not(.typing)')]\
               .find(r => r.innerText.includes('Hello Pat, I am here'));\
             return r ? [r.querySelector('.who').innerText, r.querySelectorAll('strong').length] : null;",
            vec![],
        )
        .await;
    assert_eq!(bubble, json!(["Ann Agent", 1]));
    let mine = a.console_entry("agent", "Hello Pat, I am here").await;
    assert_eq!(mine[0], json!("Ann Agent"));
    let cleared = a
        .client
        .execute("return document.getElementById('reply').value;", vec![])
        .await
        .unwrap();
    assert_eq!(cleared, json!(""));

    // The participant answers: it appears live in the console.
    b.type_answer("Thanks Ann, it works now").await;
    a.console_entry("participant", "Thanks Ann, it works now")
        .await;

    // A private note: in the console, marked as such; never in the widget.
    // Keyboard: Alt+N turns the note mode on (the focus stays in the reply box).
    let alt = char::from(Key::Alt);
    let chord = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: alt })
        .then(KeyAction::Down { value: 'n' })
        .then(KeyAction::Up { value: 'n' })
        .then(KeyAction::Up { value: alt });
    a.client.perform_actions(chord).await.expect("keys");
    a.page_wait(
        "the note mode on",
        "return document.getElementById('note-toggle').getAttribute('aria-pressed') === 'true'\
           && document.activeElement.id === 'reply' || null;",
        vec![],
    )
    .await;
    let reply = a.page_control("the reply box", "#reply").await;
    reply
        .send_keys(&format!("Customer is happy{}", char::from(Key::Enter)))
        .await
        .unwrap();
    let note = a.console_entry("note", "Customer is happy").await;
    assert!(
        note[0].as_str().unwrap().contains("only agents see this"),
        "{note}"
    );

    // Ann resolves: the participant is asked to rate, and gives 5.
    let resolve = a.page_control("the resolve button", "#resolve").await;
    resolve.click().await.unwrap();
    a.console_entry("system", "Resolved by Ann Agent").await;
    a.page_wait(
        "the status resolved",
        "return document.getElementById('status').innerText === 'resolved' || null;",
        vec![],
    )
    .await;
    let five = b
        .control(
            "the rating button 5",
            "return [...root.querySelectorAll('.csat button')].find(x => x.innerText.trim() === '5');",
            vec![],
        )
        .await;
    five.click().await.expect("click");
    b.wait_for(
        "the thank-you",
        "const r = root.querySelector('.csat');\
         return r && r.innerText.includes('Thank you for your rating') || null;",
        vec![],
    )
    .await;
    let started = Instant::now();
    loop {
        let row = app.store.handoff(&conv).await.unwrap().expect("a hand-off");
        if row.csat.is_some() {
            assert_eq!(row.csat, Some(5));
            assert_eq!(row.status, "resolved");
            assert_eq!(
                row.agent_id.as_deref().map(|a| a.starts_with("usr")),
                Some(true)
            );
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the rating was never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rating reaches the console live too.
    a.console_entry("system", "Rated 5/5").await;

    // Nothing the participant typed ran or became markup in the console, and the
    // note never reached the participant.
    let safe = a
        .client
        .execute(
            "return [window.__pwned === undefined, document.querySelectorAll('#log img, .rows img').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(safe, json!([true, 0]));
    let widget = b.log_text().await;
    assert!(!widget.contains("Customer is happy"), "{widget}");
    a.client
        .execute("window.scrollTo(0, 0);", vec![])
        .await
        .unwrap();
    let png = a.client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts_dir().join("console-conversation.png"), png).unwrap();

    a.close().await;
    b.close().await;
    server.stop().await;
}
