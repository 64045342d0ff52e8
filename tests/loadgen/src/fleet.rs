//! Simulated agents. Each is one task holding one WebSocket: it answers the
//! challenge with its Ed25519 identity, verifies every sealed job against the
//! server key it pinned at enrollment, opens it (HPKE), acknowledges it, sends
//! a result, answers pings and sends health at its interval. On disconnect it
//! reconnects with the real agent's schedule (`picket_agent::backoff`) after
//! a random first delay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use picket_agent::backoff::{Backoff, SessionEnd};
use picket_proto::{
    AgentMsg, AgentVersion, B64, HealthReport, Hello, JobResult, Outcome, ServerMsg, encode,
};
use picket_shared::AgentKeys;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Largest frame accepted from the server.
const MAX_FRAME: usize = 1 << 20;

/// One enrolled simulated agent.
pub struct SimAgent {
    /// Position in the fleet (picks the source address).
    pub index: usize,
    /// Agent id from enrollment.
    pub id: Uuid,
    /// Its key pairs.
    pub keys: AgentKeys,
    /// The server's job-signing key, pinned at enrollment.
    pub server_key: ed25519_dalek::VerifyingKey,
}

/// Counters shared by the fleet.
#[derive(Default)]
pub struct Stats {
    /// Sessions open now (Welcome received, not yet closed).
    pub connected: AtomicU64,
    /// Welcomes received in total.
    pub welcomes: AtomicU64,
    /// `RetryAfter` answers received.
    pub retry_after: AtomicU64,
    /// Jobs verified, opened and acknowledged.
    pub jobs_acked: AtomicU64,
    /// Jobs refused (bad signature, wrong agent, cannot open).
    pub jobs_refused: AtomicU64,
    /// Results acknowledged by the server.
    pub results_acked: AtomicU64,
    /// Health reports sent.
    pub health_sent: AtomicU64,
    /// Seconds from job enqueue (its UUIDv7 time) to our ack.
    pub ack_latencies: Mutex<Vec<f64>>,
    /// Errors by kind (connect failures, closes, protocol surprises).
    pub errors: Mutex<HashMap<String, u64>>,
    /// When each agent last got a Welcome, per index (for the storm).
    pub last_welcome: Mutex<HashMap<usize, Instant>>,
}

impl Stats {
    fn error(&self, kind: impl Into<String>) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind.into()).or_default() += 1;
        }
    }

    /// A copy of the error counts.
    pub fn errors(&self) -> HashMap<String, u64> {
        self.errors.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// How the fleet behaves.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The server.
    pub server: SocketAddr,
    /// Number of loopback source addresses (127.0.0.1..=n).
    pub sources: u8,
    /// Health report period (none: no health).
    pub health_every: Option<Duration>,
    /// Largest random delay before the first connection.
    pub initial_spread: Duration,
    /// TLS to the server (`wss://`), trusting only the loadgen's CA.
    pub tls: Option<crate::tls::Pki>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A uniform random duration in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let r = picket_shared::random::random_array::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(r % ms)
}

/// Runs one agent until `stop`.
pub async fn run(
    agent: Arc<SimAgent>,
    cfg: Arc<FleetConfig>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => return,
        () = tokio::time::sleep(jitter(cfg.initial_spread)) => {}
    }
    // The real agent's schedule, so a storm measures what a fleet would do.
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let wait = tokio::select! {
            () = stop.cancelled() => return,
            w = session(&agent, &cfg, &stats) => w,
        };
        let end = match wait {
            Some(secs) => SessionEnd::RetryAfter(u32::try_from(secs).unwrap_or(u32::MAX)),
            None => SessionEnd::Failed,
        };
        let delay = backoff.delay_after(end, started.elapsed());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection, to its end. Returns `Some(secs)` if the server said `RetryAfter`.
