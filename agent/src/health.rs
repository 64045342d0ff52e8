//! Health reports: the agent process's CPU and memory, the host's memory,
//! job counters, and a reachability probe of every SIEM connection the server
//! listed in `Welcome`. Numbers only.
//!
//! Reports are produced by one process-wide task ([`reporter`]) whether or
//! not the agent is connected, so an outage of the control plane does not
//! leave a hole in the SIEM's reachability history. They wait in a bounded
//! [`HealthBuffer`] (newest kept, oldest dropped) that the connected session
//! drains in order, and that a new session drains first thing after `Welcome`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use picket_proto::health::MAX_SIEM_ENTRIES;
use picket_proto::{ConnectionInfo, ErrorClass, HealthReport, SiemHealth};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::siem;

/// Jobs answered since the process started (shared by the worker and the reporter).
#[derive(Debug, Default)]
pub struct Counters {
    /// Jobs that succeeded.
    pub succeeded: AtomicU64,
    /// Jobs that failed or were refused.
    pub failed: AtomicU64,
    /// Why the audit witness refused a checkpoint, once it has (sticky: see `witness.rs`).
    pub audit_alarm: std::sync::Mutex<Option<picket_proto::AuditAlarm>>,
}

impl Counters {
    /// Counts one freshly answered job.
    pub fn count(&self, succeeded: bool) {
        let c = if succeeded {
            &self.succeeded
        } else {
            &self.failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Process and host figures, kept between reports so CPU use is measured
/// over the interval since the previous one.
#[derive(Debug)]
pub struct Sampler {
    sys: System,
    pid: Option<Pid>,
    started: Instant,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// Starts measuring now (the first report's CPU figure covers the time since).
    pub fn new() -> Self {
        let mut s = Sampler {
            sys: System::new(),
            pid: sysinfo::get_current_pid().ok(),
            started: Instant::now(),
        };
        s.refresh();
        s
    }

    fn refresh(&mut self) {
        self.sys.refresh_memory();
        if let Some(pid) = self.pid {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
        }
    }

    /// A report without SIEM entries.
    pub fn sample(&mut self, counters: &Counters) -> HealthReport {
        self.refresh();
        let (cpu, rss) = self
            .pid
            .and_then(|p| self.sys.process(p))
            .map(|p| (p.cpu_usage(), p.memory()))
            .unwrap_or((0.0, 0));
        let total = self.sys.total_memory();
        HealthReport {
            taken_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            uptime_secs: self.started.elapsed().as_secs(),
            cpu_percent: if cpu.is_finite() {
                cpu.clamp(0.0, 100_000.0)
            } else {
                0.0
            },
            rss_bytes: rss,
            host_mem_used_bytes: self.sys.used_memory().min(total),
            host_mem_total_bytes: total,
            jobs_succeeded: counters.succeeded.load(Ordering::Relaxed),
            jobs_failed: counters.failed.load(Ordering::Relaxed),
            siem: Vec::new(),
            audit_alarm: counters.audit_alarm.lock().ok().and_then(|a| *a),
        }
    }
}

/// Probes every connection concurrently, each bounded by `deadline`
/// (a probe that overruns is reported unreachable with class `timeout`).
pub async fn probe_all(
    connections: &[ConnectionInfo],
    http: &reqwest::Client,
    deadline: Duration,
) -> Vec<SiemHealth> {
    let probes = connections
        .iter()
        .take(MAX_SIEM_ENTRIES)
        .map(|c| async move {
            match tokio::time::timeout(deadline, siem::probe(c, http)).await {
                Ok(h) => h,
                Err(_) => SiemHealth {
                    connection_id: c.connection_id,
                    reachable: false,
                    latency_ms: None,
                    error_class: Some(ErrorClass::Timeout),
                },
            }
        });
    futures_util::future::join_all(probes).await
}

/// Reports kept while they cannot be sent (one per interval: 60 reports is
/// an hour at the one-minute default).
pub const HEALTH_BUFFER_REPORTS: usize = 60;

/// Health reports waiting to be sent, oldest first, bounded.
#[derive(Debug)]
pub struct HealthBuffer {
    queue: Mutex<VecDeque<HealthReport>>,
    cap: usize,
    dropped: AtomicU64,
    /// Signalled when a report is added (a stored permit covers a report
    /// added while the session was busy elsewhere).
    pub ready: Notify,
}

impl HealthBuffer {
    /// An empty buffer holding at most `cap` reports (at least one).
    pub fn new(cap: usize) -> Self {
        HealthBuffer {
            queue: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HealthReport>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the newest report, dropping the oldest if full, and wakes the session.
    pub fn push(&self, report: HealthReport) {
        {
            let mut q = self.lock();
            while q.len() >= self.cap {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(report);
        }
        self.ready.notify_one();
    }

    /// The oldest waiting report.
    pub fn pop(&self) -> Option<HealthReport> {
        self.lock().pop_front()
    }

    /// Puts back a report whose send failed, as the oldest (dropped if the
    /// buffer filled up in the meantime).
    pub fn unpop(&self, report: HealthReport) {
        let mut q = self.lock();
        if q.len() < self.cap {
            q.push_front(report);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reports dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What the reporter needs from the server's last `Welcome`.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Time between reports.
    pub every: Duration,
    /// The SIEM connections to probe.
    pub connections: Arc<Vec<ConnectionInfo>>,
}

/// Produces a report every interval into `buffer`, connected or not, from
/// the first `Welcome` on (before it the interval and connections are
/// unknown) until `stop`. Probes are bounded by `siem_timeout` and the interval.
pub async fn reporter(
    mut settings: watch::Receiver<Option<HealthSettings>>,
    buffer: Arc<HealthBuffer>,
    counters: Arc<Counters>,
    http: reqwest::Client,
    siem_timeout: Duration,
    stop: CancellationToken,
) {
    let mut sampler = Sampler::new();
    loop {
        let current = settings.borrow_and_update().clone();
        let Some(current) = current else {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = settings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(current.every) => {}
        }
        let latest = settings.borrow().clone().unwrap_or(current);
        let mut report = sampler.sample(&counters);
        let deadline = siem_timeout.min(latest.every);
        report.siem = tokio::select! {
            () = stop.cancelled() => return,
            r = probe_all(&latest.connections, &http, deadline) => r,
        };
        buffer.push(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uptime_secs: u64) -> HealthReport {
        HealthReport {
            taken_at: 1_800_000_000,
            uptime_secs,
            cpu_percent: 0.0,
            rss_bytes: 1,
            host_mem_used_bytes: 1,
            host_mem_total_bytes: 2,
            jobs_succeeded: 0,
            jobs_failed: 0,
            siem: Vec::new(),
            audit_alarm: None,
        }
    }

    #[test]
    fn buffer_is_bounded_keeps_the_newest_and_preserves_order() {
        let b = HealthBuffer::new(3);
        assert!(b.is_empty());
        for i in 0..5 {
            b.push(report(i));
        }
        assert_eq!((b.len(), b.dropped()), (3, 2));
        let first = b.pop().unwrap();
        assert_eq!(first.uptime_secs, 2);
        // A failed send puts it back in front.
        b.unpop(first);
        let order: Vec<u64> = std::iter::from_fn(|| b.pop())
            .map(|r| r.uptime_secs)
            .collect();
        assert_eq!(order, vec![2, 3, 4]);
        // Full buffer: a put-back report is dropped rather than an newer one.
        for i in 10..13 {
            b.push(report(i));
        }
        b.unpop(report(9));
        assert_eq!(b.pop().unwrap().uptime_secs, 10);
        assert_eq!(b.dropped(), 3);
    }

    #[test]
    fn sample_is_protocol_valid() {
        let mut s = Sampler::new();
        let c = Counters::default();
        c.count(true);
        c.count(false);
        c.count(false);
        let r = s.sample(&c);
        r.validate().unwrap();
        assert_eq!((r.jobs_succeeded, r.jobs_failed), (1, 2));
        assert!(r.rss_bytes > 0, "own RSS is measured");
        assert!(r.host_mem_total_bytes > 0);
    }
}
