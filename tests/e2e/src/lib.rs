//! The end-to-end harness: starts the real `picket-server` and `picket-agent`
//! binaries as child processes (each with its own config file, data directory
//! and log file) next to an in-process SIEM simulator, and drives them through
//! the public API. The demo binary uses the same pieces.
//!
//! Binaries are taken from the cargo target directory of the running test
//! (`target/debug/picket-server`, `.../picket-agent`); `cargo test --workspace`
//! builds them before any test runs.
//!
//! # Layout
//! - [`procs`]: server and agent child processes (start, kill, restart, logs).
//! - [`api`]: a small typed client of the JSON API.
//! - [`pg`]: the backend under test (`PICKET_E2E_DB=postgres`) and throwaway
//!   PostgreSQL databases.
//! - [`stack`]: a whole stack (server, users, agent, simulator, connection) in one call.
//! - [`tls`]: a throwaway CA and server certificate for WSS tests.
//! - [`proxy`]: a WebSocket relay that tampers with jobs in flight (an attacker on the
//!   path): flips bytes, duplicates, holds back and re-injects frames, re-signs jobs.
//! - [`wait`]: bounded waiting for an eventual condition.

pub mod api;
pub mod pg;
pub mod procs;
pub mod proxy;
pub mod stack;
pub mod tls;
pub mod wait;

/// Installs the ring rustls provider once per process (reqwest and the proxy need one).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
