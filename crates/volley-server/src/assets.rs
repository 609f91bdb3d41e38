//! The web files embedded in the binary: the widget, the demo page, the full-page chat.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const WIDGET_JS: &str = include_str!("../web/widget.js");
const INDEX_HTML: &str = include_str!("../web/index.html");
const CHAT_HTML: &str = include_str!("../web/chat.html");

pub async fn widget() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub async fn chat() -> Html<&'static str> {
    Html(CHAT_HTML)
}
