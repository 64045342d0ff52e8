//! Deployment requests, decisions, rollback, breakglass, drift and status.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use sea_orm::{ColumnTrait as _, QueryFilter as _, QueryOrder as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::{
    approval, breakglass_review, deployment, deployment_item, notification, rule_deployment,
    rule_version,
};
use crate::error::{ApiError, ApiResult};
use crate::service::deployments::{self, Action, Decision, ItemRequest, NewRequest};
use crate::service::drift::{self, Resolution};
use crate::service::rules;
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/deployments", post(request).get(list))
        .route("/v1/deployments/breakglass", post(breakglass))
        .route("/v1/deployments/rollback", post(rollback))
        .route("/v1/deployments/{id}", get(show).put(update))
        .route("/v1/deployments/{id}/approve", post(approve))
        .route("/v1/deployments/{id}/reject", post(reject))
        .route(
            "/v1/deployments/{id}/request-changes",
            post(request_changes),
        )
        .route("/v1/deployments/{id}/sign-off", post(sign_off))
        .route("/v1/deployments/{id}/withdraw", post(withdraw))
        .route("/v1/deployments/{id}/preview", post(preview))
        .route("/v1/breakglass-reviews", get(list_reviews))
        .route("/v1/notifications", get(list_notifications))
        .route("/v1/approval-policy", get(show_policy).put(set_policy))
        .route("/v1/drift", get(list_drift))
        .route("/v1/rules/{id}/drift/resolve", post(resolve_drift))
        .route("/v1/connections/{id}/drift-check", post(drift_check))
}

/// A deployment request: either one rule (`rule_id`, `version`, `action`,
/// `monitoring`) or `items`, never both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// The SIEM connection.
    pub connection_id: Uuid,
    /// One-rule form: the rule.
    pub rule_id: Option<Uuid>,
    /// One-rule form: the version.
    pub version: Option<i32>,
    /// One-rule form: what to do (default `deploy`).
    pub action: Option<Action>,
    /// One-rule form: deploy with alerting off.
    #[serde(default)]
    pub monitoring: bool,
    /// Batch form: the items, applied in order, all or nothing (at most 100).
    pub items: Option<Vec<ItemRequest>>,
    /// Why (shown to approvers).
    #[serde(default)]
    pub message: String,
    /// Only report what would change (runs at once, changes nothing).
    #[serde(default)]
    pub dry_run: bool,
}

impl DeploymentRequest {
    fn into_new(self, kind: &'static str) -> ApiResult<NewRequest> {
        let items = match (self.items, self.rule_id, self.version) {
            (Some(items), None, None) if self.action.is_none() && !self.monitoring => items,
            (None, Some(rule_id), Some(version)) => vec![ItemRequest {
                rule_id,
                version,
                action: self.action.unwrap_or(Action::Deploy),
                monitoring: self.monitoring,
            }],
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_items",
                    "give either rule_id and version (with optional action and monitoring), or items",
                ));
            }
        };
        Ok(NewRequest {
            connection_id: self.connection_id,
            items,
            message: self.message,
            dry_run: self.dry_run,
            kind,
        })
    }
}

/// A breakglass deployment: a request (as [`DeploymentRequest`], never a
/// dry run) plus the written reason.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakglassRequest {
    /// Why this cannot wait for approval (at least 10 characters).
    pub reason: String,
    /// The SIEM connection.
    pub connection_id: Uuid,
    /// One-rule form: the rule.
    pub rule_id: Option<Uuid>,
    /// One-rule form: the version.
    pub version: Option<i32>,
    /// One-rule form: what to do (default `deploy`).
    pub action: Option<Action>,
    /// One-rule form: deploy with alerting off.
    #[serde(default)]
    pub monitoring: bool,
    /// Batch form: the items.
    pub items: Option<Vec<ItemRequest>>,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// Changes a request awaiting approval (its requester only).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The new items.
    #[serde(default)]
    pub items: Vec<ItemRequest>,
    /// A new message.
    pub message: Option<String>,
}

