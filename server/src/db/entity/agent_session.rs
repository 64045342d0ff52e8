//! Which replica holds an agent's live session (PostgreSQL with several
//! replicas; see `gateway::cluster`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: Uuid,
    /// The holding replica process (random per start).
    pub instance: Uuid,
    /// Its `replica_id` (configuration), for operators.
    pub replica: String,
    pub connected_at: i64,
    /// Refreshed by the holding replica; stale when it died.
    pub seen_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
