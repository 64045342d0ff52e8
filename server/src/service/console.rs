//! Read queries behind the web console that the API does not need: the paged
//! fleet table, health history, an agent's recent jobs, what was deployed
//! before a request, and the live-status poll. Every query is tenant-scoped.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use uuid::Uuid;

use crate::db::entity::{
    agent, agent_health, deployment, health_sample, job, rule_version, tenant, user,
};
use crate::error::{ApiError, ApiResult};
use crate::gateway::Registry;
use crate::service::scope::TenantScope;

/// Rows per fleet page.
pub const FLEET_PAGE: u64 = 50;
/// Longest host-name filter accepted.
pub const MAX_FILTER_LEN: usize = 100;

/// Sort key of the fleet table (each has an index on `(tenant_id, key)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FleetSort {
    /// Host name, A to Z.
    #[default]
    Host,
    /// Agent version.
    Version,
    /// Last connect or disconnect.
    LastSeen,
    /// Enrollment time.
    Enrolled,
}

impl FleetSort {
    /// Parses the query-string name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "host" => Some(Self::Host),
            "version" => Some(Self::Version),
            "last_seen" => Some(Self::LastSeen),
            "enrolled" => Some(Self::Enrolled),
            _ => None,
        }
    }

    /// The query-string name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Version => "version",
            Self::LastSeen => "last_seen",
            Self::Enrolled => "enrolled",
        }
    }

    fn column(self) -> agent::Column {
        match self {
            Self::Host => agent::Column::Hostname,
            Self::Version => agent::Column::Version,
            Self::LastSeen => agent::Column::LastSeenAt,
            Self::Enrolled => agent::Column::EnrolledAt,
        }
    }
}

/// Connection filter of the fleet table. Connection state lives in this
/// process's registry, not in the database, so this filter is applied to the
/// ids after the (indexed) text filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Liveness {
    /// Every agent.
    #[default]
    Any,
    /// Connected now.
    Connected,
    /// Not connected (offline or revoked).
    Disconnected,
}

/// What the fleet table asks for.
#[derive(Debug, Clone, Default)]
pub struct FleetQuery {
    /// Host-name prefix (case-sensitive, uses the index).
    pub host_prefix: Option<String>,
    /// Connected or not.
    pub liveness: Liveness,
    /// Sort key.
    pub sort: FleetSort,
    /// Descending order.
    pub desc: bool,
    /// Zero-based page.
    pub page: u64,
}

/// One page of the fleet.
pub struct FleetPage {
    /// The agents of the page with their latest health.
    pub rows: Vec<(agent::Model, Option<agent_health::Model>)>,
    /// Agents matching the filter.
    pub total: u64,
}

/// One page of a tenant's agents, sorted and filtered in the database
/// (`LIMIT`/`OFFSET` over an index), with the latest health of that page only.
///
/// # Errors
/// 400 on a filter longer than [`MAX_FILTER_LEN`]; storage failures.
pub async fn fleet_page(
    db: &impl ConnectionTrait,
    registry: &Registry,
    scope: TenantScope,
    q: &FleetQuery,
) -> ApiResult<FleetPage> {
    let mut base = scope.find::<agent::Entity>();
    if let Some(p) = q.host_prefix.as_deref().filter(|p| !p.is_empty()) {
        if p.chars().count() > MAX_FILTER_LEN || p.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("host: at most {MAX_FILTER_LEN} printable characters"),
            ));
        }
        base = base.filter(agent::Column::Hostname.starts_with(p));
    }
    let col = q.sort.column();
    let ordered = if q.desc {
        base.order_by_desc(col).order_by_desc(agent::Column::Id)
    } else {
        base.order_by_asc(col).order_by_asc(agent::Column::Id)
    };
    let offset = q.page.saturating_mul(FLEET_PAGE);
    let (agents, total) = match q.liveness {
        Liveness::Any => {
            let total = ordered.clone().count(db).await?;
            let agents = ordered.offset(offset).limit(FLEET_PAGE).all(db).await?;
            (agents, total)
        }
        live => {
            // Ids only (a few bytes each), in index order; then the page's rows.
            let ids: Vec<Uuid> = ordered
                .select_only()
                .column(agent::Column::Id)
                .into_tuple()
                .all(db)
                .await?;
            let want = live == Liveness::Connected;
            let matching: Vec<Uuid> = ids
                .into_iter()
                .filter(|id| registry.is_connected(*id) == want)
                .collect();
            let total = matching.len() as u64;
            let page: Vec<Uuid> = matching
                .into_iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(usize::try_from(FLEET_PAGE).unwrap_or(50))
                .collect();
            let mut rows = scope
                .find::<agent::Entity>()
                .filter(agent::Column::Id.is_in(page.clone()))
                .all(db)
                .await?;
            let pos: HashMap<Uuid, usize> =
                page.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            rows.sort_by_key(|a| pos.get(&a.id).copied().unwrap_or(usize::MAX));
            (rows, total)
        }
    };
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let mut health: HashMap<Uuid, agent_health::Model> = scope
        .find::<agent_health::Entity>()
        .filter(agent_health::Column::AgentId.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|h| (h.agent_id, h))
        .collect();
    Ok(FleetPage {
        rows: agents
            .into_iter()
            .map(|a| {
                let h = health.remove(&a.id);
                (a, h)
            })
            .collect(),
        total,
    })
}