/// A rollback request.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The rule.
    pub rule_id: Uuid,
    /// The connection it is deployed on.
    pub connection_id: Uuid,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// A reviewer's decision.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Comment (required to reject or request changes).
    pub comment: Option<String>,
    /// The digest the reviewer looked at; refused with 409 `digest_changed`
    /// if the request changed since.
    pub digest: Option<String>,
    /// Approvals by an Admin only: approve although rule tests failed or
    /// were not run, with this written reason (audited as
    /// `deployment.test_override`).
    #[serde(default)]
    pub test_override: Option<String>,
}

/// One decision.
#[derive(Serialize, ToSchema)]
pub struct ApprovalView {
    /// Reviewer.
    pub user_id: Uuid,
    /// `approve`, `reject` or `request_changes`.
    pub decision: String,
    /// Digest they decided on.
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
            decision: a.decision,
            digest: a.digest,
            comment: a.comment,
            at: rfc3339(a.created_at),
        }
    }
}

/// One item and its live status.
#[derive(Serialize, ToSchema)]
pub struct ItemView {
    /// Rule.
    pub rule_id: Uuid,
    /// Version.
    pub version: i32,
    /// `deploy`, `disable`, `enable` or `delete`.
    pub action: String,
    /// Deployed with alerting off.
    pub monitoring: bool,
    /// `queued`, `sent`, `applied`, `failed`, `reverted`, `revert_failed`,
    /// `skipped`; dry runs: `would_create`, `would_change`, `unchanged`.
    pub status: String,
    /// Error class when failed.
    pub error_class: Option<String>,
    /// Hex SHA-256 of the content as deployed (or found, for a dry run).
    pub content_hash: Option<String>,
    /// While the request awaits a decision (detail views): what the rule
    /// is now on the connection and its diff against this item's version,
    /// from the SIEM's own content when the last drift check found it
    /// drifted (`source: siem`), else from Picket's record (`source:
    /// record`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<drift::Current>,
    /// The expected alert volume (`deploy` items): what the rule's query
    /// matched on the SIEM's data over the last `window_secs`; absent until
    /// a preview was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewView>,
    /// While the request awaits a decision (detail views): the latest test
    /// run of this version on the request's connection, with its per-case
    /// results (what the test gate will judge); `null` when never run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<Option<super::rules::TestRunView>>,
}

/// A deploy item's preview count.
#[derive(Serialize, ToSchema)]
pub struct PreviewView {
    /// `queued` (the agent is counting), `counted`, `failed` or
    /// `unsupported` (the query has no preview form).
    pub status: String,
    /// Events matched, when `counted`.
    pub count: Option<i64>,
    /// The window counted over, seconds.
    pub window_secs: Option<i32>,
    /// The agent's error class (`failed`) or why there is none (`unsupported`).
    pub error: Option<String>,
    /// When the status last changed (RFC 3339).
    pub at: Option<String>,
}

impl From<deployment_item::Model> for ItemView {
    fn from(i: deployment_item::Model) -> Self {
        ItemView {
            rule_id: i.rule_id,
            version: i.version,
            action: i.action,
            monitoring: i.monitoring,
            status: i.status,
            error_class: i.error_class,
            content_hash: i.content_hash,
            current: None,
            preview: i.preview_status.map(|status| PreviewView {
                status,
                count: i.preview_count,
                window_secs: i.preview_window_secs,
                error: i.preview_error,
                at: i.preview_at.map(rfc3339),
            }),
            tests: None,
        }
    }
}

/// The after-the-fact review of a breakglass deployment.
#[derive(Serialize, ToSchema)]
pub struct ReviewView {
    /// The deployment.
    pub deployment_id: Uuid,
    /// The Admin who deployed.
    pub requested_by: Uuid,
    /// Their written reason.
    pub reason: String,
    /// `open` or `signed_off`.
    pub status: String,
    /// The Admin who signed it off.
    pub signed_off_by: Option<Uuid>,
    /// When (RFC 3339).
    pub signed_off_at: Option<String>,
    /// Their comment.
    pub comment: Option<String>,
    /// Opened (RFC 3339).
    pub created_at: String,
}

