//! An enrolled agent: its public keys, its job sequence counter and its liveness.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub hostname: String,
    pub version: String,
    pub x25519_public: Vec<u8>,
    pub ed25519_public: Vec<u8>,
    pub enrolled_at: i64,
    pub last_seen_at: Option<i64>,
    /// Last job sequence number issued to this agent (0: none yet).
    pub last_seq: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