async fn session(agent: &SimAgent, cfg: &FleetConfig, stats: &Stats) -> Option<u64> {
    let src = crate::source_addr(agent.index, cfg.sources);
    let sock = match TcpSocket::new_v4() {
        Ok(s) => s,
        Err(e) => {
            stats.error(format!("socket: {}", e.kind()));
            return None;
        }
    };
    if let Err(e) = sock.bind(src) {
        stats.error(format!("bind {src}: {}", e.kind()));
        return None;
    }
    let stream = match sock.connect(cfg.server).await {
        Ok(s) => s,
        Err(e) => {
            stats.error(format!("connect: {}", e.kind()));
            return None;
        }
    };
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
    let (mut ws, _) = match tokio_tungstenite::client_async_tls_with_config(
        format!("{scheme}://{}/v1/agent/connect", cfg.server),
        stream,
        Some(ws_cfg),
        cfg.tls.as_ref().map(crate::tls::Pki::connector),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            stats.error(format!("handshake: {}", short(&e.to_string())));
            return None;
        }
    };
    let mut welcomed = false;
    let mut health = cfg.health_every.map(|every| {
        // Spread reports over the period so the fleet does not report in lockstep.
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + jitter(every), every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let started_at = Instant::now();
    let retry = loop {
        let frame = tokio::select! {
            f = ws.next() => f,
            () = async {
                match health.as_mut() {
                    Some(h) if welcomed => { h.tick().await; }
                    _ => std::future::pending::<()>().await,
                }
            } => {
                let report = AgentMsg::Health(HealthReport {
                    taken_at: unix_now(),
                    uptime_secs: started_at.elapsed().as_secs(),
                    cpu_percent: 0.1,
                    rss_bytes: 8 << 20,
                    host_mem_used_bytes: 1 << 30,
                    host_mem_total_bytes: 4 << 30,
                    jobs_succeeded: stats.results_acked.load(Ordering::Relaxed),
                    jobs_failed: 0,
                    siem: Vec::new(),
                    audit_alarm: None,
                });
                if send(&mut ws, &report).await.is_err() { break None; }
                stats.health_sent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                if let Some(f) = f {
                    stats.error(format!("closed {}: {}", u16::from(f.code), f.reason));
                }
                break None;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                stats.error(format!("read: {}", short(&e.to_string())));
                break None;
            }
            None => {
                stats.error("connection closed");
                break None;
            }
        };
        let msg = match picket_proto::decode_server_msg(&text, MAX_FRAME) {
            Ok(m) => m,
            Err(e) => {
                stats.error(format!("bad frame: {e}"));
                break None;
            }
        };
        match msg {
            ServerMsg::Challenge(c) => {
                let sig =
                    agent
                        .keys
                        .sign(&Hello::signing_bytes(&c.nonce.0, &agent.id, &c.server_key));
                let Ok(version) = AgentVersion::new("0.1.0") else {
                    break None;
                };
                let hello = AgentMsg::Hello(Hello {
                    agent_id: agent.id,
                    version,
                    capabilities: vec![picket_proto::SiemKind::Splunk],
                    signature: B64(sig),
                });
                if send(&mut ws, &hello).await.is_err() {
                    break None;
                }
            }
            ServerMsg::Welcome(_) => {
                welcomed = true;
                stats.connected.fetch_add(1, Ordering::Relaxed);
                stats.welcomes.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut m) = stats.last_welcome.lock() {
                    m.insert(agent.index, Instant::now());
                }
            }
            ServerMsg::Job { job } => {
                let opened = picket_shared::verify_job(&job, &[agent.server_key]).and_then(|h| {
                    if h.agent_id == agent.id {
                        picket_shared::open_job(&job, &h, &agent.keys).map(|_| h)
                    } else {
                        Err(picket_shared::OpenError::BadSignature)
                    }
                });
                let header = match opened {
                    Ok(h) => h,
                    Err(e) => {
                        stats.jobs_refused.fetch_add(1, Ordering::Relaxed);
                        stats.error(format!("job refused: {e}"));
                        continue;
                    }
                };
                if send(
                    &mut ws,
                    &AgentMsg::JobAck {
                        job_id: header.job_id,
                    },
                )
                .await
                .is_err()
                {
                    break None;
                }
                stats.jobs_acked.fetch_add(1, Ordering::Relaxed);
                if let Some(ts) = header.job_id.get_timestamp() {
                    let (s, n) = ts.to_unix();
                    let enq = UNIX_EPOCH + Duration::new(s, n);
                    if let (Ok(d), Ok(mut v)) = (
                        SystemTime::now().duration_since(enq),
                        stats.ack_latencies.lock(),
                    ) {
                        v.push(d.as_secs_f64());
                    }
                }
                let result = AgentMsg::JobResult(JobResult {
                    job_id: header.job_id,
                    outcome: Outcome::Succeeded,
                    error_class: None,
                    duration_ms: 1,
                    content_hash: None,
                    items: None,
                    test_counts: None,
                    rule_health: None,
                });
                if send(&mut ws, &result).await.is_err() {
                    break None;
                }
            }
            ServerMsg::ResultAck { .. } => {
                stats.results_acked.fetch_add(1, Ordering::Relaxed);
            }
            ServerMsg::Ping { t } if send(&mut ws, &AgentMsg::Pong { t }).await.is_err() => {
                break None;
            }
            ServerMsg::RetryAfter { secs } => {
                stats.retry_after.fetch_add(1, Ordering::Relaxed);
                break Some(u64::from(secs));
            }
            ServerMsg::Revoked { .. } => {
                stats.error("revoked");
                break None;
            }
            // Checkpoints and key rotation are not part of the load.
            _ => {}
        }
    };
    if welcomed {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
    retry
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, msg: &AgentMsg) -> Result<(), ()> {
    let text = encode(msg).map_err(|_| ())?;
    ws.send(Message::text(text)).await.map_err(|_| ())
}

/// The first words of an error, so counts group by kind rather than by detail.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}
