//! The tenant handle every tenant query goes through.
//!
//! [`TenantScope`] holds one tenant id (taken from the authenticated caller)
//! and builds queries that are already filtered by it: [`TenantScope::find`]
//! and [`TenantScope::get`] work only on entities that implement
//! [`TenantOwned`], i.e. that name their tenant column. A service that takes a
//! `TenantScope` cannot reach another tenant's rows by forgetting a filter.

use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait, PrimaryKeyTrait, QueryFilter as _, Select,
};
use uuid::Uuid;

use crate::db::entity;
use crate::error::{ApiError, ApiResult};

/// An entity whose rows belong to one tenant.
pub trait TenantOwned: EntityTrait {
    /// The column holding the owning tenant's id.
    fn tenant_column() -> Self::Column;
}

macro_rules! tenant_owned {
    ($($m:ident),* $(,)?) => {
        $(impl TenantOwned for entity::$m::Entity {
            fn tenant_column() -> Self::Column {
                entity::$m::Column::TenantId
            }
        })*
    };
}
tenant_owned!(
    agent,
    agent_health,
    api_key,
    approval,
    breakglass_review,
    deployment,
    deployment_item,
    drift_check,
    enrollment_token,
    invitation,
    job,
    notification,
    rule,
    rule_deployment,
    rule_health_check,
    rule_health_sample,
    rule_version,
    rule_test_run,
    session,
    siem_connection,
    user,
);

/// One tenant's view of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: Uuid,
}

impl TenantScope {
    /// The scope of `tenant_id` (from the authenticated caller).
    pub fn new(tenant_id: Uuid) -> Self {
        TenantScope { tenant_id }
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// `SELECT` of `E` restricted to this tenant.
    pub fn find<E: TenantOwned>(&self) -> Select<E> {
        E::find().filter(E::tenant_column().eq(self.tenant_id))
    }

    /// One row of `E` by id, if it belongs to this tenant.
    ///
    /// # Errors
    /// 404 (`what` not found) when absent or another tenant's; storage failures.
    pub async fn get<E>(
        &self,
        conn: &impl ConnectionTrait,
        id: Uuid,
        what: &'static str,
    ) -> ApiResult<E::Model>
    where
        E: TenantOwned,
        <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<Uuid>,
    {
        E::find_by_id(id)
            .filter(E::tenant_column().eq(self.tenant_id))
            .one(conn)
            .await?
            .ok_or(ApiError::NotFound(what))
    }
}
