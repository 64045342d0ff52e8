//! `picket-server`: the control plane binary. A thin CLI over the library:
//! `serve` (the default) runs the server; `gen-secret` prints a fresh master
//! secret; `check-config` validates the configuration and exits.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use picket_server::ServerConfig;
use picket_server::config::{LogFormat, ProcessEnv};
use tokio_util::sync::CancellationToken;

/// Picket control plane: approvals, deployments and the agent fleet.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file. Every key can also be set with a PICKET_* variable (see config-examples/server.toml).
    #[arg(
        long,
        short,
        env = "PICKET_CONFIG",
        default_value = "/etc/picket/server.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration, open the database and exit.
    CheckConfig,
    /// Print a new random master secret (48 bytes, base64) to put in a file named by master_secret_file.
    GenSecret,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PICKET_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::GenSecret) = cli.command {
        let secret: [u8; 48] =
            picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "{}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        );
        return Ok(());
    }
    // The file is optional when PICKET_* variables carry everything; a file named explicitly must exist.
    let explicit = std::env::args()
        .any(|a| a == "--config" || a == "-c" || a.starts_with("--config="))
        || std::env::var_os("PICKET_CONFIG").is_some();
    let config = ServerConfig::load(Some(&cli.config), explicit, &ProcessEnv)
        .context("invalid configuration")?;
    init_logging(config.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Some(Command::CheckConfig) => {
                picket_server::prepare(&config)?;
                picket_server::db::connect(&config.database_url).await?;
                println!(
                    "configuration OK: listen {}, database {}",
                    config.listen,
                    picket_server::config::redact_url(&config.database_url)
                );
                Ok(())
            }
            _ => serve(config).await,
        }
    })
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = picket_server::start(config, shutdown.clone()).await?;
    // Machine-readable line for scripts and tests that start the server on port 0.
    println!("picket-server listening on {}", running.addr);
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    running.task.await.context("server task")?
}

async fn wait_for_signal() {
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
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
