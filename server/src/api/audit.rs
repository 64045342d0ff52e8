//! The audit log of the caller's tenant: events (filtered, paged), the
//! latest signed checkpoint, inclusion and consistency proofs, exports.
//! Reading needs [`perm::ReadAudit`] (Admin; API keys with `audit:read`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiPath, ApiQuery};
use crate::AppState;
use crate::audit::checkpoint::{self, KEY_NAME, origin};
use crate::audit::export::{self, ExportError, Format};
use crate::audit::proof::{self, ProofError};
use crate::audit::query::{self, EventView, Filter};
use crate::audit::{self, Event};
use crate::auth::{Auth, perm};
use crate::db::entity::audit_checkpoint;
use crate::error::{ApiError, ApiResult};
use crate::listener::ClientAddr;
use crate::time::rfc3339;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/audit/checkpoint",
            get(latest_checkpoint).post(checkpoint_now),
        )
        .route("/v1/audit/events", get(list_events))
        .route("/v1/audit/events/{index}/proof", get(inclusion_proof))
        .route("/v1/audit/consistency", get(consistency_proof))
        .route("/v1/audit/export", get(export_events))
}

/// A signed tree head of the tenant's audit log.
#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    /// The log (the tenant id).
    pub log: String,
    /// The checkpoint's origin line, `picket/audit/<tenant id>`.
    pub origin: String,
    /// Number of events in the tree.
    pub size: i64,
    /// Merkle tree hash, base64.
    pub root: String,
    /// The C2SP signed note (what agents and customers verify).
    pub note: String,
    /// The signature's key name.
    pub key_name: String,
    /// The server's Ed25519 public key, base64.
    pub public_key: String,
    /// When it was signed, RFC 3339.
    pub created_at: String,
}

fn checkpoint_view(state: &AppState, c: audit_checkpoint::Model) -> CheckpointView {
    CheckpointView {
        origin: origin(&c.log_id),
        log: c.log_id,
        size: c.size,
        root: STANDARD.encode(&c.root),
        note: c.note,
        key_name: KEY_NAME.to_owned(),
        public_key: STANDARD.encode(state.keys.signing.verifying_key().as_bytes()),
        created_at: rfc3339(c.created_at),
    }
}

async fn latest_of(state: &AppState, log: &str) -> ApiResult<audit_checkpoint::Model> {
    checkpoint::latest(&state.db, log)
        .await?
        .ok_or(ApiError::NotFound("audit checkpoint"))
}

/// The latest signed checkpoint of the tenant's log (signed at least every
/// minute while the log grows).
#[utoipa::path(get, path = "/v1/audit/checkpoint",
    responses((status = 200, body = CheckpointView), (status = 403), (status = 404, description = "nothing checkpointed yet")))]
pub async fn latest_checkpoint(
    State(state): State<AppState>,
    user: Auth<perm::ReadAudit>,
) -> ApiResult<Json<CheckpointView>> {
    let c = latest_of(&state, &user.tenant_id.to_string()).await?;
    Ok(Json(checkpoint_view(&state, c)))
}

/// Signs a checkpoint of the tenant's log now if it grew (Admin), and
/// returns the latest checkpoint.
#[utoipa::path(post, path = "/v1/audit/checkpoint",
    responses((status = 200, body = CheckpointView), (status = 403), (status = 404)))]
pub async fn checkpoint_now(
    State(state): State<AppState>,
    admin: Auth<perm::Administer>,
) -> ApiResult<Json<CheckpointView>> {
    let log = admin.tenant_id.to_string();
    sign_now(&state, &log).await?;
    let c = latest_of(&state, &log).await?;
    Ok(Json(checkpoint_view(&state, c)))
}

async fn sign_now(state: &AppState, log: &str) -> ApiResult<()> {
    while let Some(c) = checkpoint::checkpoint_log(&state.db, &state.keys.signing, log).await? {
        state.audit.announce(c);
    }
    Ok(())
}

