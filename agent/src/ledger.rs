//! The durable job ledger: what makes the agent idempotent across crashes,
//! reconnects and server resends, and the customer's local journal of jobs.
//!
//! One append-only file of JSON lines, `ledger.jsonl`, in the state
//! directory. Every append is fsynced before the call returns:
//!
//! - `accepted {seq, job_id, kind}` is written **before** a job runs, so a
//!   crash mid-run is detected at the next delivery (answered `interrupted`,
//!   never run twice);
//! - `finished {job_id, result}` holds the outcome to resend if the job is
//!   delivered again;
//! - `acked {job_id}` records that the server durably holds the result.
//!
//! The highest `seq` ever accepted is the replay barrier: a job with a
//! `seq` at or below it that the ledger does not know is refused as replayed.
//!
//! Crash safety: a crash can leave only the last line incomplete (appends are
//! single writes at the end). On open, an unparsable **last** line is
//! dropped and the file truncated to the last good line; an unparsable line
//! anywhere else is corruption and opening fails with its line number.
//!
//! Growth: past [`COMPACT_AFTER_LINES`] lines the ledger is rewritten into a
//! new file (temp + fsync + rename) holding a `base {max_seq}` line, every
//! unfinished or unacknowledged job, and the last [`KEEP_RESULTS`] results.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use picket_proto::{JobKind, JobResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// File name of the ledger inside the state directory.
pub const LEDGER_FILE: &str = "ledger.jsonl";
/// Line count past which the ledger is compacted.
pub const COMPACT_AFTER_LINES: usize = 10_000;
/// Finished results kept (beyond unacknowledged ones) when compacting.
pub const KEEP_RESULTS: usize = 1_000;

/// Why the ledger could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Reading, writing, syncing or renaming the file failed.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line other than the last one cannot be parsed: the file was damaged
    /// by something other than a crash mid-append. The agent refuses to guess.
    #[error(
        "ledger {path} is corrupt at line {line} ({reason}); move it aside to start a new one \
         (jobs already run may then be refused as replayed)"
    )]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// First line of a compacted ledger: the replay barrier of the history it replaced.
    Base {
        /// Highest `seq` accepted so far.
        max_seq: u64,
    },
    /// A job passed every check and is about to run.
    Accepted {
        /// Its sequence number.
        seq: u64,
        /// The job.
        job_id: Uuid,
        /// Its kind (for the local journal).
        kind: JobKind,
        /// Unix seconds when it was accepted.
        at: i64,
    },
    /// The job's final result.
    Finished {
        /// The job.
        job_id: Uuid,
        /// What is sent (and resent) to the server (boxed: with its test
        /// counts it is far larger than the other records).
        result: Box<JobResult>,
        /// Unix seconds when it finished.
        at: i64,
    },
    /// The server durably recorded the result.
    Acked {
        /// The job.
        job_id: Uuid,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    kind: JobKind,
    accepted_at: i64,
    result: Option<(JobResult, i64)>,
    acked: bool,
}

/// The replayed content of a ledger file.
#[derive(Debug, Default, Clone)]
struct Index {
    max_seq: u64,
    jobs: HashMap<Uuid, Entry>,
    /// Finished jobs in the order they finished (for compaction and `last`).
    finished: VecDeque<Uuid>,
}

impl Index {
    fn apply(&mut self, rec: &Record) {
        match *rec {
            Record::Base { max_seq } => self.max_seq = self.max_seq.max(max_seq),
            Record::Accepted {
                seq,
                job_id,
                kind,
                at,
            } => {
                self.max_seq = self.max_seq.max(seq);
                self.jobs.entry(job_id).or_insert(Entry {
                    seq,
                    kind,
                    accepted_at: at,
                    result: None,
                    acked: false,
                });
            }
            Record::Finished {
                job_id,
                ref result,
                at,
            } => {
                if let Some(e) = self.jobs.get_mut(&job_id)
                    && e.result.is_none()
                {
                    e.result = Some(((**result).clone(), at));
                    self.finished.push_back(job_id);
                }
            }
            Record::Acked { job_id } => {
                if let Some(e) = self.jobs.get_mut(&job_id) {
                    e.acked = true;
                }
            }
        }
    }
}

/// What `picket-agent status` shows about the last job.
#[derive(Debug, Clone, PartialEq)]
pub struct LastJob {
    /// The job.
    pub job_id: Uuid,
    /// Its kind.
    pub kind: JobKind,
    /// Its result.
    pub result: JobResult,
    /// Unix seconds when it finished.
    pub finished_at: i64,
    /// Whether the server acknowledged the result.
    pub acked: bool,
}

