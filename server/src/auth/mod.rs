//! Authentication and authorization, in one place.
//!
//! - Passwords ([`password`]): policy, Argon2id in `spawn_blocking`.
//! - Sessions: server-side rows keyed by the SHA-256 of a random 256-bit
//!   secret, with idle and absolute timeouts. The secret travels as the
//!   `picket_session` cookie (browsers) or `Authorization: Bearer` (API
//!   clients); revoking the row ends it at once.
//! - API keys: `Authorization: Bearer pk_<prefix>_<secret>`, found by the
//!   public prefix, compared as SHA-256 digests in constant time; each key has
//!   scopes and acts for its creator, never beyond the creator's role.
//! - CSRF: a request carrying a session cookie that changes state must come
//!   from the same origin (`Sec-Fetch-Site`, falling back to `Origin`).
//! - Authorization: handlers take an [`Auth<P>`] extractor whose permission `P`
//!   is checked against the role matrix in [`allowed`] (sessions) or the
//!   scopes in [`Scope::for_permission`] (API keys); a handler cannot forget it.
//!
//! # Layout
//! - [`password`]: policy, hashing, verification.
//! - [`login_limit`]: per-IP and per-account throttling of sign-in.
//! - [`client_ip`]: the client IP, trusted-proxy aware.

pub mod client_ip;
pub mod login_limit;
pub mod password;

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine as _;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set, TransactionTrait as _,
};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

pub use client_ip::ClientIp;
pub use login_limit::LoginLimiter;
pub use password::{
    MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, check_password_policy, hash_password, verify_password,
};

use crate::AppState;
use crate::audit::{self, Actor, Event};
use crate::db::entity::{api_key, session, user};
use crate::error::ApiError;
use crate::service::scope::TenantScope;
use crate::time::unix_now;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "picket_session";
/// Prefix of every API key's text.
pub const API_KEY_PREFIX: &str = "pk_";
/// `last_seen_at` / `last_used_at` are rewritten at most this often (seconds),
/// so a busy client does not write on every request.
const TOUCH_EVERY_SECS: i64 = 60;

/// SHA-256 hex of a bearer secret: the stored id of its session (or hash of an API key).
pub fn secret_id(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh random 256-bit secret, base64url.
///
/// # Errors
/// If the operating system's RNG fails.
pub fn random_secret() -> Result<String, ApiError> {
    let raw: [u8; 32] =
        picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Creates a session and returns its bearer secret (shown to the client once).
///
/// # Errors
/// On storage failure.
pub async fn create_session(
    conn: &impl ConnectionTrait,
    user: &user::Model,
    absolute_secs: i64,
) -> Result<String, ApiError> {
    let secret = random_secret()?;
    let now = unix_now();
    session::ActiveModel {
        id: Set(secret_id(&secret)),
        user_id: Set(user.id),
        tenant_id: Set(user.tenant_id),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + absolute_secs),
        revoked: Set(false),
    }
    .insert(conn)
    .await?;
    Ok(secret)
}

/// A user's role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users, keys, connections and enrollment.
    Admin,
    /// Writes rules and requests/approves deployments.
    User,
    /// Reads; approves only with the approver flag.
    Viewer,
}

impl Role {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Every permission a route can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read rules, deployments and connections (dashboards).
    View,
    /// Read the fleet: agents and their health.
    ReadAgents,
    /// Create and edit rules, run tests.
    Author,
    /// Request deployments.
    RequestDeployment,
    /// Approve deployments (separation of duties is checked by the service).
    Approve,
    /// Users, invitations, API keys, enrollment tokens, SIEM connections, tenant settings.
    Administer,
    /// Read the audit log.
    ReadAudit,
    /// One's own account: profile, sessions, password, sign-out. People only, never API keys.
    Account,
}

/// The role matrix for people (sessions). The one place that decides who may do what.
pub fn allowed(role: Role, approver_flag: bool, perm: Permission) -> bool {
    match perm {
        Permission::View | Permission::ReadAgents | Permission::Account => true,
        Permission::Author | Permission::RequestDeployment => {
            matches!(role, Role::Admin | Role::User)
        }
        Permission::Approve => matches!(role, Role::Admin | Role::User) || approver_flag,
        Permission::Administer | Permission::ReadAudit => role == Role::Admin,
    }
}

