//! WebSocket frames, both directions, with bounded decoding.
//!
//! Handshake: the server speaks first with [`ServerMsg::Challenge`]; the agent
//! answers [`AgentMsg::Hello`] signed with its identity key over
//! [`Hello::signing_bytes`]; the server answers [`ServerMsg::Welcome`] and then
//! resends every job the agent has not yet answered, in `seq` order.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bytes::{B64, KeyFingerprint};
use crate::health::HealthReport;
use crate::job::{SealedJob, SiemKind};
use crate::outcome::{ErrorClass, Outcome};
use crate::rotation::{KeyLink, KeysRotated, MAX_KEY_CHAIN, RotateKeys};
use crate::text::AgentVersion;
use crate::{PROTOCOL_VERSION, ProtoError};

/// Messages from the server to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMsg {
    /// First frame on every connection.
    Challenge(Challenge),
    /// The agent is authenticated; settings for this session.
    Welcome(Welcome),
    /// A sealed job for this agent.
    Job {
        /// The sealed job.
        job: SealedJob,
    },
    /// The server has durably recorded the result of this job; the agent may forget it.
    ResultAck {
        /// The job whose result was recorded.
        job_id: Uuid,
    },
    /// Liveness probe; the agent answers [`AgentMsg::Pong`] with the same `t`.
    Ping {
        /// Opaque counter echoed back.
        t: u64,
    },
    /// The server is shedding load: reconnect no sooner than `secs` from now.
    RetryAfter {
        /// Seconds to wait.
        secs: u32,
    },
    /// This agent has been revoked; it must stop and not reconnect. Signed, so
    /// that nobody on the path (a TLS-inspecting proxy included) can stop an
    /// agent by forging it: see [`revocation_signing_bytes`].
    Revoked {
        /// Ed25519 signature by the server's job-signing key over
        /// [`revocation_signing_bytes`] for this session's challenge nonce.
        proof: B64<64>,
    },
    // --- key rotation (issue 3); see `crate::rotation` ---
    /// An admin asked this agent to replace its key pairs: it answers
    /// [`AgentMsg::RotateKeys`]. Unsigned: the worst a forger can cause is
    /// a rotation the agent proves with its own keys anyway.
    RequestKeyRotation,
    /// The server stored the agent's new keys (signed; see [`KeysRotated`]).
    KeysRotated(KeysRotated),
    /// The latest signed checkpoint of the agent's tenant audit log (after
    /// `Welcome` and whenever a new one is signed).
    AuditCheckpoint(crate::AuditCheckpoint),
    /// Answer to [`AgentMsg::AuditConsistencyRequest`].
    AuditConsistency(crate::AuditConsistency),
}

/// `"picket-revoked-v1" ‖ nonce ‖ agent_id (16 bytes)`: what the server signs
/// to revoke an agent. The nonce is the current session's challenge, so a
/// recorded revocation cannot be replayed against another session.
pub fn revocation_signing_bytes(nonce: &[u8; 32], agent_id: &Uuid) -> Vec<u8> {
    let mut out = Vec::with_capacity(crate::REVOKED_SIGNATURE_CONTEXT.len() + 48);
    out.extend_from_slice(crate::REVOKED_SIGNATURE_CONTEXT);
    out.extend_from_slice(nonce);
    out.extend_from_slice(agent_id.as_bytes());
    out
}

/// The server's challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, fresh per connection.
    pub nonce: B64<32>,
    /// Fingerprint of the server's current job-signing key (the agent must
    /// have it pinned, or reach it through `key_chain`).
    pub server_key: KeyFingerprint,
    /// The server's signing-key chain ending at `server_key`, oldest link
    /// first (at most [`MAX_KEY_CHAIN`]): each key endorsed by its
    /// predecessor, so an agent that missed a rotation catches up by walking
    /// it from a key it pins, **before** it answers. Public keys and
    /// signatures only. Empty until the server's first rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_chain: Vec<KeyLink>,
}

/// Session settings, sent after a successful Hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The authenticated agent.
    pub agent_id: Uuid,
    /// Seconds between server pings; either side closes after three missed intervals.
    pub heartbeat_secs: u32,
    /// Seconds between health reports.
    pub health_secs: u32,
    /// Largest frame either side may send, bytes.
    pub max_frame_bytes: u32,
    /// The SIEM connections this agent serves (no credentials: those only travel in sealed jobs).
    pub connections: Vec<ConnectionInfo>,
}

