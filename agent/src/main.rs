//! `picket-agent`: the command-line front of the Picket agent.
//!
//! # Layout
//! - `enroll`: one-time registration with a token read from a file or stdin
//!   (never from the command line), see [`picket_agent::enroll`].
//! - `run`: the long-running service, see [`picket_agent::run_agent`].
//! - `status`: what the state directory says (enrollment, pinned key, last job).
//! - `journal`: the local journal of every job run or refused, newest last,
//!   see [`picket_agent::journal`].
//! - `service run`: the Windows service entry point (`picket_agent::winsvc`, Windows only).
//! - `check-config`: validates `agent.toml` and `policy.toml`, see [`picket_agent::check`].
//! - `rotate-keys`: writes new pending keys for the running agent to prove
//!   to the server, see [`picket_agent::identity`].
//!
//! Logging goes to stderr, or to `--log-file` (`--log-format text|json`, filter from
//! `PICKET_AGENT_LOG` or `RUST_LOG`, default `info`); `service run` on Windows also
//! logs to the Windows Event Log (Application, source "Picket Agent", see
//! [`picket_agent::winlog`]). Exit codes: 0 success, 1 error, 2 usage error, 3 the
//! server revoked this agent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use picket_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use picket_agent::identity;
use picket_agent::journal::Journal;
use picket_agent::keyring::Keyring;
use picket_agent::ledger::Ledger;
use picket_agent::state::StateDir;
use picket_agent::{Revoked, enroll, run_agent};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Exit code when the server has revoked this agent.
const EXIT_REVOKED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "picket-agent",
    version,
    about = "The Picket agent: runs detection jobs from the Picket control plane against your SIEM.",
    long_about = "The Picket agent runs inside your network next to your SIEM. It keeps one \
outbound connection to the Picket server, receives jobs that are signed by the server and \
encrypted to this agent only, runs them against the SIEM's API, and sends back only outcomes \
and health figures, never a log line.\n\n\
Start with `picket-agent enroll`, then run `picket-agent run` as a service.",
    after_help = "Configuration: --config, else $PICKET_AGENT_CONFIG, else /etc/picket/agent.toml \
(a missing file is fine). Every key can be overridden with PICKET_AGENT_<KEY> (e.g. \
PICKET_AGENT_STATE_DIR)."
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "PICKET_AGENT_CONFIG",
        default_value = DEFAULT_CONFIG_PATH
    )]
    config: PathBuf,

    /// Log output format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Append logs to this file instead of stderr (`service run` on Windows logs to the
    /// Windows Event Log as well).
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this host with the Picket server using a one-time token.
    ///
    /// The token is read from a file or standard input, never from the
    /// command line (where other users could read it in the process list).
    /// The server's job-signing key is checked against the fingerprint in
    /// the token and pinned; nothing is written if they differ.
    Enroll(EnrollArgs),
    /// Run the agent: connect to the server and process jobs until stopped (SIGTERM / Ctrl-C).
    Run,
    /// Show whether this host is enrolled, which server key is pinned, and the last job.
    Status(StatusArgs),
    /// Run under the Windows service control manager (the MSI's service `picket-agent`).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Validate agent.toml and the local policy.toml as `run` would load them, and summarise them.
    ///
    /// Reads files only (no network, nothing written). Exit code 0 and a
    /// summary when both are valid; 1 and the offending file and key otherwise.
    CheckConfig,
    /// Print the local journal of every job this agent ran or refused (newest last).
    Journal(JournalArgs),
    /// Replace this agent's key pairs (identity and job decryption).
    ///
    /// Writes new keys to `rotation.pending` in the state directory (mode
    /// 0600, fsynced). The running agent (`picket-agent run`) notices them
    /// within seconds, or at its next start, proves them to the server with
    /// its current identity, and switches to them once the server confirms;
    /// the old identity is then refused by the server. This command never
    /// talks to the server itself, so it cannot race the running service.
    RotateKeys(RotateKeysArgs),
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Started by the service control manager: runs the agent until the service is stopped
    /// (Stop and Shutdown end it as SIGTERM does `run`). Windows only.
    Run,
    /// Run by the MSI as SYSTEM: create the data folder, restrict its ACL, and copy
    /// agent.toml / policy.toml from the examples next to the executable if absent.
    Prepare(PrepareArgs),
}

