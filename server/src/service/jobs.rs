//! The durable job outbox.
//!
//! A job is sealed once, when created, and stored; delivery is at-least-once
//! (resent on every reconnect until the agent answers) and the agent is
//! idempotent on `job_id`. States: `pending` → `acked` (the agent recorded it)
//! → `completed` (its result is stored), or `expired` if it outlived its TTL
//! unanswered or its agent was revoked (then `error_class` is
//! [`AGENT_REVOKED`] and its deployment becomes `failed` with the same class,
//! so nothing waits on an agent that will never answer).

use picket_proto::{JobHeader, JobKind, JobResult, JobSpec, SealedJob};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::audit::{self, Event};
use crate::db::entity::{agent, deployment, job};
use crate::error::{ApiError, ApiResult};
use crate::keys::ServerKeys;
use crate::service::scope::TenantScope;
use crate::time::unix_now;

/// Server-side error class stored on jobs and deployments cancelled because
/// their agent was revoked. Not a wire `ErrorClass`: no agent reports it.
pub const AGENT_REVOKED: &str = "agent_revoked";

/// Cancels every unanswered job of a revoked agent: the jobs become `expired`
/// with `error_class` [`AGENT_REVOKED`], their deployments `failed` with the
/// same class. Call inside the revocation's transaction. Returns the ids of
/// the cancelled jobs.
///
/// # Errors
/// On storage failure.
pub async fn cancel_for_revoked_agent(
    txn: &impl ConnectionTrait,
    tenant_id: Uuid,
    agent_id: Uuid,
) -> ApiResult<Vec<Uuid>> {
    let open = TenantScope::new(tenant_id)
        .find::<job::Entity>()
        .filter(job::Column::AgentId.eq(agent_id))
        .filter(job::Column::State.is_in(["pending", "acked"]))
        .all(txn)
        .await?;
    let now = unix_now();
    let mut cancelled = Vec::with_capacity(open.len());
    for j in open {
        let res = job::Entity::update_many()
            .col_expr(job::Column::State, Expr::value("expired"))
            .col_expr(job::Column::ErrorClass, Expr::value(AGENT_REVOKED))
            .col_expr(job::Column::CompletedAt, Expr::value(now))
            .filter(job::Column::Id.eq(j.id))
            .filter(job::Column::State.is_in(["pending", "acked"]))
            .exec(txn)
            .await?;
        if res.rows_affected != 1 {
            continue;
        }
        if let Some(d) = j.deployment_id {
            set_deployment_status(txn, d, "failed", Some(AGENT_REVOKED)).await?;
        }
        cancelled.push(j.id);
    }
    Ok(cancelled)
}

/// Seals `spec` to `agent` with the next sequence number and stores it in the outbox.
/// Call inside the transaction of the change that causes the job.
///
/// # Errors
/// If the agent is revoked or storage/sealing fails.
pub async fn enqueue(
    txn: &impl ConnectionTrait,
    keys: &ServerKeys,
    agent_row: &agent::Model,
    spec: &JobSpec,
    deployment_id: Option<Uuid>,
    ttl_secs: u64,
) -> ApiResult<job::Model> {
    if agent_row.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "agent_revoked",
            "the agent serving this connection has been revoked",
        ));
    }
    // Atomic increment: concurrent enqueues for one agent get distinct, increasing seqs.
    let updated = agent::Entity::update_many()
        .col_expr(
            agent::Column::LastSeq,
            Expr::col(agent::Column::LastSeq).add(1),
        )
        .filter(agent::Column::Id.eq(agent_row.id))
        .exec_with_returning(txn)
        .await?;
    let seq = updated
        .first()
        .map(|a| a.last_seq)
        .ok_or(ApiError::NotFound("agent"))?;
    let now = unix_now();
    let expires_at = now + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2);
    let kind: JobKind = spec.kind();
    let header = JobHeader {
        job_id: Uuid::now_v7(),
        agent_id: agent_row.id,
        tenant_id: agent_row.tenant_id,
        seq: u64::try_from(seq).map_err(|_| anyhow::anyhow!("negative seq"))?,
        issued_at: now,
        expires_at,
        kind,
        key_id: keys.fingerprint,
    };
    let x25519: [u8; 32] = agent_row
        .x25519_public
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("agent {} has a malformed X25519 key", agent_row.id))?;
    let sealed = picket_shared::seal::seal_job(&header, spec, &x25519, &keys.signing)
        .map_err(|e| anyhow::anyhow!("sealing job: {e}"))?;
    let row = job::ActiveModel {
        id: Set(header.job_id),
        tenant_id: Set(agent_row.tenant_id),
        agent_id: Set(agent_row.id),
        seq: Set(seq),
        kind: Set(kind.as_str().to_owned()),
        deployment_id: Set(deployment_id),
        sealed: Set(serde_json::to_string(&sealed).map_err(|e| anyhow::anyhow!("{e}"))?),
        state: Set("pending".into()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        send_count: Set(0),
        last_sent_at: Set(None),
        acked_at: Set(None),
        completed_at: Set(None),
        outcome: Set(None),
        error_class: Set(None),
        duration_ms: Set(None),
        content_hash: Set(None),
    }
    .insert(txn)
    .await?;
    audit::record(
        txn,
        Event::agent(agent_row.tenant_id, agent_row.id, "job.enqueue", "job", row.id)
            .details(serde_json::json!({ "kind": kind.as_str(), "seq": seq, "deployment_id": deployment_id })),
    )
    .await?;
    Ok(row)
}

