//! Enrollment tokens and agent enrollment.
//!
//! A token is `pkt1.<secret>.<signing key fingerprint>`; only the SHA-256 of
//! its secret is stored. It is expiring, tenant-scoped, revocable and allows
//! `max_uses` enrollments (default 1, single use; more for bulk installs).
//! Each enrollment consumes one use with a guarded
//! `UPDATE ... SET uses = uses + 1 WHERE uses < max_uses`, so concurrent
//! enrollments can never exceed the cap: the affected-row count says who won.
//!
//! Enrollment also refuses the public keys of a revoked agent (`key_revoked`),
//! in any tenant: a revoked identity cannot come back under a new token.

use picket_proto::{B64, EnrollRequest, EnrollResponse, EnrollmentToken};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, DatabaseConnection, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::db::entity::{agent, enrollment_token};
use crate::error::{ApiError, ApiResult};
use crate::service::scope::TenantScope;
use crate::service::validate;
use crate::time::unix_now;

fn token_hash(secret: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// Largest `max_uses` of one token (a bulk install of a whole site).
pub const MAX_TOKEN_USES: i32 = 10_000;

/// What a new token allows.
#[derive(Debug, Default, Clone)]
pub struct NewToken {
    /// Optional label, e.g. the host or site it is for.
    pub label: Option<String>,
    /// Lifetime in seconds (default: `agents.enrollment_token_ttl_secs`).
    pub ttl_secs: Option<u64>,
    /// Enrollments it allows (default 1; at most [`MAX_TOKEN_USES`]).
    pub max_uses: Option<i32>,
}

/// Creates a token for the admin's tenant and returns it with its text form (shown once).
///
/// # Errors
/// 400 on an invalid label, lifetime or use count.
pub async fn create_token(
    state: &AppState,
    tenant_id: Uuid,
    admin_id: Uuid,
    new: NewToken,
) -> ApiResult<(enrollment_token::Model, String)> {
    let NewToken {
        label,
        ttl_secs,
        max_uses,
    } = new;
    if let Some(l) = &label {
        validate::text("label", l, 100)?;
    }
    let max_uses = max_uses.unwrap_or(1);
    if !(1..=MAX_TOKEN_USES).contains(&max_uses) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("max_uses must be from 1 to {MAX_TOKEN_USES}"),
        ));
    }
    let ttl = ttl_secs.unwrap_or(state.config.enrollment_token_ttl_secs);
    if !(60..=30 * 24 * 3600).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "ttl_secs must be from 60 to 2592000 (30 days)",
        ));
    }
    let secret: [u8; 32] =
        picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    let token = EnrollmentToken {
        secret,
        fingerprint: state.keys.fingerprint,
    };
    let now = unix_now();
    let txn = state.db.begin().await?;
    let row = enrollment_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        token_hash: Set(token_hash(&secret)),
        label: Set(label),
        created_by: Set(admin_id),
        created_at: Set(now),
        expires_at: Set(now + i64::try_from(ttl).unwrap_or(i64::MAX)),
        used_at: Set(None),
        used_by_agent: Set(None),
        revoked_at: Set(None),
        max_uses: Set(max_uses),
        uses: Set(0),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        Event::user(
            tenant_id,
            admin_id,
            "enrollment_token.create",
            "enrollment_token",
            row.id,
        )
        .details(serde_json::json!({ "max_uses": max_uses, "expires_at": row.expires_at })),
    )
    .await?;
    txn.commit().await?;
    Ok((row, token.to_text()))
}

/// The tenant's enrollment tokens, newest first (hashes only; the secret is
/// never stored, so it can never be listed).
///
/// # Errors
/// On storage failure.
pub async fn list_tokens(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> ApiResult<Vec<enrollment_token::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<enrollment_token::Entity>()
        .order_by_desc(enrollment_token::Column::CreatedAt)
        .order_by_desc(enrollment_token::Column::Id)
        .all(db)
        .await?)
}

