//! Deployment requests, decisions, dispatch and results.
//!
//! A request names one or more rule versions (items, applied in order) for
//! one SIEM connection. Its digest (SHA-256 over a canonical form of exactly
//! what will be applied) is what approvers sign off: an approval counts only
//! for the digest it names, so a request changed after approval needs
//! approving again. [`may_approve`] is the one place that decides who may
//! approve. When the tenant's minimum number of distinct approvals for the
//! current digest is reached, the batch is sealed into the outbox in the same
//! transaction and the agent's connection is woken.
//!
//! States of a request:
//!
//! ```text
//! pending_approval ─approve (enough)→ queued → delivered → succeeded | failed | refused | expired
//!        │   ↑ update                   ↑
//!        │   └── changes_requested      └── dry runs and breakglass start here
//!        ├─reject→ rejected
//!        └─withdraw (requester)→ withdrawn
//! ```
//!
//! Items: `queued` → `sent` (the agent acknowledged the job) → `applied` /
//! `failed` / `reverted` / `revert_failed` / `skipped` (or, for a dry run,
//! `would_create` / `would_change` / `unchanged`).

use picket_proto::{
    Batch, BatchItem, BatchOp, ItemOutcome, ItemStatus, JobAction, JobResult, JobSpec,
    MAX_BATCH_ITEMS, PreviousState, RuleSpec, Schedule,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, EntityTrait as _, QueryFilter as _, QueryOrder as _, Set,
    TransactionTrait as _,
};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Outcome};
use crate::auth::CurrentUser;
use crate::db::entity::{
    agent, approval, breakglass_review, deployment, deployment_item, notification, rule,
    rule_deployment, rule_version, siem_connection, tenant,
};
use crate::error::{ApiError, ApiResult};
use crate::service::scope::TenantScope;
use crate::service::{connections, jobs, rules, validate};
use crate::time::unix_now;

/// What an item does to the rule on the SIEM.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create or update the rule with the given version.
    Deploy,
    /// Disable the deployed rule.
    Disable,
    /// Enable the deployed rule.
    Enable,
    /// Delete the deployed rule.
    Delete,
}

impl Action {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Delete => "delete",
        }
    }
}

/// One item of a request, as asked.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    /// The rule.
    pub rule_id: Uuid,
    /// The version (for `disable`, `enable` and `delete`: the version the
    /// change is about, usually the one deployed).
    pub version: i32,
    /// What to do (default `deploy`).
    #[serde(default = "default_action")]
    pub action: Action,
    /// Deploy with alerting off (monitoring mode).
    #[serde(default)]
    pub monitoring: bool,
}

fn default_action() -> Action {
    Action::Deploy
}

/// A new request.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// The SIEM connection.
    pub connection_id: Uuid,
    /// The items, in order.
    pub items: Vec<ItemRequest>,
    /// Why (shown to approvers).
    pub message: String,
    /// Only report what would change; runs without approval.
    pub dry_run: bool,
    /// `change`, `rollback` or `redeploy`.
    pub kind: &'static str,
}

/// Longest comment, message or breakglass reason.
const MAX_TEXT: usize = 2000;

/// An item resolved against the database.
struct Resolved {
    req: ItemRequest,
    version: rule_version::Model,
}

async fn resolve(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    items: &[ItemRequest],
) -> ApiResult<Vec<Resolved>> {
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_items",
            "a deployment needs at least one item",
        ));
    }
    if items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_request(
            "invalid_items",
            format!("a deployment holds at most {MAX_BATCH_ITEMS} items"),
        ));
    }
    let mut out: Vec<Resolved> = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        if out.iter().any(|r| r.req.rule_id == it.rule_id) {
            return Err(ApiError::bad_request(
                "duplicate_rule",
                format!("item {i} names rule {} a second time", it.rule_id),
            ));
        }
        if it.monitoring && it.action != Action::Deploy {
            return Err(ApiError::bad_request(
                "invalid_items",
                format!("item {i}: monitoring applies to deploy items only"),
            ));
        }
        TenantScope::new(tenant_id)
            .get::<rule::Entity>(conn, it.rule_id, "rule")
            .await?;
        let version = TenantScope::new(tenant_id)
            .find::<rule_version::Entity>()
            .filter(rule_version::Column::RuleId.eq(it.rule_id))
            .filter(rule_version::Column::Version.eq(it.version))
            .one(conn)
            .await?
            .ok_or(ApiError::NotFound("rule version"))?;
        out.push(Resolved {
            req: it.clone(),
            version,
        });
    }
    Ok(out)
}

