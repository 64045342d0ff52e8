//! Agents as witnesses of the audit log (docs/audit.md): the server pushes
//! each new signed checkpoint of the agent's tenant log
//! ([`crate::ServerMsg::AuditCheckpoint`], also right after `Welcome`); the
//! agent asks for a consistency proof from the last checkpoint it accepted
//! ([`crate::AgentMsg::AuditConsistencyRequest`]) and checks the answer
//! ([`crate::ServerMsg::AuditConsistency`]). A refused checkpoint becomes an
//! [`AuditAlarm`] in the agent's health reports.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::B64;

/// Key name of the signature line of audit checkpoints.
pub const AUDIT_KEY_NAME: &str = "picket-audit";

/// Largest signed note accepted (same bound as the verifier's).
pub const MAX_AUDIT_NOTE_BYTES: usize = 16 * 1024;

/// Most hashes in a consistency proof (2 × 64 levels is more than any tree needs).
pub const MAX_PROOF_HASHES: usize = 128;

/// The origin line of a tenant's audit checkpoints.
pub fn audit_origin(tenant_id: &Uuid) -> String {
    format!("picket/audit/{tenant_id}")
}

/// A signed checkpoint (C2SP signed note) of the agent's tenant log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// The signed note, at most [`MAX_AUDIT_NOTE_BYTES`].
    pub note: String,
}

/// A consistency proof between two sizes of the agent's tenant log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditConsistency {
    /// The older size (the agent's accepted checkpoint).
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// RFC 6962 `PROOF` hashes, at most [`MAX_PROOF_HASHES`].
    pub proof: Vec<B64<32>>,
}

/// Why the agent refused an audit checkpoint (numbers and enums only travel
/// back to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditAlarm {
    /// Not signed, or not by the pinned server key, or malformed.
    BadSignature,
    /// Signed, but for another log than this agent's tenant.
    WrongOrigin,
    /// Smaller than the checkpoint already accepted: history was rolled back.
    Rollback,
    /// Not an extension of the accepted checkpoint (the consistency proof
    /// failed, was refused, or the same size has another root): a forked or
    /// rewritten history.
    Inconsistent,
}

impl AuditAlarm {
    /// The wire name (`bad_signature`, `wrong_origin`, `rollback`, `inconsistent`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAlarm::BadSignature => "bad_signature",
            AuditAlarm::WrongOrigin => "wrong_origin",
            AuditAlarm::Rollback => "rollback",
            AuditAlarm::Inconsistent => "inconsistent",
        }
    }
}
