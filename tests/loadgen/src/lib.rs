//! The fleet load generator: N simulated agents in one process, each with its
//! own enrolled keys, speaking the real protocol (challenge–response, sealed
//! jobs verified and opened with HPKE, acks, results, health) to a real
//! `picket-server` child process, whose memory and CPU are read from `/proc`.
//! A bare tokio-tungstenite echo server holding the same number of idle
//! connections is the memory floor.
//!
//! # Layout
//! - [`proc`]: the server (and echo) child processes and their `/proc` figures.
//! - [`rest`]: the real agent binary at rest (memory, CPU, binary size).
//! - [`setup`]: the admin side over the JSON API: users, bulk enrollment,
//!   connections, deployments and approvals.
//! - [`fleet`]: the simulated agents and their counters.
//! - [`echo`]: the echo floor (server and idle clients).
//! - [`scenario`]: idle hold, fan-out, sustained health, reconnect storm; the report.
//! - [`tls`]: `--tls`: a throwaway CA and certificate for the server (and the
//!   echo floor), and the clients' connector trusting only it.

pub mod echo;
pub mod fleet;
pub mod proc;
pub mod rest;
pub mod scenario;
pub mod setup;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Installs the ring rustls provider once per process (reqwest needs one).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The loopback source address of connection `i` among `sources` addresses
/// (127.0.0.1 to 127.0.0.<sources>): each source address has its own
/// ~28,000 ephemeral ports towards one server port.
pub fn source_addr(i: usize, sources: u8) -> SocketAddr {
    let n = u8::try_from(i % usize::from(sources.max(1))).unwrap_or(0);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + n)), 0)
}

/// Percentile `p` (0–100) of sorted `v`, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    // Lengths here are far below 2^52; the rank is clamped to the slice.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The soft limit on open files of this process (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Fails with what to do when `needed` descriptors exceed the limit.
///
/// # Errors
/// When the soft `RLIMIT_NOFILE` is below `needed`.
pub fn check_open_files(needed: u64) -> anyhow::Result<()> {
    match open_files_limit() {
        Some(l) if l < needed => anyhow::bail!(
            "{needed} open files are needed but the limit is {l}: run `ulimit -n {}` first (the server child inherits it; raise the hard limit in /etc/security/limits.conf if needed)",
            needed.next_power_of_two()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn sources_cycle_over_loopback_addresses() {
        assert_eq!(source_addr(0, 4).ip().to_string(), "127.0.0.1");
        assert_eq!(source_addr(5, 4).ip().to_string(), "127.0.0.2");
        assert_eq!(source_addr(7, 1).ip().to_string(), "127.0.0.1");
    }
}