/// SHA-256 (hex) of a canonical form of exactly what will be applied.
fn digest(c: &siem_connection::Model, dry_run: bool, kind: &str, items: &[Resolved]) -> String {
    // serde_json with a fixed field order per object: a canonical form.
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|r| {
            let v = &r.version;
            serde_json::json!({
                "action": r.req.action.as_str(),
                "monitoring": r.req.monitoring,
                "rule_id": v.rule_id,
                "version": v.version,
                "title": v.title,
                "description": v.description,
                "severity": v.severity,
                "query": v.query,
                "cron": v.cron,
                "earliest": v.earliest,
                "latest": v.latest,
            })
        })
        .collect();
    let canonical = serde_json::json!({
        "connection_id": c.id,
        "dry_run": dry_run,
        "kind": kind,
        "items": items,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

async fn insert_items(
    txn: &DatabaseTransaction,
    tenant_id: Uuid,
    deployment_id: Uuid,
    items: &[Resolved],
) -> ApiResult<()> {
    let now = unix_now();
    for (i, r) in items.iter().enumerate() {
        deployment_item::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant_id),
            deployment_id: Set(deployment_id),
            position: Set(i32::try_from(i).unwrap_or(i32::MAX)),
            rule_id: Set(r.version.rule_id),
            rule_version_id: Set(r.version.id),
            version: Set(r.version.version),
            action: Set(r.req.action.as_str().to_owned()),
            monitoring: Set(r.req.monitoring),
            status: Set("queued".into()),
            error_class: Set(None),
            content_hash: Set(None),
            preview_job_id: Set(None),
            preview_status: Set(None),
            preview_count: Set(None),
            preview_window_secs: Set(None),
            preview_error: Set(None),
            preview_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

/// Creates a request. A dry run is dispatched at once (it changes nothing,
/// so it needs no approval); a breakglass request (`breakglass_reason`, an
/// Admin only: the route checks) is dispatched at once, flagged, and opens a
/// review every Admin is notified of. Everything else waits for approval.
///
/// # Errors
/// 404 for a rule, version or connection outside this tenant; 400 on bad items or text.
pub async fn request(
    state: &AppState,
    user: &CurrentUser,
    req: NewRequest,
    breakglass_reason: Option<&str>,
) -> ApiResult<deployment::Model> {
    validate::optional_text("message", &req.message, MAX_TEXT)?;
    if let Some(reason) = breakglass_reason {
        validate::text("reason", reason, MAX_TEXT)?;
        if reason.trim().len() < 10 {
            return Err(ApiError::bad_request(
                "invalid_reason",
                "a breakglass deployment needs a written reason of at least 10 characters",
            ));
        }
    }
    let tenant_id = user.tenant_id;
    let txn = state.db.begin().await?;
    let c = connections::get(&txn, tenant_id, req.connection_id).await?;
    let items = resolve(&txn, tenant_id, &req.items).await?;
    let now = unix_now();
    let first = items
        .first()
        .ok_or_else(|| ApiError::bad_request("invalid_items", "no items"))?;
    let dispatch_now = req.dry_run || breakglass_reason.is_some();
    let d = deployment::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        rule_id: Set(first.version.rule_id),
        rule_version_id: Set(first.version.id),
        version: Set(first.version.version),
        connection_id: Set(c.id),
        agent_id: Set(c.agent_id),
        action: Set(first.req.action.as_str().to_owned()),
        message: Set(req.message.clone()),
        requested_by: Set(user.id),
        digest: Set(digest(&c, req.dry_run, req.kind, &items)),
        status: Set("pending_approval".into()),
        error_class: Set(None),
        job_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        dry_run: Set(req.dry_run),
        kind: Set(req.kind.to_owned()),
        breakglass_reason: Set(breakglass_reason.map(str::to_owned)),
    }
    .insert(&txn)
    .await?;
    insert_items(&txn, tenant_id, d.id, &items).await?;
    let summary: Vec<serde_json::Value> = items
        .iter()
        .map(|r| serde_json::json!({ "rule_id": r.version.rule_id, "version": r.version.version, "action": r.req.action.as_str(), "monitoring": r.req.monitoring }))
        .collect();
    audit::record(
        &txn,
        user.event("deployment.request", "deployment", d.id)
            .details(serde_json::json!({ "connection_id": c.id, "items": summary, "dry_run": req.dry_run, "kind": req.kind, "digest": d.digest, "breakglass": breakglass_reason.is_some() })),
    )
    .await?;
    let mut wake = None;
    if !dispatch_now && state.config.preview_on_request {
        wake = start_preview(&txn, state, &d).await?;
    }
    let d = if dispatch_now {
        if let Some(reason) = breakglass_reason {
            breakglass_records(&txn, user, &d, reason).await?;
        }
        let (d, agent_id) = dispatch(&txn, state, d).await?;
        wake = Some(agent_id);
        d
    } else {
        d
    };
    txn.commit().await?;
    if let Some(a) = wake {
        state.registry.wake(a);
    }
    Ok(d)
}

/// The window a preview counts over: the last 24 hours.
pub const PREVIEW_WINDOW_SECS: u32 = 24 * 3600;

/// Sends one `preview_count` job for the `deploy` items of `d` (the others
/// change no query), in `txn`: each item whose query has a preview form
/// (`picket_rules::preview_query`) is marked `queued` with the job, the
/// others `unsupported` with the reason. Returns the agent to wake, or
/// `None` when no job was sent (nothing to count, or the agent is revoked:
/// items are then `failed` with `agent_revoked`).
///
/// # Errors
/// On storage failure.
pub async fn start_preview(
    txn: &DatabaseTransaction,
    state: &AppState,
    d: &deployment::Model,
) -> ApiResult<Option<Uuid>> {
    use picket_proto::{Preview, PreviewRule};
    let scope = TenantScope::new(d.tenant_id);
    let now = unix_now();
    let mut rules = Vec::new();
    let mut queued = Vec::new();
    for it in items(txn, d.tenant_id, d.id).await? {
        if it.action != Action::Deploy.as_str() {
            continue;
        }
        let v = scope
            .get::<rule_version::Entity>(txn, it.rule_version_id, "rule version")
            .await?;
        let language =
            picket_rules::Language::parse(&v.language).unwrap_or(picket_rules::Language::Spl);
        match picket_rules::preview_query(language, &v.query) {
            Ok(query) => {
                rules.push(PreviewRule {
                    rule_id: it.rule_id,
                    query,
                });
                queued.push(it);
            }
            Err(why) => {
                set_preview(txn, it, "unsupported", None, Some(why), None, now).await?;
            }
        }
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let c = connections::get(txn, d.tenant_id, d.connection_id).await?;
    let a = scope.get::<agent::Entity>(txn, c.agent_id, "agent").await?;
    if a.revoked_at.is_some() {
        for it in queued {
            let why = Some("agent_revoked".to_owned());
            set_preview(txn, it, "failed", None, why, None, now).await?;
        }
        return Ok(None);
    }
    let spec = JobSpec {
        target: connections::target_for_job(txn, &state.keys, &c).await?,
        action: JobAction::PreviewCount {
            preview: Preview {
                window_secs: PREVIEW_WINDOW_SECS,
                rules,
            },
        },
    };
    // No deployment id on the job: its acknowledgement and result must not
    // move the request's own status.
    let j = jobs::enqueue(txn, &state.keys, &a, &spec, None, state.config.job_ttl_secs).await?;
    drop(spec);
    for it in queued {
        set_preview(txn, it, "queued", None, None, Some(j.id), now).await?;
    }
    Ok(Some(a.id))
}

async fn set_preview(
    txn: &impl ConnectionTrait,
    it: deployment_item::Model,
    status: &str,
    count: Option<u64>,
    error: Option<String>,
    job_id: Option<Uuid>,
    now: i64,
) -> ApiResult<()> {
    let keep_job = it.preview_job_id;
    let mut am: deployment_item::ActiveModel = it.into();
    am.preview_status = Set(Some(status.to_owned()));
    am.preview_count = Set(count.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
    am.preview_error = Set(error);
    am.preview_job_id = Set(job_id.or(keep_job));
    am.preview_window_secs = Set(Some(i32::try_from(PREVIEW_WINDOW_SECS).unwrap_or(i32::MAX)));
    am.preview_at = Set(Some(now));
    am.update(txn).await?;
    Ok(())
}

/// Asks for a new preview of a request awaiting a decision (the last one
/// may be stale, or was never run); audited `deployment.preview`.
///
/// # Errors
/// 404 outside the tenant; 409 `not_pending` once decided or dispatched.
pub async fn preview(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
) -> ApiResult<deployment::Model> {
    let txn = state.db.begin().await?;
    let d = user
        .scope()
        .get::<deployment::Entity>(&txn, id, "deployment")
        .await?;
    if !matches!(d.status.as_str(), "pending_approval" | "changes_requested") {
        return Err(ApiError::conflict(
            "not_pending",
            format!(
                "deployment is {}; previews are for requests awaiting a decision",
                d.status
            ),
        ));
    }
    let wake = start_preview(&txn, state, &d).await?;
    audit::record(&txn, user.event("deployment.preview", "deployment", d.id)).await?;
    txn.commit().await?;
    if let Some(a) = wake {
        state.registry.wake(a);
    }
    Ok(d)
}

/// Stores what a `preview_count` job counted, on the items it was sent for
/// (an item asked again since keeps only the newer job's answer). Called in
/// the transaction that records the job's result.
///
/// # Errors
/// On storage failure.
pub async fn apply_preview(
    txn: &impl ConnectionTrait,
    job_id: Uuid,
    r: &JobResult,
) -> ApiResult<()> {
    let waiting = deployment_item::Entity::find()
        .filter(deployment_item::Column::PreviewJobId.eq(job_id))
        .filter(deployment_item::Column::PreviewStatus.eq("queued"))
        .all(txn)
        .await?;
    let now = unix_now();
    let outcomes: &[ItemOutcome] = r.items.as_deref().unwrap_or(&[]);
    for it in waiting {
        let found = outcomes.iter().find(|o| o.rule_id == it.rule_id);
        match found {
            Some(o) if o.status == ItemStatus::Counted && o.count.is_some() => {
                set_preview(txn, it, "counted", o.count, None, None, now).await?;
            }
            Some(o) => {
                let class = o.error_class.map(|c| c.as_str().to_owned());
                set_preview(txn, it, "failed", None, class, None, now).await?;
            }
            None => {
                // The whole job failed or was refused (policy, expiry...).
                let class = r
                    .error_class
                    .map_or_else(|| "internal".to_owned(), |c| c.as_str().to_owned());
                set_preview(txn, it, "failed", None, Some(class), None, now).await?;
            }
        }
    }
    Ok(())
}

/// The review task and the notice every Admin sees, for a breakglass deployment.
async fn breakglass_records(
    txn: &DatabaseTransaction,
    user: &CurrentUser,
    d: &deployment::Model,
    reason: &str,
) -> ApiResult<()> {
    let now = unix_now();
    breakglass_review::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(user.tenant_id),
        deployment_id: Set(d.id),
        requested_by: Set(user.id),
        reason: Set(reason.to_owned()),
        created_at: Set(now),
        signed_off_by: Set(None),
        signed_off_at: Set(None),
        comment: Set(None),
    }
    .insert(txn)
    .await?;
    notification::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(user.tenant_id),
        kind: Set("breakglass".into()),
        deployment_id: Set(Some(d.id)),
        message: Set(format!(
            "{} deployed without approval (breakglass): {reason}",
            user.email
        )),
        created_by: Set(user.id),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    audit::record(
        txn,
        user.event("deployment.breakglass", "deployment", d.id)
            .details(serde_json::json!({ "reason": reason, "digest": d.digest })),
    )
    .await?;
    Ok(())
}

/// Replaces the items of a request awaiting approval (or sent back with
/// changes requested); only its requester may. The digest changes, so
/// approvals given so far no longer count.
///
/// # Errors
/// 404 outside the tenant; 403 for anyone but the requester; 409 once dispatched or decided.
pub async fn update(
    db: &DatabaseConnection,
    user: &CurrentUser,
    id: Uuid,
    items: &[ItemRequest],
    message: Option<&str>,
) -> ApiResult<deployment::Model> {
    let txn = db.begin().await?;
    let d = user
        .scope()
        .get::<deployment::Entity>(&txn, id, "deployment")
        .await?;
    if d.requested_by != user.id {
        return Err(ApiError::Forbidden(
            "only the requester can change a deployment request".into(),
        ));
    }
    if !matches!(d.status.as_str(), "pending_approval" | "changes_requested") {
        return Err(ApiError::conflict(
            "not_pending",
            format!("deployment is {}; it can no longer change", d.status),
        ));
    }
    if let Some(m) = message {
        validate::optional_text("message", m, MAX_TEXT)?;
    }
    let c = connections::get(&txn, user.tenant_id, d.connection_id).await?;
    let resolved = resolve(&txn, user.tenant_id, items).await?;
    let first = resolved
        .first()
        .ok_or_else(|| ApiError::bad_request("invalid_items", "no items"))?;
    let new_digest = digest(&c, d.dry_run, &d.kind, &resolved);
    deployment_item::Entity::delete_many()
        .filter(deployment_item::Column::DeploymentId.eq(d.id))
        .exec(&txn)
        .await?;
    insert_items(&txn, user.tenant_id, d.id, &resolved).await?;
    let old_digest = d.digest.clone();
    let mut am: deployment::ActiveModel = d.into();
    am.rule_id = Set(first.version.rule_id);
    am.rule_version_id = Set(first.version.id);
    am.version = Set(first.version.version);
    am.action = Set(first.req.action.as_str().to_owned());
    am.digest = Set(new_digest.clone());
    am.status = Set("pending_approval".into());
    if let Some(m) = message {
        am.message = Set(m.to_owned());
    }
    am.updated_at = Set(unix_now());
    let d = am.update(&txn).await?;
    audit::record(
        &txn,
        user.event("deployment.update", "deployment", d.id)
            .details(serde_json::json!({ "old_digest": old_digest, "digest": new_digest })),
    )
    .await?;
    txn.commit().await?;
    Ok(d)
}

/// The one place that decides whether `user` may decide on `d` at all
/// (approve, reject or request changes): never its requester, never the
/// author of any version it includes. Reject and request-changes are gated
/// like approve: a requester who could reject their own request could also
/// pick which reviewer's "changes requested" stands, and an author could
/// bury a colleague's fix. A requester who no longer wants the change
/// withdraws it instead ([`withdraw`]). Returns the reason when not.
///
/// # Errors
/// On storage failure.
pub async fn may_approve(
    conn: &impl ConnectionTrait,
    user: &CurrentUser,
    d: &deployment::Model,
) -> ApiResult<Result<(), &'static str>> {
    if d.requested_by == user.id {
        return Ok(Err(
            "the requester of a deployment cannot approve, reject or request changes on it (withdraw it instead)",
        ));
    }
    let items = items(conn, user.tenant_id, d.id).await?;
    for it in items {
        let v = user
            .scope()
            .get::<rule_version::Entity>(conn, it.rule_version_id, "rule version")
            .await?;
        if v.author_id == user.id {
            return Ok(Err(
                "the author of a rule version in this deployment cannot approve, reject or request changes on it",
            ));
        }
    }
    Ok(Ok(()))
}

async fn deny(
    db: &DatabaseConnection,
    user: &CurrentUser,
    d: &deployment::Model,
    decision: Decision,
    reason: &str,
) -> ApiResult<ApiError> {
    audit::record(
        db,
        user.event(decision.audit_action(), "deployment", d.id)
            .outcome(Outcome::Denied)
            .details(serde_json::json!({ "reason": reason })),
    )
    .await?;
    Ok(ApiError::Forbidden(reason.to_owned()))
}

/// Withdraws a request awaiting a decision (or sent back with changes
/// requested); only its requester may. Final, like a rejection, but it is
/// the requester's own act, so no reviewer decision is recorded.
///
/// # Errors
/// 404 outside the tenant; 403 for anyone but the requester (audited as
/// denied); 409 `not_pending` once dispatched or decided; 400 for a comment
/// over the size limit.
pub async fn withdraw(
    db: &DatabaseConnection,
    user: &CurrentUser,
    id: Uuid,
    comment: Option<String>,
) -> ApiResult<deployment::Model> {
    if let Some(c) = &comment {
        validate::optional_text("comment", c, MAX_TEXT)?;
    }
    let txn = db.begin().await?;
    let d = user
        .scope()
        .get::<deployment::Entity>(&txn, id, "deployment")
        .await?;
    if d.requested_by != user.id {
        drop(txn);
        let reason = "only the requester can withdraw a deployment request";
        audit::record(
            db,
            user.event("deployment.withdraw", "deployment", id)
                .outcome(Outcome::Denied)
                .details(serde_json::json!({ "reason": reason })),
        )
        .await?;
        return Err(ApiError::Forbidden(reason.into()));
    }
    if !matches!(d.status.as_str(), "pending_approval" | "changes_requested") {
        return Err(ApiError::conflict(
            "not_pending",
            format!("deployment is {}; it can no longer be withdrawn", d.status),
        ));
    }
    audit::record(
        &txn,
        user.event("deployment.withdraw", "deployment", d.id)
            .details(serde_json::json!({ "digest": d.digest, "comment": comment })),
    )
    .await?;
    let mut am: deployment::ActiveModel = d.into();
    am.status = Set("withdrawn".into());
    am.updated_at = Set(unix_now());
    let d = am.update(&txn).await?;
    txn.commit().await?;
    Ok(d)
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Approve the digest.
    Approve,
    /// Refuse the request for good.
    Reject,
    /// Send it back to the requester.
    RequestChanges,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::RequestChanges => "request_changes",
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            Decision::Approve => "deployment.approve",
            Decision::Reject => "deployment.reject",
            Decision::RequestChanges => "deployment.request_changes",
        }
    }
}

