//! Accounts and access: sign-in, sessions, CSRF, rate limits, setup links, API key
//! scopes, and the matrix of every route × every kind of caller.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use volley_server::ManualClock;

use crate::support::*;

const HOUR: Duration = Duration::from_secs(3600);

fn start_time() -> jiff::Timestamp {
    "2026-03-06T10:00:00Z".parse().unwrap()
}

/// A client that does not follow redirects (they are what we check).
async fn login(server: &TestServer, email: &str, password: &str) -> reqwest::Response {
    http()
        .post(server.http("/console/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("email", email), ("password", password)]))
        .send()
        .await
        .unwrap()
}

async fn post_as(server: &TestServer, s: &Session, path: &str, csrf: Option<&str>) -> u16 {
    let mut req = http()
        .post(server.http(path))
        .header(COOKIE, format!("volley_session={}", s.token));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn sign_in_sign_out_and_sign_out_everywhere() {
    let server = TestServer::start().await;
    let a = user(&server, "Agent@Example.com", "agent").await;
    let r = login(&server, "  agent@EXAMPLE.com ", PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let b = session_of(&server, session_token(&r).unwrap()).await;
    let (_, who) = me(&server, &a.token).await;
    assert_eq!(
        (&who["email"], &who["role"], &who["name"]),
        (
            &json!("agent@example.com"),
            &json!("agent"),
            &json!("agent user")
        )
    );
    // The account page shows the user and carries the CSRF token in its forms.
    let page = http()
        .get(server.http("/console/account"))
        .header(COOKIE, format!("volley_session={}", b.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("agent@example.com") && page.contains(&b.csrf));
    // Logout ends this session only.
    assert_eq!(
        post_as(&server, &b, "/console/logout", Some(&b.csrf)).await,
        303
    );
    assert_eq!(me(&server, &b.token).await.0, 401);
    assert_eq!(me(&server, &a.token).await.0, 200);
    let c = session_of(
        &server,
        session_token(&login(&server, "agent@example.com", PASSWORD).await).unwrap(),
    )
    .await;
    // Logout everywhere ends all of them.
    assert_eq!(
        post_as(&server, &a, "/console/logout-everywhere", Some(&a.csrf)).await,
        303
    );
    assert_eq!(me(&server, &a.token).await.0, 401);
    assert_eq!(me(&server, &c.token).await.0, 401);
    // Signed out, the account page sends you to sign in.
    let r = http()
        .get(server.http("/console/account"))
        .header(COOKIE, format!("volley_session={}", a.token))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/console/login")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let server = TestServer::start().await;
    user(&server, "mod@example.com", "moderator").await;
    let wrong = login(&server, "mod@example.com", "not the password").await;
    assert_eq!(wrong.status(), 401);
    assert!(session_token(&wrong).is_none());
    let wrong = wrong.text().await.unwrap();
    let unknown = login(&server, "nobody@example.com", "not the password").await;
    assert_eq!(unknown.status(), 401);
    let unknown = unknown.text().await.unwrap();
    assert!(wrong.contains("Wrong email address or password."));
    assert_eq!(
        wrong.replace("mod@example.com", "X"),
        unknown.replace("nobody@example.com", "X")
    );
    // Bad input is a clear page, not a server error; inputs are escaped.
    let r = login(&server, "<script>@x", "").await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("&lt;script&gt;@x") && !page.contains("<script>@x"));
    let r = login(&server, "a@b", &"x".repeat(2000)).await;
    assert_eq!(r.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_email_and_per_address() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    user(&server, "a@example.com", "agent").await;
    for _ in 0..5 {
        assert_eq!(
            login(&server, "a@example.com", "wrong password")
                .await
                .status(),
            401
        );
    }
    // Now even the right password waits for the window to end.
    let r = login(&server, "a@example.com", PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "900");
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins. Try again in 15 minutes.")
    );
    // Other emails are not blocked by it.
    assert_eq!(
        login(&server, "b@example.com", "wrong password")
            .await
            .status(),
        401
    );
    clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(
        login(&server, "a@example.com", PASSWORD).await.status(),
        303
    );
    // Per address: 20 failures in the window, whatever the emails.
    for i in 0..20 {
        let r = login(&server, &format!("x{i}@example.com"), "wrong password").await;
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    assert_eq!(
        login(&server, "a@example.com", PASSWORD).await.status(),
        429
    );
    clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(
        login(&server, "a@example.com", PASSWORD).await.status(),
        303
    );
    server.stop().await;
}

#[tokio::test]
async fn session_writes_need_the_csrf_token() {
    let server = TestServer::start().await;
    let admin = user(&server, "root@example.com", "admin").await;
    let create = |csrf: Option<&'static str>, origin: Option<&'static str>, s: Session| {
        let mut req = http()
            .post(server.http("/api/keys"))
            .header(COOKIE, format!("volley_session={}", s.token))
            .json(&json!({"name": "ci", "scopes": ["flows:write"]}));
        if let Some(c) = csrf {
            req = req.header(
                "x-csrf-token",
                if c == "ours" {
                    s.csrf.clone()
                } else {
                    c.into()
                },
            );
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for (csrf, origin, status) in [
        (None, None, 403),
        (Some("wrong"), None, 403),
        (Some("ours"), Some("https://evil.example"), 403),
        (Some("ours"), None, 201),
    ] {
        let r = create(csrf, origin, admin.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{csrf:?} {origin:?}");
        if status == 403 {
            assert_eq!(r.json::<Value>().await.unwrap()["code"], "csrf");
        }
    }
    // Cross-site fetch metadata is refused too; same-origin passes.
    for (site, status) in [("cross-site", 403), ("same-origin", 201)] {
        let r = http()
            .post(server.http("/api/keys"))
            .header(COOKIE, format!("volley_session={}", admin.token))
            .header("x-csrf-token", &admin.csrf)
            .header("sec-fetch-site", site)
            .json(&json!({"name": "ci", "scopes": ["handoff"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{site}");
    }
    // A form post carries the token as its `csrf` field.
    let logout = |csrf: &str| {
        http()
            .post(server.http("/console/logout"))
            .header(COOKIE, format!("volley_session={}", admin.token))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("csrf", csrf)]))
            .send()
    };
    assert_eq!(logout("nope").await.unwrap().status(), 403);
    assert_eq!(me(&server, &admin.token).await.0, 200);
    assert_eq!(logout(&admin.csrf).await.unwrap().status(), 303);
    assert_eq!(me(&server, &admin.token).await.0, 401);
    // An API key needs no CSRF token.
    let (status, _) = api(
        &server,
        "POST",
        "/api/keys",
        json!({"name": "k", "scopes": ["admin"]}),
    )
    .await;
    assert_eq!(status, 201);
    server.stop().await;
}

#[tokio::test]
async fn sessions_end_after_12_idle_hours_or_7_days() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    let idle = user(&server, "idle@example.com", "agent").await;
    let busy = session_of(
        &server,
        session_token(&login(&server, "idle@example.com", PASSWORD).await).unwrap(),
    )
    .await;
    clock.advance(11 * HOUR);
    assert_eq!(me(&server, &busy.token).await.0, 200);
    clock.advance(HOUR);
    assert_eq!(
        me(&server, &idle.token).await.0,
        401,
        "12 h without a request"
    );
    // Active every 10 hours, the session still ends 7 days after sign-in.
    // (`busy` was last seen at 11 h.)
    let mut elapsed = 12 * HOUR;
    while elapsed + 10 * HOUR < 7 * 24 * HOUR {
        clock.advance(10 * HOUR);
        elapsed += 10 * HOUR;
        assert_eq!(me(&server, &busy.token).await.0, 200, "after {elapsed:?}");
    }
    clock.advance(7 * 24 * HOUR - elapsed);
    let (status, body) = me(&server, &busy.token).await;
    assert_eq!((status, &body["code"]), (401, &json!("unauthorized")));
    server.stop().await;
}

#[tokio::test]
async fn a_setup_link_works_once_and_expires() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::on_clock(&clock).await;
    let (id, link) = create_user(&server, "new@example.com", "agent").await;
    assert!(link.starts_with("/console/setup?token=vs_"), "{link}");
    let page = http().get(server.http(&link)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "same-origin");
    assert!(page.text().await.unwrap().contains("new@example.com"));
    // Not signed in before the password is set.
    assert_eq!(login(&server, "new@example.com", "").await.status(), 400);
    let r = post_setup(&server, &link, "short", "short").await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("at least 10 characters"));
    let r = post_setup(&server, &link, PASSWORD, "something else").await;
    assert_eq!(r.status(), 422);
    let r = post_setup(&server, &link, PASSWORD, PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert!(session_token(&r).is_some());
    // Used: a clear error page, for the page and the form.
    let again = post_setup(&server, &link, "another password", "another password").await;
    assert_eq!(again.status(), 410);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("expired or has already been used")
    );
    assert_eq!(
        http()
            .get(server.http(&link))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    assert_eq!(
        login(&server, "new@example.com", PASSWORD).await.status(),
        303
    );
    // A new link replaces earlier ones and expires after 72 hours.
    let (_, first) = api(
        &server,
        "POST",
        &format!("/api/users/{id}/setup-link"),
        Value::Null,
    )
    .await;
    let (_, second) = api(
        &server,
        "POST",
        &format!("/api/users/{id}/setup-link"),
        Value::Null,
    )
    .await;
    let (first, second) = (
        first["setup_link"].as_str().unwrap(),
        second["setup_link"].as_str().unwrap(),
    );
    assert_eq!(
        http()
            .get(server.http(first))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    clock.advance(71 * HOUR);
    assert_eq!(
        http()
            .get(server.http(second))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    clock.advance(HOUR);
    assert_eq!(
        http()
            .get(server.http(second))
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    assert_eq!(
        post_setup(&server, second, PASSWORD, PASSWORD)
            .await
            .status(),
        410
    );
    // Garbage tokens are the same clear page.
    for path in [
        "/console/setup",
        "/console/setup?token=",
        "/console/setup?token=%00%ff",
    ] {
        assert_eq!(
            http().get(server.http(path)).send().await.unwrap().status(),
            410,
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_disabled_user_is_signed_out_and_cannot_sign_in() {
    let server = TestServer::start().await;
    let s = user(&server, "gone@example.com", "agent").await;
    let id = me(&server, &s.token).await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = api(
        &server,
        "PATCH",
        &format!("/api/users/{id}"),
        json!({"disabled": true, "capacity": 2}),
    )
    .await;
    assert_eq!(
        (status, &v["disabled"], &v["capacity"]),
        (200, &json!(true), &json!(2))
    );
    assert_eq!(me(&server, &s.token).await.0, 401);
    let r = login(&server, "gone@example.com", PASSWORD).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong email address or password.")
    );
    api(
        &server,
        "PATCH",
        &format!("/api/users/{id}"),
        json!({"disabled": false}),
    )
    .await;
    assert_eq!(
        login(&server, "gone@example.com", PASSWORD).await.status(),
        303
    );
    // The last enabled admin (created at first start) cannot be disabled or demoted.
    let (_, users) = api(&server, "GET", "/api/users", Value::Null).await;
    let first = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["role"] == "admin")
        .unwrap();
    assert_eq!(first["email"], "admin@localhost");
    let path = format!("/api/users/{}", first["id"].as_str().unwrap());
    for change in [json!({"disabled": true}), json!({"role": "agent"})] {
        let (status, v) = api(&server, "PATCH", &path, change).await;
        assert_eq!((status, &v["code"]), (409, &json!("last-admin")));
    }
    // Bad input is a clear error.
    for (body, status) in [
        (json!({"role": "root"}), 400),
        (json!({"capacity": -1}), 422),
        (json!({"name": ""}), 422),
        (json!({"nope": 1}), 400),
    ] {
        assert_eq!(
            api(&server, "PATCH", &path, body.clone()).await.0,
            status,
            "{body}"
        );
    }
    assert_eq!(
        api(&server, "PATCH", "/api/users/usr_nope", json!({}))
            .await
            .0,
        404
    );
    let (status, v) = api(
        &server,
        "POST",
        "/api/users",
        json!({"email": "GONE@example.com", "name": "x", "role": "agent"}),
    )
    .await;
    assert_eq!((status, &v["code"]), (409, &json!("email-taken")));
    let (status, _) = api(
        &server,
        "POST",
        "/api/users",
        json!({"email": "no-at-sign", "name": "x", "role": "agent"}),
    )
    .await;
    assert_eq!(status, 422);
    server.stop().await;
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    let server = TestServer::start().await;
    user(&server, "hash@example.com", "moderator").await;
    let row = server
        .running
        .app
        .store
        .user_by_email("hash@example.com")
        .await
        .unwrap()
        .unwrap();
    let hash = row.password_hash.unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PASSWORD));
    server.stop().await;
}

#[tokio::test]
async fn the_first_start_creates_an_admin_with_a_one_time_link_and_no_password() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut cfg = config(dir.path());
    cfg.admin_email = "Owner@Example.com".into();
    let server = TestServer::start_with(dir.clone(), cfg.clone()).await;
    let link = server
        .running
        .new_admin_setup
        .clone()
        .expect("a setup link");
    assert!(link.starts_with("/console/setup?token=vs_"));
    assert_eq!(login(&server, "owner@example.com", "").await.status(), 400);
    let r = post_setup(&server, &link, PASSWORD, PASSWORD).await;
    let s = session_of(&server, session_token(&r).unwrap()).await;
    assert_eq!(me(&server, &s.token).await.1["role"], "admin");
    let dir = server.stop().await;
    let again = TestServer::start_with(dir, cfg).await;
    assert_eq!(again.running.new_admin_setup, None, "shown once");
    again.stop().await;
}

#[tokio::test]
async fn api_keys_carry_scopes_and_stop_working_when_deleted() {
    let server = TestServer::start().await;
    let (status, k) = api(
        &server,
        "POST",
        "/api/keys",
        json!({"name": "ci", "scopes": ["flows:write", "flows:write"]}),
    )
    .await;
    assert_eq!(status, 201, "{k}");
    assert_eq!(k["scopes"], json!(["flows:write"]));
    let key = k["key"].as_str().unwrap();
    let call = |method: &str, path: &str, body: &str| {
        http()
            .request(method.parse().unwrap(), server.http(path))
            .bearer_auth(key)
            .body(body.to_string())
            .send()
    };
    let flow = "volley: 1\nid: keyed\ntitle: Keyed\nsteps:\n  - say: Hi!\n";
    assert_eq!(
        call("POST", "/api/flows", flow).await.unwrap().status(),
        201
    );
    let r = call("GET", "/api/campaigns", "").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "forbidden");
    assert_eq!(call("GET", "/api/keys", "").await.unwrap().status(), 403);
    let (_, keys) = api(&server, "GET", "/api/keys", Value::Null).await;
    assert!(keys.to_string().contains("\"ci\"") && !keys.to_string().contains(key));
    let path = format!("/api/keys/{}", k["id"].as_str().unwrap());
    assert_eq!(api(&server, "DELETE", &path, Value::Null).await.0, 204);
    assert_eq!(api(&server, "DELETE", &path, Value::Null).await.0, 404);
    assert_eq!(
        call("POST", "/api/flows", flow).await.unwrap().status(),
        401
    );
    for scopes in [json!([]), json!(["root"])] {
        let (status, v) = api(
            &server,
            "POST",
            "/api/keys",
            json!({"name": "x", "scopes": scopes}),
        )
        .await;
        assert_eq!((status, &v["code"]), (422, &json!("invalid-scope")));
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------
// The access matrix

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum P {
    /// No credentials.
    None,
    /// An anonymous widget contact's token (`Authorization: Bearer vt_…`).
    Participant,
    Agent,
    Moderator,
    Admin,
    /// An API key with the scope the endpoint needs.
    KeyWith,
    /// An API key with another scope.
    KeyWithout,
}

const EVERYONE: &[P] = &[
    P::None,
    P::Participant,
    P::Agent,
    P::Moderator,
    P::Admin,
    P::KeyWith,
    P::KeyWithout,
];

/// Who an endpoint lets in.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Everyone.
    Public,
    /// The contact who owns the conversation (its token).
    Participant,
    /// Any signed-in console user (no API key).
    Signed,
    /// Signing out: anyone without an API key (nothing to do without a session).
    SignOut,
    /// An admin-API endpoint: a session whose role grants the scope, or a key with it.
    Scope(&'static str),
    /// A person at the agent console: an agent's or admin's session (no API key).
    AgentSession,
    /// A console page: agents and admins; without a session it redirects to sign in.
    AgentPage,
    /// An admin's console page: without a session it redirects to sign in.
    AdminPage,
    /// A console form only admins may post (no API key).
    AdminSession,
}

impl Access {
    fn allowed(self) -> Vec<P> {
        match self {
            Access::Public => EVERYONE.to_vec(),
            Access::Participant => vec![P::Participant],
            Access::Signed => vec![P::Agent, P::Moderator, P::Admin],
            Access::SignOut => vec![P::None, P::Participant, P::Agent, P::Moderator, P::Admin],
            Access::Scope("handoff" | "conversations:write") => {
                vec![P::Agent, P::Admin, P::KeyWith]
            }
            Access::Scope(_) => vec![P::Admin, P::KeyWith],
            Access::AgentSession => vec![P::Agent, P::Admin],
            Access::AgentPage => vec![P::None, P::Participant, P::Agent, P::Admin],
            Access::AdminPage => vec![P::None, P::Participant, P::Admin],
            Access::AdminSession => vec![P::Admin],
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Access::Scope(s) => s,
            _ => "admin",
        }
    }
}

/// Every route of the server and who may call it. Add a row with every new route
/// (`every_route_is_in_the_matrix` fails otherwise). `{id}` in a participant route is
/// the caller's own conversation; elsewhere ids name nothing (404 is an allowed answer).
const MATRIX: &[(&str, &str, Access)] = &[
    ("GET", "/", Access::Public),
    ("GET", "/f/{flow}", Access::Public),
    ("GET", "/widget.js", Access::Public),
    ("GET", "/ws", Access::Public),
    ("GET", "/api/openapi.json", Access::Public),
    ("GET", "/api/flows", Access::Public),
    ("POST", "/api/flows", Access::Scope("flows:write")),
    ("GET", "/api/flows/{id}", Access::Scope("flows:write")),
    ("GET", "/api/flows/{id}/results", Access::Scope("admin")),
    (
        "POST",
        "/api/flows/{id}/start",
        Access::Scope("conversations:write"),
    ),
    ("POST", "/api/contacts", Access::Scope("contacts:write")),
    (
        "POST",
        "/api/conversations/{id}/messages",
        Access::Scope("conversations:write"),
    ),
    (
        "GET",
        "/api/conversations/{id}/transcript",
        Access::Scope("admin"),
    ),
    ("GET", "/api/events/{id}/attendance", Access::Scope("admin")),
    ("GET", "/api/analytics/events/{id}", Access::Scope("admin")),
    (
        "POST",
        "/api/events/{id}/conversions",
        Access::Scope("conversations:write"),
    ),
    ("GET", "/console/analytics/events/{id}", Access::AdminPage),
    ("GET", "/console/analytics/handoffs", Access::AdminPage),
    ("GET", "/console/analytics", Access::AdminPage),
    ("GET", "/console/analytics/flows/{id}", Access::AdminPage),
    ("GET", "/console/analytics/contacts", Access::AdminPage),
    ("GET", "/api/events", Access::Public),
    ("POST", "/api/events", Access::Scope("flows:write")),
    ("GET", "/api/events/{id}", Access::Public),
    ("GET", "/events/{id}/media", Access::Public),
    ("GET", "/events/{id}", Access::Public),
    ("GET", "/events/{id}/ws", Access::Public),
    ("GET", "/event.js", Access::Public),
    ("GET", "/event.css", Access::Public),
    ("POST", "/api/events/{id}/register", Access::Public),
    (
        "POST",
        "/api/contacts/import",
        Access::Scope("contacts:write"),
    ),
    ("GET", "/api/campaigns", Access::Scope("campaigns:write")),
    ("POST", "/api/campaigns", Access::Scope("campaigns:write")),
    (
        "GET",
        "/api/campaigns/{id}",
        Access::Scope("campaigns:write"),
    ),
    (
        "POST",
        "/api/campaigns/{id}/pause",
        Access::Scope("campaigns:write"),
    ),
    (
        "POST",
        "/api/campaigns/{id}/resume",
        Access::Scope("campaigns:write"),
    ),
    (
        "POST",
        "/api/campaigns/{id}/cancel",
        Access::Scope("campaigns:write"),
    ),
    ("POST", "/api/conversations", Access::Public),
    (
        "POST",
        "/api/conversations/{id}/inputs",
        Access::Participant,
    ),
    ("GET", "/api/conversations/{id}/events", Access::Participant),
    ("GET", "/api/conversations/{id}/stream", Access::Participant),
    ("GET", "/api/me", Access::Signed),
    ("GET", "/api/users", Access::Scope("admin")),
    ("POST", "/api/users", Access::Scope("admin")),
    ("PATCH", "/api/users/{id}", Access::Scope("admin")),
    ("POST", "/api/users/{id}/setup-link", Access::Scope("admin")),
    ("GET", "/api/keys", Access::Scope("admin")),
    ("POST", "/api/keys", Access::Scope("admin")),
    ("DELETE", "/api/keys/{id}", Access::Scope("admin")),
    ("GET", "/console/login", Access::Public),
    ("POST", "/console/login", Access::Public),
    ("POST", "/console/logout", Access::SignOut),
    ("POST", "/console/logout-everywhere", Access::SignOut),
    ("GET", "/console/setup", Access::Public),
    ("POST", "/console/setup", Access::Public),
    ("GET", "/console/account", Access::Public),
    ("GET", "/console/console.css", Access::Public),
    ("GET", "/console/console.js", Access::Public),
    ("GET", "/console", Access::AgentPage),
    ("GET", "/console/c/{id}", Access::AgentPage),
    ("GET", "/console/desk.js", Access::Public),
    ("GET", "/console/desk.css", Access::Public),
    ("GET", "/api/desk", Access::AgentSession),
    ("GET", "/api/desk/stream", Access::AgentSession),
    ("POST", "/api/desk/status", Access::AgentSession),
    ("GET", "/api/handoffs/resolved", Access::AgentSession),
    ("GET", "/api/handoffs/{id}", Access::AgentSession),
    ("GET", "/api/handoffs/{id}/stream", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/pick", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/reply", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/note", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/tags", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/snooze", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/transfer", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/resolve", Access::AgentSession),
    ("POST", "/api/handoffs/{id}/typing", Access::AgentSession),
    ("GET", "/api/canned", Access::AgentSession),
    ("POST", "/api/canned", Access::Scope("admin")),
    ("PUT", "/api/canned/{id}", Access::Scope("admin")),
    ("DELETE", "/api/canned/{id}", Access::Scope("admin")),
    ("PUT", "/api/users/{id}/queues", Access::Scope("admin")),
    ("GET", "/api/webhooks", Access::Scope("admin")),
    ("POST", "/api/webhooks", Access::Scope("admin")),
    ("DELETE", "/api/webhooks/{id}", Access::Scope("admin")),
    (
        "GET",
        "/api/webhooks/{id}/deliveries",
        Access::Scope("admin"),
    ),
    (
        "POST",
        "/api/webhooks/{id}/deliveries/{delivery}/replay",
        Access::Scope("admin"),
    ),
    ("GET", "/console/webhooks", Access::AdminPage),
    ("POST", "/console/webhooks/replay", Access::AdminSession),
    ("GET", "/metrics", Access::Public),
    ("GET", "/api/analytics/handoffs", Access::Scope("admin")),
    ("GET", "/api/analytics/flows/{id}", Access::Scope("admin")),
    ("GET", "/api/analytics/contacts", Access::Scope("admin")),
    ("PATCH", "/api/webhooks/{id}", Access::Scope("admin")),
    (
        "POST",
        "/api/webhooks/{id}/rotate-secret",
        Access::Scope("admin"),
    ),
    ("GET", "/healthz", Access::Public),
    ("GET", "/readyz", Access::Public),
];

#[tokio::test]
async fn every_route_is_in_the_matrix_and_every_api_route_in_openapi() {
    let served: BTreeSet<(String, &str)> = volley_server::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    let table: BTreeSet<(String, &str)> =
        MATRIX.iter().map(|(m, p, _)| (m.to_string(), *p)).collect();
    assert_eq!(
        served.difference(&table).collect::<Vec<_>>(),
        Vec::<&(String, &str)>::new(),
        "routes missing from MATRIX in tests/it/auth.rs"
    );
    assert_eq!(
        table.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, &str)>::new(),
        "MATRIX rows the router does not serve"
    );
    let server = TestServer::start().await;
    let doc: Value = http()
        .get(server.http("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (method, path) in &served {
        if path.starts_with("/api/") && *path != "/api/openapi.json" {
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(
                op.is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
    }
    server.stop().await;
}

/// Everyone's credentials for the matrix.
struct Callers {
    participant: (String, String),
    sessions: HashMap<&'static str, Session>,
    keys: HashMap<&'static str, String>,
}

async fn sign_in_as(server: &TestServer, role: &'static str) -> Session {
    let r = login(server, &format!("{role}@matrix.example"), PASSWORD).await;
    session_of(server, session_token(&r).unwrap()).await
}

#[tokio::test]
async fn every_route_lets_in_exactly_who_it_should() {
    let server = TestServer::start().await;
    let start: Value = http()
        .post(server.http("/api/conversations"))
        .json(&json!({"flow": "quick"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut callers = Callers {
        participant: (
            start["token"].as_str().unwrap().into(),
            start["conversation"].as_str().unwrap().into(),
        ),
        sessions: HashMap::new(),
        keys: HashMap::new(),
    };
    for role in ["agent", "moderator", "admin"] {
        let s = user(&server, &format!("{role}@matrix.example"), role).await;
        callers.sessions.insert(role, s);
    }
    for scope in [
        "admin",
        "flows:write",
        "contacts:write",
        "campaigns:write",
        "conversations:write",
        "handoff",
    ] {
        let (status, k) = api(
            &server,
            "POST",
            "/api/keys",
            json!({"name": scope, "scopes": [scope]}),
        )
        .await;
        assert_eq!(status, 201);
        callers
            .keys
            .insert(scope, k["key"].as_str().unwrap().into());
    }
    let mut failures = Vec::new();
    for &(method, path, access) in MATRIX {
        let allowed = access.allowed();
        for &p in EVERYONE {
            let own = matches!(access, Access::Participant);
            let url = path
                .replace("{flow}", "quick")
                .replace("{id}", if own { &callers.participant.1 } else { "nope" })
                .replace("{delivery}", "1");
            let url = if url.ends_with("/events") {
                format!("{url}?after=0")
            } else {
                url
            };
            let mut req = http().request(method.parse().unwrap(), server.http(&url));
            let role = match p {
                P::Agent => Some("agent"),
                P::Moderator => Some("moderator"),
                P::Admin => Some("admin"),
                _ => None,
            };
            if let Some(role) = role {
                if matches!(access, Access::SignOut) {
                    // Signing out ends the session: use a fresh one.
                    callers
                        .sessions
                        .insert(role, sign_in_as(&server, role).await);
                }
                let s = &callers.sessions[role];
                req = req
                    .header(COOKIE, format!("volley_session={}", s.token))
                    .header("x-csrf-token", &s.csrf);
            }
            let other = if access.scope() == "handoff" {
                "flows:write"
            } else {
                "handoff"
            };
            req = match p {
                P::Participant => req.bearer_auth(&callers.participant.0),
                P::KeyWith => req.bearer_auth(&callers.keys[access.scope()]),
                P::KeyWithout => req.bearer_auth(&callers.keys[other]),
                _ => req,
            };
            let status = req.send().await.unwrap().status().as_u16();
            if let (Some(role), Access::SignOut) = (role, access) {
                // That ended the session (everywhere): later rows need a live one.
                callers
                    .sessions
                    .insert(role, sign_in_as(&server, role).await);
            }
            let ok = if allowed.contains(&p) {
                !matches!(status, 401 | 403 | 405)
            } else {
                matches!(status, 401 | 403)
            };
            if !ok {
                failures.push(format!("{method} {path} as {p:?}: {status}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    server.stop().await;
}
