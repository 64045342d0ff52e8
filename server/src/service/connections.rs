//! SIEM connections and the credential vault.
//!
//! A credential is encrypted under the tenant's key (AES-256-GCM, AAD = tenant
//! id ‖ record id ‖ key version), and the tenant key is stored wrapped under
//! the master credential key, created lazily on first use. A credential is
//! decrypted only to seal it into a job for the agent that serves the connection.

use picket_proto::{
    Credential, ElasticSettings, SentinelIngestion, SentinelSettings, SiemKind, SiemSettings,
    SiemTarget, SplunkSettings,
};
use picket_shared::vault::TenantKey;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set, TransactionTrait as _,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event};
use crate::auth::CurrentUser;
use crate::db::entity::{agent, siem_connection, tenant};
use crate::error::{ApiError, ApiResult};
use crate::keys::ServerKeys;
use crate::service::scope::TenantScope;
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

/// The non-secret settings of a Sentinel connection, stored as JSON in
/// `siem_connections.settings` (the ARM URL is `base_url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelStored {
    /// Azure subscription id (GUID).
    pub subscription_id: String,
    /// Resource group of the workspace.
    pub resource_group: String,
    /// Log Analytics workspace name.
    pub workspace_name: String,
    /// Log Analytics workspace id (GUID), for queries.
    pub workspace_id: String,
    /// Entra tenant id (GUID).
    pub tenant_id: String,
    /// Entra application (client) id (GUID).
    pub client_id: String,
    /// Entra authority URL.
    pub login_url: String,
    /// Log Analytics query API URL.
    pub log_analytics_url: String,
    /// Logs Ingestion target for test events, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion: Option<IngestionStored>,
}

/// Logs Ingestion target of a Sentinel connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestionStored {
    /// Data collection endpoint URL.
    pub endpoint: String,
    /// Data collection rule immutable id (`dcr-` + 32 hex digits).
    pub dcr_immutable_id: String,
    /// Stream name (`Custom-...`).
    pub stream: String,
    /// Table the stream lands in.
    pub table: String,
}

/// The non-secret settings of an Elastic connection (the Kibana URL is `base_url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticStored {
    /// Elasticsearch URL.
    pub elasticsearch_url: String,
    /// Kibana space, when not the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// Index that receives test events.
    pub test_index: String,
}

/// Kind-specific part of a new connection.
pub enum NewKind {
    /// Splunk: app and owner namespace.
    Splunk {
        /// Splunk app namespace.
        app: String,
        /// Splunk owner namespace.
        owner: String,
        /// Session-key authentication: this user logs in with the secret as
        /// password. `None`: the secret is a token.
        username: Option<String>,
    },
    /// Microsoft Sentinel (boxed: far larger than the other variants).
    Sentinel(Box<SentinelStored>),
    /// Elastic Security.
    Elastic(ElasticStored),
}

/// Input for a new connection of any kind.
pub struct NewConnection {
    /// Unique name in the tenant.
    pub name: String,
    /// The agent that serves it.
    pub agent_id: Uuid,
    /// Splunk management URL, ARM URL or Kibana URL.
    pub base_url: String,
    /// What differs per kind.
    pub kind: NewKind,
    /// The secret (Splunk token, Entra client secret, Elastic API key). Write-only.
    pub secret: zeroize::Zeroizing<String>,
}

/// A GUID in its 8-4-4-4-12 hex form, as Azure ids are written.
fn guid(field: &str, value: &str) -> ApiResult<()> {
    let ok = value.len() == 36
        && value.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be a GUID such as 00000000-0000-0000-0000-000000000000"),
        ))
    }
}

/// An Azure resource name segment: 1-90 of `[A-Za-z0-9_.()-]`, not ending in `.`.
fn azure_name(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 90
        && !value.ends_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be 1-90 characters of [A-Za-z0-9_.()-], not ending in '.'"),
        ))
    }
}

