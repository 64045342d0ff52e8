//! HTTP routes, one module per resource, merged here with the cross-cutting
//! layers: body size limit, security headers, request tracing.
//!
//! # Layout
//! - [`accounts`]: claim/sign-up, login, logout, invitations accepted, me
//!   (password, sessions), users and roles.
//! - [`invitations`]: invitations (admin).
//! - [`api_keys`]: API keys (admin).
//! - [`enrollment`]: enrollment tokens (admin) and `POST /v1/agent/enroll` (agents).
//! - [`agents`]: the fleet.
//! - [`connections`]: SIEM connections (credentials write-only).
//! - [`rules`]: rules and versions.
//! - [`deployments`]: requests, approvals, status.
//! - [`rule_health`]: per-rule health from the SIEMs, and checks on demand.
//! - [`audit`]: the audit log: events, checkpoints, proofs, exports.
//! - [`openapi`]: the OpenAPI document.
//! - [`ops`]: `/readyz` and `/metrics` for operators.

pub mod accounts;
pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod connections;
pub mod deployments;
pub mod enrollment;
pub mod invitations;
pub mod openapi;
pub mod ops;
pub mod rule_health;
pub mod rules;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderValue, header};
use axum::routing::get;
use axum::{Router, response::IntoResponse};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::AppState;
use crate::error::ApiError;

/// Largest request body accepted by the API (rules with long queries fit easily).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// JSON body extractor whose rejections are [`ApiError::BadRequest`] with a precise message.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "invalid_json",
                "expected Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::bad_request(
                "body_too_large",
                format!("request body must be at most {MAX_BODY_BYTES} bytes"),
            )),
            Err(e) => Err(ApiError::bad_request("invalid_json", e.body_text())),
        }
    }
}

/// Like [`ApiJson`], but an empty body means `T::default()` (for optional request bodies).
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| {
                ApiError::bad_request(
                    "body_too_large",
                    format!("request body must be at most {MAX_BODY_BYTES} bytes"),
                )
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJsonOrEmpty)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
    }
}

/// Path extractor whose rejections are [`ApiError::BadRequest`] (`invalid_path`)
/// in the API's error shape, instead of axum's plain-text 400.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Query-string extractor whose rejections are [`ApiError::BadRequest`] (`invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Makes the client's IP and user agent (and whether it is the browser
/// console) known to every audit event recorded while serving the request.
async fn audit_context(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let headers = req.headers();
    let client_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let console = headers.get(header::AUTHORIZATION).is_none()
        && headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|c| c.contains(crate::auth::SESSION_COOKIE));
    let ctx = crate::audit::RequestContext {
        client_ip,
        user_agent,
        console,
    };
    crate::audit::with_request(ctx, next.run(req)).await
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn healthz() -> impl IntoResponse {
    "ok"
}

/// Unknown routes: the API's JSON error, or the console's HTML page for a
/// browser navigating outside `/v1/`.
async fn not_found(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !uri.path().starts_with("/v1/") {
        return crate::console::PageError::Api(ApiError::NotFound("page")).into_response();
    }
    ApiError::NotFound("route").into_response()
}

/// The Content-Security-Policy of every response: only same-origin scripts,
/// styles, images and connections, never inline; no framing; no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// HSTS sent when the server serves TLS itself: one year, subdomains included.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let hsts = state.config.tls.is_some();
    let api = Router::new()
        .merge(accounts::router())
        .merge(invitations::router())
        .merge(api_keys::router())
        .merge(enrollment::router())
        .merge(agents::router())
        .merge(connections::router())
        .merge(rules::router())
        .merge(deployments::router())
        .merge(rule_health::router())
        .merge(audit::router())
        .merge(openapi::router())
        .merge(ops::router());
    Router::new()
        .route("/healthz", get(healthz))
        .merge(crate::console::router())
        .route("/v1/agent/connect", get(crate::gateway::connect))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_http,
        ))
        .layer(axum::middleware::from_fn(audit_context))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
        ))
        .layer(axum::middleware::map_response(
            move |mut res: axum::response::Response| async move {
                // HSTS only when this process terminates TLS: over plain HTTP the
                // header is meaningless, and behind a proxy the proxy sets it.
                if hsts {
                    res.headers_mut().insert(
                        header::STRICT_TRANSPORT_SECURITY,
                        HeaderValue::from_static(HSTS),
                    );
                }
                res
            },
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(state)
}
