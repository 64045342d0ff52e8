//! Health reports: the agent process's CPU and memory, the host's memory,
//! job counters, and a reachability probe of every SIEM connection the server
//! listed in `Welcome`. Numbers only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
