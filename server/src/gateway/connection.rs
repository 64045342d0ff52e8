//! One agent session.
//!
//! 1. Send `Challenge { nonce, server_key }`.
//! 2. Within [`HELLO_TIMEOUT`], receive `Hello` and verify its Ed25519
//!    signature over `picket-hello-v1 ‖ nonce ‖ agent_id ‖ server key` with the
//!    identity key registered at enrollment. No bearer secret crosses the wire.
//! 3. Register in the [`Registry`](super::Registry) (closing an older session
//!    of the same agent), send `Welcome`, then every unanswered job in `seq` order.
//! 4. Serve: acks, results (each answered with `ResultAck` once durable),
//!    health (to the batch writer), pings every `heartbeat_secs`. A session
//!    silent for three heartbeats is closed.
//!
//! A revoked agent is sent `Revoked` and closed: at the handshake (reconnect
//! refused), when the session starts (the connect update is guarded by
//! `revoked_at IS NULL`, so a connection racing a revocation cannot slip in),
//! and at once when an admin revokes it during the session
//! ([`Command::Revoke`]). A frame over `max_frame_bytes` ends the connection
//! with close code 1009 and a warning naming the limit.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use picket_proto::{AgentMsg, B64, Challenge, ConnectionInfo, Hello, ServerMsg, Welcome};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::registry::Command;
use super::witness;
use crate::AppState;
use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::db::entity::agent;
use crate::service::health::HealthItem;
use crate::service::{connections, jobs, key_rotation};
use crate::time::unix_now;

/// Time an agent has to answer the challenge.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How far ahead of the server's clock a health report's `taken_at` may be.
pub const HEALTH_MAX_FUTURE_SECS: i64 = 300;
/// How old a health report's `taken_at` may be: the agent buffers at most 60
/// reports offline, at most one per `health_secs` (≤ 3600 s), so 60 h covers
/// the longest legitimate backlog.
pub const HEALTH_MAX_AGE_SECS: i64 = 60 * 3600;

/// Close codes (RFC 6455).
const POLICY_VIOLATION: u16 = 1008;
const GOING_AWAY: u16 = 1001;
const INVALID_DATA: u16 = 1007;
const MESSAGE_TOO_BIG: u16 = 1009;

