//! The fleet view: agents with liveness and their latest health.

use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, QueryOrder as _,
};
use uuid::Uuid;

use crate::db::entity::{agent, agent_health};
use crate::error::{ApiError, ApiResult};

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
    let agents = agent::Entity::find()
        .filter(agent::Column::TenantId.eq(tenant_id))
        .order_by_asc(agent::Column::EnrolledAt)
        .all(db)
        .await?;
    let healths = agent_health::Entity::find()
        .filter(agent_health::Column::TenantId.eq(tenant_id))
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
    let agent = agent::Entity::find_by_id(id)
        .filter(agent::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(ApiError::NotFound("agent"))?;
    let health = agent_health::Entity::find_by_id(id).one(db).await?;
    Ok(AgentView { agent, health })
}
