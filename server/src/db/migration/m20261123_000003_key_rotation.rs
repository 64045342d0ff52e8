//! Key rotation, both ways.
//!
//! `server_keys`: each key after the first records the key it replaced
//! (`prev_key_id`), that key's endorsement of it (`endorsement`, an Ed25519
//! signature over `KeyLink::signing_bytes`) and until when jobs signed by the
//! predecessor stay acceptable (`prev_valid_until`). Agents receive these
//! links in `Welcome` and walk them.
//!
//! `agents`: the identity and job keys replaced by the last rotation
//! (`previous_ed25519_public`, `previous_x25519_public`, so a `Hello` signed
//! with a superseded key is refused with a precise reason, and a repeated
//! rotation proof after an agent crash is recognised), when it happened
//! (`keys_rotated_at`) and a pending admin request (`rotate_requested_at`).
//!
//! One `ALTER TABLE` per column: SQLite cannot add several at once.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000003_key_rotation"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            (
                "server_keys",
                ColumnDef::new(a("prev_key_id")).string().null().to_owned(),
            ),
            (
                "server_keys",
                ColumnDef::new(a("endorsement")).binary().null().to_owned(),
            ),
            (
                "server_keys",
                ColumnDef::new(a("prev_valid_until"))
                    .big_integer()
                    .null()
                    .to_owned(),
            ),
            (
                "agents",
                ColumnDef::new(a("previous_ed25519_public"))
                    .binary()
                    .null()
                    .to_owned(),
            ),
            (
                "agents",
                ColumnDef::new(a("previous_x25519_public"))
                    .binary()
                    .null()
                    .to_owned(),
            ),
            (
                "agents",
                ColumnDef::new(a("keys_rotated_at"))
                    .big_integer()
                    .null()
                    .to_owned(),
            ),
            (
                "agents",
                ColumnDef::new(a("rotate_requested_at"))
                    .big_integer()
                    .null()
                    .to_owned(),
            ),
        ];
        for (table, mut col) in columns {
            m.alter_table(
                Table::alter()
                    .table(a(table))
                    .add_column(&mut col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
