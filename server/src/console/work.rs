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
    /// Deployed by an Admin without approval: flagged wherever it is listed.
    breakglass: bool,
    /// `change`, `rollback` or `redeploy`: shown when not a plain change.
    kind: String,
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
        breakglass: d.breakglass_reason.is_some(),
        kind: if d.kind == "change" {
            String::new()
        } else {
            d.kind.clone()
        },
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
    /// Rules whose deployed content no longer matches (need a resolution).
    drifted: usize,
    /// Open breakglass reviews (shown to Admins, who sign them off).
    reviews: Vec<OpenReview>,
    admin: bool,
}

/// An open breakglass review on the home page.
struct OpenReview {
    deployment_id: Uuid,
    rule: String,
    by: String,
    reason: String,
    mine: bool,
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
    let drifted = crate::service::drift::list(&state.db, user.tenant_id)
        .await?
        .iter()
        .filter(|r| r.state == "drift_detected")
        .count();
    let admin = may(&user, Permission::Administer);
    let mut reviews = Vec::new();
    if admin {
        for r in deployments::reviews(&state.db, user.tenant_id).await? {
            if r.signed_off_by.is_some() {
                continue;
            }
            let d = deployments::get(&state.db, user.tenant_id, r.deployment_id).await?;
            reviews.push(OpenReview {
                deployment_id: r.deployment_id,
                rule: n.titles.get(&d.rule_id).cloned().unwrap_or_default(),
                by: n.emails.get(&r.requested_by).cloned().unwrap_or_default(),
                reason: r.reason,
                mine: r.requested_by == user.id,
            });
        }
    }
    ok(&HomePage {
        chrome: Chrome::of(&user, "Home", "home"),
        for_me,
        can_approve,
        mine_waiting,
        offline: off.total,
        agents: all.total,
        failed,
        drifted,
        reviews,
        admin,
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

/// A decision as shown.
struct ApprovalRow {
    who: String,
    /// "approved", "rejected" or "requested changes".
    what: &'static str,
    when: String,
    comment: String,
}

/// The after-the-fact review of a breakglass deployment, as shown.
struct ReviewRow {
    reason: String,
    deployed_by: String,
    signed_off: bool,
    by: String,
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
    /// The rule on this connection is what this deployment applied, and the
    /// person may request: offer the one-step rollback.
    can_rollback: bool,
    review: Option<ReviewRow>,
    /// An Admin other than the one who deployed, review still open.
    can_sign_off: bool,
    /// An Admin may approve past a blocking test gate with a written reason.
    can_override: bool,
    /// The rule-test gate for this request's versions on its connection:
    /// each blocking version (rule, version, why). Empty: approval may proceed.
    gate: Vec<(Uuid, i32, &'static str)>,
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
            what: match a.decision.as_str() {
                "approve" => "approved",
                "reject" => "rejected",
                _ => "requested changes",
            },
            when: views::when(a.created_at),
            comment: a.comment.unwrap_or_default(),
        })
        .collect();
    let can_rollback = d.status == "succeeded"
        && may(&user, Permission::RequestDeployment)
        && deployments::current(&state.db, user.tenant_id, d.rule_id, d.connection_id)
            .await?
            .is_some_and(|c| c.last_deployment_id == Some(d.id) && c.state != "removed");
    // The same inputs as the approval path in `deployments::decide`.
    let versions: Vec<(Uuid, bool)> = deployments::items(&state.db, user.tenant_id, d.id)
        .await?
        .iter()
        .map(|i| (i.rule_version_id, i.action == "deploy"))
        .collect();
    let require_tests =
        <crate::db::entity::tenant::Entity as sea_orm::EntityTrait>::find_by_id(user.tenant_id)
            .one(&state.db)
            .await?
            .is_some_and(|t| t.require_tests);
    let gate = match rules::tests_gate(
        &state.db,
        user.tenant_id,
        d.connection_id,
        &versions,
        require_tests,
    )
    .await?
    {
        Ok(()) => Vec::new(),
        Err(g) => g
            .blocked
            .iter()
            .map(|b| {
                let why = match b.reason {
                    "tests_missing" => "its tests have not been run on this connection",
                    "tests_running" => "its test run has not finished",
                    "tests_failed" => "its latest test run failed",
                    "no_tests" => "it has no test cases and this tenant requires them",
                    _ => "its latest test run could not complete",
                };
                (b.rule_id, b.version, why)
            })
            .collect(),
    };
    let review = deployments::review_of(&state.db, user.tenant_id, d.id).await?;
    let can_sign_off = review.as_ref().is_some_and(|r| {
        r.signed_off_by.is_none() && r.requested_by != user.id && may(&user, Permission::Administer)
    });
    let review = review.map(|r| ReviewRow {
        reason: r.reason,
        deployed_by: n.emails.get(&r.requested_by).cloned().unwrap_or_default(),
        signed_off: r.signed_off_by.is_some(),
        by: r
            .signed_off_by
            .and_then(|u| n.emails.get(&u).cloned())
            .unwrap_or_default(),
        when: r.signed_off_at.map(views::when).unwrap_or_default(),
        comment: r.comment.unwrap_or_default(),
    });
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
        can_rollback,
        review,
        can_sign_off,
        can_override: may(&user, Permission::Administer),
        gate,
        since,
    })
}

