//! Schema migrations, one file per change with a date-stamped name. They run
//! at start-up on both SQLite and PostgreSQL; the same files serve both.

use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261123_000002_token_uses_and_key_index;
mod m20261123_000003_key_rotation;
mod m20261123_000004_access_model;
mod m20261123_000005_audit_log;
mod m20261123_000007_connectors;
mod m20261123_000008_rule_lifecycle;
mod m20261123_000009_deployment_batches;
mod m20261123_000010_console;
mod m20261123_000011_scale;
mod m20261124_000012_rule_health;
mod m20261124_000013_splunk_login;
mod m20261124_000014_require_tests;
mod m20261124_000015_drift_content_and_previews;
mod m20261206_000016_lookup_indexes;

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_token_uses_and_key_index::Migration),
            Box::new(m20261123_000003_key_rotation::Migration),
            Box::new(m20261123_000007_connectors::Migration),
            Box::new(m20261123_000004_access_model::Migration),
            Box::new(m20261123_000005_audit_log::Migration),
            Box::new(m20261123_000008_rule_lifecycle::Migration),
            Box::new(m20261123_000009_deployment_batches::Migration),
            Box::new(m20261123_000011_scale::Migration),
            Box::new(m20261123_000010_console::Migration),
            Box::new(m20261124_000012_rule_health::Migration),
            Box::new(m20261124_000013_splunk_login::Migration),
            Box::new(m20261124_000014_require_tests::Migration),
            Box::new(m20261124_000015_drift_content_and_previews::Migration),
            Box::new(m20261206_000016_lookup_indexes::Migration),
        ]
    }
}
