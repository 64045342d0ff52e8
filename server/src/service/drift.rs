//! Drift: does the SIEM still hold what Picket deployed?
//!
//! Every `jobs.drift_check_interval_secs` (default 30 min) the scheduler sends
//! each connection with tracked rules (`rule_deployments` in state `deployed`
//! or `drift_detected` with a known hash) a `drift_check` job listing the
//! hashes it expects. The agent answers per rule `in_sync`, `drifted` (with
//! the hash it found) or `missing`; a difference marks the rule
//! `drift_detected` (audited once, when it is first seen), a rule back in sync
//! returns to `deployed`.
//!
//! For a drifted rule the agent also returns the rule as the SIEM holds it,
//! normalized back to the rule model (`RemoteRule`: rule text and schedule,
//! never log data, bounded), stored with the drift until it is resolved.
//!
//! Resolutions: `redeploy` (a request deploying our version again, approved
//! like any change), `archive` (stop tracking the rule on that connection;
//! nothing changes on the SIEM), `accept_remote` (record the SIEM's content
//! as the rule's next version, authored by the system, validated like any
//! save; the SIEM already runs it, so it becomes the deployed version and
//! the drift is cleared; rollback restores ours).

use std::time::Duration;

use picket_proto::{
    B64, DriftCheck, DriftExpectation, ItemStatus, JobAction, JobResult, JobSpec, MAX_BATCH_ITEMS,
};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event};
use crate::auth::CurrentUser;
use crate::db::entity::{agent, deployment, drift_check, job, rule_deployment};
use crate::error::{ApiError, ApiResult};
use crate::service::connections;
use crate::service::deployments::{self, Action, ItemRequest, NewRequest};
use crate::service::scope::TenantScope;
use crate::time::unix_now;

/// States whose content a drift check compares.
const TRACKED: [&str; 2] = ["deployed", "drift_detected"];

