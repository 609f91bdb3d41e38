//! The agent console: server-rendered pages for people who take conversations over
//! from the bot. The queue page lists the open hand-offs (from the desk, in memory:
//! no store scan per request) and the latest resolved ones; the conversation page
//! shows one conversation's whole log, its contact and variables. `web/console/desk.js`
//! then keeps both live over the desk and conversation streams of `desk_api` and
//! performs every action through that JSON API.
//!
//! Everything a participant (or a flow) provided is HTML-escaped here; the only HTML
//! inserted as is, is a message's `html`, which the server rendered from Markdown
//! with `volley_flow::markdown` (safe by construction).
//!
//! Routes (in `lib.rs`, next to `mod console;`), in the `endpoints()` table:
//!
//! ```text
//! endpoint(M::GET, "/console", Message, console::queue_page),
//! endpoint(M::GET, "/console/c/{id}", Message, console::conversation_page),
//! endpoint(M::GET, "/console/desk.js", Message, console::script),
//! endpoint(M::GET, "/console/desk.css", Message, console::style),
//! ```
//!
//! or, with plain `Router::route`:
//!
//! ```text
//! .route("/console", get(console::queue_page))
//! .route("/console/c/{id}", get(console::conversation_page))
//! .route("/console/desk.js", get(console::script))
//! .route("/console/desk.css", get(console::style))
//! ```

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use serde_json::Value;
use volley_flow::markdown::escape_html as esc;
use volley_store::HandoffRow;

use crate::App;
use crate::auth::{Agent, Console, Role, Staff};
use crate::desk_api::{self, CannedText, HandoffDetail};
use crate::error::ApiError;
use crate::handoff::HandoffView;

const DESK_JS: &str = include_str!("../web/console/desk.js");
const DESK_CSS: &str = include_str!("../web/console/desk.css");

/// Rows rendered per list; the rest are counted ("and 12 more").
pub const MAX_ROWS: usize = 200;
/// Resolved hand-offs on the queue page.
pub const RESOLVED_SHOWN: i64 = 20;
/// Step ids offered for "return to flow".
const MAX_STEPS: usize = 500;

/// `GET /console/desk.js`.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DESK_JS,
    )
        .into_response()
}

/// `GET /console/desk.css`.
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DESK_CSS,
    )
        .into_response()
}

/// An HTML page: never cached, never framed. Images in messages may come from
/// anywhere on https (flows show them); scripts and requests only from here.
pub(crate) fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' https: data:; media-src 'self' https:; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            // `same-origin`, not `no-referrer`: with `no-referrer` browsers send `Origin: null`
            // on POSTs, and the API refuses them as cross-site.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

pub(crate) fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{t} · Volley</title><link rel=\"stylesheet\" href=\"/console/desk.css\"></head>\
             <body><main class=\"message\"><h1>{t}</h1><p>{m}</p>\
             <p><a href=\"/console\">Back to the console</a></p></main></body></html>",
            t = esc(title),
            m = esc(text)
        ),
    )
}

/// The signed-in admin; a browser without a session goes to sign in, other roles get
/// `forbidden` (what the page is for).
pub(crate) fn admin_or_page(
    console: Result<Console, ApiError>,
    forbidden: &str,
) -> Result<Console, Box<Response>> {
    match console {
        Ok(c) if c.staff.role == Role::Admin => Ok(c),
        Ok(_) => Err(Box::new(message_page(
            StatusCode::FORBIDDEN,
            "Not for your role",
            forbidden,
        ))),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Err(Box::new(Redirect::to("/console/login").into_response()))
        }
        Err(e) => Err(Box::new(message_page(
            e.status,
            "Cannot open the console",
            &e.message,
        ))),
    }
}

/// The signed-in agent (or admin); a browser without a session goes to sign in.
fn agent_or_page(console: Result<Console, ApiError>) -> Result<Console, Box<Response>> {
    match console {
        Ok(c) if matches!(c.staff.role, Role::Agent | Role::Admin) => Ok(c),
        Ok(_) => Err(Box::new(message_page(
            StatusCode::FORBIDDEN,
            "Not for your role",
            "The agent console is for agents and admins.",
        ))),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Err(Box::new(Redirect::to("/console/login").into_response()))
        }
        Err(e) => Err(Box::new(message_page(
            e.status,
            "Cannot open the console",
            &e.message,
        ))),
    }
}

