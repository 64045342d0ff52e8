//! The fleet: agents, liveness and latest health; revocation and key-rotation requests (admin).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use picket_proto::SiemHealth;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiPath;
use crate::AppState;
use crate::auth::{Auth, perm};
use crate::error::ApiResult;
use crate::service::agents::{self, AgentView};
use crate::service::key_rotation;
use crate::time::{rfc3339, unix_now};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", get(list))
        .route("/v1/agents/{id}", get(show))
        .route("/v1/agents/{id}/revoke", post(revoke))
        .route("/v1/agents/{id}/rotate-keys", post(rotate_keys))
}

/// Derived fleet status.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FleetStatus {
    /// Connected, healthy, every SIEM reachable.
    Online,
    /// Connected, but a SIEM is unreachable.
    Degraded,
    /// Not connected to any replica.
    Offline,
    /// Revoked.
    Revoked,
}

/// One SIEM connection's reachability as last reported.
#[derive(Serialize, ToSchema)]
pub struct SiemHealthView {
    /// Connection id.
    pub connection_id: Uuid,
    /// Reachable at the last probe.
    pub reachable: bool,
    /// Round trip, ms.
    pub latency_ms: Option<u32>,
    /// Failure class.
    pub error_class: Option<String>,
}

/// Latest health.
#[derive(Serialize, ToSchema)]
pub struct HealthView {
    /// When the agent took these figures (its `taken_at`, RFC 3339): a report
    /// buffered while the agent was offline keeps its own time.
    pub reported_at: String,
    /// Seconds since the figures were taken.
    pub age_secs: i64,
    /// Agent uptime.
    pub uptime_secs: i64,
    /// Agent CPU, percent of one core.
    pub cpu_percent: f64,
    /// Agent resident memory.
    pub rss_bytes: i64,
    /// Host memory in use.
    pub host_mem_used_bytes: i64,
    /// Host memory in total.
    pub host_mem_total_bytes: i64,
    /// Jobs succeeded since start.
    pub jobs_succeeded: i64,
    /// Jobs failed or refused since start.
    pub jobs_failed: i64,
    /// Per SIEM connection.
    pub siem: Vec<SiemHealthView>,
}

/// An agent as shown by the API.
#[derive(Serialize, ToSchema)]
pub struct AgentResponse {
    /// Id.
    pub id: Uuid,
    /// Host name reported at enrollment.
    pub hostname: String,
    /// Agent version reported at enrollment.
    pub version: String,
    /// Derived status.
    pub status: FleetStatus,
    /// Connected now, to this server or (PostgreSQL) to another replica.
    pub connected: bool,
    /// Enrolled (RFC 3339).
    pub enrolled_at: String,
    /// Last connect/disconnect (RFC 3339).
    pub last_seen_at: Option<String>,
    /// Latest health report.
    pub health: Option<HealthView>,
    /// When the agent last rotated its keys (RFC 3339), if ever.
    pub keys_rotated_at: Option<String>,
    /// When an admin asked for a key rotation that has not happened yet (RFC 3339).
    pub rotation_requested_at: Option<String>,
}

/// Agents among `views` connected to another replica (PostgreSQL scale-out).
async fn elsewhere(
    state: &AppState,
    views: &[AgentView],
) -> ApiResult<std::collections::HashSet<Uuid>> {
    let ids: Vec<Uuid> = views
        .iter()
        .map(|v| v.agent.id)
        .filter(|id| !state.registry.is_connected(*id))
        .collect();
    Ok(crate::gateway::cluster::connected_elsewhere(state, &state.db, &ids).await?)
}

