//! The after-the-fact review of a breakglass deployment; open until an Admin
//! other than the one who deployed signs it off.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "breakglass_reviews")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub deployment_id: Uuid,
    pub requested_by: Uuid,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub created_at: i64,
    pub signed_off_by: Option<Uuid>,
    pub signed_off_at: Option<i64>,
    pub comment: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
