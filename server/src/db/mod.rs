//! Storage: connection set-up for SQLite (embedded default, WAL) or PostgreSQL
//! (scale-out), migrations, and the entity definitions.
//!
//! # Layout
//! - [`entity`]: one sea-orm entity per table.
//! - [`migration`]: the schema, as date-stamped migrations run at start-up.

pub mod entity;
pub mod migration;

use std::time::Duration;

use anyhow::Context as _;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait as _;

/// Opens the database named by `url`, tunes it for its backend and runs every
/// pending migration.
///
/// SQLite: WAL journal (readers never block the writer), `synchronous=NORMAL`
/// (durable at each checkpoint, safe under WAL), a 5 s busy timeout, foreign keys on,
/// and one pooled connection. Why one: sea-orm opens every transaction with a
/// plain (deferred) `BEGIN`; a transaction that reads and then writes while
/// another connection commits fails at once with `SQLITE_BUSY` (the busy
/// timeout does not apply to that upgrade), which surfaced as a sporadic 1011
/// on agent sessions. SQLite has a single writer anyway; PostgreSQL keeps a pool.
///
/// # Errors
/// If the database cannot be opened or a migration fails.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        opts.max_connections(1)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
    } else {
        opts.max_connections(16).min_connections(1);
    }
    let db = Database::connect(opts)
        .await
        .with_context(|| format!("cannot open database {}", crate::config::redact_url(url)))?;
    migration::Migrator::up(&db, None)
        .await
        .context("database migration failed")?;
    // Touch the connection once so a broken backend fails at start-up, not on the first request.
    db.execute_unprepared("SELECT 1")
        .await
        .context("database does not answer")?;
    Ok(db)
}
