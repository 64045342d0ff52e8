//! Rules and their immutable versions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use picket_proto::Severity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::{rule, rule_version};
use crate::error::ApiResult;
use crate::service::rules::{self, RuleContent};
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rules", post(create).get(list))
        .route("/v1/rules/{id}", get(show))
        .route("/v1/rules/{id}/versions", post(add_version))
}

/// Rule content: every save creates a new immutable version.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// Title (also the rule's name).
    pub title: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Severity: info, low, medium, high, critical.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// The SPL query.
    pub query: String,
    /// Five-field cron schedule, e.g. `*/5 * * * *`.
    pub cron: String,
    /// Window start, e.g. `-5m`.
    #[serde(default = "default_earliest")]
    pub earliest: String,
    /// Window end, e.g. `now`.
    #[serde(default = "default_latest")]
    pub latest: String,
}

fn default_earliest() -> String {
    "-5m".into()
}
fn default_latest() -> String {
    "now".into()
}

impl From<RuleRequest> for RuleContent {
    fn from(r: RuleRequest) -> Self {
        RuleContent {
            title: r.title,
            description: r.description,
            severity: r.severity,
            query: r.query,
            cron: r.cron,
            earliest: r.earliest,
            latest: r.latest,
        }
    }
}

/// One version.
#[derive(Serialize, ToSchema)]
pub struct VersionView {
    /// Version id.
    pub id: Uuid,
    /// Version number.
    pub version: i32,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Severity.
    pub severity: String,
    /// Query.
    pub query: String,
    /// Cron schedule.
    pub cron: String,
    /// Window start.
    pub earliest: String,
    /// Window end.
    pub latest: String,
    /// Author.
    pub author_id: Uuid,
    /// Created (RFC 3339).
    pub created_at: String,
}

impl From<rule_version::Model> for VersionView {
    fn from(v: rule_version::Model) -> Self {
        VersionView {
            id: v.id,
            version: v.version,
            title: v.title,
            description: v.description,
            severity: v.severity,
            query: v.query,
            cron: v.cron,
            earliest: v.earliest,
            latest: v.latest,
            author_id: v.author_id,
            created_at: rfc3339(v.created_at),
        }
    }
}

/// A rule with its versions (newest first).
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    /// Rule id.
    pub id: Uuid,
    /// Name (title of the latest version).
    pub name: String,
    /// Target SIEM kind.
    pub siem_kind: String,
    /// Latest version number.
    pub latest_version: i32,
    /// Versions, newest first (empty in lists).
    pub versions: Vec<VersionView>,
}

fn rule_view(r: rule::Model, versions: Vec<rule_version::Model>) -> RuleView {
    RuleView {
        id: r.id,
        name: r.name,
        siem_kind: r.siem_kind,
        latest_version: r.latest_version,
        versions: versions.into_iter().map(Into::into).collect(),
    }
}

/// Creates a rule with version 1.
#[utoipa::path(post, path = "/v1/rules", request_body = RuleRequest, responses((status = 201, body = RuleView), (status = 400)))]
pub async fn create(
    State(state): State<AppState>,
    user: Auth<perm::Author>,
    ApiJson(req): ApiJson<RuleRequest>,
) -> ApiResult<(StatusCode, Json<RuleView>)> {
    let (r, v) = rules::create(&state.db, &user, req.into()).await?;
    Ok((StatusCode::CREATED, Json(rule_view(r, vec![v]))))
}

/// Adds a version to a rule.
#[utoipa::path(post, path = "/v1/rules/{id}/versions", params(("id" = Uuid, Path)), request_body = RuleRequest,
    responses((status = 201, body = VersionView), (status = 400), (status = 404)))]
pub async fn add_version(
    State(state): State<AppState>,
    user: Auth<perm::Author>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RuleRequest>,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let v = rules::add_version(&state.db, &user, id, req.into()).await?;
    Ok((StatusCode::CREATED, Json(v.into())))
}

/// One rule with its versions.
#[utoipa::path(get, path = "/v1/rules/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = RuleView), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RuleView>> {
    let (r, vs) = rules::get(&state.db, user.tenant_id, id).await?;
    Ok(Json(rule_view(r, vs)))
}

/// Rules of the tenant.
#[utoipa::path(get, path = "/v1/rules", responses((status = 200, body = [RuleView])))]
pub async fn list(
    State(state): State<AppState>,
    user: Auth<perm::View>,
) -> ApiResult<Json<Vec<RuleView>>> {
    Ok(Json(
        rules::list(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .map(|r| rule_view(r, vec![]))
            .collect(),
    ))
}