/// The open ledger. Single writer: the job worker owns it.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    lines: usize,
    index: Index,
    compact_after: usize,
    keep_results: usize,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`, replaying it and truncating an
    /// incomplete last line.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] for damage before the last line, [`LedgerError::Io`] otherwise.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        Self::open_with_limits(dir, COMPACT_AFTER_LINES, KEEP_RESULTS)
    }

    /// [`Ledger::open`] with other compaction limits (tests).
    ///
    /// # Errors
    /// As [`Ledger::open`].
    pub fn open_with_limits(
        dir: &Path,
        compact_after: usize,
        keep_results: usize,
    ) -> Result<Self, LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let io_err = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        let loaded = load(&path)?;
        let file = open_append(&path).map_err(io_err)?;
        if loaded.good_len < loaded.total_len {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = loaded.total_len - loaded.good_len,
                "ledger ended with an incomplete record (crash mid-write); truncating it"
            );
            file.set_len(loaded.good_len).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let mut ledger = Ledger {
            path,
            file,
            lines: loaded.lines,
            index: loaded.index,
            compact_after: compact_after.max(1),
            keep_results,
        };
        if ledger.lines > ledger.compact_after {
            ledger.compact()?;
        }
        Ok(ledger)
    }

    /// Reads the ledger in `dir` without modifying it (for `status`); `None` if there is none.
    ///
    /// # Errors
    /// As [`Ledger::open`].
    pub fn last_job_in(dir: &Path) -> Result<Option<LastJob>, LedgerError> {
        let path = dir.join(LEDGER_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let loaded = load(&path)?;
        Ok(last_of(&loaded.index))
    }

    /// Highest `seq` ever accepted (0 when none).
    pub fn max_seq(&self) -> u64 {
        self.index.max_seq
    }

    /// The stored result of a job, if it finished.
    pub fn result_for(&self, job_id: &Uuid) -> Option<JobResult> {
        self.index
            .jobs
            .get(job_id)
            .and_then(|e| e.result.as_ref().map(|(r, _)| r.clone()))
    }

    /// Whether the job was accepted but has no result: the agent stopped while it ran.
    pub fn is_accepted_unfinished(&self, job_id: &Uuid) -> bool {
        self.index
            .jobs
            .get(job_id)
            .is_some_and(|e| e.result.is_none())
    }

    /// Every result the server has not acknowledged, in the order they finished.
    pub fn unacked_results(&self) -> Vec<JobResult> {
        self.index
            .finished
            .iter()
            .filter_map(|id| self.index.jobs.get(id))
            .filter(|e| !e.acked)
            .filter_map(|e| e.result.as_ref().map(|(r, _)| r.clone()))
            .collect()
    }

    /// The last job that finished.
    pub fn last_job(&self) -> Option<LastJob> {
        last_of(&self.index)
    }

    /// Records that a job is about to run (fsynced before returning).
    ///
    /// # Errors
    /// [`LedgerError::Io`]: the job must then not run.
    pub fn record_accepted(
        &mut self,
        seq: u64,
        job_id: Uuid,
        kind: JobKind,
    ) -> Result<(), LedgerError> {
        self.append(&Record::Accepted {
            seq,
            job_id,
            kind,
            at: unix_now(),
        })
    }

    /// Records a job's final result (fsynced before returning).
    ///
    /// # Errors
    /// [`LedgerError::Io`].
    pub fn record_finished(&mut self, result: JobResult) -> Result<(), LedgerError> {
        self.append(&Record::Finished {
            job_id: result.job_id,
            result: Box::new(result),
            at: unix_now(),
        })
    }

    /// Records that the server holds the result. Unknown or already
    /// acknowledged jobs are ignored (nothing is written).
    ///
    /// # Errors
    /// [`LedgerError::Io`].
    pub fn record_acked(&mut self, job_id: Uuid) -> Result<(), LedgerError> {
        match self.index.jobs.get(&job_id) {
            Some(e) if !e.acked && e.result.is_some() => self.append(&Record::Acked { job_id }),
            _ => Ok(()),
        }
    }

    fn append(&mut self, rec: &Record) -> Result<(), LedgerError> {
        let mut line = serde_json::to_vec(rec).map_err(|e| self.io(io::Error::other(e)))?;
        line.push(b'\n');
        // One write at the end of the file: a crash leaves at most this line incomplete.
        self.file.write_all(&line).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.index.apply(rec);
        self.lines += 1;
        if self.lines > self.compact_after {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the ledger keeping the replay barrier, every unfinished or
    /// unacknowledged job and the last `keep_results` results.
    fn compact(&mut self) -> Result<(), LedgerError> {
        let idx = &self.index;
        let recent_from = idx.finished.len().saturating_sub(self.keep_results);
        let mut keep: Vec<Uuid> = Vec::new();
        for (i, id) in idx.finished.iter().enumerate() {
            if let Some(e) = idx.jobs.get(id)
                && (i >= recent_from || !e.acked)
            {
                keep.push(*id);
            }
        }
        let mut unfinished: Vec<(&Uuid, &Entry)> = idx
            .jobs
            .iter()
            .filter(|(_, e)| e.result.is_none())
            .collect();
        unfinished.sort_by_key(|(_, e)| e.seq);

        let mut records = vec![Record::Base {
            max_seq: idx.max_seq,
        }];
        let mut push_job = |id: Uuid, e: &Entry| {
            records.push(Record::Accepted {
                seq: e.seq,
                job_id: id,
                kind: e.kind,
                at: e.accepted_at,
            });
            if let Some((result, at)) = &e.result {
                let at = *at;
                records.push(Record::Finished {
                    job_id: id,
                    result: Box::new(result.clone()),
                    at,
                });
                if e.acked {
                    records.push(Record::Acked { job_id: id });
                }
            }
        };
        for id in &keep {
            if let Some(e) = idx.jobs.get(id) {
                push_job(*id, e);
            }
        }
        for (id, e) in unfinished {
            push_job(*id, e);
        }

        let mut buf = Vec::new();
        let mut fresh = Index::default();
        for r in &records {
            serde_json::to_writer(&mut buf, r).map_err(|e| self.io(io::Error::other(e)))?;
            buf.push(b'\n');
            fresh.apply(r);
        }
        crate::state::write_atomic(&self.path, &buf)
            .map_err(|e| self.io(io::Error::other(format!("compaction failed: {e:#}"))))?;
        self.file = open_append(&self.path).map_err(|e| self.io(e))?;
        tracing::info!(
            before = self.lines,
            after = records.len(),
            "compacted the job ledger"
        );
        self.lines = records.len();
        self.index = fresh;
        Ok(())
    }

    fn io(&self, source: io::Error) -> LedgerError {
        LedgerError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn last_of(idx: &Index) -> Option<LastJob> {
    let id = idx.finished.back()?;
    let e = idx.jobs.get(id)?;
    let (result, at) = e.result.clone()?;
    Some(LastJob {
        job_id: *id,
        kind: e.kind,
        result,
        finished_at: at,
        acked: e.acked,
    })
}

struct Loaded {
    index: Index,
    lines: usize,
    good_len: u64,
    total_len: u64,
}

fn load(path: &Path) -> Result<Loaded, LedgerError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(LedgerError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut index = Index::default();
    let mut good_len = 0usize;
    let mut lines = 0usize;
    let mut rest = &data[..];
    let mut line_no = 0usize;
    while !rest.is_empty() {
        line_no += 1;
        let (line, complete, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        if !complete {
            // Only the last line can lack its newline: the append that wrote it
            // did not complete, so its caller never saw success. Drop it.
            break;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(rec) => {
                index.apply(&rec);
                lines += 1;
                good_len += line.len() + 1;
            }
            // An unparsable last line: a crash mid-write. Drop it.
            Err(_) if next.is_empty() => break,
            Err(e) => {
                return Err(LedgerError::Corrupt {
                    path: path.to_owned(),
                    line: line_no,
                    reason: format!("{e}"),
                });
            }
        }
        rest = next;
    }
    Ok(Loaded {
        index,
        lines,
        good_len: good_len as u64,
        total_len: data.len() as u64,
    })
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(path)?;
    if let Some(dir) = path.parent() {
        crate::state::sync_dir(dir)?;
    }
    Ok(f)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::{ErrorClass, Outcome};

    fn ok(job_id: Uuid) -> JobResult {
        JobResult {
            job_id,
            outcome: Outcome::Succeeded,
            error_class: None,
            duration_ms: 12,
            content_hash: None,
            items: None,
            test_counts: None,
            rule_health: None,
        }
    }

    fn failed(job_id: Uuid) -> JobResult {
        JobResult {
            job_id,
            outcome: Outcome::Failed,
            error_class: Some(ErrorClass::SiemUnreachable),
            duration_ms: 3,
            content_hash: None,
            items: None,
            test_counts: None,
            rule_health: None,
        }
    }

    #[test]
    fn survives_reopen_with_every_query() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        {
            let mut l = Ledger::open(dir.path()).unwrap();
            assert_eq!(l.max_seq(), 0);
            l.record_accepted(1, a, JobKind::CheckConnection).unwrap();
            l.record_finished(ok(a)).unwrap();
            l.record_accepted(2, b, JobKind::DeployRule).unwrap();
            l.record_finished(failed(b)).unwrap();
            l.record_acked(a).unwrap();
            l.record_accepted(3, c, JobKind::DeleteRule).unwrap();
        }
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.max_seq(), 3);
        assert_eq!(l.result_for(&a), Some(ok(a)));
        assert_eq!(l.result_for(&b), Some(failed(b)));
        assert_eq!(l.result_for(&c), None);
        assert!(l.is_accepted_unfinished(&c));
        assert!(!l.is_accepted_unfinished(&a));
        assert!(!l.is_accepted_unfinished(&Uuid::now_v7()));
        assert_eq!(l.unacked_results(), vec![failed(b)]);
        let last = l.last_job().unwrap();
        assert_eq!(
            (last.job_id, last.kind, last.acked),
            (b, JobKind::DeployRule, false)
        );
        assert_eq!(Ledger::last_job_in(dir.path()).unwrap().unwrap().job_id, b);
    }

    #[test]
    fn truncated_last_line_is_dropped_and_file_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let a = Uuid::now_v7();
        {
            let mut l = Ledger::open(dir.path()).unwrap();
            l.record_accepted(1, a, JobKind::CheckConnection).unwrap();
        }
        let path = dir.path().join(LEDGER_FILE);
        let good = fs::read(&path).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"rec":"finished","job_id":"#).unwrap();
        drop(f);
        let mut l = Ledger::open(dir.path()).unwrap();
        assert!(l.is_accepted_unfinished(&a));
        assert_eq!(fs::read(&path).unwrap(), good, "incomplete tail truncated");
        // Appending after the repair yields a clean file.
        l.record_finished(ok(a)).unwrap();
        drop(l);
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.result_for(&a), Some(ok(a)));
    }

    #[test]
    fn zero_filled_tail_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let a = Uuid::now_v7();
        Ledger::open(dir.path())
            .unwrap()
            .record_accepted(5, a, JobKind::CheckConnection)
            .unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0u8; 40]).unwrap();
        drop(f);
        assert_eq!(Ledger::open(dir.path()).unwrap().max_seq(), 5);
    }

    #[test]
    fn corruption_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEDGER_FILE);
        let a = Uuid::now_v7();
        let good = serde_json::to_string(&Record::Acked { job_id: a }).unwrap();
        fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let e = Ledger::open(dir.path()).unwrap_err();
        assert!(matches!(e, LedgerError::Corrupt { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("line 2"));
    }

    #[test]
    fn acks_for_unknown_jobs_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        l.record_acked(Uuid::now_v7()).unwrap();
        assert_eq!(fs::read(dir.path().join(LEDGER_FILE)).unwrap().len(), 0);
    }

    #[test]
    fn compaction_keeps_barrier_recent_and_unacked() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open_with_limits(dir.path(), 40, 3).unwrap();
        let mut ids = Vec::new();
        for seq in 1..=12u64 {
            let id = Uuid::now_v7();
            ids.push(id);
            l.record_accepted(seq, id, JobKind::CheckConnection)
                .unwrap();
            l.record_finished(ok(id)).unwrap();
            // Job 2 stays unacknowledged; the others are acked.
            if seq != 2 {
                l.record_acked(id).unwrap();
            }
        }
        let pending = Uuid::now_v7();
        l.record_accepted(13, pending, JobKind::DeployRule).unwrap();
        // 12 * 3 - 1 + 1 = 36 lines so far; push past 40 to compact.
        for seq in 14..=15u64 {
            let id = Uuid::now_v7();
            ids.push(id);
            l.record_accepted(seq, id, JobKind::CheckConnection)
                .unwrap();
            l.record_finished(failed(id)).unwrap();
            l.record_acked(id).unwrap();
        }
        let lines = fs::read_to_string(dir.path().join(LEDGER_FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 20, "compacted to {lines} lines");
        drop(l);
        let l = Ledger::open_with_limits(dir.path(), 40, 3).unwrap();
        assert_eq!(l.max_seq(), 15);
        assert_eq!(l.result_for(&ids[1]), Some(ok(ids[1])), "unacked kept");
        assert_eq!(l.unacked_results(), vec![ok(ids[1])]);
        assert!(l.is_accepted_unfinished(&pending), "unfinished kept");
        assert_eq!(l.result_for(&ids[0]), None, "old acked result dropped");
        let last = *ids.last().unwrap();
        assert_eq!(l.result_for(&last), Some(failed(last)), "recent kept");
        assert_eq!(l.last_job().unwrap().job_id, last);
    }
}