/// Records a decision on a request awaiting approval. `seen_digest`, when
/// given, must be the request's current digest (what the reviewer looked
/// at). An approval that brings the approvals of the current digest to the
/// tenant's minimum dispatches the batch and wakes the agent.
///
/// # Errors
/// 403 for the requester or an author, whatever the decision (audited as
/// denied); 404
/// outside the tenant; 409 `digest_changed` when the request changed since
/// the reviewer saw it, `not_pending` when it awaits no decision,
/// `already_decided` for a second decision on the same digest; 400 when a
/// rejection or change request has no comment.
pub async fn decide(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    decision: Decision,
    comment: Option<String>,
    seen_digest: Option<String>,
    test_override: Option<String>,
) -> ApiResult<deployment::Model> {
    let db = &state.db;
    let d = get(db, user.tenant_id, id).await?;
    match &comment {
        Some(c) => validate::optional_text("comment", c, MAX_TEXT)?,
        None if decision != Decision::Approve => {
            return Err(ApiError::bad_request(
                "comment_required",
                "a rejection or a change request needs a comment",
            ));
        }
        None => {}
    }
    if let Err(reason) = may_approve(db, user, &d).await? {
        return Err(deny(db, user, &d, decision, reason).await?);
    }
    let txn = db.begin().await?;
    // Re-read inside the transaction: the state may have moved since.
    let d = user
        .scope()
        .get::<deployment::Entity>(&txn, id, "deployment")
        .await?;
    if d.status != "pending_approval" {
        return Err(ApiError::conflict(
            "not_pending",
            format!("deployment is {}, not awaiting approval", d.status),
        ));
    }
    if let Some(seen) = &seen_digest
        && *seen != d.digest
    {
        return Err(ApiError::conflict(
            "digest_changed",
            format!(
                "the request changed after you reviewed it: you saw digest {seen}, it is now {}; review it again",
                d.digest
            ),
        ));
    }
    // Rule test gate: every included version's tests must have passed on
    // this connection, unless an Admin overrides with a reason.
    if decision == Decision::Approve {
        let versions: Vec<(Uuid, bool)> = items(&txn, user.tenant_id, d.id)
            .await?
            .iter()
            .map(|i| (i.rule_version_id, i.action == Action::Deploy.as_str()))
            .collect();
        let require_tests = tenant::Entity::find_by_id(user.tenant_id)
            .one(&txn)
            .await?
            .is_some_and(|t| t.require_tests);
        rules::enforce_tests_gate(
            &txn,
            user,
            d.id,
            d.connection_id,
            &versions,
            require_tests,
            test_override.as_deref(),
        )
        .await?;
    }
    approval::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(user.tenant_id),
        deployment_id: Set(d.id),
        user_id: Set(user.id),
        decision: Set(decision.as_str().into()),
        comment: Set(comment.clone()),
        digest: Set(d.digest.clone()),
        created_at: Set(unix_now()),
    }
    .insert(&txn)
    .await
    .map_err(|_| {
        ApiError::conflict(
            "already_decided",
            "you have already decided on this version of the request",
        )
    })?;
    audit::record(
        &txn,
        user.event(decision.audit_action(), "deployment", d.id)
            .details(serde_json::json!({ "digest": d.digest, "comment": comment })),
    )
    .await?;
    let mut wake = None;
    let d = match decision {
        Decision::Reject | Decision::RequestChanges => {
            let mut am: deployment::ActiveModel = d.into();
            am.status = Set(if decision == Decision::Reject {
                "rejected"
            } else {
                "changes_requested"
            }
            .into());
            am.updated_at = Set(unix_now());
            am.update(&txn).await?
        }
        Decision::Approve => {
            let t = tenant::Entity::find_by_id(user.tenant_id)
                .one(&txn)
                .await?
                .ok_or(ApiError::NotFound("tenant"))?;
            let approvals = counted_approvals(&txn, &d).await?;
            if approvals >= u64::try_from(t.min_approvers.max(1)).unwrap_or(1) {
                let (d, agent_id) = dispatch(&txn, state, d).await?;
                wake = Some(agent_id);
                d
            } else {
                d
            }
        }
    };
    txn.commit().await?;
    if let Some(agent_id) = wake {
        state.registry.wake(agent_id);
    }
    Ok(d)
}

