//! The server's key hierarchy (DESIGN.md, "Trust and keys") and the
//! credential vault.
//!
//! ```text
//! master secret (≥ 32 bytes, from config/env, never in the database)
//!  ├─ HKDF-SHA256 "credentials"      → wraps each tenant key
//!  │     └─ tenant key (random)      → encrypts SIEM credentials at rest
//!  ├─ HKDF-SHA256 "signing-key-wrap" → wraps the Ed25519 job-signing key
//!  ├─ HKDF-SHA256 "sessions"         → session token key
//!  └─ HKDF-SHA256 "audit"            → audit HMAC key
//! ```
//!
//! Every ciphertext is AES-256-GCM in one blob format:
//! `0x01 ‖ nonce (12 random bytes) ‖ ciphertext ‖ tag (16)`. The leading
//! version byte lets the format evolve; the associated data binds each blob to
//! its purpose and owner (tenant, record, key version), so a blob copied to
//! another row does not decrypt. Nonces are random: each key encrypts far
//! fewer than the 2³² messages that random 96-bit nonces allow.
//!
//! Rotating the master secret means unwrapping every tenant key and the
//! signing key under the old [`MasterKeys`] and wrapping them under the new
//! ones; credential ciphertexts are untouched.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut as _, KeyInit as _, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretBox};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keys::ServerSigningKey;
use crate::random::{random_array, random_secret};

/// Shortest master secret accepted, in bytes (256 bits).
pub const MIN_MASTER_SECRET_BYTES: usize = 32;

/// HKDF salt of the master-key derivation (fixed, public: domain separation).
pub const MASTER_HKDF_SALT: &[u8] = b"picket-master-v1";

/// First byte of every blob written by this version.
const BLOB_V1: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const BLOB_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const AAD_TENANT_KEY: &[u8] = b"picket-tenant-key-v1";
const AAD_SIGNING_KEY: &[u8] = b"picket-signing-key-v1";
const AAD_CREDENTIAL: &[u8] = b"picket-credential-v1";

/// The server's root secret. Held in a zeroizing box; its `Debug` shows only its length.
pub struct MasterSecret(SecretBox<[u8]>);

impl MasterSecret {
    /// Takes ownership of the secret bytes (already decoded from config or
    /// environment). The input vector is zeroized in every case.
    ///
    /// # Errors
    /// [`CryptoError::MasterSecretTooShort`] if it is shorter than
    /// [`MIN_MASTER_SECRET_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_MASTER_SECRET_BYTES {
            return Err(CryptoError::MasterSecretTooShort { len: bytes.len() });
        }
        // Copy into an exact-size box; `bytes` is wiped when it drops here.
        Ok(MasterSecret(SecretBox::new(Box::from(&bytes[..]))))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    /// Always `false`: a master secret has at least 32 bytes.
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterSecret([redacted; {} bytes])", self.len())
    }
}

/// The four keys derived from the master secret with HKDF-SHA256
/// (salt [`MASTER_HKDF_SALT`], info `credentials`, `signing-key-wrap`,
/// `sessions`, `audit`). Zeroized on drop; `Debug` redacted.
pub struct MasterKeys {
    /// Wraps tenant keys.
    credentials: Zeroizing<[u8; 32]>,
    /// Wraps the job-signing key.
    signing_key_wrap: Zeroizing<[u8; 32]>,
    /// Session token key.
    sessions: Zeroizing<[u8; 32]>,
    /// Audit HMAC key.
    audit: Zeroizing<[u8; 32]>,
}

impl MasterKeys {
    /// Derives the four keys.
    pub fn derive(master: &MasterSecret) -> MasterKeys {
        let expand = |info: &[u8]| {
            let mut okm = Zeroizing::new([0u8; 32]);
            if hkdf_sha256(
                MASTER_HKDF_SALT,
                master.0.expose_secret(),
                info,
                okm.as_mut_slice(),
            )
            .is_err()
            {
                // HKDF-SHA256 only refuses outputs over 8160 bytes; 32 is fixed above.
                unreachable!("HKDF-SHA256 can always produce 32 bytes");
            }
            okm
        };
        MasterKeys {
            credentials: expand(b"credentials"),
            signing_key_wrap: expand(b"signing-key-wrap"),
            sessions: expand(b"sessions"),
            audit: expand(b"audit"),
        }
    }

