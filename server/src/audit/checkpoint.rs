//! The checkpointer: for each log that grew, copy the new leaf hashes into
//! `audit_leaves`, extend the stored compact range, and sign the new tree
//! head (C2SP signed note, origin `picket/audit/<log id>`, key name
//! [`KEY_NAME`], the server's Ed25519 key). It runs every
//! `audit.checkpoint_secs` (default 60) and on demand ([`Hub::request`]);
//! new checkpoints are announced on [`Hub::subscribe`] (the agent gateway
//! pushes them to the tenant's agents).
//!
//! Several replicas may checkpoint the same log at once (PostgreSQL): they
//! compute the same bytes (Ed25519 signatures are deterministic) and the
//! inserts ignore rows that already exist.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use picket_shared::checkpoint::{Checkpoint, sign_checkpoint};
use picket_shared::keys::ServerSigningKey;
use picket_shared::merkle::Hash;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set, TransactionTrait as _,
};
use tokio::sync::{Notify, broadcast};

use super::tree::Frontier;
use crate::db::entity::{audit_checkpoint, audit_event, audit_leaf, tenant};
use crate::time::unix_now;

/// Key name of the audit checkpoints' signature line.
pub const KEY_NAME: &str = "picket-audit";

/// Most new leaves folded into one checkpoint; a larger backlog is covered by
/// successive checkpoints in the same run.
const BATCH: u64 = 50_000;

/// The origin line of a log's checkpoints.
pub fn origin(log_id: &str) -> String {
    format!("picket/audit/{log_id}")
}

/// Wakes the checkpointer and announces new checkpoints.
pub struct Hub {
    wake: Notify,
    new: broadcast::Sender<Arc<audit_checkpoint::Model>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            wake: Notify::new(),
            new: broadcast::channel(256).0,
        }
    }
}

impl Hub {
    /// Asks for a checkpoint run now (tests, the API's `POST /v1/audit/checkpoint`).
    pub fn request(&self) {
        self.wake.notify_one();
    }

    /// New checkpoints as they are written by this process.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<audit_checkpoint::Model>> {
        self.new.subscribe()
    }
}

/// The latest checkpoint of a log.
///
/// # Errors
/// On storage failure.
pub async fn latest(
    conn: &impl ConnectionTrait,
    log_id: &str,
) -> Result<Option<audit_checkpoint::Model>, sea_orm::DbErr> {
    audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::LogId.eq(log_id))
        .order_by_desc(audit_checkpoint::Column::Size)
        .one(conn)
        .await
}