#[derive(Serialize)]
struct Me<'a> {
    id: &'a str,
    name: &'a str,
    role: Role,
}

fn me(s: &Staff) -> Me<'_> {
    Me {
        id: &s.id,
        name: &s.name,
        role: s.role,
    }
}

/// JSON for a `<script type="application/json">` element: `<` never appears raw, so
/// no text can close the element.
fn json_for_html(v: &impl Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
}

/// "just now", "4 min", "2 h 5 min", "3 d".
pub fn duration_text(ms: i64) -> String {
    let min = ms.max(0) / 60_000;
    match min {
        0 => "just now".into(),
        1..=59 => format!("{min} min"),
        60..=1439 if min % 60 == 0 => format!("{} h", min / 60),
        60..=1439 => format!("{} h {} min", min / 60, min % 60),
        _ => format!("{} d", min / 1440),
    }
}

/// A time as `<time>`: UTC on the server, local time once the script runs.
fn time_html(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or_default();
    format!(
        "<time datetime=\"{}\" data-at=\"{ms}\">{} UTC</time>",
        ts,
        ts.strftime("%Y-%m-%d %H:%M")
    )
}

fn shell(title: &str, kind: &str, c: &Console, main: &str, data: &impl Serialize) -> String {
    let mut h = String::with_capacity(main.len() + 4096);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"csrf\" content=\"{csrf}\">\n<title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"/console/desk.css\">\n\
         <script src=\"/console/desk.js\" defer></script>\n</head>\n\
         <body class=\"desk page-{kind}\" data-page=\"{kind}\">\n\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\n\
         <header class=\"top\">\n<a class=\"brand\" href=\"/console\">Volley console</a>\n\
         <div class=\"presence\">\n\
         <button id=\"availability\" type=\"button\" aria-pressed=\"true\" disabled \
         title=\"Available: conversations are assigned to you (Alt+A)\">Available</button>\n\
         <span id=\"live\" class=\"live\" role=\"status\">Connecting…</span>\n\
         <button id=\"notify\" type=\"button\" class=\"quiet\" hidden>Enable notifications</button>\n\
         {admin}<a class=\"account\" href=\"/console/account\">{name}</a>\n</div>\n</header>\n\
         <div id=\"alert\" class=\"alert\" role=\"alert\" hidden><span class=\"text\"></span> \
         <button type=\"button\" class=\"dismiss quiet\">Dismiss</button></div>\n",
        csrf = esc(&c.csrf),
        title = esc(title),
        name = esc(&c.staff.name),
        admin = if c.staff.role == Role::Admin {
            "<a class=\"account\" href=\"/console/analytics\">Analytics</a>\n\
             <a class=\"account\" href=\"/console/webhooks\">Webhooks</a>\n"
        } else {
            ""
        },
    );
    h.push_str(main);
    h.push_str(SHORTCUTS);
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"page-data\">{}</script>\n</body>\n</html>\n",
        json_for_html(data)
    );
    h
}

const SHORTCUTS: &str = "<footer class=\"shortcuts\">\n<details>\n<summary>Keyboard shortcuts</summary>\n\
<dl>\n\
<dt><kbd>Tab</kbd></dt><dd>every control, in reading order</dd>\n\
<dt><kbd>Alt</kbd>+<kbd>R</kbd></dt><dd>the reply box</dd>\n\
<dt><kbd>Alt</kbd>+<kbd>N</kbd></dt><dd>private note on or off</dd>\n\
<dt><kbd>Enter</kbd> / <kbd>Shift</kbd>+<kbd>Enter</kbd></dt><dd>send / new line</dd>\n\
<dt><kbd>/</kbd>code</dt><dd>canned responses (<kbd>↑</kbd> <kbd>↓</kbd>, <kbd>Enter</kbd> or <kbd>Tab</kbd> inserts)</dd>\n\
<dt><kbd>Alt</kbd>+<kbd>A</kbd></dt><dd>available or away</dd>\n\
<dt><kbd>Alt</kbd>+<kbd>Q</kbd></dt><dd>the queue page</dd>\n\
<dt><kbd>Esc</kbd></dt><dd>closes menus and suggestions</dd>\n\
</dl>\n</details>\n</footer>\n";

