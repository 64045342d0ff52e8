//! Sealed jobs end to end: seal on the "server", verify and open on the "agent",
//! and every way a job can be tampered with or misaddressed is refused.

// Tests: a failed unwrap is a failed assertion, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use picket_proto::{
    B64, B64Vec, Credential, ErrorClass, JobAction, JobHeader, JobKind, JobSpec, RuleRef,
    SealedJob, SiemSettings, SiemTarget, SplunkSettings,
};
use picket_shared::seal::{
    JOB_HPKE_INFO, MAX_HEADER_BYTES, OpenError, hpke_open, hpke_seal, open_job, peek_job_id,
    seal_job, verify_job,
};
use picket_shared::{AgentKeys, CryptoError, ServerSigningKey};
use uuid::Uuid;

const TOKEN: &str = "splunk-token-5ecret";

fn header(signer: &ServerSigningKey, kind: JobKind) -> JobHeader {
    JobHeader {
        job_id: Uuid::now_v7(),
        agent_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        seq: 7,
        issued_at: 1_700_000_000,
        expires_at: 1_700_000_600,
        kind,
        key_id: signer.fingerprint(),
    }
}

fn spec(action: JobAction) -> JobSpec {
    JobSpec {
        target: SiemTarget {
            connection_id: Uuid::new_v4(),
            name: "prod".into(),
            settings: SiemSettings::Splunk(SplunkSettings {
                base_url: "https://splunk.corp:8089".into(),
                app: "search".into(),
                owner: "nobody".into(),
                token: Credential::new(TOKEN.into()),
                login: None,
                hec: None,
            }),
        },
        action,
    }
}

struct Fixture {
    signer: ServerSigningKey,
    agent: AgentKeys,
    header: JobHeader,
    spec: JobSpec,
    job: SealedJob,
}

fn fixture() -> Fixture {
    let signer = ServerSigningKey::generate().unwrap();
    let agent = AgentKeys::generate().unwrap();
    let header = header(&signer, JobKind::CheckConnection);
    let spec = spec(JobAction::CheckConnection);
    let job = seal_job(&header, &spec, &agent.x25519_public(), &signer).unwrap();
    Fixture {
        signer,
        agent,
        header,
        spec,
        job,
    }
}

/// What the agent does with a job: verify, then open.
fn accept(job: &SealedJob, f: &Fixture) -> Result<JobSpec, OpenError> {
    let h = verify_job(job, &[f.signer.verifying_key()])?;
    open_job(job, &h, &f.agent)
}

#[test]
fn round_trip() {
    let f = fixture();
    let h = verify_job(&f.job, &[f.signer.verifying_key()]).unwrap();
    assert_eq!(h, f.header);
    let opened = open_job(&f.job, &h, &f.agent).unwrap();
    assert_eq!(opened, f.spec);
    assert_eq!(peek_job_id(&f.job), Some(f.header.job_id));

    // The header travels in clear, the credential does not.
    assert_eq!(f.job.header.0, serde_json::to_vec(&f.header).unwrap());
    let wire = serde_json::to_string(&f.job).unwrap();
    assert!(!wire.contains(TOKEN));
    assert!(
        !f.job
            .ct
            .0
            .windows(TOKEN.len())
            .any(|w| w == TOKEN.as_bytes())
    );

    // The envelope survives its JSON form.
    let back: SealedJob = serde_json::from_str(&wire).unwrap();
    assert_eq!(accept(&back, &f).unwrap(), f.spec);
}

#[test]
fn verifies_among_several_pinned_keys() {
    let f = fixture();
    let old = ServerSigningKey::generate().unwrap();
    let pinned = [old.verifying_key(), f.signer.verifying_key()];
    assert_eq!(verify_job(&f.job, &pinned).unwrap(), f.header);
}

#[test]
fn every_single_byte_flip_is_refused() {
    let f = fixture();
    let mut checked = 0usize;
    for bit in [0x01u8, 0x80] {
        for i in 0..f.job.header.0.len() {
            let mut j = f.job.clone();
            j.header.0[i] ^= bit;
            assert!(
                accept(&j, &f).is_err(),
                "header byte {i} ^ {bit:#x} accepted"
            );
            checked += 1;
        }
        for i in 0..32 {
            let mut j = f.job.clone();
            j.enc.0[i] ^= bit;
            assert_eq!(accept(&j, &f), Err(OpenError::BadSignature), "enc byte {i}");
            checked += 1;
        }
        for i in 0..f.job.ct.0.len() {
            let mut j = f.job.clone();
            j.ct.0[i] ^= bit;
            assert_eq!(accept(&j, &f), Err(OpenError::BadSignature), "ct byte {i}");
            checked += 1;
        }
        for i in 0..64 {
            let mut j = f.job.clone();
            j.sig.0[i] ^= bit;
            assert_eq!(accept(&j, &f), Err(OpenError::BadSignature), "sig byte {i}");
            checked += 1;
        }
    }
    assert!(checked > 2 * (64 + 32 + 100));
}

