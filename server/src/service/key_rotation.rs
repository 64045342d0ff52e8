//! Agent key rotation, server side.
//!
//! The agent sends `RotateKeys` on an authenticated session: its new X25519
//! and Ed25519 public keys, signed by its current identity key (the old
//! identity vouches for the new keys) and by the new identity key (proof of
//! possession), both over bytes bound to the session's challenge nonce. In
//! one transaction with its audit event (`agent.rotate_keys`) the new keys
//! replace the old ones, which are kept as `previous_*` so a later `Hello`
//! with the old identity is refused with a precise reason. The server then
//! confirms with a `KeysRotated` signed by its job-signing key; from the
//! commit on, new jobs are sealed to the new X25519 key.
//!
//! A repeated proof for keys already stored (the agent crashed before it
//! saw the confirmation) is confirmed again without change.
//!
//! An admin can ask for a rotation (`POST /v1/agents/{id}/rotate-keys`,
//! audited as `agent.rotate_keys_request`): the request is stored and sent to
//! the agent now if connected here, else at its next connection.

use picket_proto::{B64, KeysRotated, RotateKeys};
use picket_shared::keys::{ServerSigningKey, verify_signature};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event, Outcome};
use crate::auth::CurrentUser;
use crate::db::entity::agent;
use crate::error::{ApiError, ApiResult};
use crate::time::unix_now;

/// Why a rotation proof was refused (sent as the close reason and audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The old-identity signature does not verify under the registered key.
    BadOldSignature,
    /// The new key's proof of possession does not verify, or the key is weak.
    BadNewSignature,
    /// The new X25519 key is a low-order point.
    BadX25519Key,
    /// The new keys are the current ones, or belong to another agent.
    KeysInUse,
    /// The agent was revoked meanwhile.
    Revoked,
}

impl Refusal {
    /// Stable text for the close frame and the audit event.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadOldSignature => {
                "key rotation refused: not signed by the current identity key"
            }
            Refusal::BadNewSignature => {
                "key rotation refused: no proof of possession of the new key"
            }
            Refusal::BadX25519Key => "key rotation refused: invalid X25519 key",
            Refusal::KeysInUse => "key rotation refused: keys already in use",
            Refusal::Revoked => "key rotation refused: agent revoked",
        }
    }
}

/// Checks and stores an agent's new keys; returns the signed confirmation.
///
/// # Errors
/// `Ok(Err(refusal))` when the proof is refused (audited as denied);
/// `Err` on storage failure.
pub async fn rotate(
    db: &DatabaseConnection,
    signing: &ServerSigningKey,
    agent_id: Uuid,
    nonce: &[u8; 32],
    r: &RotateKeys,
) -> Result<Result<KeysRotated, Refusal>, sea_orm::DbErr> {
    let (x, ed) = (r.x25519_public.0, r.ed25519_public.0);
    let bytes = RotateKeys::signing_bytes(nonce, &agent_id, &x, &ed);
    let confirm = || {
        let proof = signing.sign(&KeysRotated::signing_bytes(nonce, &agent_id, &x, &ed));
        KeysRotated {
            ed25519_public: B64(ed),
            x25519_public: B64(x),
            proof: B64(proof),
        }
    };
    let txn = db.begin().await?;
    let Some(row) = agent::Entity::find_by_id(agent_id).one(&txn).await? else {
        return Ok(Err(Refusal::Revoked));
    };
    let refused = |why: Refusal| {
        Event::agent(
            row.tenant_id,
            agent_id,
            "agent.rotate_keys",
            "agent",
            agent_id,
        )
        .outcome(Outcome::Denied)
        .details(serde_json::json!({ "reason": why.as_str() }))
    };
    let verdict = check(&row, &bytes, r);
    match verdict {
        Err(why) => {
            audit::record(&txn, refused(why)).await?;
            txn.commit().await?;
            Ok(Err(why))
        }
        Ok(Check::AlreadyStored) => {
            txn.commit().await?;
            Ok(Ok(confirm()))
        }
        Ok(Check::New) => {
            let taken = agent::Entity::find()
                .filter(
                    agent::Column::Ed25519Public
                        .eq(ed.to_vec())
                        .or(agent::Column::X25519Public.eq(x.to_vec())),
                )
                .one(&txn)
                .await?
                .is_some();
            if taken {
                audit::record(&txn, refused(Refusal::KeysInUse)).await?;
                txn.commit().await?;
                return Ok(Err(Refusal::KeysInUse));
            }
            let now = unix_now();
            let res = agent::Entity::update_many()
                .col_expr(
                    agent::Column::PreviousEd25519Public,
                    Expr::value(row.ed25519_public.clone()),
                )
                .col_expr(
                    agent::Column::PreviousX25519Public,
                    Expr::value(row.x25519_public.clone()),
                )
                .col_expr(agent::Column::Ed25519Public, Expr::value(ed.to_vec()))
                .col_expr(agent::Column::X25519Public, Expr::value(x.to_vec()))
                .col_expr(agent::Column::KeysRotatedAt, Expr::value(now))
                .col_expr(
                    agent::Column::RotateRequestedAt,
                    Expr::value(Option::<i64>::None),
                )
                .filter(agent::Column::Id.eq(agent_id))
                .filter(agent::Column::Ed25519Public.eq(row.ed25519_public.clone()))
                .filter(agent::Column::RevokedAt.is_null())
                .exec(&txn)
                .await?;
            if res.rows_affected != 1 {
                // Revoked (or rotated by a racing session) since it was read.
                txn.rollback().await?;
                return Ok(Err(Refusal::Revoked));
            }
            audit::record(
                &txn,
                Event::agent(
                    row.tenant_id,
                    agent_id,
                    "agent.rotate_keys",
                    "agent",
                    agent_id,
                )
                .details(serde_json::json!({
                    "previous_ed25519_public": hex::encode(&row.ed25519_public),
                    "ed25519_public": hex::encode(ed),
                    "x25519_public": hex::encode(x),
                    "requested_by_admin": row.rotate_requested_at.is_some(),
                })),
            )
            .await?;
            txn.commit().await?;
            Ok(Ok(confirm()))
        }
    }
}

