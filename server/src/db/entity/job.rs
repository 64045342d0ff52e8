//! The durable outbox: each sealed job, its delivery state and its result.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub deployment_id: Option<Uuid>,
    /// The sealed job, JSON; only the agent can open its ciphertext.
    #[sea_orm(column_type = "Text")]
    pub sealed: String,
    /// `pending` (not yet acknowledged), `acked`, `completed`, `expired`.
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub send_count: i32,
    pub last_sent_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub outcome: Option<String>,
    pub error_class: Option<String>,
    pub duration_ms: Option<i64>,
    pub content_hash: Option<Vec<u8>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
