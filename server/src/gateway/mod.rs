//! The agent gateway: `GET /v1/agent/connect` upgrades to a WebSocket on which
//! the server challenges the agent, then delivers its sealed jobs and receives
//! acknowledgements, results and health.
//!
//! Idle connections are cheap by design: 4 KiB read buffers, no write
//! buffering, no per-connection database polling. A connection task sleeps
//! until a frame arrives, its heartbeat timer fires, or the [`Registry`] wakes
//! it because a job was put in its agent's outbox.
//!
//! New connections pass [`Admission`] first (a token bucket); over the limit
//! the socket is answered `RetryAfter` and closed before any database work.
//! Frames larger than `agents.max_frame_bytes` are refused by the WebSocket
//! layer itself (message and frame size limits), which ends that connection
//! only; the session logs it as `frame over max_frame_bytes`.
//!
//! # Layout
//! - [`admission`]: the connection-admission rate limit and its counters.
//! - [`registry`]: which agent is connected where, and how to wake or revoke it.
//! - [`cluster`]: replicas on one PostgreSQL: `LISTEN/NOTIFY` between them and the sweep.
//! - [`connection`]: one agent session, from challenge to close.
//! - [`witness`]: audit checkpoints pushed to agents and consistency proofs for them.

pub mod admission;
pub mod cluster;
pub mod connection;
pub mod registry;
pub mod witness;

pub use admission::Admission;
pub use registry::Registry;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use picket_proto::ServerMsg;

use crate::AppState;
use crate::listener::ClientAddr;

/// Close code telling a refused client to come back later (RFC 6455 registry: "Try Again Later").
const TRY_AGAIN_LATER: u16 = 1013;

/// Agent sessions doing storage work at once as they start (agent lookup,
/// connect record, connections), list their undelivered jobs, or end
/// (disconnect record); never held across a write to the socket, so a peer
/// that stops reading holds no permit. Admission lets a returning fleet in at its rate whatever the
/// database's speed; without this bound, a slow moment (SQLite has one
/// connection) left thousands of sessions waiting on the pool, the waits
/// passed its 10 s acquire timeout and the sessions closed with 1011
/// (6,639 of 10,000 in a storm on a loaded machine). With it, sessions
/// queue here, in memory and in order, and the pool's queue stays short
/// for the API too.
pub const SESSION_STORAGE_CONCURRENCY: usize = 16;

/// Read buffer per connection. Small on purpose: most connections are idle,
/// and tungstenite's default (128 KiB) would cost gigabytes at fleet scale.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Upgrades the request and hands the socket to a connection task.
pub async fn connect(
    State(state): State<AppState>,
    peer: ClientAddr,
    ws: WebSocketUpgrade,
) -> Response {
    let max = usize::try_from(state.config.max_frame_bytes)
        .unwrap_or(picket_proto::DEFAULT_MAX_FRAME_BYTES);
    let peer = peer.0;
    let ws = ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2))
        .max_message_size(max)
        .max_frame_size(max);
    match state.admission.try_admit() {
        Ok(()) => ws.on_upgrade(move |socket| connection::run(state, socket, peer)),
        Err(secs) => {
            tracing::debug!(
                ?peer,
                secs,
                refused_total = state.admission.refused(),
                "agent connection over the admission rate; answering RetryAfter"
            );
            ws.on_upgrade(move |socket| retry_after(socket, secs))
        }
    }
}

/// Answers a connection refused by admission control: `RetryAfter`, then close.
async fn retry_after(mut socket: WebSocket, secs: u32) {
    if let Ok(text) = picket_proto::encode(&ServerMsg::RetryAfter { secs }) {
        let _ = socket.send(Message::Text(text.into())).await;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: TRY_AGAIN_LATER,
            reason: "server busy, retry later".into(),
        })))
        .await;
}