/// A SIEM connection the agent should probe for health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Server-issued id.
    pub connection_id: Uuid,
    /// Connection name (as the tenant admin named it).
    pub name: String,
    /// Which SIEM.
    pub kind: SiemKind,
    /// Base URL to probe.
    pub base_url: String,
}

/// Messages from an agent to the server. Numbers, enums and server-issued ids only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentMsg {
    /// Answer to the challenge.
    Hello(Hello),
    /// The job was received, verified and recorded in the agent's ledger.
    JobAck {
        /// The acknowledged job.
        job_id: Uuid,
    },
    /// The job's outcome.
    JobResult(JobResult),
    /// A periodic health report.
    Health(HealthReport),
    /// Answer to [`ServerMsg::Ping`].
    Pong {
        /// The ping's counter.
        t: u64,
    },
    // --- key rotation (issue 3); see `crate::rotation` ---
    /// New key pairs, proven with the current and the new identity key.
    RotateKeys(RotateKeys),
    /// Asks for the consistency proof from the audit checkpoint the agent
    /// accepted (`from`) to a newer one (`to`).
    AuditConsistencyRequest {
        /// Size of the accepted checkpoint.
        from: u64,
        /// Size of the new checkpoint.
        to: u64,
    },
}

/// Most SIEM kinds an agent may announce.
pub const MAX_CAPABILITIES: usize = 16;

/// The agent's answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The id issued at enrollment.
    pub agent_id: Uuid,
    /// The agent build.
    pub version: AgentVersion,
    /// SIEM kinds this build has connectors for.
    pub capabilities: Vec<SiemKind>,
    /// Ed25519 signature with the identity key over [`Hello::signing_bytes`].
    pub signature: B64<64>,
}

impl Hello {
    /// `"picket-hello-v1" ‖ nonce ‖ agent_id (16 bytes) ‖ server key fingerprint` (fixed lengths).
    pub fn signing_bytes(
        nonce: &[u8; 32],
        agent_id: &Uuid,
        server_key: &KeyFingerprint,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(crate::HELLO_SIGNATURE_CONTEXT.len() + 80);
        out.extend_from_slice(crate::HELLO_SIGNATURE_CONTEXT);
        out.extend_from_slice(nonce);
        out.extend_from_slice(agent_id.as_bytes());
        out.extend_from_slice(&server_key.0);
        out
    }
}

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: Uuid,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed or was refused; `None` when it succeeded.
    pub error_class: Option<ErrorClass>,
    /// Time spent running it, milliseconds (0 if refused).
    pub duration_ms: u64,
    /// SHA-256 of the rule content as deployed, for drift checks, when applicable.
    pub content_hash: Option<B64<32>>,
    /// Per-item outcomes of a `deploy_batch` or `drift_check` job, in the
    /// job's order (at most [`crate::batch::MAX_BATCH_ITEMS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<crate::batch::ItemOutcome>>,
    /// For a `test_rule` job: matches counted per test case, in case order
    /// (at most [`crate::ruletest::MAX_TEST_CASES`]); never event text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_counts: Option<crate::ruletest::TestCounts>,
    /// For a `rule_health` job: one entry per rule asked about, in the job's
    /// order (at most [`crate::health::MAX_RULE_HEALTH_RULES`]); counts and
    /// times only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_health: Option<Vec<crate::health::RuleHealthItem>>,
}

#[derive(Serialize)]
struct FrameOut<'a, T> {
    v: u8,
    #[serde(flatten)]
    msg: &'a T,
}

#[derive(Deserialize)]
struct FrameIn<T> {
    v: u64,
    #[serde(flatten)]
    msg: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u64,
}