/// An API key scope.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum Scope {
    /// Read rules, deployments and connections.
    #[serde(rename = "rules:read")]
    RulesRead,
    /// Create rules and versions.
    #[serde(rename = "rules:write")]
    RulesWrite,
    /// Request deployments.
    #[serde(rename = "deployments:request")]
    DeploymentsRequest,
    /// Approve deployments (never one requested by the key's owner).
    #[serde(rename = "deployments:approve")]
    DeploymentsApprove,
    /// Read agents.
    #[serde(rename = "agents:read")]
    AgentsRead,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 6] = [
        Scope::RulesRead,
        Scope::RulesWrite,
        Scope::DeploymentsRequest,
        Scope::DeploymentsApprove,
        Scope::AgentsRead,
        Scope::AuditRead,
    ];

    /// Stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RulesRead => "rules:read",
            Scope::RulesWrite => "rules:write",
            Scope::DeploymentsRequest => "deployments:request",
            Scope::DeploymentsApprove => "deployments:approve",
            Scope::AgentsRead => "agents:read",
            Scope::AuditRead => "audit:read",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The scope an API key needs for `perm`; `None`: no key may do it.
    pub fn for_permission(perm: Permission) -> Option<Scope> {
        match perm {
            Permission::View => Some(Scope::RulesRead),
            Permission::ReadAgents => Some(Scope::AgentsRead),
            Permission::Author => Some(Scope::RulesWrite),
            Permission::RequestDeployment => Some(Scope::DeploymentsRequest),
            Permission::Approve => Some(Scope::DeploymentsApprove),
            Permission::ReadAudit => Some(Scope::AuditRead),
            Permission::Administer | Permission::Account => None,
        }
    }
}

/// Parses a stored space-separated scope list (unknown names are dropped).
pub fn parse_scopes(s: &str) -> Vec<Scope> {
    s.split_whitespace().filter_map(Scope::parse).collect()
}

/// The authenticated caller: a person (session) or an API key acting for its creator.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The person: the signed-in user, or the API key's creator.
    pub id: Uuid,
    /// Their tenant: every query the handler makes is scoped by it.
    pub tenant_id: Uuid,
    /// Email, for display.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Approver flag.
    pub approver: bool,
    /// The session id (SHA-256 of the secret), when signed in with a session.
    pub session_id: Option<String>,
    /// The API key, when the request carried one.
    pub api_key_id: Option<Uuid>,
    /// Who the audit log names: the user, or the API key.
    pub actor: Actor,
}

impl CurrentUser {
    /// A successful event by this caller, attributed to the user or the API key.
    pub fn event(
        &self,
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl ToString,
    ) -> Event {
        let mut ev = Event::user(self.tenant_id, self.id, action, resource_type, resource_id);
        ev.actor = self.actor;
        ev
    }

    /// The caller's tenant, as the handle every tenant query goes through.
    pub fn scope(&self) -> TenantScope {
        TenantScope::new(self.tenant_id)
    }
}

/// Marker types naming the permission an [`Auth`] extractor requires.
pub mod perm {
    use super::Permission;

    /// A permission marker.
    pub trait Perm: Send + Sync + 'static {
        /// The permission.
        const PERM: Permission;
    }

    macro_rules! marker {
        ($name:ident, $p:expr) => {
            /// Requires the permission of the same name.
            pub struct $name;
            impl Perm for $name {
                const PERM: Permission = $p;
            }
        };
    }
    marker!(View, Permission::View);
    marker!(ReadAgents, Permission::ReadAgents);
    marker!(Author, Permission::Author);
    marker!(RequestDeployment, Permission::RequestDeployment);
    marker!(Approve, Permission::Approve);
    marker!(Administer, Permission::Administer);
    marker!(ReadAudit, Permission::ReadAudit);
    marker!(Account, Permission::Account);
}

