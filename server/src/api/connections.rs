//! SIEM connections. Credentials are write-only: no response ever carries them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::siem_connection;
use crate::error::{ApiError, ApiResult};
use crate::service::connections::{self, NewSplunk};
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connections", get(list).post(create))
        .route("/v1/connections/{id}", get(show))
}

/// A new SIEM connection.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnectionRequest {
    /// Unique name in the tenant, 1-64 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `splunk`.
    pub kind: String,
    /// The agent that serves this SIEM.
    pub agent_id: Uuid,
    /// Management API URL, e.g. `https://splunk.corp:8089`.
    pub base_url: String,
    /// Splunk app namespace (default `search`).
    #[serde(default = "default_app")]
    pub app: String,
    /// Splunk owner namespace (default `nobody`).
    #[serde(default = "default_owner")]
    pub owner: String,
    /// Splunk authentication token. Write-only.
    pub token: String,
}

fn default_app() -> String {
    "search".into()
}
fn default_owner() -> String {
    "nobody".into()
}

/// A connection as shown by the API; the credential only as a mask.
#[derive(Serialize, ToSchema)]
pub struct ConnectionView {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// SIEM kind.
    pub kind: String,
    /// Serving agent.
    pub agent_id: Uuid,
    /// Base URL.
    pub base_url: String,
    /// Splunk app.
    pub app: String,
    /// Splunk owner.
    pub owner: String,
    /// Always `********`: credentials are write-only.
    pub credential: String,
    /// When the credential was last set (RFC 3339).
    pub credential_updated_at: String,
}

impl From<siem_connection::Model> for ConnectionView {
    fn from(c: siem_connection::Model) -> Self {
        ConnectionView {
            id: c.id,
            name: c.name,
            kind: c.kind,
            agent_id: c.agent_id,
            base_url: c.base_url,
            app: c.app,
            owner: c.owner,
            credential: "********".into(),
            credential_updated_at: rfc3339(c.updated_at),
        }
    }
}

/// Registers a SIEM connection (admin only).
#[utoipa::path(post, path = "/v1/connections", request_body = CreateConnectionRequest,
    responses((status = 201, body = ConnectionView), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiJson(req): ApiJson<CreateConnectionRequest>,
) -> ApiResult<(StatusCode, Json<ConnectionView>)> {
    if req.kind != "splunk" {
        return Err(ApiError::bad_request(
            "unsupported_kind",
            "kind must be \"splunk\" (Sentinel and Elastic are coming)",
        ));
    }
    let row = connections::create_splunk(
        &state,
        admin.tenant_id,
        admin.id,
        NewSplunk {
            name: req.name,
            agent_id: req.agent_id,
            base_url: req.base_url,
            app: req.app,
            owner: req.owner,
            token: zeroize::Zeroizing::new(req.token),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Connections of the tenant.
#[utoipa::path(get, path = "/v1/connections", responses((status = 200, body = [ConnectionView])))]
pub async fn list(
    State(state): State<AppState>,
    user: Auth<perm::View>,
) -> ApiResult<Json<Vec<ConnectionView>>> {
    Ok(Json(
        connections::list(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// One connection.
#[utoipa::path(get, path = "/v1/connections/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = ConnectionView), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ConnectionView>> {
    Ok(Json(
        connections::get(&state.db, user.tenant_id, id)
            .await?
            .into(),
    ))
}
