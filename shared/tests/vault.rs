//! The key hierarchy and credential vault: what decrypts where, and what must not.

// Tests: a failed unwrap is a failed assertion, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use picket_shared::vault::{ct_eq, hmac_sha256, sha256};
use picket_shared::{CryptoError, MasterKeys, MasterSecret, ServerSigningKey, TenantKey};
use uuid::Uuid;

fn master(byte: u8) -> MasterKeys {
    MasterKeys::derive(&MasterSecret::new(vec![byte; 32]).unwrap())
}

#[test]
fn credential_round_trip() {
    let k = TenantKey::generate().unwrap();
    let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
    let blob = k.encrypt_credential(t, r, 1, b"token-123").unwrap();
    assert_eq!(blob[0], 0x01, "version byte first");
    assert_eq!(blob.len(), 1 + 12 + 9 + 16);
    assert!(!blob.windows(9).any(|w| w == b"token-123"));
    let pt = k.decrypt_credential(t, r, 1, &blob).unwrap();
    assert_eq!(pt.as_slice(), b"token-123");
    // Fresh nonce each time.
    assert_ne!(blob, k.encrypt_credential(t, r, 1, b"token-123").unwrap());
    // Empty credentials work too.
    let empty = k.encrypt_credential(t, r, 1, b"").unwrap();
    assert!(k.decrypt_credential(t, r, 1, &empty).unwrap().is_empty());
}

#[test]
fn credential_is_bound_to_tenant_record_version_and_key() {
    let k = TenantKey::generate().unwrap();
    let (a, b, r, r2) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let blob = k.encrypt_credential(a, r, 3, b"secret").unwrap();
    assert_eq!(
        k.decrypt_credential(b, r, 3, &blob).unwrap_err(),
        CryptoError::Decrypt
    );
    assert_eq!(
        k.decrypt_credential(a, r2, 3, &blob).unwrap_err(),
        CryptoError::Decrypt
    );
    assert_eq!(
        k.decrypt_credential(a, r, 4, &blob).unwrap_err(),
        CryptoError::Decrypt
    );
    assert_eq!(
        k.decrypt_credential(a, r, 2, &blob).unwrap_err(),
        CryptoError::Decrypt
    );
    let other = TenantKey::generate().unwrap();
    assert_eq!(
        other.decrypt_credential(a, r, 3, &blob).unwrap_err(),
        CryptoError::Decrypt
    );
    // Swapping tenant and record ids does not collide either.
    assert_eq!(
        k.decrypt_credential(r, a, 3, &blob).unwrap_err(),
        CryptoError::Decrypt
    );
    assert_eq!(
        k.decrypt_credential(a, r, 3, &blob).unwrap().as_slice(),
        b"secret"
    );
}

#[test]
fn every_byte_of_a_blob_is_authenticated() {
    let k = TenantKey::generate().unwrap();
    let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
    let blob = k.encrypt_credential(t, r, 1, b"abc").unwrap();
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        let err = k.decrypt_credential(t, r, 1, &b).unwrap_err();
        if i == 0 {
            assert!(matches!(err, CryptoError::BadBlob { .. }), "{err:?}");
        } else {
            assert_eq!(err, CryptoError::Decrypt, "byte {i}");
        }
    }
}

#[test]
fn malformed_blobs() {
    let k = TenantKey::generate().unwrap();
    let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
    for bad in [
        &[][..],
        &[0x01][..],
        &[0x01; 28][..],
        &[0x02; 64][..],
        &[0x00; 64][..],
    ] {
        assert!(
            matches!(
                k.decrypt_credential(t, r, 1, bad),
                Err(CryptoError::BadBlob { .. })
            ),
            "{} bytes",
            bad.len()
        );
    }
    // Exactly the overhead (empty plaintext) parses, then fails authentication.
    assert_eq!(
        k.decrypt_credential(t, r, 1, &[0x01; 29]).unwrap_err(),
        CryptoError::Decrypt
    );
}

#[test]
fn tenant_key_wrapping() {
    let m = master(7);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let k = TenantKey::generate().unwrap();
    let w = m.wrap_tenant_key(a, &k).unwrap();
    assert_eq!(w[0], 0x01);
    assert_eq!(w.len(), 1 + 12 + 32 + 16);

    // The unwrapped key decrypts what the original encrypted.
    let r = Uuid::new_v4();
    let blob = k.encrypt_credential(a, r, 1, b"pw").unwrap();
    let k2 = m.unwrap_tenant_key(a, &w).unwrap();
    assert_eq!(
        k2.decrypt_credential(a, r, 1, &blob).unwrap().as_slice(),
        b"pw"
    );

    // Not as another tenant, not under another master secret.
    assert_eq!(
        m.unwrap_tenant_key(b, &w).unwrap_err(),
        CryptoError::Decrypt
    );
    assert_eq!(
        master(8).unwrap_tenant_key(a, &w).unwrap_err(),
        CryptoError::Decrypt
    );
    // A wrapped tenant key is not a wrapped signing key (different key and AAD).
    assert_eq!(m.unwrap_signing_key(&w).unwrap_err(), CryptoError::Decrypt);
}

