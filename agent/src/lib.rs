//! The Picket agent library; the binary in `main.rs` is a thin CLI over it.
//!
//! The agent runs next to a customer's SIEM. It enrolls once with a one-time
//! token (pinning the server's job-signing key), then keeps one outbound
//! WebSocket to the control plane, receives sealed jobs, verifies, records,
//! decrypts and runs them against the SIEM, and sends back only outcomes and
//! health figures.
//!
//! # Layout
//! - [`check`]: `check-config`, validating `agent.toml` and `policy.toml` as `run` would.
//! - [`config`]: typed `agent.toml` + `PICKET_AGENT_*` overrides, validated at start-up.
//! - [`state`]: the state directory: private keys (0600), enrollment record, atomic writes.
//! - [`enroll`]: the one-time enrollment exchange and the key pin check.
//! - [`keyring`]: the server signing keys the agent trusts, and walking the key chain after a server rotation.
//! - [`identity`]: the agent's own keys and their crash-safe rotation (`rotate-keys`).
//! - [`ledger`]: the durable, fsynced job ledger (idempotency, replay barrier).
//! - [`policy`]: the customer's local `policy.toml` (job kinds, connections, rate cap).
//! - [`backoff`]: the reconnect schedule (exponential caps, full jitter, stability reset).
//! - `net`: TLS configuration, the WebSocket connector, the SIEM HTTP client.
//! - [`proxy`]: HTTP CONNECT proxies to the server (`proxy_url`, `HTTPS_PROXY`, `NO_PROXY`).
//! - [`install`]: `service prepare`, the MSI's config/state folder set-up (copy examples if absent, ACL).
//! - [`journal`]: the customer's append-only, rotated journal of every job run or refused.
//! - `session`: the connection loop and one WebSocket session ([`run_agent`]).
//! - `jobs`: the job worker that outlives sessions.
//! - `batch`: atomic deployment batches (revert on failure), dry runs, drift checks.
//! - `health`: process/host figures and SIEM probes for health reports.
//! - `witness`: the agent as a witness of its tenant's audit log (checkpoints, consistency, alarms).
//! - `winsvc` (Windows only): the agent as a Windows service (`service run`).
//! - [`winlog`]: the Windows Event Log as the service's log destination (the writer is Windows only).
//! - [`siem`]: SIEM connectors (Splunk today) behind one enum-dispatched interface.

pub mod backoff;
mod batch;
pub mod check;
pub mod config;
pub mod enroll;
mod health;
pub mod identity;
pub mod install;
mod jobs;
pub mod journal;
pub mod keyring;
pub mod ledger;
mod net;
pub mod policy;
pub mod proxy;
mod session;
pub mod siem;
pub mod state;
/// The Event Log writer for `service run` (Windows only; its size cap is tested everywhere).
pub mod winlog;
/// Windows only: `picket-agent service run` under the service control manager.
#[cfg(windows)]
pub mod winsvc;
mod witness;

pub use config::AgentConfig;
pub use session::{Revoked, run_agent};
