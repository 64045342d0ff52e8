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
//! Handshake: the server's `Challenge` names its signing key; the agent
//! answers `Hello` signed over `Hello::signing_bytes(nonce, agent_id,
//! server_key)`; the server answers `Welcome` with the session settings.
//! The challenge's key must be pinned, or endorsed by a pinned key through
//! the key chain the challenge carries (a server rotation the agent missed,
//! see `keyring.rs`); else the agent closes without answering and logs an
//! error: possible interception. Nothing received from the server is ever logged verbatim.
//!
//! Key rotation of the agent's own keys (`identity.rs`): pending keys are
//! re-read at every connect and looked for every 2 s while connected, sent
//! as `RotateKeys`, and promoted on a signed `KeysRotated`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use futures_util::{SinkExt, StreamExt};
use picket_proto::{
    AgentMsg, B64, Hello, KeysRotated, RotateKeys, ServerMsg, SiemKind, decode_server_msg, encode,
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
use crate::identity::{self, Identity};
use crate::jobs::{Worker, WorkerMsg};
use crate::journal::Journal;
use crate::keyring::Keyring;
use crate::ledger::Ledger;
use crate::net::{self, Ws};
use crate::policy::Policy;
use crate::state::StateDir;
use crate::witness::Witness;

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

/// Everything a session needs, for the life of the process.
struct Ctx {
    agent_id: Uuid,
    state: StateDir,
    /// The server signing keys the agent trusts (grows when the server rotates).
    keyring: Arc<Mutex<Keyring>>,
    /// The agent's own keys, re-read from disk at every connect (a
    /// `picket-agent rotate-keys` may have written new pending keys).
    identity: Arc<Mutex<Identity>>,
    /// Say `Hello` with the pending keys instead of the current ones: set
    /// after the server refused the current identity while a rotation was
    /// pending (its confirmation was lost), cleared after a refusal of the
    /// pending one. See `identity.rs`.
    hello_with_pending: AtomicBool,
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
    /// Witness of the tenant's audit log (checkpoints pushed by the server).
    witness: Mutex<Witness>,
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
    let identity = Arc::new(Mutex::new(Identity::load(&state)?));
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
    let keyring = Arc::new(Mutex::new(Keyring::load(state.path(), &enrollment)?));
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
        identity: Arc::clone(&identity),
        keyring: Arc::clone(&keyring),
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
        agent_id: enrollment.agent_id,
        state: state.clone(),
        keyring: Arc::clone(&keyring),
        identity,
        hello_with_pending: AtomicBool::new(false),
        server,
        tls,
        proxy: config.proxy.clone(),
        connect_timeout: config.connect_timeout,
        max_frame_bytes: config.max_frame_bytes,
        health: Arc::clone(&health),
        health_settings: settings_tx,
        witness: Mutex::new(Witness::open(
            state.path(),
            {
                let ring = Arc::clone(&keyring);
                Box::new(move || {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    lock(&ring).valid_keys(now)
                })
            },
            enrollment.tenant_id,
            Arc::clone(&counters),
        )?),
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
    // Keys are re-read at every connect: `picket-agent rotate-keys` may have
    // written a pending rotation while this process runs.
    match Identity::load(&ctx.state) {
        Ok(id) => *lock(&ctx.identity) = id,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot re-read the agent keys; using the ones in memory")
        }
    }
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
    let (mut ws, welcome, sess) = match attempt {
        Ok(Ok((ws, Handshake::Welcome(b)))) => {
            let (w, sess) = *b;
            (ws, w, sess)
        }
        Ok(Ok((_, Handshake::Ended(e)))) => return (e, Duration::ZERO),
        Ok(Err(e)) => {
            if let Some(r) = e.downcast_ref::<IdentityRefused>() {
                switch_hello_identity(ctx, r);
            }
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
    // A rotation left pending (written by the CLI, or interrupted): prove it now.
    if let Err(e) = send_pending_rotation(ctx, &mut ws, &sess, false).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot send to the server");
        return (Ended::Reconnect(SessionEnd::Failed), up.elapsed());
    }
    let mut last_frame = Instant::now();
    let mut rotation_check = tokio::time::interval(ROTATION_CHECK);
    rotation_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

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
                            if let Some(end) = on_message(ctx, &mut ws, work_tx, &sess, msg).await {
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
            _ = rotation_check.tick() => {
                if let Err(e) = pick_up_cli_rotation(ctx, &mut ws, &sess).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot send to the server");
                    break Ended::Reconnect(SessionEnd::Failed);
                }
            }
        }
    };
    (ended, up.elapsed())
}

