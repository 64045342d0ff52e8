//! The Picket control plane.
//!
//! One process serves the JSON API (described by an OpenAPI document at
//! `/v1/openapi.json`), the agent gateway (`/v1/agent/connect`, WebSocket) and
//! agent enrollment, over SQLite (embedded default) or PostgreSQL.
//!
//! # Layout
//! - [`config`]: typed `server.toml` + `PICKET_*` environment, validated at start-up.
//! - [`db`]: connection set-up, migrations and entities.
//! - [`keys`]: master-derived keys and the job-signing key.
//! - [`listener`]: the accept loop, plain HTTP or TLS (rustls), with graceful shutdown.
//! - [`auth`]: passwords, sessions, API keys, login throttling, CSRF and the
//!   role matrix (authorization in one place).
//! - [`service`]: the domain operations; every query is tenant-scoped here.
//! - [`api`]: HTTP routes grouped by resource, merged in one router.
//! - [`console`]: the web console (server-rendered HTML on the same services).
//! - [`gateway`]: agent connections, the live-connection registry and job delivery.
//! - [`audit`]: the audit trail, written in the same transaction as each change.
//! - [`metrics`]: `/metrics` (OpenMetrics text) and the HTTP latency middleware.
//! - [`error`]: the one HTTP error type.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod service;
pub mod time;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ServerConfig;

/// Shared state of every handler and connection task. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// The database pool.
    pub db: DatabaseConnection,
    /// The validated configuration.
    pub config: ServerConfig,
    /// Key material.
    pub keys: keys::ServerKeys,
    /// Live agent connections.
    pub registry: gateway::Registry,
    /// Admission control of new agent connections (and its counters).
    pub admission: gateway::Admission,
    /// Bounds the agent sessions doing storage work at once as they start
    /// or end (see `gateway::SESSION_STORAGE_CONCURRENCY`).
    pub session_gate: tokio::sync::Semaphore,
    /// Queue of health reports for the batch writer.
    pub health: service::health::HealthSink,
    /// The audit checkpointer's wake-up and announcements.
    pub audit: Arc<audit::checkpoint::Hub>,
    /// Consistency proofs recently served to agent witnesses.
    pub witness_proofs: gateway::witness::ProofCache,
    /// Fired on shutdown; connection tasks watch it.
    pub shutdown: CancellationToken,
    /// Sign-in throttling per client IP and per account (in memory, per process).
    pub login_limiter: auth::LoginLimiter,
    /// Operational metrics of this process, served at `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A running server: its bound address and the handle to wait for it.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Completes when the server has shut down.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Creates the data directory (mode 0700: it holds the database) when the
/// database is the embedded SQLite file.
///
/// # Errors
/// If the directory cannot be created.
pub fn prepare(config: &ServerConfig) -> anyhow::Result<()> {
    if config.database_url.starts_with("sqlite:") && !config.data_dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    }
    Ok(())
}

/// Pending connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`). tokio's default of 1,024 overflowed when 10,000
/// agents came back after a restart, and some saw their connection reset.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's own `bind` do on Unix: a restarted server can
    // listen again while old connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Opens storage, loads keys, binds `config.listen` and serves until `shutdown` fires.
///
/// # Errors
/// If storage, keys, TLS material or the listener cannot be set up.
pub async fn start(config: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<Running> {
    prepare(&config)?;
    let db = db::connect(&config.database_url).await?;
    let keys = keys::ServerKeys::load_or_create(&db, &config.master_secret).await?;
    let listener =
        bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let tls = match &config.tls {
        Some(t) => Some(listener::acceptor(t)?),
        None => None,
    };
    let metrics = metrics::Metrics::new(&config.replica_id);
    let (health, health_task) =
        service::health::spawn_writer(db.clone(), shutdown.clone(), metrics.clone());
    let admission = gateway::Admission::new(config.admission_rate_per_sec, config.admission_burst);
    let login_limiter = auth::LoginLimiter::new(
        config.login_account_failures,
        config.login_ip_failures,
        config.login_max_delay_secs,
    );
    let state = AppState(Arc::new(Inner {
        db,
        config,
        keys,
        registry: gateway::Registry::default(),
        admission,
        session_gate: tokio::sync::Semaphore::new(gateway::SESSION_STORAGE_CONCURRENCY),
        health,
        audit: Arc::default(),
        witness_proofs: gateway::witness::ProofCache::default(),
        shutdown: shutdown.clone(),
        login_limiter,
        metrics,
    }));
    let checkpointer = audit::checkpoint::spawn(state.clone());
    let streamer = audit::stream::spawn(state.clone());
    let cluster = gateway::cluster::spawn(&state);
    let drift = service::drift::spawn(state.clone());
    let rule_health = service::rule_health::spawn(state.clone());
    tracing::info!(%addr, tls = tls.is_some(), fingerprint = %state.keys.fingerprint, "picket-server listening");
    let app = api::router(state.clone());
    let task = tokio::spawn(async move {
        let served = listener::serve(listener, tls, app, shutdown.clone()).await;
        shutdown.cancel();
        let _ = health_task.await;
        let _ = checkpointer.await;
        for t in cluster {
            let _ = t.await;
        }
        let _ = drift.await;
        let _ = rule_health.await;
        if let Some(s) = streamer {
            let _ = s.await;
        }
        served
    });
    Ok(Running { addr, task })
}
