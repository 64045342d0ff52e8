//! Rules, their immutable versions, diffs between versions, rules as files
//! (import/export) and test runs.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use picket_proto::Severity;
use picket_rules::{Diagnostic, FileSchedule, Language, SiemKind, TestCase};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath, ApiQuery, MAX_BODY_BYTES};
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::db::entity::{rule, rule_test_run, rule_version};
use crate::error::{ApiError, ApiResult};
use crate::service::rules::{self, CaseResult, ImportOutcome, RuleContent, VersionDiff};
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rules", post(create).get(list))
        .route("/v1/rules/import", post(import))
        .route("/v1/rules/{id}", get(show))
        .route("/v1/rules/{id}/versions", post(add_version))
        .route("/v1/rules/{id}/diff", get(diff))
        .route("/v1/rules/{id}/export", get(export))
        .route(
            "/v1/rules/{id}/test-runs",
            post(start_test_run).get(test_runs),
        )
}

/// Rule content: every save creates a new immutable version.
///
/// The schedule is either `cron` (+ `earliest`, `latest`) or, in the SIEM's
/// own form, `frequency` + `lookback` (Sentinel: ISO 8601 such as `PT5M`,
/// `PT1H`; Elastic: `5m`, `now-6m`), which is stored as the equivalent cron.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    /// Title (also the rule's name).
    pub title: String,
    /// Target SIEM (`splunk`, `sentinel`, `elastic`); only when creating;
    /// `splunk` if absent. A new version keeps the rule's SIEM.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub siem_kind: Option<SiemKind>,
    /// Query language (`spl`, `kql`, `kuery`, `eql`, `esql`); the SIEM's usual one if absent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub language: Option<Language>,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Severity: info, low, medium, high, critical.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// The query.
    pub query: String,
    /// Five-field cron schedule, e.g. `*/5 * * * *`.
    #[serde(default)]
    pub cron: Option<String>,
    /// Window start, e.g. `-5m` (default `-5m`).
    #[serde(default)]
    pub earliest: Option<String>,
    /// Window end (default `now`).
    #[serde(default)]
    pub latest: Option<String>,
    /// Native frequency (instead of `cron`).
    #[serde(default)]
    pub frequency: Option<String>,
    /// Native lookback (with `frequency`).
    #[serde(default)]
    pub lookback: Option<String>,
    /// MITRE ATT&CK technique ids, e.g. `T1059`, `T1059.001`.
    #[serde(default)]
    pub mitre: Vec<String>,
    /// Test cases: `{name, expect: match|no_match, events: [{field: value}]}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub tests: Vec<TestCase>,
}

