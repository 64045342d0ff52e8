//! Drift "accept remote" (issue 6):
//!
//! - `rule_deployments.remote_content`: the rule as the SIEM holds it (JSON of
//!   `picket_proto::RemoteRule`: rule text and schedule metadata, never log
//!   data, at most 64 KiB), returned by the agent with the drift check that
//!   found it drifted; cleared when the rule is back in sync or redeployed.
//! - `rule_versions.origin`: where a version came from when no person wrote
//!   it (`accepted from SIEM ...`); `NULL` for versions written through the
//!   API, the console or an import.
//!
//! SQLite cannot add several columns in one `ALTER TABLE`: one statement each.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000015_drift_content"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in [
            ("rule_deployments", "remote_content"),
            ("rule_versions", "origin"),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Alias::new(table))
                    .add_column(ColumnDef::new(Alias::new(column)).text().null())
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
