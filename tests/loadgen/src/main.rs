//! `picket-loadgen`: N simulated agents against a real `picket-server`
//! child, with the real protocol and crypto; see the library docs
//! ([`picket_loadgen`]) and docs/performance.md for the commands behind every
//! published figure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use picket_loadgen::scenario::{self, Options, Scenario};

/// Fleet load generator for Picket: simulated agents (real protocol, real crypto) against a fresh picket-server.
///
/// Raise the open-file limit first for large fleets (`ulimit -n 1048576`):
/// each agent needs one descriptor here and one in the server (each process
/// has its own limit; the server inherits this one).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Simulated agents.
    #[arg(long, short = 'n', default_value_t = 1000, global = true)]
    agents: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1..=N); about 28,000 connections fit per address.
    #[arg(long, default_value_t = 4, global = true)]
    sources: u8,
    /// The picket-server binary (default: next to this one).
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// A fresh, empty PostgreSQL database for the server (default: SQLite).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Server admission control: new connections per second (the server's default).
    #[arg(long, default_value_t = 1000, global = true)]
    admission_rate: u32,
    /// Server admission control: burst (the server's default).
    #[arg(long, default_value_t = 2000, global = true)]
    admission_burst: u32,
    /// Concurrent API requests during setup (enrollment, connections, approvals).
    #[arg(long, default_value_t = 16, global = true)]
    api_concurrency: usize,
    /// Spread of the agents' first connections, seconds.
    #[arg(long, default_value_t = 5, global = true)]
    connect_spread_secs: u64,
    /// TLS (rustls) in the server and in the echo floor, with a throwaway CA the agents trust.
    #[arg(long, global = true)]
    tls: bool,
    /// How long the fleet may take to connect, or a fan-out to complete, seconds.
    #[arg(long, default_value_t = 600, global = true)]
    settle_timeout_secs: u64,
    /// Copy the server's log here when the run ends (it is otherwise removed with the server's temporary directory).
    #[arg(long, global = true)]
    keep_server_log: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold N idle agents; report memory per agent and CPU.
    Idle {
        /// How long to hold, seconds.
        #[arg(long, default_value_t = 30)]
        hold_secs: u64,
    },
    /// Approve one deployment per agent; report approval-to-ack latency percentiles.
    FanOut,
    /// Every agent reports health at the period; report the rate ingested and the backlog.
    Health {
        /// Each agent's report period, seconds.
        #[arg(long, default_value_t = 30)]
        every_secs: u64,
        /// Measurement length, seconds.
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
    },
    /// Kill and restart the server; report the time until every agent is back.
    Storm {
        /// Seconds the server stays down between the kill and the restart,
        /// so the kill's own errors are apart in time from the storm's.
        #[arg(long, default_value_t = 2)]
        down_secs: u64,
    },
    /// The bare tokio-tungstenite echo server with N idle connections (the memory floor).
    Floor,
    /// The real picket-agent binary enrolled and idle: its memory, CPU and binary size (ignores -n).
    AgentAtRest {
        /// How long to measure, seconds.
        #[arg(long, default_value_t = 60)]
        hold_secs: u64,
        /// The picket-agent binary (default: next to this one).
        #[arg(long)]
        agent_bin: Option<PathBuf>,
    },
    /// Run the echo server (used by `floor`, in its own process).
    #[command(hide = true)]
    EchoServer {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// Serve TLS with this certificate (PEM)...
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// ...and this key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let agent_bin = match &cli.scenario {
        Command::AgentAtRest { agent_bin, .. } => agent_bin.clone(),
        _ => None,
    };
    let scenario = match cli.scenario {
        Command::EchoServer {
            listen,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some(picket_loadgen::tls::acceptor(&c, &k)?),
                _ => None,
            };
            return picket_loadgen::echo::serve(listen, tls).await;
        }
        Command::Idle { hold_secs } => Scenario::Idle(Duration::from_secs(hold_secs)),
        Command::FanOut => Scenario::FanOut,
        Command::Health {
            every_secs,
            duration_secs,
        } => Scenario::Health {
            every: Duration::from_secs(every_secs.max(1)),
            duration: Duration::from_secs(duration_secs.max(1)),
        },
        Command::Storm { down_secs } => Scenario::Storm(Duration::from_secs(down_secs)),
        Command::Floor => Scenario::Floor,
        Command::AgentAtRest { hold_secs, .. } => {
            Scenario::AgentAtRest(Duration::from_secs(hold_secs))
        }
    };
    let server_bin = match cli.server_bin {
        Some(p) => p,
        None => picket_loadgen::proc::sibling_bin("picket-server")?,
    };
    let opts = Options {
        agents: cli.agents,
        sources: cli.sources.max(1),
        server_bin,
        database_url: cli.database_url,
        admission: (cli.admission_rate, cli.admission_burst),
        heartbeat_secs: 30,
        api_concurrency: cli.api_concurrency,
        connect_spread: Duration::from_secs(cli.connect_spread_secs),
        settle_timeout: Duration::from_secs(cli.settle_timeout_secs),
        tls: cli.tls,
        agent_bin,
        keep_server_log: cli.keep_server_log,
    };
    let report = scenario::run(&opts, scenario).await?;
    print!("{report}");
    Ok(())
}