/// Why a session ended, for logs.
enum End {
    Closed,
    Idle,
    Replaced,
    Revoked,
    Shutdown,
    Protocol(&'static str),
    TooBig,
    Internal,
    /// A security refusal mid-session (e.g. a key-rotation proof), close 1008.
    Refused(&'static str),
}

/// Logs a storage failure that ends a session (close 1011), so the cause is
/// never lost behind "internal error".
fn internal(what: &str, e: &dyn std::fmt::Debug) -> End {
    // Debug: an `ApiError::Internal` displays only "internal error"; its
    // Debug form carries the cause chain.
    tracing::error!(error = ?e, "{what} failed; closing the session");
    End::Internal
}

/// Whether a read error is the WebSocket layer refusing a frame or message
/// over the configured size (tungstenite's `Capacity` error; axum exposes it
/// only as text).
fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long")
}

/// Logs and classifies a failed read: an oversized frame is worth a warning
/// (misbehaving or hostile client); anything else is an ordinary disconnect.
fn read_failed(
    e: &axum::Error,
    peer: Option<SocketAddr>,
    agent_id: Option<Uuid>,
    max: usize,
) -> End {
    if is_too_big(e) {
        tracing::warn!(?peer, ?agent_id, max_frame_bytes = max, error = %e, "frame over max_frame_bytes from agent connection; closing it");
        End::TooBig
    } else {
        tracing::debug!(?peer, ?agent_id, error = %e, "agent connection read failed");
        End::Closed
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn send(socket: &mut WebSocket, msg: &ServerMsg) -> bool {
    match picket_proto::encode(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

fn audit_denied(
    peer: Option<SocketAddr>,
    agent_id: Option<Uuid>,
    tenant: Option<Uuid>,
    reason: &'static str,
) -> Event {
    Event {
        tenant_id: tenant,
        actor: agent_id.map_or(Actor::Anonymous, Actor::Agent),
        action: "agent.connect",
        resource_type: "agent",
        resource_id: agent_id.map(|a| a.to_string()),
        source: Source::Agent,
        client_ip: peer.map(|p| p.ip().to_string()),
        user_agent: None,
        outcome: Outcome::Denied,
        details: serde_json::json!({ "reason": reason }),
    }
}

/// A revocation signed for this session (see `picket_proto::revocation_signing_bytes`).
fn revoked(state: &AppState, nonce: &[u8; 32], agent_id: Uuid) -> ServerMsg {
    let bytes = picket_proto::revocation_signing_bytes(nonce, &agent_id);
    ServerMsg::Revoked {
        proof: B64(state.keys.signing.sign(&bytes)),
    }
}

/// Runs a session to its end.
pub async fn run(state: AppState, mut socket: WebSocket, peer: Option<SocketAddr>) {
    let max = usize::try_from(state.config.max_frame_bytes)
        .unwrap_or(picket_proto::DEFAULT_MAX_FRAME_BYTES);
    let Ok(nonce) = picket_shared::random::random_array::<32>() else {
        close(&mut socket, 1011, "internal error").await;
        return;
    };
    if !send(
        &mut socket,
        &ServerMsg::Challenge(Challenge {
            nonce: B64(nonce),
            server_key: state.keys.fingerprint,
            key_chain: state.keys.chain.clone(),
        }),
    )
    .await
    {
        return;
    }
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => match picket_proto::decode_agent_msg(&t, max) {
            Ok(AgentMsg::Hello(h)) => h,
            Ok(_) => return reject(&state, &mut socket, peer, None, None, "expected hello").await,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "bad hello frame");
                return reject(&state, &mut socket, peer, None, None, "malformed hello").await;
            }
        },
        Ok(Some(Err(e))) => {
            if let End::TooBig = read_failed(&e, peer, None, max) {
                let _ = Box::pin(audit::record(
                    &state.db,
                    audit_denied(peer, None, None, "frame over max_frame_bytes"),
                ))
                .await;
                close(&mut socket, MESSAGE_TOO_BIG, "frame over max_frame_bytes").await;
            }
            return;
        }
        Ok(_) => {
            return reject(
                &state,
                &mut socket,
                peer,
                None,
                None,
                "expected a text hello frame",
            )
            .await;
        }
        Err(_) => return reject(&state, &mut socket, peer, None, None, "hello timeout").await,
    };
    // Held through the session's storage work at start (released in
    // `session` before its first write): see `SESSION_STORAGE_CONCURRENCY`.
    let Ok(start_permit) = state.session_gate.acquire().await else {
        close(&mut socket, GOING_AWAY, "server shutting down").await;
        return;
    };
    let agent_row = match Box::pin(agent::Entity::find_by_id(hello.agent_id).one(&state.db)).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return reject(
                &state,
                &mut socket,
                peer,
                Some(hello.agent_id),
                None,
                "unknown agent",
            )
            .await;
        }
        Err(e) => {
            tracing::error!(error = %e, "agent lookup failed");
            close(&mut socket, 1011, "internal error").await;
            return;
        }
    };
    if !verify_hello(&hello, &nonce, &state, &agent_row) {
        let reason = if hello_used_superseded_key(&hello, &nonce, &state, &agent_row) {
            "agent key superseded by rotation"
        } else {
            "bad signature"
        };
        return reject(
            &state,
            &mut socket,
            peer,
            Some(agent_row.id),
            Some(agent_row.tenant_id),
            reason,
        )
        .await;
    }
    if agent_row.revoked_at.is_some() {
        let _ = send(&mut socket, &revoked(&state, &nonce, agent_row.id)).await;
        return reject(
            &state,
            &mut socket,
            peer,
            Some(agent_row.id),
            Some(agent_row.tenant_id),
            "agent revoked",
        )
        .await;
    }
    let end = session(
        &state,
        &mut socket,
        peer,
        &agent_row,
        max,
        &nonce,
        start_permit,
    )
    .await;
    let reason = match end {
        End::Closed => "closed by agent",
        End::Idle => "idle timeout",
        End::Replaced => "replaced by a newer connection",
        End::Revoked => "agent revoked",
        End::Shutdown => "server shutting down",
        End::Protocol(r) => r,
        End::TooBig => "frame over max_frame_bytes",
        End::Internal => "internal error",
        End::Refused(r) => r,
    };
    match end {
        End::Idle => close(&mut socket, GOING_AWAY, "idle timeout").await,
        End::Replaced => {
            close(
                &mut socket,
                POLICY_VIOLATION,
                "replaced by a newer connection",
            )
            .await
        }
        End::Revoked => {
            let _ = send(&mut socket, &revoked(&state, &nonce, agent_row.id)).await;
            close(&mut socket, POLICY_VIOLATION, "agent revoked").await;
        }
        End::Shutdown => close(&mut socket, GOING_AWAY, "server shutting down").await,
        End::Protocol(r) => close(&mut socket, INVALID_DATA, r).await,
        End::TooBig => close(&mut socket, MESSAGE_TOO_BIG, "frame over max_frame_bytes").await,
        End::Internal => close(&mut socket, 1011, "internal error").await,
        End::Refused(r) => close(&mut socket, POLICY_VIOLATION, r).await,
        End::Closed => {}
    }
    // Boxed like the session's storage calls, so the task's size is set by
    // the idle loop (see `session`).
    Box::pin(record_disconnect(&state, &agent_row, reason)).await;
}

