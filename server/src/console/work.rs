//! Home ("what needs me"), approvals, deployments (with the live status
//! stream) and rules.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use picket_proto::Severity;
use serde::Deserialize;
use uuid::Uuid;

use super::views::{self, Badge, DiffLine};
use super::{
    Chrome, Page, PageError, PageForm, PagePath, PageQuery, PageResult, may, ok, render, see_other,
};
use crate::AppState;
use crate::auth::{CurrentUser, Permission, perm};
use crate::db::entity::{deployment, rule_version};
use crate::error::ApiError;
use crate::service::console::{self as q, Liveness};
use crate::service::deployments::{self, Action};
use crate::service::rules::{self, RuleContent};
use crate::service::{connections, scope::TenantScope};
use crate::time::unix_now;

/// One deployment as a table row.
pub struct DeploymentRow {
    id: Uuid,
    rule_id: Uuid,
    rule: String,
    version: i32,
    action: String,
    connection: String,
    requester: String,
    created: String,
    badge: Badge,
    error_class: String,
    mine: bool,
}

fn row(
    d: &deployment::Model,
    me: &CurrentUser,
    titles: &HashMap<Uuid, String>,
    conns: &HashMap<Uuid, String>,
    emails: &HashMap<Uuid, String>,
) -> DeploymentRow {
    DeploymentRow {
        id: d.id,
        rule_id: d.rule_id,
        rule: titles
            .get(&d.rule_id)
            .cloned()
            .unwrap_or_else(|| "(rule)".into()),
        version: d.version,
        action: d.action.clone(),
        connection: conns.get(&d.connection_id).cloned().unwrap_or_default(),
        requester: emails.get(&d.requested_by).cloned().unwrap_or_default(),
        created: views::when(d.created_at),
        badge: views::deployment_badge(&d.status),
        error_class: d.error_class.clone().unwrap_or_default(),
        mine: d.requested_by == me.id,
    }
}

/// Names the rows refer to, looked up once per page.
struct Names {
    titles: HashMap<Uuid, String>,
    conns: HashMap<Uuid, String>,
    emails: HashMap<Uuid, String>,
}

async fn names(state: &AppState, scope: TenantScope) -> Result<Names, ApiError> {
    let titles = rules::list(&state.db, scope.tenant_id())
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    let conns = connections::list(&state.db, scope.tenant_id())
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let emails = q::user_emails(&state.db, scope).await?;
    Ok(Names {
        titles,
        conns,
        emails,
    })
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    chrome: Chrome,
    for_me: Vec<DeploymentRow>,
    can_approve: bool,
    mine_waiting: usize,
    offline: u64,
    agents: u64,
    failed: Vec<DeploymentRow>,
}

/// `GET /`: what needs the signed-in person.
pub async fn home(State(state): State<AppState>, user: Page<perm::View>) -> PageResult {
    let scope = user.scope();
    let n = names(&state, scope).await?;
    let pending = q::pending(&state.db, scope).await?;
    let can_approve = may(&user, Permission::Approve);
    let mine_waiting = pending.iter().filter(|d| d.requested_by == user.id).count();
    let for_me = if can_approve {
        pending
            .iter()
            .filter(|d| d.requested_by != user.id)
            .map(|d| row(d, &user, &n.titles, &n.conns, &n.emails))
            .collect()
    } else {
        Vec::new()
    };
    let all = q::fleet_page(&state.db, &state.registry, scope, &q::FleetQuery::default()).await?;
    let off = q::fleet_page(
        &state.db,
        &state.registry,
        scope,
        &q::FleetQuery {
            liveness: Liveness::Disconnected,
            ..q::FleetQuery::default()
        },
    )
    .await?;
    let failed = deployments::list(&state.db, user.tenant_id, 50)
        .await?
        .iter()
        .filter(|d| matches!(d.status.as_str(), "failed" | "refused" | "expired"))
        .take(10)
        .map(|d| row(d, &user, &n.titles, &n.conns, &n.emails))
        .collect();
    ok(&HomePage {
        chrome: Chrome::of(&user, "Home", "home"),
        for_me,
        can_approve,
        mine_waiting,
        offline: off.total,
        agents: all.total,
        failed,
    })
}

#[derive(Template)]
#[template(path = "console/approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    rows: Vec<DeploymentRow>,
    can_approve: bool,
}

