//! Operational metrics, served at `GET /metrics` in the OpenMetrics text
//! format (which Prometheus scrapes natively).
//!
//! What is measured, and why each label is safe: labels carry only this
//! replica's id (chosen by the operator), route *templates* (never a path
//! with ids in it), HTTP methods and status classes, and the wire protocol's
//! outcome / error-class enums. No tenant id, agent id, user or rule name
//! ever becomes a label, so a scrape leaks no tenant data and the number of
//! series stays bounded whatever clients send.
//!
//! `/metrics` still reveals fleet size and traffic, so it needs the bearer
//! token named by `metrics_token_file` (docs/operations.md); without one
//! configured the route answers 403 `metrics_disabled`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::AppState;
use crate::db::entity::job;
use crate::error::ApiError;

/// `replica` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    replica: String,
}

/// Labels of an HTTP request: the route template, method and status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: &'static str,
}

/// Labels of a job result: both come from closed enums of the wire protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    error_class: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~65 s: covers fast API calls and slow approvals alike.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of one server process.
pub struct Metrics {
    registry: Registry,
    replica: ReplicaLabel,
    agents_connected: Family<ReplicaLabel, Gauge>,
    outbox_depth: Gauge,
    dispatch_latency: Histogram,
    health_batch_size: Histogram,
    health_write_seconds: Histogram,
    health_written: Counter,
    health_dropped: Counter,
    job_results: Family<OutcomeLabels, Counter>,
    http_requests: HistogramFamily<HttpLabels>,
    listener_connects: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("replica", &self.replica.replica)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; `replica` labels the connected-agents gauge.
    pub fn new(replica: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix("picket");
        let agents_connected = Family::<ReplicaLabel, Gauge>::default();
        registry.register(
            "agents_connected",
            "Agent sessions live on this replica",
            agents_connected.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Jobs not yet answered by their agent (pending or acked), across all replicas",
            outbox_depth.clone(),
        );
        let dispatch_latency = latency_histogram();
        registry.register(
            "job_dispatch_latency_seconds",
            "Time from a job's enqueue (approval) to the agent's first acknowledgement",
            dispatch_latency.clone(),
        );
        let health_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "health_batch_reports",
            "Health reports written per batch (one transaction)",
            health_batch_size.clone(),
        );
        let health_write_seconds = latency_histogram();
        registry.register(
            "health_batch_write_seconds",
            "Time to write one batch of health reports",
            health_write_seconds.clone(),
        );
        let health_written = Counter::default();
        registry.register(
            "health_reports_written",
            "Health reports stored",
            health_written.clone(),
        );
        let health_dropped = Counter::default();
        registry.register(
            "health_reports_dropped",
            "Health reports dropped (queue full or batch write failed)",
            health_dropped.clone(),
        );
        let job_results = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "job_results",
            "Job results received, by outcome and error class (at-least-once: a repeat after a reconnect counts again)",
            job_results.clone(),
        );
        let http_requests: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template, method and status class",
            http_requests.clone(),
        );
        let listener_connects = Counter::default();
        registry.register(
            "replica_listener_connects",
            "Times the LISTEN/NOTIFY listener (PostgreSQL) started listening: 1 at start, +1 per reconnect",
            listener_connects.clone(),
        );
        Arc::new(Metrics {
            registry,
            replica: ReplicaLabel {
                replica: replica.to_owned(),
            },
            agents_connected,
            outbox_depth,
            dispatch_latency,
            health_batch_size,
            health_write_seconds,
            health_written,
            health_dropped,
            job_results,
            http_requests,
            listener_connects,
        })
    }

    /// A job was acknowledged for the first time; `job_id` is its UUIDv7,
    /// whose timestamp is the enqueue time (so the figure holds even when
    /// another replica enqueued it).
    pub fn job_acked(&self, job_id: uuid::Uuid) {
        let Some(ts) = job_id.get_timestamp() else {
            return;
        };
        let (secs, nanos) = ts.to_unix();
        let enqueued = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        if let Ok(d) = std::time::SystemTime::now().duration_since(enqueued) {
            self.dispatch_latency.observe(d.as_secs_f64());
        }
    }

    /// A job result arrived.
    pub fn job_result(&self, outcome: &'static str, error_class: Option<&'static str>) {
        self.job_results
            .get_or_create(&OutcomeLabels {
                outcome,
                error_class: error_class.unwrap_or("none"),
            })
            .inc();
    }

    /// A health batch of `n` reports was written in `secs`.
    pub fn health_batch(&self, n: u64, secs: f64) {
        self.health_written.inc_by(n);
        #[allow(clippy::cast_precision_loss)] // batch sizes are ≤ 2000
        self.health_batch_size.observe(n as f64);
        self.health_write_seconds.observe(secs);
    }

    /// The replica listener (re)started listening on its channel.
    pub fn listener_connected(&self) {
        self.listener_connects.inc();
    }

    /// `n` health reports were dropped.
    pub fn health_dropped(&self, n: u64) {
        self.health_dropped.inc_by(n);
    }

    /// Renders every metric, refreshing the gauges first.
    async fn render(&self, state: &AppState) -> Result<String, ApiError> {
        let live = i64::try_from(state.registry.len()).unwrap_or(i64::MAX);
        self.agents_connected.get_or_create(&self.replica).set(live);
        let depth = job::Entity::find()
            .filter(job::Column::State.is_in(["pending", "acked"]))
            .count(&state.db)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        self.outbox_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: the metrics, for a scraper holding the bearer token.
pub async fn serve(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let Some(token) = state.config.metrics_token.as_ref() else {
        return ApiError::refused(
            "metrics_disabled",
            "metrics are disabled: set metrics_token_file in server.toml",
        )
        .into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests in constant time: neither the token nor its length leaks.
    let ok: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into();
    if !ok {
        return ApiError::Unauthorized.into_response();
    }
    match state.metrics.render(&state).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Middleware: times every request under its route template.
pub async fn track_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Unmatched paths share one label so a scanner cannot create series.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let start = Instant::now();
    let res = next.run(req).await;
    let status = match res.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .observe(start.elapsed().as_secs_f64());
    res
}
