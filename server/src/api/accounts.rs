//! Registration (claim / sign-up), sign-in, sign-out, invitations accepted,
//! the current user (profile, password, sessions), and users (admin).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::{self, Auth, ClientIp, Role, SESSION_COOKIE, perm};
use crate::config::Mode;
use crate::db::entity::{session, user};
use crate::error::{ApiError, ApiResult};
use crate::service::{accounts, invitations, sessions};
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/claim", post(claim))
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/accept-invitation", post(accept_invitation))
        .route("/v1/me", get(me))
        .route("/v1/me/password", post(change_password))
        .route("/v1/me/sessions", get(my_sessions))
        .route("/v1/me/sessions/{id}/revoke", post(revoke_my_session))
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/users/{id}/role", post(set_role))
        .route("/v1/users/{id}/sessions/revoke", post(end_user_sessions))
}

/// A new tenant and its first admin (claim or sign-up).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Organisation name.
    pub tenant_name: String,
    /// The first admin's email.
    pub email: String,
    /// The first admin's password (at least 12 characters, not a common password).
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

/// Accepting an invitation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    /// The invitation secret (`pi_...`).
    pub token: String,
    /// The new account's password (at least 12 characters, not a common password).
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
    /// Seconds until the session expires at the latest (absolute timeout; the
    /// idle timeout ends it sooner if unused).
    pub expires_in: i64,
    /// The signed-in user.
    pub user: UserView,
}

/// The session cookie: `HttpOnly`, `SameSite=Lax`, `Secure` when served over TLS.
pub(crate) fn session_cookie(state: &AppState, secret: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if state.config.tls.is_some() || state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn session_response(
    state: &AppState,
    status: StatusCode,
    u: &user::Model,
    secret: String,
) -> Response {
    let ttl = state.config.session_absolute_secs;
    let mut headers = HeaderMap::new();
    if let Some(c) = session_cookie(state, &secret, ttl) {
        headers.insert(header::SET_COOKIE, c);
    }
    (
        status,
        headers,
        Json(LoginResponse {
            token: secret,
            expires_in: ttl,
            user: u.into(),
        }),
    )
        .into_response()
}

/// Claims a fresh self-hosted instance: creates the tenant and its first
/// admin, signs them in, and closes registration for good.
#[utoipa::path(post, path = "/v1/auth/claim", request_body = ClaimRequest,
    responses((status = 201, body = LoginResponse), (status = 400), (status = 403, description = "saas mode: use /v1/auth/signup"), (status = 409, description = "already claimed")))]
pub async fn claim(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> ApiResult<Response> {
    if state.config.mode == Mode::Saas {
        return Err(ApiError::refused(
            "use_signup",
            "this server runs in saas mode: sign up with POST /v1/auth/signup",
        ));
    }
    register(state, ip, req).await
}

/// Signs up (saas mode only): creates a new tenant with the caller as its admin.
#[utoipa::path(post, path = "/v1/auth/signup", request_body = ClaimRequest,
    responses((status = 201, body = LoginResponse), (status = 400), (status = 403, description = "self-hosted: registration is closed"), (status = 409)))]
pub async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> ApiResult<Response> {
    if state.config.mode == Mode::SelfHosted {
        return Err(ApiError::refused(
            "registration_closed",
            "sign-up is closed on a self-hosted instance: ask an admin for an invitation",
        ));
    }
    register(state, ip, req).await
}

async fn register(state: AppState, ip: ClientIp, req: ClaimRequest) -> ApiResult<Response> {
    let u = accounts::register(
        &state,
        &req.tenant_name,
        &req.email,
        req.password.clone(),
        ip.text(),
    )
    .await?;
    let (u, secret) = accounts::login(&state, &u.email, req.password, ip.text(), None).await?;
    Ok(session_response(&state, StatusCode::CREATED, &u, secret))
}

/// Signs in with email and password. Always a new session id; the answer never
/// tells whether the account exists.
#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "bad credentials"), (status = 429, description = "too many failed attempts; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let previous = auth::session_cookie(&headers);
    let (u, secret) =
        accounts::login(&state, &req.email, req.password, ip.text(), previous).await?;
    Ok(session_response(&state, StatusCode::OK, &u, secret))
}

/// Accepts an invitation: creates the account with the chosen password and signs in.
#[utoipa::path(post, path = "/v1/auth/accept-invitation", request_body = AcceptInvitationRequest,
    responses((status = 201, body = LoginResponse), (status = 400), (status = 401, description = "unknown, expired, revoked or used invitation")))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    ip: ClientIp,
    ApiJson(req): ApiJson<AcceptInvitationRequest>,
) -> ApiResult<Response> {
    let (u, secret) = invitations::accept(&state, &req.token, req.password, ip.text()).await?;
    Ok(session_response(&state, StatusCode::CREATED, &u, secret))
}

