//! The scenarios and their report.
//!
//! Every scenario starts a fresh `picket-server` child (its own data
//! directory; SQLite unless a PostgreSQL URL is given), claims it, enrolls the
//! fleet, measures the server's resident memory before the fleet connects
//! (the baseline), connects everyone, then:
//! - `idle`: holds the fleet and reports memory per agent and CPU;
//! - `fan-out`: approves one deployment per agent (each agent has its own
//!   SIEM connection) and reports enqueue-to-ack latency percentiles;
//! - `health`: every agent reports at the given period; reports the rate the
//!   server ingested (from its `/metrics`) against the rate sent, and the
//!   backlog left after a short drain;
//! - `storm`: kills the server (SIGKILL), restarts it and reports the time
//!   until every agent is back, with every error seen;
//! - `floor`: the same number of idle connections to the bare echo server,
//!   for the memory ratio;
//! - `agent-at-rest`: no fleet; the real `picket-agent` binary enrolled and
//!   idle ([`crate::rest`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::fleet::{self, FleetConfig, SimAgent, Stats};
use crate::proc::{METRICS_TOKEN, Server, ServerSetup};
use crate::setup;

/// What to run.
#[derive(Clone, Copy, Debug)]
pub enum Scenario {
    /// Hold the fleet idle for this long.
    Idle(Duration),
    /// One approved deployment per agent.
    FanOut,
    /// Health at `every` for `duration`.
    Health {
        /// Report period of each agent.
        every: Duration,
        /// How long to measure.
        duration: Duration,
    },
    /// Kill the server, keep it down this long, restart it.
    Storm(Duration),
    /// The echo floor only.
    Floor,
    /// The real agent binary enrolled and idle for this long (no fleet).
    AgentAtRest(Duration),
}

/// Settings shared by the scenarios.
#[derive(Clone, Debug)]
pub struct Options {
    /// Simulated agents.
    pub agents: usize,
    /// Loopback source addresses.
    pub sources: u8,
    /// `picket-server` binary.
    pub server_bin: PathBuf,
    /// PostgreSQL URL (a fresh, empty database), else SQLite.
    pub database_url: Option<String>,
    /// Server admission control (rate per second, burst).
    pub admission: (u32, u32),
    /// Server ping period.
    pub heartbeat_secs: u32,
    /// Concurrent API requests during setup.
    pub api_concurrency: usize,
    /// Largest random delay before an agent's first connection.
    pub connect_spread: Duration,
    /// How long to wait for the whole fleet to connect or to finish a fan-out.
    pub settle_timeout: Duration,
    /// TLS in the server (and in the echo floor).
    pub tls: bool,
    /// `picket-agent` binary for the agent-at-rest scenario.
    pub agent_bin: Option<PathBuf>,
    /// Where to copy the server's log when the run ends.
    pub keep_server_log: Option<PathBuf>,
}

/// Figures of one run, in order.
#[derive(Default, Debug)]
pub struct Report {
    /// `(name, value)` lines.
    pub lines: Vec<(String, String)>,
    /// Agents connected at the measurement point.
    pub connected: u64,
    /// Jobs acknowledged (fan-out).
    pub jobs_acked: u64,
    /// Fan-out latencies, seconds, sorted.
    pub latencies: Vec<f64>,
    /// Health reports the server stored during the measurement.
    pub health_written: u64,
}

impl Report {
    /// Appends a `name  value` line.
    pub fn add(&mut self, k: &str, v: impl std::fmt::Display) {
        self.lines.push((k.to_owned(), v.to_string()));
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.lines {
            writeln!(f, "{k:<w$}  {v}")?;
        }
        Ok(())
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[allow(clippy::cast_precision_loss)] // byte counts and agent counts stay far below 2^52
fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(
            start.elapsed() < timeout,
            "{what}: not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            // counters are non-negative integers
            let n = v as u64;
            n
        })
}