/// Filters and paging of the event list.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// `user`, `api_key`, `agent`, `system` or `anonymous`.
    pub actor_type: Option<String>,
    /// The actor's id.
    pub actor_id: Option<String>,
    /// Exact action, e.g. `deployment.approve`.
    pub action: Option<String>,
    /// Resource type, e.g. `deployment`.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// From this time (RFC 3339, inclusive).
    pub since: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    pub until: Option<String>,
    /// Only events after this index (use `next_after` of the previous page).
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u64>,
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Events by increasing index.
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

fn parse_time(name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    v.map(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{name}: expected an RFC 3339 time such as 2026-11-23T10:00:00Z"),
                )
            })
    })
    .transpose()
}

fn filter_of(p: EventParams) -> ApiResult<Filter> {
    for (name, v) in [
        ("actor_type", &p.actor_type),
        ("actor_id", &p.actor_id),
        ("action", &p.action),
        ("resource_type", &p.resource_type),
        ("resource_id", &p.resource_id),
    ] {
        if v.as_ref().is_some_and(|s| s.len() > 512) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("{name}: at most 512 bytes"),
            ));
        }
    }
    if let Some(o) = &p.outcome
        && !matches!(o.as_str(), "success" | "failure" | "denied")
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "outcome: expected success, failure or denied",
        ));
    }
    let limit = p.limit.unwrap_or(query::DEFAULT_LIMIT);
    if !(1..=query::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: expected 1 to {}", query::MAX_LIMIT),
        ));
    }
    Ok(Filter {
        since: parse_time("since", p.since.as_deref())?,
        until: parse_time("until", p.until.as_deref())?,
        actor_type: p.actor_type,
        actor_id: p.actor_id,
        action: p.action,
        resource_type: p.resource_type,
        resource_id: p.resource_id,
        outcome: p.outcome,
        after: p.after,
        limit,
    })
}

/// Events of the tenant's log, filtered, by increasing index.
#[utoipa::path(get, path = "/v1/audit/events", params(EventParams),
    responses((status = 200, body = EventPage), (status = 400), (status = 403)))]
pub async fn list_events(
    State(state): State<AppState>,
    user: Auth<perm::ReadAudit>,
    ApiQuery(p): ApiQuery<EventParams>,
) -> ApiResult<Json<EventPage>> {
    let f = filter_of(p)?;
    let rows = query::list(&state.db, &user.tenant_id.to_string(), &f).await?;
    let next_after = (rows.len() as u64 == f.limit)
        .then(|| rows.last().map(|r| r.idx))
        .flatten();
    Ok(Json(EventPage {
        events: rows.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}

/// Which tree a proof is about.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
pub struct ProofParams {
    /// Tree size (default: the latest checkpoint's); at most the latest checkpointed size.
    pub tree_size: Option<u64>,
}

/// An inclusion proof.
#[derive(Serialize, ToSchema)]
pub struct InclusionView {
    /// Leaf index of the event.
    pub index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// Hex leaf hash of the event.
    pub leaf_hash: String,
    /// Sibling hashes, base64, lowest level first (RFC 6962 `PATH`).
    pub proof: Vec<String>,
    /// The latest signed checkpoint (its size may be larger than `tree_size`).
    pub checkpoint: CheckpointView,
}

fn proof_error(e: ProofError) -> ApiError {
    match e {
        ProofError::Invalid(m) => ApiError::bad_request("invalid_proof_request", m),
        ProofError::Storage(e) => ApiError::Internal(e),
    }
}

fn check_size(size: u64, latest: i64) -> ApiResult<()> {
    if i64::try_from(size).map_or(true, |s| s > latest) {
        return Err(ApiError::bad_request(
            "invalid_proof_request",
            format!("tree size {size} is not checkpointed yet (latest checkpoint: {latest})"),
        ));
    }
    Ok(())
}

/// Inclusion proof of one event in the tenant's log.
#[utoipa::path(get, path = "/v1/audit/events/{index}/proof", params(("index" = u64, Path), ProofParams),
    responses((status = 200, body = InclusionView), (status = 400), (status = 403), (status = 404)))]
pub async fn inclusion_proof(
    State(state): State<AppState>,
    user: Auth<perm::ReadAudit>,
    ApiPath(index): ApiPath<u64>,
    ApiQuery(p): ApiQuery<ProofParams>,
) -> ApiResult<Json<InclusionView>> {
    let log = user.tenant_id.to_string();
    let c = latest_of(&state, &log).await?;
    let size = p.tree_size.unwrap_or(u64::try_from(c.size).unwrap_or(0));
    check_size(size, c.size)?;
    let proof = proof::inclusion(&state.db, &log, index, size)
        .await
        .map_err(proof_error)?;
    let leaf = proof::leaves(&state.db, &log, index.saturating_add(1))
        .await
        .map_err(proof_error)?;
    let leaf_hash = leaf.last().map(hex::encode).unwrap_or_default();
    Ok(Json(InclusionView {
        index,
        tree_size: size,
        leaf_hash,
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
        checkpoint: checkpoint_view(&state, c),
    }))
}

/// Sizes of a consistency proof.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    /// The older tree size (at least 1).
    pub from: u64,
    /// The newer tree size (default: the latest checkpoint's).
    pub to: Option<u64>,
}

