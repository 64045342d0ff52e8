//! Several replicas on one database: `agent_sessions` records which replica
//! holds each agent's live session, so the fleet view of any replica shows
//! agents connected to the others. `instance` is the replica process's random
//! id (new at each start); `seen_at` is refreshed by that replica every few
//! seconds, so the sessions of a replica that died stop counting as live.
//! A row is replaced when the agent connects anywhere and deleted when its
//! session ends (only by the replica that holds it).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000011_scale"
    }
}

#[derive(DeriveIden)]
enum AgentSessions {
    Table,
    AgentId,
    Instance,
    Replica,
    ConnectedAt,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(AgentSessions::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(AgentSessions::AgentId)
                        .uuid()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(AgentSessions::Instance).uuid().not_null())
                .col(ColumnDef::new(AgentSessions::Replica).string().not_null())
                .col(
                    ColumnDef::new(AgentSessions::ConnectedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(AgentSessions::SeenAt)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("agent_sessions_instance")
                .table(AgentSessions::Table)
                .col(AgentSessions::Instance)
                .to_owned(),
        )
        .await
    }
}
