//! Who may do what: console accounts (admin, agent, moderator) signed in with a
//! password and a session cookie, and API keys with scopes for integrations.
//!
//! Authorization is decided by types at the handler boundary: a handler takes
//! [`Admin`], [`Agent`], [`Moderator`], [`Console`] (anyone signed in) or
//! [`Scoped<S>`] (an admin-API endpoint: a console session whose role grants the
//! scope, or an API key with it), and cannot run without one. Sessions authenticate
//! state-changing requests only with their CSRF token. Every limit is a constant
//! below, documented in docs/accounts.md.

mod pages;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use volley_store::{ApiKeyRow, SessionRow, SetupToken, Store, StoreError, UserChange, UserRow};

use crate::App;
use crate::error::{ApiError, ErrorBody};
use crate::ids::{constant_time_eq, hash_secret, new_id, new_token};

pub use pages::{
    account_page, asset_css, asset_js, login, login_page, logout, logout_everywhere, setup,
    setup_page,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// The session cookie's name.
pub const COOKIE: &str = "volley_session";
/// A session ends after this long without a request (12 hours).
pub const SESSION_IDLE_MS: i64 = 12 * HOUR;
/// A session ends this long after sign-in, however active (7 days).
pub const SESSION_MAX_MS: i64 = 7 * 24 * HOUR;
/// A session's last activity is written at most this often (1 minute).
pub const SESSION_TOUCH_MS: i64 = MINUTE;
/// How long a setup link is valid (72 hours).
pub const SETUP_LINK_MS: i64 = 72 * HOUR;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password, in bytes (hashing cost stays bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The window in which failed sign-ins are counted (15 minutes).
pub const LOGIN_WINDOW_MS: i64 = 15 * MINUTE;
/// Failed sign-ins per email address per window; then 429 until the window ends.
pub const MAX_FAILURES_PER_EMAIL: u32 = 5;
/// Failed sign-ins per client IP address per window; then 429 until the window ends.
pub const MAX_FAILURES_PER_IP: u32 = 20;
/// Email addresses (and, separately, IP addresses) whose failures are remembered; the
/// oldest window is forgotten first when full.
pub const MAX_TRACKED: usize = 10_000;
/// Longest email address, in bytes.
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest user or API key name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Largest agent capacity (concurrent conversations).
pub const MAX_CAPACITY: i64 = 1000;
/// Default agent capacity.
pub const DEFAULT_CAPACITY: i64 = 5;
/// Largest form body read to find its `csrf` field.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Where a browser goes after signing in. (`/console`, the agent console, will take
/// this over; the account page stays.)
pub const AFTER_LOGIN: &str = "/console";

type Api<T> = Result<T, ApiError>;

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn csrf_error(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "csrf", message)
}

// ---------------------------------------------------------------------------------
// Roles and scopes

/// A console user's role. Admins may do everything agents and moderators may; agents
/// (handoff) and moderators (live-event chat) are otherwise disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Agent,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            "moderator" => Some(Role::Moderator),
            _ => None,
        }
    }

    /// Whether a console session of this role may use an endpoint needing `scope`:
    /// admins everything, agents `handoff` and `conversations:write`, moderators none.
    pub fn grants(self, scope: Scope) -> bool {
        match self {
            Role::Admin => true,
            Role::Agent => matches!(scope, Scope::Handoff | Scope::ConversationsWrite),
            Role::Moderator => false,
        }
    }
}

/// What an API key may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    FlowsWrite,
    ContactsWrite,
    CampaignsWrite,
    ConversationsWrite,
    Handoff,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::FlowsWrite,
        Scope::ContactsWrite,
        Scope::CampaignsWrite,
        Scope::ConversationsWrite,
        Scope::Handoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::FlowsWrite => "flows:write",
            Scope::ContactsWrite => "contacts:write",
            Scope::CampaignsWrite => "campaigns:write",
            Scope::ConversationsWrite => "conversations:write",
            Scope::Handoff => "handoff",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether a key's scopes (space-separated, as stored) include `self`.
    pub fn granted_by(self, scopes: &str) -> bool {
        scopes
            .split_whitespace()
            .any(|s| s == Scope::Admin.as_str() || s == self.as_str())
    }
}

/// The scope an endpoint needs, as a type: `Scoped<scope::FlowsWrite>`.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