/// Sends one `drift_check` job for a connection. Returns its job id, or
/// `None` when nothing is tracked there.
///
/// # Errors
/// 404 for a connection outside the tenant; 409 when its agent is revoked.
pub async fn check_connection(
    state: &AppState,
    tenant_id: Uuid,
    connection_id: Uuid,
) -> ApiResult<Option<Uuid>> {
    let txn = state.db.begin().await?;
    let c = connections::get(&txn, tenant_id, connection_id).await?;
    let tracked = TenantScope::new(tenant_id)
        .find::<rule_deployment::Entity>()
        .filter(rule_deployment::Column::ConnectionId.eq(c.id))
        .filter(rule_deployment::Column::State.is_in(TRACKED))
        .order_by_asc(rule_deployment::Column::RuleId)
        .all(&txn)
        .await?;
    let rules: Vec<DriftExpectation> = tracked
        .iter()
        .filter_map(|rd| {
            let bytes = hex::decode(rd.content_hash.as_deref()?).ok()?;
            let expected: [u8; 32] = bytes.try_into().ok()?;
            Some(DriftExpectation {
                rule_id: rd.rule_id,
                expected: B64(expected),
            })
        })
        .take(MAX_BATCH_ITEMS)
        .collect();
    if rules.is_empty() {
        txn.commit().await?;
        return Ok(None);
    }
    let a = TenantScope::new(tenant_id)
        .get::<agent::Entity>(&txn, c.agent_id, "agent")
        .await?;
    let spec = JobSpec {
        target: connections::target_for_job(&txn, &state.keys, &c).await?,
        action: JobAction::DriftCheck {
            check: DriftCheck { rules },
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
    drift_check::ActiveModel {
        id: Set(j.id),
        tenant_id: Set(tenant_id),
        connection_id: Set(c.id),
        created_at: Set(unix_now()),
        completed_at: Set(None),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    state.registry.wake(a.id);
    Ok(Some(j.id))
}

/// Stores what a `drift_check` job found. Called in the transaction that
/// records the job's result.
///
/// # Errors
/// On storage failure.
pub async fn apply_result(
    txn: &impl ConnectionTrait,
    j: &job::Model,
    r: &JobResult,
) -> ApiResult<()> {
    let Some(check) = drift_check::Entity::find_by_id(j.id).one(txn).await? else {
        return Ok(());
    };
    let now = unix_now();
    for o in r.items.as_deref().unwrap_or(&[]) {
        let Some(rd) =
            deployments::current(txn, check.tenant_id, o.rule_id, check.connection_id).await?
        else {
            continue;
        };
        if !TRACKED.contains(&rd.state.as_str()) {
            continue;
        }
        let was = rd.state.clone();
        let mut am: rule_deployment::ActiveModel = rd.clone().into();
        am.drift_checked_at = Set(Some(now));
        match o.status {
            ItemStatus::InSync => {
                am.state = Set("deployed".into());
                am.drift_hash = Set(None);
                am.remote_content = Set(None);
            }
            ItemStatus::Drifted | ItemStatus::Missing => {
                am.state = Set("drift_detected".into());
                am.drift_hash = Set(o.content_hash.map(|h| hex::encode(h.0)));
                // The agent is trusted for content no more than for hashes:
                // bounded again here, whoever sent it.
                let remote = o
                    .remote
                    .as_deref()
                    .filter(|r| o.status == ItemStatus::Drifted && r.within_bounds())
                    .and_then(|r| serde_json::to_string(r).ok());
                am.remote_content = Set(remote);
                if was != "drift_detected" {
                    audit::record(
                        txn,
                        Event::agent(
                            check.tenant_id,
                            j.agent_id,
                            "rule.drift_detected",
                            "rule",
                            rd.rule_id,
                        )
                        .details(serde_json::json!({
                            "connection_id": check.connection_id,
                            "found": o.status.as_str(),
                            "expected_hash": rd.content_hash,
                            "found_hash": o.content_hash.map(|h| hex::encode(h.0)),
                        })),
                    )
                    .await?;
                }
            }
            // A read failure tells nothing about drift.
            _ => continue,
        }
        am.update(txn).await?;
    }
    let mut am: drift_check::ActiveModel = check.into();
    am.completed_at = Set(Some(now));
    am.update(txn).await?;
    Ok(())
}

/// Every rule deployed through Picket on the tenant's connections (not
/// removed), with its drift state; `drift_detected` ones need a resolution.
///
/// # Errors
/// On storage failure.
pub async fn list(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> ApiResult<Vec<rule_deployment::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<rule_deployment::Entity>()
        .filter(rule_deployment::Column::State.ne("removed"))
        .order_by_asc(rule_deployment::Column::UpdatedAt)
        .all(db)
        .await?)
}

/// What a rule holds now on a connection, for a request's reviewers: the
/// SIEM's own content when the last drift check found it drifted (and the
/// agent returned it), else Picket's record of what it deployed (which the
/// last in-sync check confirmed, at `checked_at`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Current {
    /// `siem` (read from the SIEM by the agent) or `record` (the version
    /// Picket deployed there).
    pub source: String,
    /// `deployed`, `drift_detected`, `archived` or `removed`; `absent` when
    /// Picket never deployed the rule there.
    pub state: String,
    /// The version Picket deployed there (what the SIEM should hold).
    pub version: Option<i32>,
    /// Deployed (or found) with alerting off.
    pub monitoring: bool,
    /// The last drift check (RFC 3339).
    pub checked_at: Option<String>,
    /// The rule as it is now against the item's version (`from` is the
    /// deployed version number; with `source: siem` the unified diff's old
    /// side is headed `siem`). `None` when there is nothing to compare
    /// (absent, removed, missing on the SIEM).
    pub diff: Option<crate::service::rules::VersionDiff>,
}

/// [`Current`] for one rule on a connection against `proposed`.
///
/// # Errors
/// On storage failure.
pub async fn current_against(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    connection_id: Uuid,
    proposed: &crate::db::entity::rule_version::Model,
) -> ApiResult<Current> {
    use crate::db::entity::{rule, rule_version};
    use crate::service::rules;
    let scope = TenantScope::new(tenant_id);
    let Some(rd) = deployments::current(conn, tenant_id, proposed.rule_id, connection_id).await?
    else {
        return Ok(Current {
            source: "record".into(),
            state: "absent".into(),
            version: None,
            monitoring: false,
            checked_at: None,
            diff: None,
        });
    };
    let base = scope
        .get::<rule_version::Entity>(conn, rd.rule_version_id, "rule version")
        .await?;
    let remote = rd
        .remote_content
        .as_deref()
        .filter(|_| rd.state == "drift_detected")
        .and_then(|t| serde_json::from_str::<picket_proto::RemoteRule>(t).ok());
    let (source, diff, monitoring) = match (rd.state.as_str(), remote) {
        ("drift_detected", Some(remote)) => {
            let r = scope.get::<rule::Entity>(conn, rd.rule_id, "rule").await?;
            let diff = rules::remote_as_version(rules::rule_kind(&r), &base, &remote).map(|now| {
                rules::diff_labeled(&now, proposed, "siem", &format!("v{}", proposed.version))
            });
            ("siem", diff, remote.monitoring)
        }
        // Missing on the SIEM, or its content not returned: nothing to show.
        ("drift_detected", None) => ("siem", None, rd.monitoring),
        ("removed", _) => ("record", None, rd.monitoring),
        _ => ("record", Some(rules::diff(&base, proposed)), rd.monitoring),
    };
    Ok(Current {
        source: source.into(),
        state: rd.state,
        version: Some(rd.version),
        monitoring,
        checked_at: rd.drift_checked_at.map(crate::time::rfc3339),
        diff,
    })
}

/// How to resolve a drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Request a deployment of our version again (approved like any change).
    Redeploy,
    /// Stop tracking the rule on this connection; the SIEM keeps what it has.
    Archive,
    /// Record the SIEM's content as the rule's next version (authored by
    /// the system), deployed as it is; clears the drift.
    AcceptRemote,
}

