//! Reading the log: filtered, paged listing of one log's events.

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};
use serde::Serialize;

use crate::db::entity::audit_event;

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1000;

/// Filters of a listing; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `user`, `api_key`, `agent`, `system`, `anonymous`.
    pub actor_type: Option<String>,
    /// The actor's id.
    pub actor_id: Option<String>,
    /// Exact action, e.g. `deployment.approve`.
    pub action: Option<String>,
    /// Resource type.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// `success`, `failure`, `denied`.
    pub outcome: Option<String>,
    /// From this Unix time (inclusive).
    pub since: Option<i64>,
    /// Before this Unix time (exclusive).
    pub until: Option<i64>,
    /// Only events with a larger index (the paging cursor).
    pub after: Option<i64>,
    /// Page size (1 to [`MAX_LIMIT`]).
    pub limit: u64,
}

/// One event as the API and exports show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Leaf index in the tenant's log.
    pub index: i64,
    /// Hex leaf hash, `SHA-256(0x00 ‖ canonical)`.
    pub leaf_hash: String,
    /// The event (parsed canonical JSON: `v`, `id`, `log`, `time`, `at`,
    /// `tenant`, `actor`, `action`, `resource`, `source`, `client_ip`,
    /// `user_agent`, `outcome`, `details`).
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// The exact leaf bytes (what the leaf hash covers).
    pub canonical: String,
}

impl From<audit_event::Model> for EventView {
    fn from(m: audit_event::Model) -> Self {
        EventView {
            index: m.idx,
            leaf_hash: hex::encode(&m.leaf_hash),
            event: serde_json::from_str(&m.canonical).unwrap_or(serde_json::Value::Null),
            canonical: m.canonical,
        }
    }
}

/// Events of `log_id` matching `f`, by increasing index.
///
/// # Errors
/// On storage failure.
pub async fn list(
    conn: &impl ConnectionTrait,
    log_id: &str,
    f: &Filter,
) -> Result<Vec<audit_event::Model>, sea_orm::DbErr> {
    use audit_event::Column as C;
    let mut q = audit_event::Entity::find().filter(C::LogId.eq(log_id));
    for (col, v) in [
        (C::ActorType, &f.actor_type),
        (C::ActorId, &f.actor_id),
        (C::Action, &f.action),
        (C::ResourceType, &f.resource_type),
        (C::ResourceId, &f.resource_id),
        (C::Outcome, &f.outcome),
    ] {
        if let Some(v) = v {
            q = q.filter(col.eq(v.clone()));
        }
    }
    if let Some(s) = f.since {
        q = q.filter(C::At.gte(s));
    }
    if let Some(u) = f.until {
        q = q.filter(C::At.lt(u));
    }
    if let Some(a) = f.after {
        q = q.filter(C::Idx.gt(a));
    }
    q.order_by_asc(C::Idx)
        .limit(f.limit.clamp(1, MAX_LIMIT))
        .all(conn)
        .await
}
