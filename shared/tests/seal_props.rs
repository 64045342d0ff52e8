//! Property tests of sealed jobs (issue 3, "Proof"):
//!
//! - any change to any byte of a sealed job — header, `enc`, ciphertext or
//!   signature set to any other value, or the header or ciphertext truncated
//!   or extended — is refused by `verify_job` + `open_job`;
//! - any job spec survives sealing and opening unchanged.
//!
//! 256 cases per property keeps the suite fast (each case is one HPKE
//! operation and one or two Ed25519 operations).

// Tests: a failed unwrap is a failed assertion, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use picket_proto::{
    Credential, JobAction, JobHeader, JobSpec, RuleRef, RuleSpec, Schedule, SealedJob, Severity,
    SiemSettings, SiemTarget, SplunkSettings,
};
use picket_shared::seal::{open_job, seal_job, verify_job};
use picket_shared::{AgentKeys, ServerSigningKey};
use proptest::prelude::*;
use uuid::Uuid;

fn signer() -> ServerSigningKey {
    ServerSigningKey::from_seed(&[0x51; 32])
}

fn agent() -> AgentKeys {
    AgentKeys::from_bytes(&[0xA7; 32], &[0xA8; 32])
}

fn header_for(spec: &JobSpec, signer: &ServerSigningKey) -> JobHeader {
    JobHeader {
        job_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        agent_id: Uuid::from_u128(2),
        tenant_id: Uuid::from_u128(3),
        seq: 42,
        issued_at: 1_700_000_000,
        expires_at: 1_700_000_900,
        kind: spec.kind(),
        key_id: signer.fingerprint(),
    }
}

fn fixed_spec() -> JobSpec {
    JobSpec {
        target: SiemTarget {
            connection_id: Uuid::from_u128(9),
            name: "prod".into(),
            settings: SiemSettings::Splunk(SplunkSettings {
                base_url: "https://splunk.corp:8089".into(),
                app: "search".into(),
                owner: "nobody".into(),
                token: Credential::new("tok-5ecret".into()),
                login: None,
                hec: None,
            }),
        },
        action: JobAction::DeployRule {
            rule: RuleSpec {
                rule_id: Uuid::from_u128(10),
                version: 3,
                title: "Suspicious PowerShell".into(),
                description: "Encoded command line".into(),
                severity: Severity::High,
                query: "index=win EventCode=4688 CommandLine=\"*-enc*\"".into(),
                schedule: Schedule {
                    cron: "*/5 * * * *".into(),
                    earliest: "-10m".into(),
                    latest: "now".into(),
                },
            },
        },
    }
}

/// One job sealed once for all mutation cases (sealing is randomized; the
/// mutations are what varies).
fn sealed() -> &'static SealedJob {
    static JOB: OnceLock<SealedJob> = OnceLock::new();
    JOB.get_or_init(|| {
        let signer = signer();
        let spec = fixed_spec();
        seal_job(
            &header_for(&spec, &signer),
            &spec,
            &agent().x25519_public(),
            &signer,
        )
        .unwrap()
    })
}

/// What the agent does: verify under the pinned key, then open.
fn accept(job: &SealedJob) -> bool {
    let pinned = [signer().verifying_key()];
    verify_job(job, &pinned)
        .and_then(|header| open_job(job, &header, &agent()))
        .is_ok()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Field 0..4 (header, enc, ct, sig), byte position (mod length), XOR mask (non-zero).
    SetByte { field: u8, pos: usize, xor: u8 },
    /// Keep only the first `len` bytes (mod the current length) of header (0) or ct (1).
    Truncate { field: u8, len: usize },
    /// Append bytes to header (0) or ct (1).
    Extend { field: u8, extra: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0u8..4, any::<usize>(), 1u8..=255).prop_map(|(field, pos, xor)| Mutation::SetByte {
            field,
            pos,
            xor
        }),
        (0u8..2, any::<usize>()).prop_map(|(field, len)| Mutation::Truncate { field, len }),
        (0u8..2, proptest::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(field, extra)| Mutation::Extend { field, extra }),
    ]
}

fn apply(job: &SealedJob, m: &Mutation) -> SealedJob {
    let mut job = job.clone();
    match m {
        Mutation::SetByte { field, pos, xor } => {
            let bytes: &mut [u8] = match field {
                0 => &mut job.header.0,
                1 => &mut job.enc.0,
                2 => &mut job.ct.0,
                _ => &mut job.sig.0,
            };
            let i = pos % bytes.len();
            bytes[i] ^= xor;
        }
        Mutation::Truncate { field, len } => {
            let bytes = if *field == 0 {
                &mut job.header.0
            } else {
                &mut job.ct.0
            };
            let keep = len % bytes.len(); // strictly shorter, possibly empty
            bytes.truncate(keep);
        }
        Mutation::Extend { field, extra } => {
            let bytes = if *field == 0 {
                &mut job.header.0
            } else {
                &mut job.ct.0
            };
            bytes.extend_from_slice(extra);
        }
    }
    job
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including quotes, backslashes and control characters
    // (JSON escaping must round-trip them).
    ".{0,40}"
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Info),
        Just(Severity::Low),
        Just(Severity::Medium),
        Just(Severity::High),
        Just(Severity::Critical),
    ]
}

fn action() -> impl Strategy<Value = JobAction> {
    let rule = (
        uuid(),
        any::<u32>(),
        text(),
        text(),
        severity(),
        ".{0,200}",
        (text(), text(), text()),
    )
        .prop_map(
            |(rule_id, version, title, description, severity, query, (cron, earliest, latest))| {
                RuleSpec {
                    rule_id,
                    version,
                    title,
                    description,
                    severity,
                    query,
                    schedule: Schedule {
                        cron,
                        earliest,
                        latest,
                    },
                }
            },
        );
    prop_oneof![
        rule.prop_map(|rule| JobAction::DeployRule { rule }),
        uuid().prop_map(|rule_id| JobAction::DisableRule {
            rule: RuleRef { rule_id }
        }),
        uuid().prop_map(|rule_id| JobAction::DeleteRule {
            rule: RuleRef { rule_id }
        }),
        Just(JobAction::CheckConnection),
    ]
}

fn spec() -> impl Strategy<Value = JobSpec> {
    (uuid(), text(), text(), text(), text(), text(), action()).prop_map(
        |(connection_id, name, base_url, app, owner, token, action)| JobSpec {
            target: SiemTarget {
                connection_id,
                name,
                settings: SiemSettings::Splunk(SplunkSettings {
                    base_url,
                    app,
                    owner,
                    token: Credential::new(token),
                    login: None,
                    hec: None,
                }),
            },
            action,
        },
    )
}

#[test]
fn the_unmodified_job_is_accepted() {
    assert!(accept(sealed()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_mutation_is_refused(m in mutation()) {
        let original = sealed();
        let mutated = apply(original, &m);
        prop_assert_ne!(&mutated, original);
        prop_assert!(!accept(&mutated), "accepted after {:?}", m);
    }

    #[test]
    fn any_spec_round_trips(spec in spec()) {
        let signer = signer();
        let agent = agent();
        let header = header_for(&spec, &signer);
        let job = seal_job(&header, &spec, &agent.x25519_public(), &signer).unwrap();
        let verified = verify_job(&job, &[signer.verifying_key()]).unwrap();
        prop_assert_eq!(&verified, &header);
        let opened = open_job(&job, &verified, &agent).unwrap();
        prop_assert_eq!(opened, spec);
    }
}
