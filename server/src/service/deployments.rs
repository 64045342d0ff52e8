//! Deployment requests, approvals and dispatch.
//!
//! A request names exactly what will be applied; its digest (SHA-256 over a
//! canonical form of that content) is what approvers sign off. The requester
//! and the author of the version can never approve. When the tenant's
//! minimum number of distinct approvals is reached, the job is sealed and put
//! in the outbox in the same transaction, and the agent's connection is woken.

use picket_proto::{JobAction, JobSpec, RuleRef, RuleSpec, Schedule};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Outcome};
use crate::auth::CurrentUser;
use crate::db::entity::{agent, approval, deployment, rule, rule_version, siem_connection, tenant};
use crate::error::{ApiError, ApiResult};
use crate::service::scope::TenantScope;
use crate::service::{connections, jobs, rules, validate};
use crate::time::unix_now;

/// What a deployment does to the rule on the SIEM.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create or update the rule with the given version.
    Deploy,
    /// Disable the deployed rule.
    Disable,
    /// Delete the deployed rule.
    Delete,
}

impl Action {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Disable => "disable",
            Action::Delete => "delete",
        }
    }
}

fn digest(v: &rule_version::Model, c: &siem_connection::Model, action: Action) -> String {
    // serde_json with a fixed field order: a canonical form of exactly what will be applied.
    let canonical = serde_json::json!({
        "action": action.as_str(),
        "connection_id": c.id,
        "rule_id": v.rule_id,
        "version": v.version,
        "title": v.title,
        "description": v.description,
        "severity": v.severity,
        "query": v.query,
        "cron": v.cron,
        "earliest": v.earliest,
        "latest": v.latest,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Requests a deployment of `rule_id` at `version` to `connection_id`.
///
/// # Errors
/// 404 for a rule, version or connection outside this tenant; 400 on a bad message.
pub async fn request(
    db: &DatabaseConnection,
    user: &CurrentUser,
    rule_id: Uuid,
    version: i32,
    connection_id: Uuid,
    action: Action,
    message: &str,
) -> ApiResult<deployment::Model> {
    validate::optional_text("message", message, 2000)?;
    let tenant_id = user.tenant_id;
    let txn = db.begin().await?;
    TenantScope::new(tenant_id)
        .find::<rule::Entity>()
        .filter(rule::Column::Id.eq(rule_id))
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("rule"))?;
    let v = rule_version::Entity::find()
        .filter(rule_version::Column::RuleId.eq(rule_id))
        .filter(rule_version::Column::TenantId.eq(tenant_id))
        .filter(rule_version::Column::Version.eq(version))
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("rule version"))?;
    let c = connections::get(&txn, tenant_id, connection_id).await?;
    let now = unix_now();
    let d = deployment::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        rule_id: Set(rule_id),
        rule_version_id: Set(v.id),
        version: Set(v.version),
        connection_id: Set(c.id),
        agent_id: Set(c.agent_id),
        action: Set(action.as_str().to_owned()),
        message: Set(message.to_owned()),
        requested_by: Set(user.id),
        digest: Set(digest(&v, &c, action)),
        status: Set("pending_approval".into()),
        error_class: Set(None),
        job_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        user.event("deployment.request", "deployment", d.id)
            .details(serde_json::json!({ "rule_id": rule_id, "version": version, "connection_id": connection_id, "action": action.as_str(), "digest": d.digest })),
    )
    .await?;
    txn.commit().await?;
    Ok(d)
}

async fn deny(
    db: &DatabaseConnection,
    user: &CurrentUser,
    d: &deployment::Model,
    reason: &str,
) -> ApiResult<ApiError> {
    audit::record(
        db,
        user.event("deployment.approve", "deployment", d.id)
            .outcome(Outcome::Denied)
            .details(serde_json::json!({ "reason": reason })),
    )
    .await?;
    Ok(ApiError::Forbidden(reason.to_owned()))
}

