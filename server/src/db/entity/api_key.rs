//! An API key: created by an Admin with scopes and an expiry, shown once,
//! stored as the SHA-256 of its secret and looked up by its public prefix.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// Public part of the key (`pk_<prefix>_<secret>`), unique.
    #[sea_orm(unique)]
    pub prefix: String,
    /// SHA-256 hex of the whole key text.
    pub secret_hash: String,
    /// Space-separated scopes, e.g. `rules:read agents:read`.
    pub scopes: String,
    /// The Admin who created it: the key acts for them (and never beyond their role).
    pub created_by: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Written at most once a minute per key.
    pub last_used_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
