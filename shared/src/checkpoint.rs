//! Signed checkpoints of the audit log (DESIGN.md, "Audit log"): the
//! C2SP `tlog-checkpoint` body inside a C2SP `signed-note`, signed with the
//! server's Ed25519 key.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <base64 root hash>\n
//! \n
//! — <key name> <base64(key hash (4 bytes) ‖ Ed25519 signature (64 bytes))>\n
//! ```
//!
//! - The signature covers the note text (the three body lines, each with its
//!   newline), nothing else.
//! - The key hash is the first 4 bytes of
//!   `SHA-256(key name ‖ "\n" ‖ 0x01 ‖ 32-byte public key)` (0x01: Ed25519).
//! - A verifier looks for the first signature line with its key's name and
//!   hash; that line decides (strict Ed25519 verification). Lines of other
//!   keys (e.g. witnesses' cosignatures) are ignored, as the spec requires.
//!
//! Same behaviour as Go's `golang.org/x/mod/sumdb/note`, checked against its
//! published example (tests below). Parsing is bounded: a note over
//! [`MAX_NOTE_BYTES`] or with more than [`MAX_SIGNATURES`] signature lines is
//! refused before any signature is checked.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha256};

use crate::keys::{ServerSigningKey, verify_signature};
use crate::merkle::Hash;

/// Largest signed note accepted or produced, in bytes (16 KiB).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

/// Most signature lines a note may carry (Go's `sumdb/note` limit).
pub const MAX_SIGNATURES: usize = 100;

/// Signature type byte of Ed25519 in signed-note key hashes.
const ED25519_TYPE: u8 = 0x01;

/// Start of every signature line: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// A tree head of one audit log: what a checkpoint's body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `picket.example.com/audit/<tenant id>`:
    /// non-empty, printable, no newline. Verifiers must compare it with the
    /// log they expect, so one tenant's checkpoint is not taken for another's.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// Merkle tree hash of those leaves ([`crate::merkle::root`]).
    pub root: Hash,
}

/// Why a signed note or checkpoint was refused, or could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is longer than [`MAX_NOTE_BYTES`]; it was not parsed.
    #[error("signed note is {len} bytes, more than {MAX_NOTE_BYTES}")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The note has no blank line separating text from signatures, or its
    /// signature block does not end with a newline.
    #[error("signed note has no signature block")]
    MissingSignatures,
    /// The note text is empty, does not end with a newline, or contains a
    /// control character other than newline.
    #[error("signed note text is malformed")]
    MalformedText,
    /// A signature line does not start with `— `, has no space between name
    /// and signature, an invalid key name, invalid base64, or fewer than 5
    /// decoded bytes.
    #[error("signed note has a malformed signature line")]
    MalformedSignatureLine,
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("signed note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A key name given to sign or verify is empty or contains a space,
    /// a `+` or a control character.
    #[error("invalid key name")]
    InvalidKeyName,
    /// No signature line carries the expected key name and key hash: the
    /// note is signed by another key, or not by the one the caller trusts.
    #[error("signed note is not signed by the expected key")]
    UnknownKey,
    /// The signature line of the expected key does not verify (strict
    /// Ed25519): the text or the signature was altered, or forged.
    #[error("signed note signature does not verify")]
    BadSignature,
    /// The verified text is not a checkpoint body: fewer than three lines,
    /// an empty origin, a size that is not a canonical decimal `u64`, a root
    /// that is not the canonical base64 of 32 bytes, or an empty extension line.
    #[error("checkpoint body is malformed: {reason}")]
    MalformedCheckpoint {
        /// Which part of the body is wrong.
        reason: &'static str,
    },
}

/// The 4-byte key hash of an Ed25519 key in signed notes:
/// the first 4 bytes of `SHA-256(key_name ‖ "\n" ‖ 0x01 ‖ public key)`.
pub fn key_hash(key_name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The checkpoint's note text (body), without signatures.
///
/// # Errors
/// [`NoteError::MalformedCheckpoint`] if the origin is empty or contains a
/// control character (a newline would let it forge the other lines).
pub fn checkpoint_body(checkpoint: &Checkpoint) -> Result<String, NoteError> {
    if checkpoint.origin.is_empty() {
        return Err(NoteError::MalformedCheckpoint {
            reason: "empty origin",
        });
    }
    if checkpoint.origin.chars().any(char::is_control) {
        return Err(NoteError::MalformedCheckpoint {
            reason: "origin contains a control character",
        });
    }
    Ok(format!(
        "{}\n{}\n{}\n",
        checkpoint.origin,
        checkpoint.size,
        STANDARD.encode(checkpoint.root)
    ))
}

/// Signs a checkpoint as a C2SP signed note under `key_name`.
///
/// # Errors
/// - [`NoteError::MalformedCheckpoint`] if the origin is empty or has a control character.
/// - [`NoteError::InvalidKeyName`] if `key_name` is not a valid key name.
/// - [`NoteError::TooLarge`] if the note would exceed [`MAX_NOTE_BYTES`].
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    key_name: &str,
    key: &ServerSigningKey,
) -> Result<String, NoteError> {
    sign_note(&checkpoint_body(checkpoint)?, key_name, key)
}

