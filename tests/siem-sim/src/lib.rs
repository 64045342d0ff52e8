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
//!   `server/info`, and `saved/searches` with argument checks tied to
//!   `savedsearches.conf.spec`, plus fault injection.

pub mod splunk;
