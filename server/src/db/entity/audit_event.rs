//! One audit event: a leaf of its log's Merkle tree. Append-only; the body
//! may be deleted only by retention pruning (see the audit log migration).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// The log: the tenant id, or `system` for tenant-less events.
    #[sea_orm(primary_key, auto_increment = false)]
    pub log_id: String,
    /// Leaf index in that log, from 0, without gaps.
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i64,
    /// UUIDv7 of the event (also inside `canonical`).
    pub event_id: String,
    pub tenant_id: Option<String>,
    /// Unix seconds.
    pub at: i64,
    /// `user`, `api_key`, `agent`, `system`, `anonymous`.
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// `console`, `api`, `agent`, `cli`, `system`.
    pub source: String,
    pub client_ip: Option<String>,
    /// `success`, `failure`, `denied`.
    pub outcome: String,
    /// The exact bytes hashed into the leaf (versioned canonical JSON); the
    /// other columns are copies of it for filtering.
    #[sea_orm(column_type = "Text")]
    pub canonical: String,
    /// `SHA-256(0x00 ‖ canonical)`.
    pub leaf_hash: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