/// Names of users by id (for "assigned to"): the agents online, and for admins the
/// staff list (small; one query).
async fn agent_names(app: &App, admin: bool) -> HashMap<String, String> {
    let mut names: HashMap<String, String> = HashMap::new();
    if admin && let Ok(users) = app.store.users().await {
        names.extend(users.into_iter().map(|u| (u.id, u.name)));
    }
    names.extend(app.desk.agents().into_iter().map(|a| (a.id, a.name)));
    names
}

/// Which list a row is rendered in (what its second line says).
#[derive(Clone, Copy, PartialEq)]
enum ListKind {
    Waiting,
    Mine,
    Snoozed,
    All,
    Resolved,
}

fn row_html(
    h: &mut String,
    r: &HandoffRow,
    list: ListKind,
    now: i64,
    names: &HashMap<String, String>,
) {
    let prio = crate::handoff::priority_name(r.priority);
    let preview = if r.preview.is_empty() {
        r.reason.as_deref().unwrap_or("(no message)")
    } else {
        &r.preview
    };
    let _ = write!(
        h,
        "<li class=\"row status-{status}\" data-conversation=\"{id}\">\
         <a href=\"/console/c/{id}\"><span class=\"preview\">{preview}</span>\
         <span class=\"meta\"><span class=\"queue\">{queue}</span>",
        status = esc(&r.status),
        id = esc(&r.conversation_id),
        preview = esc(preview),
        queue = esc(&r.queue),
    );
    if prio != "normal" {
        let _ = write!(h, " <span class=\"prio prio-{prio}\">{prio}</span>");
    }
    match list {
        ListKind::Waiting => {
            let _ = write!(
                h,
                " <span class=\"since\" data-since=\"{}\" data-prefix=\"waiting \">waiting {}</span>",
                r.requested_at,
                duration_text(now - r.requested_at)
            );
        }
        ListKind::Mine | ListKind::All => {
            let _ = write!(
                h,
                " <span class=\"since\" data-since=\"{}\" data-prefix=\"last message \">last message {}</span>",
                r.last_message_at,
                duration_text(now - r.last_message_at)
            );
        }
        ListKind::Snoozed => {
            if let Some(until) = r.snoozed_until {
                let _ = write!(
                    h,
                    " <span class=\"until\">until {}</span>",
                    time_html(until)
                );
            }
        }
        ListKind::Resolved => {
            if let Some(at) = r.resolved_at {
                let _ = write!(
                    h,
                    " <span class=\"since\" data-since=\"{at}\" data-prefix=\"resolved \" data-suffix=\" ago\">resolved {} ago</span>",
                    duration_text(now - at)
                );
            }
            if let Some(score) = r.csat {
                let _ = write!(h, " <span class=\"csat\">rated {score}/5</span>");
            }
        }
    }
    if matches!(list, ListKind::All | ListKind::Snoozed | ListKind::Resolved)
        && let Some(agent) = &r.agent_id
    {
        let name = names.get(agent).map_or("another agent", String::as_str);
        let _ = write!(h, " <span class=\"agent\">{}</span>", esc(name));
    }
    for t in r.tags.split_whitespace() {
        let _ = write!(h, " <span class=\"tag\">{}</span>", esc(t));
    }
    h.push_str("</span></a></li>\n");
}

