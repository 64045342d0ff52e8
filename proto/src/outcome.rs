//! What happened to a job, as enums only. SIEM error text never travels: a
//! connector maps every failure to one [`ErrorClass`].

use serde::{Deserialize, Serialize};

/// The end state of one job on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The job ran and the SIEM accepted every change.
    Succeeded,
    /// The job ran (or started) and failed; see the error class.
    Failed,
    /// The agent refused the job before running it (verification, freshness, replay, policy).
    Refused,
}

/// Why a job failed or was refused. Closed set: adding a class is a protocol change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// The SIEM rejected the credentials (HTTP 401).
    AuthFailed,
    /// The credentials are valid but lack a permission (HTTP 403).
    Forbidden,
    /// The SIEM throttled us (HTTP 429) beyond the retry budget.
    RateLimited,
    /// The SIEM rejected the rule's query or a field of the rule.
    QueryInvalid,
    /// The object to change does not exist on the SIEM.
    NotFound,
    /// The SIEM reported a conflicting concurrent change.
    Conflict,
    /// The SIEM could not be reached (DNS, TCP, TLS).
    SiemUnreachable,
    /// The SIEM answered with a server error (HTTP 5xx) or an unexpected response.
    SiemError,
    /// The SIEM did not answer within the agent's deadline.
    Timeout,
    /// The job's signature did not verify under a pinned server key.
    BadSignature,
    /// The job names a signing key the agent has not pinned.
    UnknownSigningKey,
    /// The job is addressed to another agent.
    WrongAgent,
    /// The job's `expires_at` has passed (beyond the allowed clock skew), or it was issued in the future.
    Expired,
    /// The job's sequence number was already used by another job.
    Replayed,
    /// HPKE decryption of the job spec failed.
    DecryptFailed,
    /// The job decrypted but its content is malformed or disagrees with its header.
    MalformedJob,
    /// The agent's local policy does not allow this job.
    PolicyDenied,
    /// The agent stopped while the job ran; whether the SIEM applied it is unknown.
    Interrupted,
    /// An unexpected failure inside the agent.
    Internal,
}

impl ErrorClass {
    /// Stable snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::AuthFailed => "auth_failed",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::QueryInvalid => "query_invalid",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Conflict => "conflict",
            ErrorClass::SiemUnreachable => "siem_unreachable",
            ErrorClass::SiemError => "siem_error",
            ErrorClass::Timeout => "timeout",
            ErrorClass::BadSignature => "bad_signature",
            ErrorClass::UnknownSigningKey => "unknown_signing_key",
            ErrorClass::WrongAgent => "wrong_agent",
            ErrorClass::Expired => "expired",
            ErrorClass::Replayed => "replayed",
            ErrorClass::DecryptFailed => "decrypt_failed",
            ErrorClass::MalformedJob => "malformed_job",
            ErrorClass::PolicyDenied => "policy_denied",
            ErrorClass::Interrupted => "interrupted",
            ErrorClass::Internal => "internal",
        }
    }
}

impl Outcome {
    /// Stable snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for c in [
            ErrorClass::AuthFailed,
            ErrorClass::SiemUnreachable,
            ErrorClass::PolicyDenied,
        ] {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        assert!(serde_json::from_str::<ErrorClass>("\"password for admin is hunter2\"").is_err());
    }
}