#[test]
fn master_rotation_rewraps_without_touching_credentials() {
    let (old, new) = (master(1), master(2));
    let t = Uuid::new_v4();
    let r = Uuid::new_v4();
    let k = TenantKey::generate().unwrap();
    let blob = k.encrypt_credential(t, r, 1, b"kept").unwrap();
    let wrapped_old = old.wrap_tenant_key(t, &k).unwrap();
    let wrapped_new = new
        .wrap_tenant_key(t, &old.unwrap_tenant_key(t, &wrapped_old).unwrap())
        .unwrap();
    let k_new = new.unwrap_tenant_key(t, &wrapped_new).unwrap();
    assert_eq!(
        k_new.decrypt_credential(t, r, 1, &blob).unwrap().as_slice(),
        b"kept"
    );
}

#[test]
fn signing_key_wrapping() {
    let m = master(9);
    let s = ServerSigningKey::generate().unwrap();
    let w = m.wrap_signing_key(&s).unwrap();
    let s2 = m.unwrap_signing_key(&w).unwrap();
    assert_eq!(s2.verifying_key(), s.verifying_key());
    assert_eq!(*s2.seed(), *s.seed());
    assert_eq!(
        master(10).unwrap_signing_key(&w).unwrap_err(),
        CryptoError::Decrypt
    );
    // Not as a tenant key of any tenant.
    assert_eq!(
        m.unwrap_tenant_key(Uuid::nil(), &w).unwrap_err(),
        CryptoError::Decrypt
    );
    let mut bad = w.clone();
    bad[20] ^= 4;
    assert_eq!(
        m.unwrap_signing_key(&bad).unwrap_err(),
        CryptoError::Decrypt
    );
}

#[test]
fn master_secret_length() {
    for len in [0usize, 1, 16, 31] {
        assert_eq!(
            MasterSecret::new(vec![1; len]).unwrap_err(),
            CryptoError::MasterSecretTooShort { len }
        );
    }
    let msg = MasterSecret::new(vec![1; 31]).unwrap_err().to_string();
    assert!(msg.contains("31") && msg.contains("32"), "{msg}");
    assert_eq!(MasterSecret::new(vec![1; 32]).unwrap().len(), 32);
    assert_eq!(MasterSecret::new(vec![1; 64]).unwrap().len(), 64);
}

#[test]
fn derived_keys_are_distinct_and_deterministic() {
    let a = master(5);
    let b = master(5);
    let c = master(6);
    assert_eq!(a.sessions_key(), b.sessions_key());
    assert_eq!(a.audit_key(), b.audit_key());
    assert_ne!(a.sessions_key(), a.audit_key());
    assert_ne!(a.sessions_key(), c.sessions_key());
    assert_ne!(a.audit_key(), c.audit_key());
    // Every byte of the secret matters, including beyond the first 32.
    let mut long = vec![5u8; 48];
    let d = MasterKeys::derive(&MasterSecret::new(long.clone()).unwrap());
    long[47] = 6;
    let e = MasterKeys::derive(&MasterSecret::new(long).unwrap());
    assert_ne!(d.sessions_key(), e.sessions_key());
}

#[test]
fn derivation_matches_hkdf_sha256_with_the_documented_labels() {
    let secret = [0x42u8; 32];
    let m = MasterKeys::derive(&MasterSecret::new(secret.to_vec()).unwrap());
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"picket-master-v1"), &secret);
    let mut expect = [0u8; 32];
    hk.expand(b"sessions", &mut expect).unwrap();
    assert_eq!(m.sessions_key(), &expect);
    hk.expand(b"audit", &mut expect).unwrap();
    assert_eq!(m.audit_key(), &expect);
}

fn leaks(debug: &str, secret: &[u8]) -> bool {
    debug.contains(&hex::encode(secret))
        || debug.contains(&hex::encode_upper(secret))
        || debug.contains(&STANDARD.encode(secret))
        || debug.contains(&URL_SAFE_NO_PAD.encode(secret))
        || debug.contains(&format!("{secret:?}"))
        || debug.contains(format!("{:?}", &secret[..8]).trim_end_matches(']'))
}