impl RuleRequest {
    fn content(self, kind: SiemKind) -> ApiResult<RuleContent> {
        let schedule = picket_rules::canonical_schedule(
            kind,
            &FileSchedule {
                cron: self.cron,
                earliest: self.earliest,
                latest: self.latest,
                frequency: self.frequency,
                lookback: self.lookback,
            },
        )
        .map_err(|details| ApiError::Unprocessable {
            code: "invalid_rule",
            message: details.first().map(ToString::to_string).unwrap_or_default(),
            details,
        })?;
        Ok(RuleContent {
            title: self.title,
            description: self.description,
            severity: self.severity,
            language: self.language,
            query: self.query,
            schedule,
            mitre: self.mitre,
            tests: self.tests,
        })
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
    /// Query language.
    pub language: String,
    /// Query.
    pub query: String,
    /// Cron schedule.
    pub cron: String,
    /// Window start.
    pub earliest: String,
    /// Window end.
    pub latest: String,
    /// ATT&CK technique ids.
    pub mitre: Vec<String>,
    /// Test cases.
    #[schema(value_type = Vec<Object>)]
    pub tests: Vec<TestCase>,
    /// Validation warnings given when this version was saved.
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<serde_json::Value>,
    /// Author (the nil id for a version no person wrote: see `origin`).
    pub author_id: Uuid,
    /// Where a version no person wrote came from (`accepted from SIEM
    /// (connection …) by user …`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
}

impl From<rule_version::Model> for VersionView {
    fn from(v: rule_version::Model) -> Self {
        VersionView {
            id: v.id,
            version: v.version,
            mitre: rules::version_mitre(&v),
            tests: rules::version_tests(&v),
            warnings: serde_json::from_str(&v.warnings).unwrap_or_default(),
            title: v.title,
            description: v.description,
            severity: v.severity,
            language: v.language,
            query: v.query,
            cron: v.cron,
            earliest: v.earliest,
            latest: v.latest,
            author_id: v.author_id,
            origin: v.origin,
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
#[utoipa::path(post, path = "/v1/rules", request_body = RuleRequest,
    responses((status = 201, body = RuleView), (status = 400), (status = 422, description = "validation errors, each with field, line, column, code, message")))]
pub async fn create(
    State(state): State<AppState>,
    user: Auth<perm::Author>,
    ApiJson(req): ApiJson<RuleRequest>,
) -> ApiResult<(StatusCode, Json<RuleView>)> {
    let kind = req.siem_kind.unwrap_or(SiemKind::Splunk);
    let content = req.content(kind)?;
    let (r, v) = rules::create(&state.db, &user, kind, content).await?;
    Ok((StatusCode::CREATED, Json(rule_view(r, vec![v]))))
}

/// Adds a version to a rule.
#[utoipa::path(post, path = "/v1/rules/{id}/versions", params(("id" = Uuid, Path)), request_body = RuleRequest,
    responses((status = 201, body = VersionView), (status = 400), (status = 404), (status = 422)))]
pub async fn add_version(
    State(state): State<AppState>,
    user: Auth<perm::Author>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RuleRequest>,
) -> ApiResult<(StatusCode, Json<VersionView>)> {
    let (r, _) = rules::get(&state.db, user.tenant_id, id).await?;
    let kind = rules::rule_kind(&r);
    if req.siem_kind.is_some_and(|k| k != kind) {
        return Err(ApiError::conflict(
            "siem_mismatch",
            format!(
                "this rule targets {}; a version cannot change the SIEM (create a new rule)",
                kind.as_str()
            ),
        ));
    }
    let content = req.content(kind)?;
    let v = rules::add_version(&state.db, &user, id, content).await?;
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

/// The two versions to compare.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Older version number; the one before `to` if absent.
    #[serde(default)]
    pub from: Option<i32>,
    /// Newer version number; the latest if absent.
    #[serde(default)]
    pub to: Option<i32>,
}

/// Line diff of the query and field diff of the metadata between two versions.
#[utoipa::path(get, path = "/v1/rules/{id}/diff", params(("id" = Uuid, Path), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 404)))]
pub async fn diff(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<VersionDiff>> {
    let (r, _) = rules::get(&state.db, user.tenant_id, id).await?;
    let to = q.to.unwrap_or(r.latest_version);
    let from = q.from.unwrap_or((to - 1).max(1));
    let a = rules::version(&state.db, user.tenant_id, id, from).await?;
    let b = rules::version(&state.db, user.tenant_id, id, to).await?;
    Ok(Json(rules::diff(&a, &b)))
}

/// Which version to export.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Version number; the latest if absent.
    #[serde(default)]
    pub version: Option<i32>,
}

/// One version as a rule file (TOML, with its tests).
#[utoipa::path(get, path = "/v1/rules/{id}/export", params(("id" = Uuid, Path), ExportQuery),
    responses((status = 200, content_type = "application/toml", body = String), (status = 404)))]
pub async fn export(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<impl IntoResponse> {
    let (r, _) = rules::get(&state.db, user.tenant_id, id).await?;
    let v = rules::version(
        &state.db,
        user.tenant_id,
        id,
        q.version.unwrap_or(r.latest_version),
    )
    .await?;
    let text = rules::export(&r, &v)?;
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        text,
    ))
}

