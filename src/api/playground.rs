//! `GET /`: the playground, a page for trying the API from a browser. It is one self-contained
//! file, `playground.html`, embedded in the binary: no build step, and no external URL, so it
//! works offline; its Content-Security-Policy lets it talk to this server only.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const PAGE: &str = include_str!("playground.html");

/// The page's inline script and style, `fetch` to this origin, nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub async fn playground() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(PAGE),
    )
}
