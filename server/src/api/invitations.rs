//! Invitations (admin): invite an email with a role; the invitee accepts at
//! `POST /v1/auth/accept-invitation`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::{Auth, Role, perm};
use crate::db::entity::invitation;
use crate::error::ApiResult;
use crate::service::invitations;
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/invitations", get(list).post(create))
        .route("/v1/invitations/{id}/revoke", post(revoke))
}

/// A new invitation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitationRequest {
    /// The invitee's email (the account will have it).
    pub email: String,
    /// The role the account gets.
    pub role: Role,
    /// The approver flag.
    #[serde(default)]
    pub approver: bool,
    /// Lifetime in seconds, 60 to 2592000 (30 days); default 604800 (7 days).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// An invitation as listed.
#[derive(Serialize, ToSchema)]
pub struct InvitationView {
    /// Id.
    pub id: Uuid,
    /// Invitee.
    pub email: String,
    /// Role given on acceptance.
    pub role: String,
    /// Approver flag given on acceptance.
    pub approver: bool,
    /// `pending`, `accepted`, `revoked` or `expired`.
    pub status: &'static str,
    /// Expiry (RFC 3339).
    pub expires_at: String,
}

impl From<&invitation::Model> for InvitationView {
    fn from(i: &invitation::Model) -> Self {
        let status = if i.accepted_at.is_some() {
            "accepted"
        } else if i.revoked_at.is_some() {
            "revoked"
        } else if i.expires_at <= crate::time::unix_now() {
            "expired"
        } else {
            "pending"
        };
        InvitationView {
            id: i.id,
            email: i.email.clone(),
            role: i.role.clone(),
            approver: i.approver,
            status,
            expires_at: rfc3339(i.expires_at),
        }
    }
}

/// A created invitation, with its secret (shown once).
#[derive(Serialize, ToSchema)]
pub struct CreatedInvitation {
    /// The invitation.
    #[serde(flatten)]
    pub invitation: InvitationView,
    /// The secret to hand to the invitee (`pi_...`); never shown again.
    pub token: String,
}

/// Invites someone (admin only).
#[utoipa::path(post, path = "/v1/invitations", request_body = CreateInvitationRequest,
    responses((status = 201, body = CreatedInvitation), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJson(req): ApiJson<CreateInvitationRequest>,
) -> ApiResult<(StatusCode, Json<CreatedInvitation>)> {
    let (inv, token) = invitations::create(
        &state.db,
        &admin,
        &req.email,
        req.role,
        req.approver,
        req.ttl_secs,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            invitation: (&inv).into(),
            token,
        }),
    ))
}

/// Invitations of the tenant (admin only).
#[utoipa::path(get, path = "/v1/invitations", responses((status = 200, body = [InvitationView])))]
pub async fn list(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
) -> ApiResult<Json<Vec<InvitationView>>> {
    let rows = invitations::list(&state.db, &admin).await?;
    Ok(Json(rows.iter().map(InvitationView::from).collect()))
}

/// Revokes a pending invitation (admin only).
#[utoipa::path(post, path = "/v1/invitations/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn revoke(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    invitations::revoke(&state.db, &admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
