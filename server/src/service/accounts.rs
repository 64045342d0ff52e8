//! Instance claiming, users, login and logout.
//!
//! A self-hosted instance is claimed by its first registration, which creates
//! the tenant and its Admin; the claim row's fixed key makes a second claim
//! fail atomically, and registration is closed from then on.

use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::audit::{self, Actor, Event, Outcome, Source};
use crate::auth::{self, Role};
use crate::db::entity::{instance_claim, session, tenant, user};
use crate::error::{ApiError, ApiResult};
use crate::service::validate;
use crate::time::unix_now;

/// Claims a fresh instance: creates the tenant and its first Admin.
///
/// # Errors
/// 409 `already_claimed` once an instance has been claimed; 400 on invalid input.
pub async fn claim_instance(
    db: &DatabaseConnection,
    tenant_name: &str,
    email: &str,
    password: String,
    client_ip: Option<String>,
) -> ApiResult<user::Model> {
    validate::text("tenant_name", tenant_name, 200)?;
    validate::email(email)?;
    auth::check_password_policy(&password)?;
    let hash = auth::hash_password(password).await?;
    let email = email.to_lowercase();
    let tenant_name = tenant_name.trim().to_owned();
    let now = unix_now();
    let u = db
        .transaction::<_, user::Model, ApiError>(|txn| {
            Box::pin(async move {
                if instance_claim::Entity::find_by_id(1)
                    .one(txn)
                    .await?
                    .is_some()
                {
                    return Err(ApiError::conflict(
                        "already_claimed",
                        "this instance has already been claimed; ask an admin for an account",
                    ));
                }
                let tenant_id = Uuid::now_v7();
                tenant::ActiveModel {
                    id: Set(tenant_id),
                    name: Set(tenant_name),
                    wrapped_key: Set(None),
                    key_version: Set(1),
                    min_approvers: Set(1),
                    created_at: Set(now),
                }
                .insert(txn)
                .await?;
                // Fixed primary key: a concurrent second claim fails here.
                instance_claim::ActiveModel {
                    id: Set(1),
                    tenant_id: Set(tenant_id),
                    claimed_at: Set(now),
                }
                .insert(txn)
                .await
                .map_err(|_| {
                    ApiError::conflict("already_claimed", "this instance has already been claimed")
                })?;
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
                .await?;
                let mut ev = Event::user(tenant_id, u.id, "instance.claim", "tenant", tenant_id);
                ev.client_ip = client_ip;
                audit::record(txn, ev).await?;
                Ok(u)
            })
        })
        .await?;
    Ok(u)
}

/// Whether the instance has been claimed (for the sign-in page).
///
/// # Errors
/// On storage failure.
pub async fn is_claimed(db: &DatabaseConnection) -> ApiResult<bool> {
    Ok(instance_claim::Entity::find_by_id(1)
        .one(db)
        .await?
        .is_some())
}

/// Checks credentials and opens a session. The answer never tells whether the account exists.
///
/// # Errors
/// 401 on bad credentials (audited).
pub async fn login(
    db: &DatabaseConnection,
    email: &str,
    password: String,
    client_ip: Option<String>,
) -> ApiResult<(user::Model, String)> {
    let email = email.trim().to_lowercase();
    if email.len() > 254 || password.len() > auth::MAX_PASSWORD_LEN {
        return Err(ApiError::Unauthorized);
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
            let secret = auth::create_session(&txn, &u).await?;
            let mut ev = Event::user(u.tenant_id, u.id, "auth.login", "user", u.id);
            ev.client_ip = client_ip;
            audit::record(&txn, ev).await?;
            txn.commit().await?;
            Ok((u, secret))
        }
        (_, found) => {
            audit::record(
                &txn,
                Event {
                    tenant_id: found.as_ref().map(|u| u.tenant_id),
                    actor: found
                        .as_ref()
                        .map_or(Actor::Anonymous, |u| Actor::User(u.id)),
                    action: "auth.login",
                    resource_type: "user",
                    resource_id: found.as_ref().map(|u| u.id.to_string()),
                    source: Source::Api,
                    client_ip,
                    outcome: Outcome::Failure,
                    details: serde_json::Value::Null,
                },
            )
            .await?;
            txn.commit().await?;
            Err(ApiError::Unauthorized)
        }
    }
}

/// Ends a session.
///
/// # Errors
/// On storage failure.
pub async fn logout(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    session_id: &str,
) -> ApiResult<()> {
    let txn = db.begin().await?;
    session::Entity::update_many()
        .col_expr(
            session::Column::Revoked,
            sea_orm::sea_query::Expr::value(true),
        )
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::TenantId.eq(tenant_id))
        .exec(&txn)
        .await?;
    audit::record(
        &txn,
        Event::user(tenant_id, user_id, "auth.logout", "user", user_id),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Creates a user in the admin's tenant.
///
/// # Errors
/// 409 `email_taken`; 400 on invalid input.
pub async fn create_user(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    admin_id: Uuid,
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
        return Err(ApiError::conflict(
            "email_taken",
            "a user with this email already exists",
        ));
    }
    let hash = auth::hash_password(password).await?;
    let txn = db.begin().await?;
    let u = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        email: Set(email),
        password_hash: Set(hash),
        role: Set(role.as_str().to_owned()),
        approver: Set(approver),
        created_at: Set(unix_now()),
    }
    .insert(&txn)
    .await
    .map_err(|_| ApiError::conflict("email_taken", "a user with this email already exists"))?;
    audit::record(
        &txn,
        Event::user(tenant_id, admin_id, "user.create", "user", u.id)
            .details(serde_json::json!({ "role": role.as_str(), "approver": approver })),
    )
    .await?;
    txn.commit().await?;
    Ok(u)
}

/// Users of a tenant.
///
/// # Errors
/// On storage failure.
pub async fn list_users(db: &DatabaseConnection, tenant_id: Uuid) -> ApiResult<Vec<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::TenantId.eq(tenant_id))
        .all(db)
        .await?)
}
