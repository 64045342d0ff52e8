//! Child processes under measurement: `picket-server` (started with a fresh
//! data directory and a generated config) and the echo floor, with their
//! resident memory and CPU time read from `/proc/<pid>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Linux's `USER_HZ` (clock ticks per second in `/proc/<pid>/stat`), 100 on
/// every mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

/// The metrics token the generated server config trusts.
pub const METRICS_TOKEN: &str = "picket-loadgen-metrics-token-0123";

/// A binary next to this executable (`target/<profile>/<name>`), as built by cargo.
///
/// # Errors
/// If it is missing, with the command that builds it.
pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    anyhow::ensure!(
        p.exists(),
        "{} is missing: build it with `cargo build -p picket-server` (same profile as picket-loadgen)",
        p.display()
    );
    Ok(p)
}

/// Resident memory (bytes) and CPU time (seconds) of a process.
///
/// # Errors
/// If `/proc/<pid>` cannot be read (the process is gone).
pub fn usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/<pid>/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15, i.e. indexes 11 and 12 after ')'.
    #[allow(clippy::cast_precision_loss)] // tick counts stay far below 2^52
    let cpu = (ticks(11) + ticks(12)) as f64 / TICKS_PER_SEC;
    Ok((rss_kib * 1024, cpu))
}

/// How to configure the server under test.
#[derive(Clone, Debug)]
pub struct ServerSetup {
    /// `picket-server` binary.
    pub bin: PathBuf,
    /// `database_url` (default: SQLite in the data directory).
    pub database_url: Option<String>,
    /// `[agents] admission_rate_per_sec` and `admission_burst`.
    pub admission: (u32, u32),
    /// `[agents] heartbeat_secs`.
    pub heartbeat_secs: u32,
    /// `[tls]`: serve TLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running server child.
pub struct Server {
    child: Option<Child>,
    setup: ServerSetup,
    dir: PathBuf,
    /// Its address (kept across restarts).
    pub addr: SocketAddr,
}

impl Server {
    /// Writes a config in `dir` and starts the server.
    ///
    /// # Errors
    /// If it does not come up within 120 s.
    pub async fn start(dir: &Path, setup: ServerSetup) -> anyhow::Result<Server> {
        let mut s = Server {
            child: None,
            setup,
            dir: dir.to_owned(),
            addr: "127.0.0.1:0".parse()?,
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let secret = self.dir.join("master.secret");
        std::fs::write(
            &secret,
            "cGlja2V0LWxvYWRnZW4tbWFzdGVyLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm",
        )?;
        let token = self.dir.join("metrics.token");
        std::fs::write(&token, METRICS_TOKEN)?;
        let mut cfg = format!(
            "listen = \"{}\"\ndata_dir = \"{}\"\nmaster_secret_file = \"{}\"\nmetrics_token_file = \"{}\"\nreplica_id = \"loadgen\"\n",
            self.addr,
            self.dir.join("data").display(),
            secret.display(),
            token.display()
        );
        if let Some(u) = &self.setup.database_url {
            cfg.push_str(&format!("database_url = \"{u}\"\n"));
        }
        cfg.push_str(&format!(
            "[agents]\nheartbeat_secs = {}\nhealth_secs = 30\nadmission_rate_per_sec = {}\nadmission_burst = {}\nenrollment_token_ttl_secs = 86400\n",
            self.setup.heartbeat_secs, self.setup.admission.0, self.setup.admission.1
        ));
        if let Some((cert, key)) = &self.setup.tls {
            cfg.push_str(&format!(
                "[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        let path = self.dir.join("server.toml");
        std::fs::write(&path, cfg)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        let mut child = Command::new(&self.setup.bin)
            .arg("--config")
            .arg(&path)
            .env("PICKET_LOG", "warn")
            .env_remove("PICKET_MASTER_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.setup.bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("the server did not start within 120 s")??
            .with_context(|| {
                format!(
                    "the server exited before listening; see {}",
                    self.dir.join("server.log").display()
                )
            })?;
        let addr = line
            .strip_prefix("picket-server listening on ")
            .with_context(|| format!("unexpected first line from the server: {line}"))?;
        self.addr = addr.parse()?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Resident memory (bytes) and CPU seconds so far.
    ///
    /// # Errors
    /// If the process is gone.
    pub fn usage(&self) -> anyhow::Result<(u64, f64)> {
        usage(self.pid().context("the server is not running")?)
    }

    /// SIGKILL, like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts again on the same address and data.
    ///
    /// # Errors
    /// If it does not come up within 30 s of retries.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        let scheme = if self.setup.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}
