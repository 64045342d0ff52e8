//! Enrollment tokens with a cap on uses (bulk installs), and indexes to find an
//! agent by its public keys (enrollment refuses the keys of a revoked agent).
//!
//! `enrollment_tokens.max_uses` (default 1: single use) and `uses` (how many
//! enrollments consumed it). Tokens consumed before this migration count as
//! used once. One `ALTER TABLE` per column: SQLite cannot add several at once.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_token_uses_and_key_index"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (col, default) in [("max_uses", 1), ("uses", 0)] {
            m.alter_table(
                Table::alter()
                    .table(a("enrollment_tokens"))
                    .add_column(ColumnDef::new(a(col)).integer().not_null().default(default))
                    .to_owned(),
            )
            .await?;
        }
        m.exec_stmt(
            Query::update()
                .table(a("enrollment_tokens"))
                .value(a("uses"), 1)
                .and_where(Expr::col(a("used_at")).is_not_null())
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("ix_agents_ed25519_public", "ed25519_public"),
            ("ix_agents_x25519_public", "x25519_public"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(a("agents"))
                    .col(a(col))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
