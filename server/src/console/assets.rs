//! The console's one stylesheet and one script, compiled into the binary.
//! Pages link them with a content hash in the query (`?v=`), so they can be
//! cached for a year and a new build is fetched at once.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// The stylesheet.
pub const CSS: &str = include_str!("../../static/console.css");
/// The script (progressive enhancement only: every page works without it).
pub const JS: &str = include_str!("../../static/console.js");

/// First 12 hex digits of SHA-256 of both files: the cache-busting `?v=`.
pub fn version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let mut h = Sha256::new();
        h.update(CSS.as_bytes());
        h.update(JS.as_bytes());
        hex::encode(h.finalize())[..12].to_owned()
    })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Immutable for a year: the URL changes with the content.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/console.css`.
pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET /static/console.js`.
pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}
