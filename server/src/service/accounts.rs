//! Registration (self-hosted claim or SaaS sign-up), users, login, logout,
//! password change and role changes.
//!
//! Self-hosted: the first registration creates the tenant and its Admin; the
//! claim row's fixed key makes a second claim fail atomically, and
//! registration is closed for good from then on (everyone else is invited).
//! SaaS: sign-up stays open and each one creates a new tenant.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, EntityTrait as _, QueryFilter as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::auth::{self, CurrentUser, Role};
use crate::config::Mode;
use crate::db::entity::{instance_claim, session, tenant, user};
use crate::error::{ApiError, ApiResult};
use crate::service::scope::TenantScope;
use crate::service::validate;
use crate::time::unix_now;

/// Creates a tenant row (its data key comes later, on first use).
async fn insert_tenant(
    txn: &DatabaseTransaction,
    name: String,
    now: i64,
) -> Result<Uuid, ApiError> {
    let tenant_id = Uuid::now_v7();
    tenant::ActiveModel {
        id: Set(tenant_id),
        name: Set(name),
        wrapped_key: Set(None),
        key_version: Set(1),
        min_approvers: Set(1),
        require_tests: Set(false),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(tenant_id)
}

fn email_taken() -> ApiError {
    ApiError::conflict("email_taken", "a user with this email already exists")
}

/// Registers a new tenant and its first Admin: the claim of a self-hosted
/// instance, or a SaaS sign-up, as `state.config.mode` says.
///
/// # Errors
/// Self-hosted: 409 `already_claimed` once claimed. 400 on invalid input;
/// 409 `email_taken`.
pub async fn register(
    state: &AppState,
    tenant_name: &str,
    email: &str,
    password: String,
    client_ip: Option<String>,
) -> ApiResult<user::Model> {
    validate::text("tenant_name", tenant_name, 200)?;
    validate::email(email)?;
    auth::check_password_policy(&password)?;
    let mode = state.config.mode;
    if mode == Mode::SelfHosted && is_claimed(&state.db).await? {
        return Err(already_claimed());
    }
    let hash = auth::hash_password(password).await?;
    let email = email.to_lowercase();
    let tenant_name = tenant_name.trim().to_owned();
    let now = unix_now();
    let u = state
        .db
        .transaction::<_, user::Model, ApiError>(|txn| {
            Box::pin(async move {
                let tenant_id = insert_tenant(txn, tenant_name, now).await?;
                let action = if mode == Mode::SelfHosted {
                    // Fixed primary key: a concurrent second claim fails here.
                    instance_claim::ActiveModel {
                        id: Set(1),
                        tenant_id: Set(tenant_id),
                        claimed_at: Set(now),
                    }
                    .insert(txn)
                    .await
                    .map_err(|_| already_claimed())?;
                    "instance.claim"
                } else {
                    "tenant.signup"
                };
                let u = user::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    tenant_id: Set(tenant_id),
                    email: Set(email),
                    password_hash: Set(hash),
                    role: Set(Role::Admin.as_str().to_owned()),
                    approver: Set(false),
                    created_at: Set(now),
                }
                .insert(txn)
                .await
                .map_err(|_| email_taken())?;
                let mut ev = Event::user(tenant_id, u.id, action, "tenant", tenant_id);
                ev.client_ip = client_ip;
                audit::record(txn, ev).await?;
                Ok(u)
            })
        })
        .await?;
    Ok(u)
}

fn already_claimed() -> ApiError {
    ApiError::conflict(
        "already_claimed",
        "this instance has already been claimed and registration is closed; ask an admin for an invitation",
    )
}

/// Whether the instance has been claimed (self-hosted mode).
///
/// # Errors
/// On storage failure.
pub async fn is_claimed(db: &DatabaseConnection) -> ApiResult<bool> {
    Ok(instance_claim::Entity::find_by_id(1)
        .one(db)
        .await?
        .is_some())
}

