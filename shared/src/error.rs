//! The error type of every fallible primitive in this crate.
//!
//! Job verification has its own, coarser error ([`crate::seal::OpenError`]),
//! because an agent reports it to the server as an [`picket_proto::ErrorClass`].

/// Why a cryptographic operation failed.
///
/// Messages name the failure, never the data: no key, plaintext, ciphertext
/// or token byte ever appears in a variant or in its `Display` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random number generator failed. Picket treats
    /// this as fatal: nothing that needs a key, nonce or token can proceed.
    #[error("the operating system's random number generator failed: {reason}")]
    Rng {
        /// The OS error as reported by `getrandom` (an error code, no random bytes).
        reason: String,
    },

    /// The configured master secret is shorter than 32 bytes (256 bits).
    #[error("the master secret is {len} bytes long; at least 32 random bytes are required")]
    MasterSecretTooShort {
        /// Length of the refused secret, in bytes.
        len: usize,
    },

    /// Encryption failed: the AEAD refused the input (far beyond any size
    /// Picket produces) or HPKE could not complete.
    #[error("encryption failed")]
    Encrypt,

    /// Authenticated decryption failed: wrong key, wrong associated data
    /// (another tenant, record, key version or agent), or the ciphertext was
    /// tampered with. Deliberately does not say which.
    #[error("decryption failed: wrong key, wrong context or tampered ciphertext")]
    Decrypt,

    /// A stored ciphertext blob cannot even be parsed: unknown format
    /// version, too short, or it decrypted to a value of the wrong length.
    #[error("malformed encrypted blob: {reason}")]
    BadBlob {
        /// What is wrong with the blob's framing.
        reason: &'static str,
    },

    /// An Ed25519 signature did not verify (strict verification) under the
    /// given public key.
    #[error("signature verification failed")]
    BadSignature,

    /// A public key is not usable: not a valid curve point, a small-order
    /// (weak) Ed25519 key, or an X25519 key that yields an all-zero shared secret.
    #[error("invalid or weak public key")]
    BadPublicKey,

    /// A job handed to [`crate::seal::seal_job`] is inconsistent with itself
    /// or with the signing key (a bug on the sealing side, refused rather than
    /// sent to an agent that would refuse it).
    #[error("refusing to seal an inconsistent job: {reason}")]
    InvalidJob {
        /// Which consistency check failed.
        reason: &'static str,
    },

    /// An input or requested output is longer than the primitive allows
    /// (an HPKE `info` over 1 KiB, an HPKE export over 8160 bytes).
    #[error("{what} is too long")]
    InvalidLength {
        /// Which input or output.
        what: &'static str,
    },

    /// A value could not be serialized to JSON before sealing.
    #[error("could not serialize the job for sealing")]
    Encode,
}

impl CryptoError {
    /// Builds [`CryptoError::Rng`] from a `getrandom` error (its text is an
    /// OS error code and description, never random output).
    pub(crate) fn rng(err: getrandom::Error) -> Self {
        CryptoError::Rng {
            reason: err.to_string(),
        }
    }
}
