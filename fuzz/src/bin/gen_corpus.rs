//! Writes the seed corpora of the fuzz targets under `fuzz/corpus/<target>/`:
//! valid frames of every kind, jobs sealed with the fixed test keys, and
//! enrollment tokens. Files are named by a hash of their content, so running
//! it again only adds files (sealing is randomized: new jobs each run).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --bin gen_corpus`

use std::collections::hash_map::DefaultHasher;
use std::error::Error;
use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;

use picket_proto::{
    AgentMsg, AgentVersion, B64, Challenge, ConnectionInfo, Credential, EnrollmentToken,
    ErrorClass, Hello, JobAction, JobHeader, JobResult, JobSpec, KeyFingerprint, KeyLink,
    KeysRotated, Outcome, RotateKeys, RuleRef,
    RuleSpec, Schedule, SealedJob, ServerMsg, Severity, SiemKind, SiemSettings, SiemTarget,
    SplunkSettings, Welcome, encode,
};
use picket_shared::seal::{open_job, seal_job, verify_job};
use uuid::Uuid;

fn write(dir: &Path, bytes: &[u8]) -> Result<(), Box<dyn Error>> {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    fs::write(dir.join(format!("seed-{:016x}", h.finish())), bytes)?;
    Ok(())
}

fn spec(action: JobAction) -> JobSpec {
    JobSpec {
        target: SiemTarget {
            connection_id: Uuid::from_u128(9),
            name: "prod".into(),
            settings: SiemSettings::Splunk(SplunkSettings {
                base_url: "https://splunk.corp:8089".into(),
                app: "search".into(),
                owner: "nobody".into(),
                token: Credential::new("fuzz-token".into()),
                login: None,
                hec: None,
            }),
        },
        action,
    }
}

fn jobs() -> Result<Vec<SealedJob>, Box<dyn Error>> {
    let server = picket_fuzz::server_key();
    let agent = picket_fuzz::agent_keys();
    let rule = RuleSpec {
        rule_id: Uuid::from_u128(10),
        version: 1,
        title: "Encoded PowerShell".into(),
        description: "powershell -enc".into(),
        severity: Severity::High,
        query: "index=win EventCode=4688 CommandLine=\"*-enc*\"".into(),
        schedule: Schedule {
            cron: "*/5 * * * *".into(),
            earliest: "-10m".into(),
            latest: "now".into(),
        },
    };
    let actions = [
        JobAction::CheckConnection,
        JobAction::DeployRule { rule },
        JobAction::DisableRule {
            rule: RuleRef {
                rule_id: Uuid::from_u128(10),
            },
        },
        JobAction::DeleteRule {
            rule: RuleRef {
                rule_id: Uuid::from_u128(10),
            },
        },
    ];
    let mut out = Vec::new();
    for (seq, action) in (1u64..).zip(actions) {
        let spec = spec(action);
        let header = JobHeader {
            job_id: Uuid::now_v7(),
            agent_id: Uuid::from_u128(2),
            tenant_id: Uuid::from_u128(3),
            seq,
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_900,
            kind: spec.kind(),
            key_id: server.fingerprint(),
        };
        let job = seal_job(&header, &spec, &agent.x25519_public(), &server)?;
        // A seed is only useful if it gets all the way through the agent's path.
        let verified = verify_job(&job, &[server.verifying_key()])?;
        if open_job(&job, &verified, &agent)? != spec {
            return Err("a seed job does not open to its spec".into());
        }
        out.push(job);
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let frames = root.join("decode_frames");
    let open = root.join("open_job");
    let tokens = root.join("enroll_token");
    for d in [&frames, &open, &tokens] {
        fs::create_dir_all(d)?;
    }

    let jobs = jobs()?;
    for job in &jobs {
        write(&open, &serde_json::to_vec(job)?)?;
    }

    let server_frames = [
        ServerMsg::Challenge(Challenge {
            nonce: B64([7; 32]),
            server_key: picket_fuzz::server_key().fingerprint(),
            key_chain: Vec::new(),
        }),
        ServerMsg::Welcome(Welcome {
            agent_id: Uuid::from_u128(2),
            heartbeat_secs: 30,
            health_secs: 60,
            max_frame_bytes: 1 << 20,
            connections: vec![ConnectionInfo {
                connection_id: Uuid::from_u128(9),
                name: "prod".into(),
                kind: SiemKind::Splunk,
                base_url: "https://splunk.corp:8089".into(),
            }],
        }),
        ServerMsg::Job {
            job: jobs[0].clone(),
        },
        ServerMsg::ResultAck {
            job_id: Uuid::from_u128(5),
        },
        ServerMsg::Ping { t: 17 },
        ServerMsg::RetryAfter { secs: 30 },
        ServerMsg::Revoked {
            proof: B64([3; 64]),
        },
        // Key rotation (issue 3).
        ServerMsg::Challenge(Challenge {
            nonce: B64([7; 32]),
            server_key: picket_fuzz::server_key().fingerprint(),
            key_chain: vec![KeyLink {
                public: B64(picket_fuzz::server_key().verifying_key().to_bytes()),
                prev_key_id: KeyFingerprint([0xab; 32]),
                prev_valid_until: 1_800_000_000,
                sig: B64([5; 64]),
            }],
        }),
        ServerMsg::RequestKeyRotation,
        ServerMsg::KeysRotated(KeysRotated {
            ed25519_public: B64([1; 32]),
            x25519_public: B64([2; 32]),
            proof: B64([3; 64]),
        }),
    ];
    for msg in &server_frames {
        write(&frames, encode(msg)?.as_bytes())?;
    }
    let agent_frames = [
        AgentMsg::Hello(Hello {
            agent_id: Uuid::from_u128(2),
            version: AgentVersion::new("0.1.0")?,
            capabilities: vec![SiemKind::Splunk],
            signature: B64([9; 64]),
        }),
        AgentMsg::JobAck {
            job_id: Uuid::from_u128(5),
        },
        AgentMsg::JobResult(JobResult {
            job_id: Uuid::from_u128(5),
            outcome: Outcome::Failed,
            error_class: Some(ErrorClass::AuthFailed),
            duration_ms: 120,
            content_hash: Some(B64([4; 32])),
            items: None,
            test_counts: None,
            rule_health: None,
        }),
        AgentMsg::Pong { t: 17 },
        AgentMsg::RotateKeys(RotateKeys {
            x25519_public: B64([1; 32]),
            ed25519_public: B64([2; 32]),
            old_sig: B64([3; 64]),
            new_sig: B64([4; 64]),
        }),
    ];
    for msg in &agent_frames {
        write(&frames, encode(msg)?.as_bytes())?;
    }

    let token = EnrollmentToken {
        secret: [0x42; 32],
        fingerprint: picket_fuzz::server_key().fingerprint(),
    };
    write(&tokens, token.to_text().as_bytes())?;
    write(&tokens, format!("{}\n", token.to_text()).as_bytes())?;
    let zero = EnrollmentToken {
        secret: [0; 32],
        fingerprint: KeyFingerprint([0xff; 32]),
    };
    write(&tokens, zero.to_text().as_bytes())?;
    write(&tokens, b"pkt1.AAAA.00")?;

    println!(
        "seeds written under {}: {} frames, {} jobs, 4 tokens",
        root.display(),
        server_frames.len() + agent_frames.len(),
        jobs.len()
    );
    Ok(())
}