impl From<breakglass_review::Model> for ReviewView {
    fn from(r: breakglass_review::Model) -> Self {
        ReviewView {
            deployment_id: r.deployment_id,
            requested_by: r.requested_by,
            reason: r.reason,
            status: if r.signed_off_at.is_some() {
                "signed_off"
            } else {
                "open"
            }
            .into(),
            signed_off_by: r.signed_off_by,
            signed_off_at: r.signed_off_at.map(rfc3339),
            comment: r.comment,
            created_at: rfc3339(r.created_at),
        }
    }
}

/// A deployment and its progress.
#[derive(Serialize, ToSchema)]
pub struct DeploymentView {
    /// Id.
    pub id: Uuid,
    /// First item's rule (the one-rule form's rule).
    pub rule_id: Uuid,
    /// First item's version.
    pub version: i32,
    /// Connection.
    pub connection_id: Uuid,
    /// Agent serving the connection.
    pub agent_id: Uuid,
    /// First item's action.
    pub action: String,
    /// `change`, `rollback` or `redeploy`.
    pub kind: String,
    /// Only reports what would change.
    pub dry_run: bool,
    /// Deployed by an Admin without approval.
    pub breakglass: bool,
    /// The Admin's written reason, when breakglass.
    pub breakglass_reason: Option<String>,
    /// Requester's message.
    pub message: String,
    /// Requester.
    pub requested_by: Uuid,
    /// SHA-256 of exactly what will be applied.
    pub digest: String,
    /// `pending_approval`, `changes_requested`, `rejected`, `withdrawn`, `queued`,
    /// `delivered`, `succeeded`, `failed`, `refused` or `expired`.
    pub status: String,
    /// Error class when failed or refused (the failing item's).
    pub error_class: Option<String>,
    /// The job carrying it, once dispatched.
    pub job_id: Option<Uuid>,
    /// The items, in order, with their live status.
    pub items: Vec<ItemView>,
    /// Decisions so far.
    pub approvals: Vec<ApprovalView>,
    /// The breakglass review (detail view only).
    pub review: Option<ReviewView>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

fn view(
    d: deployment::Model,
    items: Vec<deployment_item::Model>,
    approvals: Vec<approval::Model>,
    review: Option<breakglass_review::Model>,
) -> DeploymentView {
    DeploymentView {
        id: d.id,
        rule_id: d.rule_id,
        version: d.version,
        connection_id: d.connection_id,
        agent_id: d.agent_id,
        action: d.action,
        kind: d.kind,
        dry_run: d.dry_run,
        breakglass: d.breakglass_reason.is_some(),
        breakglass_reason: d.breakglass_reason,
        message: d.message,
        requested_by: d.requested_by,
        digest: d.digest,
        status: d.status,
        error_class: d.error_class,
        job_id: d.job_id,
        items: items.into_iter().map(Into::into).collect(),
        approvals: approvals.into_iter().map(Into::into).collect(),
        review: review.map(Into::into),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    }
}

async fn full_view(
    state: &AppState,
    tenant_id: Uuid,
    d: deployment::Model,
) -> ApiResult<DeploymentView> {
    let items = deployments::items(&state.db, tenant_id, d.id).await?;
    let approvals = deployments::approvals(&state.db, tenant_id, d.id).await?;
    let review = deployments::review_of(&state.db, tenant_id, d.id).await?;
    let awaiting = matches!(d.status.as_str(), "pending_approval" | "changes_requested");
    let mut extras = Vec::new();
    if awaiting {
        for it in &items {
            let proposed = crate::service::scope::TenantScope::new(tenant_id)
                .get::<rule_version::Entity>(&state.db, it.rule_version_id, "rule version")
                .await?;
            let current =
                drift::current_against(&state.db, tenant_id, d.connection_id, &proposed).await?;
            let tests =
                rules::latest_test_run(&state.db, tenant_id, it.rule_version_id, d.connection_id)
                    .await?
                    .map(Into::into);
            extras.push((current, tests));
        }
    }
    let mut v = view(d, items, approvals, review);
    for (item, (current, tests)) in v.items.iter_mut().zip(extras) {
        item.current = Some(current);
        item.tests = Some(tests);
    }
    Ok(v)
}

/// Requests a deployment of one rule or a batch; it waits for approval by
/// someone other than the requester and the versions' authors. A dry run
/// is dispatched at once and changes nothing.
#[utoipa::path(post, path = "/v1/deployments", request_body = DeploymentRequest,
    responses((status = 201, body = DeploymentView), (status = 400), (status = 404)))]