/// Distinct approvers of the request's current digest.
async fn counted_approvals(conn: &impl ConnectionTrait, d: &deployment::Model) -> ApiResult<u64> {
    let rows = approval::Entity::find()
        .filter(approval::Column::DeploymentId.eq(d.id))
        .filter(approval::Column::Digest.eq(d.digest.clone()))
        .filter(approval::Column::Decision.eq("approve"))
        .all(conn)
        .await?;
    let mut users: Vec<Uuid> = rows.into_iter().map(|a| a.user_id).collect();
    users.sort_unstable();
    users.dedup();
    Ok(u64::try_from(users.len()).unwrap_or(u64::MAX))
}

fn rule_spec(v: &rule_version::Model) -> RuleSpec {
    RuleSpec {
        rule_id: v.rule_id,
        version: u32::try_from(v.version).unwrap_or(0),
        title: v.title.clone(),
        description: v.description.clone(),
        severity: rules::parse_severity(&v.severity).unwrap_or(picket_proto::Severity::Medium),
        query: v.query.clone(),
        schedule: Schedule {
            cron: v.cron.clone(),
            earliest: v.earliest.clone(),
            latest: v.latest.clone(),
        },
    }
}

/// Seals the request's batch into the outbox and marks it `queued`. Returns
/// the updated request and the agent to wake after commit.
async fn dispatch(
    txn: &DatabaseTransaction,
    state: &AppState,
    d: deployment::Model,
) -> ApiResult<(deployment::Model, Uuid)> {
    let c = connections::get(txn, d.tenant_id, d.connection_id).await?;
    let a = TenantScope::new(d.tenant_id)
        .get::<agent::Entity>(txn, c.agent_id, "agent")
        .await?;
    let mut batch_items = Vec::new();
    for it in items(txn, d.tenant_id, d.id).await? {
        let v = TenantScope::new(d.tenant_id)
            .get::<rule_version::Entity>(txn, it.rule_version_id, "rule version")
            .await?;
        let previous = match current(txn, d.tenant_id, it.rule_id, c.id).await? {
            Some(rd) if rd.state != "removed" => {
                let pv = TenantScope::new(d.tenant_id)
                    .get::<rule_version::Entity>(txn, rd.rule_version_id, "rule version")
                    .await?;
                Some(PreviousState {
                    rule: rule_spec(&pv),
                    monitoring: rd.monitoring,
                    enabled: rd.enabled,
                })
            }
            _ => None,
        };
        let op = match it.action.as_str() {
            "deploy" => BatchOp::Deploy {
                rule: rule_spec(&v),
                monitoring: it.monitoring,
            },
            "disable" => BatchOp::Disable,
            "enable" => BatchOp::Enable,
            "delete" => BatchOp::Delete,
            other => {
                return Err(
                    anyhow::anyhow!("deployment {} has unknown action {other:?}", d.id).into(),
                );
            }
        };
        batch_items.push(BatchItem {
            rule_id: it.rule_id,
            op,
            previous,
        });
    }
    let spec = JobSpec {
        target: connections::target_for_job(txn, &state.keys, &c).await?,
        action: JobAction::DeployBatch {
            batch: Batch {
                dry_run: d.dry_run,
                items: batch_items,
            },
        },
    };
    let job = jobs::enqueue(
        txn,
        &state.keys,
        &a,
        &spec,
        Some(d.id),
        state.config.job_ttl_secs,
    )
    .await?;
    drop(spec); // the decrypted credential is zeroized here
    let mut am: deployment::ActiveModel = d.into();
    am.status = Set("queued".into());
    am.job_id = Set(Some(job.id));
    am.updated_at = Set(unix_now());
    Ok((am.update(txn).await?, a.id))
}

