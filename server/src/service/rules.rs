//! Rules and their immutable versions. An edit never changes a version; it
//! adds one. Every save is validated by `picket_rules` (the same pure
//! function a team can run offline): errors refuse the save with a 422 that
//! lists each finding with its line and column; warnings are stored with the
//! version and returned.
//!
//! Also here: diffs between versions, rules as files (import/export), and
//! the test gate that deployment approvals call ([`tests_gate`]).

use picket_proto::Severity;
use picket_rules::{Diagnostic, Language, Report, RuleDraft, Schedule, SiemKind, TestCase};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
    Set, TransactionTrait as _,
};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::auth::CurrentUser;
use crate::db::entity::{rule, rule_test_run, rule_version};
use crate::error::{ApiError, ApiResult};
use crate::service::scope::TenantScope;
use crate::service::validate;
use crate::time::unix_now;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = picket_rules::MAX_QUERY_BYTES;

/// The content of a rule version.
#[derive(Debug, Clone)]
pub struct RuleContent {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// Query language; `None` means the SIEM's usual one.
    pub language: Option<Language>,
    /// The query, in `language`.
    pub query: String,
    /// Schedule, canonical form.
    pub schedule: Schedule,
    /// ATT&CK technique ids.
    pub mitre: Vec<String>,
    /// Positive and negative test cases.
    pub tests: Vec<TestCase>,
}

impl RuleContent {
    /// Checks bounds (400) and the rule itself (422 with every finding);
    /// returns the language used and the warnings to store.
    fn validate(&self, kind: SiemKind) -> ApiResult<(Language, Vec<Diagnostic>)> {
        validate::text("title", &self.title, 200)?;
        validate::optional_text("description", &self.description, 4000)?;
        let language = self.language.unwrap_or(kind.default_language());
        let mut report = picket_rules::validate(&RuleDraft {
            siem_kind: kind,
            language,
            title: &self.title,
            query: &self.query,
            schedule: &self.schedule,
            mitre: &self.mitre,
        });
        let mut test_errors = Vec::new();
        picket_rules::check_tests(&self.tests, &mut test_errors);
        for e in test_errors {
            report.error(e);
        }
        refuse_errors(report).map(|w| (language, w))
    }
}

/// The warnings of `report`, or a 422 listing its errors.
///
/// # Errors
/// [`ApiError::Unprocessable`] when the report has errors.
pub fn refuse_errors(report: Report) -> ApiResult<Vec<Diagnostic>> {
    if report.errors.is_empty() {
        return Ok(report.warnings);
    }
    let first = report
        .errors
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    Err(ApiError::Unprocessable {
        code: "invalid_rule",
        message: format!(
            "the rule has {} error(s); first: {first}",
            report.errors.len()
        ),
        details: report.errors,
    })
}

/// Parses a stored severity.
pub fn parse_severity(s: &str) -> Option<Severity> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// The stored kind of a rule (rows from before issue 6 are all Splunk).
pub fn rule_kind(r: &rule::Model) -> SiemKind {
    SiemKind::parse(&r.siem_kind).unwrap_or(SiemKind::Splunk)
}

fn json<T: Serialize>(v: &T) -> ApiResult<String> {
    serde_json::to_string(v).map_err(|e| ApiError::Internal(e.into()))
}

/// The test cases stored with a version.
pub fn version_tests(v: &rule_version::Model) -> Vec<TestCase> {
    serde_json::from_str(&v.tests).unwrap_or_default()
}

/// The ATT&CK tags stored with a version.
pub fn version_mitre(v: &rule_version::Model) -> Vec<String> {
    serde_json::from_str(&v.mitre).unwrap_or_default()
}

/// Creates a rule with its first version.
///
/// # Errors
/// 400 naming an invalid field; 422 listing every validation error.
pub async fn create(
    db: &DatabaseConnection,
    me: &CurrentUser,
    kind: SiemKind,
    c: RuleContent,
) -> ApiResult<(rule::Model, rule_version::Model)> {
    let checked = c.validate(kind)?;
    let txn = db.begin().await?;
    let (r, v) = create_in(&txn, me, kind, &c, checked).await?;
    txn.commit().await?;
    Ok((r, v))
}

