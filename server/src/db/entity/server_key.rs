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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
