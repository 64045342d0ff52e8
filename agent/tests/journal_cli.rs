//! `picket-agent journal` with the real binary: entries written by the
//! library (as the job worker writes them), read back newest last as an
//! aligned table or as JSON lines, across rotated files.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use picket_agent::journal::{Journal, JournalEntry};
use picket_proto::{ErrorClass, JobKind, Outcome};
use uuid::Uuid;

fn run(state_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-agent"))
        .arg("--config")
        .arg(state_dir.join("no-such-agent.toml"))
        .arg("journal")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .env_remove("PICKET_AGENT_STATE_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn entry(n: u128, outcome: Outcome, class: Option<ErrorClass>) -> JournalEntry {
    JournalEntry {
        kind: Some(JobKind::DeployRule),
        rule_id: Some(Uuid::from_u128(1000 + n)),
        connection_id: Some(Uuid::from_u128(7)),
        ..JournalEntry::now(Some(Uuid::from_u128(n)), outcome, class)
    }
}

#[test]
fn prints_the_newest_entries_last_as_a_table_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(dir.path(), &[]);
    assert!(ok);
    assert!(out.contains("no jobs in the journal"), "{out}");

    // Small files so the entries span rotated files.
    let mut j = Journal::open_with_limits(dir.path(), 600, 5).unwrap();
    j.append(&entry(1, Outcome::Succeeded, None)).unwrap();
    j.append(&entry(2, Outcome::Failed, Some(ErrorClass::AuthFailed)))
        .unwrap();
    j.append(&JournalEntry::now(
        None,
        Outcome::Refused,
        Some(ErrorClass::BadSignature),
    ))
    .unwrap();
    j.append(&entry(4, Outcome::Refused, Some(ErrorClass::PolicyDenied)))
        .unwrap();
    drop(j);
    assert!(dir.path().join("journal.jsonl.1").exists(), "rotated");

    let (ok, out, err) = run(dir.path(), &[]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("TIME"), "{out}");
    // Columns line up: each column starts at the same offset on every line.
    let col = |l: &str, name: &str| l.find(name);
    let outcome_at = col(lines[0], "OUTCOME").unwrap();
    assert_eq!(&lines[1][outcome_at..outcome_at + 9], "succeeded");
    assert_eq!(&lines[2][outcome_at..outcome_at + 6], "failed");
    assert!(lines[2].contains("auth_failed"));
    assert!(lines[3].contains("bad_signature") && lines[3].contains(" - "));
    assert!(lines[4].ends_with("policy_denied"), "{out}");
    assert!(lines[4].contains(&Uuid::from_u128(4).to_string()));

    let (ok, out, _) = run(dir.path(), &["--limit", "2", "--json"]);
    assert!(ok);
    let got: Vec<JournalEntry> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].job_id, None);
    assert_eq!(got[1].job_id, Some(Uuid::from_u128(4)));
    assert_eq!(got[1].error_class, Some(ErrorClass::PolicyDenied));
    assert_eq!(got[1].rule_id, Some(Uuid::from_u128(1004)));
}