/// Marker types naming each [`Scope`] for [`Scoped`].
pub mod scope {
    use super::{RequiredScope, Scope};

    macro_rules! scopes {
        ($($name:ident),*) => {$(
            #[doc = concat!("The `", stringify!($name), "` scope.")]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }
    scopes!(
        Admin,
        FlowsWrite,
        ContactsWrite,
        CampaignsWrite,
        ConversationsWrite,
        Handoff
    );
}

// ---------------------------------------------------------------------------------
// Principals and extractors

/// A signed-in console user.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
}

/// Any signed-in console user, with their session (for `/api/me`, the account page,
/// logout). State-changing requests were checked for the session's CSRF token.
pub struct Console {
    pub staff: Staff,
    /// The token state-changing requests must carry.
    pub csrf: String,
    token_hash: String,
}

/// A signed-in admin.
pub struct Admin(pub Staff);
/// A signed-in agent (or admin).
pub struct Agent(pub Staff);
/// A signed-in moderator (or admin).
pub struct Moderator(pub Staff);

/// Who called an admin-API endpoint.
#[derive(Debug, Clone)]
pub enum Principal {
    Staff(Staff),
    Key { id: String, name: String },
}

/// Access to an endpoint needing scope `S`: a console session whose role grants it
/// (admins: all), or `Authorization: Bearer <API key>` with `S` or `admin`.
pub struct Scoped<S: RequiredScope> {
    pub principal: Principal,
    scope: PhantomData<S>,
}

/// How a request authenticated (resolved once per request).
#[derive(Clone)]
enum Caller {
    Session(Arc<SignedIn>),
    Key(Arc<ApiKeyRow>),
}

struct SignedIn {
    staff: Staff,
    csrf: String,
    token_hash: String,
}

#[derive(Clone)]
struct Resolved(Option<Caller>);

/// The `csrf` field of a form body (found by [`form_csrf`]).
#[derive(Clone)]
struct FormCsrf(String);

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The signed-in session of a cookie, if valid at `now`.
async fn session_of(app: &App, token: &str) -> Api<Option<SignedIn>> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let hash = hash_secret(token);
    let Some((s, user)) = app.store.session(&hash).await? else {
        return Ok(None);
    };
    let now = app.clock.now_ms();
    let Some(role) = Role::parse(&user.role) else {
        return Ok(None);
    };
    if user.disabled || now >= s.expires_at || now >= s.last_seen_at + SESSION_IDLE_MS {
        return Ok(None);
    }
    if now - s.last_seen_at >= SESSION_TOUCH_MS {
        app.store.touch_session(&hash, now).await?;
    }
    Ok(Some(SignedIn {
        staff: Staff {
            id: user.id,
            name: user.name,
            email: user.email,
            role,
        },
        csrf: s.csrf,
        token_hash: hash,
    }))
}

async fn caller(parts: &mut Parts, app: &App) -> Api<Option<Caller>> {
    if let Some(Resolved(c)) = parts.extensions.get::<Resolved>() {
        return Ok(c.clone());
    }
    let resolved = if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        let key = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("use Authorization: Bearer <API key>"))?;
        let row = app
            .store
            .api_key_by_hash(&hash_secret(key))
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        Some(Caller::Key(Arc::new(row)))
    } else if let Some(token) = cookie(&parts.headers, COOKIE) {
        let s = session_of(app, token).await?.ok_or_else(|| {
            ApiError::unauthorized("your session has ended; sign in again at /console/login")
        })?;
        Some(Caller::Session(Arc::new(s)))
    } else {
        None
    };
    parts.extensions.insert(Resolved(resolved.clone()));
    Ok(resolved)
}

/// The moderator (or admin) signed in to the console in the browser opening a page of
/// this site (`/events/{id}/ws`): their session cookie, from this site's own origin
/// (a WebSocket is not protected by SameSite alone). `None` for everyone else.
pub async fn page_moderator(headers: &HeaderMap, app: &App) -> Option<Staff> {
    let token = cookie(headers, COOKIE)?;
    if !same_origin(headers, app) {
        return None;
    }
    let s = session_of(app, token).await.ok()??;
    matches!(s.staff.role, Role::Moderator | Role::Admin).then_some(s.staff)
}

