//! Enrollment tokens (admin) and agent enrollment.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use picket_proto::{EnrollRequest, EnrollResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiJsonOrEmpty};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::error::ApiResult;
use crate::listener::ClientAddr;
use crate::service::enrollment;
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/enrollment-tokens", post(create_token))
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
    /// How to enroll an agent with it.
    pub enroll_command: String,
}

/// Creates a single-use enrollment token (admin only).
#[utoipa::path(post, path = "/v1/enrollment-tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = TokenResponse), (status = 403)))]
pub async fn create_token(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<CreateTokenRequest>,
) -> ApiResult<(StatusCode, Json<TokenResponse>)> {
    let (row, token) =
        enrollment::create_token(&state, admin.tenant_id, admin.id, req.label, req.ttl_secs)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            id: row.id,
            token,
            expires_at: rfc3339(row.expires_at),
            enroll_command: format!(
                "sudo picket-agent enroll --server {} --token-file /path/to/token",
                state.config.public_url
            ),
        }),
    ))
}

/// Enrolls an agent (called by `picket-agent enroll`). Body and response are
/// `picket_proto::EnrollRequest` / `EnrollResponse`; see docs/protocol.md.
#[utoipa::path(post, path = "/v1/agent/enroll",
    responses((status = 200, description = "enrolled"), (status = 401, description = "token_unknown, token_expired, token_used or token_revoked"), (status = 400, description = "bad_proof or malformed body")))]
pub async fn enroll(
    State(state): State<AppState>,
    peer: ClientAddr,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    Ok(Json(enrollment::enroll(&state, req, peer.ip()).await?))
}
