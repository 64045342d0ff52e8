//! `picket-agent run`: the connection loop and one WebSocket session.
//!
//! ```text
//! run_agent
//!  ├─ job worker task (jobs.rs)          ← lives for the whole process
//!  └─ loop { connect → handshake → session loop → backoff }  (until shutdown / Revoked)
//!       session loop: select! {
//!           shutdown            → close frame, return
//!           read deadline       → no frame in 3 × heartbeat: close, reconnect
//!           frame from server   → Ping→Pong, Job/ResultAck→worker, RetryAfter, Revoked, Close
//!           outgoing channel    → JobAck / JobResult to the server
//!           health buffer ready → send waiting health reports, oldest first
//!       }
//!  └─ health reporter task (health.rs)   ← from the first Welcome on, connected or not
//! ```
//!
//! Health reports are produced on their interval even while disconnected
//! and wait in a bounded buffer (newest kept); a new session sends them in
//! order right after `Welcome`.
//!
//! Handshake: the server's `Challenge` must name the pinned signing key (else
//! the agent closes and logs an error: possible interception); the agent
//! answers `Hello` signed over `Hello::signing_bytes(nonce, agent_id,
//! server_key)`; the server answers `Welcome` with the session settings.
//! Nothing received from the server is ever logged verbatim.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use futures_util::{SinkExt, StreamExt};
use picket_proto::{
    AgentMsg, B64, Hello, KeyFingerprint, ServerMsg, SiemKind, decode_server_msg, encode,
};
use picket_shared::keys::{AgentKeys, fingerprint};
use reqwest::Url;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::{Backoff, SessionEnd};
use crate::config::{AgentConfig, DEFAULT_POLICY_PATH};
use crate::health::{Counters, HEALTH_BUFFER_REPORTS, HealthBuffer, HealthSettings, reporter};
use crate::jobs::{Worker, WorkerMsg};
use crate::journal::Journal;
use crate::ledger::Ledger;
use crate::net::{self, Ws};
use crate::policy::Policy;
use crate::state::StateDir;

/// The server revoked this agent: it must not reconnect. `run_agent` returns
/// this (inside `anyhow::Error`) so the binary can exit with a clear message.
#[derive(Debug, thiserror::Error)]
#[error(
    "this agent (id {agent_id}) has been revoked by the server and will not reconnect; \
     enroll again with a new token (`picket-agent enroll --force`) to use this host"
)]
pub struct Revoked {
    /// The revoked agent.
    pub agent_id: Uuid,
}

/// Capacity of the worker and outgoing channels.
const CHANNEL_CAPACITY: usize = 256;
/// Bounds applied to the server's session settings.
const MIN_HEARTBEAT_SECS: u32 = 1;
const MIN_HEALTH_SECS: u32 = 5;
const MIN_FRAME_BYTES: usize = 4096;

/// Everything a session needs, fixed for the life of the process.
struct Ctx {
    agent_id: Uuid,
    /// The pinned server signing key: revocations must verify under it.
    server_key: VerifyingKey,
    keys: Arc<AgentKeys>,
    key_id: KeyFingerprint,
    server: Url,
    tls: Arc<rustls::ClientConfig>,
    /// HTTP CONNECT proxy to the server, if configured and not bypassed.
    proxy: Option<crate::proxy::ProxyConfig>,
    connect_timeout: Duration,
    max_frame_bytes: usize,
    /// Health reports waiting to be sent (filled by the reporter task).
    health: Arc<HealthBuffer>,
    /// Interval and connections from the last `Welcome`, for the reporter.
    health_settings: watch::Sender<Option<HealthSettings>>,
}

/// How one session ended.
enum Ended {
    Shutdown,
    Revoked,
    Reconnect(SessionEnd),
}