/// Whether a request comes from this site's own pages: `Sec-Fetch-Site` (when sent)
/// is `same-origin` or `none`, and `Origin` (when sent) is this host or the public URL.
fn same_origin(headers: &HeaderMap, app: &App) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let by_host = origin
        .split_once("://")
        .is_some_and(|(_, h)| !h.is_empty() && h.eq_ignore_ascii_case(host));
    let by_public = app
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.trim_end_matches('/').eq_ignore_ascii_case(origin));
    by_host || by_public
}

/// A session's state-changing request must come from our pages and carry its token.
fn check_csrf(parts: &Parts, app: &App, s: &SignedIn) -> Api<()> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if !same_origin(&parts.headers, app) {
        return Err(csrf_error("cross-site requests are refused"));
    }
    let sent = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.extensions.get::<FormCsrf>().map(|f| f.0.clone()));
    match sent {
        Some(t) if constant_time_eq(&t, &s.csrf) => Ok(()),
        Some(_) => Err(csrf_error("the CSRF token does not match this session")),
        None => Err(csrf_error(
            "send the session's CSRF token (X-CSRF-Token header or `csrf` form field; see GET /api/me)",
        )),
    }
}

fn unauthorized_console() -> ApiError {
    ApiError::unauthorized("sign in first at /console/login")
}

impl FromRequestParts<Arc<App>> for Console {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Api<Self> {
        match caller(parts, app).await? {
            Some(Caller::Session(s)) => {
                check_csrf(parts, app, &s)?;
                Ok(Console {
                    staff: s.staff.clone(),
                    csrf: s.csrf.clone(),
                    token_hash: s.token_hash.clone(),
                })
            }
            Some(Caller::Key(_)) => Err(forbidden(
                "this needs a console session; API keys cannot use it",
            )),
            None => Err(unauthorized_console()),
        }
    }
}

async fn staff_with(
    parts: &mut Parts,
    app: &Arc<App>,
    allowed: impl Fn(Role) -> bool,
    what: &str,
) -> Api<Staff> {
    let c = Console::from_request_parts(parts, app).await?;
    if allowed(c.staff.role) {
        Ok(c.staff)
    } else {
        Err(forbidden(format!("only {what} may do that")))
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Api<Self> {
        staff_with(parts, app, |r| r == Role::Admin, "admins")
            .await
            .map(Admin)
    }
}

impl FromRequestParts<Arc<App>> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Api<Self> {
        staff_with(
            parts,
            app,
            |r| matches!(r, Role::Agent | Role::Admin),
            "agents",
        )
        .await
        .map(Agent)
    }
}

impl FromRequestParts<Arc<App>> for Moderator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Api<Self> {
        staff_with(
            parts,
            app,
            |r| matches!(r, Role::Moderator | Role::Admin),
            "moderators",
        )
        .await
        .map(Moderator)
    }
}

impl<S: RequiredScope> FromRequestParts<Arc<App>> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Api<Self> {
        let scope = S::SCOPE.as_str();
        let principal = match caller(parts, app).await? {
            Some(Caller::Session(s)) => {
                check_csrf(parts, app, &s)?;
                if !s.staff.role.grants(S::SCOPE) {
                    return Err(forbidden(format!(
                        "a {} may not do that (it needs `{scope}`)",
                        s.staff.role.as_str()
                    )));
                }
                Principal::Staff(s.staff.clone())
            }
            Some(Caller::Key(k)) => {
                if !S::SCOPE.granted_by(&k.scopes) {
                    return Err(forbidden(format!("this API key lacks the `{scope}` scope")));
                }
                Principal::Key {
                    id: k.id.clone(),
                    name: k.name.clone(),
                }
            }
            None => {
                return Err(ApiError::unauthorized(format!(
                    "send an API key with the `{scope}` scope (Authorization: Bearer …) or sign in"
                )));
            }
        };
        Ok(Scoped {
            principal,
            scope: PhantomData,
        })
    }
}

/// Middleware: finds the `csrf` field of a cookie-authenticated form post, so the
/// extractors accept it like the `X-CSRF-Token` header. The body is passed on intact.
pub async fn form_csrf(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let is_form = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    if !is_form
        || matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || cookie(req.headers(), COOKIE).is_none()
        || req.headers().contains_key("x-csrf-token")
    {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("a form may have at most {MAX_FORM_BYTES} bytes"),
        )
        .into_response();
    };
    if let Some((_, v)) = form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf") {
        parts.extensions.insert(FormCsrf(v.into_owned()));
    }
    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
        .await
}

