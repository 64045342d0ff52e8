//! Inclusion and consistency proofs from the stored leaf hashes.
//!
//! Proofs are only served for tree sizes that are covered by a signed
//! checkpoint (the leaves up to it are in `audit_leaves`, immutable). They
//! are computed by the reference code in `picket_shared::merkle` over the
//! leaf hashes read from the database: O(n) reads and hashes for a tree of
//! n leaves — about 32 MB read and a few hundred ms for a million events.

use picket_shared::merkle::{self, Hash};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};

use crate::db::entity::audit_leaf;

/// Why a proof cannot be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The sizes or index are not valid for the checkpointed tree.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed or is inconsistent.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// The first `size` leaf hashes of a log.
///
/// # Errors
/// If fewer than `size` leaves are stored or one is malformed.
pub async fn leaves(
    conn: &impl ConnectionTrait,
    log_id: &str,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    let rows: Vec<Vec<u8>> = audit_leaf::Entity::find()
        .select_only()
        .column(audit_leaf::Column::LeafHash)
        .filter(audit_leaf::Column::LogId.eq(log_id))
        .filter(audit_leaf::Column::Idx.lt(i64::try_from(size).unwrap_or(i64::MAX)))
        .order_by_asc(audit_leaf::Column::Idx)
        .into_tuple()
        .all(conn)
        .await
        .map_err(anyhow::Error::new)?;
    if rows.len() as u64 != size {
        return Err(ProofError::Storage(anyhow::anyhow!(
            "audit log {log_id}: {} leaf hashes stored below size {size}",
            rows.len()
        )));
    }
    rows.into_iter()
        .map(|r| {
            Hash::try_from(r.as_slice())
                .map_err(|_| ProofError::Storage(anyhow::anyhow!("malformed stored leaf hash")))
        })
        .collect()
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
///
/// # Errors
/// [`ProofError::Invalid`] if `index >= size`; storage errors.
pub async fn inclusion(
    conn: &impl ConnectionTrait,
    log_id: &str,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::Invalid(format!(
            "event index {index} is not in the tree of size {size}"
        )));
    }
    let all = leaves(conn, log_id, size).await?;
    merkle::inclusion_proof(&all, index).map_err(|e| ProofError::Invalid(e.to_string()))
}

/// The consistency proof between the trees of `old` and `new` leaves.
///
/// # Errors
/// [`ProofError::Invalid`] unless `0 < old <= new`; storage errors.
pub async fn consistency(
    conn: &impl ConnectionTrait,
    log_id: &str,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::Invalid(format!(
            "no consistency proof exists from size {old} to size {new}: need 0 < from <= to"
        )));
    }
    let all = leaves(conn, log_id, new).await?;
    merkle::consistency_proof(&all, old).map_err(|e| ProofError::Invalid(e.to_string()))
}