/// How often a connected agent looks for a rotation written by `picket-agent rotate-keys`.
const ROTATION_CHECK: Duration = Duration::from_secs(2);

/// What a session knows about the handshake that opened it.
struct SessionKeys {
    /// This session's challenge nonce: revocations and key confirmations are bound to it.
    nonce: [u8; 32],
    /// The server key named by the challenge (trusted): they must verify under it.
    server_key: VerifyingKey,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The server refused the identity the agent said `Hello` with (close 1008
/// during the handshake), with its reason.
#[derive(Debug, thiserror::Error)]
#[error("the server refused this agent's identity: {0}")]
struct IdentityRefused(String);

/// After the server refused an identity while a rotation is pending, the
/// next attempt uses the other one (see `identity.rs`).
fn switch_hello_identity(ctx: &Ctx, refusal: &IdentityRefused) {
    if lock(&ctx.identity).pending.is_none() {
        return;
    }
    let was = ctx.hello_with_pending.load(Ordering::Relaxed);
    let superseded = refusal.0.contains("superseded");
    let next = if superseded { true } else { !was };
    if next != was {
        tracing::warn!(
            reason = %refusal.0,
            "the server refused the {} identity while a key rotation is pending; trying the {} one",
            if was { "pending" } else { "current" },
            if next { "pending" } else { "current" },
        );
    }
    ctx.hello_with_pending.store(next, Ordering::Relaxed);
}

/// Whether a revocation is signed by this session's (trusted) server key for
/// this session. Anything else (a forgery by a TLS-inspecting proxy, a replay
/// from another session) must not stop the agent for good.
fn revocation_is_authentic(ctx: &Ctx, sess: &SessionKeys, proof: &[u8; 64]) -> bool {
    let bytes = picket_proto::revocation_signing_bytes(&sess.nonce, &ctx.agent_id);
    let ok = picket_shared::verify_signature(sess.server_key.as_bytes(), &bytes, proof).is_ok();
    if !ok {
        tracing::error!("refusing a revocation that does not verify under the pinned server key");
    }
    ok
}

/// Sends `RotateKeys` for the pending keys, if any (or generates them first
/// when `create` is set: an admin asked for a rotation).
async fn send_pending_rotation(
    ctx: &Ctx,
    ws: &mut Ws,
    sess: &SessionKeys,
    create: bool,
) -> anyhow::Result<()> {
    let has_pending = lock(&ctx.identity).pending.is_some();
    if !has_pending {
        if !create {
            return Ok(());
        }
        let dir = ctx.state.path().to_owned();
        let new = tokio::task::spawn_blocking(move || identity::begin(&dir))
            .await
            .context("key generation task failed")??;
        tracing::info!(ed25519_public = %hex::encode(new.ed25519_public()), "the server asked for a key rotation; new keys written");
        lock(&ctx.identity).pending = Some(new);
    }
    let msg = {
        let id = lock(&ctx.identity);
        let Some(new) = id.pending.as_ref() else {
            return Ok(());
        };
        let (x, ed) = (new.x25519_public(), new.ed25519_public());
        let bytes = RotateKeys::signing_bytes(&sess.nonce, &ctx.agent_id, &x, &ed);
        AgentMsg::RotateKeys(RotateKeys {
            x25519_public: B64(x),
            ed25519_public: B64(ed),
            old_sig: B64(id.current.sign(&bytes)),
            new_sig: B64(new.sign(&bytes)),
        })
    };
    tracing::info!("sending new keys to the server (key rotation)");
    send(ws, &msg, usize::MAX).await
}

/// A rotation written by the CLI while connected: noticed by the file.
async fn pick_up_cli_rotation(ctx: &Ctx, ws: &mut Ws, sess: &SessionKeys) -> anyhow::Result<()> {
    if lock(&ctx.identity).pending.is_some() || !identity::is_pending(ctx.state.path()) {
        return Ok(());
    }
    match Identity::load(&ctx.state) {
        Ok(id) => *lock(&ctx.identity) = id,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot read the pending key rotation");
            return Ok(());
        }
    }
    send_pending_rotation(ctx, ws, sess, false).await
}

/// The server confirmed new keys: check its signature, then promote them on disk.
async fn on_keys_rotated(ctx: &Ctx, sess: &SessionKeys, k: &KeysRotated) {
    let (x, ed) = (k.x25519_public.0, k.ed25519_public.0);
    let bytes = KeysRotated::signing_bytes(&sess.nonce, &ctx.agent_id, &x, &ed);
    if picket_shared::verify_signature(sess.server_key.as_bytes(), &bytes, &k.proof.0).is_err() {
        tracing::error!(
            "ignoring a key-rotation confirmation that does not verify under the server key"
        );
        return;
    }
    let (old, new) = {
        let id = lock(&ctx.identity);
        match &id.pending {
            Some(p) if p.x25519_public() == x && p.ed25519_public() == ed => (
                AgentKeys::from_bytes(
                    &id.current.x25519_secret_bytes(),
                    &id.current.ed25519_seed(),
                ),
                AgentKeys::from_bytes(&p.x25519_secret_bytes(), &p.ed25519_seed()),
            ),
            _ => {
                tracing::warn!(
                    "ignoring a key-rotation confirmation for keys that are not pending"
                );
                return;
            }
        }
    };
    let dir = ctx.state.path().to_owned();
    let promoted = tokio::task::spawn_blocking(move || identity::promote(&dir, &old, &new)).await;
    match promoted {
        Ok(Ok(())) => {
            match Identity::load(&ctx.state) {
                Ok(id) => *lock(&ctx.identity) = id,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot re-read the rotated keys")
                }
            }
            ctx.hello_with_pending.store(false, Ordering::Relaxed);
            tracing::info!(ed25519_public = %hex::encode(ed), "key rotation complete: the server confirmed the new keys");
        }
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "cannot promote the new keys; the rotation completes at the next connection")
        }
        Err(e) => tracing::error!(error = %e, "key promotion task failed"),
    }
}

