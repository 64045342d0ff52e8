//! Operator endpoints outside the JSON API: `/readyz` for load balancers and
//! orchestrators, `/metrics` for a Prometheus scraper (bearer token, see
//! [`crate::metrics`]). `/healthz` (process up) stays in the parent module.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use sea_orm::ConnectionTrait as _;
use sea_orm_migration::MigratorTrait as _;

use crate::AppState;
use crate::db::migration::Migrator;

/// How long `/readyz` waits for the database before calling it unreachable.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The operator routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
}

/// `GET /readyz`: 200 `{"status":"ready"}` when this replica should get
/// traffic: the database answers, every migration this binary knows is
/// applied, and the server is not shutting down. Otherwise 503 with the
/// first reason (`shutting_down`, `database_unreachable`, `migrations_pending`).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let reason = if state.shutdown.is_cancelled() {
        Some("shutting_down")
    } else {
        match tokio::time::timeout(DB_PROBE_TIMEOUT, state.db.execute_unprepared("SELECT 1")).await
        {
            Ok(Ok(_)) => {
                match tokio::time::timeout(
                    DB_PROBE_TIMEOUT,
                    Migrator::get_pending_migrations(&state.db),
                )
                .await
                {
                    Ok(Ok(p)) if p.is_empty() => None,
                    Ok(Ok(_)) => Some("migrations_pending"),
                    Ok(Err(_)) | Err(_) => Some("database_unreachable"),
                }
            }
            Ok(Err(_)) | Err(_) => Some("database_unreachable"),
        }
    };
    match reason {
        None => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready" })),
        ),
        Some(r) => {
            tracing::warn!(reason = r, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "status": "not_ready", "reason": r })),
            )
        }
    }
}
