//! API keys (admin): create with scopes and an expiry (the key is shown once),
//! list, revoke. Clients send `Authorization: Bearer pk_...`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::{Auth, Scope, parse_scopes, perm};
use crate::db::entity::api_key;
use crate::error::ApiResult;
use crate::service::api_keys;
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", get(list).post(create))
        .route("/v1/api-keys/{id}/revoke", post(revoke))
}

/// A new API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What it is for (1-100 characters).
    pub name: String,
    /// At least one of `rules:read`, `rules:write`, `deployments:request`,
    /// `deployments:approve`, `agents:read`, `audit:read`.
    pub scopes: Vec<Scope>,
    /// Lifetime in seconds, 60 to 31536000 (1 year); default 7776000 (90 days).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// An API key as listed (never its secret).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Id (named as the actor in the audit log).
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Public prefix (`pk_<prefix>_...`).
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// The admin it acts for.
    pub created_by: Uuid,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Revoked at (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
    /// Last used (RFC 3339, to the minute), if ever.
    pub last_used_at: Option<String>,
}

impl From<&api_key::Model> for ApiKeyView {
    fn from(k: &api_key::Model) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: parse_scopes(&k.scopes),
            created_by: k.created_by,
            expires_at: rfc3339(k.expires_at),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
        }
    }
}

/// A created key, with its text (shown once).
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// `pk_<prefix>_<secret>`: send as `Authorization: Bearer`. Never shown again.
    pub token: String,
}

/// Creates an API key (admin only).
#[utoipa::path(post, path = "/v1/api-keys", request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey), (status = 400), (status = 403)))]
pub async fn create(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let (key, token) =
        api_keys::create(&state.db, &admin, &req.name, &req.scopes, req.ttl_secs).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: (&key).into(),
            token,
        }),
    ))
}

/// API keys of the tenant (admin only).
#[utoipa::path(get, path = "/v1/api-keys", responses((status = 200, body = [ApiKeyView])))]
pub async fn list(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
) -> ApiResult<Json<Vec<ApiKeyView>>> {
    let rows = api_keys::list(&state.db, &admin).await?;
    Ok(Json(rows.iter().map(ApiKeyView::from).collect()))
}

/// Revokes an API key (admin only); it stops working at once.
#[utoipa::path(post, path = "/v1/api-keys/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn revoke(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    api_keys::revoke(&state.db, &admin, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
