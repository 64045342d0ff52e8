//! The `picket-server admin audit ...` commands, as library functions that
//! return what to print (the binary only parses arguments).

use std::fmt::Write as _;

use anyhow::Context as _;
use sea_orm::{
    ConnectionTrait as _, DatabaseConnection, DbBackend, Statement, TransactionTrait as _,
};
use uuid::Uuid;

use super::checkpoint::{checkpoint_all, checkpoint_log, latest};
use super::export::{Format, export};
use super::{Actor, Event, Outcome, Source, log_id, record};
use crate::keys::ServerKeys;
use crate::time::unix_now;

/// Which log a command is about: a tenant's or the system log.
pub fn log_of(tenant: Option<Uuid>) -> String {
    log_id(tenant)
}

/// `verify`: checks every log (or one) and returns the report and whether
/// everything verified.
///
/// # Errors
/// On storage failure.
pub async fn verify(db: &DatabaseConnection, only: Option<&str>) -> anyhow::Result<(String, bool)> {
    let reports = super::verify::verify_all(db, only).await?;
    let mut out = String::new();
    let mut ok = true;
    for r in reports {
        if r.ok() {
            let _ = writeln!(
                out,
                "log {}: OK ({} events, {} checkpoints, {} leaves signed)",
                r.log_id, r.events, r.checkpoints, r.checkpointed
            );
        } else {
            ok = false;
            let _ = writeln!(out, "log {}: TAMPERED", r.log_id);
            for p in &r.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
    }
    Ok((out, ok))
}

/// `checkpoint`: signs every log that grew now.
///
/// # Errors
/// On storage or signing failure.
pub async fn checkpoint(db: &DatabaseConnection, keys: &ServerKeys) -> anyhow::Result<String> {
    let made = checkpoint_all(db, &keys.signing).await?;
    let mut out = String::new();
    for c in &made {
        let _ = writeln!(
            out,
            "log {}: signed checkpoint of size {}",
            c.log_id, c.size
        );
    }
    if made.is_empty() {
        out.push_str("no log grew since its last checkpoint\n");
    }
    Ok(out)
}

/// `export`: checkpoints the log, then exports it; the export is audited.
///
/// # Errors
/// On storage failure or when nothing is checkpointed.
pub async fn export_log(
    db: &DatabaseConnection,
    keys: &ServerKeys,
    tenant: Option<Uuid>,
    since: Option<i64>,
    until: Option<i64>,
    format: Format,
) -> anyhow::Result<String> {
    let log = log_of(tenant);
    while checkpoint_log(db, &keys.signing, &log).await?.is_some() {}
    let body = export(
        db,
        &log,
        since,
        until,
        format,
        keys.signing.verifying_key().as_bytes(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    record(
        db,
        Event {
            tenant_id: tenant,
            actor: Actor::System,
            action: "audit.export",
            resource_type: "audit_log",
            resource_id: Some(log),
            source: Source::Cli,
            client_ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            details: serde_json::json!({ "format": format!("{format:?}").to_lowercase(), "since": since, "until": until }),
        },
    )
    .await
    .context("recording the export in the audit log")?;
    Ok(body)
}

/// `prune`: deletes event bodies older than `older_than_days` whose leaves
/// are covered by a signed checkpoint, raising the log's prune watermark in
/// the same transaction, and records it (`audit.prune`). Leaf hashes and
/// checkpoints are kept, so proofs still verify.
///
/// # Errors
/// On storage failure (nothing is deleted then).
pub async fn prune(
    db: &DatabaseConnection,
    keys: &ServerKeys,
    tenant: Option<Uuid>,
    older_than_days: u32,
) -> anyhow::Result<String> {
    let log = log_of(tenant);
    // Bodies are only pruned once their leaf hashes are safe in a checkpoint.
    while checkpoint_log(db, &keys.signing, &log).await?.is_some() {}
    let cutoff = unix_now() - i64::from(older_than_days) * 86_400;
    let backend = db.get_database_backend();
    let q = |sql: &str| match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => sql.replace('$', "?"),
    };
    let txn = db.begin().await?;
    let signed = latest(&txn, &log).await?.map_or(0, |c| c.size);
    let first_kept: Option<i64> = txn
        .query_one(Statement::from_sql_and_values(
            backend,
            q("SELECT MIN(idx) FROM audit_events WHERE log_id = $1 AND at >= $2"),
            [log.clone().into(), cutoff.into()],
        ))
        .await?
        .and_then(|r| r.try_get_by_index::<Option<i64>>(0).ok().flatten());
    let current: i64 = txn
        .query_one(Statement::from_sql_and_values(
            backend,
            q("SELECT below_idx FROM audit_prune WHERE log_id = $1"),
            [log.clone().into()],
        ))
        .await?
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    let below = first_kept.unwrap_or(signed).min(signed);
    if below <= current {
        txn.rollback().await?;
        return Ok(format!(
            "log {log}: nothing to prune (events older than {older_than_days} days below #{current} are already pruned)\n"
        ));
    }
    txn.execute(Statement::from_sql_and_values(
        backend,
        q("INSERT INTO audit_prune (log_id, below_idx, pruned_at) VALUES ($1, $2, $3) \
           ON CONFLICT (log_id) DO UPDATE SET below_idx = excluded.below_idx, pruned_at = excluded.pruned_at"),
        [log.clone().into(), below.into(), unix_now().into()],
    ))
    .await?;
    let deleted = txn
        .execute(Statement::from_sql_and_values(
            backend,
            q("DELETE FROM audit_events WHERE log_id = $1 AND idx < $2"),
            [log.clone().into(), below.into()],
        ))
        .await?
        .rows_affected();
    record(
        &txn,
        Event {
            tenant_id: tenant,
            actor: Actor::System,
            action: "audit.prune",
            resource_type: "audit_log",
            resource_id: Some(log.clone()),
            source: Source::Cli,
            client_ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            details: serde_json::json!({
                "older_than_days": older_than_days,
                "below_index": below,
                "deleted": deleted,
            }),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(format!(
        "log {log}: pruned {deleted} event bodies below #{below}; their leaf hashes and checkpoints are kept\n"
    ))
}