/// A list on a page: its id suffix, heading, text when empty, and row shape.
struct ListSpec(&'static str, &'static str, &'static str, ListKind);

const WAITING: ListSpec = ListSpec(
    "waiting",
    "Waiting",
    "Nobody is waiting.",
    ListKind::Waiting,
);
const MINE: ListSpec = ListSpec("mine", "Mine", "Nothing assigned to you.", ListKind::Mine);
const SNOOZED: ListSpec = ListSpec("snoozed", "Snoozed", "Nothing snoozed.", ListKind::Snoozed);
const ALL: ListSpec = ListSpec("all", "All open", "No open conversations.", ListKind::All);
const RESOLVED: ListSpec = ListSpec(
    "resolved",
    "Recently resolved",
    "Nothing resolved yet.",
    ListKind::Resolved,
);

fn list_html(
    h: &mut String,
    spec: &ListSpec,
    rows: &[&HandoffRow],
    now: i64,
    names: &HashMap<String, String>,
) {
    let ListSpec(key, title, empty, list) = *spec;
    let _ = write!(
        h,
        "<section class=\"list\" id=\"section-{key}\" aria-labelledby=\"h-{key}\">\n\
         <h2 id=\"h-{key}\">{title} <span class=\"count\" id=\"count-{key}\">{n}</span></h2>\n\
         <ol class=\"rows\" id=\"list-{key}\">\n",
        n = rows.len(),
    );
    for r in rows.iter().take(MAX_ROWS) {
        row_html(h, r, list, now, names);
    }
    let more = rows.len().saturating_sub(MAX_ROWS);
    let _ = write!(
        h,
        "</ol>\n<p class=\"more\" id=\"more-{key}\"{}>and {more} more</p>\n\
         <p class=\"empty\" id=\"empty-{key}\"{}>{empty}</p>\n</section>\n",
        if more == 0 { " hidden" } else { "" },
        if rows.is_empty() { "" } else { " hidden" },
    );
}

#[derive(Serialize)]
struct QueueData<'a> {
    page: &'static str,
    me: Me<'a>,
    now: i64,
    names: &'a HashMap<String, String>,
    resolved: Vec<HandoffView>,
    max_rows: usize,
}

/// `GET /console`: waiting, mine, snoozed, all open (admins) and recently resolved.
pub async fn queue_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
) -> Response {
    let c = match agent_or_page(console) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let now = app.clock.now_ms();
    let admin = c.staff.role == Role::Admin;
    let open = app.desk.open();
    let resolved = match app.store.resolved_handoffs(now + 1, RESOLVED_SHOWN).await {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::from(e);
            return message_page(e.status, "Cannot open the console", &e.message);
        }
    };
    let names = agent_names(&app, admin).await;
    let me_id = c.staff.id.as_str();
    let waiting: Vec<&HandoffRow> = open.iter().filter(|r| r.status == "queued").collect();
    let mut mine: Vec<&HandoffRow> = open
        .iter()
        .filter(|r| r.status == "assigned" && r.agent_id.as_deref() == Some(me_id))
        .collect();
    mine.sort_by_key(|r| std::cmp::Reverse(r.last_message_at));
    let mut snoozed: Vec<&HandoffRow> = open
        .iter()
        .filter(|r| r.status == "snoozed" && (admin || r.agent_id.as_deref() == Some(me_id)))
        .collect();
    snoozed.sort_by_key(|r| r.snoozed_until);
    let resolved_refs: Vec<&HandoffRow> = resolved.iter().collect();

    let mut h = String::with_capacity(16 * 1024);
    h.push_str("<main id=\"main\" class=\"queues\" tabindex=\"-1\">\n<h1 class=\"sr-only\">Conversations</h1>\n");
    list_html(&mut h, &WAITING, &waiting, now, &names);
    list_html(&mut h, &MINE, &mine, now, &names);
    list_html(&mut h, &SNOOZED, &snoozed, now, &names);
    if admin {
        let all: Vec<&HandoffRow> = open.iter().collect();
        list_html(&mut h, &ALL, &all, now, &names);
    }
    list_html(&mut h, &RESOLVED, &resolved_refs, now, &names);
    h.push_str("</main>\n");
    let data = QueueData {
        page: "queue",
        me: me(&c.staff),
        now,
        names: &names,
        resolved: resolved.iter().map(HandoffView::from).collect(),
        max_rows: MAX_ROWS,
    };
    page(
        StatusCode::OK,
        shell("Console · Volley", "queue", &c, &h, &data),
    )
}

// ---------------------------------------------------------------------------------
// The conversation page

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn str_of<'a>(data: &'a Value, key: &str) -> &'a str {
    data[key].as_str().unwrap_or("")
}

/// Kinds of log entries that say nothing to an agent (step transitions, variables…).
pub const INTERNAL_KINDS: &[&str] = &["enter", "set", "answer", "acknowledge", "split", "goal"];