/// Runs the agent until `shutdown` is cancelled (returns `Ok`) or the server
/// revokes it (returns an error holding [`Revoked`]).
///
/// # Errors
/// Start-up failures (not enrolled, unreadable keys or ledger, bad TLS
/// configuration, invalid policy), or [`Revoked`].
pub async fn run_agent(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state = StateDir::new(&config.state_dir);
    let enrollment = state.load_enrollment()?;
    if let Some(at) = state.revoked_at() {
        let when = time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| at.to_string());
        return Err(anyhow::Error::new(Revoked {
            agent_id: enrollment.agent_id,
        })
        .context(format!("revoked at {when}")));
    }
    let keys = Arc::new(state.load_keys()?);
    let server = config.effective_server_url(&enrollment.server_url)?;
    if server.scheme() == "http" {
        tracing::warn!(
            server = %net::display_host(&server),
            "DANGEROUS: dangerous_plaintext is set and the server URL is http://; \
             the connection to the control plane is NOT encrypted"
        );
    }
    let pinned = VerifyingKey::from_bytes(&enrollment.server_signing_key.0)
        .context("enrollment.json holds an invalid server signing key")?;
    if fingerprint(&pinned) != enrollment.key_id {
        bail!(
            "enrollment.json is inconsistent: key_id is not the fingerprint of server_signing_key"
        );
    }
    let tls = net::tls_config(config.ca_bundle.as_deref())?;
    let http = net::siem_http_client(&tls, config.connect_timeout, config.siem_timeout)?;
    let ledger = Ledger::open(state.path())?;
    let policy = Policy::load(
        config.policy_file.as_deref(),
        Path::new(DEFAULT_POLICY_PATH),
    )?;
    let counters = Arc::new(Counters::default());

    let (out_tx, mut out_rx) = mpsc::channel::<AgentMsg>(CHANNEL_CAPACITY);
    let (work_tx, work_rx) = mpsc::channel::<WorkerMsg>(CHANNEL_CAPACITY);
    let worker = Worker {
        agent_id: enrollment.agent_id,
        keys: Arc::clone(&keys),
        pinned: vec![pinned],
        ledger: Arc::new(Mutex::new(ledger)),
        policy,
        http: http.clone(),
        siem_timeout: config.siem_timeout,
        clock_skew_secs: config.clock_skew_secs,
        counters: Arc::clone(&counters),
        out: out_tx.clone(),
        journal: Journal::open(state.path()).with_context(|| {
            format!("cannot open the job journal in {}", state.path().display())
        })?,
    };
    let worker_stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(work_rx, worker_stop.clone()));
    let health = Arc::new(HealthBuffer::new(HEALTH_BUFFER_REPORTS));
    let (settings_tx, settings_rx) = watch::channel(None);
    let health_stop = CancellationToken::new();
    let health_task = tokio::spawn(reporter(
        settings_rx,
        Arc::clone(&health),
        Arc::clone(&counters),
        http.clone(),
        config.siem_timeout,
        health_stop.clone(),
    ));

    let ctx = Ctx {
        server_key: pinned,
        agent_id: enrollment.agent_id,
        keys,
        key_id: enrollment.key_id,
        server,
        tls,
        proxy: config.proxy.clone(),
        connect_timeout: config.connect_timeout,
        max_frame_bytes: config.max_frame_bytes,
        health: Arc::clone(&health),
        health_settings: settings_tx,
    };
    tracing::info!(
        agent_id = %ctx.agent_id,
        server = %net::display_host(&ctx.server),
        version = env!("CARGO_PKG_VERSION"),
        "agent starting"
    );
    match ctx.proxy.as_ref() {
        Some(p) if p.applies_to(&ctx.server) => tracing::info!(
            proxy = %p.display(),
            source = p.source(),
            "connecting to the server through an HTTP CONNECT proxy"
        ),
        Some(p) => tracing::info!(
            source = p.source(),
            "a proxy is configured but the server is in the no_proxy list; connecting directly"
        ),
        None => {}
    }

    let mut backoff = Backoff::new();
    let result = loop {
        let (ended, uptime) = session(&ctx, &mut out_rx, &work_tx, &shutdown).await;
        let end = match ended {
            Ended::Shutdown => break Ok(()),
            Ended::Revoked => {
                tracing::error!(agent_id = %ctx.agent_id, "the server revoked this agent; stopping for good");
                if let Err(e) = state.mark_revoked() {
                    tracing::error!(error = %format!("{e:#}"), "cannot record the revocation");
                }
                break Err(anyhow::Error::new(Revoked {
                    agent_id: ctx.agent_id,
                }));
            }
            Ended::Reconnect(end) => end,
        };
        let delay = backoff.delay_after(end, uptime);
        tracing::info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconnecting after a delay"
        );
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    };

    health_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), health_task).await;
    // Let a job in progress finish (bounded by its own deadline), then stop the worker.
    worker_stop.cancel();
    drop(work_tx);
    let grace = config.siem_timeout + Duration::from_secs(5);
    if tokio::time::timeout(grace, worker_task).await.is_err() {
        tracing::warn!("the job worker did not stop in time");
    }
    tracing::info!("agent stopped");
    result
}