/// What is deployed now for a rule on a connection, if anything ever was.
///
/// # Errors
/// On storage failure.
pub async fn current(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    rule_id: Uuid,
    connection_id: Uuid,
) -> ApiResult<Option<rule_deployment::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<rule_deployment::Entity>()
        .filter(rule_deployment::Column::RuleId.eq(rule_id))
        .filter(rule_deployment::Column::ConnectionId.eq(connection_id))
        .one(conn)
        .await?)
}

/// Moves the items of a deployment whose job was acknowledged (`sent`) or
/// ended without a result (expired, agent revoked: `failed`).
///
/// # Errors
/// On storage failure.
pub async fn set_items_status(
    conn: &impl ConnectionTrait,
    deployment_id: Uuid,
    status: &str,
    error_class: Option<&str>,
) -> ApiResult<()> {
    deployment_item::Entity::update_many()
        .col_expr(deployment_item::Column::Status, Expr::value(status))
        .col_expr(
            deployment_item::Column::ErrorClass,
            Expr::value(error_class.map(str::to_owned)),
        )
        .col_expr(deployment_item::Column::UpdatedAt, Expr::value(unix_now()))
        .filter(deployment_item::Column::DeploymentId.eq(deployment_id))
        .filter(deployment_item::Column::Status.is_in(["queued", "sent"]))
        .exec(conn)
        .await?;
    Ok(())
}

