//! Per-rule health: how each deployed rule actually runs on its SIEM.
//!
//! Every `jobs.rule_health_interval_secs` (default 15 min) the scheduler sends
//! each connection with rules on it (`rule_deployments` in state `deployed` or
//! `drift_detected`) a `rule_health` job listing those rules (at most
//! [`MAX_RULE_HEALTH_RULES`] per job; more rules make more jobs) and a window
//! as long as the interval, so consecutive samples tile time. An operator can
//! send one at once (`POST /v1/connections/{id}/rule-health`).
//!
//! The agent answers per rule with counts and times only
//! ([`picket_proto::RuleHealth`]: runs succeeded / failed / skipped, results,
//! alerts, last run time and duration, gap) or an error class. The result is
//! stored in the transaction that records the job's result: one
//! `rule_health_samples` row per rule, inserted in one statement, for rules
//! the server deployed on that connection only (an agent cannot write health
//! for another tenant's or connection's rules). History is bounded: at most
//! [`HISTORY_PER_RULE`] samples per rule and connection are kept, older ones
//! are deleted as new ones arrive.

use std::time::Duration;

use picket_proto::{
    JobAction, JobResult, JobSpec, MAX_RULE_HEALTH_RULES, RuleHealthCheck, RuleHealthItem,
};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::db::entity::{agent, job, rule_deployment, rule_health_check, rule_health_sample};
use crate::error::ApiResult;
use crate::service::connections;
use crate::service::scope::TenantScope;
use crate::time::unix_now;

/// States of a rule deployment whose rule is on the SIEM and so has health.
const ON_SIEM: [&str; 2] = ["deployed", "drift_detected"];

/// Most samples kept per rule and connection (a week at the default
/// 15-minute interval); older ones are pruned when new ones are stored.
pub const HISTORY_PER_RULE: u64 = 672;

/// The window of a scheduled check: the interval, within the protocol's bounds.
pub fn window_for(interval_secs: u32) -> u32 {
    interval_secs.clamp(60, picket_proto::health::MAX_RULE_HEALTH_WINDOW_SECS)
}

/// Sends `rule_health` jobs for a connection's deployed rules (one job per
/// [`MAX_RULE_HEALTH_RULES`] rules). Returns their job ids: empty when no
/// rule is deployed there.
///
/// # Errors
/// 404 for a connection outside the tenant; 409 when its agent is revoked.
pub async fn check_connection(
    state: &AppState,
    tenant_id: Uuid,
    connection_id: Uuid,
    window_secs: u32,
) -> ApiResult<Vec<Uuid>> {
    let txn = state.db.begin().await?;
    let c = connections::get(&txn, tenant_id, connection_id).await?;
    let rules: Vec<Uuid> = TenantScope::new(tenant_id)
        .find::<rule_deployment::Entity>()
        .filter(rule_deployment::Column::ConnectionId.eq(c.id))
        .filter(rule_deployment::Column::State.is_in(ON_SIEM))
        .order_by_asc(rule_deployment::Column::RuleId)
        .all(&txn)
        .await?
        .into_iter()
        .map(|rd| rd.rule_id)
        .collect();
    if rules.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    let a = TenantScope::new(tenant_id)
        .get::<agent::Entity>(&txn, c.agent_id, "agent")
        .await?;
    let target = connections::target_for_job(&txn, &state.keys, &c).await?;
    let mut ids = Vec::new();
    for chunk in rules.chunks(MAX_RULE_HEALTH_RULES) {
        let spec = JobSpec {
            target: target.clone(),
            action: JobAction::RuleHealth {
                check: RuleHealthCheck {
                    rules: chunk.to_vec(),
                    window_secs,
                },
            },
        };
        let j = crate::service::jobs::enqueue(
            &txn,
            &state.keys,
            &a,
            &spec,
            None,
            state.config.job_ttl_secs,
        )
        .await?;
        drop(spec);
        rule_health_check::ActiveModel {
            id: Set(j.id),
            tenant_id: Set(tenant_id),
            connection_id: Set(c.id),
            window_secs: Set(i64::from(window_secs)),
            created_at: Set(unix_now()),
            completed_at: Set(None),
        }
        .insert(&txn)
        .await?;
        ids.push(j.id);
    }
    drop(target);
    txn.commit().await?;
    state.registry.wake(a.id);
    Ok(ids)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Stores what a `rule_health` job found. Called in the transaction that
/// records the job's result; a result for a job that is not a rule health
/// check changes nothing.
///
/// # Errors
/// On storage failure.
pub async fn apply_result(
    txn: &impl ConnectionTrait,
    j: &job::Model,
    r: &JobResult,
) -> ApiResult<()> {
    let Some(check) = rule_health_check::Entity::find_by_id(j.id).one(txn).await? else {
        return Ok(());
    };
    let now = unix_now();
    let deployed: Vec<Uuid> = TenantScope::new(check.tenant_id)
        .find::<rule_deployment::Entity>()
        .filter(rule_deployment::Column::ConnectionId.eq(check.connection_id))
        .filter(rule_deployment::Column::State.ne("removed"))
        .all(txn)
        .await?
        .into_iter()
        .map(|rd| rd.rule_id)
        .collect();
    let mut seen = Vec::new();
    let rows: Vec<rule_health_sample::ActiveModel> = r
        .rule_health
        .as_deref()
        .unwrap_or(&[])
        .iter()
        // Only rules deployed on this connection, each once: the agent
        // cannot place numbers on anything else.
        .filter(|i| deployed.contains(&i.rule_id))
        .filter(|i| {
            let new = !seen.contains(&i.rule_id);
            seen.push(i.rule_id);
            new
        })
        .map(|i| sample_row(&check, j.id, now, i))
        .collect();
    if !rows.is_empty() {
        rule_health_sample::Entity::insert_many(rows)
            .exec(txn)
            .await?;
    }
    for rule_id in seen {
        prune(txn, check.tenant_id, rule_id, check.connection_id).await?;
    }
    let mut am: rule_health_check::ActiveModel = check.into();
    am.completed_at = Set(Some(now));
    am.update(txn).await?;
    Ok(())
}

fn sample_row(
    check: &rule_health_check::Model,
    job_id: Uuid,
    now: i64,
    i: &RuleHealthItem,
) -> rule_health_sample::ActiveModel {
    let h = i.health.unwrap_or_default();
    rule_health_sample::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(check.tenant_id),
        rule_id: Set(i.rule_id),
        connection_id: Set(check.connection_id),
        job_id: Set(job_id),
        taken_at: Set(now),
        window_secs: Set(check.window_secs),
        error_class: Set(i.error_class.map(|c| c.as_str().to_owned())),
        runs_succeeded: Set(signed(h.runs_succeeded)),
        runs_failed: Set(signed(h.runs_failed)),
        runs_skipped: Set(signed(h.runs_skipped)),
        results_total: Set(h.results_total.map(signed)),
        alerts_fired: Set(h.alerts_fired.map(signed)),
        last_run_at: Set(h.last_run_at),
        last_run_duration_ms: Set(h.last_run_duration_ms.map(signed)),
        gap_ms: Set(h.gap_ms.map(signed)),
    }
}