/// Error counts grown since `then`, sorted by kind.
fn errors_since(
    now: &std::collections::HashMap<String, u64>,
    then: &std::collections::HashMap<String, u64>,
) -> Vec<(String, u64)> {
    let mut grown: Vec<(String, u64)> = now
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(then.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    grown.sort();
    grown
}

/// Runs `scenario` and returns its report.
///
/// # Errors
/// If the server does not start, setup is refused, or the fleet does not
/// settle within `settle_timeout`.
pub async fn run(opts: &Options, scenario: Scenario) -> anyhow::Result<Report> {
    // The limit is per process: this one holds the N client sockets, the
    // server child (which inherits the limit) the N server sockets.
    crate::check_open_files(u64::try_from(opts.agents + 512).unwrap_or(u64::MAX))?;
    let dir = tempfile::tempdir()?;
    let res = run_in(opts, scenario, &dir).await;
    let log_path = dir.path().join("server.log");
    if let Some(keep) = &opts.keep_server_log
        && log_path.exists()
        && let Err(e) = std::fs::copy(&log_path, keep)
    {
        eprintln!("cannot copy the server log to {}: {e}", keep.display());
    }
    // The server's log goes with its temporary directory: keep the part that
    // explains a failure (an incident id on a 500 names its log line).
    res.map_err(|e| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines
            .get(lines.len().saturating_sub(40)..)
            .unwrap_or_default()
            .join("\n");
        if tail.is_empty() {
            e
        } else {
            anyhow::anyhow!("{e:#}\n\nserver log, last lines:\n{tail}")
        }
    })
}

