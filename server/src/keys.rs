//! The server's key material at run time: keys derived from the master secret,
//! the job-signing key (created on first start and stored wrapped), and the
//! signing-key chain agents walk after a rotation.
//!
//! Rotation ([`rotate_signing_key`], `picket-server admin rotate-signing-key`)
//! generates a new key, stores it wrapped like the first, and has the current
//! key endorse it (a [`KeyLink`]: new public key and the overlap window until
//! which the old key's jobs stay acceptable). The new key becomes active in
//! the same transaction; a running server picks it up at its next start.

use std::collections::HashMap;

use anyhow::Context as _;
use picket_proto::rotation::MAX_KEY_CHAIN;
use picket_proto::{B64, KeyFingerprint, KeyLink};
use picket_shared::keys::ServerSigningKey;
use picket_shared::vault::{MasterKeys, MasterSecret};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set, TransactionTrait as _,
};

use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::db::entity::server_key;
use crate::time::unix_now;

/// Default overlap window after a signing-key rotation: 7 days.
pub const DEFAULT_OVERLAP_SECS: u64 = 7 * 24 * 3600;
/// Longest overlap window accepted: 90 days.
pub const MAX_OVERLAP_SECS: u64 = 90 * 24 * 3600;

/// Keys held in memory while the server runs.
pub struct ServerKeys {
    /// Keys derived from the master secret.
    pub master: MasterKeys,
    /// The active job-signing key.
    pub signing: ServerSigningKey,
    /// Its fingerprint (key id in job headers, pinned by agents).
    pub fingerprint: KeyFingerprint,
    /// The signing-key chain ending at the active key, oldest link first (at
    /// most [`MAX_KEY_CHAIN`]); empty before the first rotation. Sent in
    /// every `Challenge` and enrollment answer.
    pub chain: Vec<KeyLink>,
    /// Public key of the key that endorses the first link of `chain` (so an
    /// agent enrolling with a token issued before a rotation can verify it).
    pub chain_root: Option<[u8; 32]>,
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
        let active = active_row(db).await?;
        let (signing, (chain, chain_root)) = match active {
            Some(row) => {
                let key = unwrap(&master, &row)?;
                let chain = load_chain(db, &row).await?;
                (key, chain)
            }
            None => {
                let key = ServerSigningKey::generate().context("generating the job-signing key")?;
                let wrapped = master
                    .wrap_signing_key(&key)
                    .context("wrapping the job-signing key")?;
                server_key::ActiveModel {
                    id: Set(key.fingerprint().to_hex()),
                    public_key: Set(key.verifying_key().to_bytes().to_vec()),
                    wrapped_private: Set(wrapped),
                    active: Set(true),
                    created_at: Set(unix_now()),
                    prev_key_id: Set(None),
                    endorsement: Set(None),
                    prev_valid_until: Set(None),
                }
                .insert(db)
                .await
                .context("storing the job-signing key")?;
                tracing::info!(fingerprint = %key.fingerprint(), "generated the job-signing key");
                (key, (Vec::new(), None))
            }
        };
        let fingerprint = signing.fingerprint();
        Ok(ServerKeys {
            master,
            signing,
            fingerprint,
            chain,
            chain_root,
        })
    }
}

async fn active_row(db: &impl ConnectionTrait) -> anyhow::Result<Option<server_key::Model>> {
    server_key::Entity::find()
        .filter(server_key::Column::Active.eq(true))
        .one(db)
        .await
        .context("reading the server signing key")
}

fn unwrap(master: &MasterKeys, row: &server_key::Model) -> anyhow::Result<ServerSigningKey> {
    master.unwrap_signing_key(&row.wrapped_private).map_err(|_| {
        anyhow::anyhow!(
            "the job-signing key in the database cannot be unwrapped with this master_secret: \
             the server was started with a different master secret than the one that created the database"
        )
    })
}