async fn create_in(
    txn: &DatabaseTransaction,
    me: &CurrentUser,
    kind: SiemKind,
    c: &RuleContent,
    (language, warnings): (Language, Vec<Diagnostic>),
) -> ApiResult<(rule::Model, rule_version::Model)> {
    let r = rule::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(me.tenant_id),
        name: Set(c.title.clone()),
        siem_kind: Set(kind.as_str().into()),
        created_by: Set(me.id),
        created_at: Set(unix_now()),
        latest_version: Set(1),
    }
    .insert(txn)
    .await?;
    let v = insert_version(txn, &r, 1, (me.id, None), c, language, &warnings).await?;
    audit::record(
        txn,
        me.event("rule.create", "rule", r.id)
            .details(serde_json::json!({
                "version": 1, "siem_kind": kind.as_str(), "language": language.as_str(),
                "warnings": warnings.len(),
            })),
    )
    .await?;
    Ok((r, v))
}

async fn insert_version(
    txn: &DatabaseTransaction,
    r: &rule::Model,
    version: i32,
    (author, origin): (Uuid, Option<String>),
    c: &RuleContent,
    language: Language,
    warnings: &[Diagnostic],
) -> ApiResult<rule_version::Model> {
    Ok(rule_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        rule_id: Set(r.id),
        tenant_id: Set(r.tenant_id),
        version: Set(version),
        title: Set(c.title.clone()),
        description: Set(c.description.clone()),
        severity: Set(c.severity.as_str().to_owned()),
        query: Set(c.query.clone()),
        cron: Set(c.schedule.cron.clone()),
        earliest: Set(c.schedule.earliest.clone()),
        latest: Set(c.schedule.latest.clone()),
        author_id: Set(author),
        created_at: Set(unix_now()),
        language: Set(language.as_str().to_owned()),
        mitre: Set(json(&c.mitre)?),
        tests: Set(json(&c.tests)?),
        warnings: Set(json(&warnings)?),
        origin: Set(origin),
    }
    .insert(txn)
    .await?)
}

/// Adds a new version to a rule.
///
/// # Errors
/// 404 if the rule is not in this tenant; 400/422 on invalid content.
pub async fn add_version(
    db: &DatabaseConnection,
    me: &CurrentUser,
    rule_id: Uuid,
    c: RuleContent,
) -> ApiResult<rule_version::Model> {
    let txn = db.begin().await?;
    let r = me
        .scope()
        .get::<rule::Entity>(&txn, rule_id, "rule")
        .await?;
    let checked = c.validate(rule_kind(&r))?;
    let v = add_version_in(&txn, me, &r, &c, checked).await?;
    txn.commit().await?;
    Ok(v)
}

async fn add_version_in(
    txn: &DatabaseTransaction,
    me: &CurrentUser,
    r: &rule::Model,
    c: &RuleContent,
    (language, warnings): (Language, Vec<Diagnostic>),
) -> ApiResult<rule_version::Model> {
    let next = r.latest_version + 1;
    let v = insert_version(txn, r, next, (me.id, None), c, language, &warnings).await?;
    let mut am: rule::ActiveModel = r.clone().into();
    am.latest_version = Set(next);
    am.name = Set(c.title.clone());
    am.update(txn).await?;
    audit::record(
        txn,
        me.event("rule.version", "rule", r.id)
            .details(serde_json::json!({ "version": next, "warnings": warnings.len() })),
    )
    .await?;
    Ok(v)
}

/// The author recorded on versions no person wrote (accepted from a SIEM):
/// the nil id, which is no user's, so separation of duties never mistakes
/// it for anyone.
pub const SYSTEM_AUTHOR: Uuid = Uuid::nil();

