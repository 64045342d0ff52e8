//! Enrollment tokens (admin: create, list, revoke) and agent enrollment.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use picket_proto::{EnrollRequest, EnrollResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiJsonOrEmpty, ApiPath};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::enrollment_token;
use crate::error::ApiResult;
use crate::listener::ClientAddr;
use crate::service::enrollment;
use crate::time::{rfc3339, unix_now};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/enrollment-tokens", post(create_token).get(list_tokens))
        .route("/v1/enrollment-tokens/{id}/revoke", post(revoke_token))
        .route("/v1/agent/enroll", post(enroll))
}

/// A new enrollment token.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Optional label, e.g. the host or site it is for.
    pub label: Option<String>,
    /// Lifetime in seconds (default from `agents.enrollment_token_ttl_secs`, 24 h).
    pub ttl_secs: Option<u64>,
    /// How many agents may enroll with it (default 1; up to 10000 for bulk installs).
    pub max_uses: Option<i32>,
}

/// A token, shown once.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Token id (for revocation and audit).
    pub id: Uuid,
    /// The token text: give it to the agent on a file or stdin, never on a command line.
    pub token: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// How many agents may enroll with it.
    pub max_uses: i32,
    /// How to enroll an agent with it.
    pub enroll_command: String,
}

/// Where a token stands, derived from its row.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Can still enroll agents.
    Active,
    /// Every use has been consumed.
    UsedUp,
    /// Past its expiry.
    Expired,
    /// Revoked by an admin.
    Revoked,
}

/// A token as listed: everything but the secret, which is never stored.
#[derive(Serialize, ToSchema)]
pub struct TokenInfo {
    /// Token id.
    pub id: Uuid,
    /// Label given at creation.
    pub label: Option<String>,
    /// Derived status.
    pub status: TokenStatus,
    /// Enrollments that consumed it.
    pub uses: i32,
    /// Enrollments it allows.
    pub max_uses: i32,
    /// Creator (user id).
    pub created_by: Uuid,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Latest enrollment with it, RFC 3339.
    pub last_used_at: Option<String>,
    /// Agent of the latest enrollment with it.
    pub last_used_by_agent: Option<Uuid>,
    /// Revocation time, RFC 3339.
    pub revoked_at: Option<String>,
}

fn token_info(t: enrollment_token::Model, now: i64) -> TokenInfo {
    let status = if t.revoked_at.is_some() {
        TokenStatus::Revoked
    } else if t.uses >= t.max_uses {
        TokenStatus::UsedUp
    } else if t.expires_at <= now {
        TokenStatus::Expired
    } else {
        TokenStatus::Active
    };
    TokenInfo {
        id: t.id,
        label: t.label,
        status,
        uses: t.uses,
        max_uses: t.max_uses,
        created_by: t.created_by,
        created_at: rfc3339(t.created_at),
        expires_at: rfc3339(t.expires_at),
        last_used_at: t.used_at.map(rfc3339),
        last_used_by_agent: t.used_by_agent,
        revoked_at: t.revoked_at.map(rfc3339),
    }
}

/// Creates an enrollment token (admin only): single use unless `max_uses` says otherwise.
#[utoipa::path(post, path = "/v1/enrollment-tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = TokenResponse), (status = 403)))]
pub async fn create_token(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    let (row, token) = enrollment::create_token(
        &state,
        admin.tenant_id,
        admin.id,
        enrollment::NewToken {
            label: req.label,
            ttl_secs: req.ttl_secs,
            max_uses: req.max_uses,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            id: row.id,
            token,
            expires_at: rfc3339(row.expires_at),
            max_uses: row.max_uses,
            enroll_command: format!(
                "sudo picket-agent enroll --server {} --token-file /path/to/token",
                state.config.public_url
            ),
        }),
    ))
}

/// The tenant's enrollment tokens, newest first, without their secrets (admin only).
#[utoipa::path(get, path = "/v1/enrollment-tokens",
    responses((status = 200, body = [TokenInfo]), (status = 403)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let now = unix_now();
    let rows = enrollment::list_tokens(&state.db, admin.tenant_id).await?;
    Ok(Json(rows.into_iter().map(|t| token_info(t, now)).collect()))
}

/// Revokes an enrollment token (admin only, audited): enrolling with it then
/// fails with `token_revoked`. Agents it already enrolled stay enrolled.
#[utoipa::path(post, path = "/v1/enrollment-tokens/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 200, body = TokenInfo), (status = 404), (status = 409, description = "already_revoked")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<TokenInfo>> {
    let row = enrollment::revoke_token(&state.db, admin.tenant_id, admin.id, id).await?;
    Ok(Json(token_info(row, unix_now())))
}

/// Enrolls an agent (called by `picket-agent enroll`). Body and response are
/// `picket_proto::EnrollRequest` / `EnrollResponse`; see docs/protocol.md.
#[utoipa::path(post, path = "/v1/agent/enroll",
    responses((status = 200, description = "enrolled"), (status = 401, description = "token_unknown, token_expired, token_used or token_revoked"), (status = 403, description = "key_revoked: the keys belong to a revoked agent"), (status = 400, description = "bad_proof or malformed body")))]
pub async fn enroll(
    State(state): State<AppState>,
    peer: ClientAddr,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    Ok(Json(enrollment::enroll(&state, req, peer.ip()).await?))
}