/// One connection, from TCP to close. Returns how it ended and how long it
/// was up after `Welcome` (zero if it never got there).
async fn session(
    ctx: &Ctx,
    out_rx: &mut mpsc::Receiver<AgentMsg>,
    work_tx: &mpsc::Sender<WorkerMsg>,
    shutdown: &CancellationToken,
) -> (Ended, Duration) {
    let connecting = async {
        let mut ws = net::connect_ws(
            &ctx.server,
            Arc::clone(&ctx.tls),
            ctx.max_frame_bytes,
            ctx.proxy.as_ref(),
            ctx.connect_timeout,
        )
        .await?;
        let welcome = handshake(ctx, &mut ws).await?;
        anyhow::Ok((ws, welcome))
    };
    let attempt = tokio::select! {
        () = shutdown.cancelled() => return (Ended::Shutdown, Duration::ZERO),
        r = tokio::time::timeout(ctx.connect_timeout, connecting) => r,
    };
    let (mut ws, welcome, nonce) = match attempt {
        Ok(Ok((ws, Handshake::Welcome(w, n)))) => (ws, w, n),
        Ok(Ok((_, Handshake::Ended(e)))) => return (e, Duration::ZERO),
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot connect to the server");
            return (Ended::Reconnect(SessionEnd::Failed), Duration::ZERO);
        }
        Err(_) => {
            tracing::warn!(
                timeout_secs = ctx.connect_timeout.as_secs(),
                "connecting to the server timed out"
            );
            return (Ended::Reconnect(SessionEnd::Failed), Duration::ZERO);
        }
    };

    let up = Instant::now();
    let heartbeat = welcome.heartbeat_secs.max(MIN_HEARTBEAT_SECS);
    let read_deadline = Duration::from_secs(u64::from(heartbeat) * 3);
    let health_every = Duration::from_secs(u64::from(welcome.health_secs.max(MIN_HEALTH_SECS)));
    let max_frame = usize::try_from(welcome.max_frame_bytes)
        .unwrap_or(usize::MAX)
        .min(ctx.max_frame_bytes)
        .max(MIN_FRAME_BYTES);
    let connections = Arc::new(welcome.connections);
    ctx.health_settings.send_replace(Some(HealthSettings {
        every: health_every,
        connections: Arc::clone(&connections),
    }));
    tracing::info!(
        heartbeat_secs = heartbeat,
        health_secs = health_every.as_secs(),
        connections = connections.len(),
        "connected to the server"
    );

    // Anything queued while disconnected is stale: unacknowledged results are
    // resent from the ledger, and the server redelivers unanswered jobs.
    while out_rx.try_recv().is_ok() {}
    if work_tx.send(WorkerMsg::SessionStarted).await.is_err() {
        return (Ended::Shutdown, up.elapsed());
    }

    if !ctx.health.is_empty() {
        tracing::info!(
            reports = ctx.health.len(),
            dropped = ctx.health.dropped(),
            "sending health reports buffered while offline"
        );
    }
    if let Err(e) = flush_health(&ctx.health, &mut ws, max_frame).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot send to the server");
        return (Ended::Reconnect(SessionEnd::Failed), up.elapsed());
    }
    let mut last_frame = Instant::now();

    let ended = loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                close(&mut ws, CloseCode::Away, "agent shutting down").await;
                break Ended::Shutdown;
            }
            () = tokio::time::sleep_until(last_frame + read_deadline) => {
                tracing::warn!(deadline_secs = read_deadline.as_secs(), "no frame from the server within the read deadline; reconnecting");
                close(&mut ws, CloseCode::Away, "read deadline").await;
                break Ended::Reconnect(SessionEnd::Failed);
            }
            frame = ws.next() => {
                last_frame = Instant::now();
                match frame {
                    None => {
                        tracing::info!("the server closed the connection");
                        break Ended::Reconnect(SessionEnd::ServerClosed);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "connection to the server broke");
                        break Ended::Reconnect(SessionEnd::Failed);
                    }
                    Some(Ok(Message::Text(text))) => match decode_server_msg(&text, max_frame) {
                        Ok(msg) => {
                            if let Some(end) = on_message(ctx, &mut ws, work_tx, &nonce, msg).await {
                                break end;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "refusing a malformed frame from the server; closing");
                            close(&mut ws, CloseCode::Invalid, "malformed frame").await;
                            break Ended::Reconnect(SessionEnd::Failed);
                        }
                    },
                    Some(Ok(Message::Binary(b))) => {
                        tracing::warn!(bytes = b.len(), "refusing a binary frame from the server; closing");
                        close(&mut ws, CloseCode::Unsupported, "binary frames are not part of the protocol").await;
                        break Ended::Reconnect(SessionEnd::Failed);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        log_close(frame.as_ref());
                        break Ended::Reconnect(SessionEnd::ServerClosed);
                    }
                    // WebSocket pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                }
            }
            Some(msg) = out_rx.recv() => {
                if let Err(e) = send(&mut ws, &msg, max_frame).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot send to the server");
                    break Ended::Reconnect(SessionEnd::Failed);
                }
            }
            () = ctx.health.ready.notified() => {
                if let Err(e) = flush_health(&ctx.health, &mut ws, max_frame).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot send to the server");
                    break Ended::Reconnect(SessionEnd::Failed);
                }
            }
        }
    };
    (ended, up.elapsed())
}