/// Stores a batch job's per-item outcomes and, for applied items, what is
/// now deployed (the basis of rollback and drift checks). Called in the
/// transaction that records the job's result.
///
/// # Errors
/// On storage failure.
pub async fn apply_result(
    txn: &impl ConnectionTrait,
    deployment_id: Uuid,
    r: &JobResult,
) -> ApiResult<()> {
    let Some(d) = deployment::Entity::find_by_id(deployment_id)
        .one(txn)
        .await?
    else {
        return Ok(());
    };
    let rows = items(txn, d.tenant_id, d.id).await?;
    let outcomes: &[ItemOutcome] = r.items.as_deref().unwrap_or(&[]);
    let now = unix_now();
    for (i, it) in rows.into_iter().enumerate() {
        // Outcomes come in the batch's order; one for another rule is ignored.
        let o = outcomes.get(i).filter(|o| o.rule_id == it.rule_id);
        let (status, class, hash) = match o {
            Some(o) => (
                o.status.as_str().to_owned(),
                o.error_class.map(|c| c.as_str().to_owned()),
                o.content_hash.map(|h| hex::encode(h.0)),
            ),
            // No per-item outcome (refused before running): the job's class.
            None => (
                "failed".to_owned(),
                r.error_class.map(|c| c.as_str().to_owned()),
                None,
            ),
        };
        let applied = o.is_some_and(|o| o.status == ItemStatus::Applied);
        let mut am: deployment_item::ActiveModel = it.clone().into();
        am.status = Set(status);
        am.error_class = Set(class);
        am.content_hash = Set(hash.clone());
        am.updated_at = Set(now);
        am.update(txn).await?;
        if applied && !d.dry_run {
            record_deployed(txn, &d, &it, hash).await?;
        }
    }
    Ok(())
}