#[test]
fn encryption_alone_refuses_tampering() {
    // Even a caller that skipped the signature check could not be fed a
    // modified ciphertext, enc, or header: HPKE authenticates all three.
    let f = fixture();
    for i in 0..f.job.ct.0.len() {
        let mut j = f.job.clone();
        j.ct.0[i] ^= 0x01;
        assert_eq!(
            open_job(&j, &f.header, &f.agent),
            Err(OpenError::DecryptFailed)
        );
    }
    for i in 0..32 {
        let mut j = f.job.clone();
        j.enc.0[i] ^= 0x01;
        assert_eq!(
            open_job(&j, &f.header, &f.agent),
            Err(OpenError::DecryptFailed),
            "enc {i}"
        );
    }
    // A header change that still parses (another seq) breaks the AAD.
    let mut h2 = f.header.clone();
    h2.seq += 1;
    let mut j = f.job.clone();
    j.header = B64Vec(serde_json::to_vec(&h2).unwrap());
    assert_eq!(open_job(&j, &h2, &f.agent), Err(OpenError::DecryptFailed));
    // Truncated ciphertexts.
    let mut j = f.job.clone();
    j.ct.0.truncate(10);
    assert_eq!(
        open_job(&j, &f.header, &f.agent),
        Err(OpenError::DecryptFailed)
    );
}

#[test]
fn unpinned_key_is_unknown() {
    let f = fixture();
    let stranger = ServerSigningKey::generate().unwrap();
    let err = verify_job(&f.job, &[stranger.verifying_key()]).unwrap_err();
    assert_eq!(err, OpenError::UnknownSigningKey);
    assert_eq!(err.error_class(), ErrorClass::UnknownSigningKey);
    assert_eq!(verify_job(&f.job, &[]), Err(OpenError::UnknownSigningKey));
}

#[test]
fn key_id_swapped_to_another_pinned_key_fails_signature() {
    let f = fixture();
    let other = ServerSigningKey::generate().unwrap();
    let mut h = f.header.clone();
    h.key_id = other.fingerprint();
    let mut j = f.job.clone();
    j.header = B64Vec(serde_json::to_vec(&h).unwrap());
    let pinned = [f.signer.verifying_key(), other.verifying_key()];
    assert_eq!(verify_job(&j, &pinned), Err(OpenError::BadSignature));
}

#[test]
fn forged_job_from_another_signer_is_refused() {
    // An attacker with their own key, claiming the pinned key's id.
    let f = fixture();
    let attacker = ServerSigningKey::generate().unwrap();
    let mut h = f.header.clone();
    h.key_id = attacker.fingerprint();
    let mut forged = seal_job(&h, &f.spec, &f.agent.x25519_public(), &attacker).unwrap();
    let header_bytes = serde_json::to_vec(&f.header).unwrap(); // claims the pinned key
    forged.sig = B64(attacker.sign(&SealedJob::signed_bytes(
        &header_bytes,
        &forged.enc.0,
        &forged.ct.0,
    )));
    forged.header = B64Vec(header_bytes);
    assert_eq!(accept(&forged, &f), Err(OpenError::BadSignature));
}

#[test]
fn kind_mismatch_is_refused() {
    // The server refuses to seal one...
    let f = fixture();
    let h = header(&f.signer, JobKind::DeleteRule);
    assert!(matches!(
        seal_job(&h, &f.spec, &f.agent.x25519_public(), &f.signer),
        Err(CryptoError::InvalidJob { .. })
    ));
    // ...and an agent refuses one built by hand with the same primitives.
    let header_bytes = serde_json::to_vec(&h).unwrap();
    let pt = serde_json::to_vec(&spec(JobAction::DisableRule {
        rule: RuleRef {
            rule_id: Uuid::new_v4(),
        },
    }))
    .unwrap();
    let (enc, ct) = hpke_seal(&f.agent.x25519_public(), JOB_HPKE_INFO, &header_bytes, &pt).unwrap();
    let sig = f
        .signer
        .sign(&SealedJob::signed_bytes(&header_bytes, &enc, &ct));
    let job = SealedJob {
        header: B64Vec(header_bytes),
        enc: B64(enc),
        ct: B64Vec(ct),
        sig: B64(sig),
    };
    let err = accept(&job, &f).unwrap_err();
    assert_eq!(err, OpenError::KindMismatch);
    assert_eq!(err.error_class(), ErrorClass::MalformedJob);
}

#[test]
fn malformed_spec_is_refused() {
    let f = fixture();
    let header_bytes = serde_json::to_vec(&f.header).unwrap();
    let (enc, ct) = hpke_seal(
        &f.agent.x25519_public(),
        JOB_HPKE_INFO,
        &header_bytes,
        b"{not json",
    )
    .unwrap();
    let sig = f
        .signer
        .sign(&SealedJob::signed_bytes(&header_bytes, &enc, &ct));
    let job = SealedJob {
        header: B64Vec(header_bytes),
        enc: B64(enc),
        ct: B64Vec(ct),
        sig: B64(sig),
    };
    assert_eq!(accept(&job, &f), Err(OpenError::MalformedSpec));
}

