//! Picket's cryptography, shared by the agent and the server: sealing and
//! opening jobs, signatures and key fingerprints, the server's key hierarchy
//! and the credential vault; the audit log's Merkle tree and signed checkpoints.
//!
//! Every primitive comes from a maintained crate (`hpke`, `ed25519-dalek`,
//! `x25519-dalek`, `aes-gcm`, `hkdf`, `hmac`, `sha2`, `subtle`); this crate
//! only fixes how they are combined, with which labels, and what the bytes
//! look like. Secret material is zeroized on drop and never printed by `Debug`.
//!
//! # Layout
//! - [`random`]: OS randomness for keys, nonces and tokens.
//! - [`keys`]: the server's job-signing key, the agent's key pairs,
//!   fingerprints and strict Ed25519 verification.
//! - [`seal`]: sealed jobs (HPKE + Ed25519), their verification and opening,
//!   and the low-level HPKE calls.
//! - [`vault`]: master secret, derived keys, tenant keys, credential
//!   encryption at rest, HMAC and constant-time comparison.
//! - [`merkle`]: the audit log's RFC 6962 Merkle tree: hashing, roots,
//!   inclusion and consistency proofs and their verification.
//! - [`checkpoint`]: signed tree heads of the audit log in the C2SP
//!   `tlog-checkpoint` / `signed-note` format.
//! - [`error`]: [`CryptoError`]; job refusals use [`seal::OpenError`],
//!   proofs [`merkle::MerkleError`], notes [`checkpoint::NoteError`].

#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod keys;
pub mod merkle;
pub mod random;
pub mod seal;
pub mod vault;

/// Wycheproof vectors through this crate's own calls (needs crate-private access).
#[cfg(test)]
// Tests: a failed unwrap is a failed assertion, with its location.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod wycheproof_tests;

pub use checkpoint::{Checkpoint, NoteError, sign_checkpoint, verify_checkpoint};
pub use error::CryptoError;
pub use keys::{AgentKeys, ServerSigningKey, fingerprint, verify_signature};
pub use seal::{OpenError, open_job, peek_job_id, seal_job, verify_job};
pub use vault::{MasterKeys, MasterSecret, TenantKey};
