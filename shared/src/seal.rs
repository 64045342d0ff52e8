//! Sealed jobs: HPKE encryption to one agent plus an Ed25519 signature by the
//! server (DESIGN.md, "The wire").
//!
//! - Encryption: HPKE base mode (RFC 9180), suite DHKEM(X25519, HKDF-SHA256) /
//!   HKDF-SHA256 / AES-256-GCM, `info` = [`JOB_HPKE_INFO`], `aad` = the exact
//!   header bytes, recipient = the agent's X25519 public key. Implemented by
//!   the `hpke` crate and checked against the RFC's vectors (`tests/hpke_vectors.rs`).
//! - Signature: Ed25519 over [`SealedJob::signed_bytes`] (length-prefixed
//!   header, enc and ct), verified with `verify_strict`.
//!
//! The agent runs [`verify_job`] (signature and key pinning), then its own
//! checks on the verified header (addressing, freshness, replay, policy), and
//! only then [`open_job`]. [`peek_job_id`] exists so a refusal can still name
//! the job it refers to.

use std::io;

use ed25519_dalek::{Signature, VerifyingKey};
use hpke::aead::{AeadCtxR, AeadTag, AesGcm256};
use hpke::inout::InOutBuf;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, HpkeError, OpModeR, OpModeS, Serializable as _};
use picket_proto::{B64, B64Vec, ErrorClass, JobHeader, JobSpec, SealedJob};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keys::{AgentKeys, ServerSigningKey, fingerprint};

/// The HPKE `info` string of the job suite (domain separation).
pub const JOB_HPKE_INFO: &[u8] = b"picket-job-v1";

/// Largest header accepted, in bytes (16 KiB). Real headers are about 300 bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Largest decrypted job spec accepted, in bytes (1 MiB, the default frame cap).
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// Longest HPKE `info` accepted by [`hpke_seal`] / [`hpke_open`] (the `hpke`
/// crate panics near 64 KiB; Picket's own info is 13 bytes).
pub const MAX_HPKE_INFO_BYTES: usize = 1024;

/// Length of the AES-256-GCM tag that ends every HPKE ciphertext.
const TAG_LEN: usize = 16;

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = AesGcm256;
type KemPublicKey = <Kem as hpke::Kem>::PublicKey;
type KemPrivateKey = <Kem as hpke::Kem>::PrivateKey;
type KemEncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Why an agent refuses a sealed job. Each maps to the [`ErrorClass`] it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The header bytes are not the JSON of a [`JobHeader`], or the header
    /// passed to [`open_job`] is not the one inside the job.
    #[error("job header is malformed")]
    MalformedHeader,
    /// The header is larger than [`MAX_HEADER_BYTES`]; it was not parsed.
    #[error("job header exceeds {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge,
    /// The header's `key_id` is not the fingerprint of any pinned server key.
    #[error("job is signed by a key this agent has not pinned")]
    UnknownSigningKey,
    /// The signature does not verify (strictly) under the pinned key: the
    /// header, `enc`, ciphertext or signature was altered, or forged.
    #[error("job signature does not verify")]
    BadSignature,
    /// HPKE decryption failed: the job was sealed to another agent's key, or
    /// `enc`/ciphertext/header were altered.
    #[error("job could not be decrypted")]
    DecryptFailed,
    /// The plaintext is larger than [`MAX_SPEC_BYTES`] or is not the JSON of a [`JobSpec`].
    #[error("job spec is malformed")]
    MalformedSpec,
    /// The spec's action is not of the kind announced in the signed header.
    #[error("job spec does not match the header's kind")]
    KindMismatch,
}

impl OpenError {
    /// The error class the agent reports for this refusal.
    pub fn error_class(&self) -> ErrorClass {
        match self {
            OpenError::MalformedHeader
            | OpenError::HeaderTooLarge
            | OpenError::MalformedSpec
            | OpenError::KindMismatch => ErrorClass::MalformedJob,
            OpenError::UnknownSigningKey => ErrorClass::UnknownSigningKey,
            OpenError::BadSignature => ErrorClass::BadSignature,
            OpenError::DecryptFailed => ErrorClass::DecryptFailed,
        }
    }
}