pub async fn request(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiJson(req): ApiJson<DeploymentRequest>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let d = deployments::request(&state, &user, req.into_new("change")?, None).await?;
    Ok((
        StatusCode::CREATED,
        Json(full_view(&state, user.tenant_id, d).await?),
    ))
}

/// Breakglass: an Admin deploys without approval, with a written reason. The
/// deployment is flagged, every Admin is notified, and a review stays open
/// until another Admin signs it off.
#[utoipa::path(post, path = "/v1/deployments/breakglass", request_body = BreakglassRequest,
    responses((status = 201, body = DeploymentView), (status = 400), (status = 403), (status = 404)))]
pub async fn breakglass(
    State(state): State<AppState>,
    user: Auth<perm::Administer>,
    ApiJson(req): ApiJson<BreakglassRequest>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let b = req;
    let new = DeploymentRequest {
        connection_id: b.connection_id,
        rule_id: b.rule_id,
        version: b.version,
        action: b.action,
        monitoring: b.monitoring,
        items: b.items,
        message: b.message,
        dry_run: false,
    }
    .into_new("change")?;
    let d = deployments::request(&state, &user, new, Some(&b.reason)).await?;
    Ok((
        StatusCode::CREATED,
        Json(full_view(&state, user.tenant_id, d).await?),
    ))
}

/// Requests the rollback of a rule on a connection: its previously deployed
/// version again, or its removal if the current version was the first.
/// Approved like any change.
#[utoipa::path(post, path = "/v1/deployments/rollback", request_body = RollbackRequest,
    responses((status = 201, body = DeploymentView), (status = 404), (status = 409)))]
pub async fn rollback(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let new = deployments::rollback_request(
        &state.db,
        &user,
        req.rule_id,
        req.connection_id,
        req.message,
    )
    .await?;
    let d = deployments::request(&state, &user, new, None).await?;
    Ok((
        StatusCode::CREATED,
        Json(full_view(&state, user.tenant_id, d).await?),
    ))
}

/// Changes the items of a request awaiting approval (requester only); the
/// digest changes and earlier approvals stop counting.
#[utoipa::path(put, path = "/v1/deployments/{id}", params(("id" = Uuid, Path)), request_body = UpdateRequest,
    responses((status = 200, body = DeploymentView), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn update(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<UpdateRequest>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::update(&state.db, &user, id, &req.items, req.message.as_deref()).await?;
    Ok(Json(full_view(&state, user.tenant_id, d).await?))
}

/// Approves a deployment's current digest. The requester and the authors of
/// its versions get 403; a stale `digest` gets 409 `digest_changed`.
#[utoipa::path(post, path = "/v1/deployments/{id}/approve", params(("id" = Uuid, Path)), request_body = DecisionRequest,
    responses((status = 200, body = DeploymentView), (status = 403, description = "requester, author, or role without approval"), (status = 404), (status = 409)))]
pub async fn approve(
    State(state): State<AppState>,
    user: Auth<perm::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<DecisionRequest>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::decide(
        &state,
        &user,
        id,
        Decision::Approve,
        req.comment,
        req.digest,
        req.test_override,
    )
    .await?;
    Ok(Json(full_view(&state, user.tenant_id, d).await?))
}

/// Rejects a deployment for good (comment required). The requester and the
/// authors of its versions get 403, as for approve.
#[utoipa::path(post, path = "/v1/deployments/{id}/reject", params(("id" = Uuid, Path)), request_body = DecisionRequest,
    responses((status = 200, body = DeploymentView), (status = 400), (status = 403, description = "requester, author, or role without approval"), (status = 404), (status = 409)))]
pub async fn reject(
    State(state): State<AppState>,
    user: Auth<perm::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<DecisionRequest>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::decide(
        &state,
        &user,
        id,
        Decision::Reject,
        req.comment,
        req.digest,
        None,
    )
    .await?;
    Ok(Json(full_view(&state, user.tenant_id, d).await?))
}