/// Whether a revocation is signed by the pinned server key for this session.
/// Anything else (a forgery by a TLS-inspecting proxy, a replay from another
/// session) must not stop the agent for good.
fn revocation_is_authentic(ctx: &Ctx, nonce: &[u8; 32], proof: &[u8; 64]) -> bool {
    let bytes = picket_proto::revocation_signing_bytes(nonce, &ctx.agent_id);
    let ok = picket_shared::verify_signature(ctx.server_key.as_bytes(), &bytes, proof).is_ok();
    if !ok {
        tracing::error!("refusing a revocation that does not verify under the pinned server key");
    }
    ok
}

/// Handles one decoded message. `Some` ends the session.
async fn on_message(
    ctx: &Ctx,
    ws: &mut Ws,
    work_tx: &mpsc::Sender<WorkerMsg>,
    nonce: &[u8; 32],
    msg: ServerMsg,
) -> Option<Ended> {
    match msg {
        ServerMsg::Ping { t } => {
            if let Err(e) = send(ws, &AgentMsg::Pong { t }, usize::MAX).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot answer a ping");
                return Some(Ended::Reconnect(SessionEnd::Failed));
            }
        }
        ServerMsg::Job { job } => {
            if work_tx.send(WorkerMsg::Job(Box::new(job))).await.is_err() {
                return Some(Ended::Shutdown);
            }
        }
        ServerMsg::ResultAck { job_id } => {
            if work_tx.send(WorkerMsg::ResultAcked(job_id)).await.is_err() {
                return Some(Ended::Shutdown);
            }
        }
        ServerMsg::RetryAfter { secs } => {
            tracing::info!(secs, "the server asked the agent to come back later");
            close(ws, CloseCode::Normal, "retry after").await;
            return Some(Ended::Reconnect(SessionEnd::RetryAfter(secs)));
        }
        ServerMsg::Revoked { proof } => {
            if !revocation_is_authentic(ctx, nonce, &proof.0) {
                close(ws, CloseCode::Policy, "unauthenticated revocation").await;
                return Some(Ended::Reconnect(SessionEnd::Failed));
            }
            close(ws, CloseCode::Normal, "revoked").await;
            return Some(Ended::Revoked);
        }
        ServerMsg::Challenge(_) | ServerMsg::Welcome(_) => {
            tracing::warn!("unexpected handshake message mid-session; closing");
            close(ws, CloseCode::Protocol, "unexpected handshake message").await;
            return Some(Ended::Reconnect(SessionEnd::Failed));
        }
        // A message added in a later protocol revision: ignore it.
        _ => tracing::debug!(agent_id = %ctx.agent_id, "ignoring an unknown server message"),
    }
    None
}

enum Handshake {
    /// Welcomed; with the session's challenge nonce (revocations are bound to it).
    Welcome(picket_proto::Welcome, [u8; 32]),
    Ended(Ended),
}