    /// The session token key (HKDF info `sessions`).
    pub fn sessions_key(&self) -> &[u8; 32] {
        &self.sessions
    }

    /// The audit HMAC key for secret-bearing fields (HKDF info `audit`).
    pub fn audit_key(&self) -> &[u8; 32] {
        &self.audit
    }

    /// Encrypts a tenant key under the `credentials` key, bound to `tenant_id`.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if no nonce can be drawn; [`CryptoError::Encrypt`] never in practice.
    pub fn wrap_tenant_key(
        &self,
        tenant_id: Uuid,
        key: &TenantKey,
    ) -> Result<Vec<u8>, CryptoError> {
        seal_blob(&self.credentials, &tenant_key_aad(tenant_id), &key.0[..])
    }

    /// Decrypts a tenant key wrapped by [`MasterKeys::wrap_tenant_key`] for the same tenant.
    ///
    /// # Errors
    /// - [`CryptoError::BadBlob`] if the blob is too short, of an unknown
    ///   version, or does not hold a 32-byte key.
    /// - [`CryptoError::Decrypt`] if it was wrapped for another tenant, under
    ///   another master secret, or altered.
    pub fn unwrap_tenant_key(
        &self,
        tenant_id: Uuid,
        wrapped: &[u8],
    ) -> Result<TenantKey, CryptoError> {
        let pt = open_blob(&self.credentials, &tenant_key_aad(tenant_id), wrapped)?;
        Ok(TenantKey(to_key32(&pt)?))
    }

    /// Encrypts the job-signing key's seed under the `signing-key-wrap` key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if no nonce can be drawn; [`CryptoError::Encrypt`] never in practice.
    pub fn wrap_signing_key(&self, key: &ServerSigningKey) -> Result<Vec<u8>, CryptoError> {
        seal_blob(&self.signing_key_wrap, AAD_SIGNING_KEY, &key.seed()[..])
    }

    /// Decrypts a signing key wrapped by [`MasterKeys::wrap_signing_key`].
    ///
    /// # Errors
    /// - [`CryptoError::BadBlob`] if the blob is malformed or does not hold a 32-byte seed.
    /// - [`CryptoError::Decrypt`] under another master secret or if altered.
    pub fn unwrap_signing_key(&self, wrapped: &[u8]) -> Result<ServerSigningKey, CryptoError> {
        let pt = open_blob(&self.signing_key_wrap, AAD_SIGNING_KEY, wrapped)?;
        let seed = to_key32(&pt)?;
        Ok(ServerSigningKey::from_seed(&seed))
    }
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKeys([redacted])")
    }
}

/// A tenant's data key (random, 256 bits): encrypts that tenant's SIEM
/// credentials. Stored only wrapped; zeroized on drop; `Debug` redacted.
pub struct TenantKey(Zeroizing<[u8; 32]>);

impl TenantKey {
    /// A new random key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the OS generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(TenantKey(random_secret::<32>()?))
    }

    /// Encrypts one credential, bound to its tenant, record and key version
    /// (AAD = `"picket-credential-v1" ‖ tenant_id ‖ record_id ‖ u32be(key_version)`).
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if no nonce can be drawn; [`CryptoError::Encrypt`] never in practice.
    pub fn encrypt_credential(
        &self,
        tenant_id: Uuid,
        record_id: Uuid,
        key_version: u32,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        seal_blob(
            &self.0,
            &credential_aad(tenant_id, record_id, key_version),
            plaintext,
        )
    }

    /// Decrypts a credential sealed by [`TenantKey::encrypt_credential`] with
    /// the same tenant, record and key version. Plaintext is zeroized on drop.
    ///
    /// # Errors
    /// - [`CryptoError::BadBlob`] if the blob is too short or of an unknown version.
    /// - [`CryptoError::Decrypt`] for another tenant, record, key version or
    ///   key, or if the blob was altered.
    pub fn decrypt_credential(
        &self,
        tenant_id: Uuid,
        record_id: Uuid,
        key_version: u32,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_blob(
            &self.0,
            &credential_aad(tenant_id, record_id, key_version),
            blob,
        )
    }
}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantKey([redacted])")
    }
}