/// The rule content "accept remote" records: the SIEM's normalized rule
/// (`remote`) over the deployed version `base`. What the SIEM does not hold
/// is kept from `base`: the ATT&CK tags, the tests, the title when the SIEM
/// keeps none, and the severity when the SIEM's scale cannot tell the two
/// apart (Splunk low/medium, Sentinel high/critical). The Elastic language
/// follows the query's form, as the agent picks the rule type from it.
///
/// # Errors
/// 422 `invalid_rule` for a schedule that does not convert.
pub fn remote_content(
    kind: SiemKind,
    base: &rule_version::Model,
    remote: &picket_proto::RemoteRule,
) -> ApiResult<RuleContent> {
    let s = &remote.schedule;
    let schedule = picket_rules::canonical_schedule(
        kind,
        &picket_rules::FileSchedule {
            cron: s.cron.clone(),
            earliest: s.earliest.clone(),
            latest: s.latest.clone(),
            frequency: s.frequency.clone(),
            lookback: s.lookback.clone(),
        },
    )
    .map_err(|details| ApiError::Unprocessable {
        code: "invalid_rule",
        message: details.first().map(ToString::to_string).unwrap_or_default(),
        details,
    })?;
    let base_severity = parse_severity(&base.severity).unwrap_or(remote.severity);
    let same_step = |a: Severity, b: Severity| {
        use Severity::{Critical, High, Low, Medium};
        a == b
            || match kind {
                SiemKind::Splunk => matches!((a, b), (Low, Medium) | (Medium, Low)),
                SiemKind::Sentinel => matches!((a, b), (High, Critical) | (Critical, High)),
                SiemKind::Elastic => false,
            }
    };
    let severity = if same_step(base_severity, remote.severity) {
        base_severity
    } else {
        remote.severity
    };
    let language = match kind {
        SiemKind::Elastic => Some(elastic_language(&remote.query)),
        _ => Language::parse(&base.language),
    };
    Ok(RuleContent {
        title: if remote.title.trim().is_empty() {
            base.title.clone()
        } else {
            remote.title.clone()
        },
        description: remote.description.clone(),
        severity,
        language,
        query: remote.query.clone(),
        schedule,
        mitre: version_mitre(base),
        tests: version_tests(base),
    })
}

/// The SIEM's content of a drifted rule as an unsaved version over `base`
/// (same rule, version number and author as `base`): what a diff against
/// the SIEM compares. `None` when it does not convert (its schedule).
pub fn remote_as_version(
    kind: SiemKind,
    base: &rule_version::Model,
    remote: &picket_proto::RemoteRule,
) -> Option<rule_version::Model> {
    let c = remote_content(kind, base, remote).ok()?;
    let language = c.language.unwrap_or(kind.default_language());
    Some(rule_version::Model {
        title: c.title,
        description: c.description,
        severity: c.severity.as_str().to_owned(),
        query: c.query,
        cron: c.schedule.cron,
        earliest: c.schedule.earliest,
        latest: c.schedule.latest,
        language: language.as_str().to_owned(),
        origin: Some("siem".into()),
        ..base.clone()
    })
}

/// The Elastic rule language of a query by its form (as the agent's Elastic
/// connector decides the rule type): `FROM …` is ES|QL, `<category> where`
/// or `sequence` is EQL, anything else Kibana KQL.
fn elastic_language(query: &str) -> Language {
    let lower = query.trim_start().to_ascii_lowercase();
    if lower.starts_with("from ") {
        return Language::Esql;
    }
    let mut words = lower.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    let category =
        !first.is_empty() && first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first == "sequence" || (category && second == "where") {
        Language::Eql
    } else {
        Language::Kuery
    }
}

/// Records the SIEM's content of a drifted rule as the rule's next version,
/// authored by [`SYSTEM_AUTHOR`] with `origin` "accepted from SIEM ...",
/// validated like any save, in `txn`. Returns the new version.
///
/// # Errors
/// 422 `invalid_remote_rule` listing the findings when the SIEM's content is
/// not a valid rule (nothing is written); 400 for a title or description
/// over its bound; storage failures.
pub async fn accept_remote_in(
    txn: &DatabaseTransaction,
    me: &CurrentUser,
    r: &rule::Model,
    base: &rule_version::Model,
    remote: &picket_proto::RemoteRule,
    connection_id: Uuid,
) -> ApiResult<rule_version::Model> {
    let kind = rule_kind(r);
    let invalid = |e: ApiError| match e {
        ApiError::Unprocessable {
            message, details, ..
        } => ApiError::Unprocessable {
            code: "invalid_remote_rule",
            message: format!(
                "the SIEM's version of this rule is not a valid rule, so it was not recorded: {message}; redeploy ours or archive"
            ),
            details,
        },
        other => other,
    };
    let c = remote_content(kind, base, remote).map_err(invalid)?;
    let (language, warnings) = c.validate(kind).map_err(invalid)?;
    let next = r.latest_version + 1;
    let origin = format!(
        "accepted from SIEM (connection {connection_id}) by user {}",
        me.id
    );
    let v = insert_version(
        txn,
        r,
        next,
        (SYSTEM_AUTHOR, Some(origin.clone())),
        &c,
        language,
        &warnings,
    )
    .await?;
    let mut am: rule::ActiveModel = r.clone().into();
    am.latest_version = Set(next);
    am.name = Set(c.title.clone());
    am.update(txn).await?;
    audit::record(
        txn,
        me.event("rule.version", "rule", r.id)
            .details(serde_json::json!({
                "version": next, "warnings": warnings.len(),
                "author": "system", "origin": origin,
            })),
    )
    .await?;
    Ok(v)
}