/// Challenge → Hello → Welcome (or RetryAfter / Revoked).
async fn handshake(ctx: &Ctx, ws: &mut Ws) -> anyhow::Result<Handshake> {
    let challenge = match next_msg(ws, ctx.max_frame_bytes).await? {
        ServerMsg::Challenge(c) => c,
        ServerMsg::RetryAfter { secs } => {
            return Ok(Handshake::Ended(Ended::Reconnect(SessionEnd::RetryAfter(
                secs,
            ))));
        }
        ServerMsg::Revoked { .. } => {
            // No challenge yet, so nothing a revocation could be bound to: it
            // cannot be authentic. Treat it as a broken connection.
            tracing::warn!("ignoring a revocation sent before the challenge (unauthenticated)");
            close(ws, CloseCode::Protocol, "expected a challenge").await;
            bail!("the server sent an unauthenticated revocation before the challenge");
        }
        _ => {
            close(ws, CloseCode::Protocol, "expected a challenge").await;
            bail!("the server did not start with a challenge");
        }
    };
    if challenge.server_key != ctx.key_id {
        tracing::error!(
            pinned = %ctx.key_id,
            presented = %challenge.server_key,
            "the server presented a signing key that is not the pinned one: possible interception; refusing"
        );
        close(ws, CloseCode::Policy, "server key is not the pinned key").await;
        bail!("server signing key mismatch");
    }
    let signature = ctx.keys.sign(&Hello::signing_bytes(
        &challenge.nonce.0,
        &ctx.agent_id,
        &challenge.server_key,
    ));
    let hello = AgentMsg::Hello(Hello {
        agent_id: ctx.agent_id,
        version: crate::enroll::agent_version()?,
        capabilities: vec![SiemKind::Splunk],
        signature: B64(signature),
    });
    send(ws, &hello, ctx.max_frame_bytes).await?;
    match next_msg(ws, ctx.max_frame_bytes).await? {
        ServerMsg::Welcome(w) if w.agent_id == ctx.agent_id => {
            Ok(Handshake::Welcome(w, challenge.nonce.0))
        }
        ServerMsg::Welcome(_) => {
            close(ws, CloseCode::Policy, "welcome for another agent").await;
            bail!("the server welcomed another agent id");
        }
        ServerMsg::RetryAfter { secs } => {
            close(ws, CloseCode::Normal, "retry after").await;
            Ok(Handshake::Ended(Ended::Reconnect(SessionEnd::RetryAfter(
                secs,
            ))))
        }
        ServerMsg::Revoked { proof } => {
            if !revocation_is_authentic(ctx, &challenge.nonce.0, &proof.0) {
                close(ws, CloseCode::Policy, "unauthenticated revocation").await;
                bail!("the server's revocation does not verify under the pinned key");
            }
            close(ws, CloseCode::Normal, "revoked").await;
            Ok(Handshake::Ended(Ended::Revoked))
        }
        _ => {
            close(ws, CloseCode::Protocol, "expected welcome").await;
            bail!("the server did not answer the hello with a welcome");
        }
    }
}

/// The next protocol message during the handshake (control frames skipped).
async fn next_msg(ws: &mut Ws, max_frame: usize) -> anyhow::Result<ServerMsg> {
    loop {
        match ws.next().await {
            None => bail!("the server closed the connection during the handshake"),
            Some(Err(e)) => return Err(e).context("connection broke during the handshake"),
            Some(Ok(Message::Text(t))) => {
                return decode_server_msg(&t, max_frame)
                    .context("the server sent a malformed handshake frame");
            }
            Some(Ok(Message::Close(f))) => {
                let reason = f.as_ref().map(|f| printable(&f.reason)).unwrap_or_default();
                bail!("the server closed the connection during the handshake: {reason}");
            }
            Some(Ok(Message::Binary(_))) => bail!("the server sent a binary frame"),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, msg: &AgentMsg, max_frame: usize) -> anyhow::Result<()> {
    let text = encode(msg).context("cannot encode a message")?;
    if text.len() > max_frame {
        // Never expected (agent messages are small); drop rather than break the session.
        tracing::error!(
            bytes = text.len(),
            max_frame,
            "dropping an oversized outgoing message"
        );
        return Ok(());
    }
    ws.send(Message::text(text)).await.context("write failed")
}

async fn close(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

fn log_close(frame: Option<&CloseFrame>) {
    match frame {
        Some(f) => tracing::info!(
            code = u16::from(f.code),
            reason = %printable(&f.reason),
            "the server closed the connection"
        ),
        None => tracing::info!("the server closed the connection"),
    }
}

/// A close reason is server text: keep it printable and short before logging it.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(123).collect()
}

/// Sends every waiting health report, oldest first; a report whose send
/// fails goes back into the buffer for the next session.
async fn flush_health(buffer: &HealthBuffer, ws: &mut Ws, max_frame: usize) -> anyhow::Result<()> {
    while let Some(report) = buffer.pop() {
        let msg = AgentMsg::Health(report);
        if let Err(e) = send(ws, &msg, max_frame).await {
            if let AgentMsg::Health(r) = msg {
                buffer.unpop(r);
            }
            return Err(e);
        }
    }
    Ok(())
}
