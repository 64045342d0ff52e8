//! A request to apply one rule version (or disable/delete a rule) on one SIEM connection, and its progress.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub rule_id: Uuid,
    pub rule_version_id: Uuid,
    pub version: i32,
    pub connection_id: Uuid,
    pub agent_id: Uuid,
    /// `deploy`, `disable` or `delete`.
    pub action: String,
    pub message: String,
    pub requested_by: Uuid,
    /// SHA-256 (hex) of exactly what is to be applied; approvals sign off on it.
    pub digest: String,
    /// `pending_approval`, `changes_requested`, `rejected`, `withdrawn`, `queued`, `delivered`, `succeeded`, `failed`, `refused`, `expired`.
    pub status: String,
    pub error_class: Option<String>,
    pub job_id: Option<Uuid>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Only reports what would change.
    pub dry_run: bool,
    /// `change`, `rollback` or `redeploy` (a drift resolution).
    pub kind: String,
    /// Set when an Admin deployed without approval (breakglass).
    pub breakglass_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
