//! One immutable version of a rule.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub rule_id: Uuid,
    pub tenant_id: Uuid,
    pub version: i32,
    pub title: String,
    pub description: String,
    pub severity: String,
    #[sea_orm(column_type = "Text")]
    pub query: String,
    pub cron: String,
    pub earliest: String,
    pub latest: String,
    pub author_id: Uuid,
    pub created_at: i64,
    /// `spl`, `kql`, `kuery`, `eql`, `esql` (see `picket_rules::Language`).
    pub language: String,
    /// JSON array of ATT&CK technique ids.
    #[sea_orm(column_type = "Text")]
    pub mitre: String,
    /// JSON array of `picket_rules::TestCase`.
    #[sea_orm(column_type = "Text")]
    pub tests: String,
    /// JSON array of the validation warnings given at save time.
    #[sea_orm(column_type = "Text")]
    pub warnings: String,
    /// Where the version came from when no person wrote it (`accepted from
    /// SIEM ...`, with `author_id` nil); `None` otherwise.
    #[sea_orm(column_type = "Text", nullable)]
    pub origin: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