/// One log entry as a transcript item, or `None` for internal entries. The same
/// shapes as `renderEntry` in desk.js (which renders live entries).
fn entry_html(
    h: &mut String,
    seq: i64,
    kind: &str,
    at: i64,
    data: &Value,
    names: &HashMap<String, String>,
) {
    if INTERNAL_KINDS.contains(&kind) {
        return;
    }
    // (class, who, body HTML)
    let system = |text: String| ("system", String::new(), esc(&text));
    let (class, who, body) = match kind {
        "message" => {
            let agent = str_of(data, "from") == "agent";
            let who = if agent {
                esc(str_of(data, "agent"))
            } else {
                "Bot".into()
            };
            let mut body = match data["html"].as_str() {
                // Rendered by the server from Markdown: safe.
                Some(html) => html.to_string(),
                None => esc(str_of(data, "text")),
            };
            if let Some(img) = data["image"].as_str() {
                let alt = data["alt"].as_str().unwrap_or("image");
                let _ = write!(
                    body,
                    "<p class=\"media\">[image: {}]</p>",
                    esc(&format!("{alt} — {img}"))
                );
            }
            if let Some(links) = data["links"].as_array() {
                for l in links {
                    let label = text_of(&l["label"]);
                    let _ = write!(body, "<p class=\"media\">[link: {}]</p>", esc(&label));
                }
            }
            let class = if agent {
                "agent"
            } else if data["invalid"].as_bool() == Some(true) {
                "bot invalid"
            } else {
                "bot"
            };
            (class, who, body)
        }
        "ask" => {
            let labels: Vec<String> = data["options"]
                .as_array()
                .into_iter()
                .chain(data["items"].as_array())
                .flatten()
                .map(|o| text_of(&o["label"]))
                .collect();
            let mut text = format!("Asks ({})", text_of(&data["input"]));
            if !labels.is_empty() {
                text.push_str(": ");
                text.push_str(&labels.join(" · "));
            }
            system(text)
        }
        "input" => {
            let label = data["label"]
                .as_str()
                .or(data["text"].as_str())
                .map(str::to_string);
            match label {
                Some(l) => ("participant", "Participant".into(), esc(&l)),
                None => {
                    let action = data["action"].as_str().unwrap_or("input");
                    system(format!("({action})"))
                }
            }
        }
        "handoff" => {
            let mut t = format!("Handed off to {}", text_of(&data["queue"]));
            if data["queue"].is_null() {
                t = "Handed off to a person".into();
            }
            if let Some(reason) = data["reason"].as_str() {
                t.push_str(" — ");
                t.push_str(reason);
            }
            system(t)
        }
        "queue" => system(format!("Told: {}", str_of(data, "text"))),
        "assigned" => system(format!(
            "Assigned to {} ({})",
            str_of(data, "agent"),
            str_of(data, "by")
        )),
        "note" => (
            "note",
            format!(
                "{} · private note, only agents see this",
                esc(str_of(data, "agent"))
            ),
            match data["html"].as_str() {
                Some(html) => html.to_string(),
                None => esc(str_of(data, "text")),
            },
        ),
        "tags" => {
            let tags: Vec<String> = data["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text_of)
                .collect();
            system(if tags.is_empty() {
                "Tags cleared".into()
            } else {
                format!("Tags: {}", tags.join(", "))
            })
        }
        "snoozed" => {
            let until = data["until"].as_i64().unwrap_or(0);
            (
                "system",
                String::new(),
                format!("Snoozed until {}", time_html(until)),
            )
        }
        "woke" => system("Back from snooze".into()),
        "transferred" => {
            let to = match data["to_agent"].as_str() {
                Some(a) => names.get(a).cloned().unwrap_or_else(|| "an agent".into()),
                None => format!("queue {}", text_of(&data["queue"])),
            };
            system(format!("Transferred to {to}"))
        }
        "resolved" => {
            let mut t = format!("Resolved by {}", str_of(data, "agent"));
            if let Some(step) = data["returned_to"].as_str() {
                let _ = write!(t, " — back to the flow at step {step}");
            }
            system(t)
        }
        "csat_request" => system("Asked for a rating (1–5)".into()),
        "csat" => system(format!("Rated {}/5", text_of(&data["score"]))),
        "end" => system(format!("Conversation ended ({})", str_of(data, "outcome"))),
        "error" => system(format!("Error: {}", str_of(data, "message"))),
        other => system(other.replace('_', " ")),
    };
    let _ = write!(
        h,
        "<li class=\"entry {class}\" data-seq=\"{seq}\" data-kind=\"{}\">",
        esc(kind)
    );
    if !who.is_empty() {
        let _ = write!(h, "<div class=\"who\">{who}</div>");
    }
    let _ = writeln!(h, "<div class=\"body\">{body}</div>{}</li>", time_html(at));
}

/// A JSON value as definition-list rows (`a.b` for nested objects).
fn dl_rows(h: &mut String, prefix: &str, v: &Value, depth: usize) {
    match v {
        Value::Object(map) if depth < 3 => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                dl_rows(h, &key, v, depth + 1);
            }
        }
        Value::Null if depth > 0 => {}
        other => {
            let _ = write!(
                h,
                "<dt>{}</dt><dd>{}</dd>",
                esc(prefix),
                esc(&text_of(other))
            );
        }
    }
}

