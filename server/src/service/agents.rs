//! The fleet view: agents with liveness and their latest health; revocation.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event};
use crate::db::entity::{agent, agent_health};
use crate::error::{ApiError, ApiResult};
use crate::service::jobs;
use crate::service::scope::TenantScope;
use crate::time::unix_now;

/// An agent with its latest health, if any.
pub struct AgentView {
    /// The agent row.
    pub agent: agent::Model,
    /// Its latest health report.
    pub health: Option<agent_health::Model>,
}

/// Agents of a tenant, oldest first.
///
/// # Errors
/// On storage failure.
pub async fn list(db: &DatabaseConnection, tenant_id: Uuid) -> ApiResult<Vec<AgentView>> {
    let agents = TenantScope::new(tenant_id)
        .find::<agent::Entity>()
        .order_by_asc(agent::Column::EnrolledAt)
        .all(db)
        .await?;
    let healths = TenantScope::new(tenant_id)
        .find::<agent_health::Entity>()
        .all(db)
        .await?;
    let mut by_id: std::collections::HashMap<Uuid, agent_health::Model> =
        healths.into_iter().map(|h| (h.agent_id, h)).collect();
    Ok(agents
        .into_iter()
        .map(|a| AgentView {
            health: by_id.remove(&a.id),
            agent: a,
        })
        .collect())
}

/// One agent of a tenant.
///
/// # Errors
/// 404 if it does not exist in this tenant.
pub async fn get(db: &DatabaseConnection, tenant_id: Uuid, id: Uuid) -> ApiResult<AgentView> {
    let agent = TenantScope::new(tenant_id)
        .find::<agent::Entity>()
        .filter(agent::Column::Id.eq(id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    let health = agent_health::Entity::find_by_id(id).one(db).await?;
    Ok(AgentView { agent, health })
}

/// Revokes an agent of the admin's tenant, for good.
///
/// In one transaction (with its audit event): `revoked_at` is set, and every
/// unanswered job is cancelled (see [`jobs::cancel_for_revoked_agent`]). After
/// the commit the agent's live connection on this server, if any, is told
/// (`Revoked`, then close); the gateway refuses its reconnects, and enrollment
/// refuses its keys (`key_revoked`). A connection racing with the revocation
/// is caught by the gateway's revoked-guarded connect update.
///
/// # Errors
/// 404 if the agent is not in this tenant; 409 `already_revoked`.
pub async fn revoke(
    state: &AppState,
    tenant_id: Uuid,
    admin_id: Uuid,
    agent_id: Uuid,
) -> ApiResult<AgentView> {
    let now = unix_now();
    let txn = state.db.begin().await?;
    let res = agent::Entity::update_many()
        .col_expr(agent::Column::RevokedAt, Expr::value(now))
        .filter(agent::Column::Id.eq(agent_id))
        .filter(agent::Column::TenantId.eq(tenant_id))
        .filter(agent::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    if res.rows_affected != 1 {
        let exists = TenantScope::new(tenant_id)
            .find::<agent::Entity>()
            .filter(agent::Column::Id.eq(agent_id))
            .one(&txn)
            .await?
            .is_some();
        return Err(if exists {
            ApiError::conflict("already_revoked", "this agent is already revoked")
        } else {
            ApiError::NotFound("agent")
        });
    }
    let cancelled = jobs::cancel_for_revoked_agent(&txn, tenant_id, agent_id).await?;
    audit::record(
        &txn,
        Event::user(tenant_id, admin_id, "agent.revoke", "agent", agent_id).details(
            serde_json::json!({ "cancelled_jobs": cancelled, "was_connected": state.registry.is_connected(agent_id) }),
        ),
    )
    .await?;
    txn.commit().await?;
    let told = state.registry.revoke(agent_id);
    tracing::warn!(%agent_id, %tenant_id, %admin_id, live_connection = told, cancelled_jobs = cancelled.len(), "agent revoked");
    get(&state.db, tenant_id, agent_id).await
}
