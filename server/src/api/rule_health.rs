//! Per-rule health: the numbers `rule_health` jobs read from the SIEMs, and
//! a way to ask for them now.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJsonOrEmpty, ApiPath, ApiQuery};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::rule_health_sample;
use crate::error::{ApiError, ApiResult};
use crate::service::rule_health;
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rules/{id}/health", get(show))
        .route("/v1/connections/{id}/rule-health", post(check_now))
}

/// One rule's health on one connection over one window, as the SIEM's own
/// run records give it (docs/connectors.md says how per SIEM). Numbers only.
#[derive(Serialize, ToSchema)]
pub struct RuleHealthSampleView {
    /// The connection.
    pub connection_id: Uuid,
    /// The `rule_health` job that read it.
    pub job_id: Uuid,
    /// When the server stored it (RFC 3339); the window ends about then.
    pub taken_at: String,
    /// Length of the window, seconds.
    pub window_secs: i64,
    /// Why the numbers could not be read (e.g. `not_found`: the rule is
    /// missing on the SIEM); the counts are then 0.
    pub error_class: Option<String>,
    /// Runs that succeeded in the window.
    pub runs_succeeded: i64,
    /// Runs that failed in the window.
    pub runs_failed: i64,
    /// Runs skipped (Splunk) or partly done (Sentinel, Elastic) in the window.
    pub runs_skipped: i64,
    /// Results the successful runs returned, where the SIEM reports it.
    pub results_total: Option<i64>,
    /// Alerts the rule raised, where the SIEM reports it.
    pub alerts_fired: Option<i64>,
    /// The last run the SIEM reports (RFC 3339).
    pub last_run_at: Option<String>,
    /// Duration of the last run, milliseconds, where the SIEM reports it.
    pub last_run_duration_ms: Option<i64>,
    /// Time the last run left uncovered (Elastic's gap), milliseconds.
    pub gap_ms: Option<i64>,
}

impl From<rule_health_sample::Model> for RuleHealthSampleView {
    fn from(s: rule_health_sample::Model) -> Self {
        RuleHealthSampleView {
            connection_id: s.connection_id,
            job_id: s.job_id,
            taken_at: rfc3339(s.taken_at),
            window_secs: s.window_secs,
            error_class: s.error_class,
            runs_succeeded: s.runs_succeeded,
            runs_failed: s.runs_failed,
            runs_skipped: s.runs_skipped,
            results_total: s.results_total,
            alerts_fired: s.alerts_fired,
            last_run_at: s.last_run_at.map(rfc3339),
            last_run_duration_ms: s.last_run_duration_ms,
            gap_ms: s.gap_ms,
        }
    }
}

/// A rule's health: the newest sample per connection, and the history.
#[derive(Serialize, ToSchema)]
pub struct RuleHealthView {
    /// The rule.
    pub rule_id: Uuid,
    /// The newest sample on each connection the rule is deployed on.
    pub latest: Vec<RuleHealthSampleView>,
    /// Samples, newest first (at most `limit`).
    pub history: Vec<RuleHealthSampleView>,
}

/// Which samples to show.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HealthParams {
    /// Only this connection.
    pub connection_id: Option<Uuid>,
    /// At most this many history samples (default 100, 1 to 1000).
    pub limit: Option<u64>,
}

/// A rule's health per connection, from the SIEMs' run records.
#[utoipa::path(get, path = "/v1/rules/{id}/health", params(("id" = Uuid, Path), HealthParams),
    responses((status = 200, body = RuleHealthView), (status = 400), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(p): ApiQuery<HealthParams>,
) -> ApiResult<Json<RuleHealthView>> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 1000",
        ));
    }
    let history =
        rule_health::history(&state.db, user.tenant_id, id, p.connection_id, limit).await?;
    let latest = rule_health::latest(&state.db, user.tenant_id, id, p.connection_id).await?;
    Ok(Json(RuleHealthView {
        rule_id: id,
        latest: latest.into_iter().map(Into::into).collect(),
        history: history.into_iter().map(Into::into).collect(),
    }))
}

/// The window of a rule health check asked for now.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Seconds back from when the agent runs it (60 to 604800; default
    /// `jobs.rule_health_interval_secs`).
    pub window_secs: Option<u32>,
}

/// Rule health checks sent.
#[derive(Serialize, ToSchema)]
pub struct CheckView {
    /// One job per 100 deployed rules; empty when no rule is deployed there.
    pub job_ids: Vec<Uuid>,
}

/// Sends a rule health check to a connection now (the scheduler does it every
/// `jobs.rule_health_interval_secs`).
#[utoipa::path(post, path = "/v1/connections/{id}/rule-health", params(("id" = Uuid, Path)),
    request_body(content = CheckRequest, description = "optional"),
    responses((status = 202, body = CheckView), (status = 400), (status = 404), (status = 409)))]
pub async fn check_now(
    State(state): State<AppState>,
    user: Auth<perm::RequestDeployment>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<CheckRequest>,
) -> ApiResult<(StatusCode, Json<CheckView>)> {
    let window = match req.window_secs {
        None => rule_health::window_for(state.config.rule_health_interval_secs),
        Some(w) if (60..=picket_proto::health::MAX_RULE_HEALTH_WINDOW_SECS).contains(&w) => w,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_window",
                "window_secs must be 60 to 604800",
            ));
        }
    };
    let job_ids = rule_health::check_connection(&state, user.tenant_id, id, window).await?;
    Ok((StatusCode::ACCEPTED, Json(CheckView { job_ids })))
}
