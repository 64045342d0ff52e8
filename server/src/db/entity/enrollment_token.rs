//! Agent enrollment tokens, stored only as a SHA-256 of their secret. Single
//! use by default; `max_uses` > 1 lets one token enroll a batch of hosts.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "enrollment_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[sea_orm(unique)]
    pub token_hash: String,
    pub label: Option<String>,
    pub created_by: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
    /// Time of the latest enrollment that consumed it.
    pub used_at: Option<i64>,
    /// Agent created by the latest enrollment that consumed it.
    pub used_by_agent: Option<Uuid>,
    pub revoked_at: Option<i64>,
    /// How many enrollments it allows (1: single use).
    pub max_uses: i32,
    /// How many enrollments consumed it; only ever raised by a guarded
    /// `UPDATE ... WHERE uses < max_uses`, so it never exceeds `max_uses`.
    pub uses: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
