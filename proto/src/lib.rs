//! Picket's wire protocol: every message that crosses between an agent and the
//! control plane, and nothing else. No I/O, no crypto: the sealing and
//! signature checks live in `picket-shared`; this crate only fixes the shapes,
//! the bounds and the byte strings that get signed.
//!
//! Frames are JSON text with a protocol version `v` (currently [`PROTOCOL_VERSION`])
//! and a `type` tag. Everything the agent sends back is numbers, enums, hashes and
//! server-issued identifiers: there is deliberately no free-form string in
//! [`AgentMsg`] that could carry a SIEM log line or error text.
//!
//! # Layout
//! - [`audit`]: agents as witnesses of the audit log: checkpoints, consistency proofs, alarms.
//! - [`batch`]: atomic deployment batches, dry runs and drift checks.
//! - [`bytes`]: base64-encoded byte fields with fixed or bounded length.
//! - [`job`]: the sealed job envelope, its signed header and the encrypted spec.
//! - [`message`]: the WebSocket frames in both directions, with bounded decoding.
//! - [`health`]: health reports (numbers only).
//! - [`outcome`]: job outcomes and error classes.
//! - [`enroll`]: the one-time enrollment exchange and the enrollment token format.
//! - [`rotation`]: the server's signing-key chain and agent key rotation.
//! - [`ruletest`]: rule tests: the cases a `test_rule` job carries, the counts that come back.
//! - [`text`]: bounded, charset-restricted strings the agent is allowed to send.
//! - [`error`]: the decoding error type.

#![warn(missing_docs)]

pub mod audit;
pub mod batch;
pub mod bytes;
pub mod enroll;
pub mod error;
pub mod health;
pub mod job;
pub mod message;
pub mod outcome;
pub mod rotation;
pub mod ruletest;
pub mod text;

pub use audit::{AuditAlarm, AuditCheckpoint, AuditConsistency};
pub use batch::{
    Batch, BatchItem, BatchOp, DriftCheck, DriftExpectation, ItemOutcome, ItemStatus,
    MAX_BATCH_ITEMS, MAX_PREVIEW_WINDOW_SECS, MAX_REMOTE_RULE_BYTES, MAX_REMOTE_RULES, Preview,
    PreviewRule, PreviousState, RemoteRule, RemoteSchedule,
};
pub use bytes::{B64, B64Vec, KeyFingerprint};
pub use enroll::{EnrollRequest, EnrollResponse, EnrollmentToken};
pub use error::ProtoError;
pub use health::{
    HealthReport, MAX_RULE_HEALTH_RULES, RuleHealth, RuleHealthCheck, RuleHealthItem, SiemHealth,
};
pub use job::{
    Credential, ElasticSettings, JobAction, JobHeader, JobKind, JobSpec, RuleRef, RuleSpec,
    Schedule, SealedJob, SentinelIngestion, SentinelSettings, Severity, SiemKind, SiemSettings,
    SiemTarget, SplunkHec, SplunkLogin, SplunkSettings, managed_rule_name,
};
pub use message::{
    AgentMsg, Challenge, ConnectionInfo, Hello, JobResult, ServerMsg, Welcome, decode_agent_msg,
    decode_server_msg, encode, revocation_signing_bytes,
};
pub use outcome::{ErrorClass, Outcome};
pub use rotation::{KeyLink, KeysRotated, RotateKeys};
pub use ruletest::{RuleTest, TestCaseSpec, TestCounts};
pub use text::{AgentVersion, Hostname};

/// The protocol version carried in every frame as `v`. A peer that receives
/// another version refuses the frame with [`ProtoError::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u8 = 1;

/// Default cap on one WebSocket message, in bytes (1 MiB). Both sides refuse
/// larger frames before parsing them.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Domain separation prefix of the job signature (see [`job::SealedJob`]).
pub const JOB_SIGNATURE_CONTEXT: &[u8] = b"picket-job-v1";

/// Domain separation prefix of the agent's answer to a connection challenge.
pub const HELLO_SIGNATURE_CONTEXT: &[u8] = b"picket-hello-v1";

/// Domain separation prefix of the server's signed revocation of an agent.
pub const REVOKED_SIGNATURE_CONTEXT: &[u8] = b"picket-revoked-v1";

/// Domain separation prefix of the agent's proof of key possession at enrollment.
pub const ENROLL_SIGNATURE_CONTEXT: &[u8] = b"picket-enroll-v1";
