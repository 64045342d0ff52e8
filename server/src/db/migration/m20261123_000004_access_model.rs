//! The access model (issue 4): API keys and invitations.
//!
//! - `api_keys`: an Admin-created key, stored as the SHA-256 of its secret and
//!   found by its public `prefix`; `scopes` is a space-separated list;
//!   `last_used_at` is written at most once a minute per key.
//! - `invitations`: a single-use, expiring invitation to join a tenant with a
//!   role chosen by the inviting Admin, stored as the SHA-256 of its secret.
//!
//! Sessions need no change: `created_at` (absolute timeout) and
//! `last_seen_at` (idle timeout) already exist.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000004_access_model"
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
fn big(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().not_null().to_owned()
}
fn big_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().null().to_owned()
}
fn boolean(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).boolean().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("api_keys"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(string("name"))
                .col(ColumnDef::new(a("prefix")).string().not_null().unique_key())
                .col(string("secret_hash"))
                .col(string("scopes"))
                .col(uuid("created_by"))
                .col(big("created_at"))
                .col(big("expires_at"))
                .col(big_null("revoked_at"))
                .col(big_null("last_used_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_api_keys_tenant")
                .table(a("api_keys"))
                .col(a("tenant_id"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("invitations"))
                .col(uuid_pk("id"))
                .col(uuid("tenant_id"))
                .col(string("email"))
                .col(string("role"))
                .col(boolean("approver"))
                .col(
                    ColumnDef::new(a("token_hash"))
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(uuid("created_by"))
                .col(big("created_at"))
                .col(big("expires_at"))
                .col(big_null("accepted_at"))
                .col(uuid_null("accepted_user"))
                .col(big_null("revoked_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_invitations_tenant")
                .table(a("invitations"))
                .col(a("tenant_id"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
