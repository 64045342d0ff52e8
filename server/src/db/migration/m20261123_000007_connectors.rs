//! Connections to Microsoft Sentinel and Elastic Security: their non-secret
//! settings (workspace, endpoints, Kibana space, test index...) as a JSON text
//! column, `siem_connections.settings`. Splunk rows keep using `base_url`,
//! `app` and `owner` and leave it NULL. Secrets stay in `credential`.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000007_connectors"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("siem_connections"))
                .add_column(ColumnDef::new(Alias::new("settings")).text().null())
                .to_owned(),
        )
        .await
    }
}
