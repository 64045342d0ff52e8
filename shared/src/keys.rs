//! Long-term key pairs: the server's job-signing key, the agent's two key
//! pairs, key fingerprints and strict signature verification.
//!
//! Every type holding a secret zeroizes it on drop (the dalek types do so
//! themselves) and has a `Debug` that prints only public material.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use picket_proto::KeyFingerprint;
use sha2::{Digest as _, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::random::random_secret;

/// The fingerprint of an Ed25519 public key: SHA-256 of its 32 bytes.
///
/// It is the `key_id` in job headers and what an enrollment token pins.
pub fn fingerprint(public: &VerifyingKey) -> KeyFingerprint {
    KeyFingerprint(Sha256::digest(public.as_bytes()).into())
}

/// Verifies an Ed25519 signature with `verify_strict`: refuses non-canonical
/// encodings, small-order (weak) public keys and small-order `R` components,
/// so one signature cannot be valid for many messages or keys.
///
/// Used by the server for `Hello` answers and enrollment proofs, where the
/// public key comes from the agent.
///
/// # Errors
/// - [`CryptoError::BadPublicKey`] if `public` is not a valid point or is a weak key.
/// - [`CryptoError::BadSignature`] if the signature does not verify.
pub fn verify_signature(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), CryptoError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| CryptoError::BadPublicKey)?;
    if key.is_weak() {
        return Err(CryptoError::BadPublicKey);
    }
    key.verify_strict(msg, &Signature::from_bytes(sig))
        .map_err(|_| CryptoError::BadSignature)
}

/// The server's Ed25519 job-signing key. Stored only wrapped under the master
/// secret (see [`crate::vault::MasterKeys::wrap_signing_key`]); its public
/// half is pinned by every agent through its fingerprint.
pub struct ServerSigningKey(SigningKey);

impl ServerSigningKey {
    /// A new random key from the OS generator.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let seed = random_secret::<32>()?;
        Ok(Self::from_seed(&seed))
    }

    /// The key for a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        ServerSigningKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, for wrapping. Zeroized when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key agents verify jobs with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// [`fingerprint`] of the public key: the `key_id` put in job headers.
    pub fn fingerprint(&self) -> KeyFingerprint {
        fingerprint(&self.0.verifying_key())
    }

    /// An Ed25519 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for ServerSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSigningKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// An agent's own key pairs, generated at enrollment and kept on its host:
/// X25519 to open the jobs sealed to it, Ed25519 as its identity (enrollment
/// proof, answer to every connection challenge).
pub struct AgentKeys {
    /// Job decryption key (HPKE recipient key).
    x25519: StaticSecret,
    /// Identity key.
    ed25519: SigningKey,
}

impl AgentKeys {
    /// Two new random key pairs from the OS generator.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let x = random_secret::<32>()?;
        let e = random_secret::<32>()?;
        Ok(Self::from_bytes(&x, &e))
    }

    /// Rebuilds the keys from their stored bytes (the output of
    /// [`AgentKeys::x25519_secret_bytes`] and [`AgentKeys::ed25519_seed`]).
    pub fn from_bytes(x25519: &[u8; 32], ed25519_seed: &[u8; 32]) -> Self {
        AgentKeys {
            x25519: StaticSecret::from(*x25519),
            ed25519: SigningKey::from_bytes(ed25519_seed),
        }
    }

    /// The X25519 secret, for the agent's key file. Zeroized when dropped.
    pub fn x25519_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.x25519.to_bytes())
    }

    /// The Ed25519 seed, for the agent's key file. Zeroized when dropped.
    pub fn ed25519_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.ed25519.to_bytes())
    }

    /// The X25519 public key jobs are sealed to.
    pub fn x25519_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.x25519).to_bytes()
    }

    /// The Ed25519 public key that identifies the agent.
    pub fn ed25519_public(&self) -> [u8; 32] {
        self.ed25519.verifying_key().to_bytes()
    }

    /// An Ed25519 signature with the identity key (enrollment proof, `Hello`).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.ed25519.sign(msg).to_bytes()
    }

    /// The X25519 secret as bytes, for HPKE decryption inside this crate.
    pub(crate) fn x25519_secret_ref(&self) -> &[u8; 32] {
        self.x25519.as_bytes()
    }
}

