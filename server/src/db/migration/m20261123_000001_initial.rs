//! The initial schema: tenants, users, sessions, keys, agents, connections,
//! rules and versions, deployments and approvals, the job outbox, health and audit.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000001_initial"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// Column shorthands, so each table reads as a list of fields.
fn uuid_pk(name: &str) -> ColumnDef {
    ColumnDef::new(a(name))
        .uuid()
        .not_null()
        .primary_key()
        .to_owned()
}
fn uuid(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).uuid().not_null().to_owned()
}
fn uuid_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).uuid().null().to_owned()
}
fn text(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).text().not_null().to_owned()
}
fn text_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).text().null().to_owned()
}
fn string(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().not_null().to_owned()
}
fn string_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().null().to_owned()
}
fn int(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).integer().not_null().to_owned()
}
fn big(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().not_null().to_owned()
}
fn big_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().null().to_owned()
}
fn boolean(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).boolean().not_null().to_owned()
}
fn blob(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).binary().not_null().to_owned()
}
fn blob_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).binary().null().to_owned()
}
fn double(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).double().not_null().to_owned()
}
fn serial_pk(name: &str) -> ColumnDef {
    ColumnDef::new(a(name))
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn table(name: &str, cols: Vec<ColumnDef>) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(a(name));
    for mut c in cols {
        t.col(&mut c);
    }
    t.to_owned()
}