#[derive(Debug, Args)]
struct PrepareArgs {
    /// The configuration and state folder, e.g. C:\ProgramData\Picket.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Where agent.toml.example and policy.toml.example are (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    examples_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RotateKeysArgs {
    /// State directory; overrides the configuration.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Wait up to this many seconds for the running agent to complete the rotation (0: do not wait).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    wait: u64,
}

#[derive(Debug, Args)]
struct JournalArgs {
    /// State directory; overrides the configuration.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Show at most this many entries (the most recent ones).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,

    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// Base URL of the Picket server, e.g. https://picket.example.com
    #[arg(long, value_name = "URL")]
    server: String,

    /// File holding the enrollment token, or `-` to read it from standard input.
    #[arg(long, value_name = "PATH")]
    token_file: PathBuf,

    /// State directory (keys, enrollment, job ledger); overrides the configuration.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Replace an existing enrollment (new keys and agent id; the old job ledger is kept aside).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// State directory; overrides the configuration.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Logs to stderr or `--log-file`, and for `service run` on Windows also to
/// the Windows Event Log (`event_log`). Returns a warning to log once the
/// subscriber is up (the Event Log could not be opened: the service still
/// runs, logging to the other destination).
fn init_logging(
    format: LogFormat,
    file: Option<&Path>,
    event_log: bool,
) -> anyhow::Result<Option<String>> {
    let filter = std::env::var("PICKET_AGENT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let output: BoxedLayer = if let Some(path) = file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --log-file {}", path.display()))?;
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f));
        match format {
            LogFormat::Text => layer.boxed(),
            LogFormat::Json => layer.json().boxed(),
        }
    } else {
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match format {
            LogFormat::Text => layer.boxed(),
            LogFormat::Json => layer.json().boxed(),
        }
    };
    let mut layers = vec![output];
    let (event_log, warning) = event_log_layer(format, event_log);
    layers.extend(event_log);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .context("cannot set up logging")?;
    Ok(warning)
}

/// One log destination under the global filter.
type BoxedLayer = Box<dyn Layer<Layered<EnvFilter, Registry>> + Send + Sync>;

/// The Windows Event Log layer (source "Picket Agent"), same format as the
/// other output minus the timestamp (the Event Log keeps its own).
#[cfg(windows)]
fn event_log_layer(format: LogFormat, wanted: bool) -> (Option<BoxedLayer>, Option<String>) {
    if !wanted {
        return (None, None);
    }
    match picket_agent::winlog::EventLogWriter::open() {
        Ok(writer) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(writer);
            let layer = match format {
                LogFormat::Text => layer.boxed(),
                LogFormat::Json => layer.json().boxed(),
            };
            (Some(layer), None)
        }
        Err(e) => (
            None,
            Some(format!(
                "cannot open the Windows Event Log source {:?} ({e}); logging to the other \
                 destination only",
                picket_agent::winlog::EVENT_SOURCE
            )),
        ),
    }
}

