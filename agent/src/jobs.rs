//! The job worker: one task, alive for the whole process (it outlives
//! WebSocket sessions), that checks, records, opens and runs sealed jobs one
//! at a time and emits acknowledgements and results.
//!
//! For each delivered job, in order:
//!
//! 1. signature under a pinned server key whose overlap window is open
//!    (`verify_job` with the keyring's valid keys); on failure the job
//!    is refused with the verifier's class and **not** recorded (unauthenticated
//!    input must not grow the ledger);
//! 2. addressed to this agent (`wrong_agent`, not recorded);
//! 3. already in the ledger: a stored result is resent without running again;
//!    a job accepted but never finished (the agent stopped mid-run) is answered
//!    `failed/interrupted` and that is stored;
//! 4. fresh: `issued_at <= now + skew` and `now <= expires_at + skew` (`expired`);
//! 5. new: `seq` above every sequence number accepted so far (`replayed`);
//! 6. local policy: kind allowed and under the rate cap (`policy_denied`, stored);
//! 7. `accepted` is written and fsynced, then `JobAck` is sent;
//! 8. the spec is decrypted (`open_job`), its kind checked against the header
//!    and its connection against local policy; the connector runs it under
//!    `siem_timeout` (transient `rate_limited` / `siem_unreachable` failures are
//!    retried twice, 250 ms then 500 ms apart); the spec (with its credential)
//!    is dropped right after;
//! 9. `finished` is written and fsynced, then `JobResult` is sent.
//!
//! Every decision of steps 1 to 9 (run or refused, whether or not the ledger
//! records it) is also appended to the customer's journal (`journal.rs`); a
//! stored result resent for a redelivered job is not a new decision and is
//! not journaled again.
//!
//! Step 3 comes before the freshness check on purpose: a job that already ran
//! must get its real result back even after it expired, never a contradicting
//! `expired`.
//!
//! Results travel over a channel the current session drains. On every new
//! session the worker resends all results the server has not acknowledged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use picket_proto::{AgentMsg, B64, ErrorClass, JobHeader, JobResult, Outcome, SealedJob};
use picket_shared::seal::{open_job, peek_job_id, verify_job};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::health::Counters;
use crate::identity::Identity;
use crate::journal::{Journal, JournalEntry};
use crate::keyring::Keyring;
use crate::ledger::{Ledger, LedgerError};
use crate::policy::Policy;
use crate::siem;

/// What a session hands to the worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// A job delivered by the server.
    Job(Box<SealedJob>),
    /// The server durably recorded this job's result.
    ResultAcked(Uuid),
    /// A new session is up: resend every unacknowledged result.
    SessionStarted,
}

/// The job worker's fixed inputs.
pub struct Worker {
    /// This agent's id (jobs for any other id are refused).
    pub agent_id: Uuid,
    /// The agent's private keys (HPKE decryption: current, pending and
    /// previous X25519 secrets, so jobs sealed around a key rotation open).
    pub identity: Arc<Mutex<Identity>>,
    /// Server job-signing keys the agent trusts (changes when the server rotates).
    pub keyring: Arc<Mutex<Keyring>>,
    /// The durable ledger (the worker is its only writer).
    pub ledger: Arc<Mutex<Ledger>>,
    /// The customer's local policy.
    pub policy: Policy,
    /// HTTP client for the SIEM connectors.
    pub http: reqwest::Client,
    /// Deadline of one job's SIEM work.
    pub siem_timeout: Duration,
    /// Tolerance on `issued_at` / `expires_at`.
    pub clock_skew_secs: i64,
    /// Counters for health reports.
    pub counters: Arc<Counters>,
    /// Messages for the server, drained by whichever session is connected.
    pub out: mpsc::Sender<AgentMsg>,
    /// The customer's journal of every job run or refused.
    pub journal: Journal,
}