/// Updates `rule_deployments` for one applied item.
async fn record_deployed(
    txn: &impl ConnectionTrait,
    d: &deployment::Model,
    it: &deployment_item::Model,
    hash: Option<String>,
) -> ApiResult<()> {
    let now = unix_now();
    let existing = current(txn, d.tenant_id, it.rule_id, d.connection_id).await?;
    match (it.action.as_str(), existing) {
        ("deploy", None) => {
            rule_deployment::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(d.tenant_id),
                rule_id: Set(it.rule_id),
                connection_id: Set(d.connection_id),
                rule_version_id: Set(it.rule_version_id),
                version: Set(it.version),
                monitoring: Set(it.monitoring),
                enabled: Set(true),
                content_hash: Set(hash),
                previous_version_id: Set(None),
                previous_version: Set(None),
                previous_monitoring: Set(false),
                previous_enabled: Set(false),
                state: Set("deployed".into()),
                drift_hash: Set(None),
                drift_checked_at: Set(None),
                remote_content: Set(None),
                last_deployment_id: Set(Some(d.id)),
                updated_at: Set(now),
            }
            .insert(txn)
            .await?;
        }
        ("deploy", Some(rd)) => {
            let was_there = rd.state != "removed";
            let mut am: rule_deployment::ActiveModel = rd.clone().into();
            // The version replaced becomes the previous one (so rolling a
            // rollback back restores it); redeploying the same version keeps it.
            if was_there && rd.rule_version_id != it.rule_version_id {
                am.previous_version_id = Set(Some(rd.rule_version_id));
                am.previous_version = Set(Some(rd.version));
                am.previous_monitoring = Set(rd.monitoring);
                am.previous_enabled = Set(rd.enabled);
            } else if !was_there {
                am.previous_version_id = Set(None);
                am.previous_version = Set(None);
            }
            am.rule_version_id = Set(it.rule_version_id);
            am.version = Set(it.version);
            am.monitoring = Set(it.monitoring);
            am.enabled = Set(true);
            am.content_hash = Set(hash);
            am.state = Set("deployed".into());
            am.drift_hash = Set(None);
            am.remote_content = Set(None);
            am.last_deployment_id = Set(Some(d.id));
            am.updated_at = Set(now);
            am.update(txn).await?;
        }
        (action @ ("disable" | "enable"), Some(rd)) => {
            let mut am: rule_deployment::ActiveModel = rd.into();
            am.enabled = Set(action == "enable");
            if hash.is_some() {
                am.content_hash = Set(hash);
            }
            am.last_deployment_id = Set(Some(d.id));
            am.updated_at = Set(now);
            am.update(txn).await?;
        }
        ("delete", Some(rd)) => {
            let mut am: rule_deployment::ActiveModel = rd.into();
            am.state = Set("removed".into());
            am.content_hash = Set(None);
            am.last_deployment_id = Set(Some(d.id));
            am.updated_at = Set(now);
            am.update(txn).await?;
        }
        // Disabling, enabling or deleting a rule never deployed through
        // Picket on this connection: nothing to track.
        _ => {}
    }
    Ok(())
}

/// Builds the one-step rollback request for a rule on a connection: deploy
/// the previously deployed version (in its previous mode), or delete the
/// rule when the current version was its first. It waits for approval like
/// any change; the version rolled back from stays in the rule's history.
///
/// # Errors
/// 404 when nothing was deployed for this rule on this connection; 409 when
/// it was removed already.
pub async fn rollback_request(
    db: &DatabaseConnection,
    user: &CurrentUser,
    rule_id: Uuid,
    connection_id: Uuid,
    message: String,
) -> ApiResult<NewRequest> {
    user.scope()
        .get::<rule::Entity>(db, rule_id, "rule")
        .await?;
    connections::get(db, user.tenant_id, connection_id).await?;
    let rd = current(db, user.tenant_id, rule_id, connection_id)
        .await?
        .ok_or(ApiError::NotFound("deployed rule"))?;
    if rd.state == "removed" {
        return Err(ApiError::conflict(
            "not_deployed",
            "the rule is not deployed on this connection; there is nothing to roll back",
        ));
    }
    let item = match (rd.previous_version_id, rd.previous_version) {
        (Some(_), Some(version)) => ItemRequest {
            rule_id,
            version,
            action: Action::Deploy,
            monitoring: rd.previous_monitoring,
        },
        _ => ItemRequest {
            rule_id,
            version: rd.version,
            action: Action::Delete,
            monitoring: false,
        },
    };
    Ok(NewRequest {
        connection_id,
        items: vec![item],
        message,
        dry_run: false,
        kind: "rollback",
    })
}

/// Signs off the review of a breakglass deployment. Only an Admin other
/// than the one who deployed may.
///
/// # Errors
/// 404 when the deployment is not a breakglass one of this tenant; 403 for
/// the Admin who deployed; 409 when already signed off.
pub async fn sign_off(
    db: &DatabaseConnection,
    user: &CurrentUser,
    deployment_id: Uuid,
    comment: Option<String>,
) -> ApiResult<breakglass_review::Model> {
    if let Some(c) = &comment {
        validate::optional_text("comment", c, MAX_TEXT)?;
    }
    let txn = db.begin().await?;
    let r = user
        .scope()
        .find::<breakglass_review::Entity>()
        .filter(breakglass_review::Column::DeploymentId.eq(deployment_id))
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("breakglass review"))?;
    if r.requested_by == user.id {
        audit::record(
            &txn,
            user.event("breakglass.sign_off", "deployment", deployment_id)
                .outcome(Outcome::Denied)
                .details(serde_json::json!({ "reason": "own breakglass deployment" })),
        )
        .await?;
        txn.commit().await?;
        return Err(ApiError::Forbidden(
            "another Admin must sign off a breakglass deployment".into(),
        ));
    }
    if r.signed_off_by.is_some() {
        return Err(ApiError::conflict(
            "already_signed_off",
            "this breakglass review is already signed off",
        ));
    }
    let mut am: breakglass_review::ActiveModel = r.into();
    am.signed_off_by = Set(Some(user.id));
    am.signed_off_at = Set(Some(unix_now()));
    am.comment = Set(comment.clone());
    let r = am.update(&txn).await?;
    audit::record(
        &txn,
        user.event("breakglass.sign_off", "deployment", deployment_id)
            .details(serde_json::json!({ "comment": comment })),
    )
    .await?;
    txn.commit().await?;
    Ok(r)
}