/// Checkpoints one log if it grew since its last checkpoint (at most
/// [`BATCH`] new leaves at a time). Returns the new checkpoint.
///
/// # Errors
/// On storage failure, a corrupt stored frontier, or a signing failure.
pub async fn checkpoint_log(
    db: &DatabaseConnection,
    key: &ServerSigningKey,
    log_id: &str,
) -> anyhow::Result<Option<audit_checkpoint::Model>> {
    let last = latest(db, log_id).await?;
    let mut frontier = match &last {
        Some(c) => Frontier::decode(u64::try_from(c.size).unwrap_or(0), &c.frontier)
            .map_err(|e| anyhow::anyhow!("audit log {log_id}: stored frontier: {e}"))?,
        None => Frontier::default(),
    };
    let start = frontier.size();
    let rows: Vec<(i64, Vec<u8>)> = audit_event::Entity::find()
        .select_only()
        .column(audit_event::Column::Idx)
        .column(audit_event::Column::LeafHash)
        .filter(audit_event::Column::LogId.eq(log_id))
        .filter(audit_event::Column::Idx.gte(i64::try_from(start)?))
        .order_by_asc(audit_event::Column::Idx)
        .limit(BATCH)
        .into_tuple()
        .all(db)
        .await?;
    let mut leaves = Vec::with_capacity(rows.len());
    for (idx, hash) in rows {
        // Indexes are dense by construction; stop at anything else and let
        // `verify` report it rather than sign over a hole.
        if u64::try_from(idx).ok() != Some(frontier.size()) {
            tracing::error!(
                log_id,
                idx,
                expected = frontier.size(),
                "audit log has a gap; not checkpointing past it"
            );
            break;
        }
        let Ok(h) = <Hash>::try_from(hash.as_slice()) else {
            tracing::error!(
                log_id,
                idx,
                "audit event has a malformed leaf hash; not checkpointing past it"
            );
            break;
        };
        frontier.push(h);
        leaves.push(audit_leaf::ActiveModel {
            log_id: Set(log_id.to_owned()),
            idx: Set(idx),
            leaf_hash: Set(h.to_vec()),
        });
    }
    if leaves.is_empty() {
        return Ok(None);
    }
    let size = frontier.size();
    let root = frontier.root();
    let note = sign_checkpoint(
        &Checkpoint {
            origin: origin(log_id),
            size,
            root,
        },
        KEY_NAME,
        key,
    )
    .map_err(|e| anyhow::anyhow!("signing the audit checkpoint: {e}"))?;
    let row = audit_checkpoint::Model {
        log_id: log_id.to_owned(),
        size: i64::try_from(size)?,
        root: root.to_vec(),
        note,
        frontier: frontier.encode(),
        created_at: unix_now(),
    };
    let txn = db.begin().await?;
    for chunk in leaves.chunks(1000) {
        audit_leaf::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([audit_leaf::Column::LogId, audit_leaf::Column::Idx])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
    }
    audit_checkpoint::Entity::insert(audit_checkpoint::ActiveModel::from(row.clone()))
        .on_conflict(
            OnConflict::columns([
                audit_checkpoint::Column::LogId,
                audit_checkpoint::Column::Size,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(row))
}

/// Every log: each tenant's and the system log.
///
/// # Errors
/// On storage failure.
pub async fn log_ids(db: &DatabaseConnection) -> Result<Vec<String>, sea_orm::DbErr> {
    let tenants: Vec<uuid::Uuid> = tenant::Entity::find()
        .select_only()
        .column(tenant::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let mut ids: Vec<String> = tenants.into_iter().map(|t| t.to_string()).collect();
    ids.push(super::SYSTEM_LOG.to_owned());
    Ok(ids)
}

/// Checkpoints every log that grew, until each is fully covered.
///
/// # Errors
/// On the first failing log (the others are still attempted on the next run).
pub async fn checkpoint_all(
    db: &DatabaseConnection,
    key: &ServerSigningKey,
) -> anyhow::Result<Vec<audit_checkpoint::Model>> {
    let mut out = Vec::new();
    for log in log_ids(db).await? {
        while let Some(c) = checkpoint_log(db, key, &log)
            .await
            .with_context(|| format!("checkpointing audit log {log}"))?
        {
            out.push(c);
        }
    }
    Ok(out)
}

/// Runs the checkpointer until shutdown: every `audit.checkpoint_secs`, when
/// woken by [`Hub::request`], and once more at shutdown. Failures are logged
/// and retried on the next tick.
pub fn spawn(state: crate::AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_secs(u64::from(state.config.audit.checkpoint_secs));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                _ = tick.tick() => {}
                () = state.audit.wake.notified() => {}
            }
            match checkpoint_all(&state.db, &state.keys.signing).await {
                Ok(new) => {
                    for c in new {
                        tracing::debug!(log_id = %c.log_id, size = c.size, "audit checkpoint signed");
                        state.audit.announce(c);
                    }
                }
                Err(e) => tracing::error!(error = ?e, "audit checkpoint failed"),
            }
        }
        // Sign what the last minute added before a graceful stop.
        if let Err(e) = checkpoint_all(&state.db, &state.keys.signing).await {
            tracing::warn!(error = ?e, "final audit checkpoint failed");
        }
    })
}

impl Hub {
    /// Announces a checkpoint written by this process (no listener is fine).
    pub fn announce(&self, c: audit_checkpoint::Model) {
        let _ = self.new.send(Arc::new(c));
    }
}
