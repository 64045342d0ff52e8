//! The server'\''s Ed25519 job-signing keys, private halves wrapped under the master secret.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "server_keys")]
pub struct Model {
    /// Hex SHA-256 fingerprint of the public key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub public_key: Vec<u8>,
    pub wrapped_private: Vec<u8>,
    pub active: bool,
    pub created_at: i64,
    /// The key this one replaced (`None` for the first key).
    pub prev_key_id: Option<String>,
    /// The predecessor's Ed25519 signature over `KeyLink::signing_bytes`.
    pub endorsement: Option<Vec<u8>>,
    /// Until when (Unix seconds) jobs signed by the predecessor stay acceptable.
    pub prev_valid_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