/// A rule with all its versions, newest first.
///
/// # Errors
/// 404 if the rule is not in this tenant.
pub async fn get(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    rule_id: Uuid,
) -> ApiResult<(rule::Model, Vec<rule_version::Model>)> {
    let r = TenantScope::new(tenant_id)
        .find::<rule::Entity>()
        .filter(rule::Column::Id.eq(rule_id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    let versions = TenantScope::new(tenant_id)
        .find::<rule_version::Entity>()
        .filter(rule_version::Column::RuleId.eq(rule_id))
        .order_by_desc(rule_version::Column::Version)
        .all(db)
        .await?;
    Ok((r, versions))
}

/// One version of a rule by number.
///
/// # Errors
/// 404 if the rule or version is not in this tenant.
pub async fn version(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    rule_id: Uuid,
    number: i32,
) -> ApiResult<rule_version::Model> {
    TenantScope::new(tenant_id)
        .find::<rule_version::Entity>()
        .filter(rule_version::Column::RuleId.eq(rule_id))
        .filter(rule_version::Column::Version.eq(number))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("rule version"))
}

/// Rules of a tenant, newest first.
///
/// # Errors
/// On storage failure.
pub async fn list(db: &DatabaseConnection, tenant_id: Uuid) -> ApiResult<Vec<rule::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<rule::Entity>()
        .order_by_desc(rule::Column::CreatedAt)
        .all(db)
        .await?)
}

// ---------------------------------------------------------------- diff

/// One metadata field that differs between two versions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// Field name.
    pub field: &'static str,
    /// Value in the older version.
    pub from: String,
    /// Value in the newer version.
    pub to: String,
}

/// One line of a query diff.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiffLine {
    /// `equal`, `delete` or `insert`.
    pub op: &'static str,
    /// Line number in the older version (1-based), when the line is there.
    pub old_line: Option<usize>,
    /// Line number in the newer version (1-based), when the line is there.
    pub new_line: Option<usize>,
    /// The line, without its newline.
    pub text: String,
}

/// The difference between two versions of a rule.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionDiff {
    /// Older version number.
    pub from: i32,
    /// Newer version number.
    pub to: i32,
    /// Metadata fields that changed.
    pub metadata: Vec<FieldChange>,
    /// Line diff of the query.
    pub query: Vec<DiffLine>,
    /// The query diff as a unified diff, for humans and `patch`.
    pub unified: String,
}