// ---------------------------------------------------------------------------------
// Passwords

fn hash_password(password: &str) -> Api<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal("salt", e))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal("password hash", e))
}

fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, verified when the email is unknown, so a failure
/// takes as long whether or not the account exists.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    // Default parameters and a fresh salt: hashing cannot fail.
    hash_password(&new_token("dummy-")).unwrap_or_default()
});

/// Hashes off the async runtime (Argon2 takes tens of milliseconds on purpose).
async fn hash_blocking(password: String) -> Api<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal("password hash task", e))?
}

/// Verifies off the async runtime; against the dummy hash when there is none.
async fn verify_blocking(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match phc {
        Some(h) => verify_password(&password, &h),
        None => {
            verify_password(&password, &DUMMY_HASH);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// Checks a new password against the length limits.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password may have at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password needs at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Sign-in, sessions, rate limits

/// Failed sign-ins per email and per client IP, in fixed windows (in memory).
#[derive(Default)]
pub struct LoginLimiter {
    inner: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    email: HashMap<String, (i64, u32)>,
    ip: HashMap<IpAddr, (i64, u32)>,
}

fn count_failure<K: std::hash::Hash + Eq>(map: &mut HashMap<K, (i64, u32)>, key: K, now: i64) {
    if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
        map.retain(|_, w| now - w.0 < LOGIN_WINDOW_MS);
        if map.len() >= MAX_TRACKED {
            // Full of live windows: forget the oldest (an attacker spraying addresses
            // is still held back by the per-IP count).
            let oldest = map.values().map(|w| w.0).min().unwrap_or(now);
            map.retain(|_, w| w.0 != oldest);
        }
    }
    let w = map.entry(key).or_insert((now, 0));
    if now - w.0 >= LOGIN_WINDOW_MS {
        *w = (now, 0);
    }
    w.1 += 1;
}

fn blocked_for<K: std::hash::Hash + Eq>(
    map: &HashMap<K, (i64, u32)>,
    key: &K,
    max: u32,
    now: i64,
) -> Option<i64> {
    map.get(key)
        .filter(|w| w.1 >= max && now - w.0 < LOGIN_WINDOW_MS)
        .map(|w| w.0 + LOGIN_WINDOW_MS - now)
}

impl LoginLimiter {
    /// How long until this email or IP may try again (ms), if it may not now.
    fn blocked(&self, email: &str, ip: IpAddr, now: i64) -> Option<i64> {
        let f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let by_email = blocked_for(&f.email, &email.to_string(), MAX_FAILURES_PER_EMAIL, now);
        let by_ip = blocked_for(&f.ip, &ip, MAX_FAILURES_PER_IP, now);
        by_email.max(by_ip)
    }

    fn failed(&self, email: &str, ip: IpAddr, now: i64) {
        let mut f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        count_failure(&mut f.email, email.to_string(), now);
        count_failure(&mut f.ip, ip, now);
    }

    fn succeeded(&self, email: &str) {
        let mut f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.email.remove(email);
    }
}

/// The client's address: the TCP peer (unspecified when the router is served without
/// connection info).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ))
    }
}

/// Why a sign-in failed.
enum LoginError {
    /// Wrong email or password (never says which).
    Wrong,
    /// Too many failures: retry after this many ms.
    Limited(i64),
    Api(ApiError),
}

/// Checks credentials and opens a session: (cookie token, user).
async fn sign_in(
    app: &App,
    email: &str,
    password: &str,
    ip: IpAddr,
) -> Result<(String, UserRow), LoginError> {
    let now = app.clock.now_ms();
    let email: String = email.trim().to_lowercase();
    let key: String = email.chars().take(MAX_EMAIL_BYTES).collect();
    if let Some(wait) = app.logins.blocked(&key, ip, now) {
        return Err(LoginError::Limited(wait));
    }
    let user = if email.len() <= MAX_EMAIL_BYTES {
        app.store
            .user_by_email(&email)
            .await
            .map_err(|e| LoginError::Api(e.into()))?
    } else {
        None
    };
    let usable = user.as_ref().filter(|u| !u.disabled);
    let hash = usable.and_then(|u| u.password_hash.clone());
    let ok =
        password.len() <= MAX_PASSWORD_BYTES && verify_blocking(password.to_string(), hash).await;
    let Some(user) = user.filter(|_| ok) else {
        app.logins.failed(&key, ip, now);
        return Err(LoginError::Wrong);
    };
    app.logins.succeeded(&key);
    let token = open_session(app, &user.id, now)
        .await
        .map_err(LoginError::Api)?;
    Ok((token, user))
}

