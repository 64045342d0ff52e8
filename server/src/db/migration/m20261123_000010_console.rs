//! Indexes behind the web console's paged, sorted tables: the fleet (10,000
//! agents and more per tenant, sorted by host, version or last contact, with
//! the id as tie-breaker so `ORDER BY` needs no sort step), the
//! deployments history (newest changes first, and the live-status poll) and an
//! agent's recent jobs.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000010_console"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let indexes: [(&str, &str, &[&str]); 6] = [
            (
                "ix_agents_tenant_hostname",
                "agents",
                &["tenant_id", "hostname", "id"],
            ),
            (
                "ix_agents_tenant_version",
                "agents",
                &["tenant_id", "version", "id"],
            ),
            (
                "ix_agents_tenant_seen",
                "agents",
                &["tenant_id", "last_seen_at", "id"],
            ),
            (
                "ix_agents_tenant_enrolled",
                "agents",
                &["tenant_id", "enrolled_at", "id"],
            ),
            (
                "ix_deployments_tenant_updated",
                "deployments",
                &["tenant_id", "updated_at"],
            ),
            ("ix_jobs_agent_created", "jobs", &["agent_id", "created_at"]),
        ];
        for (name, table, cols) in indexes {
            let mut i = Index::create();
            i.name(name).table(a(table));
            for c in cols {
                i.col(a(c));
            }
            m.create_index(i.to_owned()).await?;
        }
        Ok(())
    }
}