async fn run_in(
    opts: &Options,
    scenario: Scenario,
    dir: &tempfile::TempDir,
) -> anyhow::Result<Report> {
    let mut r = Report::default();
    r.add("scenario", format!("{scenario:?}"));
    if !matches!(scenario, Scenario::AgentAtRest(_)) {
        r.add("agents", opts.agents);
    }
    r.add("load average before", load_average());
    r.add("tls", if opts.tls { "rustls" } else { "none" });
    let pki = if opts.tls {
        Some(crate::tls::Pki::create(dir.path())?)
    } else {
        None
    };
    if let Scenario::Floor = scenario {
        return floor(opts, pki.as_ref(), r).await;
    }
    let mut server = Server::start(
        dir.path(),
        ServerSetup {
            bin: opts.server_bin.clone(),
            database_url: opts.database_url.clone(),
            admission: opts.admission,
            heartbeat_secs: opts.heartbeat_secs,
            tls: pki
                .as_ref()
                .map(|p| (p.cert_path.clone(), p.key_path.clone())),
        },
    )
    .await?;
    r.add(
        "database",
        if opts.database_url.is_some() {
            "postgresql"
        } else {
            "sqlite"
        },
    );
    let base = server.url();
    let admins = setup::claim(&base).await?;
    if let Scenario::AgentAtRest(hold) = scenario {
        let bin = match &opts.agent_bin {
            Some(b) => b.clone(),
            None => crate::proc::sibling_bin("picket-agent")?,
        };
        let measured = crate::rest::measure(
            &mut r,
            &admins,
            &base,
            &bin,
            pki.as_ref().map(|p| p.ca_pem.as_slice()),
            dir.path(),
            hold,
        )
        .await;
        r.add("load average after", load_average());
        server.kill().await;
        measured?;
        return Ok(r);
    }
    let t = Instant::now();
    let agents = setup::enroll(&admins, &base, opts.agents, opts.api_concurrency).await?;
    r.add("enrollment", format!("{:.1} s", t.elapsed().as_secs_f64()));
    let conns = if let Scenario::FanOut = scenario {
        setup::connections(&admins, &agents, opts.api_concurrency).await?
    } else {
        Vec::new()
    };
    // Let allocations from setup settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (base_rss, _) = server.usage()?;
    r.add(
        "server rss before connect",
        format!("{:.1} MiB", kib(base_rss) / 1024.0),
    );

    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let health_every = match scenario {
        Scenario::Health { every, .. } => Some(every),
        _ => None,
    };
    let cfg = Arc::new(FleetConfig {
        server: server.addr,
        sources: opts.sources,
        health_every,
        initial_spread: opts.connect_spread,
        tls: pki.clone(),
    });
    let t = Instant::now();
    spawn_fleet(&agents, &cfg, &stats, &stop);
    let n = u64::try_from(opts.agents).unwrap_or(u64::MAX);
    let connected_in = wait_for("every agent connected", opts.settle_timeout, || {
        stats.connected.load(Ordering::Relaxed) >= n
    })
    .await;
    r.add("connect all", format!("{:.1} s", t.elapsed().as_secs_f64()));
    r.connected = stats.connected.load(Ordering::Relaxed);
    r.add("agents connected", r.connected);
    connected_in?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, cpu0) = server.usage()?;
    r.add(
        "server rss connected",
        format!("{:.1} MiB", kib(rss) / 1024.0),
    );
    #[allow(clippy::cast_precision_loss)]
    let per_agent = kib(rss.saturating_sub(base_rss)) / opts.agents.max(1) as f64;
    r.add("server rss per agent", format!("{per_agent:.1} KiB"));

    match scenario {
        Scenario::Idle(hold) => {
            let t = Instant::now();
            tokio::time::sleep(hold).await;
            let (rss2, cpu1) = server.usage()?;
            r.add(
                "server cpu idle",
                format!(
                    "{:.1} % of one core",
                    100.0 * (cpu1 - cpu0) / t.elapsed().as_secs_f64()
                ),
            );
            r.add(
                "server rss after hold",
                format!("{:.1} MiB", kib(rss2) / 1024.0),
            );
        }
        Scenario::FanOut => {
            let (first, last) = setup::fan_out(&admins, &conns, opts.api_concurrency).await?;
            r.add(
                "approvals",
                format!("{} in {:.1} s", conns.len(), (last - first).as_secs_f64()),
            );
            let acked = wait_for("every job acknowledged", opts.settle_timeout, || {
                stats.jobs_acked.load(Ordering::Relaxed) >= n
            })
            .await;
            r.add(
                "fan-out first approval to last ack",
                format!("{:.2} s", first.elapsed().as_secs_f64()),
            );
            let _ = wait_for("every result recorded", Duration::from_secs(60), || {
                stats.results_acked.load(Ordering::Relaxed) >= n
            })
            .await;
            r.jobs_acked = stats.jobs_acked.load(Ordering::Relaxed);
            r.add("jobs acked", r.jobs_acked);
            r.add("results acked", stats.results_acked.load(Ordering::Relaxed));
            r.add("jobs refused", stats.jobs_refused.load(Ordering::Relaxed));
            let mut v = stats
                .ack_latencies
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default();
            v.sort_by(f64::total_cmp);
            for (name, p) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0)] {
                r.add(
                    &format!("approval-to-ack {name}"),
                    format!("{:.3} s", crate::percentile(&v, p)),
                );
            }
            r.latencies = v;
            let (_, cpu1) = server.usage()?;
            r.add("server cpu during fan-out", format!("{:.1} s", cpu1 - cpu0));
            acked?;
        }
        Scenario::Health { every, duration } => {
            let api = setup::Api::new(&base)?;
            // Let the first reports (spread over one period) start.
            tokio::time::sleep(every).await;
            let m0 = api.get_text("/metrics", METRICS_TOKEN).await?;
            let sent0 = stats.health_sent.load(Ordering::Relaxed);
            let (_, c0) = server.usage()?;
            let t = Instant::now();
            tokio::time::sleep(duration).await;
            let secs = t.elapsed().as_secs_f64();
            let sent1 = stats.health_sent.load(Ordering::Relaxed);
            let (_, c1) = server.usage()?;
            stop.cancel();
            // Drain: the writer lingers 100 ms per batch.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let m1 = api.get_text("/metrics", METRICS_TOKEN).await?;
            let written = metric(&m1, "picket_health_reports_written_total")
                .saturating_sub(metric(&m0, "picket_health_reports_written_total"));
            let dropped = metric(&m1, "picket_health_reports_dropped_total");
            let sent = sent1 - sent0;
            r.health_written = written;
            #[allow(clippy::cast_precision_loss)]
            {
                r.add(
                    "health sent",
                    format!("{sent} ({:.0}/s)", sent as f64 / secs),
                );
                r.add(
                    "health ingested",
                    format!("{written} ({:.0}/s)", written as f64 / secs),
                );
            }
            r.add(
                "health backlog after drain",
                i128::from(sent) - i128::from(written),
            );
            r.add("health dropped (server)", dropped);
            r.add(
                "server cpu during health",
                format!("{:.1} %", 100.0 * (c1 - c0) / secs),
            );
        }
        Scenario::Storm(down) => {
            let before = stats.errors();
            server.kill().await;
            let killed = Instant::now();
            tokio::time::sleep(down).await;
            server.restart().await?;
            let up = Instant::now();
            // Errors until the new server listens belong to the kill itself
            // (resets of live and queued connections, refused connects).
            let at_up = stats.errors();
            r.add(
                "server restart",
                format!("{:.1} s", (up - killed).as_secs_f64()),
            );
            let back = wait_for(
                "every agent back after the restart",
                opts.settle_timeout,
                || {
                    stats
                        .last_welcome
                        .lock()
                        .map(|m| m.values().filter(|t| **t > up).count() >= opts.agents)
                        .unwrap_or(false)
                },
            )
            .await;
            r.add(
                "reconnect all after restart",
                format!("{:.1} s", up.elapsed().as_secs_f64()),
            );
            r.add(
                "retry-after answers",
                stats.retry_after.load(Ordering::Relaxed),
            );
            let now = stats.errors();
            r.add(
                "errors during the storm",
                format!("{:?}", errors_since(&now, &before)),
            );
            r.add(
                "errors once it listened again",
                format!("{:?}", errors_since(&now, &at_up)),
            );
            back?;
        }
        Scenario::Floor | Scenario::AgentAtRest(_) => {}
    }
    r.add("errors", format!("{:?}", stats.errors()));
    r.add("load average after", load_average());
    stop.cancel();
    server.kill().await;
    Ok(r)
}