/// Seals `spec` to one agent and signs the result (server side).
///
/// The header is serialized once; those exact bytes are the HPKE `aad`, are
/// signed, and travel in the envelope. The spec's JSON (which holds the SIEM
/// credential) lives only in a zeroized buffer sized up front, so no stray
/// copy is left behind by a reallocation.
///
/// # Errors
/// - [`CryptoError::InvalidJob`] if `header.key_id` is not `signer`'s
///   fingerprint, `header.kind` differs from `spec.kind()`, or the header or
///   spec exceeds [`MAX_HEADER_BYTES`] / [`MAX_SPEC_BYTES`] (an agent would refuse it).
/// - [`CryptoError::Encode`] if serialization fails.
/// - [`CryptoError::BadPublicKey`] if `agent_x25519_public` is a low-order point.
/// - [`CryptoError::Encrypt`] if HPKE fails otherwise.
///
/// # Panics
/// Only if the operating system's RNG fails while drawing the ephemeral key
/// (the `hpke` crate's behaviour); Picket treats that as fatal.
pub fn seal_job(
    header: &JobHeader,
    spec: &JobSpec,
    agent_x25519_public: &[u8; 32],
    signer: &ServerSigningKey,
) -> Result<SealedJob, CryptoError> {
    if header.key_id != signer.fingerprint() {
        return Err(CryptoError::InvalidJob {
            reason: "header key_id is not the signing key's fingerprint",
        });
    }
    if header.kind != spec.kind() {
        return Err(CryptoError::InvalidJob {
            reason: "header kind differs from the spec's action",
        });
    }
    let header_bytes = serde_json::to_vec(header).map_err(|_| CryptoError::Encode)?;
    if header_bytes.len() > MAX_HEADER_BYTES {
        return Err(CryptoError::InvalidJob {
            reason: "header is larger than MAX_HEADER_BYTES",
        });
    }
    let plaintext = spec_to_zeroizing_json(spec)?;
    if plaintext.len() > MAX_SPEC_BYTES {
        return Err(CryptoError::InvalidJob {
            reason: "spec is larger than MAX_SPEC_BYTES",
        });
    }
    let (enc, ct) = hpke_seal(
        agent_x25519_public,
        JOB_HPKE_INFO,
        &header_bytes,
        &plaintext,
    )?;
    let sig = signer.sign(&SealedJob::signed_bytes(&header_bytes, &enc, &ct));
    Ok(SealedJob {
        header: B64Vec(header_bytes),
        enc: B64(enc),
        ct: B64Vec(ct),
        sig: B64(sig),
    })
}

/// Checks a job's signature under the pinned server keys and returns its
/// header (agent side). Nothing is decrypted.
///
/// The header is parsed before verification only to learn which pinned key
/// to use (its size is bounded first); it is returned only once the
/// signature over [`SealedJob::signed_bytes`] verifies with `verify_strict`.
/// The caller must still check addressing, expiry, sequence and policy.
///
/// # Errors
/// - [`OpenError::HeaderTooLarge`] if the header exceeds [`MAX_HEADER_BYTES`].
/// - [`OpenError::MalformedHeader`] if it is not a JSON [`JobHeader`].
/// - [`OpenError::UnknownSigningKey`] if no key in `pinned` has fingerprint `key_id`.
/// - [`OpenError::BadSignature`] if the signature does not verify under that key.
pub fn verify_job(job: &SealedJob, pinned: &[VerifyingKey]) -> Result<JobHeader, OpenError> {
    let header = parse_header(&job.header.0)?;
    let key = pinned
        .iter()
        .find(|k| fingerprint(k) == header.key_id)
        .ok_or(OpenError::UnknownSigningKey)?;
    let signed = SealedJob::signed_bytes(&job.header.0, &job.enc.0, &job.ct.0);
    key.verify_strict(&signed, &Signature::from_bytes(&job.sig.0))
        .map_err(|_| OpenError::BadSignature)?;
    Ok(header)
}

