//! The server and agent as child processes, started from the real binaries
//! with real config files, killed with SIGKILL to simulate a crash.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Path of a workspace binary next to the running test executable
/// (`target/<profile>/<name>`).
///
/// # Errors
/// If the binary has not been built, with the command that builds it.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    if !p.exists() {
        anyhow::bail!(
            "{} is missing: build it with `cargo build --workspace --bins` (cargo test --workspace does this)",
            p.display()
        );
    }
    Ok(p)
}

/// How to run the server.
#[derive(Clone)]
pub struct ServerOpts {
    /// Serve TLS with these PEM files (cert, key).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Database URL (default: SQLite in the data dir).
    pub database_url: Option<String>,
    /// Agent heartbeat, seconds.
    pub heartbeat_secs: u32,
    /// Agent health interval, seconds.
    pub health_secs: u32,
    /// `[agents] admission_rate_per_sec` and `admission_burst` (default: the server's).
    pub admission: Option<(u32, u32)>,
    /// `[jobs] ttl_secs` (default: the server's, 900).
    pub job_ttl_secs: Option<u64>,
    /// Extra top-level `server.toml` lines (e.g. `replica_id = "a"`).
    pub extra_toml: String,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            tls: None,
            database_url: None,
            heartbeat_secs: 2,
            health_secs: 1,
            admission: None,
            job_ttl_secs: None,
            extra_toml: String::new(),
        }
    }
}

/// A running `picket-server`.
pub struct ServerProc {
    child: Option<Child>,
    /// Bound address.
    pub addr: SocketAddr,
    /// Base URL (`http://` or `https://`).
    pub url: String,
    dir: PathBuf,
    opts: ServerOpts,
    /// Combined log of every run, for debugging and leak checks.
    pub log_path: PathBuf,
    /// The throwaway PostgreSQL database under `PICKET_E2E_DB=postgres`;
    /// declared after `child` so the server is killed before it is dropped.
    pg: Option<crate::pg::TempDb>,
}

const MASTER_SECRET: &str = "cGlja2V0LWUyZS1tYXN0ZXItc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY=";