fn new_session(user_id: &str, now: i64) -> (String, SessionRow) {
    let token = new_token("");
    let row = SessionRow {
        token_hash: hash_secret(&token),
        user_id: user_id.into(),
        csrf: new_token(""),
        created_at: now,
        expires_at: now + SESSION_MAX_MS,
        last_seen_at: now,
    };
    (token, row)
}

async fn open_session(app: &App, user_id: &str, now: i64) -> Api<String> {
    let (token, row) = new_session(user_id, now);
    app.store.create_session(row, now - SESSION_IDLE_MS).await?;
    Ok(token)
}

/// The `Set-Cookie` value for a session token (empty: clears the cookie).
fn session_cookie(app: &App, token: &str) -> HeaderValue {
    let secure = app
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let max_age = if token.is_empty() {
        0
    } else {
        SESSION_MAX_MS / 1000
    };
    let value = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("volley_session=; Max-Age=0"))
}

// ---------------------------------------------------------------------------------
// Users and setup links (also used by the CLI)

/// A user to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Concurrent conversations (agents); default 5.
    #[serde(default)]
    pub capacity: Option<i64>,
}

fn check_email(email: &str) -> Api<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= MAX_EMAIL_BYTES
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ApiError::unprocessable(
            "invalid-user",
            format!(
                "email must be an address like name@example.com (at most {MAX_EMAIL_BYTES} bytes)"
            ),
        ));
    }
    Ok(e)
}

fn check_name(name: &str, what: &str) -> Api<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid-name",
            format!("{what} must have 1 to {MAX_NAME_CHARS} characters (no control characters)"),
        ));
    }
    Ok(n.to_string())
}

fn check_capacity(c: i64) -> Api<i64> {
    if !(0..=MAX_CAPACITY).contains(&c) {
        return Err(ApiError::unprocessable(
            "invalid-user",
            format!("capacity must be 0 to {MAX_CAPACITY}"),
        ));
    }
    Ok(c)
}

/// The path of a setup link.
pub fn setup_path(token: &str) -> String {
    format!("/console/setup?token={token}")
}

fn new_setup(user_id: &str, now: i64) -> (String, SetupToken) {
    let token = new_token("vs_");
    let row = SetupToken {
        token_hash: hash_secret(&token),
        user_id: user_id.into(),
        expires_at: now + SETUP_LINK_MS,
    };
    (token, row)
}

/// Creates a user without a password; returns it with a setup token (valid
/// [`SETUP_LINK_MS`]; the link is [`setup_path`]).
pub async fn create_user(store: &dyn Store, now: i64, new: NewUser) -> Api<(UserRow, String)> {
    let user = UserRow {
        id: new_id("usr"),
        email: check_email(&new.email)?,
        name: check_name(&new.name, "name")?,
        role: new.role.as_str().into(),
        password_hash: None,
        capacity: check_capacity(new.capacity.unwrap_or(DEFAULT_CAPACITY))?,
        disabled: false,
        created_at: now,
    };
    let (token, setup) = new_setup(&user.id, now);
    match store.create_user(user.clone(), Some(setup)).await {
        Err(StoreError::Exists(_)) => Err(ApiError::conflict(
            "email-taken",
            format!("a user with email {} exists", user.email),
        )),
        other => other.map_err(ApiError::from),
    }?;
    Ok((user, token))
}

/// A new setup link for a user (earlier links stop working); with `end_sessions`
/// (a password reset) the user is also signed out everywhere.
pub async fn new_setup_link(
    store: &dyn Store,
    now: i64,
    user_id: &str,
    end_sessions: bool,
) -> Api<String> {
    let (token, row) = new_setup(user_id, now);
    store.replace_setup_token(row, end_sessions).await?;
    Ok(token)
}