enum Check {
    New,
    AlreadyStored,
}

fn check(row: &agent::Model, bytes: &[u8], r: &RotateKeys) -> Result<Check, Refusal> {
    if row.revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    let (x, ed) = (r.x25519_public.0, r.ed25519_public.0);
    verify_signature(&ed, bytes, &r.new_sig.0).map_err(|_| Refusal::BadNewSignature)?;
    // A low-order X25519 key would make every job to it readable by anyone;
    // a trial encapsulation refuses it exactly as sealing would.
    picket_shared::seal::hpke_seal(&x, b"picket-key-check", b"", b"")
        .map_err(|_| Refusal::BadX25519Key)?;
    let as_key = |v: &[u8]| <[u8; 32]>::try_from(v).ok();
    if row.ed25519_public == ed && row.x25519_public == x {
        // Already stored: the agent repeats a proof whose confirmation it missed.
        let prev = row.previous_ed25519_public.as_deref().and_then(as_key);
        return match prev {
            Some(prev) if verify_signature(&prev, bytes, &r.old_sig.0).is_ok() => {
                Ok(Check::AlreadyStored)
            }
            _ => Err(Refusal::BadOldSignature),
        };
    }
    let current = as_key(&row.ed25519_public).ok_or(Refusal::BadOldSignature)?;
    verify_signature(&current, bytes, &r.old_sig.0).map_err(|_| Refusal::BadOldSignature)?;
    Ok(Check::New)
}

/// Asks an agent of the admin's tenant to rotate its keys: stored (so an
/// offline agent gets it at its next connection) and audited in one
/// transaction, then sent at once to a live connection on this server.
/// Returns whether the agent is connected here.
///
/// # Errors
/// 404 if the agent is not in this tenant; 409 `agent_revoked`.
pub async fn request(state: &AppState, admin: &CurrentUser, agent_id: Uuid) -> ApiResult<bool> {
    let txn = state.db.begin().await?;
    let row = admin
        .scope()
        .get::<agent::Entity>(&txn, agent_id, "agent")
        .await?;
    if row.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "agent_revoked",
            "this agent is revoked; it has no keys to rotate",
        ));
    }
    agent::Entity::update_many()
        .col_expr(agent::Column::RotateRequestedAt, Expr::value(unix_now()))
        .filter(agent::Column::Id.eq(agent_id))
        .exec(&txn)
        .await?;
    let connected = state.registry.is_connected(agent_id);
    audit::record(
        &txn,
        admin
            .event("agent.rotate_keys_request", "agent", agent_id)
            .details(serde_json::json!({ "was_connected": connected })),
    )
    .await?;
    txn.commit().await?;
    let told = state.registry.request_key_rotation(agent_id);
    let tenant_id = admin.tenant_id;
    tracing::info!(%agent_id, %tenant_id, admin_id = %admin.id, live_connection = told, "agent key rotation requested");
    Ok(told)
}
