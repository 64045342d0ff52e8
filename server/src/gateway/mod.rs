//! The agent gateway: `GET /v1/agent/connect` upgrades to a WebSocket on which
//! the server challenges the agent, then delivers its sealed jobs and receives
//! acknowledgements, results and health.
//!
//! Idle connections are cheap by design: 4 KiB read buffers, no write
//! buffering, no per-connection database polling. A connection task sleeps
//! until a frame arrives, its heartbeat timer fires, or the [`Registry`] wakes
//! it because a job was put in its agent's outbox.
//!
//! # Layout
//! - [`registry`]: which agent is connected where, and how to wake it.
//! - [`connection`]: one agent session, from challenge to close.

pub mod connection;
pub mod registry;

pub use registry::Registry;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;

use crate::AppState;
use crate::listener::ClientAddr;

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
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2))
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection::run(state, socket, peer))
}