/// Extractor: an authenticated caller holding permission `P`.
pub struct Auth<P: perm::Perm>(pub CurrentUser, PhantomData<P>);

impl<P: perm::Perm> std::ops::Deref for Auth<P> {
    type Target = CurrentUser;
    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

/// The `Authorization: Bearer` value, if any.
fn bearer(parts: &Parts) -> Option<String> {
    let v = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

/// The session cookie's value, if any.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    for c in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for pair in c.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == SESSION_COOKIE
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    match url.find("://") {
        Some(i) => match url[i + 3..].find('/') {
            Some(j) => &url[..i + 3 + j],
            None => url,
        },
        None => url,
    }
}

/// CSRF defence for requests carrying a session cookie that change state.
fn check_csrf(parts: &Parts, public_url: &str) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        return if site == "same-origin" || site == "none" {
            Ok(())
        } else {
            Err(ApiError::Forbidden("cross-site request refused".into()))
        };
    }
    if let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        return if origin == origin_of(public_url) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("cross-origin request refused".into()))
        };
    }
    Ok(())
}

/// Authenticates a session secret: live, within the idle and absolute
/// timeouts; touches `last_seen_at` at most once a minute.
async fn session_user(state: &AppState, secret: &str) -> Result<CurrentUser, ApiError> {
    let sid = secret_id(secret);
    let now = unix_now();
    let cfg = &state.config;
    let sess = session::Entity::find_by_id(sid.clone())
        .one(&state.db)
        .await?
        .filter(|s| {
            !s.revoked
                && s.expires_at > now
                && s.created_at + cfg.session_absolute_secs > now
                && s.last_seen_at + cfg.session_idle_secs > now
        })
        .ok_or(ApiError::Unauthorized)?;
    let u = TenantScope::new(sess.tenant_id)
        .get::<user::Entity>(&state.db, sess.user_id, "user")
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    let touch = TOUCH_EVERY_SECS.min(cfg.session_idle_secs / 10).max(1);
    if now - sess.last_seen_at >= touch {
        session::Entity::update_many()
            .col_expr(session::Column::LastSeenAt, Expr::value(now))
            .filter(session::Column::Id.eq(sid.clone()))
            .exec(&state.db)
            .await?;
    }
    let role = Role::parse(&u.role)
        .ok_or_else(|| anyhow::anyhow!("user {} has unknown role {:?}", u.id, u.role))?;
    Ok(CurrentUser {
        id: u.id,
        tenant_id: u.tenant_id,
        email: u.email,
        role,
        approver: u.approver,
        session_id: Some(sid),
        api_key_id: None,
        actor: Actor::User(u.id),
    })
}

/// Splits `pk_<prefix>_<secret>` into its public prefix.
fn key_prefix(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(API_KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some(prefix)
}

/// Authenticates an API key; returns the caller and the key's scopes. Records
/// `api_key.use` with `last_used_at` at most once a minute per key.
async fn api_key_user(
    state: &AppState,
    text: &str,
    parts: &Parts,
) -> Result<(CurrentUser, Vec<Scope>), ApiError> {
    let prefix = key_prefix(text).ok_or(ApiError::Unauthorized)?;
    let now = unix_now();
    let key = api_key::Entity::find()
        .filter(api_key::Column::Prefix.eq(prefix))
        .one(&state.db)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let given = Sha256::digest(text.as_bytes());
    let stored = hex::decode(&key.secret_hash).unwrap_or_default();
    if !bool::from(given.as_slice().ct_eq(&stored)) {
        return Err(ApiError::Unauthorized);
    }
    if key.revoked_at.is_some() || key.expires_at <= now {
        return Err(ApiError::Unauthorized);
    }
    let owner = TenantScope::new(key.tenant_id)
        .get::<user::Entity>(&state.db, key.created_by, "user")
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    let role = Role::parse(&owner.role)
        .ok_or_else(|| anyhow::anyhow!("user {} has unknown role {:?}", owner.id, owner.role))?;
    if key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_SECS) {
        let txn = state.db.begin().await?;
        // Guarded: of concurrent requests, one writes (and audits) the use.
        let res = api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(key.id))
            .filter(
                api_key::Column::LastUsedAt
                    .is_null()
                    .or(api_key::Column::LastUsedAt.lte(now - TOUCH_EVERY_SECS)),
            )
            .exec(&txn)
            .await?;
        if res.rows_affected == 1 {
            let mut ev = Event::user(key.tenant_id, owner.id, "api_key.use", "api_key", key.id)
                .details(serde_json::json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path().chars().take(200).collect::<String>(),
                }));
            ev.actor = Actor::ApiKey(key.id);
            audit::record(&txn, ev).await?;
        }
        txn.commit().await?;
    }
    Ok((
        CurrentUser {
            id: owner.id,
            tenant_id: owner.tenant_id,
            email: owner.email,
            role,
            approver: owner.approver,
            session_id: None,
            api_key_id: Some(key.id),
            actor: Actor::ApiKey(key.id),
        },
        parse_scopes(&key.scopes),
    ))
}

