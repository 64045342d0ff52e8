//! Drift "accept remote" and previews (issue 6):
//!
//! - `rule_deployments.remote_content`: the rule as the SIEM holds it (JSON of
//!   `picket_proto::RemoteRule`: rule text and schedule metadata, never log
//!   data, at most 64 KiB), returned by the agent with the drift check that
//!   found it drifted; cleared when the rule is back in sync or redeployed.
//! - `rule_versions.origin`: where a version came from when no person wrote
//!   it (`accepted from SIEM ...`); `NULL` for versions written through the
//!   API, the console or an import.
//! - `deployment_items.preview_*`: the expected alert volume of a deploy
//!   item, from a `preview_count` job (`preview_job_id`): `preview_status`
//!   (`queued`, `counted`, `failed`, `unsupported`), `preview_count` (events
//!   the query matched over `preview_window_secs`), `preview_error` (the
//!   error class, or why there is no preview), `preview_at`.
//!
//! SQLite cannot add several columns in one `ALTER TABLE`: one statement each.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000015_drift_content_and_previews"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let col = |name: &str| ColumnDef::new(Alias::new(name)).null().to_owned();
        let columns = [
            ("rule_deployments", col("remote_content").text().to_owned()),
            ("rule_versions", col("origin").text().to_owned()),
            ("deployment_items", col("preview_job_id").uuid().to_owned()),
            (
                "deployment_items",
                col("preview_status").string().to_owned(),
            ),
            (
                "deployment_items",
                col("preview_count").big_integer().to_owned(),
            ),
            (
                "deployment_items",
                col("preview_window_secs").integer().to_owned(),
            ),
            ("deployment_items", col("preview_error").string().to_owned()),
            (
                "deployment_items",
                col("preview_at").big_integer().to_owned(),
            ),
        ];
        for (table, column) in columns {
            m.alter_table(
                Table::alter()
                    .table(Alias::new(table))
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("ix_deployment_items_preview_job")
                .table(Alias::new("deployment_items"))
                .col(Alias::new("preview_job_id"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