/// Records the end of a session: last seen, the replica's session row (unless
/// a newer session of the agent on this replica owns it), the audit event.
/// Failures are logged: the session is over either way.
async fn record_disconnect(state: &AppState, agent_row: &agent::Model, reason: &str) {
    // Waits its turn, so a fleet dropping at once loses no audit event to
    // the pool's acquire timeout. Closed only at shutdown: record anyway.
    let _permit = state.session_gate.acquire().await.ok();
    if let Err(e) = agent::Entity::update_many()
        .col_expr(agent::Column::LastSeenAt, Expr::value(unix_now()))
        .filter(agent::Column::Id.eq(agent_row.id))
        .exec(&state.db)
        .await
    {
        tracing::warn!(agent_id = %agent_row.id, error = %e, "recording the agent's last-seen time failed");
    }
    if !state.registry.is_connected(agent_row.id)
        && let Err(e) = super::cluster::session_ended(state, agent_row.id).await
    {
        tracing::warn!(agent_id = %agent_row.id, error = ?e, "removing the agent's session row failed; the replica sweep expires it");
    }
    if let Err(e) = audit::record(
        &state.db,
        Event::agent(
            agent_row.tenant_id,
            agent_row.id,
            "agent.disconnect",
            "agent",
            agent_row.id,
        )
        .details(serde_json::json!({ "reason": reason })),
    )
    .await
    {
        tracing::error!(agent_id = %agent_row.id, error = ?e, "recording agent.disconnect in the audit log failed");
    }
    tracing::info!(agent_id = %agent_row.id, reason, "agent disconnected");
}

fn verify_hello(
    hello: &Hello,
    nonce: &[u8; 32],
    state: &AppState,
    agent_row: &agent::Model,
) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(agent_row.ed25519_public.as_slice()) else {
        return false;
    };
    let msg = Hello::signing_bytes(nonce, &hello.agent_id, &state.keys.fingerprint);
    picket_shared::keys::verify_signature(&pk, &msg, &hello.signature.0).is_ok()
}

/// Whether the `Hello` verifies under the identity key the agent replaced in
/// its last key rotation: then the refusal can say so precisely.
fn hello_used_superseded_key(
    hello: &Hello,
    nonce: &[u8; 32],
    state: &AppState,
    agent_row: &agent::Model,
) -> bool {
    let Some(Ok(pk)) = agent_row
        .previous_ed25519_public
        .as_deref()
        .map(<[u8; 32]>::try_from)
    else {
        return false;
    };
    let msg = Hello::signing_bytes(nonce, &hello.agent_id, &state.keys.fingerprint);
    picket_shared::keys::verify_signature(&pk, &msg, &hello.signature.0).is_ok()
}

async fn reject(
    state: &AppState,
    socket: &mut WebSocket,
    peer: Option<SocketAddr>,
    agent_id: Option<Uuid>,
    tenant: Option<Uuid>,
    reason: &'static str,
) {
    tracing::warn!(?peer, ?agent_id, reason, "agent connection refused");
    let _ = Box::pin(audit::record(
        &state.db,
        audit_denied(peer, agent_id, tenant, reason),
    ))
    .await;
    close(socket, POLICY_VIOLATION, reason).await;
}