impl<P: perm::Perm> FromRequestParts<AppState> for Auth<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let cookie = session_cookie(&parts.headers);
        // Any request carrying the session cookie is subject to the CSRF
        // rule, even if it also has a bearer: only cookie-less clients are exempt.
        if cookie.is_some() {
            check_csrf(parts, &state.config.public_url)?;
        }
        let secret = bearer(parts).or(cookie).ok_or(ApiError::Unauthorized)?;
        if secret.is_empty() || secret.len() > 128 {
            return Err(ApiError::Unauthorized);
        }
        let user = if secret.starts_with(API_KEY_PREFIX) {
            let (user, scopes) = api_key_user(state, &secret, parts).await?;
            match Scope::for_permission(P::PERM) {
                None => {
                    return Err(ApiError::Forbidden(
                        "API keys cannot do this; sign in as an admin".into(),
                    ));
                }
                Some(s) if !scopes.contains(&s) => {
                    return Err(ApiError::Forbidden(format!(
                        "this API key lacks the scope {}",
                        s.as_str()
                    )));
                }
                Some(_) => {}
            }
            // A key never exceeds what its creator may do today.
            if !allowed(user.role, user.approver, P::PERM) {
                return Err(ApiError::Forbidden(format!(
                    "the key's owner's role ({}) does not allow this",
                    user.role.as_str()
                )));
            }
            user
        } else {
            let user = session_user(state, &secret).await?;
            if !allowed(user.role, user.approver, P::PERM) {
                return Err(ApiError::Forbidden(format!(
                    "your role ({}) does not allow this",
                    user.role.as_str()
                )));
            }
            user
        };
        Ok(Auth(user, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_matrix() {
        use Permission::*;
        for p in [View, ReadAgents, Account] {
            assert!(allowed(Role::Viewer, false, p));
        }
        assert!(!allowed(Role::Viewer, false, Author));
        assert!(!allowed(Role::Viewer, false, RequestDeployment));
        assert!(!allowed(Role::Viewer, false, Approve));
        assert!(allowed(Role::Viewer, true, Approve));
        assert!(!allowed(Role::Viewer, true, Author));
        assert!(allowed(Role::User, false, Approve));
        assert!(!allowed(Role::User, false, Administer));
        assert!(!allowed(Role::User, false, ReadAudit));
        assert!(allowed(Role::Admin, false, Administer));
        assert!(allowed(Role::Admin, false, ReadAudit));
    }

    #[test]
    fn scopes_round_trip_and_map() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            Scope::for_permission(Permission::ReadAudit),
            Some(Scope::AuditRead)
        );
        assert_eq!(Scope::for_permission(Permission::Administer), None);
        assert_eq!(
            parse_scopes("rules:read bogus agents:read"),
            vec![Scope::RulesRead, Scope::AgentsRead]
        );
        assert_eq!(
            key_prefix("pk_0123456789abcdef_xyz"),
            Some("0123456789abcdef")
        );
        assert_eq!(key_prefix("pk_0123_xyz"), None);
        assert_eq!(key_prefix("pk_0123456789abcdef_"), None);
    }
}