/// No Event Log outside Windows (`service run` refuses to start there).
#[cfg(not(windows))]
fn event_log_layer(_format: LogFormat, _wanted: bool) -> (Option<BoxedLayer>, Option<String>) {
    (None, None)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(cli.command, Command::Service(ServiceCommand::Run));
    match init_logging(cli.log_format, cli.log_file.as_deref(), service) {
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    if let Command::Service(ServiceCommand::Run) = cli.command {
        return service_run(cli.config);
    }
    // One process-wide crypto provider for rustls (the agent's own configs also name it explicitly).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Revoked>().is_some() {
                ExitCode::from(EXIT_REVOKED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `service run`: hands the process to the Windows service control manager.
#[cfg(windows)]
fn service_run(config: PathBuf) -> ExitCode {
    // The SCM thread builds its own runtime (picket_agent::winsvc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match picket_agent::winsvc::run_under_scm(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "service run failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `service run` elsewhere: systemd runs `picket-agent run` directly.
#[cfg(not(windows))]
fn service_run(_config: PathBuf) -> ExitCode {
    eprintln!(
        "error: `service run` is for the Windows service control manager; \
         on Linux the systemd unit runs `picket-agent run`"
    );
    ExitCode::from(2)
}

fn service_prepare(args: PrepareArgs) -> anyhow::Result<()> {
    let examples = match args.examples_dir {
        Some(d) => d,
        None => std::env::current_exe()
            .context("cannot find this executable's folder")?
            .parent()
            .map(Path::to_path_buf)
            .context("this executable has no parent folder")?,
    };
    for line in picket_agent::install::prepare(&args.data_dir, &examples)? {
        println!("{line}");
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    // These two read no agent configuration the ordinary way: check-config
    // reports on it, and `service prepare` runs before agent.toml exists.
    let command = match cli.command {
        Command::CheckConfig => {
            for line in picket_agent::check::check_config(&cli.config)? {
                println!("{line}");
            }
            println!("configuration ok");
            return Ok(());
        }
        Command::Service(ServiceCommand::Prepare(args)) => return service_prepare(args),
        other => other,
    };
    let mut config = AgentConfig::load(&cli.config)?;
    match command {
        Command::Enroll(args) => {
            if let Some(dir) = args.state_dir {
                config.state_dir = dir;
            }
            let server = config.check_server_url(&args.server, "--server")?;
            let token = enroll::read_token(&args.token_file)?;
            let e = enroll::enroll(&config, &server, token, args.force).await?;
            println!("enrolled: agent id {}", e.agent_id);
            println!("pinned server signing key {}", e.key_id);
            println!(
                "state written to {}; start the service with `picket-agent run`",
                config.state_dir.display()
            );
            Ok(())
        }
        Command::Run => {
            let shutdown = CancellationToken::new();
            tokio::spawn(watch_signals(shutdown.clone()));
            run_agent(config, shutdown).await
        }
        Command::Status(args) => {
            if let Some(dir) = args.state_dir {
                config.state_dir = dir;
            }
            status(&config.state_dir)
        }
        Command::Journal(args) => {
            if let Some(dir) = args.state_dir {
                config.state_dir = dir;
            }
            print_journal(&config.state_dir, args.limit, args.json)
        }
        Command::RotateKeys(args) => {
            if let Some(dir) = args.state_dir {
                config.state_dir = dir;
            }
            rotate_keys(&config.state_dir, args.wait).await
        }
        // Handled above, before the configuration is loaded; `service run` in main.
        Command::CheckConfig | Command::Service(_) => Ok(()),
    }
}

async fn rotate_keys(dir: &Path, wait: u64) -> anyhow::Result<()> {
    let state = StateDir::new(dir);
    state.load_enrollment()?;
    let new = identity::begin(dir)?;
    println!(
        "new keys written to {} (identity {})",
        dir.join(identity::PENDING_FILE).display(),
        hex::encode(new.ed25519_public())
    );
    if wait == 0 {
        println!(
            "the running agent sends them to the server within seconds (or at its next start) \
             and switches once the server confirms; `picket-agent status` shows the state"
        );
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    while identity::is_pending(dir) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the rotation is still pending after {wait} s: is `picket-agent run` running and connected? \
             It completes the rotation at its next connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!("rotation complete: the server confirmed the new keys");
    Ok(())
}

fn print_journal(dir: &Path, limit: usize, json: bool) -> anyhow::Result<()> {
    let (entries, bad) = Journal::read_last(dir, limit)
        .with_context(|| format!("cannot read the job journal in {}", dir.display()))?;
    if bad > 0 {
        eprintln!("warning: skipped {bad} damaged journal line(s)");
    }
    if json {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(());
    }
    let opt = |u: Option<uuid::Uuid>| u.map_or_else(|| "-".to_owned(), |u| u.to_string());
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.time.clone(),
                opt(e.job_id),
                // A refused audit checkpoint is journaled without a job.
                if e.audit_alarm.is_some() {
                    "audit_checkpoint".to_owned()
                } else {
                    e.kind.map_or("-", picket_proto::JobKind::as_str).to_owned()
                },
                opt(e.rule_id),
                opt(e.connection_id),
                e.outcome.as_str().to_owned(),
                e.audit_alarm.map_or_else(
                    || {
                        e.error_class
                            .map_or("-", picket_proto::ErrorClass::as_str)
                            .to_owned()
                    },
                    |a| a.as_str().to_owned(),
                ),
            ]
        })
        .collect();
    let header = [
        "TIME",
        "JOB",
        "KIND",
        "RULE",
        "CONNECTION",
        "OUTCOME",
        "ERROR",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out
    };
    if rows.is_empty() {
        println!("no jobs in the journal ({})", dir.display());
        return Ok(());
    }
    println!("{}", line(&header));
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        println!("{}", line(&cells));
    }
    Ok(())
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn watch_signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested; shutting down");
    shutdown.cancel();
}

fn status(dir: &Path) -> anyhow::Result<()> {
    let state = StateDir::new(dir);
    println!("state directory: {}", dir.display());
    if !state.is_enrolled() {
        println!("enrolled: no (run `picket-agent enroll`)");
        return Ok(());
    }
    let e = state.load_enrollment()?;
    println!("enrolled: yes");
    println!("agent id: {}", e.agent_id);
    println!("tenant id: {}", e.tenant_id);
    println!("server: {}", e.server_url);
    println!("server key pinned at enrollment: {}", e.key_id);
    match Keyring::load(dir, &e) {
        Ok(ring) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for k in &ring.keys {
                let window = match k.valid_until {
                    None => "current".to_owned(),
                    Some(t) if now <= t => format!("accepted until {}", rfc3339(t)),
                    Some(t) => format!("retired since {}", rfc3339(t)),
                };
                println!("trusted server key: {} ({window})", k.key_id);
            }
        }
        Err(err) => println!("trusted server keys: PROBLEM: {err:#}"),
    }
    match identity::Identity::load(&state) {
        Ok(id) => {
            println!(
                "keys: ok (identity {})",
                hex::encode(id.current.ed25519_public())
            );
            if let Some(p) = &id.pending {
                println!(
                    "key rotation: pending (new identity {}), completed by the running agent once the server confirms",
                    hex::encode(p.ed25519_public())
                );
            }
        }
        Err(err) => println!("keys: PROBLEM: {err:#}"),
    }
    if let Some(at) = state.revoked_at() {
        println!(
            "revoked: yes, at {} (run `picket-agent enroll --force` with a new token)",
            rfc3339(at)
        );
    }
    match Ledger::last_job_in(dir).context("cannot read the job ledger")? {
        None => println!("last job: none"),
        Some(j) => {
            let class = j
                .result
                .error_class
                .map(|c| format!(" ({})", c.as_str()))
                .unwrap_or_default();
            println!(
                "last job: {} {} {}{} at {}{}",
                j.job_id,
                j.kind.as_str(),
                j.result.outcome.as_str(),
                class,
                rfc3339(j.finished_at),
                if j.acked {
                    ""
                } else {
                    ", not yet acknowledged by the server"
                }
            );
        }
    }
    Ok(())
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn token_is_never_accepted_on_argv() {
        let cmd = Cli::command();
        let enroll = cmd.find_subcommand("enroll").unwrap();
        for arg in enroll.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                id == "token_file" || !id.contains("token"),
                "argument `{id}` could carry a token"
            );
            assert!(
                !arg.is_positional(),
                "positional argument `{id}` could carry a token"
            );
        }
        let token = "pkt1.AAAA.0000";
        for argv in [
            vec![
                "picket-agent",
                "enroll",
                "--server",
                "https://x",
                "--token",
                token,
            ],
            vec!["picket-agent", "enroll", "--server", "https://x", token],
            vec![
                "picket-agent",
                "enroll",
                "--server",
                "https://x",
                "--token-file",
                "f",
                token,
            ],
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?} was accepted");
        }
        let ok = Cli::try_parse_from([
            "picket-agent",
            "enroll",
            "--server",
            "https://x",
            "--token-file",
            "-",
        ])
        .unwrap();
        assert!(
            matches!(ok.command, Command::Enroll(ref a) if a.token_file == Path::new("-")),
            "{ok:?}"
        );
    }

    #[test]
    fn config_flag_works_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["picket-agent", "run", "--config", "/x.toml"]).unwrap();
        let b = Cli::try_parse_from(["picket-agent", "--config", "/x.toml", "run"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        assert_eq!(b.config, PathBuf::from("/x.toml"));
    }
}