impl ServerProc {
    /// Starts a server with its data in `dir`, on an ephemeral port.
    ///
    /// # Errors
    /// If the binary is missing or the server does not come up.
    pub async fn start(dir: &Path, mut opts: ServerOpts) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // No database chosen by the test: the backend under test decides.
        let pg = if opts.database_url.is_none() && crate::pg::postgres_requested()? {
            let db = crate::pg::TempDb::create().await?;
            opts.database_url = Some(db.url.clone());
            Some(db)
        } else {
            None
        };
        let mut s = ServerProc {
            child: None,
            addr: "127.0.0.1:0".parse()?,
            url: String::new(),
            dir: dir.to_owned(),
            opts,
            log_path: dir.join("server.log"),
            pg,
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let secret_file = self.dir.join("master.secret");
        std::fs::write(&secret_file, MASTER_SECRET)?;
        let mut cfg = format!(
            "listen = \"{}\"\ndata_dir = \"{}\"\nmaster_secret_file = \"{}\"\n",
            self.addr,
            self.dir.join("data").display(),
            secret_file.display()
        );
        if self.addr.port() != 0 {
            let scheme = if self.opts.tls.is_some() {
                "https"
            } else {
                "http"
            };
            cfg.push_str(&format!("public_url = \"{scheme}://{}\"\n", self.addr));
        }
        if let Some(u) = &self.opts.database_url {
            cfg.push_str(&format!("database_url = \"{u}\"\n"));
        }
        cfg.push_str(&self.opts.extra_toml);
        cfg.push_str(&format!(
            "[agents]\nheartbeat_secs = {}\nhealth_secs = {}\n",
            self.opts.heartbeat_secs, self.opts.health_secs
        ));
        if let Some((rate, burst)) = self.opts.admission {
            cfg.push_str(&format!(
                "admission_rate_per_sec = {rate}\nadmission_burst = {burst}\n"
            ));
        }
        if let Some(ttl) = self.opts.job_ttl_secs {
            cfg.push_str(&format!("[jobs]\nttl_secs = {ttl}\n"));
        }
        if let Some((c, k)) = &self.opts.tls {
            cfg.push_str(&format!(
                "[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
                c.display(),
                k.display()
            ));
        }
        let cfg_path = self.dir.join("server.toml");
        std::fs::write(&cfg_path, cfg)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut child = Command::new(bin("picket-server")?)
            .arg("--config")
            .arg(&cfg_path)
            .env("PICKET_LOG", "info,picket_server=debug")
            .env_remove("PICKET_MASTER_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawning picket-server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("server did not start within 60 s")??
            .with_context(|| {
                format!(
                    "server exited before listening; see {}",
                    self.log_path.display()
                )
            })?;
        let addr = line
            .strip_prefix("picket-server listening on ")
            .with_context(|| format!("unexpected first line from server: {line}"))?;
        self.addr = addr.parse()?;
        let scheme = if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        self.url = format!("{scheme}://{}", self.addr);
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server (SIGKILL: no graceful shutdown, like a crash).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the server again on the same address and data.
    ///
    /// # Errors
    /// If it does not come up.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment.
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing_hint(&e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server's database URL when it is not the SQLite file in its data
    /// directory (a test's own, or the throwaway PostgreSQL database).
    pub fn database_url(&self) -> Option<&str> {
        self.opts.database_url.as_deref()
    }

    /// The throwaway PostgreSQL database of this server, if the harness made one.
    pub fn temp_db(&self) -> Option<&crate::pg::TempDb> {
        self.pg.as_ref()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs `picket-server --config <this server's config> admin <args>` (an
    /// operator's command on the server host) and returns its stdout.
    ///
    /// # Errors
    /// If the command fails (the message includes its output).
    pub async fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin("picket-server")?)
            .arg("--config")
            .arg(self.dir.join("server.toml"))
            .arg("admin")
            .args(args)
            .env_remove("PICKET_MASTER_SECRET")
            .output()
            .await
            .context("running picket-server admin")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            anyhow::bail!(
                "picket-server admin {args:?} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// Every audit event the server recorded, oldest first, read from its
    /// database (SQLite or PostgreSQL): `(action, outcome, details JSON)`.
    ///
    /// # Errors
    /// If the database cannot be read.
    pub async fn audit_events(&self) -> anyhow::Result<Vec<(String, String, serde_json::Value)>> {
        use picket_server::db::entity::audit_event;
        use sea_orm::{EntityTrait as _, QueryOrder as _};
        let url = self.opts.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=ro",
                self.data_dir().join("picket.db").display()
            )
        });
        let db = sea_orm::Database::connect(url).await?;
        let rows = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::At)
            .order_by_asc(audit_event::Column::Idx)
            .all(&db)
            .await?;
        let _ = db.close().await;
        Ok(rows
            .into_iter()
            .map(|r| {
                // The details live inside the event's canonical JSON (the leaf bytes).
                let d = serde_json::from_str::<serde_json::Value>(&r.canonical)
                    .ok()
                    .and_then(|v| v.get("details").cloned())
                    .unwrap_or(serde_json::Value::Null);
                (r.action, r.outcome, d)
            })
            .collect())
    }
}

fn tracing_hint(e: &anyhow::Error) {
    eprintln!("server restart attempt failed, retrying: {e:#}");
}

/// An enrolled agent (a state directory and a config file), optionally running.
pub struct AgentProc {
    child: Option<Child>,
    /// The agent's config file.
    pub config_path: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// The agent's log.
    pub log_path: PathBuf,
    /// Agent id from enrollment.
    pub agent_id: String,
}

/// How to configure an agent.
#[derive(Clone, Default)]
pub struct AgentOpts {
    /// Trust this CA for the server (TLS).
    pub ca_bundle: Option<PathBuf>,
    /// Allow http:// (tests without TLS).
    pub plaintext: bool,
    /// Server URL to connect to at run time, if not the one enrolled with (e.g. a proxy).
    pub connect_url: Option<String>,
    /// `proxy_url` in the agent's config (an HTTP CONNECT proxy), for enrollment and runs.
    pub proxy_url: Option<String>,
    /// `clock_skew_secs` in the agent's config (default: the agent's, 60).
    pub clock_skew_secs: Option<u64>,
}

impl AgentProc {
    /// Writes a config and runs `picket-agent enroll` with the token in a file.
    ///
    /// # Errors
    /// If enrollment fails (the message includes the agent's output).
    pub async fn enroll(
        dir: &Path,
        server_url: &str,
        token: &str,
        opts: &AgentOpts,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let state_dir = dir.join("state");
        let config_path = dir.join("agent.toml");
        let mut cfg = format!(
            "state_dir = \"{}\"\nsiem_timeout_secs = 5\nconnect_timeout_secs = 5\n",
            state_dir.display()
        );
        if let Some(ca) = &opts.ca_bundle {
            cfg.push_str(&format!("ca_bundle = \"{}\"\n", ca.display()));
        }
        if opts.plaintext {
            cfg.push_str("dangerous_plaintext = true\n");
        }
        if let Some(skew) = opts.clock_skew_secs {
            cfg.push_str(&format!("clock_skew_secs = {skew}\n"));
        }
        if let Some(p) = &opts.proxy_url {
            // The test's proxy is the only one: an empty `no_proxy` overrides any NO_PROXY.
            cfg.push_str(&format!("proxy_url = \"{p}\"\nno_proxy = \"\"\n"));
        }
        std::fs::write(&config_path, &cfg)?;
        let token_path = dir.join("token");
        std::fs::write(&token_path, token)?;
        let out = Command::new(bin("picket-agent")?)
            .arg("--config")
            .arg(&config_path)
            .arg("enroll")
            .arg("--server")
            .arg(server_url)
            .arg("--token-file")
            .arg(&token_path)
            .output()
            .await
            .context("running picket-agent enroll")?;
        if !out.status.success() {
            anyhow::bail!(
                "picket-agent enroll failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&token_path);
        if let Some(u) = &opts.connect_url {
            cfg.push_str(&format!("server_url = \"{u}\"\n"));
            std::fs::write(&config_path, &cfg)?;
        }
        let enrollment: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state_dir.join("enrollment.json")).context("enrollment.json")?,
        )?;
        let agent_id = enrollment["agent_id"]
            .as_str()
            .context("agent_id in enrollment.json")?
            .to_owned();
        Ok(AgentProc {
            child: None,
            config_path,
            state_dir,
            log_path: dir.join("agent.log"),
            agent_id,
        })
    }