/// `GET /approvals`: every deployment awaiting approval.
pub async fn approvals(State(state): State<AppState>, user: Page<perm::View>) -> PageResult {
    let scope = user.scope();
    let n = names(&state, scope).await?;
    let rows = q::pending(&state.db, scope)
        .await?
        .iter()
        .map(|d| row(d, &user, &n.titles, &n.conns, &n.emails))
        .collect();
    ok(&ApprovalsPage {
        chrome: Chrome::of(&user, "Approvals", "approvals"),
        rows,
        can_approve: may(&user, Permission::Approve),
    })
}

#[derive(Template)]
#[template(path = "console/deployments.html")]
struct DeploymentsPage {
    chrome: Chrome,
    rows: Vec<DeploymentRow>,
    since: i64,
}

/// `GET /deployments`: the history, newest first, with live status.
pub async fn deployments(State(state): State<AppState>, user: Page<perm::View>) -> PageResult {
    let since = unix_now();
    let n = names(&state, user.scope()).await?;
    let rows = deployments::list(&state.db, user.tenant_id, 200)
        .await?
        .iter()
        .map(|d| row(d, &user, &n.titles, &n.conns, &n.emails))
        .collect();
    ok(&DeploymentsPage {
        chrome: Chrome::of(&user, "Deployments", "deployments"),
        rows,
        since,
    })
}

/// `?since=` of the live stream: the Unix time the page was rendered.
#[derive(Deserialize)]
pub struct LiveQuery {
    since: Option<i64>,
}

/// How often the live stream looks for changes.
const LIVE_POLL: Duration = Duration::from_secs(1);

/// `GET /deployments/live`: Server-Sent Events, one `status` event per
/// deployment whose status changed since the page was rendered
/// (`{"id","status","label","class","error_class"}`). Each open stream polls
/// the tenant's deployments by `updated_at` (indexed) once a second; it ends
/// when the browser leaves or the server shuts down.
pub async fn live(
    State(state): State<AppState>,
    user: Page<perm::View>,
    PageQuery(lq): PageQuery<LiveQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let now = unix_now();
    // A page rendered long ago starts from at most an hour back.
    let since = lq.since.unwrap_or(now).clamp(now - 3600, now);
    let scope = user.scope();
    let shutdown = state.shutdown.clone();
    struct Poll {
        state: AppState,
        scope: TenantScope,
        since: i64,
        sent: HashMap<Uuid, String>,
        queue: Vec<Event>,
        first: bool,
    }
    let init = Poll {
        state,
        scope,
        since,
        sent: HashMap::new(),
        queue: Vec::new(),
        first: true,
    };
    let stream = futures_util::stream::unfold(init, move |mut p| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                if let Some(ev) = p.queue.pop() {
                    return Some((Ok(ev), p));
                }
                if !p.first {
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(LIVE_POLL) => {}
                    }
                }
                p.first = false;
                // Updated within the same second as the last poll is asked again;
                // `sent` drops the repeats.
                let rows = match q::deployments_changed(&p.state.db, p.scope, p.since).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "console live stream: poll failed");
                        continue;
                    }
                };
                for d in rows {
                    p.since = p.since.max(d.updated_at);
                    if p.sent.get(&d.id) == Some(&d.status) {
                        continue;
                    }
                    p.sent.insert(d.id, d.status.clone());
                    let b = views::deployment_badge(&d.status);
                    let data = serde_json::json!({
                        "id": d.id,
                        "status": d.status,
                        "label": b.label,
                        "class": b.class,
                        "error_class": d.error_class,
                    });
                    p.queue
                        .push(Event::default().event("status").data(data.to_string()));
                }
                // Bounded: a map entry per deployment seen by this stream.
                if p.sent.len() > 10_000 {
                    p.sent.clear();
                }
                p.queue.reverse();
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// An approval as shown.
struct ApprovalRow {
    who: String,
    when: String,
    comment: String,
}