/// The job id in a job's header, **unverified**: best effort, for naming the
/// job in a refusal when [`verify_job`] fails.
///
/// Anyone can put any id here; never use it to look anything up, mark a job
/// as seen, or decide anything. `None` if the header is oversized or has no
/// parseable `job_id`.
pub fn peek_job_id(job: &SealedJob) -> Option<uuid::Uuid> {
    #[derive(Deserialize)]
    struct Peek {
        job_id: uuid::Uuid,
    }
    if job.header.0.len() > MAX_HEADER_BYTES {
        return None;
    }
    serde_json::from_slice::<Peek>(&job.header.0)
        .ok()
        .map(|p| p.job_id)
}

/// Decrypts a job whose signature [`verify_job`] accepted, with the agent's
/// X25519 key, and checks that the spec matches the signed header.
///
/// `header` must be the value [`verify_job`] returned for this `job`; it is
/// compared with the job's own header bytes so a header from another job
/// cannot be paired with this ciphertext. The plaintext JSON lives only in a
/// zeroized buffer. (`serde_json` may use an unzeroized scratch buffer while
/// unescaping strings that contain JSON escapes.)
///
/// # Errors
/// - [`OpenError::HeaderTooLarge`] / [`OpenError::MalformedHeader`] if the
///   job's header cannot be parsed or differs from `header`.
/// - [`OpenError::MalformedSpec`] if the ciphertext is larger than
///   [`MAX_SPEC_BYTES`] allows (checked before decrypting) or the plaintext is
///   not a JSON [`JobSpec`].
/// - [`OpenError::DecryptFailed`] if HPKE decryption fails (wrong agent, tampering).
/// - [`OpenError::KindMismatch`] if `spec.kind() != header.kind`.
pub fn open_job(
    job: &SealedJob,
    header: &JobHeader,
    agent: &AgentKeys,
) -> Result<JobSpec, OpenError> {
    if parse_header(&job.header.0)? != *header {
        return Err(OpenError::MalformedHeader);
    }
    if job.ct.0.len() > MAX_SPEC_BYTES + TAG_LEN {
        return Err(OpenError::MalformedSpec);
    }
    let plaintext = hpke_open(
        agent.x25519_secret_ref(),
        &job.enc.0,
        JOB_HPKE_INFO,
        &job.header.0,
        &job.ct.0,
    )
    .map_err(|_| OpenError::DecryptFailed)?;
    let spec: JobSpec = serde_json::from_slice(&plaintext).map_err(|_| OpenError::MalformedSpec)?;
    if spec.kind() != header.kind {
        return Err(OpenError::KindMismatch);
    }
    Ok(spec)
}

/// HPKE base-mode single-shot seal with the job suite
/// (DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM).
/// Returns `(enc, ciphertext‖tag)`.
///
/// # Errors
/// - [`CryptoError::InvalidLength`] if `info` exceeds [`MAX_HPKE_INFO_BYTES`].
/// - [`CryptoError::BadPublicKey`] if `pk` is a low-order point (all-zero shared secret).
/// - [`CryptoError::Encrypt`] if the AEAD refuses the input.
///
/// # Panics
/// Only if the operating system's RNG fails (the `hpke` crate's behaviour).
pub fn hpke_seal(
    pk: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<([u8; 32], Vec<u8>), CryptoError> {
    check_info(info)?;
    let pk = KemPublicKey::from_bytes(pk).map_err(|_| CryptoError::BadPublicKey)?;
    let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, info, pt, aad)
        .map_err(|e| match e {
            HpkeError::EncapError => CryptoError::BadPublicKey,
            _ => CryptoError::Encrypt,
        })?;
    Ok((enc.to_bytes().into(), ct))
}

/// HPKE base-mode single-shot open with the job suite: the first message of
/// a receiver context. The plaintext is returned in a zeroizing buffer.
///
/// # Errors
/// - [`CryptoError::InvalidLength`] if `info` exceeds [`MAX_HPKE_INFO_BYTES`].
/// - [`CryptoError::Decrypt`] if `enc` is not 32 bytes or decapsulates to an
///   all-zero secret, or the ciphertext does not authenticate under `sk`,
///   `info` and `aad`.
pub fn hpke_open(
    sk: &[u8; 32],
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    HpkeReceiver::new(sk, enc, info)?.open(aad, ct)
}