impl fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKeys")
            .field("x25519_public", &hex::encode(self.x25519_public()))
            .field("ed25519_public", &hex::encode(self.ed25519_public()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
// Tests: a failed unwrap is a failed assertion, with its location.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    fn leaks(debug: &str, secret: &[u8]) -> bool {
        debug.contains(&hex::encode(secret))
            || debug.contains(&hex::encode_upper(secret))
            || debug.contains(&STANDARD.encode(secret))
            || debug.contains(&URL_SAFE_NO_PAD.encode(secret))
            || debug.contains(&format!("{secret:?}"))
    }

    #[test]
    fn fingerprint_is_sha256_of_public_key() {
        let k = ServerSigningKey::from_seed(&[3; 32]);
        let expected: [u8; 32] = Sha256::digest(k.verifying_key().to_bytes()).into();
        assert_eq!(k.fingerprint().0, expected);
        assert_eq!(fingerprint(&k.verifying_key()), k.fingerprint());
    }

    #[test]
    fn rfc8032_test_1_through_our_api() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let k = ServerSigningKey::from_seed(&seed);
        assert_eq!(
            hex::encode(k.verifying_key().to_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = k.sign(b"");
        assert_eq!(
            hex::encode(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert_eq!(*k.seed(), seed);
    }

    #[test]
    fn server_key_signs_and_verifies() {
        let k = ServerSigningKey::generate().unwrap();
        let sig = k.sign(b"msg");
        let public = k.verifying_key().to_bytes();
        verify_signature(&public, b"msg", &sig).unwrap();
        assert_eq!(
            verify_signature(&public, b"msh", &sig),
            Err(CryptoError::BadSignature)
        );
        let mut bad = sig;
        bad[0] ^= 1;
        assert_eq!(
            verify_signature(&public, b"msg", &bad),
            Err(CryptoError::BadSignature)
        );
        let other = ServerSigningKey::generate().unwrap();
        assert_eq!(
            verify_signature(&other.verifying_key().to_bytes(), b"msg", &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn verify_refuses_small_order_and_invalid_keys() {
        // The identity point (y = 1): small order. With R = identity and
        // s = 0, a lax verifier accepts this signature for every message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        assert_eq!(
            verify_signature(&identity, b"anything", &sig),
            Err(CryptoError::BadPublicKey)
        );
        // A y-coordinate that is not on the curve (y = 2 does not decompress).
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(VerifyingKey::from_bytes(&off_curve).is_err());
        assert_eq!(
            verify_signature(&off_curve, b"m", &[0; 64]),
            Err(CryptoError::BadPublicKey)
        );
    }

    #[test]
    fn agent_keys_round_trip_through_bytes() {
        let a = AgentKeys::generate().unwrap();
        let b = AgentKeys::from_bytes(&a.x25519_secret_bytes(), &a.ed25519_seed());
        assert_eq!(a.x25519_public(), b.x25519_public());
        assert_eq!(a.ed25519_public(), b.ed25519_public());
        let sig = a.sign(b"hello");
        verify_signature(&b.ed25519_public(), b"hello", &sig).unwrap();
        assert_ne!(a.x25519_public(), a.ed25519_public());
    }

    #[test]
    fn debug_prints_no_secret() {
        let k = ServerSigningKey::generate().unwrap();
        let d = format!("{k:?}");
        assert!(!leaks(&d, &*k.seed()), "{d}");
        assert!(d.contains(&k.fingerprint().to_hex()));

        let a = AgentKeys::generate().unwrap();
        let d = format!("{a:?}");
        assert!(!leaks(&d, &*a.x25519_secret_bytes()), "{d}");
        assert!(!leaks(&d, &*a.ed25519_seed()), "{d}");
        assert!(d.contains(&hex::encode(a.x25519_public())));
    }
}
