//! Picket's cryptography, shared by the agent and the server: sealing and
//! opening jobs, signatures and key fingerprints, the server's key hierarchy
//! and the credential vault.
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
//! - [`error`]: [`CryptoError`]; job refusals use [`seal::OpenError`].

#![warn(missing_docs)]

pub mod error;
pub mod keys;
pub mod random;
pub mod seal;
pub mod vault;

pub use error::CryptoError;
pub use keys::{AgentKeys, ServerSigningKey, fingerprint, verify_signature};
pub use seal::{OpenError, open_job, peek_job_id, seal_job, verify_job};
pub use vault::{MasterKeys, MasterSecret, TenantKey};
