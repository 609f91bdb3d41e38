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
        Self::launch_with(&[]).await
    }

    /// A browser that plays media without a user gesture (the event page's video
    /// starts muted at the live position, as for a viewer who clicked a link).
    async fn launch_media() -> Option<Browser> {
        Self::launch_with(&["--autoplay-policy=no-user-gesture-required"]).await
    }

    /// [`Browser::launch`] with extra Chromium flags.
    async fn launch_with(extra: &[&str]) -> Option<Browser> {
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
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--lang=en-US".into(),
            "--window-size=1100,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chrome_bin,
                "args": args,
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
    let server = TestServer::on_clock(&clock).await;
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

// ---------------------------------------------------------------------------------
// The event page (docs/watching.md): a premiere watched by several viewers at once.

/// The video of the demo event, copied next to the test events (links out of an
/// event's directory are refused).
fn demo_video() -> PathBuf {
    examples_dir().join("events/media/launch.mp4")
}

/// An event file showing once at `start`, with the 90-second demo video.
fn premiere_file(id: &str, start: jiff::Timestamp, more: &str) -> String {
    format!(
        "volley: 1\nevent: {id}\ntitle: Premiere {id}\n\
         description: The launch, watched together.\n\
         label: \"Premiere · pre-recorded\"\nreplay_label: \"Replay · pre-recorded\"\n\
         media: {{ file: launch.mp4, duration: 90s }}\ntimezone: UTC\n\
         schedule: {{ once: \"{start}\" }}\nreplay: {{ window: 1h }}\n{more}"
    )
}

/// Offsets of the live premiere's cues (ms from the start of the video).
const SAY_AT: f64 = 20_000.0;
const POLL_AT: f64 = 22_000.0;
const OFFER_AT: f64 = 24_000.0;
const FLOW_AT: f64 = 26_000.0;

/// Records, on the page, the player's position when each cue first shows.
const RECORD_CUES: &str = "\
    if (!window.__seen) {\
      window.__seen = {};\
      const cues = [['say', '#chat-log li.msg.host'], ['poll', '[data-poll=\"fav\"]'],\
                    ['offer', '[data-offer=\"early-bird\"]'], ['flow', '#flows [data-flow=\"product-quiz\"]']];\
      const record = () => {\
        for (const [key, sel] of cues) {\
          const e = document.querySelector(sel);\
          if (e && !(key in window.__seen) && e.offsetParent !== null)\
            window.__seen[key] = window.volleyEvent.position();\
        }\
      };\
      new MutationObserver(record).observe(document.body,\
        { subtree: true, childList: true, attributes: true, characterData: true });\
      record();\
    }\
    return true;";

/// The label over the player: shown, non-empty, inside the viewport, over the video
/// and on top of it (what is at its centre is the label). Its text, or null.
const LABEL_SHOWN: &str = "\
    const l = document.getElementById('label'), v = document.getElementById('video');\
    if (!l || !v) return null;\
    document.getElementById('stage').scrollIntoView({ block: 'start' });\
    const r = l.getBoundingClientRect(), vr = v.getBoundingClientRect(), s = getComputedStyle(l);\
    const text = l.innerText.trim();\
    if (!text || l.hidden || s.display === 'none' || s.visibility !== 'visible' || Number(s.opacity) < 0.95\
        || r.width < 1 || r.height < 1) return null;\
    const inside = r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight;\
    const overVideo = r.left >= vr.left && r.right <= vr.right && r.top >= vr.top && r.bottom <= vr.bottom;\
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);\
    return inside && overVideo && hit && (hit === l || l.contains(hit)) ? text : null;";

impl Browser {
    /// The page's phase (`window.volleyEvent.phase()`), once it is `phase`.
    async fn event_phase(&self, phase: &str) {
        self.page_wait(
            &format!("the event page in phase {phase:?}"),
            "return window.volleyEvent && window.volleyEvent.phase() === arguments[0] || null;",
            vec![json!(phase)],
        )
        .await;
    }

    /// How far the player is from the live position (ms; positive: ahead), measured in
    /// one go on the page: `video.currentTime − (server_now − starts_at)`.
    async fn live_lag(&self) -> f64 {
        self.client
            .execute(
                "const v = window.volleyEvent;\
                 return document.getElementById('video').currentTime * 1000 - (v.serverNow() - v.startsAt());",
                vec![],
            )
            .await
            .expect("script runs")
            .as_f64()
            .expect("a number")
    }

    /// Waits until the player plays within `ms` of live.
    async fn near_live(&self, what: &str, ms: f64) {
        self.page_wait(
            what,
            "const v = window.volleyEvent, video = document.getElementById('video');\
             if (!v || v.phase() !== 'live' || video.paused || video.seeking || video.readyState < 3) return null;\
             const lag = video.currentTime * 1000 - (v.serverNow() - v.startsAt());\
             return Math.abs(lag) < arguments[0] || null;",
            vec![json!(ms)],
        )
        .await;
    }

    /// The label's text once it is shown over the player (see [`LABEL_SHOWN`]).
    async fn label_shown(&self, phase: &str) -> String {
        let v = self
            .page_wait(
                &format!("the label shown over the player ({phase})"),
                LABEL_SHOWN,
                vec![],
            )
            .await;
        v.as_str().unwrap().to_string()
    }

    /// Sends a chat message as a viewer does (the first one asks for a name).
    async fn chat(&self, name: Option<&str>, text: &str) {
        let enter = char::from(Key::Enter);
        let input = self.page_control("the chat box", "#chat-text").await;
        input.send_keys(&format!("{text}{enter}")).await.unwrap();
        if let Some(name) = name {
            let field = self.page_control("the name prompt", "#chat-name").await;
            field.send_keys(&format!("{name}{enter}")).await.unwrap();
        }
        self.page_wait(
            "the chat box cleared after sending",
            "return document.getElementById('chat-text').value === '' || null;",
            vec![],
        )
        .await;
    }

    /// The id of the chat message whose text is `text`, once it is shown.
    async fn message_id(&self, text: &str) -> String {
        let v = self
            .page_wait(
                &format!("the chat message {text:?}"),
                "const li = [...document.querySelectorAll('#chat-log li.msg')]\
                   .find(li => li.querySelector('.msg-text') && li.querySelector('.msg-text').innerText === arguments[0]);\
                 return li && li.offsetParent !== null ? li.dataset.id : null;",
                vec![json!(text)],
            )
            .await;
        v.as_str().expect("a message id").to_string()
    }

    /// Waits until no message with this id is in the chat.
    async fn message_gone(&self, id: &str) {
        self.page_wait(
            &format!("the message {id} gone"),
            "return !document.querySelector('#chat-log li.msg[data-id=\"' + CSS.escape(arguments[0]) + '\"]') || null;",
            vec![json!(id)],
        )
        .await;
    }

    /// Where the player was when a cue (`say`, `poll`, `offer`) first showed.
    async fn cue_seen_at(&self, cue: &str) -> f64 {
        self.page_wait(
            &format!("the {cue} cue"),
            "return window.__seen && arguments[0] in window.__seen ? window.__seen[arguments[0]] : null;",
            vec![json!(cue)],
        )
        .await
        .as_f64()
        .unwrap()
    }

    async fn save_screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(artifacts_dir().join(name), png).unwrap();
    }
}

