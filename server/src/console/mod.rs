//! The web console: server-rendered HTML (askama templates, checked at
//! compile time), one CSS and one JS file, no inline script or style so the
//! API's strict Content-Security-Policy holds. Forms work without JS; the JS
//! adds live deployment status (Server-Sent Events), confirm dialogs and copy
//! buttons.
//!
//! Handlers call the service layer directly. Authorization is the API's: the
//! [`Page`] extractor wraps [`Auth`] (the same role matrix, CSRF rule and
//! session checks) and only changes how a refusal looks: no session → a
//! redirect to sign-in that comes back to the page; anything else → an HTML
//! error page with the API's message.
//!
//! # Layout
//! - [`assets`]: the CSS and JS, served with long-lived caching headers.
//! - [`views`]: display helpers (status labels, times, sizes, charts, diffs).
//! - [`account`]: sign-in, instance claiming, sign-out, invitation
//!   acceptance, password change, own sessions.
//! - [`work`]: home, approvals, deployments (with the live stream), rules.
//! - [`fleet`]: the fleet table and the agent page.
//! - [`admin`]: the audit log and the tenant settings.

pub mod account;
pub mod admin;
pub mod assets;
pub mod fleet;
pub mod views;
pub mod work;

use std::marker::PhantomData;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::AppState;
use crate::auth::{self, Auth, CurrentUser, Permission, Role, perm};
use crate::error::ApiError;

/// The console's routes (merged into the application router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(work::home))
        .route(
            "/login",
            get(account::login_form).post(account::login_submit),
        )
        .route(
            "/claim",
            get(account::claim_form).post(account::claim_submit),
        )
        .route("/logout", post(account::logout))
        .route(
            "/invitation",
            get(account::invitation_form).post(account::invitation_submit),
        )
        .route("/account", get(account::account))
        .route("/account/password", post(account::change_password))
        .route(
            "/account/sessions/{id}/revoke",
            post(account::revoke_session),
        )
        .route("/approvals", get(work::approvals))
        .route("/deployments", get(work::deployments))
        .route("/deployments/live", get(work::live))
        .route("/deployments/{id}", get(work::deployment))
        .route("/deployments/{id}/approve", post(work::approve))
        .route("/deployments/{id}/reject", post(work::reject))
        .route(
            "/deployments/{id}/request-changes",
            post(work::request_changes),
        )
        .route("/deployments/{id}/rollback", post(work::rollback))
        .route("/deployments/{id}/sign-off", post(work::sign_off))
        .route("/drift", get(work::drift))
        .route("/rules/{id}/drift/resolve", post(work::resolve_drift))
        .route("/rules", get(work::rules))
        .route("/rules/new", get(work::new_rule).post(work::create_rule))
        .route("/rules/{id}", get(work::rule))
        .route(
            "/rules/{id}/edit",
            get(work::edit_rule).post(work::save_rule),
        )
        .route("/rules/{id}/deploy", post(work::request_deploy))
        .route("/rules/{id}/test-runs", post(work::run_tests))
        .route("/fleet", get(fleet::fleet))
        .route("/fleet/{id}", get(fleet::agent))
        .route("/audit", get(admin::audit))
        .route("/settings", get(admin::settings))
        .route("/settings/users/{id}/role", post(admin::set_role))
        .route("/settings/invitations", post(admin::invite))
        .route("/settings/api-keys", post(admin::create_api_key))
        .route(
            "/settings/api-keys/{id}/revoke",
            post(admin::revoke_api_key),
        )
        .route(
            "/settings/enrollment-tokens",
            post(admin::create_enrollment_token),
        )
        .route("/settings/connections", post(admin::create_connection))
        .route("/settings/approvals", post(admin::set_min_approvers))
        .route(
            "/settings/connections/sentinel",
            post(admin::create_sentinel),
        )
        .route("/settings/connections/elastic", post(admin::create_elastic))
        .route("/static/console.css", get(assets::css))
        .route("/static/console.js", get(assets::js))
}

/// Extractor: a signed-in person holding permission `P`, for a page.
///
/// The check is [`Auth<P>`]'s, unchanged; only the refusal is a page.
pub struct Page<P: perm::Perm>(pub CurrentUser, PhantomData<P>);

impl<P: perm::Perm> std::ops::Deref for Page<P> {
    type Target = CurrentUser;
    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

impl<P: perm::Perm> FromRequestParts<AppState> for Page<P> {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Auth::<P>::from_request_parts(parts, state).await {
            Ok(a) => Ok(Page(a.0, PhantomData)),
            Err(ApiError::Unauthorized) => {
                // Back to this page after signing in (a form post goes back to
                // the page the form was on: the path without its last segment).
                let next = if parts.method == axum::http::Method::GET {
                    parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned()
                } else {
                    "/".to_owned()
                };
                Err(PageError::SignIn(next))
            }
            Err(e) => Err(PageError::Api(e)),
        }
    }
}

/// A form body; a malformed one is an HTML 400 page.
pub struct PageForm<T>(pub T);