/// Verifies a signed checkpoint under `key_name` and `key`, and parses it.
///
/// The caller must still check the origin, and that the size did not shrink
/// and the new tree is consistent with the last one it accepted
/// ([`crate::merkle::verify_consistency`]).
///
/// # Errors
/// Every [`NoteError`] of [`verify_note`], and
/// [`NoteError::MalformedCheckpoint`] if the signed text is not a checkpoint.
pub fn verify_checkpoint(
    note: &str,
    key_name: &str,
    key: &VerifyingKey,
) -> Result<Checkpoint, NoteError> {
    parse_checkpoint_body(verify_note(note, key_name, key)?)
}

/// Signs arbitrary note text (the signed-note layer under checkpoints).
///
/// # Errors
/// - [`NoteError::MalformedText`] if `text` is empty, does not end with a
///   newline, contains a blank line, or contains a control character other
///   than newline.
/// - [`NoteError::InvalidKeyName`] if `key_name` is not a valid key name.
/// - [`NoteError::TooLarge`] if the note would exceed [`MAX_NOTE_BYTES`].
pub fn sign_note(text: &str, key_name: &str, key: &ServerSigningKey) -> Result<String, NoteError> {
    check_text(text)?;
    if text.contains("\n\n") {
        // A blank line inside the text would be taken for the separator.
        return Err(NoteError::MalformedText);
    }
    check_key_name(key_name)?;
    let mut blob = Vec::with_capacity(4 + 64);
    blob.extend_from_slice(&key_hash(key_name, &key.verifying_key()));
    blob.extend_from_slice(&key.sign(text.as_bytes()));
    let note = format!(
        "{text}\n{SIG_PREFIX}{key_name} {}\n",
        STANDARD.encode(&blob)
    );
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { len: note.len() });
    }
    Ok(note)
}

/// Verifies a signed note under `key_name` and `key` and returns its text
/// (with its final newline).
///
/// # Errors
/// - [`NoteError::TooLarge`] if the note exceeds [`MAX_NOTE_BYTES`].
/// - [`NoteError::MissingSignatures`] / [`NoteError::MalformedText`] /
///   [`NoteError::MalformedSignatureLine`] / [`NoteError::TooManySignatures`]
///   if it is not a well-formed note.
/// - [`NoteError::InvalidKeyName`] if `key_name` is not a valid key name.
/// - [`NoteError::UnknownKey`] if no line is signed by `key_name` and `key`.
/// - [`NoteError::BadSignature`] if that line's signature does not verify.
pub fn verify_note<'a>(
    note: &'a str,
    key_name: &str,
    key: &VerifyingKey,
) -> Result<&'a str, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { len: note.len() });
    }
    check_key_name(key_name)?;
    let split = note.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    check_text(text)?;
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or(NoteError::MissingSignatures)?;

    let wanted = key_hash(key_name, key);
    let mut found: Option<Vec<u8>> = None;
    for (count, line) in sigs.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let (name, blob) = parse_signature_line(line)?;
        if found.is_none() && name == key_name && blob[..4] == wanted {
            found = Some(blob);
        }
    }
    let blob = found.ok_or(NoteError::UnknownKey)?;
    let sig: &[u8; 64] = blob[4..].try_into().map_err(|_| NoteError::BadSignature)?;
    verify_signature(key.as_bytes(), text.as_bytes(), sig).map_err(|_| NoteError::BadSignature)?;
    Ok(text)
}

/// Parses `— <name> <base64>` into the name and the decoded blob (≥ 5 bytes).
fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), NoteError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(NoteError::MalformedSignatureLine)?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::MalformedSignatureLine)?;
    check_key_name(name).map_err(|_| NoteError::MalformedSignatureLine)?;
    let blob = STANDARD
        .decode(b64)
        .map_err(|_| NoteError::MalformedSignatureLine)?;
    if blob.len() < 5 {
        return Err(NoteError::MalformedSignatureLine);
    }
    Ok((name, blob))
}

