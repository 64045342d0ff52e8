//! Deployment batches, decisions, rollback, drift and breakglass (issue 6, part B).
//!
//! - `deployments` gains `dry_run`, `kind` (`change`, `rollback`, `redeploy`)
//!   and `breakglass_reason` (set when an Admin deployed without approval).
//! - `deployment_items`: the rule versions of one request, in order, each with
//!   its live status (`queued` → `sent` → `applied` / `failed` / `reverted`...).
//! - `approvals` may hold one decision per user *per digest*: a request that
//!   changes gets a new digest and needs approving again, by the same people
//!   too.
//! - `rule_deployments`: what is deployed now for a rule on a connection (the
//!   version, its mode, the hash expected by drift checks) and what was
//!   deployed before it (for rollback); `state` is `deployed`,
//!   `drift_detected`, `removed` or `archived`.
//! - `drift_checks`: which connection a `drift_check` job was for.
//! - `breakglass_reviews`, `notifications`: the after-the-fact review of a
//!   breakglass deployment and the notice every Admin sees.
//!
//! SQLite cannot add several columns in one `ALTER TABLE`: one statement each.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000009_deployment_batches"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}
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
fn string(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().not_null().to_owned()
}
fn string_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().null().to_owned()
}
fn text_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).text().null().to_owned()
}
fn int(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).integer().not_null().to_owned()
}
fn int_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).integer().null().to_owned()
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

async fn index(
    m: &SchemaManager<'_>,
    name: &str,
    table: &str,
    cols: &[&str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut i = Index::create();
    i.name(name).table(a(table));
    for c in cols {
        i.col(a(c));
    }
    if unique {
        i.unique();
    }
    m.create_index(i.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            ColumnDef::new(a("dry_run"))
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(a("kind"))
                .string()
                .not_null()
                .default("change")
                .to_owned(),
            text_null("breakglass_reason"),
        ] {
            m.alter_table(
                Table::alter()
                    .table(a("deployments"))
                    .add_column(col)
                    .to_owned(),
            )
            .await?;
        }

        m.drop_index(
            Index::drop()
                .name("ux_approvals_once")
                .table(a("approvals"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ux_approvals_once_per_digest",
            "approvals",
            &["deployment_id", "user_id", "digest"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("deployment_items"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(uuid("deployment_id"))
                .col(int("position"))
                .col(uuid("rule_id"))
                .col(uuid("rule_version_id"))
                .col(int("version"))
                .col(string("action"))
                .col(boolean("monitoring"))
                .col(string("status"))
                .col(string_null("error_class"))
                .col(string_null("content_hash"))
                .col(big("created_at"))
                .col(big("updated_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_deployment_items_deployment",
            "deployment_items",
            &["deployment_id", "position"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("rule_deployments"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(uuid("rule_id"))
                .col(uuid("connection_id"))
                .col(uuid("rule_version_id"))
                .col(int("version"))
                .col(boolean("monitoring"))
                .col(boolean("enabled"))
                .col(string_null("content_hash"))
                .col(uuid_null("previous_version_id"))
                .col(int_null("previous_version"))
                .col(boolean("previous_monitoring"))
                .col(boolean("previous_enabled"))
                .col(string("state"))
                .col(string_null("drift_hash"))
                .col(big_null("drift_checked_at"))
                .col(uuid_null("last_deployment_id"))
                .col(big("updated_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ux_rule_deployments_rule_connection",
            "rule_deployments",
            &["rule_id", "connection_id"],
            true,
        )
        .await?;
        index(
            m,
            "ix_rule_deployments_tenant",
            "rule_deployments",
            &["tenant_id", "state"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("drift_checks"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(uuid("connection_id"))
                .col(big("created_at"))
                .col(big_null("completed_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("breakglass_reviews"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(uuid("deployment_id"))
                .col(uuid("requested_by"))
                .col(ColumnDef::new(a("reason")).text().not_null())
                .col(big("created_at"))
                .col(uuid_null("signed_off_by"))
                .col(big_null("signed_off_at"))
                .col(text_null("comment"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ux_breakglass_reviews_deployment",
            "breakglass_reviews",
            &["deployment_id"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("notifications"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(string("kind"))
                .col(uuid_null("deployment_id"))
                .col(ColumnDef::new(a("message")).text().not_null())
                .col(uuid("created_by"))
                .col(big("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "ix_notifications_tenant",
            "notifications",
            &["tenant_id", "created_at"],
            false,
        )
        .await?;
        Ok(())
    }
}