#[derive(Template)]
#[template(path = "console/deployment.html")]
struct DeploymentPage {
    chrome: Chrome,
    d: DeploymentRow,
    message: String,
    digest: String,
    agent_id: Uuid,
    previous: Option<i32>,
    diff: Vec<DiffLine>,
    fields: Vec<(&'static str, String, String)>,
    approvals: Vec<ApprovalRow>,
    needed: i64,
    still_needed: i64,
    pending: bool,
    can_approve: bool,
    why_not: &'static str,
    since: i64,
}

/// `GET /deployments/{id}`: the request: diff against what is deployed,
/// approvals so far, and the approve button for those who may.
pub async fn deployment(
    State(state): State<AppState>,
    user: Page<perm::View>,
    PagePath(id): PagePath<Uuid>,
) -> PageResult {
    let since = unix_now();
    let scope = user.scope();
    let d = deployments::get(&state.db, user.tenant_id, id).await?;
    let n = names(&state, scope).await?;
    let v = scope
        .get::<rule_version::Entity>(&state.db, d.rule_version_id, "rule version")
        .await?;
    let prev = q::deployed_before(&state.db, scope, &d).await?;
    let old_query = prev.as_ref().map(|p| p.query.clone()).unwrap_or_default();
    let diff = views::diff(&old_query, &v.query);
    let pf = |f: fn(&rule_version::Model) -> String| prev.as_ref().map(f).unwrap_or_default();
    let fields = vec![
        ("Title", pf(|p| p.title.clone()), v.title.clone()),
        ("Severity", pf(|p| p.severity.clone()), v.severity.clone()),
        ("Schedule (cron)", pf(|p| p.cron.clone()), v.cron.clone()),
        (
            "Window",
            pf(|p| format!("{} to {}", p.earliest, p.latest)),
            format!("{} to {}", v.earliest, v.latest),
        ),
        (
            "Description",
            pf(|p| p.description.clone()),
            v.description.clone(),
        ),
    ];
    let approvals_rows = deployments::approvals(&state.db, user.tenant_id, id).await?;
    let approved_by_me = approvals_rows.iter().any(|a| a.user_id == user.id);
    let tenant = q::tenant(&state.db, scope).await?;
    let needed = i64::from(tenant.min_approvers.max(1));
    let have = i64::try_from(
        approvals_rows
            .iter()
            .filter(|a| a.digest == d.digest && a.decision == "approve")
            .count(),
    )
    .unwrap_or(0);
    let pending = d.status == "pending_approval";
    // Separation of duties comes from the one function the server enforces
    // with (`deployments::may_approve`); the button only mirrors it.
    let sod = deployments::may_approve(&state.db, &user, &d).await?;
    let why_not = if !pending {
        "This deployment is no longer awaiting approval."
    } else if d.requested_by == user.id {
        "You requested this deployment, so someone else must approve it."
    } else if sod.is_err() {
        "You wrote a rule version in this deployment, so someone else must approve it."
    } else if !may(&user, Permission::Approve) {
        "Your role cannot approve deployments."
    } else if approved_by_me {
        "You have approved this deployment; it waits for other approvers."
    } else {
        ""
    };
    let approvals = approvals_rows
        .into_iter()
        .map(|a| ApprovalRow {
            who: n.emails.get(&a.user_id).cloned().unwrap_or_default(),
            when: views::when(a.created_at),
            comment: a.comment.unwrap_or_default(),
        })
        .collect();
    ok(&DeploymentPage {
        chrome: Chrome::of(&user, "Deployment", "approvals"),
        d: row(&d, &user, &n.titles, &n.conns, &n.emails),
        message: d.message.clone(),
        digest: d.digest.clone(),
        agent_id: d.agent_id,
        previous: prev.as_ref().map(|p| p.version),
        diff,
        fields,
        approvals,
        needed,
        still_needed: (needed - have).max(0),
        pending,
        can_approve: why_not.is_empty(),
        why_not,
        since,
    })
}

/// The approve form's fields.
#[derive(Deserialize)]
pub struct ApproveForm {
    comment: Option<String>,
    /// The digest shown on the page: a request changed since is refused.
    digest: Option<String>,
}

/// `POST /deployments/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    user: Page<perm::Approve>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<ApproveForm>,
) -> PageResult {
    let comment = f.comment.filter(|c| !c.trim().is_empty());
    let digest = f.digest.filter(|d| !d.is_empty());
    deployments::decide(
        &state,
        &user,
        id,
        deployments::Decision::Approve,
        comment,
        digest,
        None,
    )
    .await?;
    Ok(see_other(&format!("/deployments/{id}")))
}