/// Approves a deployment. When enough distinct approvals exist, seals the job
/// into the outbox and wakes the agent's connection.
///
/// # Errors
/// 403 for the requester or the version's author (audited as denied); 404
/// outside the tenant; 409 if not awaiting approval or already approved by this user.
pub async fn approve(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    comment: Option<String>,
    test_override: Option<String>,
) -> ApiResult<deployment::Model> {
    if let Some(c) = &comment {
        validate::optional_text("comment", c, 2000)?;
    }
    let db = &state.db;
    let d = get(db, user.tenant_id, id).await?;
    if d.requested_by == user.id {
        return Err(deny(
            db,
            user,
            &d,
            "the requester of a deployment cannot approve it",
        )
        .await?);
    }
    let v = user
        .scope()
        .get::<rule_version::Entity>(db, d.rule_version_id, "rule version")
        .await?;
    if v.author_id == user.id {
        return Err(deny(
            db,
            user,
            &d,
            "the author of the rule version cannot approve its deployment",
        )
        .await?);
    }
    let txn = db.begin().await?;
    // Re-read inside the transaction: the state may have moved since.
    let d = TenantScope::new(user.tenant_id)
        .find::<deployment::Entity>()
        .filter(deployment::Column::Id.eq(id))
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("deployment"))?;
    if d.status != "pending_approval" {
        return Err(ApiError::conflict(
            "not_pending",
            format!("deployment is {}, not awaiting approval", d.status),
        ));
    }
    // Rule test gate (issue 6, rule side): see `rules::tests_gate`.
    rules::enforce_tests_gate(
        &txn,
        user,
        d.id,
        d.connection_id,
        &[d.rule_version_id],
        test_override.as_deref(),
    )
    .await?;
    approval::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(user.tenant_id),
        deployment_id: Set(d.id),
        user_id: Set(user.id),
        decision: Set("approve".into()),
        comment: Set(comment),
        digest: Set(d.digest.clone()),
        created_at: Set(unix_now()),
    }
    .insert(&txn)
    .await
    .map_err(|_| {
        ApiError::conflict(
            "already_approved",
            "you have already approved this deployment",
        )
    })?;
    audit::record(
        &txn,
        user.event("deployment.approve", "deployment", d.id)
            .details(serde_json::json!({ "digest": d.digest })),
    )
    .await?;
    let t = tenant::Entity::find_by_id(user.tenant_id)
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let approvals = approval::Entity::find()
        .filter(approval::Column::DeploymentId.eq(d.id))
        .filter(approval::Column::Digest.eq(d.digest.clone()))
        .count(&txn)
        .await?;
    let mut wake = None;
    let d = if approvals >= u64::try_from(t.min_approvers.max(1)).unwrap_or(1) {
        let c = connections::get(&txn, user.tenant_id, d.connection_id).await?;
        let a = TenantScope::new(user.tenant_id)
            .find::<agent::Entity>()
            .filter(agent::Column::Id.eq(c.agent_id))
            .one(&txn)
            .await?
            .ok_or(ApiError::NotFound("agent"))?;
        let action = match d.action.as_str() {
            "deploy" => JobAction::DeployRule {
                rule: RuleSpec {
                    rule_id: v.rule_id,
                    version: u32::try_from(v.version).unwrap_or(0),
                    title: v.title.clone(),
                    description: v.description.clone(),
                    severity: rules::parse_severity(&v.severity)
                        .unwrap_or(picket_proto::Severity::Medium),
                    query: v.query.clone(),
                    schedule: Schedule {
                        cron: v.cron.clone(),
                        earliest: v.earliest.clone(),
                        latest: v.latest.clone(),
                    },
                },
            },
            "disable" => JobAction::DisableRule {
                rule: RuleRef { rule_id: v.rule_id },
            },
            "delete" => JobAction::DeleteRule {
                rule: RuleRef { rule_id: v.rule_id },
            },
            other => {
                return Err(
                    anyhow::anyhow!("deployment {} has unknown action {other:?}", d.id).into(),
                );
            }
        };
        let spec = JobSpec {
            target: connections::target_for_job(&txn, &state.keys, &c).await?,
            action,
        };
        let job = jobs::enqueue(
            &txn,
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
        wake = Some(a.id);
        am.update(&txn).await?
    } else {
        d
    };
    txn.commit().await?;
    if let Some(agent_id) = wake {
        state.registry.wake(agent_id);
    }
    Ok(d)
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
        .find::<deployment::Entity>()
        .filter(deployment::Column::Id.eq(id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("deployment"))
}

/// Approvals of a deployment.
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