impl<S, T> FromRequest<S> for PageForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Form::<T>::from_request(req, state)
            .await
            .map(|axum::extract::Form(v)| PageForm(v))
            .map_err(|e| PageError::Api(ApiError::bad_request("invalid_form", e.body_text())))
    }
}

/// A path parameter; a malformed one is an HTML 404 page.
pub struct PagePath<T>(pub T);

impl<S, T> FromRequestParts<S> for PagePath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PagePath(v))
            .map_err(|_| PageError::Api(ApiError::NotFound("page")))
    }
}

/// A query string; a malformed one is an HTML 400 page.
pub struct PageQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for PageQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| PageQuery(v))
            .map_err(|e| PageError::Api(ApiError::bad_request("invalid_query", e.body_text())))
    }
}

/// Why a console request did not render its page.
#[derive(Debug)]
pub enum PageError {
    /// No (live) session: sign in, then come back to this path.
    SignIn(String),
    /// Any refusal or failure of the service layer, shown as an HTML page.
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

impl From<sea_orm::DbErr> for PageError {
    fn from(e: sea_orm::DbErr) -> Self {
        PageError::Api(e.into())
    }
}

/// Result of a console handler.
pub type PageResult = Result<Response, PageError>;

/// The chrome around every page: who is signed in, which section is open.
pub struct Chrome {
    /// Page title.
    pub title: String,
    /// The signed-in person, if any (absent on sign-in and error pages).
    pub user: Option<Who>,
    /// The nav entry to mark as current.
    pub active: &'static str,
}

/// The signed-in person as the chrome shows them.
pub struct Who {
    /// Email.
    pub email: String,
    /// Role name.
    pub role: &'static str,
    /// Admin: settings are shown.
    pub admin: bool,
    /// May read the audit log.
    pub audit: bool,
}

impl Chrome {
    /// Chrome for a signed-in page.
    pub fn of(user: &CurrentUser, title: impl Into<String>, active: &'static str) -> Self {
        Chrome {
            title: title.into(),
            user: Some(Who {
                email: user.email.clone(),
                role: user.role.as_str(),
                admin: user.role == Role::Admin,
                audit: may(user, Permission::ReadAudit),
            }),
            active,
        }
    }

    /// Chrome for a page without a session.
    pub fn anonymous(title: impl Into<String>) -> Self {
        Chrome {
            title: title.into(),
            user: None,
            active: "",
        }
    }
}

/// Whether `user` holds `p` (the role matrix of [`auth::allowed`]): used only to
/// decide what to show; the handler behind a button checks again.
pub fn may(user: &CurrentUser, p: Permission) -> bool {
    auth::allowed(user.role, user.approver, p)
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    heading: &'static str,
    message: String,
}

/// Renders a template into a response with `status`.
pub fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(e) => {
            PageError::Api(ApiError::Internal(anyhow::anyhow!("template: {e}"))).into_response()
        }
    }
}

/// Renders a template with 200.
pub fn ok<T: Template>(t: &T) -> PageResult {
    Ok(render(StatusCode::OK, t))
}

/// A 303 to `to` (after a form post).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Percent-encodes a string for a query value.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `next` location that stays on this site (a path, never `//host` or a
/// scheme), else the home page.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 1000
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = match self {
            PageError::SignIn(next) => {
                return see_other(&format!(
                    "/login?next={}",
                    encode_query(&safe_next(Some(&next)))
                ));
            }
            PageError::Api(e) => e,
        };
        let (status, heading, message) = match &e {
            ApiError::BadRequest { message, .. } => (
                StatusCode::BAD_REQUEST,
                "That did not work",
                message.clone(),
            ),
            ApiError::Unprocessable {
                message, details, ..
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "That did not work",
                details
                    .iter()
                    .fold(message.clone(), |acc, d| format!("{acc}; {}", d.message)),
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Sign-in required",
                "Sign in to continue.".to_owned(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.clone()),
            ApiError::Refused { message, .. } => {
                (StatusCode::FORBIDDEN, "Not allowed", message.clone())
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found", e.to_string()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Not possible here",
                e.to_string(),
            ),
            ApiError::Conflict { message, .. } => {
                (StatusCode::CONFLICT, "That did not work", message.clone())
            }
            ApiError::Token { message, .. } => {
                (StatusCode::UNAUTHORIZED, "Link not valid", message.clone())
            }
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                e.to_string(),
            ),
            ApiError::Internal(cause) => {
                let incident = uuid::Uuid::new_v4();
                tracing::error!(%incident, error = ?cause, "internal error (console)");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    format!(
                        "internal error (incident {incident}); the details are in the server log"
                    ),
                )
            }
        };
        let page = ErrorPage {
            chrome: Chrome::anonymous(heading),
            status: status.as_u16(),
            heading,
            message,
        };
        match page.render() {
            Ok(html) => (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                html,
            )
                .into_response(),
            Err(_) => (status, heading).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_site() {
        assert_eq!(safe_next(Some("/fleet?page=2")), "/fleet?page=2");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(encode_query("/a?b=c&d"), "/a%3Fb%3Dc%26d");
    }
}