/// An HPKE base-mode receiver context with the job suite, for a sender that
/// seals several messages in sequence (RFC 9180 §5.2: each `open` uses the
/// next nonce). Jobs use one message per context ([`hpke_open`]); the
/// multi-message form exists for the RFC's test vectors.
pub struct HpkeReceiver(AeadCtxR<Aead, Kdf, Kem>);

impl HpkeReceiver {
    /// Decapsulates `enc` with the recipient secret `sk` and runs the key schedule.
    ///
    /// # Errors
    /// - [`CryptoError::InvalidLength`] if `info` exceeds [`MAX_HPKE_INFO_BYTES`].
    /// - [`CryptoError::Decrypt`] if `enc` is not 32 bytes or decapsulation fails.
    pub fn new(sk: &[u8; 32], enc: &[u8], info: &[u8]) -> Result<Self, CryptoError> {
        check_info(info)?;
        let sk = KemPrivateKey::from_bytes(sk).map_err(|_| CryptoError::Decrypt)?;
        let enc = KemEncappedKey::from_bytes(enc).map_err(|_| CryptoError::Decrypt)?;
        let ctx = hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, &sk, &enc, info)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(HpkeReceiver(ctx))
    }

    /// Opens the next message (`ciphertext‖tag`) of the sequence. The
    /// plaintext is written straight into a zeroizing buffer.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] if `ct` is shorter than a tag or does not
    /// authenticate (wrong key, `aad`, order, or tampering).
    pub fn open(&mut self, aad: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let msg_len = ct.len().checked_sub(TAG_LEN).ok_or(CryptoError::Decrypt)?;
        let (body, tag) = ct.split_at(msg_len);
        let tag = AeadTag::<Aead>::from_bytes(tag).map_err(|_| CryptoError::Decrypt)?;
        let mut out = Zeroizing::new(vec![0u8; msg_len]);
        let buf = InOutBuf::new(body, out.as_mut_slice()).map_err(|_| CryptoError::Decrypt)?;
        self.0
            .open_inout_detached(buf, aad, &tag)
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(out)
    }

    /// The RFC 9180 secret export: `len` bytes bound to `exporter_context`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `len` is beyond what HKDF-SHA256 can
    /// produce (255 × 32 bytes).
    pub fn export(
        &self,
        exporter_context: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut out = Zeroizing::new(vec![0u8; len]);
        self.0
            .export(exporter_context, out.as_mut_slice())
            .map_err(|_| CryptoError::InvalidLength {
                what: "HPKE export length",
            })?;
        Ok(out)
    }
}

impl std::fmt::Debug for HpkeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpkeReceiver([redacted])")
    }
}

fn check_info(info: &[u8]) -> Result<(), CryptoError> {
    if info.len() > MAX_HPKE_INFO_BYTES {
        return Err(CryptoError::InvalidLength { what: "HPKE info" });
    }
    Ok(())
}

fn parse_header(bytes: &[u8]) -> Result<JobHeader, OpenError> {
    if bytes.len() > MAX_HEADER_BYTES {
        return Err(OpenError::HeaderTooLarge);
    }
    serde_json::from_slice(bytes).map_err(|_| OpenError::MalformedHeader)
}

/// Serializes the spec into a zeroizing buffer allocated once at its final
/// size (measured by a first pass), so growing the buffer never leaves a
/// freed, unzeroized copy of the credential on the heap.
fn spec_to_zeroizing_json(spec: &JobSpec) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, spec).map_err(|_| CryptoError::Encode)?;
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, spec).map_err(|_| CryptoError::Encode)?;
    if out.len() != count.0 {
        // Serialization is deterministic, so this cannot happen; if it ever
        // did, the buffer may have been reallocated: refuse rather than guess.
        return Err(CryptoError::Encode);
    }
    Ok(out)
}
