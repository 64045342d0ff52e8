//! API keys: created by an Admin with scopes and an expiry, shown once,
//! stored as the SHA-256 of the whole key text and found by its public prefix.
//! A key acts for its creator and never beyond the creator's current role
//! (checked by the `Auth` extractor); separation of duties treats the key as
//! its creator, so a key cannot approve what its owner requested or authored.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::audit;
use crate::auth::{self, API_KEY_PREFIX, CurrentUser, Scope};
use crate::db::entity::api_key;
use crate::error::{ApiError, ApiResult};
use crate::service::validate;
use crate::time::unix_now;

/// Default lifetime: 90 days.
pub const DEFAULT_TTL_SECS: i64 = 90 * 24 * 3600;
/// Longest lifetime: 1 year.
pub const MAX_TTL_SECS: i64 = 365 * 24 * 3600;

/// Creates a key; returns the row and the key text (shown once, never stored).
///
/// # Errors
/// 400 on a bad name, empty scope list or lifetime.
pub async fn create(
    db: &DatabaseConnection,
    admin: &CurrentUser,
    name: &str,
    scopes: &[Scope],
    ttl_secs: Option<i64>,
) -> ApiResult<(api_key::Model, String)> {
    validate::text("name", name, 100)?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "scopes must name at least one scope",
        ));
    }
    let ttl = ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(60..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("ttl_secs must be 60 to {MAX_TTL_SECS}"),
        ));
    }
    let mut names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let prefix_bytes: [u8; 8] =
        picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    let prefix = hex::encode(prefix_bytes);
    let text = format!("{API_KEY_PREFIX}{prefix}_{}", auth::random_secret()?);
    let now = unix_now();
    let txn = db.begin().await?;
    let key = api_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(admin.tenant_id),
        name: Set(name.trim().to_owned()),
        prefix: Set(prefix),
        secret_hash: Set(auth::secret_id(&text)),
        scopes: Set(names.join(" ")),
        created_by: Set(admin.id),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        revoked_at: Set(None),
        last_used_at: Set(None),
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        admin.event("api_key.create", "api_key", key.id).details(
            serde_json::json!({ "name": key.name, "prefix": key.prefix, "scopes": names, "expires_at": key.expires_at }),
        ),
    )
    .await?;
    txn.commit().await?;
    Ok((key, text))
}

/// Keys of the admin's tenant, newest first.
///
/// # Errors
/// On storage failure.
pub async fn list(db: &DatabaseConnection, admin: &CurrentUser) -> ApiResult<Vec<api_key::Model>> {
    Ok(admin
        .scope()
        .find::<api_key::Entity>()
        .order_by_desc(api_key::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Revokes a key: it stops working at once.
///
/// # Errors
/// 404 outside the tenant; 409 `already_revoked`.
pub async fn revoke(db: &DatabaseConnection, admin: &CurrentUser, id: Uuid) -> ApiResult<()> {
    let txn = db.begin().await?;
    let key = admin
        .scope()
        .get::<api_key::Entity>(&txn, id, "api key")
        .await?;
    if key.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "already_revoked",
            "this API key is already revoked",
        ));
    }
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(unix_now()))
        .filter(api_key::Column::Id.eq(id))
        .filter(api_key::Column::TenantId.eq(admin.tenant_id))
        .exec(&txn)
        .await?;
    audit::record(&txn, admin.event("api_key.revoke", "api_key", id)).await?;
    txn.commit().await?;
    Ok(())
}