/// Encodes a message as a JSON text frame with the protocol version.
///
/// # Errors
/// Only if serialization fails, which the message types make impossible in practice.
pub fn encode<T: Serialize>(msg: &T) -> Result<String, ProtoError> {
    serde_json::to_string(&FrameOut {
        v: PROTOCOL_VERSION,
        msg,
    })
    .map_err(|e| ProtoError::from_json(&e))
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str, max_bytes: usize) -> Result<T, ProtoError> {
    if text.len() > max_bytes {
        return Err(ProtoError::FrameTooLarge {
            size: text.len(),
            limit: max_bytes,
        });
    }
    match serde_json::from_str::<FrameIn<T>>(text) {
        Ok(f) if f.v == u64::from(PROTOCOL_VERSION) => Ok(f.msg),
        Ok(f) => Err(ProtoError::UnsupportedVersion {
            found: f.v,
            expected: PROTOCOL_VERSION,
        }),
        Err(e) => match serde_json::from_str::<VersionOnly>(text) {
            // A frame from another protocol version may not fit today's shapes: say so precisely.
            Ok(vo) if vo.v != u64::from(PROTOCOL_VERSION) => Err(ProtoError::UnsupportedVersion {
                found: vo.v,
                expected: PROTOCOL_VERSION,
            }),
            _ => Err(ProtoError::from_json(&e)),
        },
    }
}

/// Decodes a frame from the server, refusing it unparsed if it exceeds `max_bytes`.
///
/// # Errors
/// [`ProtoError`] saying why the frame was refused.
pub fn decode_server_msg(text: &str, max_bytes: usize) -> Result<ServerMsg, ProtoError> {
    let msg: ServerMsg = decode(text, max_bytes)?;
    match &msg {
        ServerMsg::Challenge(c) if c.key_chain.len() > MAX_KEY_CHAIN => {
            return Err(ProtoError::InvalidField {
                field: "key_chain",
                reason: "more than 32 links",
            });
        }
        ServerMsg::AuditCheckpoint(c) if c.note.len() > crate::audit::MAX_AUDIT_NOTE_BYTES => {
            return Err(ProtoError::InvalidField {
                field: "note",
                reason: "longer than 16 KiB",
            });
        }
        ServerMsg::AuditConsistency(c) if c.proof.len() > crate::audit::MAX_PROOF_HASHES => {
            return Err(ProtoError::InvalidField {
                field: "proof",
                reason: "more than 128 hashes",
            });
        }
        _ => {}
    }
    Ok(msg)
}