/// Handles one decoded message. `Some` ends the session.
async fn on_message(
    ctx: &Ctx,
    ws: &mut Ws,
    work_tx: &mpsc::Sender<WorkerMsg>,
    sess: &SessionKeys,
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
            if !revocation_is_authentic(ctx, sess, &proof.0) {
                close(ws, CloseCode::Policy, "unauthenticated revocation").await;
                return Some(Ended::Reconnect(SessionEnd::Failed));
            }
            close(ws, CloseCode::Normal, "revoked").await;
            return Some(Ended::Revoked);
        }
        ServerMsg::RequestKeyRotation => {
            if let Err(e) = send_pending_rotation(ctx, ws, sess, true).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot start the requested key rotation");
                return Some(Ended::Reconnect(SessionEnd::Failed));
            }
        }
        ServerMsg::KeysRotated(k) => on_keys_rotated(ctx, sess, &k).await,
        ServerMsg::AuditCheckpoint(c) => {
            let request = ctx
                .witness
                .lock()
                .ok()
                .and_then(|mut w| w.on_checkpoint(&c.note));
            if let Some(req) = request
                && let Err(e) = send(ws, &req, usize::MAX).await
            {
                tracing::warn!(error = %format!("{e:#}"), "cannot ask for an audit consistency proof");
                return Some(Ended::Reconnect(SessionEnd::Failed));
            }
        }
        ServerMsg::AuditConsistency(c) => {
            if let Ok(mut w) = ctx.witness.lock() {
                w.on_consistency(&c);
            }
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
    /// Welcomed; with what the session needs of the handshake.
    Welcome(Box<(picket_proto::Welcome, SessionKeys)>),
    Ended(Ended),
}

