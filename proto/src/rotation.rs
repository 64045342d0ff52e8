//! Key rotation on the wire: the server's signing-key chain, and an agent
//! replacing its own key pairs.
//!
//! **Server signing key.** Each new job-signing key is endorsed by its
//! predecessor in a [`KeyLink`]. `Challenge` carries the chain (oldest
//! first, at most [`MAX_KEY_CHAIN`] links), so an agent that was offline
//! during a rotation catches up by walking it from a key it already pins,
//! before it answers the challenge. The link
//! also fixes until when the predecessor's jobs stay acceptable (the overlap
//! window).
//!
//! **Agent keys.** The agent proves new X25519 + Ed25519 keys with its
//! current identity ([`RotateKeys::signing_bytes`], signed by both the old and
//! the new Ed25519 key, bound to the session's challenge nonce); the server
//! stores them and answers [`KeysRotated`], signed by its job-signing key
//! over the same binding, after which the old identity is refused.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bytes::{B64, KeyFingerprint};

/// Most links a `Welcome` may carry (rotations kept for catching up).
pub const MAX_KEY_CHAIN: usize = 32;

/// Domain separation prefix of a key-chain link.
pub const KEY_LINK_SIGNATURE_CONTEXT: &[u8] = b"picket-key-link-v1";

/// Domain separation prefix of an agent's key-rotation proof.
pub const ROTATE_KEYS_SIGNATURE_CONTEXT: &[u8] = b"picket-rotate-keys-v1";

/// Domain separation prefix of the server's confirmation of an agent's new keys.
pub const KEYS_ROTATED_SIGNATURE_CONTEXT: &[u8] = b"picket-keys-rotated-v1";

/// One server signing key, endorsed by the key it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLink {
    /// The new Ed25519 job-signing public key.
    pub public: B64<32>,
    /// Fingerprint of the key that endorses it (its predecessor).
    pub prev_key_id: KeyFingerprint,
    /// Unix seconds until which jobs signed by the predecessor are still
    /// accepted (the overlap window); after it the predecessor is refused.
    pub prev_valid_until: i64,
    /// Ed25519 signature by the predecessor over [`KeyLink::signing_bytes`].
    pub sig: B64<64>,
}

impl KeyLink {
    /// `"picket-key-link-v1" ‖ prev_key_id (32) ‖ public (32) ‖ i64be(prev_valid_until)`.
    pub fn signing_bytes(
        prev_key_id: &KeyFingerprint,
        public: &[u8; 32],
        prev_valid_until: i64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_LINK_SIGNATURE_CONTEXT.len() + 72);
        out.extend_from_slice(KEY_LINK_SIGNATURE_CONTEXT);
        out.extend_from_slice(&prev_key_id.0);
        out.extend_from_slice(public);
        out.extend_from_slice(&prev_valid_until.to_be_bytes());
        out
    }
}

/// An agent's new key pairs, proven with its current identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeys {
    /// New X25519 public key: jobs will be sealed to it.
    pub x25519_public: B64<32>,
    /// New Ed25519 identity public key.
    pub ed25519_public: B64<32>,
    /// Signature by the **current** identity key over [`RotateKeys::signing_bytes`].
    pub old_sig: B64<64>,
    /// Signature by the **new** identity key over the same bytes (proof of possession).
    pub new_sig: B64<64>,
}

impl RotateKeys {
    /// `"picket-rotate-keys-v1" ‖ nonce (32) ‖ agent_id (16) ‖ new x25519 (32) ‖ new ed25519 (32)`.
    /// The nonce is the session's challenge, so a recorded proof cannot be
    /// replayed on another connection.
    pub fn signing_bytes(
        nonce: &[u8; 32],
        agent_id: &Uuid,
        x25519_public: &[u8; 32],
        ed25519_public: &[u8; 32],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROTATE_KEYS_SIGNATURE_CONTEXT.len() + 112);
        out.extend_from_slice(ROTATE_KEYS_SIGNATURE_CONTEXT);
        out.extend_from_slice(nonce);
        out.extend_from_slice(agent_id.as_bytes());
        out.extend_from_slice(x25519_public);
        out.extend_from_slice(ed25519_public);
        out
    }
}

/// The server stored an agent's new keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRotated {
    /// The new Ed25519 identity public key now registered.
    pub ed25519_public: B64<32>,
    /// The new X25519 public key now registered.
    pub x25519_public: B64<32>,
    /// Signature by the server's job-signing key over
    /// [`KeysRotated::signing_bytes`], so nobody on the path can make an
    /// agent drop its old identity before the server has the new one.
    pub proof: B64<64>,
}

impl KeysRotated {
    /// `"picket-keys-rotated-v1" ‖ nonce (32) ‖ agent_id (16) ‖ x25519 (32) ‖ ed25519 (32)`.
    pub fn signing_bytes(
        nonce: &[u8; 32],
        agent_id: &Uuid,
        x25519_public: &[u8; 32],
        ed25519_public: &[u8; 32],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEYS_ROTATED_SIGNATURE_CONTEXT.len() + 112);
        out.extend_from_slice(KEYS_ROTATED_SIGNATURE_CONTEXT);
        out.extend_from_slice(nonce);
        out.extend_from_slice(agent_id.as_bytes());
        out.extend_from_slice(x25519_public);
        out.extend_from_slice(ed25519_public);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_are_fixed_length_and_distinct() {
        let fp = KeyFingerprint([1; 32]);
        let a = KeyLink::signing_bytes(&fp, &[2; 32], 10);
        let b = KeyLink::signing_bytes(&fp, &[2; 32], 11);
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_LINK_SIGNATURE_CONTEXT.len() + 72);
        let id = Uuid::nil();
        let r = RotateKeys::signing_bytes(&[0; 32], &id, &[1; 32], &[2; 32]);
        let k = KeysRotated::signing_bytes(&[0; 32], &id, &[1; 32], &[2; 32]);
        assert_ne!(
            r, k,
            "the agent's proof and the server's confirmation differ"
        );
        assert_eq!(r.len(), ROTATE_KEYS_SIGNATURE_CONTEXT.len() + 112);
    }
}