fn view(
    state: &AppState,
    v: AgentView,
    elsewhere: &std::collections::HashSet<Uuid>,
) -> AgentResponse {
    let connected = state.registry.is_connected(v.agent.id) || elsewhere.contains(&v.agent.id);
    let now = unix_now();
    let health = v.health.map(|h| {
        let siem: Vec<SiemHealth> = serde_json::from_str(&h.siem).unwrap_or_default();
        HealthView {
            reported_at: rfc3339(h.reported_at),
            age_secs: now - h.reported_at,
            uptime_secs: h.uptime_secs,
            cpu_percent: h.cpu_percent,
            rss_bytes: h.rss_bytes,
            host_mem_used_bytes: h.host_mem_used_bytes,
            host_mem_total_bytes: h.host_mem_total_bytes,
            jobs_succeeded: h.jobs_succeeded,
            jobs_failed: h.jobs_failed,
            siem: siem
                .into_iter()
                .map(|s| SiemHealthView {
                    connection_id: s.connection_id,
                    reachable: s.reachable,
                    latency_ms: s.latency_ms,
                    error_class: s.error_class.map(|c| c.as_str().to_owned()),
                })
                .collect(),
        }
    });
    let status = if v.agent.revoked_at.is_some() {
        FleetStatus::Revoked
    } else if !connected {
        FleetStatus::Offline
    } else if health
        .as_ref()
        .is_some_and(|h| h.siem.iter().any(|s| !s.reachable))
    {
        FleetStatus::Degraded
    } else {
        FleetStatus::Online
    };
    AgentResponse {
        id: v.agent.id,
        hostname: v.agent.hostname,
        version: v.agent.version,
        status,
        connected,
        enrolled_at: rfc3339(v.agent.enrolled_at),
        last_seen_at: v.agent.last_seen_at.map(rfc3339),
        health,
        keys_rotated_at: v.agent.keys_rotated_at.map(rfc3339),
        rotation_requested_at: v.agent.rotate_requested_at.map(rfc3339),
    }
}

/// Agents of the tenant.
#[utoipa::path(get, path = "/v1/agents", responses((status = 200, body = [AgentResponse])))]
pub async fn list(
    State(state): State<AppState>,
    user: Auth<perm::ReadAgents>,
) -> ApiResult<Json<Vec<AgentResponse>>> {
    let all = agents::list(&state.db, user.tenant_id).await?;
    let remote = elsewhere(&state, &all).await?;
    Ok(Json(
        all.into_iter().map(|v| view(&state, v, &remote)).collect(),
    ))
}

/// One agent.
#[utoipa::path(get, path = "/v1/agents/{id}", params(("id" = Uuid, Path)), responses((status = 200, body = AgentResponse), (status = 404)))]
pub async fn show(
    State(state): State<AppState>,
    user: Auth<perm::ReadAgents>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<AgentResponse>> {
    let v = agents::get(&state.db, user.tenant_id, id).await?;
    let remote = elsewhere(&state, std::slice::from_ref(&v)).await?;
    Ok(Json(view(&state, v, &remote)))
}

/// Revokes an agent (admin only, audited). Its live connection is sent
/// `Revoked` and closed at once (the agent stops for good), it can neither
/// reconnect nor enroll again with its keys, and its unanswered jobs are
/// cancelled (their deployments become `failed` with `error_class`
/// `agent_revoked`).
#[utoipa::path(post, path = "/v1/agents/{id}/revoke", params(("id" = Uuid, Path)),
    responses((status = 200, body = AgentResponse), (status = 403), (status = 404), (status = 409, description = "already_revoked")))]
pub async fn revoke(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<AgentResponse>> {
    let v = agents::revoke(&state, admin.tenant_id, admin.id, id).await?;
    let remote = elsewhere(&state, std::slice::from_ref(&v)).await?;
    Ok(Json(view(&state, v, &remote)))
}

/// Asks an agent to rotate its key pairs (admin only, audited as
/// `agent.rotate_keys_request`). The request is stored and sent at once to a
/// live connection, else at the agent's next connection; the agent then
/// proves new keys with its current identity (`agent.rotate_keys`), after
/// which its old identity key is refused. `rotation_requested_at` stays set
/// until the rotation happened (`keys_rotated_at`).
#[utoipa::path(post, path = "/v1/agents/{id}/rotate-keys", params(("id" = Uuid, Path)),
    responses((status = 200, body = AgentResponse), (status = 403), (status = 404), (status = 409, description = "agent_revoked")))]
pub async fn rotate_keys(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<AgentResponse>> {
    key_rotation::request(&state, &admin, id).await?;
    let v = agents::get(&state.db, admin.tenant_id, id).await?;
    let remote = elsewhere(&state, std::slice::from_ref(&v)).await?;
    Ok(Json(view(&state, v, &remote)))
}
