//! One rule's health on one connection, as a `rule_health` job found it:
//! counts and times only. Bounded history per rule and connection.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_health_samples")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub rule_id: Uuid,
    pub connection_id: Uuid,
    /// The `rule_health` job that read it.
    pub job_id: Uuid,
    /// When the server stored the result (Unix seconds); the window ends about then.
    pub taken_at: i64,
    pub window_secs: i64,
    /// Why this rule's health could not be read; the counts are then 0.
    pub error_class: Option<String>,
    pub runs_succeeded: i64,
    pub runs_failed: i64,
    pub runs_skipped: i64,
    pub results_total: Option<i64>,
    pub alerts_fired: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_run_duration_ms: Option<i64>,
    pub gap_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