/// The approve form's fields.
#[derive(Deserialize)]
pub struct ApproveForm {
    comment: Option<String>,
    /// The digest shown on the page: a request changed since is refused.
    digest: Option<String>,
    /// An Admin's written reason to approve past failing or missing rule
    /// tests (the service checks the role and audits `deployment.test_override`).
    test_override: Option<String>,
}

/// `POST /deployments/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    user: Page<perm::Approve>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<ApproveForm>,
) -> PageResult {
    decide(&state, &user, id, f, deployments::Decision::Approve).await
}

/// `POST /deployments/{id}/reject` (the decision form's Reject button; a comment is required).
pub async fn reject(
    State(state): State<AppState>,
    user: Page<perm::Approve>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<ApproveForm>,
) -> PageResult {
    decide(&state, &user, id, f, deployments::Decision::Reject).await
}

/// `POST /deployments/{id}/request-changes` (a comment is required).
pub async fn request_changes(
    State(state): State<AppState>,
    user: Page<perm::Approve>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<ApproveForm>,
) -> PageResult {
    decide(&state, &user, id, f, deployments::Decision::RequestChanges).await
}

/// The three buttons of the decision form go through the API's one path
/// (`deployments::decide`), so the separation-of-duties and digest checks
/// are the server's, not the page's.
async fn decide(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    f: ApproveForm,
    decision: deployments::Decision,
) -> PageResult {
    let comment = f.comment.filter(|c| !c.trim().is_empty());
    let digest = f.digest.filter(|d| !d.is_empty());
    // Only an approval can override the test gate.
    let test_override = f
        .test_override
        .filter(|r| !r.trim().is_empty() && decision == deployments::Decision::Approve);
    deployments::decide(state, user, id, decision, comment, digest, test_override).await?;
    Ok(see_other(&format!("/deployments/{id}")))
}

/// The rollback and sign-off forms' one field.
#[derive(Deserialize)]
pub struct CommentForm {
    comment: Option<String>,
}

/// `POST /deployments/{id}/rollback`: requests the rollback of this
/// deployment's rule on its connection (the version deployed before it, or
/// removal if it was the first); the request waits for approval like any
/// change. Goes to the new request.
pub async fn rollback(
    State(state): State<AppState>,
    user: Page<perm::RequestDeployment>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<CommentForm>,
) -> PageResult {
    let d = deployments::get(&state.db, user.tenant_id, id).await?;
    let new = deployments::rollback_request(
        &state.db,
        &user,
        d.rule_id,
        d.connection_id,
        f.comment.unwrap_or_default(),
    )
    .await?;
    let r = deployments::request(&state, &user, new, None).await?;
    Ok(see_other(&format!("/deployments/{}", r.id)))
}

/// `POST /deployments/{id}/sign-off`: another Admin signs off a breakglass
/// deployment's review.
pub async fn sign_off(
    State(state): State<AppState>,
    user: Page<perm::Administer>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<CommentForm>,
) -> PageResult {
    let comment = f.comment.filter(|c| !c.trim().is_empty());
    deployments::sign_off(&state.db, &user, id, comment).await?;
    Ok(see_other(&format!("/deployments/{id}")))
}