async fn session(
    state: &AppState,
    socket: &mut WebSocket,
    peer: Option<SocketAddr>,
    a: &agent::Model,
    max: usize,
    nonce: &[u8; 32],
    start_permit: tokio::sync::SemaphorePermit<'_>,
) -> End {
    // Storage calls are boxed (`Box::pin`): an async fn's task is as large as
    // its largest await point, and sea-orm's query futures are kilobytes. A
    // session spends its life idle in the loop below, so only the loop's own
    // state should size every connected agent's task.
    let (tx, mut rx) = mpsc::channel(4);
    let _registration = state.registry.register(a.id, tx);
    // Registered first, then checked: a revocation committed before this
    // update is seen here; one committed after it finds the registration.
    let connected = async {
        let res = agent::Entity::update_many()
            .col_expr(agent::Column::LastSeenAt, Expr::value(unix_now()))
            .filter(agent::Column::Id.eq(a.id))
            .filter(agent::Column::RevokedAt.is_null())
            .exec(&state.db)
            .await?;
        if res.rows_affected != 1 {
            return Ok(false);
        }
        let mut ev = Event::agent(a.tenant_id, a.id, "agent.connect", "agent", a.id);
        ev.client_ip = peer.map(|p| p.ip().to_string());
        audit::record(&state.db, ev).await.map(|()| true)
    };
    match Box::pin(connected).await {
        Ok(true) => {
            if let Err(e) = Box::pin(super::cluster::session_started(state, a.id)).await {
                return internal("recording which replica holds the session", &e);
            }
        }
        Ok(false) => return End::Revoked,
        Err(e) => {
            tracing::error!(error = ?e, "recording agent connect failed");
            return End::Internal;
        }
    }
    let conns = match Box::pin(connections::for_agent(&state.db, a.tenant_id, a.id)).await {
        Ok(c) => c,
        Err(e) => return internal("loading the agent's connections", &e),
    };
    let welcome = Welcome {
        agent_id: a.id,
        heartbeat_secs: state.config.heartbeat_secs,
        health_secs: state.config.health_secs,
        max_frame_bytes: state.config.max_frame_bytes,
        connections: conns
            .into_iter()
            .filter_map(|c| {
                Some(ConnectionInfo {
                    kind: connections::kind_of(&c)?,
                    connection_id: c.id,
                    name: c.name,
                    base_url: c.base_url,
                })
            })
            .collect(),
    };
    // Released before the first write: a peer that stops reading must not
    // hold a permit (writes wait on its socket).
    drop(start_permit);
    if !send(socket, &ServerMsg::Welcome(welcome)).await {
        return End::Closed;
    }
    tracing::info!(agent_id = %a.id, ?peer, "agent connected");
    if a.rotate_requested_at.is_some() && !send(socket, &ServerMsg::RequestKeyRotation).await {
        return End::Closed;
    }

    let heartbeat = Duration::from_secs(u64::from(state.config.heartbeat_secs));
    let idle_limit = heartbeat * 3;
    let mut deadline = Instant::now() + idle_limit;
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_counter: u64 = 0;
    // Highest seq written on this connection; a wake sends only newer jobs.
    let mut sent_seq: i64 = 0;
    if let Err(end) = Box::pin(deliver(state, socket, a.id, &mut sent_seq)).await {
        return end;
    }
    let mut checkpoints = state.audit.subscribe();
    if let Some(m) = Box::pin(witness::initial(state, a.tenant_id)).await
        && !send(socket, &m).await
    {
        return End::Closed;
    }
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return End::Shutdown,
            () = tokio::time::sleep_until(deadline) => return End::Idle,
            cmd = rx.recv() => match cmd {
                Some(Command::Wake) => {
                    if let Err(end) = Box::pin(deliver(state, socket, a.id, &mut sent_seq)).await {
                        return end;
                    }
                }
                Some(Command::Revoke) => return End::Revoked,
                Some(Command::RequestKeyRotation) => {
                    if !send(socket, &ServerMsg::RequestKeyRotation).await {
                        return End::Closed;
                    }
                }
                Some(Command::Replaced) | None => return End::Replaced,
            },
            c = checkpoints.recv() => {
                // A lagged receiver only missed older checkpoints; the next one supersedes them.
                if let Ok(c) = c
                    && let Some(m) = witness::checkpoint_msg(&c, a.tenant_id)
                    && !send(socket, &m).await
                {
                    return End::Closed;
                }
            }
            _ = ping.tick() => {
                ping_counter += 1;
                if !send(socket, &ServerMsg::Ping { t: ping_counter }).await {
                    return End::Closed;
                }
            }
            frame = socket.recv() => {
                deadline = Instant::now() + idle_limit;
                let text = match frame {
                    None | Some(Ok(Message::Close(_))) => return End::Closed,
                    Some(Err(e)) => return read_failed(&e, peer, Some(a.id), max),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => return End::Protocol("binary frames are not part of the protocol"),
                    Some(Ok(Message::Text(t))) => t,
                };
                let msg = match picket_proto::decode_agent_msg(&text, max) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(agent_id = %a.id, error = %e, "refusing malformed frame from agent");
                        return End::Protocol("malformed frame");
                    }
                };
                if let Err(end) = Box::pin(handle(state, socket, a, msg, nonce)).await {
                    return end;
                }
            }
        }
    }
}