/// Sends a deployment back to its requester (comment required). The
/// requester and the authors of its versions get 403, as for approve.
#[utoipa::path(post, path = "/v1/deployments/{id}/request-changes", params(("id" = Uuid, Path)), request_body = DecisionRequest,
    responses((status = 200, body = DeploymentView), (status = 400), (status = 403, description = "requester, author, or role without approval"), (status = 404), (status = 409)))]
pub async fn request_changes(
    State(state): State<AppState>,
    user: Auth<perm::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<DecisionRequest>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::decide(
        &state,
        &user,
        id,
        Decision::RequestChanges,
        req.comment,
        req.digest,
        None,
    )
    .await?;
    Ok(Json(full_view(&state, user.tenant_id, d).await?))
}

/// A withdrawal by the requester.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    /// Why (optional).
    pub comment: Option<String>,
}

/// Withdraws a request awaiting a decision; its requester only (who may
/// not reject it: reviewers decide, requesters withdraw).
#[utoipa::path(post, path = "/v1/deployments/{id}/withdraw", params(("id" = Uuid, Path)), request_body = WithdrawRequest,
    responses((status = 200, body = DeploymentView), (status = 403, description = "not the requester"), (status = 404), (status = 409)))]
pub async fn withdraw(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<WithdrawRequest>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::withdraw(&state.db, &user, id, req.comment).await?;
    Ok(Json(full_view(&state, user.tenant_id, d).await?))
}

/// Asks the agent for a new preview count of a request awaiting a
/// decision: per `deploy` item, what the rule's query matches on the SIEM's
/// data over the last 24 h (the expected alert volume). The answer arrives
/// in the items' `preview`.
#[utoipa::path(post, path = "/v1/deployments/{id}/preview", params(("id" = Uuid, Path)),
    responses((status = 202, body = DeploymentView), (status = 404), (status = 409)))]
pub async fn preview(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let d = deployments::preview(&state, &user, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(full_view(&state, user.tenant_id, d).await?),
    ))
}

/// A sign-off.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SignOffRequest {
    /// Comment.
    pub comment: Option<String>,
}

/// Signs off the review of a breakglass deployment (an Admin other than the
/// one who deployed).
#[utoipa::path(post, path = "/v1/deployments/{id}/sign-off", params(("id" = Uuid, Path)), request_body = SignOffRequest,
    responses((status = 200, body = ReviewView), (status = 403), (status = 404), (status = 409)))]
pub async fn sign_off(
    State(state): State<AppState>,
    user: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<SignOffRequest>,
) -> ApiResult<Json<ReviewView>> {
    Ok(Json(
        deployments::sign_off(&state.db, &user, id, req.comment)
            .await?
            .into(),
    ))
}

