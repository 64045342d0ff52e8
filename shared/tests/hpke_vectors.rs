//! RFC 9180 test vectors for the job suite: base mode, DHKEM(X25519,
//! HKDF-SHA256) (kem_id 0x20), HKDF-SHA256 (kdf_id 1), AES-256-GCM (aead_id 2),
//! run through this crate's HPKE wrappers.
//!
//! The vectors are read in place from the shared hand-off folder next to the
//! repository (`../shared/vectors/hpke/`); a missing file fails the test.

// Tests: a failed unwrap is a failed assertion, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, Serializable as _};
use picket_shared::seal::{HpkeReceiver, hpke_open};
use serde::Deserialize;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/hpke/rfc9180-test-vectors.json"
);

/// A hex string from the vector file, decoded.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Hex(Vec<u8>);

impl TryFrom<String> for Hex {
    type Error = hex::FromHexError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        hex::decode(s).map(Hex)
    }
}

impl std::ops::Deref for Hex {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    info: Hex,
    #[serde(rename = "ikmR")]
    ikm_r: Hex,
    #[serde(rename = "skRm")]
    sk_rm: Hex,
    #[serde(rename = "pkRm")]
    pk_rm: Hex,
    enc: Hex,
    encryptions: Vec<Encryption>,
    exports: Vec<Export>,
}

#[derive(Deserialize)]
struct Encryption {
    aad: Hex,
    ct: Hex,
    pt: Hex,
}

#[derive(Deserialize)]
struct Export {
    exporter_context: Hex,
    #[serde(rename = "L")]
    len: usize,
    exported_value: Hex,
}

#[test]
fn rfc9180_base_x25519_sha256_aes256gcm() {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| {
        panic!("cannot read the RFC 9180 vectors at {VECTORS}: {e} (they must be present)")
    });
    // Other suites have other shapes (export-only AEADs have no encryptions):
    // select on the ids first, then decode the selected entries strictly.
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&text).expect("vector file is not valid JSON");
    assert!(!all.is_empty(), "vector file has no entries");
    let ours: Vec<Vector> = all
        .iter()
        .filter(|v| v["mode"] == 0 && v["kem_id"] == 0x20 && v["kdf_id"] == 1 && v["aead_id"] == 2)
        .map(|v| serde_json::from_value(v.clone()).expect("vector entry has the RFC's shape"))
        .collect();

    let mut cases = 0usize;
    let mut decryptions = 0usize;
    let mut exports = 0usize;
    for v in &ours {
        assert!(v.mode == 0 && v.kem_id == 0x20 && v.kdf_id == 1 && v.aead_id == 2);
        // DeriveKeyPair(ikmR) must give the vector's key pair. The RFC lists
        // skRm unclamped; X25519 private keys serialize clamped (RFC 9180
        // §7.1.2), so compare both sides in that form.
        let (sk, pk) = X25519HkdfSha256::derive_keypair(&v.ikm_r);
        assert_eq!(pk.to_bytes().as_slice(), v.pk_rm.0.as_slice(), "pkRm");
        let sk_vec = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&v.sk_rm)
            .expect("skRm is 32 bytes");
        assert_eq!(sk.to_bytes(), sk_vec.to_bytes(), "skRm");
        // And X25519 of skRm gives pkRm, independently of hpke.
        let sk_rm: [u8; 32] = v.sk_rm.0.as_slice().try_into().expect("skRm is 32 bytes");
        let pk_dalek = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sk_rm));
        assert_eq!(pk_dalek.as_bytes().as_slice(), v.pk_rm.0.as_slice());

        // The first message is exactly a single-shot open.
        let first = &v.encryptions[0];
        let pt =
            hpke_open(&sk_rm, &v.enc, &v.info, &first.aad, &first.ct).expect("single-shot open");
        assert_eq!(pt.as_slice(), first.pt.0.as_slice());

        // The whole sequence, in order, on one receiver context.
        let mut rx = HpkeReceiver::new(&sk_rm, &v.enc, &v.info).expect("setup receiver");
        for (i, e) in v.encryptions.iter().enumerate() {
            let pt = rx
                .open(&e.aad, &e.ct)
                .unwrap_or_else(|err| panic!("encryption #{i} did not open: {err}"));
            assert_eq!(pt.as_slice(), e.pt.0.as_slice(), "plaintext #{i}");
            decryptions += 1;
        }
        // Out of order must fail: a fresh context cannot open message #1 first.
        if let Some(second) = v.encryptions.get(1) {
            let mut fresh = HpkeReceiver::new(&sk_rm, &v.enc, &v.info).expect("setup receiver");
            assert!(fresh.open(&second.aad, &second.ct).is_err());
        }

        for (i, x) in v.exports.iter().enumerate() {
            let out = rx.export(&x.exporter_context, x.len).expect("export");
            assert_eq!(out.as_slice(), x.exported_value.0.as_slice(), "export #{i}");
            exports += 1;
        }
        cases += 1;
    }
    println!(
        "RFC 9180 vectors checked: {cases} case(s), {decryptions} decryption(s), {exports} export(s)"
    );
    assert!(
        cases > 0,
        "no vector for mode 0 / kem 0x20 / kdf 1 / aead 2"
    );
    assert!(decryptions > 0 && exports > 0);
}