/// Jobs the agent has not answered, with `seq > after_seq`, in order. Expired
/// ones are marked expired (and their deployment too) instead of being returned.
///
/// # Errors
/// On storage failure.
pub async fn undelivered(
    db: &DatabaseConnection,
    agent_id: Uuid,
    after_seq: i64,
) -> ApiResult<Vec<(job::Model, SealedJob)>> {
    let rows = job::Entity::find()
        .filter(job::Column::AgentId.eq(agent_id))
        .filter(job::Column::State.is_in(["pending", "acked"]))
        .filter(job::Column::Seq.gt(after_seq))
        .order_by_asc(job::Column::Seq)
        .all(db)
        .await?;
    let now = unix_now();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if r.expires_at < now {
            expire(db, &r).await?;
            continue;
        }
        let sealed: SealedJob = serde_json::from_str(&r.sealed)
            .map_err(|e| anyhow::anyhow!("stored job {}: {e}", r.id))?;
        out.push((r, sealed));
    }
    Ok(out)
}

async fn expire(db: &DatabaseConnection, r: &job::Model) -> ApiResult<()> {
    let txn = db.begin().await?;
    job::Entity::update_many()
        .col_expr(job::Column::State, Expr::value("expired"))
        .filter(job::Column::Id.eq(r.id))
        .filter(job::Column::State.is_in(["pending", "acked"]))
        .exec(&txn)
        .await?;
    if let Some(d) = r.deployment_id {
        set_deployment_status(&txn, d, "expired", Some("expired")).await?;
    }
    audit::record(
        &txn,
        Event::agent(r.tenant_id, r.agent_id, "job.expire", "job", r.id),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

async fn set_deployment_status(
    conn: &impl ConnectionTrait,
    id: Uuid,
    status: &str,
    error_class: Option<&str>,
) -> ApiResult<()> {
    deployment::Entity::update_many()
        .col_expr(deployment::Column::Status, Expr::value(status))
        .col_expr(
            deployment::Column::ErrorClass,
            Expr::value(error_class.map(str::to_owned)),
        )
        .col_expr(deployment::Column::UpdatedAt, Expr::value(unix_now()))
        .filter(deployment::Column::Id.eq(id))
        .exec(conn)
        .await?;
    // Items follow: acknowledged → `sent`; ended without a result → `failed`.
    match status {
        "delivered" => {
            crate::service::deployments::set_items_status(conn, id, "sent", None).await?
        }
        "failed" | "expired" => {
            crate::service::deployments::set_items_status(conn, id, "failed", error_class).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Records that a job was written to the agent's socket.
///
/// # Errors
/// On storage failure.
pub async fn mark_sent(db: &DatabaseConnection, job_id: Uuid) -> ApiResult<()> {
    job::Entity::update_many()
        .col_expr(
            job::Column::SendCount,
            Expr::col(job::Column::SendCount).add(1),
        )
        .col_expr(job::Column::LastSentAt, Expr::value(unix_now()))
        .filter(job::Column::Id.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Records the agent's acknowledgement (it verified and ledgered the job).
/// Returns whether this was the job's first acknowledgement (a repeat after a
/// reconnect, or an id that is not this agent's pending job, changes nothing).
///
/// # Errors
/// On storage failure.
pub async fn mark_acked(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    agent_id: Uuid,
    job_id: Uuid,
) -> ApiResult<bool> {
    let txn = db.begin().await?;
    let res = job::Entity::update_many()
        .col_expr(job::Column::State, Expr::value("acked"))
        .col_expr(job::Column::AckedAt, Expr::value(unix_now()))
        .filter(job::Column::Id.eq(job_id))
        .filter(job::Column::AgentId.eq(agent_id))
        .filter(job::Column::State.eq("pending"))
        .exec(&txn)
        .await?;
    if res.rows_affected == 1 {
        if let Some(j) = job::Entity::find_by_id(job_id).one(&txn).await?
            && let Some(d) = j.deployment_id
        {
            set_deployment_status(&txn, d, "delivered", None).await?;
        }
        audit::record(
            &txn,
            Event::agent(tenant_id, agent_id, "job.ack", "job", job_id),
        )
        .await?;
    }
    txn.commit().await?;
    Ok(res.rows_affected == 1)
}

/// Stores a job's result (idempotent: a repeated result for a completed job
/// changes nothing) and moves its deployment to its final state.
/// Returns whether the job belongs to this agent (so the caller may acknowledge).
///
/// # Errors
/// On storage failure.
pub async fn record_result(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    agent_id: Uuid,
    r: &JobResult,
) -> ApiResult<bool> {
    let txn = db.begin().await?;
    let Some(j) = job::Entity::find_by_id(r.job_id)
        .filter(job::Column::AgentId.eq(agent_id))
        .one(&txn)
        .await?
    else {
        txn.commit().await?;
        return Ok(false);
    };
    if j.state == "completed" {
        txn.commit().await?;
        return Ok(true);
    }
    let outcome = r.outcome.as_str();
    let class = r.error_class.map(|c| c.as_str());
    let mut am: job::ActiveModel = j.clone().into();
    am.state = Set("completed".into());
    am.completed_at = Set(Some(unix_now()));
    am.outcome = Set(Some(outcome.to_owned()));
    am.error_class = Set(class.map(str::to_owned));
    am.duration_ms = Set(Some(i64::try_from(r.duration_ms).unwrap_or(i64::MAX)));
    am.content_hash = Set(r.content_hash.map(|h| h.0.to_vec()));
    am.update(&txn).await?;
    if let Some(d) = j.deployment_id {
        crate::service::deployments::apply_result(&txn, d, r).await?;
        set_deployment_status(&txn, d, outcome, class).await?;
    }
    if j.kind == JobKind::DriftCheck.as_str() {
        crate::service::drift::apply_result(&txn, &j, r).await?;
    }
    if j.kind == JobKind::RuleHealth.as_str() {
        crate::service::rule_health::apply_result(&txn, &j, r).await?;
    }
    if j.kind == JobKind::PreviewCount.as_str() {
        crate::service::deployments::apply_preview(&txn, j.id, r).await?;
    }
    // A `test_rule` job's per-case counts (issue 6, rule side).
    crate::service::rules::record_test_result(&txn, tenant_id, agent_id, r).await?;
    audit::record(
        &txn,
        Event::agent(tenant_id, agent_id, "job.result", "job", r.job_id)
            .details(serde_json::json!({ "outcome": outcome, "error_class": class, "duration_ms": r.duration_ms, "deployment_id": j.deployment_id }))
            .outcome(match r.outcome {
                picket_proto::Outcome::Succeeded => audit::Outcome::Success,
                picket_proto::Outcome::Failed => audit::Outcome::Failure,
                picket_proto::Outcome::Refused => audit::Outcome::Denied,
            }),
    )
    .await?;
    txn.commit().await?;
    Ok(true)
}
