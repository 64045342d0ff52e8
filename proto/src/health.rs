//! Health reports: process, host and SIEM reachability figures. Numbers only.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ErrorClass, ProtoError};

/// Most SIEM connections one report may describe.
pub const MAX_SIEM_ENTRIES: usize = 64;

/// A periodic report from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Seconds since the agent process started.
    pub uptime_secs: u64,
    /// Agent process CPU use over the last interval, percent of one core (0 to 100 × cores).
    pub cpu_percent: f32,
    /// Agent process resident memory, bytes.
    pub rss_bytes: u64,
    /// Host memory in use, bytes.
    pub host_mem_used_bytes: u64,
    /// Host memory in total, bytes.
    pub host_mem_total_bytes: u64,
    /// Jobs that succeeded since the agent started.
    pub jobs_succeeded: u64,
    /// Jobs that failed or were refused since the agent started.
    pub jobs_failed: u64,
    /// One entry per SIEM connection the agent serves.
    pub siem: Vec<SiemHealth>,
}

/// Reachability of one SIEM connection, from the agent's last probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiemHealth {
    /// Server-issued id of the connection.
    pub connection_id: Uuid,
    /// Whether the SIEM answered the last probe.
    pub reachable: bool,
    /// Round-trip time of the last probe, milliseconds, when it answered.
    pub latency_ms: Option<u32>,
    /// Why the last probe failed, when it did.
    pub error_class: Option<ErrorClass>,
}

impl HealthReport {
    /// Checks the bounds that serde cannot express.
    ///
    /// # Errors
    /// [`ProtoError::InvalidField`] naming the first field out of bounds.
    pub fn validate(&self) -> Result<(), ProtoError> {
        if !self.cpu_percent.is_finite() || self.cpu_percent < 0.0 || self.cpu_percent > 100_000.0 {
            return Err(ProtoError::InvalidField {
                field: "cpu_percent",
                reason: "expected a finite value from 0 to 100000",
            });
        }
        if self.host_mem_used_bytes > self.host_mem_total_bytes {
            return Err(ProtoError::InvalidField {
                field: "host_mem_used_bytes",
                reason: "exceeds host_mem_total_bytes",
            });
        }
        if self.siem.len() > MAX_SIEM_ENTRIES {
            return Err(ProtoError::InvalidField {
                field: "siem",
                reason: "more than 64 entries",
            });
        }
        Ok(())
    }
}
