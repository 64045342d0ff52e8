//! SIEM simulators that follow the vendors' published APIs, for Picket's tests
//! and demo: start one in-process on a free port (or run the
//! `picket-siem-sim` binary), point a connector at it, then inspect what it
//! stored, how many requests reached it, and inject faults.
//!
//! They answer in the vendors' shapes (paths, form arguments, status codes,
//! JSON bodies, error `messages`), so a connector that passes against a
//! simulator is exercised the way the real SIEM would exercise it; they keep
//! their state in memory and never persist anything.
//!
//! # Layout
//! - [`splunk`]: the Splunk REST API (management port): `auth/login`,
//!   `server/info`, `saved/searches` with argument checks tied to
//!   `savedsearches.conf.spec`, oneshot searches and HEC, plus fault injection.
//! - [`sentinel`]: Entra client-credentials tokens, ARM `alertRules`
//!   (`2024-09-01`), the Log Analytics query API and the Logs Ingestion API.
//! - [`elastic`]: the Kibana detection engine API (`2023-10-31`) and
//!   Elasticsearch `_bulk` / `_count`.
//! - [`common`]: the fault model, event store and scripted scheduler the
//!   simulators share.

pub mod common;
pub mod elastic;
pub mod sentinel;
pub mod splunk;