fn index(name: &str, table: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(a(table));
    for c in cols {
        i.col(a(c));
    }
    if unique {
        i.unique();
    }
    i.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let tables = vec![
            table(
                "tenants",
                vec![
                    uuid_pk("id"),
                    string("name"),
                    blob_null("wrapped_key"),
                    int("key_version"),
                    int("min_approvers"),
                    big("created_at"),
                ],
            ),
            table(
                "instance_claims",
                vec![
                    ColumnDef::new(a("id"))
                        .integer()
                        .not_null()
                        .primary_key()
                        .to_owned(),
                    uuid("tenant_id"),
                    big("claimed_at"),
                ],
            ),
            table(
                "users",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    string("email"),
                    string("password_hash"),
                    string("role"),
                    boolean("approver"),
                    big("created_at"),
                ],
            ),
            table(
                "sessions",
                vec![
                    ColumnDef::new(a("id"))
                        .string()
                        .not_null()
                        .primary_key()
                        .to_owned(),
                    uuid("user_id"),
                    uuid("tenant_id"),
                    big("created_at"),
                    big("last_seen_at"),
                    big("expires_at"),
                    boolean("revoked"),
                ],
            ),
            table(
                "server_keys",
                vec![
                    ColumnDef::new(a("id"))
                        .string()
                        .not_null()
                        .primary_key()
                        .to_owned(),
                    blob("public_key"),
                    blob("wrapped_private"),
                    boolean("active"),
                    big("created_at"),
                ],
            ),
            table(
                "enrollment_tokens",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    string("token_hash"),
                    string_null("label"),
                    uuid("created_by"),
                    big("created_at"),
                    big("expires_at"),
                    big_null("used_at"),
                    uuid_null("used_by_agent"),
                    big_null("revoked_at"),
                ],
            ),
            table(
                "agents",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    string("hostname"),
                    string("version"),
                    blob("x25519_public"),
                    blob("ed25519_public"),
                    big("enrolled_at"),
                    big_null("last_seen_at"),
                    big("last_seq"),
                    big_null("revoked_at"),
                ],
            ),
            table(
                "siem_connections",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    uuid("agent_id"),
                    string("name"),
                    string("kind"),
                    string("base_url"),
                    string("app"),
                    string("owner"),
                    blob("credential"),
                    int("key_version"),
                    big("created_at"),
                    big("updated_at"),
                ],
            ),
            table(
                "rules",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    string("name"),
                    string("siem_kind"),
                    uuid("created_by"),
                    big("created_at"),
                    int("latest_version"),
                ],
            ),
            table(
                "rule_versions",
                vec![
                    uuid_pk("id"),
                    uuid("rule_id"),
                    uuid("tenant_id"),
                    int("version"),
                    string("title"),
                    text("description"),
                    string("severity"),
                    text("query"),
                    string("cron"),
                    string("earliest"),
                    string("latest"),
                    uuid("author_id"),
                    big("created_at"),
                ],
            ),
            table(
                "deployments",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    uuid("rule_id"),
                    uuid("rule_version_id"),
                    int("version"),
                    uuid("connection_id"),
                    uuid("agent_id"),
                    string("action"),
                    text("message"),
                    uuid("requested_by"),
                    string("digest"),
                    string("status"),
                    string_null("error_class"),
                    uuid_null("job_id"),
                    big("created_at"),
                    big("updated_at"),
                ],
            ),
            table(
                "approvals",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    uuid("deployment_id"),
                    uuid("user_id"),
                    string("decision"),
                    text_null("comment"),
                    string("digest"),
                    big("created_at"),
                ],
            ),
            table(
                "jobs",
                vec![
                    uuid_pk("id"),
                    uuid("tenant_id"),
                    uuid("agent_id"),
                    big("seq"),
                    string("kind"),
                    uuid_null("deployment_id"),
                    text("sealed"),
                    string("state"),
                    big("created_at"),
                    big("expires_at"),
                    int("send_count"),
                    big_null("last_sent_at"),
                    big_null("acked_at"),
                    big_null("completed_at"),
                    string_null("outcome"),
                    string_null("error_class"),
                    big_null("duration_ms"),
                    blob_null("content_hash"),
                ],
            ),
            table(
                "agent_health",
                vec![
                    uuid_pk("agent_id"),
                    uuid("tenant_id"),
                    big("reported_at"),
                    big("uptime_secs"),
                    double("cpu_percent"),
                    big("rss_bytes"),
                    big("host_mem_used_bytes"),
                    big("host_mem_total_bytes"),
                    big("jobs_succeeded"),
                    big("jobs_failed"),
                    text("siem"),
                ],
            ),
            table(
                "health_samples",
                vec![
                    serial_pk("id"),
                    uuid("agent_id"),
                    uuid("tenant_id"),
                    big("reported_at"),
                    double("cpu_percent"),
                    big("rss_bytes"),
                    int("siem_reachable"),
                    int("siem_total"),
                    text("siem"),
                ],
            ),
            table(
                "audit_events",
                vec![
                    serial_pk("id"),
                    uuid_null("tenant_id"),
                    big("at"),
                    string("actor_type"),
                    uuid_null("actor_id"),
                    string("action"),
                    string("resource_type"),
                    string_null("resource_id"),
                    string("source"),
                    string_null("client_ip"),
                    string("outcome"),
                    text("details"),
                ],
            ),
        ];
        for t in tables {
            m.create_table(t).await?;
        }
        let indexes = vec![
            index("ux_users_email", "users", &["email"], true),
            index("ix_users_tenant", "users", &["tenant_id"], false),
            index("ix_sessions_user", "sessions", &["user_id"], false),
            index(
                "ux_enrollment_tokens_hash",
                "enrollment_tokens",
                &["token_hash"],
                true,
            ),
            index("ix_agents_tenant", "agents", &["tenant_id"], false),
            index(
                "ux_connections_tenant_name",
                "siem_connections",
                &["tenant_id", "name"],
                true,
            ),
            index("ix_rules_tenant", "rules", &["tenant_id"], false),
            index(
                "ux_rule_versions",
                "rule_versions",
                &["rule_id", "version"],
                true,
            ),
            index(
                "ix_deployments_tenant",
                "deployments",
                &["tenant_id", "created_at"],
                false,
            ),
            index(
                "ux_approvals_once",
                "approvals",
                &["deployment_id", "user_id"],
                true,
            ),
            index("ux_jobs_agent_seq", "jobs", &["agent_id", "seq"], true),
            index("ix_jobs_agent_state", "jobs", &["agent_id", "state"], false),
            index(
                "ix_health_samples_agent",
                "health_samples",
                &["agent_id", "reported_at"],
                false,
            ),
            index(
                "ix_audit_tenant_at",
                "audit_events",
                &["tenant_id", "at"],
                false,
            ),
        ];
        for i in indexes {
            m.create_index(i).await?;
        }
        Ok(())
    }
}