/// Walks `prev_key_id` back from the active key and returns the links,
/// oldest first, with the public key that endorses the first one.
async fn load_chain(
    db: &DatabaseConnection,
    active: &server_key::Model,
) -> anyhow::Result<(Vec<KeyLink>, Option<[u8; 32]>)> {
    let rows: HashMap<String, server_key::Model> = server_key::Entity::find()
        .all(db)
        .await
        .context("reading the signing-key chain")?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let mut links = Vec::new();
    let mut root = None;
    let mut at = active;
    while let (Some(prev), Some(sig), Some(until)) =
        (&at.prev_key_id, &at.endorsement, at.prev_valid_until)
    {
        if links.len() == MAX_KEY_CHAIN {
            break;
        }
        let link = KeyLink {
            public: B64(at
                .public_key
                .as_slice()
                .try_into()
                .with_context(|| format!("server key {} has a malformed public key", at.id))?),
            prev_key_id: KeyFingerprint::from_hex(prev)
                .with_context(|| format!("server key {} names a malformed predecessor", at.id))?,
            prev_valid_until: until,
            sig: B64(sig
                .as_slice()
                .try_into()
                .with_context(|| format!("server key {} has a malformed endorsement", at.id))?),
        };
        links.push(link);
        match rows.get(prev) {
            Some(r) => {
                root = <[u8; 32]>::try_from(r.public_key.as_slice()).ok();
                at = r;
            }
            None => {
                // The endorser's row is gone: this link cannot be verified,
                // and `at` becomes the root of what remains.
                links.pop();
                root = <[u8; 32]>::try_from(at.public_key.as_slice()).ok();
                break;
            }
        }
    }
    links.reverse();
    Ok((links, root))
}

/// What [`rotate_signing_key`] did.
#[derive(Debug, Clone, Copy)]
pub struct Rotated {
    /// The key that was active.
    pub previous: KeyFingerprint,
    /// The new active key.
    pub current: KeyFingerprint,
    /// Until when (Unix seconds) agents accept jobs signed by `previous`.
    pub previous_valid_until: i64,
}

/// Rotates the job-signing key: a new key, wrapped under the master secret
/// like the first, endorsed by the current one with an overlap window of
/// `overlap_secs`, becomes active. One transaction with its audit event
/// (`server.rotate_signing_key`).
///
/// # Errors
/// If there is no signing key yet (the server never started), the current one
/// cannot be unwrapped with `secret`, `overlap_secs` is over
/// [`MAX_OVERLAP_SECS`], another rotation raced this one, or storage fails.
pub async fn rotate_signing_key(
    db: &DatabaseConnection,
    secret: &[u8],
    overlap_secs: u64,
) -> anyhow::Result<Rotated> {
    anyhow::ensure!(
        overlap_secs <= MAX_OVERLAP_SECS,
        "--overlap-secs must be at most {MAX_OVERLAP_SECS} (90 days)"
    );
    let master = MasterKeys::derive(&MasterSecret::new(secret.to_vec()).context("master secret")?);
    let txn = db.begin().await.context("starting the rotation")?;
    let old_row = active_row(&txn).await?.context(
        "there is no job-signing key yet: start the server once before rotating its key",
    )?;
    let old = unwrap(&master, &old_row)?;
    let new = ServerSigningKey::generate().context("generating the new job-signing key")?;
    let now = unix_now();
    let valid_until = now.saturating_add(i64::try_from(overlap_secs).unwrap_or(i64::MAX));
    let public = new.verifying_key().to_bytes();
    let endorsement = old.sign(&KeyLink::signing_bytes(
        &old.fingerprint(),
        &public,
        valid_until,
    ));
    let retired = server_key::Entity::update_many()
        .col_expr(server_key::Column::Active, Expr::value(false))
        .filter(server_key::Column::Id.eq(old_row.id.clone()))
        .filter(server_key::Column::Active.eq(true))
        .exec(&txn)
        .await
        .context("retiring the current signing key")?;
    anyhow::ensure!(
        retired.rows_affected == 1,
        "another rotation changed the active signing key meanwhile; nothing was changed"
    );
    server_key::ActiveModel {
        id: Set(new.fingerprint().to_hex()),
        public_key: Set(public.to_vec()),
        wrapped_private: Set(master
            .wrap_signing_key(&new)
            .context("wrapping the new job-signing key")?),
        active: Set(true),
        created_at: Set(now),
        prev_key_id: Set(Some(old_row.id.clone())),
        endorsement: Set(Some(endorsement.to_vec())),
        prev_valid_until: Set(Some(valid_until)),
    }
    .insert(&txn)
    .await
    .context("storing the new job-signing key")?;
    audit::record(
        &txn,
        Event {
            tenant_id: None,
            actor: Actor::System,
            action: "server.rotate_signing_key",
            resource_type: "server_key",
            resource_id: Some(new.fingerprint().to_hex()),
            source: Source::Cli,
            client_ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            details: serde_json::json!({
                "previous": old_row.id,
                "overlap_secs": overlap_secs,
                "previous_valid_until": valid_until,
            }),
        },
    )
    .await
    .context("recording the rotation in the audit log")?;
    txn.commit().await.context("committing the rotation")?;
    Ok(Rotated {
        previous: old.fingerprint(),
        current: new.fingerprint(),
        previous_valid_until: valid_until,
    })
}
