//! Indexes for lookups on hot paths that scanned whole tables. Found by the
//! 10,000-agent fan-out benchmark: every agent session loads its SIEM
//! connections by `agent_id` when it starts, and with one connection per
//! agent that scan (10,000 rows, per connect) held SQLite's single
//! connection long enough for other sessions to time out waiting for it
//! (close 1011). The others are the same pattern, found by reading every
//! filter the server runs: the outbox sweep and depth (`jobs.state`),
//! and deployments and rule states by connection or rule.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000016_lookup_indexes"
    }
}

/// `(index, table, columns)`.
const INDEXES: &[(&str, &str, &[&str])] = &[
    ("ix_connections_agent", "siem_connections", &["agent_id"]),
    ("ix_jobs_state_expires", "jobs", &["state", "expires_at"]),
    (
        "ix_deployments_connection",
        "deployments",
        &["connection_id"],
    ),
    ("ix_deployments_rule", "deployments", &["rule_id"]),
    (
        "ix_rule_deployments_connection",
        "rule_deployments",
        &["connection_id"],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, cols) in INDEXES {
            let mut i = Index::create();
            i.name(*name).table(Alias::new(*table)).if_not_exists();
            for c in *cols {
                i.col(Alias::new(*c));
            }
            m.create_index(i.to_owned()).await?;
        }
        Ok(())
    }
}
