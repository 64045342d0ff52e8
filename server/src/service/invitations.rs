//! Invitations: an Admin invites an email with a role; the invitee accepts
//! once, before it expires, choosing their password, and is signed in.
//! Only the SHA-256 of the invitation secret is stored.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event};
use crate::auth::{self, CurrentUser, Role};
use crate::db::entity::{invitation, user};
use crate::error::{ApiError, ApiResult};
use crate::service::validate;
use crate::time::unix_now;

/// Default lifetime of an invitation: 7 days.
pub const DEFAULT_TTL_SECS: i64 = 7 * 24 * 3600;
/// Longest lifetime: 30 days.
pub const MAX_TTL_SECS: i64 = 30 * 24 * 3600;
/// Prefix of an invitation's text, so it is recognisable (and never mistaken for a session).
pub const INVITATION_PREFIX: &str = "pi_";

/// Creates an invitation; returns it and its secret (shown once).
///
/// # Errors
/// 400 on a bad email or lifetime; 409 `email_taken` if the email has an account.
pub async fn create(
    db: &DatabaseConnection,
    admin: &CurrentUser,
    email: &str,
    role: Role,
    approver: bool,
    ttl_secs: Option<i64>,
) -> ApiResult<(invitation::Model, String)> {
    validate::email(email)?;
    let ttl = ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(60..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("ttl_secs must be 60 to {MAX_TTL_SECS}"),
        ));
    }
    let email = email.to_lowercase();
    let txn = db.begin().await?;
    if user::Entity::find()
        .filter(user::Column::Email.eq(email.clone()))
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "email_taken",
            "a user with this email already exists",
        ));
    }
    let secret = format!("{INVITATION_PREFIX}{}", auth::random_secret()?);
    let now = unix_now();
    let inv = invitation::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(admin.tenant_id),
        email: Set(email),
        role: Set(role.as_str().to_owned()),
        approver: Set(approver),
        token_hash: Set(auth::secret_id(&secret)),
        created_by: Set(admin.id),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        accepted_at: Set(None),
        accepted_user: Set(None),
        revoked_at: Set(None),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        admin
            .event("invitation.create", "invitation", inv.id)
            .details(serde_json::json!({ "email": inv.email, "role": inv.role, "approver": approver, "expires_at": inv.expires_at })),
    )
    .await?;
    txn.commit().await?;
    Ok((inv, secret))
}

/// Invitations of the admin's tenant, newest first.
///
/// # Errors
/// On storage failure.
pub async fn list(
    db: &DatabaseConnection,
    admin: &CurrentUser,
) -> ApiResult<Vec<invitation::Model>> {
    Ok(admin
        .scope()
        .find::<invitation::Entity>()
        .order_by_desc(invitation::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Revokes an unused invitation.
///
/// # Errors
/// 404 outside the tenant; 409 `not_pending` if already accepted or revoked.
pub async fn revoke(db: &DatabaseConnection, admin: &CurrentUser, id: Uuid) -> ApiResult<()> {
    let txn = db.begin().await?;
    let inv = admin
        .scope()
        .get::<invitation::Entity>(&txn, id, "invitation")
        .await?;
    if inv.accepted_at.is_some() || inv.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "not_pending",
            "the invitation was already accepted or revoked",
        ));
    }
    invitation::Entity::update_many()
        .col_expr(invitation::Column::RevokedAt, Expr::value(unix_now()))
        .filter(invitation::Column::Id.eq(id))
        .filter(invitation::Column::TenantId.eq(admin.tenant_id))
        .exec(&txn)
        .await?;
    audit::record(&txn, admin.event("invitation.revoke", "invitation", id)).await?;
    txn.commit().await?;
    Ok(())
}

/// Accepts an invitation: creates the user with the chosen password and
/// opens a session. The invitation is consumed by a guarded update, so two
/// concurrent accepts cannot both succeed.
///
/// # Errors
/// 401 `invitation_invalid` for an unknown, used, revoked or expired
/// invitation (one answer for all); 400 `weak_password`; 409 `email_taken`.
pub async fn accept(
    state: &AppState,
    secret: &str,
    password: String,
    client_ip: Option<String>,
) -> ApiResult<(user::Model, String)> {
    let invalid = || {
        ApiError::Token {
        code: "invitation_invalid",
        message: "this invitation is unknown, expired, revoked or already used; ask an admin for a new one".into(),
    }
    };
    if !secret.starts_with(INVITATION_PREFIX) || secret.len() > 128 {
        return Err(invalid());
    }
    auth::check_password_policy(&password)?;
    let hash = auth::hash_password(password).await?;
    let now = unix_now();
    let txn = state.db.begin().await?;
    let inv = invitation::Entity::find()
        .filter(invitation::Column::TokenHash.eq(auth::secret_id(secret)))
        .one(&txn)
        .await?
        .filter(|i| i.accepted_at.is_none() && i.revoked_at.is_none() && i.expires_at > now)
        .ok_or_else(invalid)?;
    let role = Role::parse(&inv.role).unwrap_or(Role::Viewer);
    let user_id = Uuid::now_v7();
    let res = invitation::Entity::update_many()
        .col_expr(invitation::Column::AcceptedAt, Expr::value(now))
        .col_expr(invitation::Column::AcceptedUser, Expr::value(user_id))
        .filter(invitation::Column::Id.eq(inv.id))
        .filter(invitation::Column::AcceptedAt.is_null())
        .exec(&txn)
        .await?;
    if res.rows_affected != 1 {
        return Err(invalid());
    }
    let inserted = user::ActiveModel {
        id: Set(user_id),
        tenant_id: Set(inv.tenant_id),
        email: Set(inv.email.clone()),
        password_hash: Set(hash),
        role: Set(role.as_str().to_owned()),
        approver: Set(inv.approver),
        created_at: Set(now),
    }
    .insert(&txn)
    .await;
    let Ok(u) = inserted else {
        // Roll back at once: the invitation row is locked by the update above.
        let _ = txn.rollback().await;
        return Err(ApiError::conflict(
            "email_taken",
            "a user with this email already exists",
        ));
    };
    let mut ev = Event::user(
        inv.tenant_id,
        u.id,
        "invitation.accept",
        "invitation",
        inv.id,
    )
    .details(serde_json::json!({ "user_id": u.id, "role": inv.role, "approver": inv.approver }));
    ev.client_ip = client_ip;
    audit::record(&txn, ev).await?;
    let session = auth::create_session(&txn, &u, state.config.session_absolute_secs).await?;
    txn.commit().await?;
    Ok((u, session))
}
