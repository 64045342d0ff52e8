//! Instance claiming, sign-in, sign-out, the current user, and users (admin).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiJson;
use crate::AppState;
use crate::auth::{Auth, Role, SESSION_COOKIE, SESSION_TTL_SECS, perm};
use crate::db::entity::user;
use crate::error::ApiResult;
use crate::listener::ClientAddr;
use crate::service::accounts;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/claim", post(claim))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me", get(me))
        .route("/v1/users", post(create_user).get(list_users))
}

/// First registration on a fresh instance.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Organisation name.
    pub tenant_name: String,
    /// The first admin's email.
    pub email: String,
    /// The first admin's password (at least 12 characters).
    pub password: String,
}

/// Sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A user as shown by the API (never the password hash).
#[derive(Serialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// May approve even as a viewer.
    pub approver: bool,
}

impl From<&user::Model> for UserView {
    fn from(u: &user::Model) -> Self {
        UserView {
            id: u.id,
            tenant_id: u.tenant_id,
            email: u.email.clone(),
            role: Role::parse(&u.role).unwrap_or(Role::Viewer),
            approver: u.approver,
        }
    }
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer secret for API clients (browsers get the same in an HttpOnly cookie).
    pub token: String,
    /// Seconds until the session expires.
    pub expires_in: i64,
    /// The signed-in user.
    pub user: UserView,
}

fn session_cookie(state: &AppState, secret: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Claims a fresh instance: creates the tenant and its first admin, and signs them in.
#[utoipa::path(post, path = "/v1/auth/claim", request_body = ClaimRequest,
    responses((status = 201, body = LoginResponse), (status = 409, description = "already claimed")))]
pub async fn claim(
    State(state): State<AppState>,
    peer: ClientAddr,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> ApiResult<Response> {
    let ip = peer.ip();
    let u = accounts::claim_instance(
        &state.db,
        &req.tenant_name,
        &req.email,
        req.password.clone(),
        ip.clone(),
    )
    .await?;
    let (u, secret) = accounts::login(&state.db, &u.email, req.password, ip).await?;
    Ok(session_response(&state, StatusCode::CREATED, &u, secret))
}

fn session_response(
    state: &AppState,
    status: StatusCode,
    u: &user::Model,
    secret: String,
) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(c) = session_cookie(state, &secret, SESSION_TTL_SECS) {
        headers.insert(header::SET_COOKIE, c);
    }
    (
        status,
        headers,
        Json(LoginResponse {
            token: secret,
            expires_in: SESSION_TTL_SECS,
            user: u.into(),
        }),
    )
        .into_response()
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "bad credentials")))]
pub async fn login(
    State(state): State<AppState>,
    peer: ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let ip = peer.ip();
    let (u, secret) = accounts::login(&state.db, &req.email, req.password, ip).await?;
    Ok(session_response(&state, StatusCode::OK, &u, secret))
}

/// Ends the current session.
#[utoipa::path(post, path = "/v1/auth/logout", responses((status = 204)))]
pub async fn logout(State(state): State<AppState>, user: Auth<perm::View>) -> ApiResult<Response> {
    accounts::logout(&state.db, user.tenant_id, user.id, &user.session_id).await?;
    let mut headers = HeaderMap::new();
    if let Some(c) = session_cookie(&state, "", 0) {
        headers.insert(header::SET_COOKIE, c);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", responses((status = 200, body = UserView)))]
pub async fn me(user: Auth<perm::View>) -> Json<UserView> {
    Json(UserView {
        id: user.id,
        tenant_id: user.tenant_id,
        email: user.email.clone(),
        role: user.role,
        approver: user.approver,
    })
}

/// A new user (admin only).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Email.
    pub email: String,
    /// Initial password (at least 12 characters).
    pub password: String,
    /// Role.
    pub role: Role,
    /// Lets a viewer approve deployments.
    #[serde(default)]
    pub approver: bool,
}

/// Adds a user to the admin's tenant.
#[utoipa::path(post, path = "/v1/users", request_body = CreateUserRequest,
    responses((status = 201, body = UserView), (status = 403), (status = 409)))]
pub async fn create_user(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let u = accounts::create_user(
        &state.db,
        admin.tenant_id,
        admin.id,
        &req.email,
        req.password,
        req.role,
        req.approver,
    )
    .await?;
    Ok((StatusCode::CREATED, Json((&u).into())))
}

/// Users of the tenant (admin only).
#[utoipa::path(get, path = "/v1/users", responses((status = 200, body = [UserView])))]
pub async fn list_users(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
) -> ApiResult<Json<Vec<UserView>>> {
    let users = accounts::list_users(&state.db, admin.tenant_id).await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}
