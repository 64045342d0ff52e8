//! The tenant's test requirement (issue 6): `tenants.require_tests`. When on,
//! a rule version with no test cases cannot be approved for deployment
//! (an Admin may override with a written reason, as for failing tests).
//! Off for every tenant, existing and new, until an Admin turns it on: see
//! docs/lifecycle.md for why.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000014_require_tests"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("tenants"))
                .add_column(
                    ColumnDef::new(Alias::new("require_tests"))
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .to_owned(),
        )
        .await
    }
}