/// Revokes a token of the admin's tenant: later enrollments with it get
/// `token_revoked`. Agents it already enrolled are not affected.
///
/// # Errors
/// 404 if the token is not in this tenant; 409 `already_revoked`.
pub async fn revoke_token(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    admin_id: Uuid,
    token_id: Uuid,
) -> ApiResult<enrollment_token::Model> {
    let now = unix_now();
    let txn = db.begin().await?;
    let res = enrollment_token::Entity::update_many()
        .col_expr(enrollment_token::Column::RevokedAt, Expr::value(now))
        .filter(enrollment_token::Column::Id.eq(token_id))
        .filter(enrollment_token::Column::TenantId.eq(tenant_id))
        .filter(enrollment_token::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    let row = TenantScope::new(tenant_id)
        .find::<enrollment_token::Entity>()
        .filter(enrollment_token::Column::Id.eq(token_id))
        .one(&txn)
        .await?
        .ok_or(ApiError::NotFound("enrollment token"))?;
    if res.rows_affected != 1 {
        return Err(ApiError::conflict(
            "already_revoked",
            "this enrollment token is already revoked",
        ));
    }
    audit::record(
        &txn,
        Event::user(
            tenant_id,
            admin_id,
            "enrollment_token.revoke",
            "enrollment_token",
            token_id,
        )
        .details(serde_json::json!({ "uses": row.uses, "max_uses": row.max_uses })),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// Whether either public key belongs to a revoked agent, or was replaced by
/// an agent's key rotation (of any tenant: a key pair is one identity,
/// whichever token it comes back with, and a rotated-away key is retired).
async fn keys_revoked(db: &DatabaseConnection, req: &EnrollRequest) -> ApiResult<bool> {
    let (ed, x) = (req.ed25519_public.0.to_vec(), req.x25519_public.0.to_vec());
    let revoked = agent::Entity::find()
        .filter(agent::Column::RevokedAt.is_not_null())
        .filter(
            Condition::any()
                .add(agent::Column::Ed25519Public.eq(ed.clone()))
                .add(agent::Column::X25519Public.eq(x.clone())),
        )
        .count(db)
        .await?;
    let superseded = agent::Entity::find()
        .filter(
            Condition::any()
                .add(agent::Column::PreviousEd25519Public.eq(ed))
                .add(agent::Column::PreviousX25519Public.eq(x)),
        )
        .count(db)
        .await?;
    Ok(revoked + superseded > 0)
}

/// Enrolls an agent: checks the token, the proof of key possession, records the
/// agent and consumes the token, all in one transaction.
///
/// # Errors
/// 401 with `token_unknown`, `token_expired`, `token_used` or `token_revoked`;
/// 400 `bad_proof` if the signature does not verify; 403 `key_revoked` if
/// either public key belongs to a revoked agent.
pub async fn enroll(
    state: &AppState,
    req: EnrollRequest,
    client_ip: Option<String>,
) -> ApiResult<EnrollResponse> {
    let hash = token_hash(&req.token_secret.0);
    let now = unix_now();
    let db: &DatabaseConnection = &state.db;
    let found = enrollment_token::Entity::find()
        .filter(enrollment_token::Column::TokenHash.eq(hash))
        .one(db)
        .await?;
    let refuse = |code: &'static str, message: &str, tenant: Option<Uuid>| {
        let ev = Event {
            tenant_id: tenant,
            actor: Actor::Anonymous,
            action: "agent.enroll",
            resource_type: "enrollment_token",
            resource_id: None,
            source: Source::Agent,
            client_ip: client_ip.clone(),
            user_agent: None,
            outcome: Outcome::Denied,
            details: serde_json::json!({ "reason": code }),
        };
        (
            ev,
            ApiError::Token {
                code,
                message: message.to_owned(),
            },
        )
    };
    let tok = match found {
        None => {
            let (ev, err) = refuse(
                "token_unknown",
                "enrollment token is not valid for this server",
                None,
            );
            audit::record(db, ev).await?;
            return Err(err);
        }
        Some(t) => t,
    };
    let refusal = if tok.revoked_at.is_some() {
        Some(refuse(
            "token_revoked",
            "enrollment token has been revoked",
            Some(tok.tenant_id),
        ))
    } else if tok.uses >= tok.max_uses {
        Some(refuse(
            "token_used",
            if tok.max_uses == 1 {
                "enrollment token has already been used; ask an admin for a new one"
            } else {
                "enrollment token has been used as many times as it allows (max_uses); ask an admin for a new one"
            },
            Some(tok.tenant_id),
        ))
    } else if tok.expires_at <= now {
        Some(refuse(
            "token_expired",
            "enrollment token has expired; ask an admin for a new one",
            Some(tok.tenant_id),
        ))
    } else {
        None
    };
    if let Some((ev, err)) = refusal {
        audit::record(db, ev).await?;
        return Err(err);
    }
    let proof = EnrollRequest::proof_bytes(
        &req.token_secret.0,
        &req.x25519_public.0,
        &req.ed25519_public.0,
    );
    if picket_shared::keys::verify_signature(&req.ed25519_public.0, &proof, &req.proof.0).is_err() {
        let (ev, _) = refuse("bad_proof", "", Some(tok.tenant_id));
        audit::record(db, ev).await?;
        return Err(ApiError::bad_request(
            "bad_proof",
            "the enrollment proof signature does not verify",
        ));
    }
    if keys_revoked(db, &req).await? {
        let mut ev = refuse("key_revoked", "", Some(tok.tenant_id)).0;
        ev.resource_type = "agent";
        audit::record(db, ev).await?;
        return Err(ApiError::Refused {
            code: "key_revoked",
            message: "these agent keys belong to a revoked agent, or were replaced by a key \
                      rotation, and cannot enroll again; run `picket-agent enroll --force` to \
                      generate new keys"
                .into(),
        });
    }
    let agent_id = Uuid::now_v7();
    let tenant_id = tok.tenant_id;
    let txn = state.db.begin().await?;
    // Consume one use only while uses remain and the token is still valid: the
    // row count tells who won a race (the database serializes the UPDATEs).
    let consumed = enrollment_token::Entity::update_many()
        .col_expr(
            enrollment_token::Column::Uses,
            Expr::col(enrollment_token::Column::Uses).add(1),
        )
        .col_expr(enrollment_token::Column::UsedAt, Expr::value(now))
        .col_expr(enrollment_token::Column::UsedByAgent, Expr::value(agent_id))
        .filter(enrollment_token::Column::Id.eq(tok.id))
        .filter(
            Expr::col(enrollment_token::Column::Uses)
                .lt(Expr::col(enrollment_token::Column::MaxUses)),
        )
        .filter(enrollment_token::Column::RevokedAt.is_null())
        .filter(enrollment_token::Column::ExpiresAt.gt(now))
        .exec_with_returning(&txn)
        .await?;
    let Some(consumed) = consumed.first() else {
        txn.rollback().await?;
        let (ev, err) = refuse(
            "token_used",
            "enrollment token has already been used as many times as it allows (or was revoked meanwhile); ask an admin for a new one",
            Some(tok.tenant_id),
        );
        audit::record(db, ev).await?;
        return Err(err);
    };
    agent::ActiveModel {
        id: Set(agent_id),
        tenant_id: Set(tenant_id),
        hostname: Set(req.hostname.as_str().to_owned()),
        version: Set(req.version.as_str().to_owned()),
        x25519_public: Set(req.x25519_public.0.to_vec()),
        ed25519_public: Set(req.ed25519_public.0.to_vec()),
        enrolled_at: Set(now),
        last_seen_at: Set(None),
        last_seq: Set(0),
        revoked_at: Set(None),
        previous_ed25519_public: Set(None),
        previous_x25519_public: Set(None),
        keys_rotated_at: Set(None),
        rotate_requested_at: Set(None),
    }
    .insert(&txn)
    .await?;
    let mut ev = Event::agent(tenant_id, agent_id, "agent.enroll", "agent", agent_id)
        .details(serde_json::json!({ "hostname": req.hostname.as_str(), "version": req.version.as_str(), "token_id": tok.id, "token_uses": consumed.uses, "token_max_uses": consumed.max_uses }));
    ev.client_ip = client_ip;
    audit::record(&txn, ev).await?;
    txn.commit().await?;
    tracing::info!(%agent_id, %tenant_id, hostname = %req.hostname, "agent enrolled");
    Ok(EnrollResponse {
        agent_id,
        tenant_id,
        server_signing_key: B64(state.keys.signing.verifying_key().to_bytes()),
        key_id: state.keys.fingerprint,
        key_chain: state.keys.chain.clone(),
        chain_root: state.keys.chain_root.map(B64),
    })
}