fn metadata(v: &rule_version::Model) -> Vec<(&'static str, String)> {
    vec![
        ("title", v.title.clone()),
        ("description", v.description.clone()),
        ("severity", v.severity.clone()),
        ("language", v.language.clone()),
        ("mitre", version_mitre(v).join(", ")),
        ("cron", v.cron.clone()),
        ("earliest", v.earliest.clone()),
        ("latest", v.latest.clone()),
        (
            "tests",
            version_tests(v)
                .iter()
                .map(|t| {
                    format!(
                        "{} ({}, {} events)",
                        t.name,
                        t.expect.as_str(),
                        t.events.len()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ]
}

/// Line diff of the query and field diff of the metadata of versions `a` and `b`.
pub fn diff(a: &rule_version::Model, b: &rule_version::Model) -> VersionDiff {
    diff_labeled(a, b, &format!("v{}", a.version), &format!("v{}", b.version))
}

/// [`diff`] with the unified diff's headers named by the caller (e.g.
/// `siem` for content read from the SIEM).
pub fn diff_labeled(
    a: &rule_version::Model,
    b: &rule_version::Model,
    from_label: &str,
    to_label: &str,
) -> VersionDiff {
    let metadata = metadata(a)
        .into_iter()
        .zip(metadata(b))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((field, from), (_, to))| FieldChange { field, from, to })
        .collect();
    let text = similar::TextDiff::from_lines(&a.query, &b.query);
    let mut query = Vec::new();
    for change in text.iter_all_changes() {
        let op = match change.tag() {
            similar::ChangeTag::Equal => "equal",
            similar::ChangeTag::Delete => "delete",
            similar::ChangeTag::Insert => "insert",
        };
        query.push(DiffLine {
            op,
            old_line: change.old_index().map(|i| i + 1),
            new_line: change.new_index().map(|i| i + 1),
            text: change.value().trim_end_matches(['\n', '\r']).to_owned(),
        });
    }
    let unified = text.unified_diff().header(from_label, to_label).to_string();
    VersionDiff {
        from: a.version,
        to: b.version,
        metadata,
        query,
        unified,
    }
}

// ---------------------------------------------------------------- files

/// A version as a rule file (TOML), with its id so a re-import adds a version.
///
/// # Errors
/// 500 if the stored version cannot be written (it always can).
pub fn export(r: &rule::Model, v: &rule_version::Model) -> ApiResult<String> {
    let file = picket_rules::RuleFile {
        format: 1,
        id: Some(r.id.to_string()),
        name: v.title.clone(),
        siem: r.siem_kind.clone(),
        language: Some(v.language.clone()),
        severity: v.severity.clone(),
        description: v.description.clone(),
        mitre: version_mitre(v),
        query: v.query.clone(),
        schedule: picket_rules::FileSchedule {
            cron: Some(v.cron.clone()),
            earliest: Some(v.earliest.clone()),
            latest: Some(v.latest.clone()),
            frequency: None,
            lookback: None,
        },
        tests: version_tests(v),
    };
    picket_rules::to_file(&file).map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    /// A new rule was created (the file had no `id`).
    Created,
    /// A new version was added to the rule named by `id`.
    NewVersion,
    /// The file equals the latest version: nothing was written.
    Unchanged,
}

/// Imports one rule file: creates a rule, adds a version to the rule named by
/// the file's `id`, or does nothing when the file equals the latest version
/// (so syncing a git checkout is idempotent).
///
/// # Errors
/// 400 for a file too large or not TOML of the rule shape (with line and
/// column); 422 listing validation errors; 404 for an `id` not in this
/// tenant; 409 when the file's `siem` differs from the rule's.
pub async fn import(
    db: &DatabaseConnection,
    me: &CurrentUser,
    text: &str,
) -> ApiResult<(
    ImportOutcome,
    rule::Model,
    rule_version::Model,
    Vec<Diagnostic>,
)> {
    let parsed = picket_rules::parse_file(text).map_err(|e| match e {
        picket_rules::FileError::Invalid(details) => ApiError::Unprocessable {
            code: "invalid_rule_file",
            message: format!(
                "the rule file is invalid: {}",
                picket_rules::FileError::Invalid(details.clone())
            ),
            details,
        },
        other => ApiError::bad_request("invalid_rule_file", other.to_string()),
    })?;
    let f = &parsed.file;
    let severity = parse_severity(&f.severity).ok_or_else(|| ApiError::Unprocessable {
        code: "invalid_rule_file",
        message: "severity must be info, low, medium, high or critical".into(),
        details: vec![Diagnostic::field(
            "severity",
            "invalid_field",
            "severity must be info, low, medium, high or critical",
        )],
    })?;
    let content = RuleContent {
        title: f.name.clone(),
        description: f.description.clone(),
        severity,
        language: Some(parsed.language),
        query: f.query.clone(),
        schedule: parsed.schedule.clone(),
        mitre: f.mitre.clone(),
        tests: f.tests.clone(),
    };
    let checked = content.validate(parsed.siem)?;
    let warnings = checked.1.clone();
    let txn = db.begin().await?;
    let out = match &f.id {
        None => {
            let (r, v) = create_in(&txn, me, parsed.siem, &content, checked).await?;
            (ImportOutcome::Created, r, v)
        }
        Some(id) => {
            let id = Uuid::parse_str(id).map_err(|_| {
                ApiError::bad_request(
                    "invalid_rule_file",
                    "id must be a rule id (a UUID) or absent",
                )
            })?;
            let r = me.scope().get::<rule::Entity>(&txn, id, "rule").await?;
            if rule_kind(&r) != parsed.siem {
                return Err(ApiError::conflict(
                    "siem_mismatch",
                    format!(
                        "rule {id} targets {}; the file says {}",
                        r.siem_kind,
                        parsed.siem.as_str()
                    ),
                ));
            }
            let latest = version(&txn, me.tenant_id, id, r.latest_version).await?;
            if same_content(&latest, &content, parsed.language) {
                (ImportOutcome::Unchanged, r, latest)
            } else {
                let v = add_version_in(&txn, me, &r, &content, checked).await?;
                (ImportOutcome::NewVersion, r, v)
            }
        }
    };
    audit::record(
        &txn,
        me.event("rule.import", "rule", out.1.id)
            .details(serde_json::json!({
                "outcome": out.0, "version": out.2.version,
            })),
    )
    .await?;
    txn.commit().await?;
    Ok((out.0, out.1, out.2, warnings))
}

fn same_content(v: &rule_version::Model, c: &RuleContent, language: Language) -> bool {
    v.title == c.title
        && v.description == c.description
        && v.severity == c.severity.as_str()
        && v.language == language.as_str()
        && v.query == c.query
        && v.cron == c.schedule.cron
        && v.earliest == c.schedule.earliest
        && v.latest == c.schedule.latest
        && version_mitre(v) == c.mitre
        && version_tests(v) == c.tests
}

// ---------------------------------------------------------------- test gate

/// Why the test gate refuses an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateFailure {
    /// Each version that blocks, with the reason.
    pub blocked: Vec<GateItem>,
}

/// One rule version that blocks an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateItem {
    /// The rule.
    pub rule_id: Uuid,
    /// The version number.
    pub version: i32,
    /// `tests_missing` (never run against this connection), `tests_running`,
    /// `tests_failed`, `tests_error` or `no_tests` (none, and the tenant
    /// requires them).
    pub reason: &'static str,
}

impl GateFailure {
    /// A precise message: which versions, why.
    pub fn message(&self) -> String {
        let parts: Vec<String> = self
            .blocked
            .iter()
            .map(|b| {
                let why = match b.reason {
                    "tests_missing" => "its tests have not been run on this connection",
                    "tests_running" => "its test run has not finished",
                    "tests_failed" => "its latest test run failed",
                    "no_tests" => "it has no test cases and this tenant requires tests",
                    _ => "its latest test run could not complete",
                };
                format!("rule {} v{}: {why}", b.rule_id, b.version)
            })
            .collect();
        format!(
            "approval blocked by rule tests ({}); run the tests (POST /v1/rules/{{id}}/test-runs) or have an Admin override with a reason",
            parts.join("; ")
        )
    }
}

impl From<GateFailure> for ApiError {
    fn from(g: GateFailure) -> Self {
        ApiError::conflict("tests_not_passed", g.message())
    }
}

/// The latest test run of a version on a connection, if any.
///
/// # Errors
/// On storage failure.
pub async fn latest_test_run(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    rule_version_id: Uuid,
    connection_id: Uuid,
) -> ApiResult<Option<rule_test_run::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<rule_test_run::Entity>()
        .filter(rule_test_run::Column::RuleVersionId.eq(rule_version_id))
        .filter(rule_test_run::Column::ConnectionId.eq(connection_id))
        .order_by_desc(rule_test_run::Column::CreatedAt)
        .order_by_desc(rule_test_run::Column::Id)
        .one(conn)
        .await?)
}