/// Ends the current session (the cookie is cleared too).
#[utoipa::path(post, path = "/v1/auth/logout", responses((status = 204)))]
pub async fn logout(
    State(state): State<AppState>,
    user: Auth<perm::Account>,
) -> ApiResult<Response> {
    accounts::logout(&state.db, &user).await?;
    let mut headers = HeaderMap::new();
    if let Some(c) = session_cookie(&state, "", 0) {
        headers.insert(header::SET_COOKIE, c);
    }
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", responses((status = 200, body = UserView)))]
pub async fn me(user: Auth<perm::Account>) -> Json<UserView> {
    Json(UserView {
        id: user.id,
        tenant_id: user.tenant_id,
        email: user.email.clone(),
        role: user.role,
        approver: user.approver,
    })
}

/// Changing one's password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password (re-authentication).
    pub current_password: String,
    /// The new password (at least 12 characters, not a common password).
    pub new_password: String,
}

/// Changes the caller's password; every other session of theirs ends.
#[utoipa::path(post, path = "/v1/me/password", request_body = ChangePasswordRequest,
    responses((status = 204), (status = 400, description = "weak password"), (status = 403, description = "wrong current password")))]
pub async fn change_password(
    State(state): State<AppState>,
    user: Auth<perm::Account>,
    ip: ClientIp,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    accounts::change_password(
        &state,
        &user,
        req.current_password,
        req.new_password,
        ip.text(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of the caller's sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// Id (the SHA-256 of the session secret; not usable to sign in).
    pub id: String,
    /// Signed in at (RFC 3339).
    pub created_at: String,
    /// Last used (RFC 3339, to the minute).
    pub last_seen_at: String,
    /// Ends at the latest (RFC 3339): the earlier of the idle and absolute timeouts.
    pub expires_at: String,
    /// Whether this is the session of the request.
    pub current: bool,
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/v1/me/sessions", responses((status = 200, body = [SessionView])))]
pub async fn my_sessions(
    State(state): State<AppState>,
    user: Auth<perm::Account>,
) -> ApiResult<Json<Vec<SessionView>>> {
    let idle = state.config.session_idle_secs;
    let abs = state.config.session_absolute_secs;
    let rows = sessions::list_mine(&state.db, &user, idle, abs).await?;
    Ok(Json(
        rows.into_iter()
            .map(|s: session::Model| SessionView {
                current: user.session_id.as_deref() == Some(s.id.as_str()),
                created_at: rfc3339(s.created_at),
                last_seen_at: rfc3339(s.last_seen_at),
                expires_at: rfc3339(
                    (s.last_seen_at + idle)
                        .min(s.created_at + abs)
                        .min(s.expires_at),
                ),
                id: s.id,
            })
            .collect(),
    ))
}

/// Ends one of the caller's sessions.
#[utoipa::path(post, path = "/v1/me/sessions/{id}/revoke", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn revoke_my_session(
    State(state): State<AppState>,
    user: Auth<perm::Account>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    sessions::revoke_mine(&state.db, &user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new user with a password chosen by the admin (admin only; invitations
/// let the person choose their own).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Email.
    pub email: String,
    /// Initial password (at least 12 characters, not a common password).
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
        &admin,
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
    let users = accounts::list_users(&state.db, admin.scope()).await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

/// A role change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    /// The new role.
    pub role: Role,
    /// The approver flag (lets a viewer approve).
    #[serde(default)]
    pub approver: bool,
}

/// Sets a user's role and approver flag (admin only). A change ends all of
/// that user's sessions.
#[utoipa::path(post, path = "/v1/users/{id}/role", params(("id" = Uuid, Path)), request_body = SetRoleRequest,
    responses((status = 200, body = UserView), (status = 403), (status = 404), (status = 409, description = "own role")))]
pub async fn set_role(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> ApiResult<Json<UserView>> {
    let u = accounts::set_role(&state.db, &admin, id, req.role, req.approver).await?;
    Ok(Json((&u).into()))
}

/// How many sessions were ended.
#[derive(Serialize, ToSchema)]
pub struct EndedSessions {
    /// Count.
    pub ended: u64,
}

/// Ends every session of a user (admin only).
#[utoipa::path(post, path = "/v1/users/{id}/sessions/revoke", params(("id" = Uuid, Path)),
    responses((status = 200, body = EndedSessions), (status = 403), (status = 404)))]
pub async fn end_user_sessions(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<EndedSessions>> {
    let ended = accounts::end_user_sessions(&state.db, &admin, id).await?;
    Ok(Json(EndedSessions { ended }))
}
