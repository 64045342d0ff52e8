//! The customer's local journal: one JSON line per job the agent ran or
//! refused, for the customer's own review (`picket-agent journal`).
//!
//! Why it is separate from the ledger: the ledger is the agent's
//! idempotency record, compacted and holding only jobs that passed the
//! signature, addressing, freshness and replay checks. The journal is for
//! people: it records **every** decision, including refusals the ledger
//! never sees (bad signature, wrong agent, expired, replayed), and it is
//! never compacted, only rotated.
//!
//! File: `journal.jsonl` in the state directory, append-only, each line
//! flushed (not fsynced: it is an audit aid, not the replay barrier). When a
//! line would push the file past [`DEFAULT_MAX_BYTES`] it is rotated:
//! `journal.jsonl.1` (newest) … `journal.jsonl.5` (oldest, dropped next time).
//!
//! A line holds numbers, enums and server-issued identifiers only (never SIEM
//! text or credentials):
//!
//! ```json
//! {"time":"2026-11-23T12:00:00Z","job_id":"…","kind":"deploy_rule","rule_id":"…","connection_id":"…","outcome":"succeeded","error_class":null}
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use picket_proto::{ErrorClass, JobKind, Outcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// Size past which the journal is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`journal.jsonl.1` … `.5`).
pub const DEFAULT_KEEP: usize = 5;

/// One job decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When the decision was made, RFC 3339 UTC.
    pub time: String,
    /// The job, when it could be read (a job whose header cannot be parsed has none).
    pub job_id: Option<Uuid>,
    /// The job kind, when known from a verified header.
    pub kind: Option<JobKind>,
    /// The rule the job acts on, when known (after decryption).
    pub rule_id: Option<Uuid>,
    /// The SIEM connection, when known (after decryption).
    pub connection_id: Option<Uuid>,
    /// What happened.
    pub outcome: Outcome,
    /// Why it failed or was refused.
    pub error_class: Option<ErrorClass>,
    /// Set on the entry of a refused audit checkpoint (no job involved;
    /// see `witness.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_alarm: Option<picket_proto::AuditAlarm>,
}

impl JournalEntry {
    /// An entry stamped with the current time.
    pub fn now(job_id: Option<Uuid>, outcome: Outcome, error_class: Option<ErrorClass>) -> Self {
        JournalEntry {
            time: rfc3339_now(),
            job_id,
            kind: None,
            rule_id: None,
            connection_id: None,
            outcome,
            error_class,
            audit_alarm: None,
        }
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The open journal (the job worker is its only writer).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl Journal {
    /// Opens (creating) `journal.jsonl` in `dir` with the default limits.
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with_limits(dir, DEFAULT_MAX_BYTES, DEFAULT_KEEP)
    }

    /// Opens with explicit rotation limits (tests use small ones).
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub fn open_with_limits(dir: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Journal {
            path,
            file,
            size,
            max_bytes,
            keep: keep.max(1),
        })
    }

    /// Appends one entry (rotating first if it would not fit) and flushes.
    ///
    /// # Errors
    /// If writing or rotating fails.
    pub fn append(&mut self, entry: &JournalEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let _ = fs::remove_file(rotated(dir, self.keep));
        for n in (1..self.keep).rev() {
            let from = rotated(dir, n);
            if from.exists() {
                fs::rename(&from, rotated(dir, n + 1))?;
            }
        }
        fs::rename(&self.path, rotated(dir, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// The last `limit` entries in `dir`, oldest first, across rotated files.
    /// Lines that do not parse are skipped and counted.
    ///
    /// # Errors
    /// If a file exists but cannot be read.
    pub fn read_last(dir: &Path, limit: usize) -> io::Result<(Vec<JournalEntry>, usize)> {
        let mut files: Vec<PathBuf> = (1..=DEFAULT_KEEP.max(9))
            .rev()
            .map(|n| rotated(dir, n))
            .collect();
        files.push(dir.join(JOURNAL_FILE));
        let mut out = std::collections::VecDeque::with_capacity(limit.min(10_000));
        let mut bad = 0usize;
        for p in files {
            let f = match File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<JournalEntry>(&line) {
                    Ok(e) => {
                        if out.len() == limit {
                            out.pop_front();
                        }
                        if limit > 0 {
                            out.push_back(e);
                        }
                    }
                    Err(_) => bad += 1,
                }
            }
        }
        Ok((out.into(), bad))
    }
}

fn rotated(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{JOURNAL_FILE}.{n}"))
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u128) -> JournalEntry {
        JournalEntry {
            kind: Some(JobKind::DeployRule),
            ..JournalEntry::now(
                Some(Uuid::from_u128(i)),
                Outcome::Refused,
                Some(ErrorClass::PolicyDenied),
            )
        }
    }

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = serde_json::to_vec(&entry(0)).unwrap().len() as u64 + 1;
        // Three lines per file, two rotated files kept.
        let mut j = Journal::open_with_limits(dir.path(), line_len * 3, 2).unwrap();
        for i in 0..10 {
            j.append(&entry(i)).unwrap();
        }
        // 10 lines: current holds 9 (1 line), .1 holds 6..8, .2 holds 3..5; 0..2 dropped.
        assert!(dir.path().join("journal.jsonl.1").exists());
        assert!(dir.path().join("journal.jsonl.2").exists());
        assert!(!dir.path().join("journal.jsonl.3").exists());
        let (all, bad) = Journal::read_last(dir.path(), 100).unwrap();
        assert_eq!(bad, 0);
        let ids: Vec<u128> = all.iter().map(|e| e.job_id.unwrap().as_u128()).collect();
        assert_eq!(ids, (3..10).collect::<Vec<_>>());
        let (last, _) = Journal::read_last(dir.path(), 2).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[1].job_id, Some(Uuid::from_u128(9)));
        // Reopening continues the same file and size accounting.
        drop(j);
        let mut j = Journal::open_with_limits(dir.path(), line_len * 3, 2).unwrap();
        j.append(&entry(10)).unwrap();
        j.append(&entry(11)).unwrap();
        j.append(&entry(12)).unwrap();
        let (all, _) = Journal::read_last(dir.path(), 100).unwrap();
        assert_eq!(all.last().unwrap().job_id, Some(Uuid::from_u128(12)));
        assert!(all.len() <= 9);
    }

    #[test]
    fn damaged_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&entry(1)).unwrap();
        drop(j);
        let mut f = open_append(&dir.path().join(JOURNAL_FILE)).unwrap();
        f.write_all(b"{not json\n").unwrap();
        let (all, bad) = Journal::read_last(dir.path(), 10).unwrap();
        assert_eq!((all.len(), bad), (1, 1));
        assert_eq!(Journal::read_last(dir.path(), 0).unwrap().0.len(), 0);
    }
}
