//! One run of a rule version's tests against one SIEM connection.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_test_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub rule_id: Uuid,
    pub rule_version_id: Uuid,
    pub version: i32,
    pub connection_id: Uuid,
    /// The `test_rule` job, once sealed.
    pub job_id: Option<Uuid>,
    pub requested_by: Uuid,
    /// `queued`, `passed`, `failed` (a case did not meet its expectation),
    /// `error` (the agent could not run the tests; see `error_class`).
    pub status: String,
    pub error_class: Option<String>,
    /// JSON array: `{name, expect, matched, passed}` per case, in case order.
    #[sea_orm(column_type = "Text")]
    pub results: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
