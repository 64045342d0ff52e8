//! The batched health writer.
//!
//! Connection tasks never write health themselves: they hand each report to a
//! bounded queue ([`HealthSink::submit`], non-blocking) and one writer task
//! drains it in batches of up to [`MAX_BATCH`], in one transaction per batch:
//! the latest report per agent is upserted and every report is appended to the
//! history. If the queue is full (the database cannot keep up) new reports are
//! dropped and counted rather than stalling agent connections; the next report
//! from the same agent supersedes the lost one anyway.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use picket_proto::HealthReport;
use sea_orm::sea_query::OnConflict;
use sea_orm::{DatabaseConnection, EntityTrait as _, NotSet, Set, TransactionTrait as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::entity::{agent_health, health_sample};
use crate::metrics::Metrics;

/// Most reports written in one transaction.
pub const MAX_BATCH: usize = 2000;
/// Capacity of the queue in front of the writer.
pub const QUEUE_CAPACITY: usize = 100_000;
/// How long the writer waits for a batch to fill once it has one report.
const LINGER: Duration = Duration::from_millis(100);

/// One report, as received.
pub struct HealthItem {
    /// Tenant of the agent.
    pub tenant_id: Uuid,
    /// The agent.
    pub agent_id: Uuid,
    /// Server receive time, Unix seconds (logged; the stored time is the
    /// report's own `taken_at`, so a report buffered offline keeps its time).
    pub received_at: i64,
    /// The report.
    pub report: HealthReport,
}

/// Where connection tasks put health reports.
#[derive(Clone)]
pub struct HealthSink {
    tx: mpsc::Sender<HealthItem>,
    stats: Arc<HealthStats>,
    metrics: Arc<Metrics>,
}

/// Counters of the writer, for metrics and benchmarks.
#[derive(Default)]
pub struct HealthStats {
    /// Reports written.
    pub written: AtomicU64,
    /// Reports dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Batches (transactions) written.
    pub batches: AtomicU64,
}

impl HealthSink {
    /// Queues a report without waiting. Returns false if it was dropped.
    pub fn submit(&self, item: HealthItem) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.health_dropped(1);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        "health queue full: dropping reports (database too slow?)"
                    );
                }
                false
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &HealthStats {
        &self.stats
    }
}

/// Starts the writer; it drains what is queued and stops after `shutdown`.
pub fn spawn_writer(
    db: DatabaseConnection,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> (HealthSink, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<HealthItem>(QUEUE_CAPACITY);
    let stats = Arc::new(HealthStats::default());
    let sink = HealthSink {
        tx,
        stats: stats.clone(),
        metrics: metrics.clone(),
    };
    let stats = (stats, metrics);
    let task = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut buf, MAX_BATCH) => n,
                () = shutdown.cancelled() => {
                    // Drain what is already queued, then stop.
                    while let Ok(item) = rx.try_recv() { buf.push(item); if buf.len() >= MAX_BATCH { write_logged(&db, &mut buf, &stats).await; } }
                    write_logged(&db, &mut buf, &stats).await;
                    return;
                }
            };
            if n == 0 {
                return;
            }
            if buf.len() < MAX_BATCH {
                tokio::time::sleep(LINGER).await;
                while buf.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => buf.push(item),
                        Err(_) => break,
                    }
                }
            }
            write_logged(&db, &mut buf, &stats).await;
        }
    });
    (sink, task)
}

async fn write_logged(
    db: &DatabaseConnection,
    buf: &mut Vec<HealthItem>,
    (stats, metrics): &(Arc<HealthStats>, Arc<Metrics>),
) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len() as u64;
    let started = std::time::Instant::now();
    match write_batch(db, buf).await {
        Ok(()) => {
            stats.written.fetch_add(n, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            metrics.health_batch(n, started.elapsed().as_secs_f64());
        }
        Err(e) => {
            stats.dropped.fetch_add(n, Ordering::Relaxed);
            metrics.health_dropped(n);
            tracing::error!(error = %e, reports = n, "writing health batch failed");
        }
    }
    buf.clear();
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn write_batch(db: &DatabaseConnection, items: &[HealthItem]) -> Result<(), sea_orm::DbErr> {
    let mut latest: HashMap<Uuid, &HealthItem> = HashMap::with_capacity(items.len());
    for it in items {
        latest.insert(it.agent_id, it);
    }
    let siem_json =
        |r: &HealthReport| serde_json::to_string(&r.siem).unwrap_or_else(|_| "[]".into());
    let txn = db.begin().await?;
    // Each statement binds 11 values per row; chunk well under SQLite's 32766-parameter limit.
    let latest_rows: Vec<agent_health::ActiveModel> = latest
        .values()
        .map(|it| agent_health::ActiveModel {
            agent_id: Set(it.agent_id),
            tenant_id: Set(it.tenant_id),
            reported_at: Set(it.report.taken_at),
            uptime_secs: Set(clamp(it.report.uptime_secs)),
            cpu_percent: Set(f64::from(it.report.cpu_percent)),
            rss_bytes: Set(clamp(it.report.rss_bytes)),
            host_mem_used_bytes: Set(clamp(it.report.host_mem_used_bytes)),
            host_mem_total_bytes: Set(clamp(it.report.host_mem_total_bytes)),
            jobs_succeeded: Set(clamp(it.report.jobs_succeeded)),
            jobs_failed: Set(clamp(it.report.jobs_failed)),
            siem: Set(siem_json(&it.report)),
        })
        .collect();
    for chunk in latest_rows.chunks(1000) {
        agent_health::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::column(agent_health::Column::AgentId)
                    .update_columns([
                        agent_health::Column::ReportedAt,
                        agent_health::Column::UptimeSecs,
                        agent_health::Column::CpuPercent,
                        agent_health::Column::RssBytes,
                        agent_health::Column::HostMemUsedBytes,
                        agent_health::Column::HostMemTotalBytes,
                        agent_health::Column::JobsSucceeded,
                        agent_health::Column::JobsFailed,
                        agent_health::Column::Siem,
                    ])
                    .to_owned(),
            )
            .exec(&txn)
            .await?;
    }
    let samples: Vec<health_sample::ActiveModel> = items
        .iter()
        .map(|it| health_sample::ActiveModel {
            id: NotSet,
            agent_id: Set(it.agent_id),
            tenant_id: Set(it.tenant_id),
            reported_at: Set(it.report.taken_at),
            cpu_percent: Set(f64::from(it.report.cpu_percent)),
            rss_bytes: Set(clamp(it.report.rss_bytes)),
            siem_reachable: Set(i32::try_from(
                it.report.siem.iter().filter(|s| s.reachable).count(),
            )
            .unwrap_or(0)),
            siem_total: Set(i32::try_from(it.report.siem.len()).unwrap_or(0)),
            siem: Set(siem_json(&it.report)),
        })
        .collect();
    for chunk in samples.chunks(1000) {
        health_sample::Entity::insert_many(chunk.to_vec())
            .exec(&txn)
            .await?;
    }
    txn.commit().await
}