/// Breakglass reviews, open ones first.
#[utoipa::path(get, path = "/v1/breakglass-reviews", responses((status = 200, body = [ReviewView])))]
pub async fn list_reviews(
    State(state): State<AppState>,
    user: Auth<perm::Administer>,
) -> ApiResult<Json<Vec<ReviewView>>> {
    Ok(Json(
        deployments::reviews(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// A notice for the tenant's Admins.
#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    /// Id.
    pub id: Uuid,
    /// `breakglass`.
    pub kind: String,
    /// The deployment it is about.
    pub deployment_id: Option<Uuid>,
    /// Text.
    pub message: String,
    /// Who caused it.
    pub created_by: Uuid,
    /// When (RFC 3339).
    pub created_at: String,
}

impl From<notification::Model> for NotificationView {
    fn from(n: notification::Model) -> Self {
        NotificationView {
            id: n.id,
            kind: n.kind,
            deployment_id: n.deployment_id,
            message: n.message,
            created_by: n.created_by,
            created_at: rfc3339(n.created_at),
        }
    }
}

/// Notifications every Admin sees, newest first.
#[utoipa::path(get, path = "/v1/notifications", responses((status = 200, body = [NotificationView])))]
pub async fn list_notifications(
    State(state): State<AppState>,
    user: Auth<perm::Administer>,
) -> ApiResult<Json<Vec<NotificationView>>> {
    Ok(Json(
        deployments::notifications(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// The tenant's approval policy.
#[derive(Serialize, ToSchema)]
pub struct ApprovalPolicy {
    /// Distinct approvers a deployment needs (1 to 10, default 1).
    pub min_approvers: i32,
    /// A rule version with no test cases cannot be approved for deployment
    /// (an Admin may override with a reason). Default `false`.
    pub require_tests: bool,
}

/// A change to the approval policy: the fields given change, the others stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicyUpdate {
    /// Distinct approvers a deployment needs (1 to 10).
    pub min_approvers: Option<i32>,
    /// Require test cases on every version deployed.
    pub require_tests: Option<bool>,
}

impl From<crate::db::entity::tenant::Model> for ApprovalPolicy {
    fn from(t: crate::db::entity::tenant::Model) -> Self {
        ApprovalPolicy {
            min_approvers: t.min_approvers.max(1),
            require_tests: t.require_tests,
        }
    }
}

/// The tenant's approval policy.
#[utoipa::path(get, path = "/v1/approval-policy", responses((status = 200, body = ApprovalPolicy)))]
pub async fn show_policy(
    State(state): State<AppState>,
    user: Auth<perm::View>,
) -> ApiResult<Json<ApprovalPolicy>> {
    Ok(Json(
        deployments::approval_policy(&state.db, user.tenant_id)
            .await?
            .into(),
    ))
}

/// Sets the tenant's approval policy, the fields given (each change audited).
#[utoipa::path(put, path = "/v1/approval-policy", request_body = ApprovalPolicyUpdate,
    responses((status = 200, body = ApprovalPolicy), (status = 400)))]
pub async fn set_policy(
    State(state): State<AppState>,
    user: Auth<perm::Administer>,
    ApiJson(req): ApiJson<ApprovalPolicyUpdate>,
) -> ApiResult<Json<ApprovalPolicy>> {
    Ok(Json(
        deployments::set_approval_policy(&state.db, &user, req.min_approvers, req.require_tests)
            .await?
            .into(),
    ))
}

/// A rule as deployed on a connection, with its drift state.
#[derive(Serialize, ToSchema)]
pub struct DeployedRuleView {
    /// Rule.
    pub rule_id: Uuid,
    /// Connection.
    pub connection_id: Uuid,
    /// Version deployed.
    pub version: i32,
    /// Deployed with alerting off.
    pub monitoring: bool,
    /// `deployed`, `drift_detected`, `removed` or `archived`.
    pub state: String,
    /// Hex hash Picket expects.
    pub expected_hash: Option<String>,
    /// Hex hash found by the last drift check that saw a difference (`None`: missing).
    pub found_hash: Option<String>,
    /// Last drift check (RFC 3339).
    pub checked_at: Option<String>,
    /// For `drift_detected`: the rule as the SIEM holds it, normalized by
    /// the agent (`title`, `description`, `severity`, `query`, `schedule`,
    /// `monitoring`, `enabled`), what `accept_remote` would record; absent
    /// when missing or not returned.
    #[schema(value_type = Option<Object>)]
    pub remote: Option<serde_json::Value>,
}

impl From<rule_deployment::Model> for DeployedRuleView {
    fn from(r: rule_deployment::Model) -> Self {
        DeployedRuleView {
            rule_id: r.rule_id,
            connection_id: r.connection_id,
            version: r.version,
            monitoring: r.monitoring,
            state: r.state,
            expected_hash: r.content_hash,
            found_hash: r.drift_hash,
            checked_at: r.drift_checked_at.map(rfc3339),
            remote: r
                .remote_content
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
        }
    }
}

/// Every rule deployed through Picket (not removed) with its drift state:
/// `deployed`, `drift_detected` (needs a resolution) or `archived`.
#[utoipa::path(get, path = "/v1/drift", responses((status = 200, body = [DeployedRuleView])))]
pub async fn list_drift(
    State(state): State<AppState>,
    user: Auth<perm::View>,
) -> ApiResult<Json<Vec<DeployedRuleView>>> {
    Ok(Json(
        drift::list(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// How to resolve a drift.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The connection (required).
    pub connection_id: Option<Uuid>,
    /// `redeploy`, `archive` or `accept_remote` (required).
    pub resolution: Option<Resolution>,
    /// Message for a redeploy request.
    #[serde(default)]
    pub message: String,
}

/// What a resolution did.
#[derive(Serialize, ToSchema)]
pub struct ResolveView {
    /// The rule's state on the connection now.
    pub state: String,
    /// The redeploy request, awaiting approval.
    pub deployment: Option<DeploymentView>,
    /// The version recorded from the SIEM (`accept_remote`).
    pub version: Option<super::rules::VersionView>,
}

/// Resolves a drifted rule: `redeploy` (a new request, approved like any
/// change), `archive` (stop tracking) or `accept_remote` (the SIEM's content
/// becomes the next version, authored by the system, and the deployed one).
#[utoipa::path(post, path = "/v1/rules/{id}/drift/resolve", params(("id" = Uuid, Path)), request_body = ResolveRequest,
    responses((status = 200, body = ResolveView), (status = 400), (status = 404), (status = 409), (status = 422, description = "accept_remote: the SIEM's content is not a valid rule")))]
pub async fn resolve_drift(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<ResolveRequest>,
) -> ApiResult<Json<ResolveView>> {
    // The rule first: another tenant's id is a 404 whatever the body says.
    user.scope()
        .get::<crate::db::entity::rule::Entity>(&state.db, id, "rule")
        .await?;
    let (Some(connection_id), Some(resolution)) = (req.connection_id, req.resolution) else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "connection_id and resolution are required",
        ));
    };
    let done = drift::resolve(&state, &user, id, connection_id, resolution, req.message).await?;
    let st = deployments::current(&state.db, user.tenant_id, id, connection_id)
        .await?
        .map(|r| r.state)
        .unwrap_or_default();
    let (deployment, version) = match done {
        drift::Resolved::Request(d) => (Some(full_view(&state, user.tenant_id, d).await?), None),
        drift::Resolved::Version(v) => (None, Some(v.into())),
        drift::Resolved::Archived => (None, None),
    };
    Ok(Json(ResolveView {
        state: st,
        deployment,
        version,
    }))
}

/// A drift check sent.
#[derive(Serialize, ToSchema)]
pub struct DriftCheckView {
    /// The job, or `None` when nothing is deployed on the connection.
    pub job_id: Option<Uuid>,
}

/// Sends a drift check to a connection now (the scheduler does it every
/// `jobs.drift_check_interval_secs`).
#[utoipa::path(post, path = "/v1/connections/{id}/drift-check", params(("id" = Uuid, Path)),
    responses((status = 202, body = DriftCheckView), (status = 404)))]
