//! PostgreSQL for the end-to-end tests: the backend a test runs on, and a
//! throwaway database per server.
//!
//! `PICKET_E2E_DB=postgres` makes every server the harness starts without an
//! explicit `database_url` use a fresh PostgreSQL database, created before the
//! server starts and dropped (`WITH (FORCE)`) when the server's handle is
//! dropped; unset or `sqlite`, the server keeps its SQLite file. `.ci/run` runs
//! the DB-backed suites a second time this way, so both backends pass the same
//! end-to-end tests.
//!
//! The PostgreSQL server is `postgres://postgres@127.0.0.1:5432` unless
//! `PICKET_TEST_POSTGRES_URL` names another (without a database path).
//! PostgreSQL being down is a test failure, never a skip.

use anyhow::Context as _;

/// The environment variable choosing the backend (`sqlite` or `postgres`).
pub const BACKEND_VAR: &str = "PICKET_E2E_DB";

/// The URL of the PostgreSQL server, without a database path.
pub fn admin_url() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Whether `PICKET_E2E_DB` asks for PostgreSQL.
///
/// # Errors
/// When it names a backend that does not exist (a typo must not silently run
/// the SQLite tests again).
pub fn postgres_requested() -> anyhow::Result<bool> {
    match std::env::var(BACKEND_VAR) {
        Err(_) => Ok(false),
        Ok(v) => match v.as_str() {
            "" | "sqlite" => Ok(false),
            "postgres" | "postgresql" => Ok(true),
            other => anyhow::bail!("{BACKEND_VAR}={other:?}: expected `sqlite` or `postgres`"),
        },
    }
}

fn psql_sync(sql: &str) -> anyhow::Result<()> {
    // Connects to the `test` database (CI creates it) to create or drop others.
    let out = std::process::Command::new("psql")
        .arg(format!("{}/test", admin_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("running psql (is postgresql-client installed? .ci/run installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed (is PostgreSQL running on {}? .ci/run starts it): {}",
        admin_url(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A fresh, empty PostgreSQL database, dropped with its connections when this
/// value is dropped.
#[derive(Debug)]
pub struct TempDb {
    name: String,
    /// The database's URL, for `database_url`.
    pub url: String,
}

impl TempDb {
    /// Creates `picket_e2e_<random>`.
    ///
    /// # Errors
    /// If PostgreSQL cannot be reached or refuses.
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("picket_e2e_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE {name}");
        tokio::task::spawn_blocking(move || psql_sync(&sql)).await??;
        Ok(TempDb {
            url: format!("{}/{name}", admin_url()),
            name,
        })
    }

    /// Runs one SQL statement in this database with `psql` (as the superuser:
    /// tests use it to do what an operator or a failure would, such as
    /// terminating a backend).
    ///
    /// # Errors
    /// If `psql` fails; its stderr is in the message.
    pub async fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-qtA", "-c", sql])
            .output()
            .await
            .context("running psql")?;
        anyhow::ensure!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        // FORCE ends the sessions of a server that may still be exiting.
        if let Err(e) = psql_sync(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("could not drop the test database {}: {e:#}", self.name);
        }
    }
}