#[test]
fn another_agents_key_cannot_decrypt() {
    let f = fixture();
    let other = AgentKeys::generate().unwrap();
    let h = verify_job(&f.job, &[f.signer.verifying_key()]).unwrap();
    let err = open_job(&f.job, &h, &other).unwrap_err();
    assert_eq!(err, OpenError::DecryptFailed);
    assert_eq!(err.error_class(), ErrorClass::DecryptFailed);
}

#[test]
fn header_from_another_job_is_refused() {
    let f = fixture();
    let other = seal_job(
        &header(&f.signer, JobKind::CheckConnection),
        &f.spec,
        &f.agent.x25519_public(),
        &f.signer,
    )
    .unwrap();
    let other_header = verify_job(&other, &[f.signer.verifying_key()]).unwrap();
    assert_eq!(
        open_job(&f.job, &other_header, &f.agent),
        Err(OpenError::MalformedHeader)
    );
}

#[test]
fn oversized_or_garbage_headers() {
    let f = fixture();
    let mut j = f.job.clone();
    j.header = B64Vec(vec![b' '; MAX_HEADER_BYTES + 1]);
    let err = verify_job(&j, &[f.signer.verifying_key()]).unwrap_err();
    assert_eq!(err, OpenError::HeaderTooLarge);
    assert_eq!(err.error_class(), ErrorClass::MalformedJob);
    assert_eq!(peek_job_id(&j), None);

    j.header = B64Vec(b"[1,2,3]".to_vec());
    assert_eq!(
        verify_job(&j, &[f.signer.verifying_key()]),
        Err(OpenError::MalformedHeader)
    );
    assert_eq!(peek_job_id(&j), None);
}

#[test]
fn peek_reads_the_id_of_a_tampered_job() {
    let f = fixture();
    let mut j = f.job.clone();
    let last = j.ct.0.len() - 1;
    j.ct.0[last] ^= 1;
    assert_eq!(accept(&j, &f), Err(OpenError::BadSignature));
    assert_eq!(peek_job_id(&j), Some(f.header.job_id));
}

#[test]
fn seal_refuses_a_header_naming_another_key() {
    let f = fixture();
    let other = ServerSigningKey::generate().unwrap();
    let h = header(&other, JobKind::CheckConnection);
    assert!(matches!(
        seal_job(&h, &f.spec, &f.agent.x25519_public(), &f.signer),
        Err(CryptoError::InvalidJob { .. })
    ));
}

#[test]
fn low_order_agent_key_is_refused_when_sealing() {
    let f = fixture();
    // The all-zero u-coordinate is a low-order point: the DH output would be zero.
    assert_eq!(
        seal_job(&f.header, &f.spec, &[0u8; 32], &f.signer).unwrap_err(),
        CryptoError::BadPublicKey
    );
}

#[test]
fn hpke_low_level_round_trip_and_binding() {
    let agent = AgentKeys::generate().unwrap();
    let sk = agent.x25519_secret_bytes();
    let (enc, ct) = hpke_seal(&agent.x25519_public(), b"info", b"aad", b"hello").unwrap();
    assert_eq!(
        hpke_open(&sk, &enc, b"info", b"aad", &ct)
            .unwrap()
            .as_slice(),
        b"hello"
    );
    assert_eq!(
        hpke_open(&sk, &enc, b"info", b"aaD", &ct),
        Err(CryptoError::Decrypt)
    );
    assert_eq!(
        hpke_open(&sk, &enc, b"inf0", b"aad", &ct),
        Err(CryptoError::Decrypt)
    );
    assert_eq!(
        hpke_open(&sk, &enc[..31], b"info", b"aad", &ct),
        Err(CryptoError::Decrypt)
    );
    // Two seals of the same message differ (fresh ephemeral key each time).
    let (enc2, ct2) = hpke_seal(&agent.x25519_public(), b"info", b"aad", b"hello").unwrap();
    assert_ne!(enc, enc2);
    assert_ne!(ct, ct2);
}

#[test]
fn error_classes() {
    use OpenError::*;
    let cases = [
        (MalformedHeader, ErrorClass::MalformedJob),
        (HeaderTooLarge, ErrorClass::MalformedJob),
        (UnknownSigningKey, ErrorClass::UnknownSigningKey),
        (BadSignature, ErrorClass::BadSignature),
        (DecryptFailed, ErrorClass::DecryptFailed),
        (MalformedSpec, ErrorClass::MalformedJob),
        (KindMismatch, ErrorClass::MalformedJob),
    ];
    for (e, c) in cases {
        assert_eq!(e.error_class(), c, "{e:?}");
    }
}