    /// Starts `picket-agent run`.
    ///
    /// # Errors
    /// If it cannot be spawned.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(bin("picket-agent")?)
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env("PICKET_AGENT_LOG", "info,picket_agent=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawning picket-agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the running agent to exit on its own and returns its exit
    /// code (`None`: killed by a signal).
    ///
    /// # Errors
    /// If it is not running, or still runs after `timeout` (it is left running).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let child = self.child.as_mut().context("the agent is not running")?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .with_context(|| format!("the agent still runs after {timeout:?}"))??;
        self.child = None;
        Ok(status.code())
    }

    /// Runs `picket-agent enroll --force` on this agent's config and state
    /// directory with a new token (new keys, new agent id), and returns the
    /// command's combined output.
    ///
    /// # Errors
    /// If enrollment fails (the message includes the agent's output).
    pub async fn reenroll_force(
        &mut self,
        server_url: &str,
        token: &str,
    ) -> anyhow::Result<String> {
        let dir = self.config_path.parent().context("config dir")?.to_owned();
        let token_path = dir.join("token");
        std::fs::write(&token_path, token)?;
        let out = Command::new(bin("picket-agent")?)
            .arg("--config")
            .arg(&self.config_path)
            .arg("enroll")
            .arg("--force")
            .arg("--server")
            .arg(server_url)
            .arg("--token-file")
            .arg(&token_path)
            .output()
            .await
            .context("running picket-agent enroll --force")?;
        let _ = std::fs::remove_file(&token_path);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            anyhow::bail!(
                "picket-agent enroll --force failed ({}): {text}",
                out.status
            );
        }
        let enrollment: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.state_dir.join("enrollment.json")).context("enrollment.json")?,
        )?;
        self.agent_id = enrollment["agent_id"]
            .as_str()
            .context("agent_id in enrollment.json")?
            .to_owned();
        Ok(text)
    }

    /// Runs a `picket-agent` command (e.g. `status`, `rotate-keys`) on this
    /// agent's config and returns (success, stdout + stderr).
    ///
    /// # Errors
    /// If the binary cannot be run.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let out = Command::new(bin("picket-agent")?)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .await
            .context("running picket-agent")?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// Whether the agent process is running (started and not yet reaped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the agent (SIGKILL).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