/// Health samples of one agent since `since` (Unix time), oldest first, at
/// most `limit` (the newest ones).
///
/// # Errors
/// On storage failure.
pub async fn health_history(
    db: &impl ConnectionTrait,
    scope: TenantScope,
    agent_id: Uuid,
    since: i64,
    limit: u64,
) -> ApiResult<Vec<health_sample::Model>> {
    let mut rows = health_sample::Entity::find()
        .filter(health_sample::Column::TenantId.eq(scope.tenant_id()))
        .filter(health_sample::Column::AgentId.eq(agent_id))
        .filter(health_sample::Column::ReportedAt.gte(since))
        .order_by_desc(health_sample::Column::ReportedAt)
        .limit(limit)
        .all(db)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// The newest jobs of one agent (metadata only; the sealed body is not read).
///
/// # Errors
/// On storage failure.
pub async fn recent_jobs(
    db: &impl ConnectionTrait,
    scope: TenantScope,
    agent_id: Uuid,
    limit: u64,
) -> ApiResult<Vec<job::Model>> {
    Ok(scope
        .find::<job::Entity>()
        .filter(job::Column::AgentId.eq(agent_id))
        .order_by_desc(job::Column::CreatedAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// Emails of the tenant's users, by id (for "requested by", "approved by").
///
/// # Errors
/// On storage failure.
pub async fn user_emails(
    db: &impl ConnectionTrait,
    scope: TenantScope,
) -> ApiResult<HashMap<Uuid, String>> {
    Ok(scope
        .find::<user::Entity>()
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect())
}

/// The tenant row (its settings).
///
/// # Errors
/// 404 if it does not exist.
pub async fn tenant(db: &impl ConnectionTrait, scope: TenantScope) -> ApiResult<tenant::Model> {
    tenant::Entity::find_by_id(scope.tenant_id())
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("tenant"))
}

/// The rule version that the last succeeded deployment of the same rule to
/// the same connection (before `d`) applied: what `d` would replace.
///
/// # Errors
/// On storage failure.
pub async fn deployed_before(
    db: &impl ConnectionTrait,
    scope: TenantScope,
    d: &deployment::Model,
) -> ApiResult<Option<rule_version::Model>> {
    let prev = scope
        .find::<deployment::Entity>()
        .filter(deployment::Column::RuleId.eq(d.rule_id))
        .filter(deployment::Column::ConnectionId.eq(d.connection_id))
        .filter(deployment::Column::Status.eq("succeeded"))
        .filter(deployment::Column::Action.eq("deploy"))
        .filter(deployment::Column::Id.ne(d.id))
        .filter(deployment::Column::CreatedAt.lte(d.created_at))
        .order_by_desc(deployment::Column::CreatedAt)
        .one(db)
        .await?;
    match prev {
        Some(p) => Ok(scope
            .find::<rule_version::Entity>()
            .filter(rule_version::Column::Id.eq(p.rule_version_id))
            .one(db)
            .await?),
        None => Ok(None),
    }
}

/// Deployments changed at or after `since` (Unix time), at most 200: what
/// the live-status stream sends.
///
/// # Errors
/// On storage failure.
pub async fn deployments_changed(
    db: &impl ConnectionTrait,
    scope: TenantScope,
    since: i64,
) -> ApiResult<Vec<deployment::Model>> {
    Ok(scope
        .find::<deployment::Entity>()
        .filter(deployment::Column::UpdatedAt.gte(since))
        .order_by_asc(deployment::Column::UpdatedAt)
        .limit(200)
        .all(db)
        .await?)
}

/// Deployments awaiting approval, oldest first (at most 500).
///
/// # Errors
/// On storage failure.
pub async fn pending(
    db: &impl ConnectionTrait,
    scope: TenantScope,
) -> ApiResult<Vec<deployment::Model>> {
    Ok(scope
        .find::<deployment::Entity>()
        .filter(deployment::Column::Status.eq("pending_approval"))
        .order_by_asc(deployment::Column::CreatedAt)
        .limit(500)
        .all(db)
        .await?)
}

/// Latest versions of every rule of the tenant (title, severity), by rule id.
///
/// # Errors
/// On storage failure.
pub async fn latest_versions(
    db: &impl ConnectionTrait,
    scope: TenantScope,
) -> ApiResult<HashMap<Uuid, rule_version::Model>> {
    let mut out: HashMap<Uuid, rule_version::Model> = HashMap::new();
    for v in scope
        .find::<rule_version::Entity>()
        .order_by_asc(rule_version::Column::Version)
        .all(db)
        .await?
    {
        out.insert(v.rule_id, v);
    }
    Ok(out)
}