/// A rule as a table row.
struct RuleRow {
    id: Uuid,
    title: String,
    siem: String,
    severity: String,
    version: i32,
    created: String,
    status: Option<Badge>,
    /// Drifted on some connection.
    drifted: bool,
}

/// The status filter's choices: (value, label).
const RULE_STATUSES: &[(&str, &str)] = &[
    ("never", "never deployed"),
    ("pending_approval", "awaiting approval"),
    ("succeeded", "applied"),
    ("failed", "failed or refused"),
    ("drift", "drifted"),
];
const SIEMS: &[&str] = &["splunk", "sentinel", "elastic"];

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
    siem: String,
    siems: &'static [&'static str],
    status: String,
    statuses: &'static [(&'static str, &'static str)],
}

/// Filters of the rules list.
#[derive(Deserialize, Default)]
pub struct RulesQuery {
    q: Option<String>,
    severity: Option<String>,
    siem: Option<String>,
    status: Option<String>,
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
    let drifted: std::collections::HashSet<Uuid> =
        crate::service::drift::list(&state.db, user.tenant_id)
            .await?
            .into_iter()
            .filter(|r| r.state == "drift_detected")
            .map(|r| r.rule_id)
            .collect();
    let siem = rq.siem.unwrap_or_default();
    let want = rq.status.unwrap_or_default();
    let all = rules::list(&state.db, user.tenant_id).await?;
    let total = all.len();
    let needle = text.to_lowercase();
    let rows = all
        .into_iter()
        .filter(|r| needle.is_empty() || r.name.to_lowercase().contains(&needle))
        .filter(|r| {
            severity.is_empty() || latest.get(&r.id).is_some_and(|v| v.severity == severity)
        })
        .filter(|r| siem.is_empty() || r.siem_kind == siem)
        .filter(|r| {
            let st = status.get(&r.id).map(String::as_str);
            match want.as_str() {
                "" => true,
                "never" => st.is_none(),
                "drift" => drifted.contains(&r.id),
                "failed" => matches!(st, Some("failed" | "refused" | "expired")),
                w => st == Some(w),
            }
        })
        .map(|r| RuleRow {
            severity: latest
                .get(&r.id)
                .map(|v| v.severity.clone())
                .unwrap_or_default(),
            status: status.get(&r.id).map(|s| views::deployment_badge(s)),
            drifted: drifted.contains(&r.id),
            id: r.id,
            title: r.name,
            siem: r.siem_kind,
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
        siem,
        siems: SIEMS,
        status: want,
        statuses: RULE_STATUSES,
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
    /// The shown version's test cases, with the latest run's result each.
    cases: Vec<CaseRow>,
    /// The latest test run of the shown version, if any.
    last_run: Option<RunRow>,
    /// Connections of the rule's SIEM kind (tests run on the real SIEM).
    test_conns: Vec<(Uuid, String)>,
    can_test: bool,
    /// The newest rule-health sample per connection (from `rule_health` jobs).
    health: Vec<HealthRow>,
}

/// A rule's run health on one connection, as the agent last reported it.
struct HealthRow {
    connection: String,
    when: String,
    window: String,
    /// `None` when the sample is an error.
    error_class: Option<String>,
    succeeded: i64,
    failed: i64,
    skipped: i64,
    results: String,
    alerts: String,
    last_run: String,
    duration: String,
    gap: String,
    badge: Badge,
}

/// A test case and how it fared in the latest run.
struct CaseRow {
    name: String,
    expect: &'static str,
    events: usize,
    /// `None` until a run reported it.
    result: Option<Badge>,
    matched: String,
}

/// A test run as shown.
struct RunRow {
    badge: Badge,
    when: String,
    connection: String,
    error_class: String,
}

fn run_badge(status: &str) -> Badge {
    let (label, class) = match status {
        "queued" => ("running", "info"),
        "passed" => ("passed", "ok"),
        "failed" => ("failed", "bad"),
        "error" => ("could not run", "bad"),
        _ => ("unknown", "muted"),
    };
    Badge { label, class }
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
    let conns = connections::list(&state.db, user.tenant_id).await?;
    let test_conns = conns
        .iter()
        .filter(|c| c.kind == r.siem_kind)
        .map(|c| (c.id, c.name.clone()))
        .collect();
    let conn_names: HashMap<Uuid, String> = conns.iter().map(|c| (c.id, c.name.clone())).collect();
    let connections = conns
        .into_iter()
        .map(|c| (c.id, format!("{} ({})", c.name, c.kind)))
        .collect();
    let run = rules::test_runs(&state.db, user.tenant_id, id, Some(vb.version))
        .await?
        .into_iter()
        .next();
    let results: Vec<rules::CaseResult> = run
        .as_ref()
        .and_then(|r| serde_json::from_str(&r.results).ok())
        .unwrap_or_default();
    let cases = rules::version_tests(&vb)
        .into_iter()
        .map(|t| {
            let res = results.iter().find(|c| c.name == t.name);
            CaseRow {
                expect: if t.expect == picket_rules::Expect::Match {
                    "match"
                } else {
                    "no match"
                },
                events: t.events.len(),
                result: res.map(|c| Badge {
                    label: if c.passed { "passed" } else { "failed" },
                    class: if c.passed { "ok" } else { "bad" },
                }),
                matched: res.map(|c| c.matched.to_string()).unwrap_or_default(),
                name: t.name,
            }
        })
        .collect();
    let last_run = run.map(|r| RunRow {
        badge: run_badge(&r.status),
        when: views::when(r.created_at),
        connection: conn_names
            .get(&r.connection_id)
            .cloned()
            .unwrap_or_default(),
        error_class: r.error_class.unwrap_or_default(),
    });
    let opt = |v: Option<i64>| {
        v.map(|n| n.to_string())
            .unwrap_or_else(|| "not reported".into())
    };
    let ms = |v: Option<i64>| {
        v.map(|n| format!("{n} ms"))
            .unwrap_or_else(|| "not reported".into())
    };
    let health = crate::service::rule_health::latest(&state.db, user.tenant_id, id, None)
        .await?
        .into_iter()
        .map(|h| HealthRow {
            connection: conn_names
                .get(&h.connection_id)
                .cloned()
                .unwrap_or_default(),
            when: views::when(h.taken_at),
            window: format!("{} min", h.window_secs / 60),
            badge: match (&h.error_class, h.runs_failed) {
                (Some(_), _) => Badge {
                    label: "unknown",
                    class: "warn",
                },
                (None, 0) => Badge {
                    label: "healthy",
                    class: "ok",
                },
                (None, _) => Badge {
                    label: "failing runs",
                    class: "bad",
                },
            },
            error_class: h.error_class,
            succeeded: h.runs_succeeded,
            failed: h.runs_failed,
            skipped: h.runs_skipped,
            results: opt(h.results_total),
            alerts: opt(h.alerts_fired),
            last_run: h
                .last_run_at
                .map(views::when)
                .unwrap_or_else(|| "no run in the window".into()),
            duration: ms(h.last_run_duration_ms),
            gap: ms(h.gap_ms),
        })
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
        cases,
        last_run,
        test_conns,
        can_test: may(&user, Permission::Author),
        health,
    })
}

