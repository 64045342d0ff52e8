//! `picket-siem-sim`: runs a SIEM simulator as a standalone process, for the
//! demo and for poking at connectors by hand.
//!
//! ```text
//! picket-siem-sim splunk --port 8089 --token T [--bind 127.0.0.1] [--user U --password P] [--hec-token H]
//! picket-siem-sim sentinel --port 8443 --client-id C --client-secret S
//! picket-siem-sim elastic --port 9200 --api-key K
//! ```
//!
//! Logs one line per request (`RUST_LOG` overrides the `info` default) and
//! stops on Ctrl-C. Each SIEM is one subcommand.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use picket_siem_sim::elastic::ElasticSim;
use picket_siem_sim::sentinel::SentinelSim;
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

/// One subcommand per simulated SIEM, each with its own `run_*` function.
#[derive(Debug, Subcommand)]
enum Command {
    /// Splunk REST API (management port): auth/login, server/info, saved/searches, oneshot searches, HEC.
    Splunk(SplunkArgs),
    /// Microsoft Sentinel: Entra token endpoint, ARM alertRules, Log Analytics query, Logs Ingestion.
    Sentinel(SentinelArgs),
    /// Elastic Security: Kibana detection engine API, Elasticsearch _bulk and _count.
    Elastic(ElasticArgs),
}

/// Options of `picket-siem-sim sentinel`.
#[derive(Debug, Args)]
struct SentinelArgs {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Entra application (client) id to accept.
    #[arg(long)]
    client_id: String,
    /// Its client secret.
    #[arg(long, env = "PICKET_SIM_SENTINEL_SECRET", hide_env_values = true)]
    client_secret: String,
}

/// Options of `picket-siem-sim elastic`.
#[derive(Debug, Args)]
struct ElasticArgs {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9200)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// API key to accept as `Authorization: ApiKey <key>` (repeat for several).
    #[arg(
        long = "api-key",
        env = "PICKET_SIM_ELASTIC_API_KEY",
        required = true,
        hide_env_values = true
    )]
    api_keys: Vec<String>,
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
    /// HEC token accepted at /services/collector/event (repeat for several).
    #[arg(
        long = "hec-token",
        env = "PICKET_SIM_SPLUNK_HEC_TOKEN",
        hide_env_values = true
    )]
    hec_tokens: Vec<String>,
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
        Command::Sentinel(args) => run_sentinel(args).await,
        Command::Elastic(args) => run_elastic(args).await,
    }
}

/// Serves the Splunk simulator until Ctrl-C.
async fn run_splunk(args: SplunkArgs) -> anyhow::Result<()> {
    let mut builder = SplunkSim::builder().bind(SocketAddr::new(args.bind, args.port));
    for token in args.tokens {
        builder = builder.token(token);
    }
    for token in args.hec_tokens {
        builder = builder.hec_token(token);
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

/// Serves the Sentinel simulator until Ctrl-C.
async fn run_sentinel(args: SentinelArgs) -> anyhow::Result<()> {
    let sim = SentinelSim::builder()
        .bind(SocketAddr::new(args.bind, args.port))
        .client(args.client_id, args.client_secret)
        .start()
        .await?;
    tracing::info!(base_url = %sim.base_url(), "Sentinel simulator ready; Ctrl-C stops it");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}

/// Serves the Elastic simulator until Ctrl-C.
async fn run_elastic(args: ElasticArgs) -> anyhow::Result<()> {
    let mut builder = ElasticSim::builder().bind(SocketAddr::new(args.bind, args.port));
    for key in args.api_keys {
        builder = builder.api_key(key);
    }
    let sim = builder.start().await?;
    tracing::info!(base_url = %sim.base_url(), "Elastic simulator ready; Ctrl-C stops it");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}
