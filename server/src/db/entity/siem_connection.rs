//! A SIEM the tenant deploys to, served by one agent. The credential is AES-256-GCM under the tenant key.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "siem_connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub name: String,
    /// `splunk`.
    pub kind: String,
    pub base_url: String,
    pub app: String,
    pub owner: String,
    pub credential: Vec<u8>,
    /// Tenant key version the credential is sealed under.
    pub key_version: i32,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
