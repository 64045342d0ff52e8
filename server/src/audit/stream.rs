//! Streaming audit events to a syslog receiver as they are committed
//! (`[audit.syslog]`): RFC 5424 messages (the same lines as the syslog
//! export) over TCP, or TLS (RFC 5425), with RFC 6587 octet-counting
//! framing (`<length> <message>`).
//!
//! The streamer tails every log from where it stood when the server
//! started (events committed while the server was down are not streamed:
//! export them). Committed events go into a bounded in-memory queue
//! (`audit.syslog.queue`); when it is full the streamer stops reading and
//! the database holds the backlog, so nothing committed while the server
//! runs is dropped. A message leaves the queue only once written to the
//! socket; a broken connection is re-established with exponential backoff
//! (`backon`: 1 s doubling to 30 s, with jitter). Delivery is at least
//! once: a message written just before the connection broke may be sent
//! again. TCP gives no acknowledgement, so a message written in the very
//! instant the receiver goes away can still be lost (the streamer checks
//! for the receiver's end-of-stream before each write burst); the audit
//! log itself keeps every event. With several replicas on one database,
//! enable it on one only.

use std::collections::{HashMap, VecDeque};
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures_util::FutureExt as _;
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::export::syslog_line;
use crate::config::SyslogConfig;
use crate::db::entity::audit_event;

/// How often the logs are polled for new events.
const POLL: Duration = Duration::from_secs(1);
/// Connect and write deadline.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Both directions: the receiver never sends, so a readable end-of-stream
/// tells that it closed the connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}
type Conn = Box<dyn Io>;

/// Starts the streamer if `[audit.syslog]` is configured.
pub fn spawn(state: crate::AppState) -> Option<tokio::task::JoinHandle<()>> {
    let cfg = state.config.audit.syslog.clone()?;
    Some(tokio::spawn(async move {
        let tls = if cfg.tls {
            match tls_connector(&cfg) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "audit syslog streaming disabled: TLS set-up failed");
                    return;
                }
            }
        } else {
            None
        };
        let hostname = hostname();
        let mut streamer = Streamer {
            db: state.db.clone(),
            cfg,
            tls,
            hostname,
            cursors: HashMap::new(),
            queue: VecDeque::new(),
            conn: None,
        };
        if let Err(e) = streamer.start_cursors().await {
            tracing::error!(error = %format!("{e:#}"), "audit syslog streaming: cannot read the logs");
        }
        tracing::info!(address = %streamer.cfg.address, tls = streamer.cfg.tls, "streaming audit events to syslog");
        let mut backoff = new_backoff();
        let mut retry_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                () = tokio::time::sleep(POLL) => {}
            }
            if let Err(e) = streamer.fill().await {
                tracing::warn!(error = %format!("{e:#}"), "audit syslog streaming: cannot read new events");
            }
            if streamer.queue.is_empty() || tokio::time::Instant::now() < retry_at {
                continue;
            }
            match streamer.flush().await {
                Ok(()) => backoff = new_backoff(),
                Err(e) => {
                    streamer.conn = None;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    retry_at = tokio::time::Instant::now() + delay;
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        queued = streamer.queue.len(),
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "audit syslog receiver unavailable; keeping events queued"
                    );
                }
            }
        }
    }))
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .filter(char::is_ascii_graphic)
                .take(255)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

fn tls_connector(cfg: &SyslogConfig) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.ca_bundle {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot open audit.syslog.ca_bundle {}", path.display()))?;
        for cert in rustls_pemfile::certs(&mut BufReader::new(f)) {
            roots
                .add(cert.with_context(|| format!("{} is not valid PEM", path.display()))?)
                .with_context(|| format!("{} holds an invalid certificate", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2/1.3")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

struct Streamer {
    db: DatabaseConnection,
    cfg: SyslogConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    hostname: String,
    /// Next index to stream, per log.
    cursors: HashMap<String, i64>,
    /// Framed messages not yet written to the receiver.
    queue: VecDeque<Vec<u8>>,
    conn: Option<Conn>,
}

impl Streamer {
    /// Starts every known log at its current end.
    async fn start_cursors(&mut self) -> anyhow::Result<()> {
        for log in super::checkpoint::log_ids(&self.db).await? {
            let next = self.end_of(&log).await?;
            self.cursors.insert(log, next);
        }
        Ok(())
    }

    async fn end_of(&self, log: &str) -> anyhow::Result<i64> {
        let max: Option<i64> = audit_event::Entity::find()
            .select_only()
            .column_as(audit_event::Column::Idx.max(), "m")
            .filter(audit_event::Column::LogId.eq(log))
            .into_tuple()
            .one(&self.db)
            .await?
            .flatten();
        Ok(max.map_or(0, |m| m + 1))
    }

    /// Moves newly committed events into the queue, up to its bound.
    async fn fill(&mut self) -> anyhow::Result<()> {
        let cap = self.cfg.queue as usize;
        for log in super::checkpoint::log_ids(&self.db).await? {
            // A log created after start-up (a new tenant) is streamed from its start.
            let from = self.cursors.get(&log).copied().unwrap_or(0);
            let room = cap.saturating_sub(self.queue.len());
            if room == 0 {
                return Ok(());
            }
            let rows = audit_event::Entity::find()
                .filter(audit_event::Column::LogId.eq(log.as_str()))
                .filter(audit_event::Column::Idx.gte(from))
                .order_by_asc(audit_event::Column::Idx)
                .limit(room.min(1000) as u64)
                .all(&self.db)
                .await?;
            let mut next = from;
            for e in rows {
                let line = syslog_line(&e, &self.hostname);
                let mut framed = format!("{} ", line.len()).into_bytes();
                framed.extend_from_slice(line.as_bytes());
                self.queue.push_back(framed);
                next = e.idx + 1;
            }
            self.cursors.insert(log, next);
        }
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.cfg.address))
            .await
            .context("connect timed out")?
            .with_context(|| format!("cannot connect to {}", self.cfg.address))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(c) => {
                let name = rustls_pki_types::ServerName::try_from(self.cfg.server_name.clone())
                    .context("audit.syslog.server_name is not a valid name")?;
                let t = tokio::time::timeout(IO_TIMEOUT, c.connect(name, tcp))
                    .await
                    .context("TLS handshake timed out")?
                    .context("TLS handshake with the syslog receiver failed")?;
                Ok(Box::new(t))
            }
        }
    }

    /// Writes every queued message; a message is dropped from the queue only once written.
    async fn flush(&mut self) -> anyhow::Result<()> {
        // TCP accepts writes after the peer closed (they are lost): look for
        // its end-of-stream first and reconnect instead.
        if let Some(conn) = self.conn.as_mut() {
            let mut byte = [0u8; 1];
            if matches!(conn.read(&mut byte).now_or_never(), Some(Ok(0) | Err(_))) {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        while let Some(msg) = self.queue.front() {
            tokio::time::timeout(IO_TIMEOUT, conn.write_all(msg))
                .await
                .context("write timed out")?
                .context("write to the syslog receiver failed")?;
            self.queue.pop_front();
        }
        tokio::time::timeout(IO_TIMEOUT, conn.flush())
            .await
            .context("flush timed out")?
            .context("flush to the syslog receiver failed")?;
        Ok(())
    }
}
