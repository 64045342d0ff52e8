//! Enrollment: the one HTTP exchange in which an agent proves it holds a
//! one-time token and registers its public keys, and the token's text form.
//!
//! `POST /v1/agent/enroll` with an [`EnrollRequest`]; the server answers an
//! [`EnrollResponse`]. The agent then checks that the SHA-256 of the returned
//! signing key equals the fingerprint in its token, and pins that key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ProtoError;
use crate::bytes::{B64, KeyFingerprint};
use crate::text::{AgentVersion, Hostname};

/// What the agent sends to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token's secret part (32 bytes). The server looks it up by hash.
    pub token_secret: B64<32>,
    /// The agent host's name, for the fleet view.
    pub hostname: Hostname,
    /// The agent build.
    pub version: AgentVersion,
    /// The agent's X25519 public key: jobs are sealed to it.
    pub x25519_public: B64<32>,
    /// The agent's Ed25519 public key: its identity on every connection.
    pub ed25519_public: B64<32>,
    /// Ed25519 signature with the identity key over [`EnrollRequest::proof_bytes`],
    /// proving possession and binding both keys to this token.
    pub proof: B64<64>,
}

impl EnrollRequest {
    /// `"picket-enroll-v1" ‖ token_secret ‖ x25519_public ‖ ed25519_public` (fixed lengths).
    pub fn proof_bytes(
        token_secret: &[u8; 32],
        x25519_public: &[u8; 32],
        ed25519_public: &[u8; 32],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(crate::ENROLL_SIGNATURE_CONTEXT.len() + 96);
        out.extend_from_slice(crate::ENROLL_SIGNATURE_CONTEXT);
        out.extend_from_slice(token_secret);
        out.extend_from_slice(x25519_public);
        out.extend_from_slice(ed25519_public);
        out
    }
}

/// The server's answer to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's id from now on.
    pub agent_id: Uuid,
    /// The tenant the agent belongs to.
    pub tenant_id: Uuid,
    /// The server's Ed25519 job-signing public key.
    pub server_signing_key: B64<32>,
    /// Its fingerprint (must equal the token's, unless `key_chain` leads
    /// from the token's key to it).
    pub key_id: KeyFingerprint,
    /// After signing-key rotations: the chain of endorsements from
    /// `chain_root` to `server_signing_key`, oldest first, so a token issued
    /// before a rotation (pinning an older key) still proves the current key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_chain: Vec<crate::rotation::KeyLink>,
    /// The public key that endorses the first link of `key_chain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_root: Option<B64<32>>,
}

/// An enrollment token: `pkt1.<secret, base64url>.<signing key fingerprint, hex>`.
///
/// The secret authorizes one enrollment; the fingerprint lets the agent pin
/// the server's job-signing key from the first contact, whatever TLS says.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct EnrollmentToken {
    /// 32 random bytes; stored only hashed on the server.
    pub secret: [u8; 32],
    /// SHA-256 of the server's job-signing public key.
    #[zeroize(skip)]
    pub fingerprint: KeyFingerprint,
}

const TOKEN_PREFIX: &str = "pkt1";

impl EnrollmentToken {
    /// Parses the text form; surrounding whitespace (a trailing newline in a file) is ignored.
    ///
    /// # Errors
    /// [`ProtoError::BadToken`] saying which part is wrong.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let s = s.trim();
        if s.len() > 256 {
            return Err(ProtoError::BadToken("too long"));
        }
        let mut parts = s.split('.');
        let (Some(prefix), Some(secret), Some(fpr), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProtoError::BadToken(
                "expected three dot-separated parts: pkt1.<secret>.<fingerprint>",
            ));
        };
        if prefix != TOKEN_PREFIX {
            return Err(ProtoError::BadToken("unknown prefix (expected `pkt1`)"));
        }
        let mut raw = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| ProtoError::BadToken("secret part is not base64url"))?;
        let secret_arr: Result<[u8; 32], _> = raw.as_slice().try_into();
        raw.zeroize();
        let secret =
            secret_arr.map_err(|_| ProtoError::BadToken("secret part must be 32 bytes"))?;
        let fingerprint = KeyFingerprint::from_hex(fpr)
            .map_err(|_| ProtoError::BadToken("fingerprint part must be 64 hex digits"))?;
        Ok(EnrollmentToken {
            secret,
            fingerprint,
        })
    }

    /// The text form handed to the person installing the agent.
    pub fn to_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.secret),
            self.fingerprint.to_hex()
        )
    }
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EnrollmentToken(secret: [redacted], fingerprint: {})",
            self.fingerprint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_errors() {
        let t = EnrollmentToken {
            secret: [7; 32],
            fingerprint: KeyFingerprint([9; 32]),
        };
        let text = t.to_text();
        assert_eq!(EnrollmentToken::parse(&format!("{text}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains(&URL_SAFE_NO_PAD.encode([7u8; 32])));
        assert_eq!(
            EnrollmentToken::parse("pkt2.a.b").unwrap_err(),
            ProtoError::BadToken("unknown prefix (expected `pkt1`)")
        );
        assert!(EnrollmentToken::parse("pkt1.abc").is_err());
        assert!(EnrollmentToken::parse(&text.replace(".", "..")).is_err());
    }
}