/// Breakglass reviews of a tenant, open ones first, newest first.
///
/// # Errors
/// On storage failure.
pub async fn reviews(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> ApiResult<Vec<breakglass_review::Model>> {
    use sea_orm::QuerySelect as _;
    let mut rows = TenantScope::new(tenant_id)
        .find::<breakglass_review::Entity>()
        .order_by_desc(breakglass_review::Column::CreatedAt)
        .limit(1000)
        .all(db)
        .await?;
    rows.sort_by_key(|r| r.signed_off_at.is_some());
    Ok(rows)
}

/// The breakglass review of one deployment, if it was one.
///
/// # Errors
/// On storage failure.
pub async fn review_of(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    deployment_id: Uuid,
) -> ApiResult<Option<breakglass_review::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<breakglass_review::Entity>()
        .filter(breakglass_review::Column::DeploymentId.eq(deployment_id))
        .one(conn)
        .await?)
}

/// Notifications every Admin of the tenant sees, newest first.
///
/// # Errors
/// On storage failure.
pub async fn notifications(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> ApiResult<Vec<notification::Model>> {
    use sea_orm::QuerySelect as _;
    Ok(TenantScope::new(tenant_id)
        .find::<notification::Entity>()
        .order_by_desc(notification::Column::CreatedAt)
        .limit(1000)
        .all(db)
        .await?)
}

/// Changes the tenant's approval policy, the fields given only, in one
/// transaction: `min_approvers` (1 to 10, audited `tenant.min_approvers`)
/// and `require_tests` (audited `tenant.require_tests`). Nothing is written
/// (or audited) when a value is unchanged. Returns the tenant as it now is.
///
/// # Errors
/// 400 `invalid_min_approvers` outside 1..=10 (nothing changes).
pub async fn set_approval_policy(
    db: &DatabaseConnection,
    user: &CurrentUser,
    min_approvers: Option<i32>,
    require_tests: Option<bool>,
) -> ApiResult<tenant::Model> {
    if let Some(n) = min_approvers
        && !(1..=10).contains(&n)
    {
        return Err(ApiError::bad_request(
            "invalid_min_approvers",
            "min_approvers must be between 1 and 10",
        ));
    }
    let txn = db.begin().await?;
    let t = tenant::Entity::find_by_id(user.tenant_id)
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let (old_min, old_req) = (t.min_approvers, t.require_tests);
    let mut am: tenant::ActiveModel = t.clone().into();
    let mut changed = false;
    if let Some(n) = min_approvers
        && n != old_min
    {
        am.min_approvers = Set(n);
        changed = true;
        audit::record(
            &txn,
            user.event("tenant.min_approvers", "tenant", user.tenant_id)
                .details(serde_json::json!({ "old": old_min, "new": n })),
        )
        .await?;
    }
    if let Some(r) = require_tests
        && r != old_req
    {
        am.require_tests = Set(r);
        changed = true;
        audit::record(
            &txn,
            user.event("tenant.require_tests", "tenant", user.tenant_id)
                .details(serde_json::json!({ "old": old_req, "new": r })),
        )
        .await?;
    }
    let t = if changed { am.update(&txn).await? } else { t };
    txn.commit().await?;
    Ok(t)
}

/// The tenant (for its approval policy).
///
/// # Errors
/// On storage failure.
pub async fn approval_policy(db: &DatabaseConnection, tenant_id: Uuid) -> ApiResult<tenant::Model> {
    tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("tenant"))
}

/// The tenant's minimum number of distinct approvers.
///
/// # Errors
/// On storage failure.
pub async fn min_approvers(db: &DatabaseConnection, tenant_id: Uuid) -> ApiResult<i32> {
    Ok(tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?
        .min_approvers
        .max(1))
}

/// One deployment of a tenant.
///
/// # Errors
/// 404 outside the tenant.
pub async fn get(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<deployment::Model> {
    TenantScope::new(tenant_id)
        .get::<deployment::Entity>(db, id, "deployment")
        .await
}

/// Items of a deployment, in order.
///
/// # Errors
/// On storage failure.
pub async fn items(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<Vec<deployment_item::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<deployment_item::Entity>()
        .filter(deployment_item::Column::DeploymentId.eq(id))
        .order_by_asc(deployment_item::Column::Position)
        .all(conn)
        .await?)
}

/// Decisions on a deployment, oldest first.
///
/// # Errors
/// On storage failure.
pub async fn approvals(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<Vec<approval::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<approval::Entity>()
        .filter(approval::Column::DeploymentId.eq(id))
        .order_by_asc(approval::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Deployments of a tenant, newest first (at most `limit`).
///
/// # Errors
/// On storage failure.
pub async fn list(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    limit: u64,
) -> ApiResult<Vec<deployment::Model>> {
    use sea_orm::QuerySelect as _;
    Ok(TenantScope::new(tenant_id)
        .find::<deployment::Entity>()
        .order_by_desc(deployment::Column::CreatedAt)
        .limit(limit)
        .all(db)
        .await?)
}
