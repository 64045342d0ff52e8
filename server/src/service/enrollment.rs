//! Enrollment tokens and agent enrollment.
//!
//! A token is `pkt1.<secret>.<signing key fingerprint>`; only the SHA-256 of
//! its secret is stored. It is single-use (consumed by a guarded UPDATE, so two
//! concurrent enrollments cannot both succeed), expiring and tenant-scoped.

use picket_proto::{B64, EnrollRequest, EnrollResponse, EnrollmentToken};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set, TransactionTrait as _,
};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::db::entity::{agent, enrollment_token};
use crate::error::{ApiError, ApiResult};
use crate::service::validate;
use crate::time::unix_now;

fn token_hash(secret: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// Creates a token for the admin's tenant and returns it with its text form (shown once).
///
/// # Errors
/// 400 on an invalid label or lifetime.
pub async fn create_token(
    state: &AppState,
    tenant_id: Uuid,
    admin_id: Uuid,
    label: Option<String>,
    ttl_secs: Option<u64>,
) -> ApiResult<(enrollment_token::Model, String)> {
    if let Some(l) = &label {
        validate::text("label", l, 100)?;
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
        ),
    )
    .await?;
    txn.commit().await?;
    Ok((row, token.to_text()))
}

/// Enrolls an agent: checks the token, the proof of key possession, records the
/// agent and consumes the token, all in one transaction.
///
/// # Errors
/// 401 with `token_unknown`, `token_expired`, `token_used` or `token_revoked`;
/// 400 `bad_proof` if the signature does not verify.
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
    } else if tok.used_at.is_some() {
        Some(refuse(
            "token_used",
            "enrollment token has already been used; ask an admin for a new one",
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
    let agent_id = Uuid::now_v7();
    let tenant_id = tok.tenant_id;
    let txn = state.db.begin().await?;
    // Consume the token only if still unused: the row count tells who won a race.
    let consumed = enrollment_token::Entity::update_many()
        .col_expr(enrollment_token::Column::UsedAt, Expr::value(now))
        .col_expr(enrollment_token::Column::UsedByAgent, Expr::value(agent_id))
        .filter(enrollment_token::Column::Id.eq(tok.id))
        .filter(enrollment_token::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    if consumed.rows_affected != 1 {
        return Err(ApiError::Token {
            code: "token_used",
            message: "enrollment token has already been used".into(),
        });
    }
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
    }
    .insert(&txn)
    .await?;
    let mut ev = Event::agent(tenant_id, agent_id, "agent.enroll", "agent", agent_id)
        .details(serde_json::json!({ "hostname": req.hostname.as_str(), "version": req.version.as_str(), "token_id": tok.id }));
    ev.client_ip = client_ip;
    audit::record(&txn, ev).await?;
    txn.commit().await?;
    tracing::info!(%agent_id, %tenant_id, hostname = %req.hostname, "agent enrolled");
    Ok(EnrollResponse {
        agent_id,
        tenant_id,
        server_signing_key: B64(state.keys.signing.verifying_key().to_bytes()),
        key_id: state.keys.fingerprint,
    })
}