/// Revokes every live session of `user_id` except `keep`; returns how many.
///
/// # Errors
/// On storage failure.
pub async fn revoke_sessions(
    conn: &impl ConnectionTrait,
    scope: TenantScope,
    user_id: Uuid,
    keep: Option<&str>,
) -> ApiResult<u64> {
    let mut q = session::Entity::update_many()
        .col_expr(session::Column::Revoked, Expr::value(true))
        .filter(session::Column::TenantId.eq(scope.tenant_id()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::Revoked.eq(false));
    if let Some(k) = keep {
        q = q.filter(session::Column::Id.ne(k));
    }
    Ok(q.exec(conn).await?.rows_affected)
}

/// Checks credentials and opens a new session (a session id presented with
/// the request, if any, is ended: a fresh id on every sign-in). The answer
/// never tells whether the account exists; the password is checked against a
/// dummy hash for an unknown email so the time is the same. Throttled per IP
/// and per account ([`auth::LoginLimiter`]).
///
/// # Errors
/// 401 on bad credentials (audited); 429 `too_many_attempts` while throttled (audited).
pub async fn login(
    state: &AppState,
    email: &str,
    password: String,
    client_ip: Option<String>,
    previous_session: Option<String>,
) -> ApiResult<(user::Model, String)> {
    let db = &state.db;
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.len() > 254 || password.len() > auth::MAX_PASSWORD_LEN {
        return Err(ApiError::Unauthorized);
    }
    let now = unix_now();
    let limiter = &state.login_limiter;
    if limiter
        .retry_after(client_ip.as_deref(), &email, now)
        .is_some()
    {
        // An attempt while locked counts too, so the lock keeps growing
        // while someone keeps guessing.
        limiter.failed(client_ip.as_deref(), &email, now);
        let wait = limiter
            .retry_after(client_ip.as_deref(), &email, now)
            .unwrap_or(1);
        let mut ev = failure_event(None, client_ip, "rate_limited");
        ev.outcome = Outcome::Denied;
        audit::record(db, ev).await?;
        return Err(ApiError::RateLimited {
            retry_after_secs: wait,
        });
    }
    let found = user::Entity::find()
        .filter(user::Column::Email.eq(email.clone()))
        .one(db)
        .await?;
    let ok =
        auth::verify_password(password, found.as_ref().map(|u| u.password_hash.clone())).await?;
    let txn = db.begin().await?;
    match (ok, found) {
        (true, Some(u)) => {
            limiter.succeeded(&email);
            if let Some(old) = previous_session {
                session::Entity::update_many()
                    .col_expr(session::Column::Revoked, Expr::value(true))
                    .filter(session::Column::Id.eq(auth::secret_id(&old)))
                    .exec(&txn)
                    .await?;
            }
            let secret = auth::create_session(&txn, &u, state.config.session_absolute_secs).await?;
            let mut ev = Event::user(u.tenant_id, u.id, "auth.login", "user", u.id);
            ev.client_ip = client_ip;
            audit::record(&txn, ev).await?;
            txn.commit().await?;
            Ok((u, secret))
        }
        (_, found) => {
            limiter.failed(client_ip.as_deref(), &email, now);
            audit::record(
                &txn,
                failure_event(found.as_ref(), client_ip, "bad_credentials"),
            )
            .await?;
            txn.commit().await?;
            Err(ApiError::Unauthorized)
        }
    }
}

/// A failed `auth.login` event (never the password; the email only as the
/// account it names, when one exists).
fn failure_event(found: Option<&user::Model>, client_ip: Option<String>, reason: &str) -> Event {
    Event {
        tenant_id: found.map(|u| u.tenant_id),
        actor: found.map_or(Actor::Anonymous, |u| Actor::User(u.id)),
        action: "auth.login",
        resource_type: "user",
        resource_id: found.map(|u| u.id.to_string()),
        source: Source::Api,
        client_ip,
        user_agent: None,
        outcome: Outcome::Failure,
        details: serde_json::json!({ "reason": reason }),
    }
}

/// Ends the caller's session.
///
/// # Errors
/// On storage failure.
pub async fn logout(db: &DatabaseConnection, me: &CurrentUser) -> ApiResult<()> {
    let txn = db.begin().await?;
    if let Some(sid) = &me.session_id {
        session::Entity::update_many()
            .col_expr(session::Column::Revoked, Expr::value(true))
            .filter(session::Column::Id.eq(sid.clone()))
            .filter(session::Column::TenantId.eq(me.tenant_id))
            .exec(&txn)
            .await?;
    }
    audit::record(&txn, me.event("auth.logout", "user", me.id)).await?;
    txn.commit().await?;
    Ok(())
}

/// Changes the caller's password after checking the current one; every other
/// session of the caller is ended.
///
/// # Errors
/// 403 `wrong_password` (audited, and counted by the login throttle); 400 `weak_password`.
pub async fn change_password(
    state: &AppState,
    me: &CurrentUser,
    current: String,
    new: String,
    client_ip: Option<String>,
) -> ApiResult<()> {
    let db = &state.db;
    let now = unix_now();
    if let Some(wait) = state
        .login_limiter
        .retry_after(client_ip.as_deref(), &me.email, now)
    {
        return Err(ApiError::RateLimited {
            retry_after_secs: wait,
        });
    }
    let u = me.scope().get::<user::Entity>(db, me.id, "user").await?;
    if current.len() > auth::MAX_PASSWORD_LEN
        || !auth::verify_password(current, Some(u.password_hash.clone())).await?
    {
        state
            .login_limiter
            .failed(client_ip.as_deref(), &me.email, now);
        audit::record(
            db,
            me.event("user.password_change", "user", me.id)
                .outcome(Outcome::Failure)
                .details(serde_json::json!({ "reason": "wrong_current_password" })),
        )
        .await?;
        return Err(ApiError::refused(
            "wrong_password",
            "the current password is not correct",
        ));
    }
    auth::check_password_policy(&new)?;
    let hash = auth::hash_password(new).await?;
    let txn = db.begin().await?;
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .filter(user::Column::Id.eq(me.id))
        .filter(user::Column::TenantId.eq(me.tenant_id))
        .exec(&txn)
        .await?;
    let ended = revoke_sessions(&txn, me.scope(), me.id, me.session_id.as_deref()).await?;
    audit::record(
        &txn,
        me.event("user.password_change", "user", me.id)
            .details(serde_json::json!({ "other_sessions_ended": ended })),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Creates a user in the admin's tenant with a password the admin chose.
///
/// # Errors
/// 409 `email_taken`; 400 on invalid input.
pub async fn create_user(
    db: &DatabaseConnection,
    admin: &CurrentUser,
    email: &str,
    password: String,
    role: Role,
    approver: bool,
) -> ApiResult<user::Model> {
    validate::email(email)?;
    auth::check_password_policy(&password)?;
    let email = email.to_lowercase();
    if user::Entity::find()
        .filter(user::Column::Email.eq(email.clone()))
        .one(db)
        .await?
        .is_some()
    {
        return Err(email_taken());
    }
    let hash = auth::hash_password(password).await?;
    let txn = db.begin().await?;
    let u = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(admin.tenant_id),
        email: Set(email),
        password_hash: Set(hash),
        role: Set(role.as_str().to_owned()),
        approver: Set(approver),
        created_at: Set(unix_now()),
    }
    .insert(&txn)
    .await
    .map_err(|_| email_taken())?;
    audit::record(
        &txn,
        admin
            .event("user.create", "user", u.id)
            .details(serde_json::json!({ "role": role.as_str(), "approver": approver })),
    )
    .await?;
    txn.commit().await?;
    Ok(u)
}

/// Sets a user's role and approver flag. A change ends all of that user's
/// sessions, so the new role applies from a fresh sign-in (a new session id).
///
/// # Errors
/// 404 outside the tenant; 409 `own_role` for the admin's own account.
pub async fn set_role(
    db: &DatabaseConnection,
    admin: &CurrentUser,
    user_id: Uuid,
    role: Role,
    approver: bool,
) -> ApiResult<user::Model> {
    if user_id == admin.id {
        return Err(ApiError::conflict(
            "own_role",
            "an admin cannot change their own role (ask another admin)",
        ));
    }
    let txn = db.begin().await?;
    let u = admin
        .scope()
        .get::<user::Entity>(&txn, user_id, "user")
        .await?;
    let old_role = u.role.clone();
    let old_approver = u.approver;
    let changed = old_role != role.as_str() || old_approver != approver;
    let mut am: user::ActiveModel = u.into();
    am.role = Set(role.as_str().to_owned());
    am.approver = Set(approver);
    let u = am.update(&txn).await?;
    let ended = if changed {
        revoke_sessions(&txn, admin.scope(), user_id, None).await?
    } else {
        0
    };
    audit::record(
        &txn,
        admin
            .event("user.role_change", "user", user_id)
            .details(serde_json::json!({
                "from": { "role": old_role, "approver": old_approver },
                "to": { "role": role.as_str(), "approver": approver },
                "sessions_ended": ended,
            })),
    )
    .await?;
    txn.commit().await?;
    Ok(u)
}

/// Ends every session of a user of the admin's tenant.
///
/// # Errors
/// 404 outside the tenant.
pub async fn end_user_sessions(
    db: &DatabaseConnection,
    admin: &CurrentUser,
    user_id: Uuid,
) -> ApiResult<u64> {
    let txn = db.begin().await?;
    admin
        .scope()
        .get::<user::Entity>(&txn, user_id, "user")
        .await?;
    let ended = revoke_sessions(&txn, admin.scope(), user_id, None).await?;
    audit::record(
        &txn,
        admin
            .event("user.sessions_end", "user", user_id)
            .details(serde_json::json!({ "sessions_ended": ended })),
    )
    .await?;
    txn.commit().await?;
    Ok(ended)
}

/// Users of a tenant.
///
/// # Errors
/// On storage failure.
pub async fn list_users(
    db: &DatabaseConnection,
    scope: TenantScope,
) -> ApiResult<Vec<user::Model>> {
    Ok(scope.find::<user::Entity>().all(db).await?)
}
