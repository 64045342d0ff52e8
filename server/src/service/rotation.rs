//! Master-secret rotation: every key wrapped under the master secret is
//! unwrapped with the old derived keys and wrapped with the new ones, in ONE
//! database transaction, with its audit event. Any failure (a row that does
//! not open under the old secret, a storage error) rolls everything back: the
//! database is then entirely on the old secret, never half-rotated.
//!
//! What is re-wrapped: each tenant key (`tenants.wrapped_key`) and each
//! job-signing key (`server_keys.wrapped_private`, active or retired). SIEM
//! credential ciphertexts are untouched (they are under the tenant keys, which
//! do not change). The `sessions` and `audit` keys derived from the master
//! secret change too, but nothing is stored under them: session ids are plain
//! SHA-256 digests, so sessions survive a rotation.

use picket_shared::vault::MasterKeys;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, DatabaseTransaction, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, TransactionTrait as _,
};

use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::db::entity::{server_key, tenant};

/// What a rotation re-wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Tenant keys re-wrapped.
    pub tenant_keys: usize,
    /// Signing keys re-wrapped.
    pub signing_keys: usize,
}

/// Re-wraps every tenant key and signing key from `old` to `new` in one transaction.
///
/// # Errors
/// If any key does not open under `old` (then nothing changed), or on storage failure.
pub async fn rotate_master_secret(
    db: &DatabaseConnection,
    old: &MasterKeys,
    new: &MasterKeys,
) -> anyhow::Result<RotationReport> {
    let txn = db.begin().await?;
    match rewrap_all(&txn, old, new).await {
        Ok(report) => {
            txn.commit().await?;
            Ok(report)
        }
        Err(e) => {
            // Roll back now: a dropped transaction may keep its row locks
            // (PostgreSQL) until its pooled connection is next used.
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

async fn rewrap_all(
    txn: &DatabaseTransaction,
    old: &MasterKeys,
    new: &MasterKeys,
) -> anyhow::Result<RotationReport> {
    let keys = server_key::Entity::find()
        .order_by_asc(server_key::Column::Id)
        .all(txn)
        .await?;
    for k in &keys {
        let signing = old.unwrap_signing_key(&k.wrapped_private).map_err(|e| {
            anyhow::anyhow!(
                "signing key {} does not open with the current master secret ({e}); nothing was changed",
                k.id
            )
        })?;
        let wrapped = new
            .wrap_signing_key(&signing)
            .map_err(|e| anyhow::anyhow!("wrapping signing key {}: {e}", k.id))?;
        server_key::Entity::update_many()
            .col_expr(server_key::Column::WrappedPrivate, Expr::value(wrapped))
            .filter(server_key::Column::Id.eq(k.id.clone()))
            .exec(txn)
            .await?;
    }
    let tenants = tenant::Entity::find()
        .filter(tenant::Column::WrappedKey.is_not_null())
        .order_by_asc(tenant::Column::Id)
        .all(txn)
        .await?;
    for t in &tenants {
        let Some(w) = &t.wrapped_key else { continue };
        let key = old.unwrap_tenant_key(t.id, w).map_err(|e| {
            anyhow::anyhow!(
                "the key of tenant {} does not open with the current master secret ({e}); nothing was changed",
                t.id
            )
        })?;
        let wrapped = new
            .wrap_tenant_key(t.id, &key)
            .map_err(|e| anyhow::anyhow!("wrapping the key of tenant {}: {e}", t.id))?;
        tenant::Entity::update_many()
            .col_expr(tenant::Column::WrappedKey, Expr::value(wrapped))
            .filter(tenant::Column::Id.eq(t.id))
            .exec(txn)
            .await?;
    }
    let report = RotationReport {
        tenant_keys: tenants.len(),
        signing_keys: keys.len(),
    };
    audit::record(
        txn,
        Event {
            tenant_id: None,
            actor: Actor::System,
            action: "master_secret.rotate",
            resource_type: "master_secret",
            resource_id: None,
            source: Source::Cli,
            client_ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            details: serde_json::json!({ "tenant_keys": report.tenant_keys, "signing_keys": report.signing_keys }),
        },
    )
    .await?;
    Ok(report)
}