/// A rule as a table row.
struct RuleRow {
    id: Uuid,
    title: String,
    severity: String,
    version: i32,
    created: String,
    status: Option<Badge>,
}

#[derive(Template)]
#[template(path = "console/rules.html")]
struct RulesPage {
    chrome: Chrome,
    rows: Vec<RuleRow>,
    q: String,
    severity: String,
    severities: &'static [&'static str],
    can_author: bool,
    total: usize,
}

/// Filters of the rules list.
#[derive(Deserialize, Default)]
pub struct RulesQuery {
    q: Option<String>,
    severity: Option<String>,
}

const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];

/// `GET /rules`: rules with filters (title text, severity).
pub async fn rules(
    State(state): State<AppState>,
    user: Page<perm::View>,
    PageQuery(rq): PageQuery<RulesQuery>,
) -> PageResult {
    let text = rq.q.unwrap_or_default();
    if text.chars().count() > 200 {
        return Err(ApiError::bad_request("invalid_query", "q: at most 200 characters").into());
    }
    let severity = rq.severity.unwrap_or_default();
    let scope = user.scope();
    let latest = q::latest_versions(&state.db, scope).await?;
    let mut status: HashMap<Uuid, String> = HashMap::new();
    for d in deployments::list(&state.db, user.tenant_id, 1000)
        .await?
        .into_iter()
        .rev()
    {
        status.insert(d.rule_id, d.status);
    }
    let all = rules::list(&state.db, user.tenant_id).await?;
    let total = all.len();
    let needle = text.to_lowercase();
    let rows = all
        .into_iter()
        .filter(|r| needle.is_empty() || r.name.to_lowercase().contains(&needle))
        .filter(|r| {
            severity.is_empty() || latest.get(&r.id).is_some_and(|v| v.severity == severity)
        })
        .map(|r| RuleRow {
            severity: latest
                .get(&r.id)
                .map(|v| v.severity.clone())
                .unwrap_or_default(),
            status: status.get(&r.id).map(|s| views::deployment_badge(s)),
            id: r.id,
            title: r.name,
            version: r.latest_version,
            created: views::when(r.created_at),
        })
        .collect();
    ok(&RulesPage {
        chrome: Chrome::of(&user, "Rules", "rules"),
        rows,
        q: text,
        severity,
        severities: SEVERITIES,
        can_author: may(&user, Permission::Author),
        total,
    })
}

#[derive(Template)]
#[template(path = "console/rule.html")]
struct RulePage {
    chrome: Chrome,
    id: Uuid,
    title: String,
    versions: Vec<VersionRow>,
    shown: rule_version::Model,
    a: i32,
    b: i32,
    diff: Vec<DiffLine>,
    can_author: bool,
    can_request: bool,
    connections: Vec<(Uuid, String)>,
}

/// A version in the rule page's list.
struct VersionRow {
    version: i32,
    title: String,
    severity: String,
    created: String,
}

/// Which versions the rule page compares.
#[derive(Deserialize, Default)]
pub struct CompareQuery {
    a: Option<i32>,
    b: Option<i32>,
}

/// `GET /rules/{id}`: the rule, its versions, a diff between any two, and
/// the deployment request form.
pub async fn rule(
    State(state): State<AppState>,
    user: Page<perm::View>,
    PagePath(id): PagePath<Uuid>,
    PageQuery(cq): PageQuery<CompareQuery>,
) -> PageResult {
    let (r, versions) = rules::get(&state.db, user.tenant_id, id).await?;
    let latest = versions
        .first()
        .cloned()
        .ok_or(ApiError::NotFound("rule version"))?;
    let b = cq.b.unwrap_or(latest.version);
    let a = cq.a.unwrap_or((b - 1).max(1));
    let find = |n: i32| versions.iter().find(|v| v.version == n).cloned();
    let vb = find(b).ok_or(ApiError::NotFound("rule version"))?;
    let va = find(a).ok_or(ApiError::NotFound("rule version"))?;
    let diff = if a == b {
        views::diff(&vb.query, &vb.query)
    } else {
        views::diff(&va.query, &vb.query)
    };
    let connections = connections::list(&state.db, user.tenant_id)
        .await?
        .into_iter()
        .map(|c| (c.id, format!("{} ({})", c.name, c.kind)))
        .collect();
    ok(&RulePage {
        chrome: Chrome::of(&user, r.name.clone(), "rules"),
        id: r.id,
        title: r.name,
        shown: vb,
        versions: versions
            .iter()
            .map(|v| VersionRow {
                version: v.version,
                title: v.title.clone(),
                severity: v.severity.clone(),
                created: views::when(v.created_at),
            })
            .collect(),
        a,
        b,
        diff,
        can_author: may(&user, Permission::Author),
        can_request: may(&user, Permission::RequestDeployment),
        connections,
    })
}

