//! Splunk session-key credentials: a Splunk connection may authenticate
//! with a username and password (`/services/auth/login`) instead of a
//! token. The username is not secret and lives here; the password is sealed
//! in `credential` under the tenant key, exactly like a token. NULL: the
//! connection uses its token (every other kind, and older rows).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000013_splunk_login"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("siem_connections"))
                .add_column(
                    ColumnDef::new(Alias::new("splunk_username"))
                        .string()
                        .null()
                        .to_owned(),
                )
                .to_owned(),
        )
        .await
    }
}
