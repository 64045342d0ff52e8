//! What is deployed now for one rule on one connection, and what was before
//! it (rollback restores that); the drift state.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_deployments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub rule_id: Uuid,
    pub connection_id: Uuid,
    pub rule_version_id: Uuid,
    pub version: i32,
    pub monitoring: bool,
    pub enabled: bool,
    /// Hex SHA-256 the agent reported when it deployed it; drift checks expect it.
    pub content_hash: Option<String>,
    /// The version deployed before this one; `None` when this one was the first.
    pub previous_version_id: Option<Uuid>,
    pub previous_version: Option<i32>,
    pub previous_monitoring: bool,
    pub previous_enabled: bool,
    /// `deployed`, `drift_detected`, `removed` or `archived`.
    pub state: String,
    /// Hex hash found on the SIEM by the last drift check that saw a difference
    /// (`None` with `drift_detected`: the rule is missing).
    pub drift_hash: Option<String>,
    pub drift_checked_at: Option<i64>,
    /// JSON of `picket_proto::RemoteRule`: the rule as the SIEM held it at the
    /// last drift check that found it drifted (what "accept remote" records);
    /// `None` when in sync, missing, or not returned by the agent.
    #[sea_orm(column_type = "Text", nullable)]
    pub remote_content: Option<String>,
    pub last_deployment_id: Option<Uuid>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