/// HMAC-SHA256 of `data` under a 32-byte key (session tokens, audit fields).
pub fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) else {
        // HMAC accepts keys of any length; the crate's error type exists for other MACs.
        unreachable!("HMAC-SHA256 accepts a 32-byte key");
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data` (e.g. how enrollment token secrets are stored).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of two byte strings (timing reveals only whether
/// the lengths differ). For comparing MACs, token hashes and the like.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn tenant_key_aad(tenant_id: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_TENANT_KEY.len() + 16);
    aad.extend_from_slice(AAD_TENANT_KEY);
    aad.extend_from_slice(tenant_id.as_bytes());
    aad
}

fn credential_aad(tenant_id: Uuid, record_id: Uuid, key_version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CREDENTIAL.len() + 36);
    aad.extend_from_slice(AAD_CREDENTIAL);
    aad.extend_from_slice(tenant_id.as_bytes());
    aad.extend_from_slice(record_id.as_bytes());
    aad.extend_from_slice(&key_version.to_be_bytes());
    aad
}

fn to_key32(pt: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if pt.len() != out.len() {
        return Err(CryptoError::BadBlob {
            reason: "wrapped key is not 32 bytes",
        });
    }
    out.copy_from_slice(pt);
    Ok(out)
}

/// HKDF-SHA256 (RFC 5869) extract-then-expand of `ikm` into `okm`: the one
/// HKDF call of the key hierarchy (Wycheproof-tested in `wycheproof_tests`).
///
/// # Errors
/// [`CryptoError::InvalidLength`] if `okm` is longer than 255 × 32 bytes.
pub(crate) fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    okm: &mut [u8],
) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, okm)
        .map_err(|_| CryptoError::InvalidLength {
            what: "HKDF-SHA256 output",
        })
}

/// AES-256-GCM encryption of `buf` in place, returning the detached tag: the
/// one AEAD encryption call of the vault (Wycheproof-tested in `wycheproof_tests`).
///
/// # Errors
/// [`CryptoError::Encrypt`] if the input exceeds AES-GCM's limit (about 64 GiB).
pub(crate) fn aes256gcm_encrypt_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let tag = Aes256Gcm::new(key.into())
        .encrypt_inout_detached(&Nonce::<Aes256Gcm>::from(*nonce), aad, InOutBuf::from(buf))
        .map_err(|_| CryptoError::Encrypt)?;
    Ok(tag.into())
}

/// AES-256-GCM decryption of `body` with a detached `tag`, straight into a
/// zeroizing buffer: the one AEAD decryption call of the vault
/// (Wycheproof-tested in `wycheproof_tests`).
///
/// # Errors
/// [`CryptoError::Decrypt`] if the tag does not authenticate `body` and `aad`.
pub(crate) fn aes256gcm_decrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    body: &[u8],
    tag: &[u8; TAG_LEN],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut out = Zeroizing::new(vec![0u8; body.len()]);
    let buf = InOutBuf::new(body, out.as_mut_slice()).map_err(|_| CryptoError::Decrypt)?;
    Aes256Gcm::new(key.into())
        .decrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(*nonce),
            aad,
            buf,
            &Tag::<Aes256Gcm>::from(*tag),
        )
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(out)
}

/// AES-256-GCM into `0x01 ‖ nonce ‖ ct ‖ tag`. The output is allocated once
/// at its final size and the plaintext is encrypted in place inside it.
fn seal_blob(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce: [u8; NONCE_LEN] = random_array()?;
    let mut out = Vec::with_capacity(BLOB_OVERHEAD + plaintext.len());
    out.push(BLOB_V1);
    out.extend_from_slice(&nonce);
    let body = out.len();
    out.extend_from_slice(plaintext);
    let tag = aes256gcm_encrypt_in_place(key, &nonce, aad, &mut out[body..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Inverse of [`seal_blob`]; the plaintext is decrypted straight into a zeroizing buffer.
fn open_blob(key: &[u8; 32], aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let Some((&version, rest)) = blob.split_first() else {
        return Err(CryptoError::BadBlob { reason: "empty" });
    };
    if version != BLOB_V1 {
        return Err(CryptoError::BadBlob {
            reason: "unknown format version",
        });
    }
    if blob.len() < BLOB_OVERHEAD {
        return Err(CryptoError::BadBlob {
            reason: "shorter than nonce and tag",
        });
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::BadBlob {
        reason: "bad nonce length",
    })?;
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::BadBlob {
        reason: "bad tag length",
    })?;
    aes256gcm_decrypt(key, nonce, aad, body, tag)
}