fn parse_checkpoint_body(text: &str) -> Result<Checkpoint, NoteError> {
    let malformed = |reason| NoteError::MalformedCheckpoint { reason };
    // `text` ends with a newline (checked by verify_note).
    let body = text
        .strip_suffix('\n')
        .ok_or(malformed("no final newline"))?;
    let mut lines = body.split('\n');
    let origin = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err(malformed("empty origin"));
    }
    let size = lines.next().ok_or(malformed("no tree size line"))?;
    let canonical_digits = !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
        && (size == "0" || !size.starts_with('0'));
    if !canonical_digits {
        return Err(malformed("tree size is not a canonical decimal number"));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| malformed("tree size does not fit in 64 bits"))?;
    let root_b64 = lines.next().ok_or(malformed("no root hash line"))?;
    let root: Hash = STANDARD
        .decode(root_b64)
        .ok()
        .and_then(|v| <Hash>::try_from(v.as_slice()).ok())
        .ok_or(malformed("root hash is not the base64 of 32 bytes"))?;
    if STANDARD.encode(root) != root_b64 {
        return Err(malformed("root hash is not canonical base64"));
    }
    // Extension lines (tlog-checkpoint allows them) are signed but carry
    // nothing Picket uses; they must not be empty.
    if lines.any(str::is_empty) {
        return Err(malformed("empty extension line"));
    }
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    })
}

/// Note text: non-empty, ends with a newline, no control character but newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') || text.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(NoteError::MalformedText);
    }
    Ok(())
}

/// Key names: non-empty, no Unicode space, no `+`, no control character.
fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
    {
        return Err(NoteError::InvalidKeyName);
    }
    Ok(())
}

