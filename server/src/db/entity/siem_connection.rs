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
    /// Non-secret settings, JSON (`service::connections::SentinelStored` /
    /// `ElasticStored`; for Splunk `SplunkHecStored` once HEC is configured, else NULL).
    #[sea_orm(column_type = "Text", nullable)]
    pub settings: Option<String>,
    pub credential: Vec<u8>,
    /// Tenant key version the credential is sealed under.
    pub key_version: i32,
    pub created_at: i64,
    pub updated_at: i64,
    /// Splunk HEC token for rule tests, sealed like `credential` (write-only).
    pub hec_credential: Option<Vec<u8>>,
    /// Tenant key version `hec_credential` is sealed under.
    pub hec_key_version: Option<i32>,
    /// Splunk: the user whose session key the agent gets from
    /// `/services/auth/login`; `credential` then holds the password. NULL:
    /// `credential` is a token (and for every other kind).
    pub splunk_username: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