/// The rule form's fields (also what is shown again after a refusal).
#[derive(Deserialize, Default, Clone)]
pub struct RuleForm {
    title: String,
    #[serde(default)]
    description: String,
    severity: String,
    query: String,
    cron: String,
    earliest: String,
    latest: String,
    /// `splunk`, `sentinel` or `elastic` (fixed once the rule exists).
    #[serde(default = "default_siem")]
    siem_kind: String,
    /// ATT&CK technique ids, separated by commas or spaces.
    #[serde(default)]
    mitre: String,
    /// The version's test cases, carried over unchanged on edit (as JSON;
    /// the console does not edit them yet).
    #[serde(skip)]
    tests: Vec<picket_rules::TestCase>,
}

fn default_siem() -> String {
    "splunk".into()
}

#[derive(Template)]
#[template(path = "console/rule_form.html")]
struct RuleFormPage {
    chrome: Chrome,
    action: String,
    heading: String,
    f: RuleForm,
    severities: &'static [&'static str],
    /// The field the error is about, and the message (shown at that field).
    error_field: &'static str,
    error: String,
    /// Validation findings with their position (`line L, column C: ...`),
    /// shown under the query.
    findings: Vec<String>,
    /// Whether the SIEM kind can still be chosen (new rules only).
    new: bool,
}

impl RuleForm {
    fn content(&self) -> Result<RuleContent, ApiError> {
        let severity: Severity = rules::parse_severity(&self.severity).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_field",
                "severity must be one of info, low, medium, high, critical",
            )
        })?;
        Ok(RuleContent {
            title: self.title.clone(),
            description: self.description.clone(),
            severity,
            language: None,
            query: self.query.clone(),
            schedule: picket_rules::Schedule {
                cron: self.cron.clone(),
                earliest: self.earliest.clone(),
                latest: self.latest.clone(),
            },
            mitre: self
                .mitre
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            tests: self.tests.clone(),
        })
    }

    fn kind(&self) -> Result<picket_rules::SiemKind, ApiError> {
        picket_rules::SiemKind::parse(&self.siem_kind).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_field",
                "siem_kind must be one of splunk, sentinel, elastic",
            )
        })
    }
}

/// Which form field a service validation message is about (messages start
/// with the field's name).
fn field_of(message: &str) -> &'static str {
    let first = message
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or("");
    [
        "title",
        "description",
        "severity",
        "query",
        "cron",
        "earliest",
        "latest",
        "siem_kind",
        "mitre",
    ]
    .into_iter()
    .find(|f| *f == first)
    .unwrap_or("")
}

fn rule_form(
    user: &CurrentUser,
    action: String,
    heading: String,
    f: RuleForm,
    error: Option<String>,
) -> RuleFormPage {
    let error = error.unwrap_or_default();
    RuleFormPage {
        chrome: Chrome::of(user, heading.clone(), "rules"),
        new: action == "/rules/new",
        action,
        heading,
        f,
        severities: SEVERITIES,
        error_field: field_of(&error),
        error,
        findings: Vec::new(),
    }
}

/// `GET /rules/new`.
pub async fn new_rule(user: Page<perm::Author>) -> PageResult {
    let f = RuleForm {
        severity: "medium".into(),
        siem_kind: default_siem(),
        cron: "*/5 * * * *".into(),
        earliest: "-10m".into(),
        latest: "now".into(),
        ..RuleForm::default()
    };
    ok(&rule_form(
        &user,
        "/rules/new".into(),
        "New rule".into(),
        f,
        None,
    ))
}

