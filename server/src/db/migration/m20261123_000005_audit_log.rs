//! The tamper-evident audit log (issue 5). Replaces the plain `audit_events`
//! table (no installed base yet) with:
//!
//! - `audit_events`: one row per event (the body): its log (`log_id`, a
//!   tenant id or `system`), its leaf index in that log, the canonical JSON
//!   bytes that were hashed, the leaf hash, and copies of the fields used to
//!   filter. Append-only; a row may only be deleted below the log's prune
//!   watermark (retention).
//! - `audit_leaves`: the leaf hashes, copied by the checkpointer; never
//!   updated or deleted, so proofs survive pruned bodies.
//! - `audit_checkpoints`: signed tree heads (C2SP signed notes) and the
//!   compact range (frontier) of each, so the next root is computed from the
//!   new leaves only. Never updated or deleted.
//! - `audit_heads`: next leaf index per log, locked by the upsert that
//!   allocates it (PostgreSQL; SQLite serialises writers itself).
//! - `audit_prune`: per log, the index below which bodies may be deleted.
//!   Only the audited prune command raises it, in the same transaction as
//!   the deletion; it can never go down.
//!
//! Triggers on both backends enforce the above, so a bug in the application
//! (or a careless operator using SQL) cannot rewrite history silently.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000005_audit_log"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}
fn string(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().not_null().to_owned()
}
fn string_null(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().null().to_owned()
}
fn text(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).text().not_null().to_owned()
}
fn big(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).big_integer().not_null().to_owned()
}
fn blob(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).binary().not_null().to_owned()
}

fn table(name: &str, cols: Vec<ColumnDef>, pk: &[&str]) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(a(name));
    for mut c in cols {
        t.col(&mut c);
    }
    let mut key = Index::create();
    for c in pk {
        key.col(a(c));
    }
    t.primary_key(&mut key);
    t.to_owned()
}

fn index(name: &str, table: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(a(table));
    for c in cols {
        i.col(a(c));
    }
    i.to_owned()
}

/// SQLite triggers: bodies deletable only below the watermark, everything
/// else append-only, the watermark only rises.
const SQLITE_TRIGGERS: &[&str] = &[
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_prune_only BEFORE DELETE ON audit_events \
     WHEN OLD.idx >= COALESCE((SELECT below_idx FROM audit_prune WHERE log_id = OLD.log_id), 0) \
     BEGIN SELECT RAISE(ABORT, 'audit_events rows can only be deleted by retention pruning, below the prune watermark'); END",
    "CREATE TRIGGER audit_leaves_no_update BEFORE UPDATE ON audit_leaves \
     BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only'); END",
    "CREATE TRIGGER audit_leaves_no_delete BEFORE DELETE ON audit_leaves \
     BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only'); END",
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints \
     BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints \
     BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
    "CREATE TRIGGER audit_prune_only_rises BEFORE UPDATE ON audit_prune \
     WHEN NEW.below_idx < OLD.below_idx OR NEW.log_id <> OLD.log_id \
     BEGIN SELECT RAISE(ABORT, 'the audit prune watermark can only rise'); END",
    "CREATE TRIGGER audit_prune_no_delete BEFORE DELETE ON audit_prune \
     BEGIN SELECT RAISE(ABORT, 'the audit prune watermark cannot be deleted'); END",
];

/// PostgreSQL: the same rules as trigger functions (TRUNCATE refused too).
const PG_TRIGGERS: &[&str] = &[
    "CREATE FUNCTION picket_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$",
    "CREATE FUNCTION picket_audit_prune_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF TG_OP = 'DELETE' AND OLD.idx < COALESCE((SELECT below_idx FROM audit_prune WHERE log_id = OLD.log_id), 0) THEN \
         RETURN OLD; \
       END IF; \
       RAISE EXCEPTION 'audit_events rows can only be deleted by retention pruning, below the prune watermark'; \
     END $$",
    "CREATE FUNCTION picket_audit_prune_rises() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF TG_OP = 'UPDATE' AND NEW.below_idx >= OLD.below_idx AND NEW.log_id = OLD.log_id THEN \
         RETURN NEW; \
       END IF; \
       RAISE EXCEPTION 'the audit prune watermark can only rise'; \
     END $$",
    "CREATE TRIGGER audit_events_guard BEFORE UPDATE OR DELETE ON audit_events \
     FOR EACH ROW EXECUTE FUNCTION picket_audit_prune_only()",
    "CREATE TRIGGER audit_leaves_guard BEFORE UPDATE OR DELETE ON audit_leaves \
     FOR EACH ROW EXECUTE FUNCTION picket_audit_append_only()",
    "CREATE TRIGGER audit_checkpoints_guard BEFORE UPDATE OR DELETE ON audit_checkpoints \
     FOR EACH ROW EXECUTE FUNCTION picket_audit_append_only()",
    "CREATE TRIGGER audit_prune_guard BEFORE UPDATE OR DELETE ON audit_prune \
     FOR EACH ROW EXECUTE FUNCTION picket_audit_prune_rises()",
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events \
     FOR EACH STATEMENT EXECUTE FUNCTION picket_audit_append_only()",
    "CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON audit_leaves \
     FOR EACH STATEMENT EXECUTE FUNCTION picket_audit_append_only()",
    "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints \
     FOR EACH STATEMENT EXECUTE FUNCTION picket_audit_append_only()",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("audit_events")).to_owned())
            .await?;
        let tables = vec![
            table(
                "audit_events",
                vec![
                    string("log_id"),
                    big("idx"),
                    string("event_id"),
                    string_null("tenant_id"),
                    big("at"),
                    string("actor_type"),
                    string_null("actor_id"),
                    string("action"),
                    string("resource_type"),
                    string_null("resource_id"),
                    string("source"),
                    string_null("client_ip"),
                    string("outcome"),
                    text("canonical"),
                    blob("leaf_hash"),
                ],
                &["log_id", "idx"],
            ),
            table(
                "audit_leaves",
                vec![string("log_id"), big("idx"), blob("leaf_hash")],
                &["log_id", "idx"],
            ),
            table(
                "audit_checkpoints",
                vec![
                    string("log_id"),
                    big("size"),
                    blob("root"),
                    text("note"),
                    text("frontier"),
                    big("created_at"),
                ],
                &["log_id", "size"],
            ),
            table(
                "audit_heads",
                vec![string("log_id"), big("size")],
                &["log_id"],
            ),
            table(
                "audit_prune",
                vec![string("log_id"), big("below_idx"), big("pruned_at")],
                &["log_id"],
            ),
        ];
        for t in tables {
            m.create_table(t).await?;
        }
        for i in [
            index("ix_audit_events_log_at", "audit_events", &["log_id", "at"]),
            index("ix_audit_events_event_id", "audit_events", &["event_id"]),
        ] {
            m.create_index(i).await?;
        }
        let db = m.get_connection();
        let triggers = match db.get_database_backend() {
            DbBackend::Postgres => PG_TRIGGERS,
            _ => SQLITE_TRIGGERS,
        };
        for sql in triggers {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