/// What a resolution produced: the redeploy request, or the version
/// accepted from the SIEM.
pub enum Resolved {
    /// `redeploy`: the request, awaiting approval.
    Request(deployment::Model),
    /// `accept_remote`: the new version.
    Version(crate::db::entity::rule_version::Model),
    /// `archive`.
    Archived,
}

/// Resolves a drifted rule on a connection.
///
/// # Errors
/// 404 for a rule or connection outside the tenant, or no tracked deployment;
/// 409 `no_drift` when the rule is not in `drift_detected`; for
/// `accept_remote`, 409 `remote_unknown` when the agent returned no content
/// for it (the rule is missing, or its content was over the bounds) and 422
/// `invalid_remote_rule` when the content is not a valid rule.
pub async fn resolve(
    state: &AppState,
    user: &CurrentUser,
    rule_id: Uuid,
    connection_id: Uuid,
    resolution: Resolution,
    message: String,
) -> ApiResult<Resolved> {
    let db = &state.db;
    let rd = deployments::current(db, user.tenant_id, rule_id, connection_id)
        .await?
        .ok_or(ApiError::NotFound("deployed rule"))?;
    if rd.state != "drift_detected" {
        return Err(ApiError::conflict(
            "no_drift",
            format!(
                "the rule is {} on this connection, not drift_detected",
                rd.state
            ),
        ));
    }
    match resolution {
        Resolution::AcceptRemote => accept_remote(db, user, rd).await.map(Resolved::Version),
        Resolution::Archive => {
            let txn = db.begin().await?;
            let mut am: rule_deployment::ActiveModel = rd.into();
            am.state = Set("archived".into());
            am.updated_at = Set(unix_now());
            am.update(&txn).await?;
            audit::record(
                &txn,
                user.event("rule.drift_resolve", "rule", rule_id).details(
                    serde_json::json!({ "connection_id": connection_id, "resolution": "archive" }),
                ),
            )
            .await?;
            txn.commit().await?;
            Ok(Resolved::Archived)
        }
        Resolution::Redeploy => {
            let req = NewRequest {
                connection_id,
                items: vec![ItemRequest {
                    rule_id,
                    version: rd.version,
                    action: Action::Deploy,
                    monitoring: rd.monitoring,
                }],
                message,
                dry_run: false,
                kind: "redeploy",
            };
            let d = deployments::request(state, user, req, None).await?;
            audit::record(
                db,
                user.event("rule.drift_resolve", "rule", rule_id)
                    .details(serde_json::json!({
                        "connection_id": connection_id,
                        "resolution": "redeploy",
                        "deployment_id": d.id,
                    })),
            )
            .await?;
            Ok(Resolved::Request(d))
        }
    }
}

