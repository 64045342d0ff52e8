//! A person's own sessions: list them, end one.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    TransactionTrait as _,
};

use crate::audit;
use crate::auth::CurrentUser;
use crate::db::entity::session;
use crate::error::{ApiError, ApiResult};
use crate::time::unix_now;

/// The caller's live sessions (not revoked, not past either timeout), newest first.
///
/// # Errors
/// On storage failure.
pub async fn list_mine(
    db: &DatabaseConnection,
    me: &CurrentUser,
    idle_secs: i64,
    absolute_secs: i64,
) -> ApiResult<Vec<session::Model>> {
    let now = unix_now();
    Ok(me
        .scope()
        .find::<session::Entity>()
        .filter(session::Column::UserId.eq(me.id))
        .filter(session::Column::Revoked.eq(false))
        .filter(session::Column::ExpiresAt.gt(now))
        .filter(session::Column::CreatedAt.gt(now - absolute_secs))
        .filter(session::Column::LastSeenAt.gt(now - idle_secs))
        .order_by_desc(session::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Ends one of the caller's sessions.
///
/// # Errors
/// 404 if it is not the caller's (or already ended).
pub async fn revoke_mine(db: &DatabaseConnection, me: &CurrentUser, id: &str) -> ApiResult<()> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound("session"));
    }
    let txn = db.begin().await?;
    let res = session::Entity::update_many()
        .col_expr(session::Column::Revoked, Expr::value(true))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::TenantId.eq(me.tenant_id))
        .filter(session::Column::UserId.eq(me.id))
        .filter(session::Column::Revoked.eq(false))
        .exec(&txn)
        .await?;
    if res.rows_affected == 0 {
        return Err(ApiError::NotFound("session"));
    }
    audit::record(&txn, me.event("session.revoke", "session", id)).await?;
    txn.commit().await?;
    Ok(())
}