#[test]
fn debug_never_shows_secrets() {
    let secret: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let ms = MasterSecret::new(secret.clone()).unwrap();
    let d = format!("{ms:?}");
    assert!(!leaks(&d, &secret), "{d}");

    let mk = MasterKeys::derive(&ms);
    let d = format!("{mk:?} {mk:#?}");
    assert!(!leaks(&d, mk.sessions_key()), "{d}");
    assert!(!leaks(&d, mk.audit_key()), "{d}");

    // A tenant key's bytes are only observable through wrapping; check its
    // Debug against the plaintext recovered by a raw AES-GCM decryption.
    let tk = TenantKey::generate().unwrap();
    let t = Uuid::new_v4();
    let d = format!("{tk:?} {tk:#?}");
    let w = mk.wrap_tenant_key(t, &tk).unwrap();
    let raw = raw_unwrap(&secret, &w, t);
    assert_eq!(raw.len(), 32);
    assert!(!leaks(&d, &raw), "{d}");

    let s = ServerSigningKey::generate().unwrap();
    let d = format!("{s:?} {s:#?}");
    assert!(!leaks(&d, &*s.seed()), "{d}");

    // Error messages carry no secret either.
    let e = MasterSecret::new(secret[..20].to_vec()).unwrap_err();
    assert!(!leaks(&format!("{e} {e:?}"), &secret[..20]));
}

/// Independent re-implementation of the tenant-key unwrap with the raw
/// crates, pinning the documented derivation, AAD and blob layout.
fn raw_unwrap(master_secret: &[u8], blob: &[u8], tenant: Uuid) -> Vec<u8> {
    use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"picket-master-v1"), master_secret);
    let mut key = [0u8; 32];
    hk.expand(b"credentials", &mut key).unwrap();
    let mut aad = b"picket-tenant-key-v1".to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    assert_eq!(blob[0], 1);
    let nonce = aes_gcm::aead::Nonce::<aes_gcm::Aes256Gcm>::try_from(&blob[1..13]).unwrap();
    aes_gcm::Aes256Gcm::new_from_slice(&key)
        .unwrap()
        .decrypt(
            &nonce,
            Payload {
                msg: &blob[13..],
                aad: &aad,
            },
        )
        .unwrap()
}

#[test]
fn credential_layout_matches_the_documented_aad() {
    use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
    // Build a tenant key we know by unwrapping a raw-wrapped one.
    let secret = [0x11u8; 32];
    let mk = MasterKeys::derive(&MasterSecret::new(secret.to_vec()).unwrap());
    let tk = TenantKey::generate().unwrap();
    let t = Uuid::new_v4();
    let r = Uuid::new_v4();
    let key = raw_unwrap(&secret, &mk.wrap_tenant_key(t, &tk).unwrap(), t);
    let blob = tk.encrypt_credential(t, r, 0x0102_0304, b"tok").unwrap();
    let mut aad = b"picket-credential-v1".to_vec();
    aad.extend_from_slice(t.as_bytes());
    aad.extend_from_slice(r.as_bytes());
    aad.extend_from_slice(&[1, 2, 3, 4]);
    let nonce = aes_gcm::aead::Nonce::<aes_gcm::Aes256Gcm>::try_from(&blob[1..13]).unwrap();
    let pt = aes_gcm::Aes256Gcm::new_from_slice(&key)
        .unwrap()
        .decrypt(
            &nonce,
            Payload {
                msg: &blob[13..],
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(pt, b"tok");
}

#[test]
fn hmac_sha256_rfc4231() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    // HMAC zero-pads keys shorter than the block size (RFC 2104 §2), so
    // "Jefe" followed by 28 zero bytes is the same key.
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(b"Jefe");
    assert_eq!(
        hex::encode(hmac_sha256(&key, b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // RFC 4231 test case 1: key = 20 × 0x0b, data "Hi There".
    let mut key = [0u8; 32];
    key[..20].fill(0x0b);
    assert_eq!(
        hex::encode(hmac_sha256(&key, b"Hi There")),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
}

#[test]
fn hmac_sha256_matches_the_hmac_crate_on_full_keys() {
    use hmac::{KeyInit as _, Mac as _};
    let key: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7 % 256).unwrap());
    for data in [&b""[..], b"a", &[0xffu8; 200][..]] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(data);
        let expect: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, data), expect);
    }
}

#[test]
fn hkdf_sha256_rfc5869_case_1() {
    // RFC 5869 A.1, through the same hkdf API the vault uses.
    let ikm = [0x0bu8; 22];
    let salt = hex::decode("000102030405060708090a0b0c").unwrap();
    let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
    let (prk, hk) = hkdf::Hkdf::<sha2::Sha256>::extract(Some(&salt), &ikm);
    assert_eq!(
        hex::encode(prk),
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    );
    let mut okm = [0u8; 42];
    hk.expand(&info, &mut okm).unwrap();
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );
    // Hkdf::new (what MasterKeys::derive calls) is extract + expand.
    let mut okm2 = [0u8; 42];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &ikm)
        .expand(&info, &mut okm2)
        .unwrap();
    assert_eq!(okm, okm2);
}

#[test]
fn sha256_and_ct_eq() {
    assert_eq!(
        hex::encode(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(ct_eq(b"", b""));
}
