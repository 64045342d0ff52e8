//! Signed tree heads of the audit logs. Never updated or deleted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub log_id: String,
    /// Tree size (number of leaves).
    #[sea_orm(primary_key, auto_increment = false)]
    pub size: i64,
    /// Merkle tree hash of the first `size` leaves.
    pub root: Vec<u8>,
    /// The C2SP signed note.
    #[sea_orm(column_type = "Text")]
    pub note: String,
    /// The compact range of the tree (hex hashes of its perfect subtrees,
    /// largest first), so the next checkpoint hashes only the new leaves.
    #[sea_orm(column_type = "Text")]
    pub frontier: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