pub async fn drift_check(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<DriftCheckView>)> {
    let job_id = drift::check_connection(&state, user.tenant_id, id).await?;
    Ok((StatusCode::ACCEPTED, Json(DriftCheckView { job_id })))
}

/// One deployment with its items, decisions and review.
#[utoipa::path(get, path = "/v1/deployments/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = DeploymentView), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DeploymentView>> {
    let d = deployments::get(&state.db, user.tenant_id, id).await?;
    Ok(Json(full_view(&state, user.tenant_id, d).await?))
}

/// Paging for lists.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// At most this many (default 100, max 1000).
    pub limit: Option<u64>,
}

/// Deployments of the tenant, newest first, with their items.
#[utoipa::path(get, path = "/v1/deployments", params(ListParams), responses((status = 200, body = [DeploymentView])))]
pub async fn list(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<Vec<DeploymentView>>> {
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let ds = deployments::list(&state.db, user.tenant_id, limit).await?;
    let ids: Vec<Uuid> = ds.iter().map(|d| d.id).collect();
    // One query for every item (not one per deployment).
    let mut all = user
        .scope()
        .find::<deployment_item::Entity>()
        .filter(deployment_item::Column::DeploymentId.is_in(ids))
        .order_by_asc(deployment_item::Column::Position)
        .all(&state.db)
        .await?;
    Ok(Json(
        ds.into_iter()
            .map(|d| {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    all.drain(..).partition(|i| i.deployment_id == d.id);
                all = rest;
                view(d, mine, vec![], None)
            })
            .collect(),
    ))
}
