//! The server's key material at run time: keys derived from the master secret,
//! and the job-signing key, created on first start and stored wrapped.

use anyhow::Context as _;
use picket_proto::KeyFingerprint;
use picket_shared::keys::ServerSigningKey;
use picket_shared::vault::{MasterKeys, MasterSecret};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set,
};

use crate::db::entity::server_key;
use crate::time::unix_now;

/// Keys held in memory while the server runs.
pub struct ServerKeys {
    /// Keys derived from the master secret.
    pub master: MasterKeys,
    /// The active job-signing key.
    pub signing: ServerSigningKey,
    /// Its fingerprint (key id in job headers, pinned by agents).
    pub fingerprint: KeyFingerprint,
}

impl ServerKeys {
    /// Derives the master keys and loads the active signing key, generating and
    /// storing one (wrapped) on the first start.
    ///
    /// # Errors
    /// If the stored signing key cannot be unwrapped — almost always a different
    /// master secret than the one this database was created with.
    pub async fn load_or_create(db: &DatabaseConnection, secret: &[u8]) -> anyhow::Result<Self> {
        let master =
            MasterKeys::derive(&MasterSecret::new(secret.to_vec()).context("master secret")?);
        let active = server_key::Entity::find()
            .filter(server_key::Column::Active.eq(true))
            .one(db)
            .await
            .context("reading the server signing key")?;
        let signing = match active {
            Some(row) => master.unwrap_signing_key(&row.wrapped_private).map_err(|_| {
                anyhow::anyhow!(
                    "the job-signing key in the database cannot be unwrapped with this master_secret: \
                     the server was started with a different master secret than the one that created the database"
                )
            })?,
            None => {
                let key = ServerSigningKey::generate().context("generating the job-signing key")?;
                let wrapped = master.wrap_signing_key(&key).context("wrapping the job-signing key")?;
                server_key::ActiveModel {
                    id: Set(key.fingerprint().to_hex()),
                    public_key: Set(key.verifying_key().to_bytes().to_vec()),
                    wrapped_private: Set(wrapped),
                    active: Set(true),
                    created_at: Set(unix_now()),
                }
                .insert(db)
                .await
                .context("storing the job-signing key")?;
                tracing::info!(fingerprint = %key.fingerprint(), "generated the job-signing key");
                key
            }
        };
        let fingerprint = signing.fingerprint();
        Ok(ServerKeys {
            master,
            signing,
            fingerprint,
        })
    }
}