/// Decodes a frame from an agent, refusing it unparsed if it exceeds `max_bytes`,
/// and checks every bound serde cannot express.
///
/// # Errors
/// [`ProtoError`] saying why the frame was refused.
pub fn decode_agent_msg(text: &str, max_bytes: usize) -> Result<AgentMsg, ProtoError> {
    let msg: AgentMsg = decode(text, max_bytes)?;
    match &msg {
        AgentMsg::Hello(h) if h.capabilities.len() > MAX_CAPABILITIES => {
            return Err(ProtoError::InvalidField {
                field: "capabilities",
                reason: "more than 16 entries",
            });
        }
        AgentMsg::Health(h) => h.validate()?,
        AgentMsg::JobResult(r)
            if r.items
                .as_ref()
                .is_some_and(|i| i.len() > crate::batch::MAX_BATCH_ITEMS) =>
        {
            return Err(ProtoError::InvalidField {
                field: "items",
                reason: "more than 100 entries",
            });
        }
        AgentMsg::JobResult(r)
            if r.items.as_ref().is_some_and(|items| {
                items.iter().filter(|i| i.remote.is_some()).count() > crate::batch::MAX_REMOTE_RULES
                    || items
                        .iter()
                        .filter_map(|i| i.remote.as_deref())
                        .any(|rr| !rr.within_bounds())
            }) =>
        {
            return Err(ProtoError::InvalidField {
                field: "items",
                reason: "remote rule content over its bounds (12 rules, 64 KiB each)",
            });
        }
        AgentMsg::JobResult(r) if r.outcome == Outcome::Succeeded && r.error_class.is_some() => {
            return Err(ProtoError::InvalidField {
                field: "error_class",
                reason: "must be absent when the outcome is succeeded",
            });
        }
        AgentMsg::JobResult(r) if r.outcome != Outcome::Succeeded && r.error_class.is_none() => {
            return Err(ProtoError::InvalidField {
                field: "error_class",
                reason: "required when the outcome is not succeeded",
            });
        }
        _ => {}
    }
    if let AgentMsg::JobResult(r) = &msg
        && let Some(items) = &r.rule_health
    {
        crate::health::validate_rule_health_items(items)?;
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_version() {
        let m = AgentMsg::Pong { t: 42 };
        let text = encode(&m).unwrap();
        assert_eq!(text, r#"{"v":1,"type":"pong","t":42}"#);
        assert_eq!(decode_agent_msg(&text, 1024).unwrap(), m);
    }

    #[test]
    fn refuses_oversize_before_parsing() {
        let big = format!(
            r#"{{"v":1,"type":"pong","t":1,"pad":"{}"}}"#,
            "x".repeat(2000)
        );
        assert_eq!(
            decode_agent_msg(&big, 1024).unwrap_err(),
            ProtoError::FrameTooLarge {
                size: big.len(),
                limit: 1024
            }
        );
    }

    #[test]
    fn refuses_other_versions_precisely() {
        let e = decode_agent_msg(r#"{"v":2,"type":"teleport","x":1}"#, 1024).unwrap_err();
        assert_eq!(
            e,
            ProtoError::UnsupportedVersion {
                found: 2,
                expected: 1
            }
        );
        let e = decode_agent_msg(r#"{"v":2,"type":"pong","t":1}"#, 1024).unwrap_err();
        assert_eq!(
            e,
            ProtoError::UnsupportedVersion {
                found: 2,
                expected: 1
            }
        );
    }

    #[test]
    fn refuses_free_text_in_results() {
        let id = Uuid::nil();
        let bad = format!(
            r#"{{"v":1,"type":"job_result","job_id":"{id}","outcome":"failed","error_class":"Login failed for user admin","duration_ms":1,"content_hash":null}}"#
        );
        assert!(matches!(
            decode_agent_msg(&bad, 4096),
            Err(ProtoError::Malformed(_))
        ));
        let inconsistent = format!(
            r#"{{"v":1,"type":"job_result","job_id":"{id}","outcome":"failed","error_class":null,"duration_ms":1,"content_hash":null}}"#
        );
        assert!(matches!(
            decode_agent_msg(&inconsistent, 4096),
            Err(ProtoError::InvalidField { .. })
        ));
    }

    #[test]
    fn rotation_frames_round_trip_and_the_chain_is_bounded() {
        use crate::rotation::{KeyLink, KeysRotated, RotateKeys};
        let link = KeyLink {
            public: B64([1; 32]),
            prev_key_id: KeyFingerprint([2; 32]),
            prev_valid_until: 1_800_000_000,
            sig: B64([3; 64]),
        };
        let challenge = |n: usize| {
            ServerMsg::Challenge(Challenge {
                nonce: B64([0; 32]),
                server_key: KeyFingerprint([4; 32]),
                key_chain: vec![link.clone(); n],
            })
        };
        for m in [
            challenge(0),
            challenge(MAX_KEY_CHAIN),
            ServerMsg::RequestKeyRotation,
            ServerMsg::KeysRotated(KeysRotated {
                ed25519_public: B64([5; 32]),
                x25519_public: B64([6; 32]),
                proof: B64([7; 64]),
            }),
        ] {
            let text = encode(&m).unwrap();
            assert_eq!(decode_server_msg(&text, 1 << 20).unwrap(), m, "{text}");
        }
        assert_eq!(
            encode(&ServerMsg::RequestKeyRotation).unwrap(),
            r#"{"v":1,"type":"request_key_rotation"}"#
        );
        assert!(
            !encode(&challenge(0)).unwrap().contains("key_chain"),
            "an empty chain is omitted (older agents see the same challenge)"
        );
        let too_long = encode(&challenge(MAX_KEY_CHAIN + 1)).unwrap();
        assert!(matches!(
            decode_server_msg(&too_long, 1 << 20),
            Err(ProtoError::InvalidField {
                field: "key_chain",
                ..
            })
        ));
        let r = AgentMsg::RotateKeys(RotateKeys {
            x25519_public: B64([1; 32]),
            ed25519_public: B64([2; 32]),
            old_sig: B64([3; 64]),
            new_sig: B64([4; 64]),
        });
        let text = encode(&r).unwrap();
        assert_eq!(decode_agent_msg(&text, 4096).unwrap(), r);
    }

    #[test]
    fn malformed_garbage_is_an_error_not_a_panic() {
        for s in [
            "",
            "{",
            "null",
            "[]",
            r#"{"v":1}"#,
            r#"{"v":1,"type":"hello"}"#,
            "\u{0}",
        ] {
            assert!(decode_agent_msg(s, 1024).is_err(), "{s:?}");
            assert!(decode_server_msg(s, 1024).is_err(), "{s:?}");
        }
    }
}
