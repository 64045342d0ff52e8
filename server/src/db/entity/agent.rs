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
    /// Identity key replaced by the last key rotation (a `Hello` signed with
    /// it is refused as superseded).
    pub previous_ed25519_public: Option<Vec<u8>>,
    /// Job key replaced by the last key rotation.
    pub previous_x25519_public: Option<Vec<u8>>,
    /// When the agent's keys were last rotated.
    pub keys_rotated_at: Option<i64>,
    /// An admin asked for a rotation that has not happened yet.
    pub rotate_requested_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