/// `accept_remote`: the SIEM's content becomes the next version and the
/// deployed one (with the hash the agent found), in one transaction with
/// its audit events. The version it replaces becomes the previous one, so
/// a rollback restores ours.
async fn accept_remote(
    db: &DatabaseConnection,
    user: &CurrentUser,
    rd: rule_deployment::Model,
) -> ApiResult<crate::db::entity::rule_version::Model> {
    use crate::db::entity::{rule, rule_version};
    let unknown = || {
        ApiError::conflict(
            "remote_unknown",
            "the agent returned no content for this rule (it is missing on the SIEM, or its content was over the size bound); redeploy ours or archive, or run a drift check again",
        )
    };
    let (Some(text), Some(found)) = (rd.remote_content.clone(), rd.drift_hash.clone()) else {
        return Err(unknown());
    };
    let remote: picket_proto::RemoteRule = serde_json::from_str(&text).map_err(|_| unknown())?;
    let txn = db.begin().await?;
    let scope = user.scope();
    let r = scope.get::<rule::Entity>(&txn, rd.rule_id, "rule").await?;
    let base = scope
        .get::<rule_version::Entity>(&txn, rd.rule_version_id, "rule version")
        .await?;
    let v =
        crate::service::rules::accept_remote_in(&txn, user, &r, &base, &remote, rd.connection_id)
            .await?;
    let connection_id = rd.connection_id;
    let mut am: rule_deployment::ActiveModel = rd.clone().into();
    am.previous_version_id = Set(Some(rd.rule_version_id));
    am.previous_version = Set(Some(rd.version));
    am.previous_monitoring = Set(rd.monitoring);
    am.previous_enabled = Set(rd.enabled);
    am.rule_version_id = Set(v.id);
    am.version = Set(v.version);
    am.monitoring = Set(remote.monitoring);
    am.enabled = Set(remote.enabled);
    am.content_hash = Set(Some(found.clone()));
    am.state = Set("deployed".into());
    am.drift_hash = Set(None);
    am.remote_content = Set(None);
    am.updated_at = Set(unix_now());
    am.update(&txn).await?;
    audit::record(
        &txn,
        user.event("rule.drift_resolve", "rule", rd.rule_id)
            .details(serde_json::json!({
                "connection_id": connection_id,
                "resolution": "accept_remote",
                "version": v.version,
                "replaced_version": rd.version,
                "content_hash": found,
            })),
    )
    .await?;
    txn.commit().await?;
    Ok(v)
}

/// The scheduler: every `drift_check_interval_secs`, a drift check for each
/// connection with tracked rules. Stops on shutdown.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(u64::from(state.config.drift_check_interval_secs));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once: skip it, nothing is due at start-up.
        tick.tick().await;
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = check_all(&state).await {
                tracing::error!(error = ?e, "scheduled drift checks failed");
            }
        }
    })
}

async fn check_all(state: &AppState) -> ApiResult<()> {
    let rows = rule_deployment::Entity::find()
        .filter(rule_deployment::Column::State.is_in(TRACKED))
        .all(&state.db)
        .await?;
    let mut targets: Vec<(Uuid, Uuid)> = rows
        .into_iter()
        .map(|r| (r.tenant_id, r.connection_id))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    for (tenant_id, connection_id) in targets {
        if let Err(e) = check_connection(state, tenant_id, connection_id).await {
            tracing::warn!(%connection_id, error = ?e, "cannot send a drift check");
        }
    }
    Ok(())
}