/// Challenge → Hello → Welcome (or RetryAfter / Revoked).
///
/// The challenge names the server's current signing key and carries its key
/// chain. A key the agent does not pin yet (the server rotated while the
/// agent was away) is accepted only if the chain leads to it from a pinned
/// key; otherwise the agent closes (1008) without answering and logs a
/// possible interception.
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
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (server_key, retired, rotated) = {
        let mut ring = lock(&ctx.keyring);
        let was_valid = ring.is_valid(&challenge.server_key, now);
        if ring.walk(&challenge.key_chain)
            && let Err(e) = ring.save(ctx.state.path())
        {
            tracing::error!(error = %format!("{e:#}"), "cannot persist the server's new signing key");
        }
        (
            ring.valid_key(&challenge.server_key, now),
            ring.knows(&challenge.server_key),
            !was_valid,
        )
    };
    let Some(server_key) = server_key else {
        if retired {
            tracing::error!(presented = %challenge.server_key, "the server presented a signing key whose overlap window has closed; refusing");
            close(ws, CloseCode::Policy, "server key is retired").await;
            bail!("server signing key is retired");
        }
        tracing::error!(
            presented = %challenge.server_key,
            "the server presented a signing key that is not pinned and not endorsed by a pinned key: possible interception; refusing"
        );
        close(ws, CloseCode::Policy, "server key is not the pinned key").await;
        bail!("server signing key mismatch");
    };
    if rotated {
        tracing::info!(key_id = %challenge.server_key, "now using the server's rotated signing key");
    }
    let with_pending = ctx.hello_with_pending.load(Ordering::Relaxed);
    let signature = {
        let id = lock(&ctx.identity);
        let bytes = Hello::signing_bytes(&challenge.nonce.0, &ctx.agent_id, &challenge.server_key);
        match (&id.pending, with_pending) {
            (Some(p), true) => p.sign(&bytes),
            _ => id.current.sign(&bytes),
        }
    };
    let hello = AgentMsg::Hello(Hello {
        agent_id: ctx.agent_id,
        version: crate::enroll::agent_version()?,
        capabilities: vec![SiemKind::Splunk, SiemKind::Sentinel, SiemKind::Elastic],
        signature: B64(signature),
    });
    send(ws, &hello, ctx.max_frame_bytes).await?;
    let answer = match next_msg(ws, ctx.max_frame_bytes).await {
        Ok(m) => m,
        Err(e) => {
            // A refusal of our identity comes as a close frame with a reason.
            let text = format!("{e:#}");
            if text.contains("superseded") || text.contains("bad signature") {
                return Err(anyhow::Error::new(IdentityRefused(text)));
            }
            return Err(e);
        }
    };
    match answer {
        ServerMsg::Welcome(w) if w.agent_id == ctx.agent_id => Ok(Handshake::Welcome(Box::new((
            w,
            SessionKeys {
                nonce: challenge.nonce.0,
                server_key,
            },
        )))),
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
            let sess = SessionKeys {
                nonce: challenge.nonce.0,
                server_key,
            };
            if !revocation_is_authentic(ctx, &sess, &proof.0) {
                close(ws, CloseCode::Policy, "unauthenticated revocation").await;
                bail!("the server's revocation does not verify under the pinned key");
            }
            close(ws, CloseCode::Normal, "revoked").await;
            Ok(Handshake::Ended(Ended::Revoked))
        }
        other => {
            close(ws, CloseCode::Protocol, "expected welcome").await;
            // Only the variant's name: the message itself may be large.
            let dbg = format!("{other:?}");
            let kind = dbg.split(['(', ' ', '{']).next().unwrap_or_default();
            bail!("the server did not answer the hello with a welcome (it sent {kind})");
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
