//! What the Sentinel and Elastic simulators share: the fault model, the
//! background server task, the test-event store and the scripted scheduler.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::splunk::conn::FaultyListener;

/// How long a shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A fault a simulator injects into requests until cleared (or for a number
/// of requests, see `set_fault_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer this status with the vendor's error body (an out-of-range code
    /// becomes 500). 401 and 403 are the bad-credential faults.
    Status(u16),
    /// Answer 429 with `Retry-After: <secs>` and the vendor's throttling body.
    RateLimited {
        /// Seconds announced in `Retry-After`.
        retry_after_secs: u64,
    },
    /// Wait this long before handling each request (then handle it normally).
    Delay(Duration),
    /// Close connections without answering.
    DropConnection,
}

/// The fault in force and how many more requests it applies to.
#[derive(Debug, Default)]
pub(crate) struct FaultSlot {
    fault: Option<Fault>,
    /// `None`: until cleared.
    remaining: Option<u32>,
}

impl FaultSlot {
    pub(crate) fn set(&mut self, fault: Option<Fault>, times: Option<u32>) {
        self.fault = fault;
        self.remaining = times;
    }

    /// The fault for the request arriving now, counting it down.
    pub(crate) fn take(&mut self) -> Option<Fault> {
        let fault = self.fault?;
        match &mut self.remaining {
            None => Some(fault),
            Some(0) => {
                self.fault = None;
                None
            }
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    self.fault = None;
                    self.remaining = None;
                }
                Some(fault)
            }
        }
    }

    pub(crate) fn drops(&self) -> bool {
        self.fault == Some(Fault::DropConnection)
    }
}

/// One event in a simulator's store: a time and flat string fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Unix seconds.
    pub time: i64,
    /// Field name → value.
    pub fields: BTreeMap<String, String>,
}

impl StoredEvent {
    /// Whether every `(field, value)` condition holds (exact, case-sensitive).
    pub fn matches(&self, conditions: &[(String, String)]) -> bool {
        conditions
            .iter()
            .all(|(k, v)| self.fields.get(k).is_some_and(|have| have == v))
    }
}

/// How one scripted scheduler run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Ran and completed.
    Success,
    /// Ran and failed.
    Failure,
    /// Skipped (Splunk), partial success (Sentinel), partial failure (Elastic).
    Skipped,
}

/// One run of a rule, as the simulator's scripted scheduler reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptedRun {
    /// Unix seconds when it ran.
    pub at: i64,
    /// How it ended.
    pub status: RunStatus,
    /// Rows/events the query returned.
    pub results: u64,
    /// Alerts it generated.
    pub alerts: u64,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
    /// Time it left uncovered (Elastic's gap), milliseconds.
    pub gap_ms: u64,
}

impl ScriptedRun {
    /// A successful run `secs_ago` seconds before now with `results` rows and as many alerts as `alerts`.
    pub fn success(secs_ago: i64, results: u64, alerts: u64) -> Self {
        ScriptedRun {
            at: now() - secs_ago,
            status: RunStatus::Success,
            results,
            alerts,
            duration_ms: 1200,
            gap_ms: 0,
        }
    }

    /// A failed run `secs_ago` seconds before now.
    pub fn failure(secs_ago: i64) -> Self {
        ScriptedRun {
            status: RunStatus::Failure,
            ..ScriptedRun::success(secs_ago, 0, 0)
        }
    }

    /// A skipped (or partial) run `secs_ago` seconds before now.
    pub fn skipped(secs_ago: i64) -> Self {
        ScriptedRun {
            status: RunStatus::Skipped,
            ..ScriptedRun::success(secs_ago, 0, 0)
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 of unix seconds (UTC), or the epoch for an out-of-range value.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses RFC 3339 into unix seconds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// A simulator's HTTP server running in the background.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Binds `addr` and serves `app`; `drop_connections` cuts connections while set.
    pub(crate) async fn start(
        what: &'static str,
        addr: SocketAddr,
        app: axum::Router,
        drop_connections: Arc<AtomicBool>,
    ) -> anyhow::Result<Running> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} simulator to {addr}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let listener = FaultyListener {
            inner: listener,
            drop_connections,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, what, "simulator stopped with an error");
            }
        });
        tracing::info!(%addr, what, "simulator listening");
        Ok(Running {
            addr,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Stops accepting and waits (up to 5 s) for requests in flight.
    pub(crate) async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Mirrors a fault slot's drop flag into the listener's atomic.
pub(crate) fn sync_drop_flag(slot: &FaultSlot, flag: &AtomicBool) {
    flag.store(slot.drops(), Ordering::SeqCst);
}

/// Reads `key == "value"` / `key:value` style conditions: splits `text` on
/// `and`/`AND` and each part on `sep`, trimming quotes. `None` when a part has
/// no separator (a query form the simulator does not understand).
pub(crate) fn conditions(text: &str, sep: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in split_and(text) {
        let part = part
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once(sep)?;
        let k = k.trim();
        let v = v.trim().trim_matches('"').trim_matches('\'');
        if k.is_empty() || k.contains(' ') {
            return None;
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Some(out)
}

fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        match lower.find(" and ") {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 5..];
            }
            None => {
                parts.push(rest);
                return parts;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        assert_eq!(
            conditions(r#"EventID == "4625" and Account == "alice""#, "=="),
            Some(vec![
                ("EventID".into(), "4625".into()),
                ("Account".into(), "alice".into())
            ])
        );
        assert_eq!(
            conditions("event.code:4625 AND user.name:alice", ":"),
            Some(vec![
                ("event.code".into(), "4625".into()),
                ("user.name".into(), "alice".into())
            ])
        );
        assert_eq!(conditions("nonsense", "=="), None);
    }

    #[test]
    fn counted_faults_expire() {
        let mut slot = FaultSlot::default();
        slot.set(Some(Fault::Status(500)), Some(2));
        assert_eq!(slot.take(), Some(Fault::Status(500)));
        assert_eq!(slot.take(), Some(Fault::Status(500)));
        assert_eq!(slot.take(), None);
    }
}
