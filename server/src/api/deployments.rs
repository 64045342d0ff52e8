//! Deployment requests, approvals and status.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::{approval, deployment};
use crate::error::ApiResult;
use crate::service::deployments::{self, Action};
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/deployments", post(request).get(list))
        .route("/v1/deployments/{id}", get(show))
        .route("/v1/deployments/{id}/approve", post(approve))
}

/// A deployment request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// The rule.
    pub rule_id: Uuid,
    /// The version to deploy.
    pub version: i32,
    /// The SIEM connection.
    pub connection_id: Uuid,
    /// What to do (default `deploy`).
    #[serde(default = "default_action")]
    pub action: Action,
    /// Why (shown to approvers).
    #[serde(default)]
    pub message: String,
}

fn default_action() -> Action {
    Action::Deploy
}

/// An approval decision.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Optional comment.
    pub comment: Option<String>,
    /// Admins only: approve although rule tests failed or were not run,
    /// with this written reason (audited as `deployment.test_override`).
    #[serde(default)]
    pub test_override: Option<String>,
}

/// One approval.
#[derive(Serialize, ToSchema)]
pub struct ApprovalView {
    /// Approver.
    pub user_id: Uuid,
    /// Digest they approved.
    pub digest: String,
    /// Comment.
    pub comment: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

impl From<approval::Model> for ApprovalView {
    fn from(a: approval::Model) -> Self {
        ApprovalView {
            user_id: a.user_id,
            digest: a.digest,
            comment: a.comment,
            at: rfc3339(a.created_at),
        }
    }
}

/// A deployment and its progress.
#[derive(Serialize, ToSchema)]
pub struct DeploymentView {
    /// Id.
    pub id: Uuid,
    /// Rule.
    pub rule_id: Uuid,
    /// Version.
    pub version: i32,
    /// Connection.
    pub connection_id: Uuid,
    /// Agent serving the connection.
    pub agent_id: Uuid,
    /// Action.
    pub action: String,
    /// Requester's message.
    pub message: String,
    /// Requester.
    pub requested_by: Uuid,
    /// SHA-256 of exactly what will be applied.
    pub digest: String,
    /// `pending_approval`, `queued`, `delivered`, `succeeded`, `failed`, `refused` or `expired`.
    pub status: String,
    /// Error class when failed or refused.
    pub error_class: Option<String>,
    /// The job carrying it, once approved.
    pub job_id: Option<Uuid>,
    /// Approvals so far.
    pub approvals: Vec<ApprovalView>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

fn view(d: deployment::Model, approvals: Vec<approval::Model>) -> DeploymentView {
    DeploymentView {
        id: d.id,
        rule_id: d.rule_id,
        version: d.version,
        connection_id: d.connection_id,
        agent_id: d.agent_id,
        action: d.action,
        message: d.message,
        requested_by: d.requested_by,
        digest: d.digest,
        status: d.status,
        error_class: d.error_class,
        job_id: d.job_id,
        approvals: approvals.into_iter().map(Into::into).collect(),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    }
}

/// Requests a deployment; it waits for approval by someone other than the requester.
#[utoipa::path(post, path = "/v1/deployments", request_body = DeploymentRequest,
    responses((status = 201, body = DeploymentView), (status = 400), (status = 404)))]
pub async fn request(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiJson(req): ApiJson<DeploymentRequest>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let d = deployments::request(
        &state.db,
        &user,
        req.rule_id,
        req.version,
        req.connection_id,
        req.action,
        &req.message,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(d, vec![]))))
}

/// Approves a deployment. The requester and the version's author get 403.
#[utoipa::path(post, path = "/v1/deployments/{id}/approve", params(("id" = Uuid, Path)), request_body = ApproveRequest,
    responses((status = 200, body = DeploymentView), (status = 403, description = "requester, author, or role without approval"), (status = 404), (status = 409)))]
pub async fn approve(
    State(state): State<AppState>,
    user: Auth<perm::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<ApproveRequest>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::approve(&state, &user, id, req.comment, req.test_override).await?;
    let a = deployments::approvals(&state.db, user.tenant_id, id).await?;
    Ok(Json(view(d, a)))
}

/// One deployment with its approvals.
#[utoipa::path(get, path = "/v1/deployments/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = DeploymentView), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::get(&state.db, user.tenant_id, id).await?;
    let a = deployments::approvals(&state.db, user.tenant_id, id).await?;
    Ok(Json(view(d, a)))
}

/// Paging for lists.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// At most this many (default 100, max 1000).
    pub limit: Option<u64>,
}

/// Deployments of the tenant, newest first.
#[utoipa::path(get, path = "/v1/deployments", params(ListParams), responses((status = 200, body = [DeploymentView])))]
pub async fn list(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<Vec<DeploymentView>>> {
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        deployments::list(&state.db, user.tenant_id, limit)
            .await?
            .into_iter()
            .map(|d| view(d, vec![]))
            .collect(),
    ))
}
