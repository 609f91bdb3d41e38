//! The console's sign-in pages (login, password setup, account), server-rendered from
//! the templates in `web/console/` with every value HTML-escaped.

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use volley_flow::markdown::escape_html;

use super::{
    AFTER_LOGIN, ClientIp, Console, LoginError, MAX_PASSWORD_BYTES, check_password, hash_blocking,
    new_session, same_origin, session_cookie, sign_in,
};
use crate::App;
use crate::error::ApiError;
use crate::ids::hash_secret;

const LOGIN_HTML: &str = include_str!("../../web/console/login.html");
const SETUP_HTML: &str = include_str!("../../web/console/setup.html");
const ACCOUNT_HTML: &str = include_str!("../../web/console/account.html");
const MESSAGE_HTML: &str = include_str!("../../web/console/message.html");
const CONSOLE_CSS: &str = include_str!("../../web/console/console.css");
const CONSOLE_JS: &str = include_str!("../../web/console/console.js");

/// Fills `{{name}}` placeholders with HTML-escaped values.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), &escape_html(value));
    }
    out
}

/// An HTML page: never cached, never framed, no referrer (setup links carry tokens).
fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Not `no-referrer`: Chromium then sends `Origin: null` with form posts,
            // which the same-origin check refuses. `same-origin` still keeps setup
            // tokens in URLs away from other sites.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        render(MESSAGE_HTML, &[("title", title), ("message", text)]),
    )
}

fn login_form(status: StatusCode, email: &str, error: &str) -> Response {
    page(
        status,
        render(LOGIN_HTML, &[("email", email), ("error", error)]),
    )
}

fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// `GET /console/login`.
pub async fn login_page() -> Response {
    login_form(StatusCode::OK, "", "")
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `POST /console/login` (form: `email`, `password`): sets the session cookie and
/// redirects to the console, or shows the form again with the reason.
pub async fn login(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !same_origin(&headers, &app) {
        return message(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "Sign in from this site's own sign-in page.",
        );
    }
    let Ok(Form(f)) = form else {
        return login_form(
            StatusCode::BAD_REQUEST,
            "",
            "Send the sign-in form (email and password).",
        );
    };
    if f.email.trim().is_empty() || f.password.is_empty() {
        return login_form(
            StatusCode::BAD_REQUEST,
            &f.email,
            "Enter your email address and password.",
        );
    }
    match sign_in(&app, &f.email, &f.password, ip).await {
        Ok((token, _)) => with_cookie(
            Redirect::to(AFTER_LOGIN).into_response(),
            session_cookie(&app, &token),
        ),
        Err(LoginError::Wrong) => login_form(
            StatusCode::UNAUTHORIZED,
            &f.email,
            "Wrong email address or password.",
        ),
        Err(LoginError::Limited(wait_ms)) => {
            let minutes = (wait_ms + 59_999) / 60_000;
            let mut r = login_form(
                StatusCode::TOO_MANY_REQUESTS,
                &f.email,
                &format!(
                    "Too many failed sign-ins. Try again in {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&((wait_ms + 999) / 1000).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(LoginError::Api(e)) => message(e.status, "Sign-in failed", &e.message),
    }
}

fn expired_link() -> Response {
    message(
        StatusCode::GONE,
        "This link cannot be used",
        "This setup link has expired or has already been used. Ask an admin for a new one \
         (or run `volley admin reset-password --email …` on the server).",
    )
}

#[derive(Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

/// A setup token that can still be used: its user.
async fn setup_user(app: &App, token: &str) -> Result<Option<volley_store::UserRow>, ApiError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    Ok(app
        .store
        .setup_token_user(&hash_secret(token), app.clock.now_ms())
        .await?
        .filter(|u| !u.disabled))
}

fn setup_form(status: StatusCode, token: &str, email: &str, error: &str) -> Response {
    let min = super::MIN_PASSWORD_CHARS.to_string();
    let max = MAX_PASSWORD_BYTES.to_string();
    page(
        status,
        render(
            SETUP_HTML,
            &[
                ("token", token),
                ("email", email),
                ("error", error),
                ("min", &min),
                ("max", &max),
            ],
        ),
    )
}

/// `GET /console/setup?token=…`: the form to choose a password.
pub async fn setup_page(
    State(app): State<Arc<App>>,
    query: Result<Query<SetupQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    match setup_user(&app, &token).await {
        Ok(Some(user)) => setup_form(StatusCode::OK, &token, &user.email, ""),
        Ok(None) => expired_link(),
        Err(e) => message(e.status, "Something went wrong", &e.message),
    }
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/setup` (form: `token`, `password`, `confirm`): sets the password,
/// uses the token up, signs the user in (ending their other sessions).
pub async fn setup(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<SetupForm>, FormRejection>,
) -> Response {
    if !same_origin(&headers, &app) {
        return message(
            StatusCode::FORBIDDEN,
            "Refused",
            "Set your password from this site's own page.",
        );
    }
    let Ok(Form(f)) = form else {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "Send the password form (token, password, confirm).",
        );
    };
    let user = match setup_user(&app, &f.token).await {
        Ok(Some(u)) => u,
        Ok(None) => return expired_link(),
        Err(e) => return message(e.status, "Something went wrong", &e.message),
    };
    if let Err(why) = check_password(&f.password) {
        let why = format!("{}{}.", why[..1].to_uppercase(), &why[1..]);
        return setup_form(
            StatusCode::UNPROCESSABLE_ENTITY,
            &f.token,
            &user.email,
            &why,
        );
    }
    if f.password != f.confirm {
        return setup_form(
            StatusCode::UNPROCESSABLE_ENTITY,
            &f.token,
            &user.email,
            "The two passwords differ.",
        );
    }
    let result = async {
        let hash = hash_blocking(f.password).await?;
        let (token, session) = new_session(&user.id, app.clock.now_ms());
        let used = app
            .store
            .use_setup_token(&hash_secret(&f.token), &hash, session)
            .await?;
        Ok::<_, ApiError>(used.then_some(token))
    }
    .await;
    match result {
        Ok(Some(token)) => with_cookie(
            Redirect::to(AFTER_LOGIN).into_response(),
            session_cookie(&app, &token),
        ),
        Ok(None) => expired_link(),
        Err(e) => message(e.status, "Something went wrong", &e.message),
    }
}

/// `GET /console/account`: who is signed in, with the sign-out buttons.
pub async fn account_page(console: Result<Console, ApiError>) -> Response {
    let Ok(c) = console else {
        return Redirect::to("/console/login").into_response();
    };
    page(
        StatusCode::OK,
        render(
            ACCOUNT_HTML,
            &[
                ("name", &c.staff.name),
                ("email", &c.staff.email),
                ("role", c.staff.role.as_str()),
                ("csrf", &c.csrf),
            ],
        ),
    )
}

/// Signing out with no session left is done already; a CSRF refusal is an error.
async fn sign_out(
    app: &App,
    console: Result<Console, ApiError>,
    everywhere: bool,
) -> Result<Response, ApiError> {
    match console {
        Ok(c) if everywhere => {
            app.store.delete_user_sessions(&c.staff.id).await?;
        }
        Ok(c) => app.store.delete_session(&c.token_hash).await?,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {}
        Err(e) => return Err(e),
    }
    Ok(with_cookie(
        Redirect::to("/console/login").into_response(),
        session_cookie(app, ""),
    ))
}

/// `POST /console/logout`: ends this session.
pub async fn logout(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
) -> Result<Response, ApiError> {
    sign_out(&app, console, false).await
}

/// `POST /console/logout-everywhere`: ends every session of the user.
pub async fn logout_everywhere(
    State(app): State<Arc<App>>,
    console: Result<Console, ApiError>,
) -> Result<Response, ApiError> {
    sign_out(&app, console, true).await
}

/// `GET /console/console.css`.
pub async fn asset_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CONSOLE_CSS,
    )
        .into_response()
}

/// `GET /console/console.js`.
pub async fn asset_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CONSOLE_JS,
    )
        .into_response()
}
