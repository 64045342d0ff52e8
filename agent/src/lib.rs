//! The Picket agent library (the binary in `main.rs` is a thin CLI over it).
//!
//! # Layout
//! - [`siem`]: SIEM connectors (Splunk today) behind one enum-dispatched interface.

pub mod siem;