fn refused(
    user: &CurrentUser,
    action: String,
    heading: String,
    f: RuleForm,
    e: ApiError,
) -> PageResult {
    match e {
        ApiError::BadRequest { message, .. } => Ok(render(
            StatusCode::BAD_REQUEST,
            &rule_form(user, action, heading, f, Some(message)),
        )),
        ApiError::Unprocessable {
            message, details, ..
        } => {
            // The first finding's field gets the summary; every finding is
            // listed with its line and column.
            let field = details.first().map_or("query", |d| d.field);
            let mut page = rule_form(user, action, heading, f, Some(message));
            page.error_field = field_of(field);
            page.findings = details
                .iter()
                .map(|d| match (d.line, d.column) {
                    (Some(l), Some(c)) => {
                        format!("{} line {l}, column {c}: {}", d.field, d.message)
                    }
                    _ => format!("{}: {}", d.field, d.message),
                })
                .collect();
            Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
        e => Err(e.into()),
    }
}

/// `POST /rules/new`: creates the rule, or shows the form again with the
/// message at the offending field.
pub async fn create_rule(
    State(state): State<AppState>,
    user: Page<perm::Author>,
    PageForm(f): PageForm<RuleForm>,
) -> PageResult {
    let (action, heading) = ("/rules/new".to_owned(), "New rule".to_owned());
    let (content, kind) = match f.content().and_then(|c| Ok((c, f.kind()?))) {
        Ok(c) => c,
        Err(e) => return refused(&user, action, heading, f, e),
    };
    match rules::create(&state.db, &user, kind, content).await {
        Ok((r, _)) => Ok(see_other(&format!("/rules/{}", r.id))),
        Err(e) => refused(&user, action, heading, f, e),
    }
}

/// `GET /rules/{id}/edit`: a new version, prefilled with the latest.
pub async fn edit_rule(
    State(state): State<AppState>,
    user: Page<perm::Author>,
    PagePath(id): PagePath<Uuid>,
) -> PageResult {
    let (r, versions) = rules::get(&state.db, user.tenant_id, id).await?;
    let v = versions.first().ok_or(ApiError::NotFound("rule version"))?;
    let f = RuleForm {
        title: v.title.clone(),
        description: v.description.clone(),
        severity: v.severity.clone(),
        query: v.query.clone(),
        cron: v.cron.clone(),
        earliest: v.earliest.clone(),
        latest: v.latest.clone(),
        siem_kind: r.siem_kind.clone(),
        mitre: rules::version_mitre(v).join(", "),
        tests: rules::version_tests(v),
    };
    ok(&rule_form(
        &user,
        format!("/rules/{id}/edit"),
        format!("New version of {}", r.name),
        f,
        None,
    ))
}

/// `POST /rules/{id}/edit`: adds a version (versions are immutable).
pub async fn save_rule(
    State(state): State<AppState>,
    user: Page<perm::Author>,
    PagePath(id): PagePath<Uuid>,
    PageForm(mut f): PageForm<RuleForm>,
) -> PageResult {
    let (action, heading) = (format!("/rules/{id}/edit"), "New version".to_owned());
    // Test cases are not edited in the console: the new version keeps the
    // latest version's cases.
    let (_, versions) = rules::get(&state.db, user.tenant_id, id).await?;
    if let Some(latest) = versions.first() {
        f.tests = rules::version_tests(latest);
    }
    let content = match f.content() {
        Ok(c) => c,
        Err(e) => return refused(&user, action, heading, f, e),
    };
    match rules::add_version(&state.db, &user, id, content).await {
        Ok(_) => Ok(see_other(&format!("/rules/{id}"))),
        Err(e) => refused(&user, action, heading, f, e),
    }
}

/// The deployment request form's fields.
#[derive(Deserialize)]
pub struct DeployForm {
    version: i32,
    connection_id: Uuid,
    #[serde(default)]
    message: String,
}

/// `POST /rules/{id}/deploy`: requests a deployment; goes to its page.
pub async fn request_deploy(
    State(state): State<AppState>,
    user: Page<perm::RequestDeployment>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<DeployForm>,
) -> Result<Response, PageError> {
    let d = deployments::request(
        &state,
        &user,
        deployments::NewRequest {
            connection_id: f.connection_id,
            items: vec![deployments::ItemRequest {
                rule_id: id,
                version: f.version,
                action: Action::Deploy,
                monitoring: false,
            }],
            message: f.message,
            dry_run: false,
            kind: "change",
        },
        None,
    )
    .await?;
    Ok(see_other(&format!("/deployments/{}", d.id)).into_response())
}