/// What the journal learns about a job beyond its result.
#[derive(Debug, Default, Clone, Copy)]
struct Meta {
    kind: Option<picket_proto::JobKind>,
    rule_id: Option<Uuid>,
    connection_id: Option<Uuid>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

fn refused(job_id: Uuid, class: ErrorClass) -> JobResult {
    JobResult {
        job_id,
        outcome: Outcome::Refused,
        error_class: Some(class),
        duration_ms: 0,
        content_hash: None,
        items: None,
        test_counts: None,
        rule_health: None,
    }
}

/// Attempts per job for transient failures (`rate_limited`, `siem_unreachable`).
const ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled for each further one.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Runs the action, retrying transient failures a bounded number of times
/// (the connectors make each call once; every action is safe to repeat).
/// The caller bounds the whole by `siem_timeout`.
async fn run_with_retries(
    connector: &siem::Connector,
    action: &picket_proto::JobAction,
) -> Result<siem::ActionOk, ErrorClass> {
    let mut pause = RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match connector.execute(action).await {
            Err(class @ (ErrorClass::RateLimited | ErrorClass::SiemUnreachable))
                if attempt < ATTEMPTS =>
            {
                tracing::debug!(
                    attempt,
                    error_class = class.as_str(),
                    "retrying a transient SIEM failure"
                );
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Reads each listed rule's health over the last `check.window_secs`
/// seconds, one rule at a time, each call bounded by `deadline` and retried
/// like a job on transient failures. A rule missing on the SIEM is answered
/// `not_found` for that rule only; any other failure is also the job's class
/// (the first one), but every rule still gets its entry, so one bad rule does
/// not hide the others' numbers.
async fn run_rule_health(
    connector: &siem::Connector,
    deadline: Duration,
    check: &picket_proto::RuleHealthCheck,
) -> (Option<ErrorClass>, Vec<picket_proto::RuleHealthItem>) {
    if check.validate().is_err() {
        return (Some(ErrorClass::MalformedJob), Vec::new());
    }
    let window = siem::TimeWindow::last(i64::from(check.window_secs));
    let mut failure = None;
    let mut items = Vec::with_capacity(check.rules.len());
    for rule_id in &check.rules {
        let mut pause = RETRY_PAUSE;
        let mut attempt = 1;
        let answer = loop {
            let r = tokio::time::timeout(deadline, connector.rule_health(rule_id, window))
                .await
                .unwrap_or(Err(ErrorClass::Timeout));
            match r {
                Err(ErrorClass::RateLimited | ErrorClass::SiemUnreachable)
                    if attempt < ATTEMPTS =>
                {
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                other => break other,
            }
        };
        items.push(match answer {
            Ok(health) => picket_proto::RuleHealthItem {
                rule_id: *rule_id,
                health: Some(health),
                error_class: None,
            },
            Err(class) => {
                if class != ErrorClass::NotFound {
                    failure.get_or_insert(class);
                }
                picket_proto::RuleHealthItem {
                    rule_id: *rule_id,
                    health: None,
                    error_class: Some(class),
                }
            }
        });
    }
    (failure, items)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Worker {
    /// Processes messages until `stop` is cancelled or every sender is gone.
    /// A job in progress is finished before stopping.
    pub async fn run(mut self, mut rx: mpsc::Receiver<WorkerMsg>, stop: CancellationToken) {
        loop {
            let msg = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                WorkerMsg::Job(job) => {
                    if let Some(result) = self.process(*job).await {
                        self.send(AgentMsg::JobResult(result)).await;
                    }
                }
                WorkerMsg::ResultAcked(job_id) => {
                    if let Err(e) = self.with_ledger(move |l| l.record_acked(job_id)).await {
                        tracing::error!(%job_id, error = %e, "cannot record a result acknowledgement");
                    }
                }
                WorkerMsg::SessionStarted => {
                    match self.with_ledger(|l| Ok(l.unacked_results())).await {
                        Ok(results) => {
                            if !results.is_empty() {
                                tracing::info!(
                                    count = results.len(),
                                    "resending unacknowledged results"
                                );
                            }
                            for r in results {
                                self.send(AgentMsg::JobResult(r)).await;
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot read unacknowledged results"),
                    }
                }
            }
        }
        tracing::debug!("job worker stopped");
    }

    async fn send(&self, msg: AgentMsg) {
        // The receiver lives as long as the agent runs; if it is gone we are stopping.
        let _ = self.out.send(msg).await;
    }

    /// Runs a ledger operation off the async threads (it fsyncs).
    async fn with_ledger<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> Result<T, LedgerError> + Send + 'static,
    {
        let ledger = Arc::clone(&self.ledger);
        tokio::task::spawn_blocking(move || {
            let mut guard = ledger
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|e| {
            Err(LedgerError::Io {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })
        })
    }

    /// Decides and, if allowed, runs one job. `None`: nothing to answer.
    async fn process(&mut self, sealed: SealedJob) -> Option<JobResult> {
        let pinned = self
            .keyring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .valid_keys(unix_now());
        let header = match verify_job(&sealed, &pinned) {
            Ok(h) => h,
            Err(e) => {
                let class = e.error_class();
                let Some(job_id) = peek_job_id(&sealed) else {
                    tracing::warn!(
                        error_class = class.as_str(),
                        "dropped a job that failed verification and has no readable job id"
                    );
                    self.write_journal(JournalEntry::now(None, Outcome::Refused, Some(class)));
                    return None;
                };
                tracing::warn!(%job_id, error_class = class.as_str(), "refused a job that failed verification");
                self.counters.count(false);
                return Some(self.noted(refused(job_id, class), Meta::default()));
            }
        };
        let job_id = header.job_id;
        let mut meta = Meta {
            kind: Some(header.kind),
            ..Meta::default()
        };
        if header.agent_id != self.agent_id {
            tracing::warn!(%job_id, "refused a job addressed to another agent");
            self.counters.count(false);
            return Some(self.noted(refused(job_id, ErrorClass::WrongAgent), meta));
        }

        let known = self
            .with_ledger(move |l| {
                Ok((
                    l.result_for(&job_id),
                    l.is_accepted_unfinished(&job_id),
                    l.max_seq(),
                ))
            })
            .await;
        let (stored, unfinished, max_seq) = match known {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(%job_id, error = %e, "cannot read the ledger; refusing the job");
                self.counters.count(false);
                return Some(self.noted(refused(job_id, ErrorClass::Internal), meta));
            }
        };
        if let Some(result) = stored {
            tracing::info!(%job_id, "job delivered again; resending its stored result");
            return Some(result);
        }
        if unfinished {
            tracing::warn!(%job_id, "job was interrupted by an agent stop; not running it again");
            let result = JobResult {
                outcome: Outcome::Failed,
                ..refused(job_id, ErrorClass::Interrupted)
            };
            let result = self.finish(result).await;
            return Some(self.noted(result, meta));
        }

        let now = unix_now();
        let skew = self.clock_skew_secs;
        if header.issued_at > now.saturating_add(skew)
            || now > header.expires_at.saturating_add(skew)
        {
            tracing::warn!(%job_id, issued_at = header.issued_at, expires_at = header.expires_at, now, "refused an expired (or future) job");
            self.counters.count(false);
            return Some(self.noted(refused(job_id, ErrorClass::Expired), meta));
        }
        if header.seq <= max_seq {
            tracing::warn!(%job_id, seq = header.seq, max_seq, "refused a job with a used sequence number");
            self.counters.count(false);
            return Some(self.noted(refused(job_id, ErrorClass::Replayed), meta));
        }
        let allowed = self.policy.allows_kind(header.kind) && self.policy.try_start(Instant::now());

        let (seq, kind) = (header.seq, header.kind);
        if let Err(e) = self
            .with_ledger(move |l| l.record_accepted(seq, job_id, kind))
            .await
        {
            tracing::error!(%job_id, error = %e, "cannot record the job in the ledger; not running it");
            self.counters.count(false);
            return Some(self.noted(refused(job_id, ErrorClass::Internal), meta));
        }
        self.send(AgentMsg::JobAck { job_id }).await;

        let result = if allowed {
            self.execute(&sealed, &header, &mut meta).await
        } else {
            tracing::warn!(%job_id, kind = kind.as_str(), "local policy refused the job (kind or rate cap)");
            refused(job_id, ErrorClass::PolicyDenied)
        };
        let result = self.finish(result).await;
        Some(self.noted(result, meta))
    }

    /// Journals a decision and hands the result back.
    fn noted(&mut self, result: JobResult, meta: Meta) -> JobResult {
        self.write_journal(JournalEntry {
            kind: meta.kind,
            rule_id: meta.rule_id,
            connection_id: meta.connection_id,
            ..JournalEntry::now(Some(result.job_id), result.outcome, result.error_class)
        });
        result
    }

    /// Appends to the journal; a failure is logged, never fatal (the ledger,
    /// not the journal, is what keeps jobs from running twice).
    fn write_journal(&mut self, entry: JournalEntry) {
        if let Err(e) = self.journal.append(&entry) {
            tracing::error!(error = %e, "cannot write the local job journal");
        }
    }

    /// Stores a final result, counts it and returns it for sending.
    async fn finish(&self, result: JobResult) -> JobResult {
        let stored = result.clone();
        if let Err(e) = self.with_ledger(move |l| l.record_finished(stored)).await {
            // The result still goes out; a redelivery would then be answered `interrupted`.
            tracing::error!(job_id = %result.job_id, error = %e, "cannot store the job result");
        }
        self.counters.count(result.outcome == Outcome::Succeeded);
        tracing::info!(
            job_id = %result.job_id,
            outcome = result.outcome.as_str(),
            error_class = result.error_class.map(ErrorClass::as_str),
            duration_ms = result.duration_ms,
            "job finished"
        );
        result
    }

    /// Opens the spec and runs it. The spec (with its credential) lives only
    /// inside this function.
    async fn execute(&self, sealed: &SealedJob, header: &JobHeader, meta: &mut Meta) -> JobResult {
        let job_id = header.job_id;
        let keys = self
            .identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .decryption_keys();
        // The first key that opens it wins; a failure with every key is reported as the last one.
        let mut opened = Err(picket_shared::OpenError::DecryptFailed);
        for k in &keys {
            opened = open_job(sealed, header, k);
            if !matches!(opened, Err(picket_shared::OpenError::DecryptFailed)) {
                break;
            }
        }
        drop(keys);
        let spec = match opened {
            Ok(s) => s,
            Err(e) => {
                let class = e.error_class();
                tracing::warn!(%job_id, error_class = class.as_str(), "cannot open the job");
                return refused(job_id, class);
            }
        };
        meta.connection_id = Some(spec.target.connection_id);
        meta.rule_id = match &spec.action {
            picket_proto::JobAction::DeployRule { rule } => Some(rule.rule_id),
            picket_proto::JobAction::DisableRule { rule }
            | picket_proto::JobAction::DeleteRule { rule } => Some(rule.rule_id),
            picket_proto::JobAction::DeployBatch { batch } if batch.items.len() == 1 => {
                batch.items.first().map(|i| i.rule_id)
            }
            picket_proto::JobAction::TestRule { test } => Some(test.rule_id),
            picket_proto::JobAction::RuleHealth { check } if check.rules.len() == 1 => {
                check.rules.first().copied()
            }
            _ => None,
        };
        if spec.kind() != header.kind {
            tracing::warn!(%job_id, "job spec disagrees with its signed header kind");
            return refused(job_id, ErrorClass::MalformedJob);
        }
        if !self.policy.allows_connection(&spec.target) {
            tracing::warn!(%job_id, connection_id = %spec.target.connection_id, "local policy refused the SIEM connection");
            return refused(job_id, ErrorClass::PolicyDenied);
        }
        let started = Instant::now();
        let connector = siem::Connector::new(&spec.target, self.http.clone());
        // Batches bound each SIEM call, not the whole: a deadline in the
        // middle would leave applied items without their revert.
        let per_item = match &spec.action {
            picket_proto::JobAction::DeployBatch { batch } => {
                Some(crate::batch::run_batch(&connector, self.siem_timeout, batch).await)
            }
            picket_proto::JobAction::DriftCheck { check } => {
                Some(crate::batch::run_drift_check(&connector, self.siem_timeout, check).await)
            }
            picket_proto::JobAction::PreviewCount { preview } => {
                Some(crate::batch::run_preview(&connector, self.siem_timeout, preview).await)
            }
            _ => None,
        };
        if let picket_proto::JobAction::RuleHealth { check } = &spec.action {
            let (failure, items) = run_rule_health(&connector, self.siem_timeout, check).await;
            drop(connector);
            drop(spec);
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return JobResult {
                job_id,
                outcome: if failure.is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                },
                error_class: failure,
                duration_ms,
                content_hash: None,
                items: None,
                test_counts: None,
                rule_health: Some(items),
            };
        }
        if let Some((failure, items)) = per_item {
            drop(connector);
            drop(spec);
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return JobResult {
                job_id,
                outcome: if failure.is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                },
                error_class: failure,
                duration_ms,
                content_hash: None,
                items: Some(items),
                test_counts: None,
                rule_health: None,
            };
        }
        let outcome = tokio::time::timeout(
            self.siem_timeout,
            run_with_retries(&connector, &spec.action),
        )
        .await;
        drop(connector);
        drop(spec);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(Ok(ok)) => JobResult {
                job_id,
                outcome: Outcome::Succeeded,
                error_class: None,
                duration_ms,
                content_hash: ok.content_hash.map(B64),
                items: None,
                test_counts: ok.test_counts,
                rule_health: None,
            },
            Ok(Err(class)) => JobResult {
                job_id,
                outcome: Outcome::Failed,
                error_class: Some(class),
                duration_ms,
                content_hash: None,
                items: None,
                test_counts: None,
                rule_health: None,
            },
            Err(_) => JobResult {
                job_id,
                outcome: Outcome::Failed,
                error_class: Some(ErrorClass::Timeout),
                duration_ms,
                content_hash: None,
                items: None,
                test_counts: None,
                rule_health: None,
            },
        }
    }
}