fn spawn_fleet(
    agents: &[Arc<SimAgent>],
    cfg: &Arc<FleetConfig>,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) {
    for a in agents {
        tokio::spawn(fleet::run(
            a.clone(),
            cfg.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }
}

/// The echo floor: a child `picket-loadgen echo-server`, N idle connections.
async fn floor(
    opts: &Options,
    pki: Option<&crate::tls::Pki>,
    mut r: Report,
) -> anyhow::Result<Report> {
    use tokio::io::AsyncBufReadExt as _;
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["echo-server", "--listen", "127.0.0.1:0"]);
    if let Some(p) = pki {
        cmd.arg("--tls-cert")
            .arg(&p.cert_path)
            .arg("--tls-key")
            .arg(&p.key_path);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the echo server")?;
    let out = child.stdout.take().context("echo stdout")?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = lines.next_line().await?.context("echo server exited")?;
    let addr: std::net::SocketAddr = line
        .strip_prefix("echo listening on ")
        .context("echo server's first line")?
        .parse()?;
    let pid = child.id().context("echo pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (base, _) = crate::proc::usage(pid)?;
    let stop = CancellationToken::new();
    let open = crate::echo::hold(addr, opts.agents, opts.sources, pki, stop.clone()).await;
    let n = u64::try_from(opts.agents).unwrap_or(u64::MAX);
    let settled = wait_for("every echo connection open", opts.settle_timeout, || {
        open.load(Ordering::Relaxed) >= n
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, _) = crate::proc::usage(pid)?;
    r.add("echo connections", open.load(Ordering::Relaxed));
    r.add("echo rss", format!("{:.1} MiB", kib(rss) / 1024.0));
    #[allow(clippy::cast_precision_loss)]
    let per = kib(rss.saturating_sub(base)) / opts.agents.max(1) as f64;
    r.add("echo rss per connection", format!("{per:.1} KiB"));
    r.add("load average after", load_average());
    stop.cancel();
    let _ = child.kill().await;
    settled?;
    Ok(r)
}
