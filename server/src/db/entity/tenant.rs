//! A customer organisation; every other row belongs to one. Its data key is created lazily and stored wrapped under the master credential key.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    /// Tenant data key wrapped by the master credential key; `None` until first needed.
    pub wrapped_key: Option<Vec<u8>>,
    /// Version of the tenant key; part of every credential AAD.
    pub key_version: i32,
    /// Distinct approvers a deployment needs.
    pub min_approvers: i32,
    /// A rule version with no test cases cannot be approved for deployment
    /// (an Admin may override with a reason); off unless an Admin turns it on.
    pub require_tests: bool,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
