//! Rules for every SIEM, with tags and tests (issue 6, rule side).
//!
//! `rule_versions` gains `language` (`spl`, `kql`, `kuery`, `eql`, `esql`),
//! `mitre` (JSON array of ATT&CK technique ids), `tests` (JSON array of test
//! cases with their sample events) and `warnings` (JSON array of the
//! validation warnings given when the version was saved). Existing versions
//! were all Splunk rules without tags or tests: the defaults (`spl`, `[]`)
//! migrate them as they are.
//!
//! `rule_test_runs`: one run of a version's tests against one connection,
//! with its state (`queued`, `passed`, `failed`, `error`), the agent's error
//! class and per-case outcomes (JSON: name, expectation, match count, pass).
//!
//! `siem_connections` gains `hec_credential` and `hec_key_version`: a Splunk
//! connection's HTTP Event Collector token (where rule tests inject their
//! events), sealed under the tenant key like `credential` and as write-only;
//! its URL and test index go in `settings` (JSON), NULL until configured.
//!
//! One `ALTER TABLE` per column: SQLite cannot add several at once.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000008_rule_lifecycle"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ColumnDef::new(a("language"))
                .string()
                .not_null()
                .default("spl")
                .to_owned(),
            ColumnDef::new(a("mitre"))
                .text()
                .not_null()
                .default("[]")
                .to_owned(),
            ColumnDef::new(a("tests"))
                .text()
                .not_null()
                .default("[]")
                .to_owned(),
            ColumnDef::new(a("warnings"))
                .text()
                .not_null()
                .default("[]")
                .to_owned(),
        ];
        for mut col in columns {
            m.alter_table(
                Table::alter()
                    .table(a("rule_versions"))
                    .add_column(&mut col)
                    .to_owned(),
            )
            .await?;
        }
        for mut col in [
            ColumnDef::new(a("hec_credential"))
                .binary()
                .null()
                .to_owned(),
            ColumnDef::new(a("hec_key_version"))
                .integer()
                .null()
                .to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(a("siem_connections"))
                    .add_column(&mut col)
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(
            Table::create()
                .table(a("rule_test_runs"))
                .col(ColumnDef::new(a("id")).uuid().not_null().primary_key())
                .col(ColumnDef::new(a("tenant_id")).uuid().not_null())
                .col(ColumnDef::new(a("rule_id")).uuid().not_null())
                .col(ColumnDef::new(a("rule_version_id")).uuid().not_null())
                .col(ColumnDef::new(a("version")).integer().not_null())
                .col(ColumnDef::new(a("connection_id")).uuid().not_null())
                .col(ColumnDef::new(a("job_id")).uuid().null())
                .col(ColumnDef::new(a("requested_by")).uuid().not_null())
                .col(ColumnDef::new(a("status")).string().not_null())
                .col(ColumnDef::new(a("error_class")).string().null())
                .col(ColumnDef::new(a("results")).text().not_null())
                .col(ColumnDef::new(a("created_at")).big_integer().not_null())
                .col(ColumnDef::new(a("updated_at")).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_rule_test_runs_version")
                .table(a("rule_test_runs"))
                .col(a("rule_version_id"))
                .col(a("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_rule_test_runs_job")
                .table(a("rule_test_runs"))
                .col(a("job_id"))
                .to_owned(),
        )
        .await
    }
}
