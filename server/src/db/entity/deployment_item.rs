//! One rule version of a deployment request, in order, with its live status.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployment_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub deployment_id: Uuid,
    /// Order of application, from 0.
    pub position: i32,
    pub rule_id: Uuid,
    pub rule_version_id: Uuid,
    pub version: i32,
    /// `deploy`, `disable`, `enable` or `delete`.
    pub action: String,
    /// Deployed with alerting off.
    pub monitoring: bool,
    /// `queued`, `sent`, then `applied`, `failed`, `reverted`, `revert_failed`,
    /// `skipped`, or for a dry run `would_create`, `would_change`, `unchanged`.
    pub status: String,
    pub error_class: Option<String>,
    /// Hex SHA-256 of the content as deployed (or as found, for a dry run).
    pub content_hash: Option<String>,
    /// The `preview_count` job counting this item's expected alert volume.
    pub preview_job_id: Option<Uuid>,
    /// `queued`, `counted`, `failed` or `unsupported`; `None`: never asked.
    pub preview_status: Option<String>,
    /// Events the rule's query matched over `preview_window_secs`.
    pub preview_count: Option<i64>,
    pub preview_window_secs: Option<i32>,
    /// The agent's error class, or why there is no preview.
    pub preview_error: Option<String>,
    pub preview_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