/// The test gate of deployment approvals: every included version that has
/// test cases must have a latest test run on `connection_id` that passed.
/// A version without test cases passes (there is nothing to run; the
/// approver sees `tests: []` on the version) unless `require_tests` (the
/// tenant's setting) is on and the item puts the version's query on the
/// SIEM (`deploys`: deploy, rollback, redeploy; not disable/enable/delete).
///
/// # Errors
/// [`GateFailure`] listing each version that blocks; storage failures as
/// [`ApiError`] through `Internal`.
pub async fn tests_gate(
    txn: &impl ConnectionTrait,
    tenant_id: Uuid,
    connection_id: Uuid,
    versions: &[(Uuid, bool)],
    require_tests: bool,
) -> Result<Result<(), GateFailure>, ApiError> {
    let scope = TenantScope::new(tenant_id);
    let mut blocked = Vec::new();
    for (id, deploys) in versions {
        let v = scope
            .get::<rule_version::Entity>(txn, *id, "rule version")
            .await?;
        if version_tests(&v).is_empty() {
            if require_tests && *deploys {
                blocked.push(GateItem {
                    rule_id: v.rule_id,
                    version: v.version,
                    reason: "no_tests",
                });
            }
            continue;
        }
        let latest = latest_test_run(txn, tenant_id, v.id, connection_id).await?;
        let reason = match latest.as_ref().map(|r| r.status.as_str()) {
            Some("passed") => continue,
            None => "tests_missing",
            Some("queued") => "tests_running",
            Some("failed") => "tests_failed",
            Some(_) => "tests_error",
        };
        blocked.push(GateItem {
            rule_id: v.rule_id,
            version: v.version,
            reason,
        });
    }
    Ok(if blocked.is_empty() {
        Ok(())
    } else {
        Err(GateFailure { blocked })
    })
}