#[derive(Serialize)]
struct ConversationData<'a> {
    page: &'static str,
    me: Me<'a>,
    now: i64,
    conversation: &'a str,
    handoff: Option<&'a HandoffView>,
    canned: &'a [CannedText],
    names: &'a HashMap<String, String>,
    last_seq: i64,
    max_rows: usize,
}

fn button(id: &str, label: &str, extra: &str) -> String {
    format!("<button type=\"button\" id=\"{id}\"{extra}>{label}</button>")
}

/// `GET /console/c/{id}`: one conversation — its transcript (live once the script
/// runs), the reply box, the actions, and the contact, variables and earlier
/// conversations.
pub async fn conversation_page(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
    Path(id): Path<String>,
) -> Response {
    let c = match agent_or_page(console) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let detail: HandoffDetail = match desk_api::detail(
        State(app.clone()),
        Agent(c.staff.clone()),
        Path(id.clone()),
    )
    .await
    {
        Ok(axum::Json(d)) => d,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return message_page(StatusCode::NOT_FOUND, "No such conversation", &e.message);
        }
        Err(e) => return message_page(e.status, "Cannot open the conversation", &e.message),
    };
    let now = app.clock.now_ms();
    let admin = c.staff.role == Role::Admin;
    let mut names = agent_names(&app, admin).await;
    if let Some(agent) = detail.handoff.as_ref().and_then(|h| h.agent.clone())
        && !names.contains_key(&agent)
        && let Ok(Some(u)) = app.store.user(&agent).await
    {
        names.insert(u.id, u.name);
    }
    let contact_name = detail.contact["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .map(str::to_string);
    let title = contact_name
        .clone()
        .unwrap_or_else(|| format!("Conversation {}", detail.conversation.id));
    let steps: Vec<String> = app
        .flows
        .latest(&detail.conversation.flow)
        .map(|p| {
            p.flow
                .step_ids()
                .take(MAX_STEPS)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let queues: Vec<String> = {
        let mut q: Vec<String> = app.config.handoff.queues.keys().cloned().collect();
        q.push(app.config.handoff.default_queue.clone());
        q.sort();
        q.dedup();
        q
    };

    let mut h = String::with_capacity(32 * 1024);
    h.push_str(
        "<div class=\"workspace\">\n<nav class=\"side-lists\" aria-label=\"Your conversations\">\n",
    );
    // Kept live by the script (the desk stream); the links work without it.
    let open = app.desk.open();
    let me_id = c.staff.id.as_str();
    let mine: Vec<&HandoffRow> = open
        .iter()
        .filter(|r| r.status == "assigned" && r.agent_id.as_deref() == Some(me_id))
        .collect();
    let waiting: Vec<&HandoffRow> = open.iter().filter(|r| r.status == "queued").collect();
    list_html(&mut h, &MINE, &mine, now, &names);
    list_html(&mut h, &WAITING, &waiting, now, &names);
    h.push_str("</nav>\n<main id=\"main\" class=\"conversation\" tabindex=\"-1\">\n");

    // Header: who, where, state.
    let hv = detail.handoff.as_ref();
    let _ = write!(
        h,
        "<header class=\"conv-head\">\n<h1>{}</h1>\n<p class=\"state\" id=\"state\">",
        esc(&title)
    );
    let _ = write!(
        h,
        "<span class=\"flow\">flow {}</span>",
        esc(&detail.conversation.flow)
    );
    match hv {
        Some(v) => {
            let agent = v.agent.as_ref().map(|a| {
                names
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| "another agent".into())
            });
            let _ = write!(
                h,
                " · <span class=\"queue\">queue {}</span> · <span class=\"status status-{s}\" id=\"status\">{s}</span>",
                esc(&v.queue),
                s = esc(&v.status)
            );
            if let Some(a) = agent {
                let _ = write!(
                    h,
                    " · <span class=\"agent\" id=\"assignee\">{}</span>",
                    esc(&a)
                );
            }
            if v.priority != "normal" {
                let _ = write!(
                    h,
                    " · <span class=\"prio prio-{p}\">{p}</span>",
                    p = v.priority
                );
            }
        }
        None => h.push_str(" · <span class=\"status\" id=\"status\">never handed off</span>"),
    }
    h.push_str("</p>\n</header>\n");

    // Actions (the script shows those that fit the state).
    let tags = hv.map(|v| v.tags.join(" ")).unwrap_or_default();
    h.push_str("<div class=\"actions\" role=\"toolbar\" aria-label=\"Conversation actions\">\n");
    h.push_str(&button("pick", "Pick", " hidden"));
    h.push_str(
        "\n<div class=\"menu\">\
         <button type=\"button\" id=\"snooze-open\" aria-expanded=\"false\" aria-controls=\"snooze-menu\">Snooze…</button>\
         <div class=\"popup\" id=\"snooze-menu\" hidden>\
         <button type=\"button\" data-snooze=\"hour\">For 1 hour</button>\
         <button type=\"button\" data-snooze=\"tomorrow\">Until tomorrow 09:00</button>\
         <label for=\"snooze-until\">Until</label><input type=\"datetime-local\" id=\"snooze-until\">\
         <button type=\"button\" data-snooze=\"custom\">Snooze until then</button>\
         </div></div>\n",
    );
    h.push_str(
        "<div class=\"menu\">\
         <button type=\"button\" id=\"transfer-open\" aria-expanded=\"false\" aria-controls=\"transfer-menu\">Transfer…</button>\
         <div class=\"popup\" id=\"transfer-menu\" hidden>\
         <label for=\"transfer-agent\">To an agent online</label>\
         <select id=\"transfer-agent\"><option value=\"\">(loading…)</option></select>\
         <button type=\"button\" id=\"transfer-to-agent\">Transfer to agent</button>\
         <label for=\"transfer-queue\">To a queue</label>\
         <input id=\"transfer-queue\" list=\"queue-names\" autocomplete=\"off\">\
         <datalist id=\"queue-names\">",
    );
    for q in &queues {
        let _ = write!(h, "<option value=\"{}\">", esc(q));
    }
    h.push_str(
        "</datalist><button type=\"button\" id=\"transfer-to-queue\">Transfer to queue</button>\
         </div></div>\n",
    );
    h.push_str(&button("resolve", "Resolve", ""));
    h.push_str(
        "\n<div class=\"menu\">\
         <button type=\"button\" id=\"return-open\" aria-expanded=\"false\" aria-controls=\"return-menu\">Return to flow…</button>\
         <div class=\"popup\" id=\"return-menu\" hidden>\
         <label for=\"return-step\">Continue at step</label>\
         <input id=\"return-step\" list=\"step-ids\" autocomplete=\"off\" placeholder=\"step id\">\
         <datalist id=\"step-ids\">",
    );
    for s in &steps {
        let _ = write!(h, "<option value=\"{}\">", esc(s));
    }
    let _ = write!(
        h,
        "</datalist><p class=\"hint\">The variables are kept.</p>\
         <button type=\"button\" id=\"return-go\">Return to flow</button>\
         </div></div>\n</div>\n\
         <div class=\"tags-editor\"><label for=\"tags-input\">Tags</label>\
         <input id=\"tags-input\" value=\"{}\" autocomplete=\"off\" placeholder=\"one word each, space-separated\">\
         <button type=\"button\" id=\"tags-save\">Save tags</button></div>\n",
        esc(&tags)
    );

    // The transcript.
    h.push_str(
        "<ol id=\"log\" class=\"log\" aria-live=\"polite\" aria-relevant=\"additions\" aria-label=\"Transcript\">\n",
    );
    let mut last_seq = 0;
    for e in &detail.log {
        entry_html(&mut h, e.seq, &e.kind, e.at, &e.data, &names);
        last_seq = e.seq;
    }
    h.push_str("</ol>\n");

    // The composer.
    h.push_str(
        "<form id=\"composer\" class=\"composer\">\n\
         <div class=\"mode\"><button type=\"button\" id=\"note-toggle\" aria-pressed=\"false\" \
         title=\"Alt+N\">Private note</button> <span id=\"mode-hint\" class=\"hint\">Replying to the participant</span></div>\n\
         <label for=\"reply\" class=\"sr-only\">Message</label>\n\
         <textarea id=\"reply\" name=\"text\" rows=\"3\" maxlength=\"4000\" role=\"combobox\" \
         aria-autocomplete=\"list\" aria-controls=\"canned-list\" aria-expanded=\"false\" \
         aria-describedby=\"reply-help\" \
         placeholder=\"Write a reply… (/ for canned responses)\"></textarea>\n\
         <ul id=\"canned-list\" class=\"canned\" role=\"listbox\" aria-label=\"Canned responses\" hidden></ul>\n\
         <p id=\"reply-help\" class=\"hint\">Enter sends · Shift+Enter new line · Alt+R here · Alt+N private note</p>\n\
         <button type=\"submit\" id=\"send\">Send</button>\n</form>\n</main>\n",
    );

    // The side panel.
    h.push_str(
        "<aside class=\"side\" aria-label=\"Contact\">\n<section><h2>Contact</h2><dl class=\"kv\">",
    );
    dl_rows(&mut h, "", &detail.contact, 0);
    h.push_str("</dl></section>\n<section><h2>Variables</h2><dl class=\"kv\" id=\"variables\">");
    for (k, v) in &detail.variables {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&text_of(v)));
    }
    if detail.variables.is_empty() {
        h.push_str("<dd class=\"empty\">none</dd>");
    }
    h.push_str("</dl></section>\n<section><h2>Earlier conversations</h2><ol class=\"earlier\">");
    for e in &detail.earlier {
        let _ = write!(
            h,
            "<li><a href=\"/console/c/{id}\">{flow}</a> <span class=\"status\">{status}</span> {at}</li>",
            id = esc(&e.id),
            flow = esc(&e.flow),
            status = esc(&e.status),
            at = time_html(e.created_at),
        );
    }
    if detail.earlier.is_empty() {
        h.push_str("<li class=\"empty\">none</li>");
    }
    let _ = write!(
        h,
        "</ol></section>\n<p class=\"ids\">conversation <code>{}</code>",
        esc(&detail.conversation.id)
    );
    if let Some(v) = hv {
        let _ = write!(h, "<br>contact <code>{}</code>", esc(&v.contact));
    }
    h.push_str("</p>\n</aside>\n</div>\n");

    let data = ConversationData {
        page: "conversation",
        me: me(&c.staff),
        now,
        conversation: &detail.conversation.id,
        handoff: hv,
        canned: &detail.canned,
        names: &names,
        last_seq,
        max_rows: MAX_ROWS,
    };
    page(
        StatusCode::OK,
        shell(&format!("{title} · Console"), "conversation", &c, &h, &data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn participant_text_is_escaped_and_server_html_kept() {
        let names = HashMap::new();
        let mut h = String::new();
        entry_html(
            &mut h,
            3,
            "input",
            0,
            &json!({"text": "<img src=x onerror=alert(1)>"}),
            &names,
        );
        assert!(h.contains("&lt;img src=x onerror=alert(1)&gt;"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        let mut h = String::new();
        entry_html(
            &mut h,
            4,
            "message",
            0,
            &json!({"from": "bot", "text": "**hi**", "html": "<p><strong>hi</strong></p>"}),
            &names,
        );
        assert!(h.contains("<p><strong>hi</strong></p>"), "{h}");
        let mut h = String::new();
        entry_html(&mut h, 5, "set", 0, &json!({}), &names);
        assert!(h.is_empty());
    }

    #[test]
    fn embedded_json_cannot_close_its_script_element() {
        let s = json_for_html(&json!({"x": "</script><script>alert(1)</script>"}));
        assert!(!s.contains('<'), "{s}");
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["x"], "</script><script>alert(1)</script>");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(10_000), "just now");
        assert_eq!(duration_text(4 * 60_000), "4 min");
        assert_eq!(duration_text(125 * 60_000), "2 h 5 min");
        assert_eq!(duration_text(120 * 60_000), "2 h");
        assert_eq!(duration_text(3 * 1440 * 60_000), "3 d");
    }
}
