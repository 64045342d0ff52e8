//! `picket-siem-sim`: runs a SIEM simulator as a standalone process, for the
//! demo and for poking at connectors by hand.
//!
//! ```text
//! picket-siem-sim splunk --port 8089 --token T [--bind 127.0.0.1] [--user U --password P]
//! ```
//!
//! Logs one line per request (`RUST_LOG` overrides the `info` default) and
//! stops on Ctrl-C. Each SIEM is one subcommand; only Splunk exists today.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use picket_siem_sim::splunk::SplunkSim;
use tracing_subscriber::EnvFilter;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "picket-siem-sim",
    version,
    about = "SIEM API simulators for Picket"
)]
struct Cli {
    /// Which SIEM to simulate.
    #[command(subcommand)]
    command: Command,
}

/// One subcommand per simulated SIEM. New simulators (Microsoft Sentinel,
/// Elastic Security) get their own variant and `run_*` function here, next to
/// their library module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Splunk REST API (management port): auth/login, server/info, saved/searches.
    Splunk(SplunkArgs),
}

/// Options of `picket-siem-sim splunk`.
#[derive(Debug, Args)]
struct SplunkArgs {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Bearer token to accept (repeat for several).
    #[arg(
        long = "token",
        env = "PICKET_SIM_SPLUNK_TOKEN",
        required = true,
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// Username accepted by /services/auth/login.
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password of --user.
    #[arg(
        long,
        env = "PICKET_SIM_SPLUNK_PASSWORD",
        requires = "user",
        hide_env_values = true
    )]
    password: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Splunk(args) => run_splunk(args).await,
    }
}

/// Serves the Splunk simulator until Ctrl-C.
async fn run_splunk(args: SplunkArgs) -> anyhow::Result<()> {
    let mut builder = SplunkSim::builder().bind(SocketAddr::new(args.bind, args.port));
    for token in args.tokens {
        builder = builder.token(token);
    }
    if let (Some(user), Some(password)) = (args.user, args.password) {
        builder = builder.user(user, password);
    }
    let sim = builder.start().await?;
    tracing::info!(base_url = %sim.base_url(), "Splunk simulator ready; Ctrl-C stops it");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}