/// `volley admin reset-password`: a new setup link for the user with this email, whose
/// sessions end.
pub async fn reset_password(store: &dyn Store, now: i64, email: &str) -> Api<(UserRow, String)> {
    let email = email.trim().to_lowercase();
    let user = store.user_by_email(&email).await?.ok_or_else(|| {
        ApiError::not_found("unknown-user", format!("no user with email {email}"))
    })?;
    let token = new_setup_link(store, now, &user.id, true).await?;
    Ok((user, token))
}

/// First start: when there is no user at all, an admin (`admin_email`, no password)
/// and the path of its setup link, printed once.
pub async fn bootstrap_admin(app: &App) -> Api<Option<String>> {
    if app.store.user_count().await? > 0 {
        return Ok(None);
    }
    let new = NewUser {
        email: app.config.admin_email.clone(),
        name: "Admin".into(),
        role: Role::Admin,
        capacity: None,
    };
    let (_, token) = create_user(app.store.as_ref(), app.clock.now_ms(), new).await?;
    Ok(Some(setup_path(&token)))
}

// ---------------------------------------------------------------------------------
// The JSON API: who am I, users, API keys

/// The signed-in user and the CSRF token their state-changing requests must carry.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    /// Send as `X-CSRF-Token` (or a `csrf` form field) on every POST/PATCH/DELETE.
    pub csrf: String,
}

/// `GET /api/me`: the signed-in console user.
#[utoipa::path(get, path = "/api/me", tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("console_session" = [])))]
pub async fn me(c: Console) -> Json<Me> {
    Json(Me {
        id: c.staff.id,
        name: c.staff.name,
        email: c.staff.email,
        role: c.staff.role,
        csrf: c.csrf,
    })
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub capacity: i64,
    pub disabled: bool,
    /// False until the user has set a password with a setup link.
    pub has_password: bool,
    /// Unix milliseconds.
    pub created_at: i64,
}

fn user_view(u: UserRow) -> UserView {
    UserView {
        role: Role::parse(&u.role).unwrap_or(Role::Agent),
        has_password: u.password_hash.is_some(),
        id: u.id,
        email: u.email,
        name: u.name,
        capacity: u.capacity,
        disabled: u.disabled,
        created_at: u.created_at,
    }
}

/// A one-time setup link.
#[derive(Serialize, ToSchema)]
pub struct SetupLink {
    /// `/console/setup?token=…` (relative to the server's URL); shown once.
    pub setup_link: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    #[serde(flatten)]
    pub link: SetupLink,
}

/// `GET /api/users` (admin).
#[utoipa::path(get, path = "/api/users", tag = "accounts",
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn list_users(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
) -> Api<Json<Vec<UserView>>> {
    let users = app.store.users().await?;
    Ok(Json(users.into_iter().map(user_view).collect()))
}

/// `POST /api/users` (admin): a user without a password, and a one-time setup link
/// (valid 72 hours) to give them.
#[utoipa::path(post, path = "/api/users", tag = "accounts", request_body = NewUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "email-taken", body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn create_user_api(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Api<(StatusCode, Json<CreatedUser>)> {
    let Json(new) = body.map_err(crate::api::json_error)?;
    let now = app.clock.now_ms();
    let (user, token) = create_user(app.store.as_ref(), now, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: user_view(user),
            link: SetupLink {
                setup_link: setup_path(&token),
                expires_at: now + SETUP_LINK_MS,
            },
        }),
    ))
}

/// Changes to a user (absent fields are kept).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub capacity: Option<i64>,
    /// Disabling signs the user out everywhere.
    pub disabled: Option<bool>,
}

async fn find_user(app: &App, id: &str) -> Api<UserRow> {
    app.store
        .user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown-user", format!("no user `{id}`")))
}