/// The run-tests form's fields.
#[derive(Deserialize)]
pub struct TestRunForm {
    version: i32,
    connection_id: Uuid,
}

/// `POST /rules/{id}/test-runs`: runs the version's test cases on a
/// connection of the rule's SIEM (a sealed job to its agent); back to the
/// rule page, where the results appear when the agent reports.
pub async fn run_tests(
    State(state): State<AppState>,
    user: Page<perm::Author>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<TestRunForm>,
) -> PageResult {
    rules::start_test_run(&state, &user, id, f.version, f.connection_id).await?;
    Ok(see_other(&format!("/rules/{id}?b={}#tests", f.version)))
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
    /// The version's test cases as JSON (a list of `{name, expect, events}`),
    /// edited as text; empty means none.
    #[serde(default)]
    tests: String,
}

/// Longest test-case text the form accepts (the rule crate bounds the cases
/// themselves; this bounds the parse).
const MAX_TESTS_JSON: usize = 256 * 1024;

/// Test cases as the form shows them: pretty JSON, empty when none.
fn tests_text(v: &rule_version::Model) -> String {
    let t = rules::version_tests(v);
    if t.is_empty() {
        String::new()
    } else {
        serde_json::to_string_pretty(&t).unwrap_or_default()
    }
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
            tests: self.parsed_tests()?,
        })
    }

    /// The test cases typed in the form; a JSON error names its line and column.
    fn parsed_tests(&self) -> Result<Vec<picket_rules::TestCase>, ApiError> {
        if self.tests.len() > MAX_TESTS_JSON {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("tests: at most {MAX_TESTS_JSON} bytes of JSON"),
            ));
        }
        if self.tests.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&self.tests).map_err(|e| {
            ApiError::bad_request(
                "invalid_field",
                format!(
                    "tests line {}, column {}: not a list of test cases ({e})",
                    e.line(),
                    e.column()
                ),
            )
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
        "tests",
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
        tests: tests_text(v),
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
    PageForm(f): PageForm<RuleForm>,
) -> PageResult {
    let (action, heading) = (format!("/rules/{id}/edit"), "New version".to_owned());
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

/// A rule deployed through Picket, with its drift state.
struct DriftRow {
    rule_id: Uuid,
    rule: String,
    connection_id: Uuid,
    connection: String,
    version: i32,
    badge: Badge,
    checked: String,
    drifted: bool,
}

#[derive(Template)]
#[template(path = "console/drift.html")]
struct DriftPage {
    chrome: Chrome,
    rows: Vec<DriftRow>,
    drifted: usize,
    can_resolve: bool,
}

/// `GET /drift`: every rule deployed through Picket and whether its content
/// on the SIEM still matches; drifted ones with their resolutions.
pub async fn drift(State(state): State<AppState>, user: Page<perm::View>) -> PageResult {
    let n = names(&state, user.scope()).await?;
    let mut rows: Vec<DriftRow> = crate::service::drift::list(&state.db, user.tenant_id)
        .await?
        .into_iter()
        .map(|r| DriftRow {
            rule: n.titles.get(&r.rule_id).cloned().unwrap_or_default(),
            connection: n.conns.get(&r.connection_id).cloned().unwrap_or_default(),
            badge: views::drift_badge(&r.state),
            checked: r
                .drift_checked_at
                .map_or_else(|| "not checked yet".to_owned(), views::when),
            drifted: r.state == "drift_detected",
            rule_id: r.rule_id,
            connection_id: r.connection_id,
            version: r.version,
        })
        .collect();
    // Drifted first: they are what needs someone.
    rows.sort_by_key(|r| !r.drifted);
    ok(&DriftPage {
        chrome: Chrome::of(&user, "Drift", "drift"),
        drifted: rows.iter().filter(|r| r.drifted).count(),
        rows,
        can_resolve: may(&user, Permission::RequestDeployment),
    })
}

/// The drift resolution form's fields.
#[derive(Deserialize)]
pub struct ResolveForm {
    connection_id: Uuid,
    /// `redeploy`, `archive` or `accept_remote`.
    resolution: crate::service::drift::Resolution,
    message: Option<String>,
}

/// `POST /rules/{id}/drift/resolve`: redeploy (a new request, approved like
/// any change: goes to it) or archive (stop tracking: back to the list).
pub async fn resolve_drift(
    State(state): State<AppState>,
    user: Page<perm::RequestDeployment>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<ResolveForm>,
) -> PageResult {
    // The rule first: another tenant's id is a 404 whatever the form says.
    user.scope()
        .get::<crate::db::entity::rule::Entity>(&state.db, id, "rule")
        .await?;
    let d = crate::service::drift::resolve(
        &state,
        &user,
        id,
        f.connection_id,
        f.resolution,
        f.message.unwrap_or_default(),
    )
    .await?;
    Ok(match d {
        crate::service::drift::Resolved::Request(d) => see_other(&format!("/deployments/{}", d.id)),
        crate::service::drift::Resolved::Version(v) => see_other(&format!("/rules/{}", v.rule_id)),
        crate::service::drift::Resolved::Archived => see_other("/drift"),
    })
}