/// Checks the kind-specific settings, each failure naming its field.
fn validate_kind(kind: &NewKind) -> ApiResult<()> {
    match kind {
        NewKind::Splunk {
            app,
            owner,
            username,
        } => {
            if let Some(u) = username {
                check_username(u)?;
            }
            validate::ident("app", app)?;
            validate::ident("owner", owner)?;
        }
        NewKind::Sentinel(s) => {
            guid("subscription_id", &s.subscription_id)?;
            azure_name("resource_group", &s.resource_group)?;
            azure_name("workspace_name", &s.workspace_name)?;
            guid("workspace_id", &s.workspace_id)?;
            guid("tenant_id", &s.tenant_id)?;
            guid("client_id", &s.client_id)?;
            validate::base_url("login_url", &s.login_url)?;
            validate::base_url("log_analytics_url", &s.log_analytics_url)?;
            if let Some(i) = &s.ingestion {
                validate::base_url("ingestion.endpoint", &i.endpoint)?;
                let dcr_ok = i
                    .dcr_immutable_id
                    .strip_prefix("dcr-")
                    .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()));
                if !dcr_ok {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        "ingestion.dcr_immutable_id must be dcr- followed by 32 hex digits",
                    ));
                }
                if !i.stream.starts_with("Custom-") {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        "ingestion.stream must name a custom stream (Custom-...)",
                    ));
                }
                validate::ident("ingestion.stream", &i.stream)?;
                validate::ident("ingestion.table", &i.table)?;
            }
        }
        NewKind::Elastic(e) => {
            validate::base_url("elasticsearch_url", &e.elasticsearch_url)?;
            if let Some(space) = &e.space {
                let ok = !space.is_empty()
                    && space.len() <= 64
                    && space.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')
                    });
                if !ok {
                    return Err(ApiError::bad_request(
                        "invalid_field",
                        "space must be 1-64 characters of [a-z0-9_-] (a Kibana space id)",
                    ));
                }
            }
            let index_ok = !e.test_index.is_empty()
                && e.test_index.len() <= 255
                && !e.test_index.starts_with(['_', '-', '+'])
                && e.test_index.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
                });
            if !index_ok {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "test_index must be a lowercase Elasticsearch index name ([a-z0-9_.-], not starting with _, - or +)",
                ));
            }
        }
    }
    Ok(())
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
    create(
        state,
        tenant_id,
        admin_id,
        NewConnection {
            name: input.name,
            agent_id: input.agent_id,
            base_url: input.base_url,
            kind: NewKind::Splunk {
                app: input.app,
                owner: input.owner,
                username: None,
            },
            secret: input.token,
        },
    )
    .await
}

/// Registers a connection of any kind with its secret sealed under the
/// tenant key, and its audit event, in one transaction.
///
/// # Errors
/// 400 on invalid input (naming the field) or an agent of another tenant;
/// 409 on a duplicate name.
pub async fn create(
    state: &AppState,
    tenant_id: Uuid,
    admin_id: Uuid,
    input: NewConnection,
) -> ApiResult<siem_connection::Model> {
    validate::ident("name", &input.name)?;
    validate::base_url("base_url", &input.base_url)?;
    validate_kind(&input.kind)?;
    let secret_field = match input.kind {
        NewKind::Splunk {
            username: Some(_), ..
        } => "password",
        NewKind::Splunk { .. } => "token",
        NewKind::Sentinel(_) => "client_secret",
        NewKind::Elastic(_) => "api_key",
    };
    check_secret(secret_field, &input.secret)?;
    let mut splunk_username = None;
    let (kind, app, owner, settings) = match input.kind {
        NewKind::Splunk {
            app,
            owner,
            username,
        } => {
            splunk_username = username;
            (SiemKind::Splunk, app, owner, None)
        }
        NewKind::Sentinel(s) => (
            SiemKind::Sentinel,
            String::new(),
            String::new(),
            Some(serde_json::to_string(&s).map_err(|e| anyhow::anyhow!("settings: {e}"))?),
        ),
        NewKind::Elastic(e) => (
            SiemKind::Elastic,
            String::new(),
            String::new(),
            Some(serde_json::to_string(&e).map_err(|e| anyhow::anyhow!("settings: {e}"))?),
        ),
    };
    let txn = state.db.begin().await?;
    TenantScope::new(tenant_id)
        .find::<agent::Entity>()
        .filter(agent::Column::Id.eq(input.agent_id))
        .filter(agent::Column::RevokedAt.is_null())
        .one(&txn)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_agent",
                "agent_id does not name an active agent of this tenant",
            )
        })?;
    if TenantScope::new(tenant_id)
        .find::<siem_connection::Entity>()
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
            input.secret.as_bytes(),
        )
        .map_err(|e| anyhow::anyhow!("credential encrypt: {e}"))?;
    let now = unix_now();
    let row = siem_connection::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant_id),
        agent_id: Set(input.agent_id),
        name: Set(input.name),
        kind: Set(kind.as_str().into()),
        base_url: Set(input.base_url.trim_end_matches('/').to_owned()),
        app: Set(app),
        owner: Set(owner),
        settings: Set(settings),
        credential: Set(ct),
        key_version: Set(version),
        created_at: Set(now),
        updated_at: Set(now),
        hec_credential: Set(None),
        hec_key_version: Set(None),
        splunk_username: Set(splunk_username),
    }
    .insert(&txn)
    .await?;
    // Never the secret: only where it points.
    audit::record(
        &txn,
        Event::user(tenant_id, admin_id, "connection.create", "siem_connection", id)
            .details(serde_json::json!({ "name": row.name, "kind": row.kind, "agent_id": row.agent_id, "base_url": row.base_url })),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// The wire kind of a stored connection (`None` for a kind this build does not know).
pub fn kind_of(c: &siem_connection::Model) -> Option<SiemKind> {
    SiemKind::parse(&c.kind)
}

/// Replaces a connection's credential (write-only: the new one is sealed
/// under the tenant key, the old ciphertext is overwritten, nothing is returned).
///
/// # Errors
/// 404 outside the tenant; 400 on an empty or oversized token.
pub async fn update_credential(
    state: &AppState,
    admin: &CurrentUser,
    id: Uuid,
    token: zeroize::Zeroizing<String>,
) -> ApiResult<siem_connection::Model> {
    check_secret("secret", &token)?;
    let txn = state.db.begin().await?;
    let c = admin
        .scope()
        .get::<siem_connection::Entity>(&txn, id, "connection")
        .await?;
    let (key, version) = tenant_key(&txn, &state.keys, admin.tenant_id).await?;
    let ct = key
        .encrypt_credential(
            admin.tenant_id,
            c.id,
            u32::try_from(version).unwrap_or(0),
            token.as_bytes(),
        )
        .map_err(|e| anyhow::anyhow!("credential encrypt: {e}"))?;
    let mut am: siem_connection::ActiveModel = c.into();
    am.credential = Set(ct);
    am.key_version = Set(version);
    am.updated_at = Set(unix_now());
    let row = am.update(&txn).await?;
    audit::record(
        &txn,
        admin.event("connection.credential_update", "siem_connection", id),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// A Splunk username: 1-128 characters, no control characters.
fn check_username(username: &str) -> ApiResult<()> {
    if username.is_empty() || username.len() > 128 || username.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "username must be 1-128 characters without control characters",
        ));
    }
    Ok(())
}