/// What an import did.
#[derive(Serialize, ToSchema)]
pub struct ImportView {
    /// `created`, `new_version` or `unchanged`.
    pub outcome: ImportOutcome,
    /// The rule.
    pub rule_id: Uuid,
    /// The version now latest.
    pub version: VersionView,
    /// Validation warnings of the imported content.
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<Diagnostic>,
}

/// Imports one rule file (TOML body, at most 256 KiB): creates a rule, or
/// adds a version to the rule named by the file's `id` (nothing when it is
/// unchanged).
#[utoipa::path(post, path = "/v1/rules/import", request_body(content = String, content_type = "application/toml"),
    responses((status = 201, body = ImportView), (status = 200, body = ImportView, description = "unchanged"),
        (status = 400), (status = 404), (status = 409), (status = 422)))]
pub async fn import(
    State(state): State<AppState>,
    user: Auth<perm::Author>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<ImportView>)> {
    let body = body.map_err(|_| {
        ApiError::bad_request(
            "body_too_large",
            format!("request body must be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_rule_file",
            format!(
                "a rule file must be UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let (outcome, r, v, warnings) = rules::import(&state.db, &user, text).await?;
    let status = if outcome == ImportOutcome::Unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(ImportView {
            outcome,
            rule_id: r.id,
            version: v.into(),
            warnings,
        }),
    ))
}

/// Which version to test, where.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRunRequest {
    /// Version number.
    pub version: i32,
    /// The SIEM connection whose agent injects and counts the test events.
    pub connection_id: Uuid,
}

/// One test run of a rule version.
#[derive(Serialize, ToSchema)]
pub struct TestRunView {
    /// Run id.
    pub id: Uuid,
    /// The rule.
    pub rule_id: Uuid,
    /// Version tested.
    pub version: i32,
    /// Connection it ran on.
    pub connection_id: Uuid,
    /// The `test_rule` job.
    pub job_id: Option<Uuid>,
    /// `queued`, `passed`, `failed` or `error`.
    pub status: String,
    /// Why the agent could not run it (an error class), for `error`.
    pub error_class: Option<String>,
    /// Per case: name, expectation, events matched, passed.
    pub cases: Vec<CaseResult>,
    /// Who started it.
    pub requested_by: Uuid,
    /// Started (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl From<rule_test_run::Model> for TestRunView {
    fn from(r: rule_test_run::Model) -> Self {
        TestRunView {
            id: r.id,
            rule_id: r.rule_id,
            version: r.version,
            connection_id: r.connection_id,
            job_id: r.job_id,
            status: r.status,
            error_class: r.error_class,
            cases: serde_json::from_str(&r.results).unwrap_or_default(),
            requested_by: r.requested_by,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

/// Runs a version's tests on a connection (a `test_rule` job to its agent).
#[utoipa::path(post, path = "/v1/rules/{id}/test-runs", params(("id" = Uuid, Path)), request_body = TestRunRequest,
    responses((status = 201, body = TestRunView), (status = 404), (status = 409), (status = 422)))]
pub async fn start_test_run(
    State(state): State<AppState>,
    user: Auth<perm::Author>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<TestRunRequest>,
) -> ApiResult<(StatusCode, Json<TestRunView>)> {
    let run = rules::start_test_run(&state, &user, id, req.version, req.connection_id).await?;
    Ok((StatusCode::CREATED, Json(run.into())))
}

/// Filter of test runs.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TestRunsQuery {
    /// Only this version's runs.
    #[serde(default)]
    pub version: Option<i32>,
}

/// Test runs of a rule, newest first (at most 200).
#[utoipa::path(get, path = "/v1/rules/{id}/test-runs", params(("id" = Uuid, Path), TestRunsQuery),
    responses((status = 200, body = [TestRunView]), (status = 404)))]
pub async fn test_runs(
    State(state): State<AppState>,
    user: Auth<perm::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<TestRunsQuery>,
) -> ApiResult<Json<Vec<TestRunView>>> {
    let runs = rules::test_runs(&state.db, user.tenant_id, id, q.version).await?;
    Ok(Json(runs.into_iter().map(Into::into).collect()))
}
