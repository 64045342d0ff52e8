//! SIEM connections and the credential vault.
//!
//! A credential is encrypted under the tenant's key (AES-256-GCM, AAD = tenant
//! id ‖ record id ‖ key version), and the tenant key is stored wrapped under
//! the master credential key, created lazily on first use. A credential is
//! decrypted only to seal it into a job for the agent that serves the connection.

use picket_proto::{Credential, SiemSettings, SiemTarget, SplunkSettings};
use picket_shared::vault::TenantKey;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event};
use crate::db::entity::{agent, siem_connection, tenant};
use crate::error::{ApiError, ApiResult};
use crate::keys::ServerKeys;
use crate::service::validate;
use crate::time::unix_now;

/// The tenant's data key and its version, creating and storing it (wrapped) on first use.
///
/// # Errors
/// If the wrapped key cannot be opened (wrong master secret) or storage fails.
pub async fn tenant_key(
    conn: &impl ConnectionTrait,
    keys: &ServerKeys,
    tenant_id: Uuid,
) -> ApiResult<(TenantKey, i32)> {
    let t = tenant::Entity::find_by_id(tenant_id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    if let Some(w) = &t.wrapped_key {
        let k = keys
            .master
            .unwrap_tenant_key(tenant_id, w)
            .map_err(|e| anyhow::anyhow!("tenant key unwrap: {e}"))?;
        return Ok((k, t.key_version));
    }
    let k = TenantKey::generate().map_err(|e| anyhow::anyhow!("tenant key: {e}"))?;
    let wrapped = keys
        .master
        .wrap_tenant_key(tenant_id, &k)
        .map_err(|e| anyhow::anyhow!("tenant key wrap: {e}"))?;
    // Only the first writer wins; a concurrent creator re-reads the winner's key.
    let res = tenant::Entity::update_many()
        .col_expr(tenant::Column::WrappedKey, Expr::value(wrapped))
        .filter(tenant::Column::Id.eq(tenant_id))
        .filter(tenant::Column::WrappedKey.is_null())
        .exec(conn)
        .await?;
    if res.rows_affected == 1 {
        return Ok((k, t.key_version));
    }
    let t = tenant::Entity::find_by_id(tenant_id)
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let w = t
        .wrapped_key
        .ok_or_else(|| anyhow::anyhow!("tenant key vanished"))?;
    let k = keys
        .master
        .unwrap_tenant_key(tenant_id, &w)
        .map_err(|e| anyhow::anyhow!("tenant key unwrap: {e}"))?;
    Ok((k, t.key_version))
}

/// Input for a new Splunk connection.
pub struct NewSplunk {
    /// Unique name in the tenant.
    pub name: String,
    /// The agent that serves it.
    pub agent_id: Uuid,
    /// Management API URL.
    pub base_url: String,
    /// Splunk app namespace.
    pub app: String,
    /// Splunk owner namespace.
    pub owner: String,
    /// Authentication token (write-only).
    pub token: zeroize::Zeroizing<String>,
}

/// Registers a Splunk connection with its credential sealed under the tenant key.
///
/// # Errors
/// 400 on invalid input or an agent of another tenant; 409 on a duplicate name.
pub async fn create_splunk(
    state: &AppState,
    tenant_id: Uuid,
    admin_id: Uuid,
    input: NewSplunk,
) -> ApiResult<siem_connection::Model> {
    validate::ident("name", &input.name)?;
    validate::base_url("base_url", &input.base_url)?;
    validate::ident("app", &input.app)?;
    validate::ident("owner", &input.owner)?;
    if input.token.is_empty() || input.token.len() > 4096 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "token must be 1-4096 characters",
        ));
    }
    let txn = state.db.begin().await?;
    agent::Entity::find_by_id(input.agent_id)
        .filter(agent::Column::TenantId.eq(tenant_id))
        .filter(agent::Column::RevokedAt.is_null())
        .one(&txn)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_agent",
                "agent_id does not name an active agent of this tenant",
            )
        })?;
    if siem_connection::Entity::find()
        .filter(siem_connection::Column::TenantId.eq(tenant_id))
        .filter(siem_connection::Column::Name.eq(input.name.clone()))
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "name_taken",
            "a connection with this name already exists",
        ));
    }
    let (key, version) = tenant_key(&txn, &state.keys, tenant_id).await?;
    let id = Uuid::now_v7();
    let ct = key
        .encrypt_credential(
            tenant_id,
            id,
            u32::try_from(version).unwrap_or(0),
            input.token.as_bytes(),
        )
        .map_err(|e| anyhow::anyhow!("credential encrypt: {e}"))?;
    let now = unix_now();
    let row = siem_connection::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant_id),
        agent_id: Set(input.agent_id),
        name: Set(input.name),
        kind: Set("splunk".into()),
        base_url: Set(input.base_url.trim_end_matches('/').to_owned()),
        app: Set(input.app),
        owner: Set(input.owner),
        credential: Set(ct),
        key_version: Set(version),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    // Never the secret: only where it points.
    audit::record(
        &txn,
        Event::user(tenant_id, admin_id, "connection.create", "siem_connection", id)
            .details(serde_json::json!({ "name": row.name, "kind": "splunk", "agent_id": row.agent_id, "base_url": row.base_url })),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// Connections of a tenant.
///
/// # Errors
/// On storage failure.
pub async fn list(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
) -> ApiResult<Vec<siem_connection::Model>> {
    Ok(siem_connection::Entity::find()
        .filter(siem_connection::Column::TenantId.eq(tenant_id))
        .order_by_asc(siem_connection::Column::Name)
        .all(conn)
        .await?)
}

/// Connections an agent serves.
///
/// # Errors
/// On storage failure.
pub async fn for_agent(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    agent_id: Uuid,
) -> ApiResult<Vec<siem_connection::Model>> {
    Ok(siem_connection::Entity::find()
        .filter(siem_connection::Column::TenantId.eq(tenant_id))
        .filter(siem_connection::Column::AgentId.eq(agent_id))
        .all(conn)
        .await?)
}

/// One connection of a tenant.
///
/// # Errors
/// 404 if absent from this tenant.
pub async fn get(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<siem_connection::Model> {
    siem_connection::Entity::find_by_id(id)
        .filter(siem_connection::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or(ApiError::NotFound("connection"))
}

/// Decrypts the credential into the target a sealed job carries.
///
/// # Errors
/// If the credential cannot be decrypted (tampered row, wrong key).
pub async fn target_for_job(
    conn: &impl ConnectionTrait,
    keys: &ServerKeys,
    c: &siem_connection::Model,
) -> ApiResult<SiemTarget> {
    let (key, _) = tenant_key(conn, keys, c.tenant_id).await?;
    let pt = key
        .decrypt_credential(
            c.tenant_id,
            c.id,
            u32::try_from(c.key_version).unwrap_or(0),
            &c.credential,
        )
        .map_err(|e| {
            anyhow::anyhow!("credential of connection {} cannot be decrypted: {e}", c.id)
        })?;
    let token =
        String::from_utf8(pt.to_vec()).map_err(|_| anyhow::anyhow!("credential is not UTF-8"))?;
    Ok(SiemTarget {
        connection_id: c.id,
        name: c.name.clone(),
        settings: SiemSettings::Splunk(SplunkSettings {
            base_url: c.base_url.clone(),
            app: c.app.clone(),
            owner: c.owner.clone(),
            token: Credential::new(token),
        }),
    })
}