async fn deliver(
    state: &AppState,
    socket: &mut WebSocket,
    agent_id: Uuid,
    sent_seq: &mut i64,
) -> Result<(), End> {
    let pending = {
        // Gated like a session's start (a fan-out wakes every agent at
        // once), and released before any write to the socket.
        let _permit = state.session_gate.acquire().await.ok();
        jobs::undelivered(&state.db, agent_id, *sent_seq)
            .await
            .map_err(|e| internal("listing undelivered jobs", &e))?
    };
    for (row, sealed) in pending {
        if !send(socket, &ServerMsg::Job { job: sealed }).await {
            return Err(End::Closed);
        }
        *sent_seq = row.seq;
        jobs::mark_sent(&state.db, row.id)
            .await
            .map_err(|e| internal("marking a job sent", &e))?;
        tracing::debug!(%agent_id, job_id = %row.id, seq = row.seq, "job sent");
    }
    Ok(())
}

async fn handle(
    state: &AppState,
    socket: &mut WebSocket,
    a: &agent::Model,
    msg: AgentMsg,
    nonce: &[u8; 32],
) -> Result<(), End> {
    match msg {
        AgentMsg::Hello(_) => return Err(End::Protocol("hello after handshake")),
        AgentMsg::Pong { .. } => {}
        AgentMsg::JobAck { job_id } => {
            let first = jobs::mark_acked(&state.db, a.tenant_id, a.id, job_id)
                .await
                .map_err(|e| internal("recording a job ack", &e))?;
            if first {
                state.metrics.job_acked(job_id);
            }
        }
        AgentMsg::JobResult(r) => {
            let ours = jobs::record_result(&state.db, a.tenant_id, a.id, &r)
                .await
                .map_err(|e| internal("recording a job result", &e))?;
            if ours {
                state
                    .metrics
                    .job_result(r.outcome.as_str(), r.error_class.map(|c| c.as_str()));
                tracing::info!(agent_id = %a.id, job_id = %r.job_id, outcome = r.outcome.as_str(), error_class = r.error_class.map(|c| c.as_str()), "job result");
                if !send(socket, &ServerMsg::ResultAck { job_id: r.job_id }).await {
                    return Err(End::Closed);
                }
            } else {
                // E.g. a job sealed to another agent delivered on this
                // session: the agent refused it (`wrong_agent`); keep a trace.
                tracing::warn!(agent_id = %a.id, job_id = %r.job_id, error_class = r.error_class.map(|c| c.as_str()), "result for a job this agent does not have");
                audit::record(
                    &state.db,
                    Event::agent(a.tenant_id, a.id, "job.result_foreign", "job", r.job_id)
                        .outcome(Outcome::Denied)
                        .details(serde_json::json!({ "outcome": r.outcome.as_str(), "error_class": r.error_class.map(|c| c.as_str()) })),
                )
                .await
                .map_err(|e| internal("recording a foreign result", &e))?;
            }
        }
        AgentMsg::Health(report) => {
            if let Some(alarm) = report.audit_alarm {
                witness::alarm(state, a, alarm).await;
            }
            let now = unix_now();
            if let Err(e) = report.check_taken_at(now, HEALTH_MAX_FUTURE_SECS, HEALTH_MAX_AGE_SECS)
            {
                // A bad clock on the agent must not poison the fleet view or
                // end the session: the report is dropped, the next may be fine.
                tracing::warn!(agent_id = %a.id, taken_at = report.taken_at, now, error = %e, "dropping a health report with an implausible taken_at");
                return Ok(());
            }
            state.health.submit(HealthItem {
                tenant_id: a.tenant_id,
                agent_id: a.id,
                received_at: now,
                report,
            });
        }
        AgentMsg::RotateKeys(r) => {
            match key_rotation::rotate(&state.db, &state.keys.signing, a.id, nonce, &r).await {
                Ok(Ok(confirmed)) => {
                    tracing::info!(agent_id = %a.id, "agent keys rotated");
                    if !send(socket, &ServerMsg::KeysRotated(confirmed)).await {
                        return Err(End::Closed);
                    }
                }
                Ok(Err(why)) => {
                    tracing::warn!(agent_id = %a.id, reason = why.as_str(), "agent key rotation refused");
                    return Err(End::Refused(why.as_str()));
                }
                Err(e) => {
                    tracing::error!(agent_id = %a.id, error = %e, "storing rotated agent keys failed");
                    return Err(End::Internal);
                }
            }
        }
        AgentMsg::AuditConsistencyRequest { from, to } => {
            let m = witness::answer(state, a.tenant_id, from, to).await;
            if !send(socket, &m).await {
                return Err(End::Closed);
            }
        }
        _ => return Err(End::Protocol("unsupported message")),
    }
    Ok(())
}