/// A consistency proof.
#[derive(Serialize, ToSchema)]
pub struct ConsistencyView {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// Proof hashes, base64 (RFC 6962 `PROOF`).
    pub proof: Vec<String>,
}

/// Consistency proof between two sizes of the tenant's log.
#[utoipa::path(get, path = "/v1/audit/consistency", params(ConsistencyParams),
    responses((status = 200, body = ConsistencyView), (status = 400), (status = 403), (status = 404)))]
pub async fn consistency_proof(
    State(state): State<AppState>,
    user: Auth<perm::ReadAudit>,
    ApiQuery(p): ApiQuery<ConsistencyParams>,
) -> ApiResult<Json<ConsistencyView>> {
    let log = user.tenant_id.to_string();
    let c = latest_of(&state, &log).await?;
    let to = p.to.unwrap_or(u64::try_from(c.size).unwrap_or(0));
    check_size(to, c.size)?;
    let proof = proof::consistency(&state.db, &log, p.from, to)
        .await
        .map_err(proof_error)?;
    Ok(Json(ConsistencyView {
        from: p.from,
        to,
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

/// Export parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `jsonl` (with checkpoint and proofs), `cef` or `syslog`.
    pub format: String,
    /// From this time (RFC 3339, inclusive).
    pub since: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    pub until: Option<String>,
}

/// Exports the tenant's events in a time range. The log is checkpointed
/// first, so the export covers every event up to now; the export itself is
/// audited (`audit.export`).
#[utoipa::path(get, path = "/v1/audit/export", params(ExportParams),
    responses((status = 200, description = "the export", content_type = "application/x-ndjson"), (status = 400), (status = 403)))]
pub async fn export_events(
    State(state): State<AppState>,
    user: Auth<perm::ReadAudit>,
    client: ClientAddr,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> ApiResult<Response> {
    let format = Format::parse(&p.format).ok_or_else(|| {
        ApiError::bad_request("invalid_query", "format: expected jsonl, cef or syslog")
    })?;
    let since = parse_time("since", p.since.as_deref())?;
    let until = parse_time("until", p.until.as_deref())?;
    let log = user.tenant_id.to_string();
    sign_now(&state, &log).await?;
    let body = export::export(
        &state.db,
        &log,
        since,
        until,
        format,
        state.keys.signing.verifying_key().as_bytes(),
    )
    .await
    .map_err(|e| match e {
        ExportError::NoCheckpoint => ApiError::NotFound("audit checkpoint"),
        ExportError::TooLarge => ApiError::bad_request("export_too_large", e.to_string()),
        ExportError::Storage(e) => ApiError::Internal(e),
    })?;
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    audit::record(
        &state.db,
        Event::user(user.tenant_id, user.id, "audit.export", "audit_log", &log)
            .client(client.ip(), ua)
            .details(serde_json::json!({
                "format": p.format,
                "since": p.since,
                "until": p.until,
            })),
    )
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response())
}