#[cfg(test)]
// Tests: a failed unwrap is a failed assertion, with its location.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root};

    const NAME: &str = "picket.example/audit/tenant-1";

    fn key() -> ServerSigningKey {
        ServerSigningKey::from_seed(&[7; 32])
    }

    fn checkpoint() -> Checkpoint {
        let leaves: Vec<Hash> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        Checkpoint {
            origin: NAME.to_owned(),
            size: 5,
            root: root(&leaves),
        }
    }

    #[test]
    fn round_trip() {
        let k = key();
        let cp = checkpoint();
        let note = sign_checkpoint(&cp, NAME, &k).unwrap();
        assert!(note.starts_with(&format!("{NAME}\n5\n")));
        assert!(note.contains("\n\n\u{2014} picket.example/audit/tenant-1 "));
        assert_eq!(verify_checkpoint(&note, NAME, &k.verifying_key()), Ok(cp));
    }

    #[test]
    fn go_sumdb_note_known_answer() {
        // golang.org/x/mod/sumdb/note, package documentation example:
        // skey PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz
        // vkey PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW
        let skey = STANDARD
            .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .unwrap();
        let vkey = STANDARD
            .decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .unwrap();
        assert_eq!((skey[0], vkey[0]), (ED25519_TYPE, ED25519_TYPE));
        let k = ServerSigningKey::from_seed(&skey[1..].try_into().unwrap());
        assert_eq!(k.verifying_key().as_bytes(), &vkey[1..]);
        assert_eq!(
            hex::encode(key_hash("PeterNeumann", &k.verifying_key())),
            "c74f20a3"
        );
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let want = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        assert_eq!(sign_note(text, "PeterNeumann", &k).unwrap(), want);
        assert_eq!(
            verify_note(want, "PeterNeumann", &k.verifying_key()),
            Ok(text)
        );
        assert_eq!(
            verify_note(
                &want.replace("cryptography", "cryptographY"),
                "PeterNeumann",
                &k.verifying_key()
            ),
            Err(NoteError::BadSignature)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let k = key();
        let vk = k.verifying_key();
        let cp = checkpoint();
        let note = sign_checkpoint(&cp, NAME, &k).unwrap();
        let root_b64 = STANDARD.encode(cp.root);
        let mut other_root = cp.root;
        other_root[0] ^= 1;

        let tampered = [
            note.replacen("\n5\n", "\n6\n", 1),
            note.replacen(&root_b64, &STANDARD.encode(other_root), 1),
            note.replacen("tenant-1\n", "tenant-2\n", 1),
        ];
        for t in &tampered {
            assert_ne!(t, &note);
            assert_eq!(
                verify_checkpoint(t, NAME, &vk),
                Err(NoteError::BadSignature)
            );
        }

        // A flipped bit in the signature itself.
        let (head, sig_line) = note.rsplit_once(' ').unwrap();
        let mut blob = STANDARD.decode(sig_line.trim_end()).unwrap();
        blob[10] ^= 0x40;
        let bad_sig = format!("{head} {}\n", STANDARD.encode(&blob));
        assert_eq!(
            verify_checkpoint(&bad_sig, NAME, &vk),
            Err(NoteError::BadSignature)
        );
        // A flipped bit in the key hash: the line no longer names our key.
        let mut blob = STANDARD.decode(sig_line.trim_end()).unwrap();
        blob[0] ^= 1;
        let bad_hash = format!("{head} {}\n", STANDARD.encode(&blob));
        assert_eq!(
            verify_checkpoint(&bad_hash, NAME, &vk),
            Err(NoteError::UnknownKey)
        );
    }

    #[test]
    fn unknown_key_name_or_key_is_refused() {
        let k = key();
        let note = sign_checkpoint(&checkpoint(), NAME, &k).unwrap();
        assert_eq!(
            verify_checkpoint(&note, "someone.else", &k.verifying_key()),
            Err(NoteError::UnknownKey)
        );
        let other = ServerSigningKey::from_seed(&[8; 32]);
        assert_eq!(
            verify_checkpoint(&note, NAME, &other.verifying_key()),
            Err(NoteError::UnknownKey)
        );
        assert_eq!(
            verify_checkpoint(&note, "bad name", &k.verifying_key()),
            Err(NoteError::InvalidKeyName)
        );
    }

    #[test]
    fn other_signers_are_ignored_and_first_matching_line_decides() {
        let k = key();
        let vk = k.verifying_key();
        let note = sign_checkpoint(&checkpoint(), NAME, &k).unwrap();
        let witness = ServerSigningKey::from_seed(&[9; 32]);
        let body = checkpoint_body(&checkpoint()).unwrap();
        let witness_line = sign_note(&body, "witness.example", &witness)
            .unwrap()
            .split_off(body.len() + 1);
        let cosigned = format!("{note}{witness_line}");
        assert_eq!(verify_checkpoint(&cosigned, NAME, &vk), Ok(checkpoint()));
        assert!(verify_checkpoint(&cosigned, "witness.example", &witness.verifying_key()).is_ok());
    }

    #[test]
    fn malformed_notes_get_precise_errors() {
        let k = key();
        let vk = k.verifying_key();
        let note = sign_checkpoint(&checkpoint(), NAME, &k).unwrap();
        let huge = format!("{}{note}", "x".repeat(MAX_NOTE_BYTES));
        assert!(matches!(
            verify_checkpoint(&huge, NAME, &vk),
            Err(NoteError::TooLarge { .. })
        ));
        assert_eq!(
            verify_checkpoint("origin\n1\n", NAME, &vk),
            Err(NoteError::MissingSignatures)
        );
        assert_eq!(
            verify_checkpoint(note.trim_end_matches('\n'), NAME, &vk),
            Err(NoteError::MissingSignatures)
        );
        assert_eq!(
            verify_checkpoint(&note.replacen('\u{2014}', "-", 1), NAME, &vk),
            Err(NoteError::MalformedSignatureLine)
        );
        assert_eq!(
            verify_checkpoint(&format!("a\tb\n{note}"), NAME, &vk),
            Err(NoteError::MalformedText)
        );
        let many = format!(
            "{note}{}",
            format!("{SIG_PREFIX}x AAAAAAAA\n").repeat(MAX_SIGNATURES)
        );
        assert_eq!(
            verify_checkpoint(&many, NAME, &vk),
            Err(NoteError::TooManySignatures)
        );
        // Signed, but not a checkpoint body.
        for (text, reason) in [
            ("only-origin\n", "no tree size line"),
            (
                "o\n01\nAAAA\n",
                "tree size is not a canonical decimal number",
            ),
            (
                "o\n99999999999999999999\nAAAA\n",
                "tree size does not fit in 64 bits",
            ),
            ("o\n1\nAAAA\n", "root hash is not the base64 of 32 bytes"),
        ] {
            let signed = sign_note(text, NAME, &k).unwrap();
            assert_eq!(
                verify_checkpoint(&signed, NAME, &vk),
                Err(NoteError::MalformedCheckpoint { reason }),
                "{text:?}"
            );
        }
        // Bad inputs to signing.
        let mut cp = checkpoint();
        cp.origin = "a\nb".to_owned();
        assert!(matches!(
            sign_checkpoint(&cp, NAME, &k),
            Err(NoteError::MalformedCheckpoint { .. })
        ));
        assert_eq!(
            sign_checkpoint(&checkpoint(), "a+b", &k),
            Err(NoteError::InvalidKeyName)
        );
    }

    #[test]
    fn extension_lines_are_signed_and_tolerated() {
        let k = key();
        let body = format!("{}ext line\n", checkpoint_body(&checkpoint()).unwrap());
        let note = sign_note(&body, NAME, &k).unwrap();
        assert_eq!(
            verify_checkpoint(&note, NAME, &k.verifying_key()),
            Ok(checkpoint())
        );
    }
}