/// `PATCH /api/users/{id}` (admin). The last enabled admin cannot be disabled or
/// demoted (409 `last-admin`).
#[utoipa::path(patch, path = "/api/users/{id}", tag = "accounts", request_body = UserPatch,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn update_user(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Result<Json<UserPatch>, JsonRejection>,
) -> Api<Json<UserView>> {
    let Json(patch) = body.map_err(crate::api::json_error)?;
    let user = find_user(&app, &id).await?;
    let change = UserChange {
        name: patch
            .name
            .as_deref()
            .map(|n| check_name(n, "name"))
            .transpose()?,
        role: patch.role.map(|r| r.as_str().to_string()),
        capacity: patch.capacity.map(check_capacity).transpose()?,
        disabled: patch.disabled,
    };
    let stays_admin = change.role.as_deref().unwrap_or(&user.role) == "admin"
        && !change.disabled.unwrap_or(user.disabled);
    if user.role == "admin" && !user.disabled && !stays_admin {
        let admins = app
            .store
            .users()
            .await?
            .iter()
            .filter(|u| u.role == "admin" && !u.disabled)
            .count();
        if admins <= 1 {
            return Err(ApiError::conflict(
                "last-admin",
                "this is the last enabled admin: make another user admin first",
            ));
        }
    }
    if !app.store.update_user(&id, change).await? {
        return Err(ApiError::not_found(
            "unknown-user",
            format!("no user `{id}`"),
        ));
    }
    let user = find_user(&app, &id).await?;
    // An agent online takes the change at once (a disabled one, or one no longer an
    // agent, gets nothing new).
    let serves = !user.disabled && (user.role == "agent" || user.role == "admin");
    app.desk.update_agent(crate::handoff::AgentInfo {
        id: user.id.clone(),
        name: user.name.clone(),
        capacity: if serves {
            user.capacity.max(0) as usize
        } else {
            0
        },
    });
    Ok(Json(user_view(user)))
}

/// `POST /api/users/{id}/setup-link` (admin): a new one-time link (earlier links stop
/// working; the user's sessions continue).
#[utoipa::path(post, path = "/api/users/{id}/setup-link", tag = "accounts",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = SetupLink), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn user_setup_link(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Api<Json<SetupLink>> {
    let user = find_user(&app, &id).await?;
    let now = app.clock.now_ms();
    let token = new_setup_link(app.store.as_ref(), now, &user.id, false).await?;
    Ok(Json(SetupLink {
        setup_link: setup_path(&token),
        expires_at: now + SETUP_LINK_MS,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

fn key_view(k: ApiKeyRow) -> KeyView {
    KeyView {
        scopes: k.scopes.split_whitespace().map(String::from).collect(),
        id: k.id,
        name: k.name,
        created_at: k.created_at,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    /// Any of `admin`, `flows:write`, `contacts:write`, `campaigns:write`,
    /// `conversations:write`, `handoff`.
    pub scopes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// The key itself, shown once: send it as `Authorization: Bearer …`.
    pub key: String,
}

/// `GET /api/keys` (admin): API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/keys", tag = "accounts",
    responses((status = 200, body = [KeyView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn list_keys(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
) -> Api<Json<Vec<KeyView>>> {
    let keys = app.store.api_keys().await?;
    Ok(Json(keys.into_iter().map(key_view).collect()))
}

/// `POST /api/keys` (admin): a new key with scopes, returned once.
#[utoipa::path(post, path = "/api/keys", tag = "accounts", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn create_key(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Api<(StatusCode, Json<CreatedKey>)> {
    let Json(new) = body.map_err(crate::api::json_error)?;
    let name = check_name(&new.name, "name")?;
    let mut scopes = Vec::new();
    for s in &new.scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::unprocessable(
                "invalid-scope",
                format!("unknown scope `{s}`; known: {}", known.join(", ")),
            )
        })?;
        if !scopes.contains(&scope.as_str()) {
            scopes.push(scope.as_str());
        }
    }
    if scopes.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid-scope",
            "a key needs at least one scope",
        ));
    }
    let key = new_token("vk_");
    let id = new_id("key");
    let now = app.clock.now_ms();
    let scopes = scopes.join(" ");
    app.store
        .insert_api_key(&id, &hash_secret(&key), &name, &scopes, now)
        .await?;
    let view = key_view(ApiKeyRow {
        id,
        name,
        scopes,
        created_at: now,
    });
    Ok((StatusCode::CREATED, Json(CreatedKey { view, key })))
}

/// `DELETE /api/keys/{id}` (admin): the key stops working at once.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_key" = []), ("console_session" = [])))]
pub async fn delete_key(
    _: Scoped<scope::Admin>,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Api<StatusCode> {
    if app.store.delete_api_key(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown-key",
            format!("no API key `{id}`"),
        ))
    }
}