/// Two viewers (separate browsers, the second joining two seconds later) and a
/// moderator watch a live premiere: the same position within 250 ms, each other's chat,
/// the host message, poll, offer and flow at their offsets, a vote's results, Q&A with a
/// live answer, a deleted message gone everywhere, the label over the player (live,
/// lobby, replay), no seeking ahead of live, *behind live* and back; then registration
/// in the lobby of the next showing at 320 px, and a replay where a message follows
/// the player's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_premiere_plays_in_sync_for_everyone_with_chat_cues_and_moderation() {
    use crate::support::{PASSWORD, create_user};

    let _one = BROWSER_LOCK.lock().await;
    let Some(a) = Browser::launch_media().await else {
        return;
    };
    let Some(b) = Browser::launch_media().await else {
        a.close().await;
        return;
    };
    let Some(m) = Browser::launch_media().await else {
        a.close().await;
        b.close().await;
        return;
    };

    // Three events: one live for 5 s, one over and in its replay, one in two hours.
    let site = tempfile::tempdir().unwrap();
    std::fs::copy(demo_video(), site.path().join("launch.mp4")).unwrap();
    std::fs::copy(
        examples_dir().join("product-quiz.yaml"),
        site.path().join("product-quiz.yaml"),
    )
    .unwrap();
    let now = jiff::Timestamp::now().as_second();
    let at = |s: i64| jiff::Timestamp::from_second(now + s).unwrap();
    let timeline = format!(
        "timeline:\n\
         \x20 - {{ at: {}s, say: \"Welcome, **everyone**!\" }}\n\
         \x20 - at: {}s\n\
         \x20   poll: {{ id: fav, question: Which feature?, options: [Dashboards, Exports, Alerts], \
                      close_at: 80s, results_at: {}s }}\n\
         \x20 - {{ at: {}s, offer: {{ id: early-bird, text: Early-bird price, url: \"https://example.com/buy\", until: 85s }} }}\n\
         \x20 - {{ at: {}s, flow: product-quiz }}\n\
         \x20 - {{ at: {}s, qa: {{ until: 88s }} }}\n",
        SAY_AT / 1000.0,
        POLL_AT / 1000.0,
        POLL_AT / 1000.0,
        OFFER_AT / 1000.0,
        FLOW_AT / 1000.0,
        SAY_AT / 1000.0
    );
    for (id, start, more) in [
        ("live-premiere", at(-5), timeline.as_str()),
        ("past-premiere", at(-150), ""),
        (
            "next-premiere",
            at(2 * 3600),
            "registration: { fields: [name, email, company] }\nreminders: [1h, 5m]\n",
        ),
    ] {
        std::fs::write(
            site.path().join(format!("{id}.yaml")),
            premiere_file(id, start, more),
        )
        .unwrap();
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.flows = Some(site.path().to_path_buf());
    cfg.pacing = false;
    let server = TestServer::start_with(dir, cfg).await;
    let page = server.http("/events/live-premiere");

    // Viewer A joins, then viewer B at least two seconds later.
    a.client.goto(&page).await.unwrap();
    a.page_wait("the recorder", RECORD_CUES, vec![]).await;
    a.event_phase("live").await;
    let a_joined = a
        .page_wait(
            "A's page clock",
            "return window.volleyEvent.offset() !== null ? window.volleyEvent.serverNow() : null;",
            vec![],
        )
        .await
        .as_f64()
        .unwrap();
    a.page_wait(
        "two seconds after A joined",
        "return window.volleyEvent.serverNow() - arguments[0] >= 2000 || null;",
        vec![json!(a_joined)],
    )
    .await;
    b.client.goto(&page).await.unwrap();
    b.page_wait("the recorder", RECORD_CUES, vec![]).await;
    b.event_phase("live").await;
    let b_start = b
        .page_wait(
            "B's first position",
            "return window.volleyEvent.position() > 0 ? window.volleyEvent.position() : null;",
            vec![],
        )
        .await
        .as_f64()
        .unwrap();
    assert!(
        b_start < SAY_AT - 1000.0,
        "B joined at {b_start} ms, too late to see the cues arrive (a slow machine?)"
    );

    // Both play the same position: each page's player is within 250 ms of the live
    // position its clock gives, and the two pages within 250 ms of each other.
    a.near_live("A in sync", 100.0).await;
    b.near_live("B in sync", 100.0).await;
    let mut lags = Vec::new();
    for _ in 0..10 {
        let (la, lb) = (a.live_lag().await, b.live_lag().await);
        lags.push((la, lb));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eprintln!("sync samples (ms from live: A, B): {lags:.1?}");
    for (la, lb) in &lags {
        assert!(
            la.abs() < 250.0 && lb.abs() < 250.0 && (la - lb).abs() < 250.0,
            "out of sync (ms from live, A and B): {lags:?}"
        );
    }
    // Their clocks are the server's (same machine: the wall clock), from pongs.
    for (who, p) in [("A", &a), ("B", &b)] {
        let skew = p
            .client
            .execute(
                "const v = window.volleyEvent; return v.offset() === null ? null : v.serverNow() - Date.now();",
                vec![],
            )
            .await
            .unwrap();
        let skew = skew
            .as_f64()
            .unwrap_or_else(|| panic!("{who}: no clock offset"));
        assert!(
            skew.abs() < 100.0,
            "{who}'s server clock is off by {skew} ms"
        );
    }

    // Chat: each sees the other's message (names asked before the first message).
    a.chat(Some("Ana"), "Hello from A").await;
    b.chat(Some("Bo"), "Hi A, B here").await;
    let from_a = b.message_id("Hello from A").await;
    assert_eq!(a.message_id("Hello from A").await, from_a);
    let from_b = a.message_id("Hi A, B here").await;
    let names = a
        .page_wait(
            "the names in the chat",
            "const n = id => { const li = document.querySelector('#chat-log li.msg[data-id=\"' + CSS.escape(id) + '\"]');\
               return li ? li.querySelector('.who').innerText : null; };\
             return n(arguments[0]) && n(arguments[1]) ? [n(arguments[0]), n(arguments[1])] : null;",
            vec![json!(from_a), json!(from_b)],
        )
        .await;
    assert_eq!(names, json!(["Ana", "Bo"]));

    // A moderator, signed in to the console in their browser, deletes A's message: it
    // disappears for both viewers.
    let (_, link) = create_user(&server, "mod@example.com", "moderator").await;
    m.client.goto(&server.http(&link)).await.unwrap();
    m.page_at("/console/setup").await;
    for field in ["password", "confirm"] {
        m.page_control(&format!("the {field} field"), &format!("#{field}"))
            .await
            .send_keys(PASSWORD)
            .await
            .unwrap();
    }
    m.page_control("the set-password button", "button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    m.page_wait(
        "signed in",
        "return location.pathname !== '/console/setup' || null;",
        vec![],
    )
    .await;
    m.client.goto(&page).await.unwrap();
    m.page_wait(
        "the moderator tools",
        "return document.body.classList.contains('is-moderator')\
           && !document.getElementById('mod-bar').hidden || null;",
        vec![],
    )
    .await;
    m.message_id("Hello from A").await;
    let delete = m
        .page_wait(
            "the delete button on A's message",
            "const li = document.querySelector('#chat-log li.msg[data-id=\"' + CSS.escape(arguments[0]) + '\"]');\
             const b = li && li.querySelector('button[data-action=delete]');\
             return b && b.offsetParent !== null ? b : null;",
            vec![json!(from_a)],
        )
        .await;
    Element::from_element_id(m.client.clone(), element_ref(&delete))
        .click()
        .await
        .unwrap();
    m.message_gone(&from_a).await;
    a.message_gone(&from_a).await;
    b.message_gone(&from_a).await;
    // B's message stays, and viewers have no moderator tools.
    b.message_id("Hi A, B here").await;
    let tools = a
        .client
        .execute(
            "return [document.body.classList.contains('is-moderator'),\
                     document.querySelectorAll('#chat-log button[data-action=delete]').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tools, json!([false, 0]));

    // The host message, the poll and the offer show at their offsets, on both pages,
    // by each player's own position.
    for (who, p) in [("A", &a), ("B", &b)] {
        for (cue, at) in [
            ("say", SAY_AT),
            ("poll", POLL_AT),
            ("offer", OFFER_AT),
            ("flow", FLOW_AT),
        ] {
            let seen = p.cue_seen_at(cue).await;
            assert!(
                seen >= at - 50.0 && seen <= at + 1000.0,
                "{who} showed the {cue} at {seen} ms, not at {at} ms"
            );
        }
    }
    // The flow cue opened the flow in the chat widget, inside the page (its CSP lets
    // the widget run, style itself and connect).
    let greeting = a
        .page_wait(
            "the product quiz in the page's chat widget",
            "const w = document.querySelector('#flows [data-flow=\"product-quiz\"] volley-chat');\
             const log = w && w.shadowRoot && w.shadowRoot.querySelector('.log');\
             return log && log.innerText.includes(\"machine finder\")\
               && getComputedStyle(log).overflowY === 'auto' ? log.innerText : null;",
            vec![],
        )
        .await;
    assert!(greeting.as_str().unwrap().contains("I'm Bea"), "{greeting}");
    let host = b
        .page_wait(
            "the host message",
            "const h = document.querySelector('#chat-log li.msg.host');\
             return h ? [h.innerText.includes('Welcome, everyone!'), h.querySelectorAll('strong').length] : null;",
            vec![],
        )
        .await;
    assert_eq!(host, json!([true, 1]));
    let offer = a
        .page_wait(
            "the offer link",
            "const l = document.querySelector('[data-offer=\"early-bird\"] a');\
             return l ? [l.getAttribute('href'), l.target, l.rel, l.innerText] : null;",
            vec![],
        )
        .await;
    // The link carries who clicked it from which showing (for the seller's conversions).
    let href = offer[0].as_str().unwrap();
    assert!(
        href.starts_with("https://example.com/buy?volley_viewer=")
            && href.contains("&volley_showing=live-premiere%40"),
        "{href}"
    );
    assert_eq!(offer[1], json!("_blank"));
    assert!(offer[2].as_str().unwrap().contains("noopener"), "{offer}");
    assert!(
        offer[3].as_str().unwrap().contains("Early-bird price"),
        "{offer}"
    );

    // A votes; both see the results (shown from the poll's start).
    let exports = a
        .page_control(
            "the Exports option",
            "[data-poll=\"fav\"] input[type=radio][value=\"1\"]",
        )
        .await;
    exports.click().await.unwrap();
    a.page_control("the vote button", "[data-poll=\"fav\"] .poll-form button")
        .await
        .click()
        .await
        .unwrap();
    a.page_wait(
        "A's vote recorded",
        "return document.querySelector('[data-poll=\"fav\"] .status').innerText.includes('You voted: Exports') || null;",
        vec![],
    )
    .await;
    for p in [&a, &b] {
        let results = p
            .page_wait(
                "the poll results with one vote",
                "const r = document.querySelector('[data-poll=\"fav\"] .results');\
                 if (!r || r.hidden) return null;\
                 const counts = [...r.querySelectorAll('.result')].map(x => x.querySelector('.result-count').innerText);\
                 return counts.length === 3 && counts[1].startsWith('1 vote') ? counts : null;",
                vec![],
            )
            .await;
        assert!(
            results[0].as_str().unwrap().starts_with("0 votes"),
            "{results}"
        );
    }

    // Q&A: A asks, B upvotes, the moderator answers live: pinned for everyone.
    a.page_control("the Q&A tab", "#tab-qa")
        .await
        .click()
        .await
        .unwrap();
    a.page_control("the question box", "#qa-text")
        .await
        .send_keys(&format!("When does it ship?{}", char::from(Key::Enter)))
        .await
        .unwrap();
    const QUESTION: &str = "const q = [...document.querySelectorAll('#qa-list li.question')]\
          .find(q => q.querySelector('.q-text') && q.querySelector('.q-text').innerText === 'When does it ship?');";
    let asked = a
        .page_wait(
            "A's question listed",
            &format!("{QUESTION} return q ? q.dataset.id : null;"),
            vec![],
        )
        .await;
    for p in [&b, &m] {
        p.page_control("the Q&A tab", "#tab-qa")
            .await
            .click()
            .await
            .unwrap();
    }
    let upvote = b
        .page_wait(
            "the upvote button on A's question",
            &format!(
                "{QUESTION} const u = q && q.querySelector('button.act-upvote');\
                 return u && !u.disabled && u.offsetParent !== null ? u : null;"
            ),
            vec![],
        )
        .await;
    Element::from_element_id(b.client.clone(), element_ref(&upvote))
        .click()
        .await
        .unwrap();
    for p in [&a, &m] {
        p.page_wait(
            "one upvote on A's question",
            &format!("{QUESTION} return q && q.querySelector('button.act-upvote').innerText.includes('1') || null;"),
            vec![],
        )
        .await;
    }
    let answer = m
        .page_wait(
            "the answer button",
            &format!("{QUESTION} const x = q && q.querySelector('button.act-answer'); return x && x.offsetParent !== null ? x : null;"),
            vec![],
        )
        .await;
    Element::from_element_id(m.client.clone(), element_ref(&answer))
        .click()
        .await
        .unwrap();
    m.page_control("the answer box", ".answer-form textarea")
        .await
        .send_keys("In March")
        .await
        .unwrap();
    m.page_control("the send-answer button", ".answer-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    for p in [&a, &b] {
        let shown = p
            .page_wait(
                "the answer, pinned and in the list",
                &format!(
                    "{QUESTION} const pin = document.getElementById('pinned');\
                     const a = q && q.querySelector('.q-answer');\
                     return a && !pin.hidden ? [pin.innerText, a.innerText] : null;"
                ),
                vec![],
            )
            .await;
        let pin = shown[0].as_str().unwrap();
        assert!(
            pin.contains("Q: When does it ship?") && pin.contains("A: In March"),
            "{shown}"
        );
        assert_eq!(shown[1], json!("Answer: In March"));
    }
    assert_eq!(asked.as_str().map(|id| id.starts_with('q')), Some(true));

    // The label is over the player while live, on every page.
    for p in [&a, &b, &m] {
        assert_eq!(p.label_shown("live").await, "Premiere · pre-recorded");
    }
    a.save_screenshot("event-live.png").await;
    m.save_screenshot("event-live-moderator.png").await;

    // Nobody is ahead of live: a seek past it comes back.
    a.client
        .execute(
            "const v = document.getElementById('video'); v.currentTime = v.currentTime + 20;",
            vec![],
        )
        .await
        .unwrap();
    a.near_live("A back at live after seeking ahead", 500.0)
        .await;
    // Pausing puts A behind live, with a way back.
    a.page_control("the pause button", "#play[aria-label=Pause]")
        .await
        .click()
        .await
        .unwrap();
    a.page_wait(
        "'You are behind live'",
        "const b = document.getElementById('behind');\
         return !b.hidden && b.offsetParent !== null && b.innerText.includes('You are behind live') || null;",
        vec![],
    )
    .await;
    a.page_control("the Go live button", "#go-live")
        .await
        .click()
        .await
        .unwrap();
    a.near_live("A live again", 100.0).await;
    assert!(a.live_lag().await.abs() < 250.0);

    // The lobby of the next showing: the label, a countdown, the registration form;
    // nothing is wider than a 320 px screen.
    a.client
        .goto(&server.http("/events/next-premiere"))
        .await
        .unwrap();
    a.event_phase("lobby").await;
    assert_eq!(a.label_shown("lobby").await, "Premiere · pre-recorded");
    let countdown = a
        .page_wait(
            "the countdown",
            "const c = document.getElementById('countdown');\
             return c.offsetParent !== null && /^\\d\\d?:\\d\\d:\\d\\d$/.test(c.innerText.trim()) ? c.innerText : null;",
            vec![],
        )
        .await;
    assert!(
        countdown.as_str().unwrap().starts_with("01:59")
            || countdown.as_str().unwrap().starts_with("02:00"),
        "{countdown}"
    );
    a.page_wait(
        "the registration form",
        "const f = document.getElementById('register');\
         return f.offsetParent !== null && document.getElementById('reg-company') ? true : null;",
        vec![],
    )
    .await;
    for (field, value) in [
        ("#reg-name", "Ana"),
        ("#reg-email", "ana@example.com"),
        ("#reg-company", "Acme"),
    ] {
        a.page_control(field, field)
            .await
            .send_keys(value)
            .await
            .unwrap();
    }
    a.page_control("the register button", "#register-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let done = a
        .page_wait(
            "the registration confirmed",
            "const d = document.getElementById('register-done');\
             return !d.hidden && d.offsetParent !== null\
               ? [d.querySelector('.done-title').innerText, d.querySelectorAll('li').length] : null;",
            vec![],
        )
        .await;
    assert_eq!(
        done,
        json!(["You are registered, Ana.", 2]),
        "the 1h and 5m reminders"
    );
    let listing: Value = crate::support::http()
        .get(server.http("/api/events/next-premiere"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = listing["next"]["id"].as_str().unwrap();
    assert_eq!(
        server.running.app.store.registrations(next).await.unwrap(),
        1
    );
    a.client.set_window_size(320, 700).await.unwrap();
    assert_eq!(
        a.label_shown("lobby at 320 px").await,
        "Premiere · pre-recorded"
    );
    let widths = a
        .client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "horizontal overflow at 320 px: {widths}"
    );
    a.save_screenshot("event-lobby-320px.png").await;

    // The replay of a past showing: its own label, and seeking anywhere is allowed.
    b.client
        .goto(&server.http("/events/past-premiere"))
        .await
        .unwrap();
    b.event_phase("replay").await;
    assert_eq!(b.label_shown("replay").await, "Replay · pre-recorded");
    b.client
        .execute(
            "const s = document.getElementById('seek'); s.value = '60';\
             s.dispatchEvent(new Event('change', { bubbles: true }));",
            vec![],
        )
        .await
        .unwrap();
    b.page_wait(
        "the replay at 1:00",
        "const p = window.volleyEvent.position(); return p >= 59500 && p < 61500 || null;",
        vec![],
    )
    .await;
    assert_eq!(b.label_shown("replay").await, "Replay · pre-recorded");
    // A message posted in the replay is at the poster's position: it comes and goes
    // with the player's own position.
    b.chat(Some("Bo"), "Posted at one minute").await;
    let late = b.message_id("Posted at one minute").await;
    let seek = |to: &str| {
        format!(
            "const s = document.getElementById('seek'); s.value = '{to}';\
             s.dispatchEvent(new Event('change', {{ bubbles: true }})); return true;"
        )
    };
    b.client.execute(&seek("30"), vec![]).await.unwrap();
    b.message_gone(&late).await;
    b.client.execute(&seek("61"), vec![]).await.unwrap();
    assert_eq!(b.message_id("Posted at one minute").await, late);
    b.save_screenshot("event-replay.png").await;

    a.close().await;
    b.close().await;
    m.close().await;
    server.stop().await;
}
