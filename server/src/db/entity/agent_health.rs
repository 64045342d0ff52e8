//! Latest health report per agent (one row each, upserted in batches).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_health")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: Uuid,
    pub tenant_id: Uuid,
    pub reported_at: i64,
    pub uptime_secs: i64,
    pub cpu_percent: f64,
    pub rss_bytes: i64,
    pub host_mem_used_bytes: i64,
    pub host_mem_total_bytes: i64,
    pub jobs_succeeded: i64,
    pub jobs_failed: i64,
    /// Per-connection reachability, JSON array of `SiemHealth`.
    #[sea_orm(column_type = "Text")]
    pub siem: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
