//! Health history: one row per report, inserted in batches and pruned by retention.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "health_samples")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub agent_id: Uuid,
    pub tenant_id: Uuid,
    pub reported_at: i64,
    pub cpu_percent: f64,
    pub rss_bytes: i64,
    pub siem_reachable: i32,
    pub siem_total: i32,
    #[sea_orm(column_type = "Text")]
    pub siem: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