/// Deletes the samples of one rule and connection beyond the newest
/// [`HISTORY_PER_RULE`].
async fn prune(
    txn: &impl ConnectionTrait,
    tenant_id: Uuid,
    rule_id: Uuid,
    connection_id: Uuid,
) -> ApiResult<()> {
    let oldest_kept = TenantScope::new(tenant_id)
        .find::<rule_health_sample::Entity>()
        .filter(rule_health_sample::Column::RuleId.eq(rule_id))
        .filter(rule_health_sample::Column::ConnectionId.eq(connection_id))
        .order_by_desc(rule_health_sample::Column::TakenAt)
        .order_by_desc(rule_health_sample::Column::Id)
        .offset(HISTORY_PER_RULE - 1)
        .limit(1)
        .one(txn)
        .await?;
    if let Some(edge) = oldest_kept {
        rule_health_sample::Entity::delete_many()
            .filter(rule_health_sample::Column::TenantId.eq(tenant_id))
            .filter(rule_health_sample::Column::RuleId.eq(rule_id))
            .filter(rule_health_sample::Column::ConnectionId.eq(connection_id))
            .filter(rule_health_sample::Column::Id.lt(edge.id))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// A rule's health samples, newest first: all connections, or one.
///
/// # Errors
/// 404 for a rule outside the tenant; storage failure.
pub async fn history(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    rule_id: Uuid,
    connection_id: Option<Uuid>,
    limit: u64,
) -> ApiResult<Vec<rule_health_sample::Model>> {
    let scope = TenantScope::new(tenant_id);
    scope
        .get::<crate::db::entity::rule::Entity>(db, rule_id, "rule")
        .await?;
    let mut q = scope
        .find::<rule_health_sample::Entity>()
        .filter(rule_health_sample::Column::RuleId.eq(rule_id));
    if let Some(c) = connection_id {
        q = q.filter(rule_health_sample::Column::ConnectionId.eq(c));
    }
    Ok(q.order_by_desc(rule_health_sample::Column::TakenAt)
        .order_by_desc(rule_health_sample::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// The scheduler: every `rule_health_interval_secs`, a rule health check for
/// each connection with deployed rules. Stops on shutdown.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = state.config.rule_health_interval_secs;
        let mut tick = tokio::time::interval(Duration::from_secs(u64::from(interval)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once: skip it, nothing is due at start-up.
        tick.tick().await;
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = check_all(&state, window_for(interval)).await {
                tracing::error!(error = ?e, "scheduled rule health checks failed");
            }
        }
    })
}

async fn check_all(state: &AppState, window_secs: u32) -> ApiResult<()> {
    let rows = rule_deployment::Entity::find()
        .filter(rule_deployment::Column::State.is_in(ON_SIEM))
        .all(&state.db)
        .await?;
    let mut targets: Vec<(Uuid, Uuid)> = rows
        .into_iter()
        .map(|r| (r.tenant_id, r.connection_id))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    for (tenant_id, connection_id) in targets {
        if let Err(e) = check_connection(state, tenant_id, connection_id, window_secs).await {
            tracing::warn!(%connection_id, error = ?e, "cannot send a rule health check");
        }
    }
    Ok(())
}

/// The newest sample of a rule on each connection it is (or was) deployed
/// on, or on the one connection asked for.
///
/// # Errors
/// Storage failure.
pub async fn latest(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    rule_id: Uuid,
    connection_id: Option<Uuid>,
) -> ApiResult<Vec<rule_health_sample::Model>> {
    let scope = TenantScope::new(tenant_id);
    let mut connections: Vec<Uuid> = scope
        .find::<rule_deployment::Entity>()
        .filter(rule_deployment::Column::RuleId.eq(rule_id))
        .all(db)
        .await?
        .into_iter()
        .map(|rd| rd.connection_id)
        .filter(|c| connection_id.is_none_or(|want| *c == want))
        .collect();
    connections.sort_unstable();
    connections.dedup();
    let mut out = Vec::with_capacity(connections.len());
    for c in connections {
        if let Some(s) = history(db, tenant_id, rule_id, Some(c), 1)
            .await?
            .into_iter()
            .next()
        {
            out.push(s);
        }
    }
    Ok(out)
}