/// Applies the test gate inside the approval transaction: passes when
/// [`tests_gate`] passes; otherwise refuses with a 409 naming each blocking
/// version, unless an Admin gives a written `override_reason`, which is
/// audited as `deployment.test_override` in the same transaction.
///
/// # Errors
/// 409 `tests_not_passed`; 403 when a non-Admin tries to override; 400 on a
/// blank or oversized reason.
pub async fn enforce_tests_gate(
    txn: &DatabaseTransaction,
    user: &CurrentUser,
    deployment_id: Uuid,
    connection_id: Uuid,
    versions: &[(Uuid, bool)],
    require_tests: bool,
    override_reason: Option<&str>,
) -> ApiResult<()> {
    let Err(failure) =
        tests_gate(txn, user.tenant_id, connection_id, versions, require_tests).await?
    else {
        return Ok(());
    };
    let Some(reason) = override_reason else {
        return Err(failure.into());
    };
    if user.role != crate::auth::Role::Admin {
        return Err(ApiError::Forbidden(
            "only an Admin can override failing or missing rule tests".into(),
        ));
    }
    validate::text("test_override", reason, 2000)?;
    audit::record(
        txn,
        user.event("deployment.test_override", "deployment", deployment_id)
            .details(serde_json::json!({ "reason": reason, "blocked": failure.blocked })),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- test runs

/// One case's outcome in a test run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// `match` or `no_match`.
    pub expect: String,
    /// Events of the case the rule matched.
    pub matched: u32,
    /// Whether the expectation held.
    pub passed: bool,
}

/// Starts a test run of version `number` of a rule on a connection: seals a
/// `test_rule` job with the cases' events and the rule's match condition,
/// records the run `queued`, audits `rule.test_run`, and wakes the agent.
///
/// # Errors
/// 404 outside the tenant; 409 when the connection is for another SIEM or
/// its agent is revoked; 422 when the version has no test cases or its
/// query has no form tests can count with.
pub async fn start_test_run(
    state: &crate::AppState,
    me: &CurrentUser,
    rule_id: Uuid,
    number: i32,
    connection_id: Uuid,
) -> ApiResult<rule_test_run::Model> {
    use crate::db::entity::agent;
    use crate::service::{connections, jobs};

    let txn = state.db.begin().await?;
    let (r, _) = get(&txn, me.tenant_id, rule_id).await?;
    let v = version(&txn, me.tenant_id, rule_id, number).await?;
    let c = connections::get(&txn, me.tenant_id, connection_id).await?;
    if c.kind != r.siem_kind {
        return Err(ApiError::conflict(
            "siem_mismatch",
            format!(
                "the rule targets {}; connection {} is {}",
                r.siem_kind, c.name, c.kind
            ),
        ));
    }
    let cases = version_tests(&v);
    if cases.is_empty() {
        return Err(ApiError::Unprocessable {
            code: "no_tests",
            message: format!("version {number} has no test cases; add some in a new version"),
            details: vec![Diagnostic::field("tests", "no_tests", "no test cases")],
        });
    }
    let language = Language::parse(&v.language).unwrap_or(rule_kind(&r).default_language());
    let filter =
        picket_rules::test_filter(language, &v.query).map_err(|m| ApiError::Unprocessable {
            code: "untestable_query",
            message: m.clone(),
            details: vec![Diagnostic::field("query", "untestable_query", m)],
        })?;
    let a = TenantScope::new(me.tenant_id)
        .find::<agent::Entity>()
        .filter(agent::Column::Id.eq(c.agent_id))
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    let spec = picket_proto::JobSpec {
        target: connections::target_for_job(&txn, &state.keys, &c).await?,
        action: picket_proto::JobAction::TestRule {
            test: picket_proto::RuleTest {
                rule_id,
                version: u32::try_from(v.version).unwrap_or(0),
                filter,
                cases: cases
                    .iter()
                    .map(|t| picket_proto::TestCaseSpec {
                        events: t.events.clone(),
                    })
                    .collect(),
            },
        },
    };
    let job = jobs::enqueue(
        &txn,
        &state.keys,
        &a,
        &spec,
        None,
        state.config.job_ttl_secs,
    )
    .await?;
    drop(spec); // the decrypted credential is zeroized here
    let now = unix_now();
    let run = rule_test_run::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(me.tenant_id),
        rule_id: Set(rule_id),
        rule_version_id: Set(v.id),
        version: Set(v.version),
        connection_id: Set(c.id),
        job_id: Set(Some(job.id)),
        requested_by: Set(me.id),
        status: Set("queued".into()),
        error_class: Set(None),
        results: Set("[]".into()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        me.event("rule.test_run", "rule", rule_id)
            .details(serde_json::json!({
                "version": v.version, "connection_id": c.id, "test_run_id": run.id,
                "job_id": job.id, "cases": cases.len(),
            })),
    )
    .await?;
    txn.commit().await?;
    state.registry.wake(a.id);
    Ok(run)
}

/// Stores the outcome of a `test_rule` job, if `job_id` carries one: per
/// case pass/fail from the agent's counts, the run `passed` or `failed`
/// (`error` when the agent could not run it), audited `rule.test_result`.
/// Called by the job-result path in the same transaction.
///
/// # Errors
/// On storage failure.
pub async fn record_test_result(
    txn: &DatabaseTransaction,
    tenant_id: Uuid,
    agent_id: Uuid,
    r: &picket_proto::JobResult,
) -> ApiResult<()> {
    let Some(run) = rule_test_run::Entity::find()
        .filter(rule_test_run::Column::JobId.eq(r.job_id))
        .filter(rule_test_run::Column::TenantId.eq(tenant_id))
        .one(txn)
        .await?
    else {
        return Ok(());
    };
    if run.status != "queued" {
        return Ok(());
    }
    let v = TenantScope::new(tenant_id)
        .get::<rule_version::Entity>(txn, run.rule_version_id, "rule version")
        .await?;
    let cases = version_tests(&v);
    let counts = r.test_counts.map(|c| c.as_slice().to_vec());
    let (status, error_class, results) = match (r.outcome, counts) {
        (picket_proto::Outcome::Succeeded, Some(counts)) if counts.len() == cases.len() => {
            let results: Vec<CaseResult> = cases
                .iter()
                .zip(counts)
                .map(|(t, matched)| CaseResult {
                    name: t.name.clone(),
                    expect: t.expect.as_str().to_owned(),
                    matched,
                    passed: match t.expect {
                        picket_rules::Expect::Match => matched > 0,
                        picket_rules::Expect::NoMatch => matched == 0,
                    },
                })
                .collect();
            let status = if results.iter().all(|c| c.passed) {
                "passed"
            } else {
                "failed"
            };
            (status, None, results)
        }
        // Succeeded without one count per case: not a result we can judge.
        (picket_proto::Outcome::Succeeded, _) => {
            ("error", Some("malformed_result".to_owned()), vec![])
        }
        (_, _) => (
            "error",
            Some(r.error_class.map_or("internal", |c| c.as_str()).to_owned()),
            vec![],
        ),
    };
    let mut am: rule_test_run::ActiveModel = run.clone().into();
    am.status = Set(status.into());
    am.error_class = Set(error_class.clone());
    am.results = Set(json(&results)?);
    am.updated_at = Set(unix_now());
    am.update(txn).await?;
    let passed = results.iter().filter(|c| c.passed).count();
    audit::record(
        txn,
        audit::Event::agent(tenant_id, agent_id, "rule.test_result", "rule", run.rule_id)
            .details(serde_json::json!({
                "version": run.version, "test_run_id": run.id, "status": status,
                "error_class": error_class, "cases": results.len(), "passed": passed,
            }))
            .outcome(if status == "passed" {
                audit::Outcome::Success
            } else {
                audit::Outcome::Failure
            }),
    )
    .await?;
    Ok(())
}

/// Test runs of a rule (of one version when given), newest first.
///
/// # Errors
/// 404 if the rule is not in this tenant.
pub async fn test_runs(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    rule_id: Uuid,
    number: Option<i32>,
) -> ApiResult<Vec<rule_test_run::Model>> {
    get(db, tenant_id, rule_id).await?;
    let mut q = TenantScope::new(tenant_id)
        .find::<rule_test_run::Entity>()
        .filter(rule_test_run::Column::RuleId.eq(rule_id));
    if let Some(n) = number {
        q = q.filter(rule_test_run::Column::Version.eq(n));
    }
    Ok(q.order_by_desc(rule_test_run::Column::CreatedAt)
        .order_by_desc(rule_test_run::Column::Id)
        .limit(200)
        .all(db)
        .await?)
}
