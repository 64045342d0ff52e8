//! Per-rule health, from `rule_health` jobs.
//!
//! - `rule_health_checks`: which connection (and window) a `rule_health` job
//!   was for (same id as the job), so its result can be stored against the
//!   right connection; like `drift_checks`.
//! - `rule_health_samples`: one row per rule and connection per completed
//!   job: the counts and times the agent reduced from the SIEM's own run
//!   records, never a row of SIEM data. History is bounded per rule and
//!   connection (`service::rule_health::HISTORY_PER_RULE`), pruned as new
//!   samples arrive.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000012_rule_health"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}
fn uuid(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).uuid().not_null().to_owned()
}
fn big(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().not_null().to_owned()
}
fn big_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("rule_health_checks"))
                .col(
                    ColumnDef::new(a("id"))
                        .uuid()
                        .not_null()
                        .primary_key()
                        .to_owned(),
                )
                .col(uuid("tenant_id"))
                .col(uuid("connection_id"))
                .col(big("window_secs"))
                .col(big("created_at"))
                .col(big_null("completed_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("rule_health_samples"))
                .col(
                    ColumnDef::new(a("id"))
                        .uuid()
                        .not_null()
                        .primary_key()
                        .to_owned(),
                )
                .col(uuid("tenant_id"))
                .col(uuid("rule_id"))
                .col(uuid("connection_id"))
                .col(uuid("job_id"))
                .col(big("taken_at"))
                .col(big("window_secs"))
                .col(ColumnDef::new(a("error_class")).string().null().to_owned())
                .col(big("runs_succeeded"))
                .col(big("runs_failed"))
                .col(big("runs_skipped"))
                .col(big_null("results_total"))
                .col(big_null("alerts_fired"))
                .col(big_null("last_run_at"))
                .col(big_null("last_run_duration_ms"))
                .col(big_null("gap_ms"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_rule_health_samples_rule")
                .table(a("rule_health_samples"))
                .col(a("tenant_id"))
                .col(a("rule_id"))
                .col(a("connection_id"))
                .col(a("taken_at"))
                .to_owned(),
        )
        .await
    }
}