fn check_secret(field: &str, secret: &str) -> ApiResult<()> {
    if secret.is_empty() || secret.len() > 4096 || secret.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be 1-4096 characters without control characters"),
        ));
    }
    Ok(())
}

/// Connections of a tenant.
///
/// # Errors
/// On storage failure.
pub async fn list(
    conn: &impl ConnectionTrait,
    tenant_id: Uuid,
) -> ApiResult<Vec<siem_connection::Model>> {
    Ok(TenantScope::new(tenant_id)
        .find::<siem_connection::Entity>()
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
    Ok(TenantScope::new(tenant_id)
        .find::<siem_connection::Entity>()
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
    crate::service::scope::TenantScope::new(tenant_id)
        .get::<siem_connection::Entity>(conn, id, "connection")
        .await
}

/// Where a Splunk connection's rule tests inject events (its HEC), stored
/// in `settings`; the token is in `hec_credential`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecStored {
    /// HEC base URL, e.g. `https://splunk.corp:8088`.
    pub hec_url: String,
    /// Index that receives test events.
    pub test_index: String,
}

/// The AAD record id of a connection's HEC token: distinct from the main
/// credential's (the connection id), so one ciphertext cannot be moved into
/// the other column and still open.
fn hec_record_id(connection_id: Uuid) -> Uuid {
    Uuid::from_u128(connection_id.as_u128() ^ 0x6865_635f_746f_6b65_6e5f_7069_636b_6574)
}

/// Sets a Splunk connection's HEC (URL, test index, token) for rule tests.
/// The token is write-only, sealed under the tenant key; audited
/// `connection.hec_update` without it.
///
/// # Errors
/// 404 outside the tenant; 409 for a connection that is not Splunk; 400
/// naming an invalid field.
pub async fn set_splunk_hec(
    state: &AppState,
    admin: &CurrentUser,
    id: Uuid,
    hec: SplunkHecStored,
    token: zeroize::Zeroizing<String>,
) -> ApiResult<siem_connection::Model> {
    validate::base_url("hec_url", &hec.hec_url)?;
    validate::ident("test_index", &hec.test_index)?;
    check_secret("token", &token)?;
    let txn = state.db.begin().await?;
    let c = admin
        .scope()
        .get::<siem_connection::Entity>(&txn, id, "connection")
        .await?;
    if kind_of(&c) != Some(SiemKind::Splunk) {
        return Err(ApiError::conflict(
            "not_splunk",
            format!(
                "connection {} is {}; HEC is for Splunk connections",
                c.name, c.kind
            ),
        ));
    }
    let (key, version) = tenant_key(&txn, &state.keys, admin.tenant_id).await?;
    let ct = key
        .encrypt_credential(
            admin.tenant_id,
            hec_record_id(c.id),
            u32::try_from(version).unwrap_or(0),
            token.as_bytes(),
        )
        .map_err(|e| anyhow::anyhow!("hec token encrypt: {e}"))?;
    let settings = serde_json::to_string(&hec).map_err(|e| anyhow::anyhow!("settings: {e}"))?;
    let mut am: siem_connection::ActiveModel = c.into();
    am.settings = Set(Some(settings));
    am.hec_credential = Set(Some(ct));
    am.hec_key_version = Set(Some(version));
    am.updated_at = Set(unix_now());
    let row = am.update(&txn).await?;
    audit::record(
        &txn,
        admin
            .event("connection.hec_update", "siem_connection", id)
            .details(serde_json::json!({ "hec_url": hec.hec_url, "test_index": hec.test_index })),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// The HEC of a Splunk connection, with its token opened, if configured.
fn splunk_hec(
    key: &TenantKey,
    c: &siem_connection::Model,
) -> ApiResult<Option<picket_proto::SplunkHec>> {
    let (Some(settings), Some(ct), Some(version)) = (
        c.settings.as_deref(),
        c.hec_credential.as_deref(),
        c.hec_key_version,
    ) else {
        return Ok(None);
    };
    let s: SplunkHecStored = serde_json::from_str(settings)
        .map_err(|_| anyhow::anyhow!("connection {} has unreadable splunk settings", c.id))?;
    let pt = key
        .decrypt_credential(
            c.tenant_id,
            hec_record_id(c.id),
            u32::try_from(version).unwrap_or(0),
            ct,
        )
        .map_err(|e| {
            anyhow::anyhow!("HEC token of connection {} cannot be decrypted: {e}", c.id)
        })?;
    let token =
        String::from_utf8(pt.to_vec()).map_err(|_| anyhow::anyhow!("HEC token is not UTF-8"))?;
    Ok(Some(picket_proto::SplunkHec {
        url: s.hec_url,
        token: Credential::new(token),
        test_index: s.test_index,
    }))
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
    let secret = Credential::new(
        String::from_utf8(pt.to_vec()).map_err(|_| anyhow::anyhow!("credential is not UTF-8"))?,
    );
    let stored = |what: &str| anyhow::anyhow!("connection {} has unreadable {what} settings", c.id);
    let settings = match kind_of(c) {
        // With a username the sealed secret is its password and the agent
        // logs in for a session key; the token field is then unused (empty).
        Some(SiemKind::Splunk) => {
            let (token, login) = match &c.splunk_username {
                Some(username) => (
                    Credential::new(String::new()),
                    Some(picket_proto::SplunkLogin {
                        username: username.clone(),
                        password: secret,
                    }),
                ),
                None => (secret, None),
            };
            SiemSettings::Splunk(SplunkSettings {
                base_url: c.base_url.clone(),
                app: c.app.clone(),
                owner: c.owner.clone(),
                token,
                login,
                hec: splunk_hec(&key, c)?,
            })
        }
        Some(SiemKind::Sentinel) => {
            let s: SentinelStored = c
                .settings
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .ok_or_else(|| stored("sentinel"))?;
            SiemSettings::Sentinel(SentinelSettings {
                subscription_id: s.subscription_id,
                resource_group: s.resource_group,
                workspace_name: s.workspace_name,
                workspace_id: s.workspace_id,
                tenant_id: s.tenant_id,
                client_id: s.client_id,
                client_secret: secret,
                management_url: c.base_url.clone(),
                login_url: s.login_url,
                log_analytics_url: s.log_analytics_url,
                ingestion: s.ingestion.map(|i| SentinelIngestion {
                    endpoint: i.endpoint,
                    dcr_immutable_id: i.dcr_immutable_id,
                    stream: i.stream,
                    table: i.table,
                }),
            })
        }
        Some(SiemKind::Elastic) => {
            let e: ElasticStored = c
                .settings
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .ok_or_else(|| stored("elastic"))?;
            SiemSettings::Elastic(ElasticSettings {
                kibana_url: c.base_url.clone(),
                elasticsearch_url: e.elasticsearch_url,
                space: e.space,
                api_key: secret,
                test_index: e.test_index,
            })
        }
        _ => return Err(anyhow::anyhow!("connection {} has unknown kind {}", c.id, c.kind).into()),
    };
    Ok(SiemTarget {
        connection_id: c.id,
        name: c.name.clone(),
        settings,
    })
}
