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
    /// `splunk`, `sentinel` or `elastic`.
    pub kind: String,
    /// Splunk: management URL; Sentinel: ARM URL; Elastic: Kibana URL.
    pub base_url: String,
    /// Splunk app (empty for other kinds).
    pub app: String,
    /// Splunk owner (empty for other kinds).
    pub owner: String,
    /// Non-secret settings of Sentinel and Elastic connections, JSON
    /// (`service::connections::SentinelStored` / `ElasticStored`); NULL for Splunk.
    #[sea_orm(column_type = "Text", nullable)]
    pub settings: Option<String>,
    pub credential: Vec<u8>,
    /// Tenant key version the credential is sealed under.
    pub key_version: i32,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
