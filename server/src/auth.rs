//! Authentication and authorization, in one place.
//!
//! - Passwords: Argon2id (64 MiB, 3 iterations, 4 lanes), always in `spawn_blocking`.
//! - Sessions: server-side rows keyed by the SHA-256 of a random 256-bit secret.
//!   The secret travels as the `picket_session` cookie (browsers) or as
//!   `Authorization: Bearer` (API clients); revoking the row ends it at once.
//! - CSRF: a cookie-authenticated state-changing request must come from the
//!   same origin (`Sec-Fetch-Site`, falling back to `Origin`).
//! - Authorization: handlers take an [`Auth<P>`] extractor whose permission `P`
//!   is checked against the role matrix in [`allowed`]; a handler cannot forget it.

use std::marker::PhantomData;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use base64::Engine as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set,
};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::db::entity::{session, user};
use crate::error::ApiError;
use crate::time::unix_now;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "picket_session";
/// Lifetime of a session (absolute).
pub const SESSION_TTL_SECS: i64 = 12 * 3600;
/// Minimum password length.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (Argon2 input is bounded to keep hashing cost bounded).
pub const MAX_PASSWORD_LEN: usize = 256;

fn argon2() -> Result<Argon2<'static>, ApiError> {
    let params =
        Params::new(64 * 1024, 3, 4, None).map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks a new password against the policy.
///
/// # Errors
/// [`ApiError::BadRequest`] saying which rule it breaks.
pub fn check_password_policy(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("password must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("password must be at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Hashes a password (Argon2id PHC string) on the blocking pool.
///
/// # Errors
/// Only on an internal failure.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let password = zeroize::Zeroizing::new(password);
    tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let salt: [u8; 16] =
            picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("rng: {e}"))?;
        let hash = argon2()?
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(hash.to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!("hashing task: {e}"))?
}

/// A PHC hash of a random password, verified against when the account does not
/// exist so that a login takes the same time either way.
const DUMMY_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$gq1kEovnMvdJLnV5b+6jsXoVg0GtvcNGqvnh8vU7oPk";

/// Verifies a password on the blocking pool; `None` hash = unknown account (still costs one verification).
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    let password = zeroize::Zeroizing::new(password);
    tokio::task::spawn_blocking(move || -> Result<bool, ApiError> {
        let known = hash.is_some();
        let h = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = argon2()?
            .verify_password(password.as_bytes(), h.as_str())
            .is_ok();
        Ok(ok && known)
    })
    .await
    .map_err(|e| anyhow::anyhow!("verification task: {e}"))?
}

/// SHA-256 hex of a bearer secret: the stored id of its session.
pub fn secret_id(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates a session and returns its bearer secret (shown to the client once).
///
/// # Errors
/// On storage failure.
pub async fn create_session(
    conn: &impl ConnectionTrait,
    user: &user::Model,
) -> Result<String, ApiError> {
    let raw: [u8; 32] =
        picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let now = unix_now();
    session::ActiveModel {
        id: Set(secret_id(&secret)),
        user_id: Set(user.id),
        tenant_id: Set(user.tenant_id),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + SESSION_TTL_SECS),
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
    /// Read rules, deployments, agents, health.
    View,
    /// Create rules and versions, request deployments.
    Author,
    /// Approve deployments (separation of duties is checked by the service).
    Approve,
    /// Users, enrollment tokens, SIEM connections, tenant settings.
    Administer,
}

/// The role matrix. The one place that decides who may do what.
pub fn allowed(role: Role, approver_flag: bool, perm: Permission) -> bool {
    match perm {
        Permission::View => true,
        Permission::Author => matches!(role, Role::Admin | Role::User),
        Permission::Approve => matches!(role, Role::Admin | Role::User) || approver_flag,
        Permission::Administer => role == Role::Admin,
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// User id.
    pub id: Uuid,
    /// Their tenant: every query the handler makes is scoped by it.
    pub tenant_id: Uuid,
    /// Email, for display.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Approver flag.
    pub approver: bool,
    /// The session id (SHA-256 of the secret).
    pub session_id: String,
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
    marker!(Author, Permission::Author);
    marker!(Approve, Permission::Approve);
    marker!(Administer, Permission::Administer);
}

/// Extractor: an authenticated user holding permission `P`.
pub struct Auth<P: perm::Perm>(pub CurrentUser, PhantomData<P>);

impl<P: perm::Perm> std::ops::Deref for Auth<P> {
    type Target = CurrentUser;
    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

fn bearer_or_cookie(parts: &Parts) -> Option<(String, bool)> {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some((t.trim().to_owned(), false));
    }
    let cookies = parts.headers.get_all(header::COOKIE);
    for c in cookies.iter().filter_map(|v| v.to_str().ok()) {
        for pair in c.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == SESSION_COOKIE
            {
                return Some((v.to_owned(), true));
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

/// CSRF defence for cookie-authenticated requests that change state.
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

impl<P: perm::Perm> FromRequestParts<AppState> for Auth<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (secret, via_cookie) = bearer_or_cookie(parts).ok_or(ApiError::Unauthorized)?;
        if secret.len() > 128 {
            return Err(ApiError::Unauthorized);
        }
        if via_cookie {
            check_csrf(parts, &state.config.public_url)?;
        }
        let sid = secret_id(&secret);
        let now = unix_now();
        let sess = session::Entity::find_by_id(sid.clone())
            .one(&state.db)
            .await?
            .filter(|s| !s.revoked && s.expires_at > now)
            .ok_or(ApiError::Unauthorized)?;
        let u = user::Entity::find_by_id(sess.user_id)
            .filter(user::Column::TenantId.eq(sess.tenant_id))
            .one(&state.db)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let role = Role::parse(&u.role)
            .ok_or_else(|| anyhow::anyhow!("user {} has unknown role {:?}", u.id, u.role))?;
        if !allowed(role, u.approver, P::PERM) {
            return Err(ApiError::Forbidden(format!(
                "your role ({}) does not allow this",
                role.as_str()
            )));
        }
        Ok(Auth(
            CurrentUser {
                id: u.id,
                tenant_id: u.tenant_id,
                email: u.email,
                role,
                approver: u.approver,
                session_id: sid,
            },
            PhantomData,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_matrix() {
        use Permission::*;
        assert!(allowed(Role::Viewer, false, View));
        assert!(!allowed(Role::Viewer, false, Author));
        assert!(!allowed(Role::Viewer, false, Approve));
        assert!(allowed(Role::Viewer, true, Approve));
        assert!(allowed(Role::User, false, Approve));
        assert!(!allowed(Role::User, false, Administer));
        assert!(allowed(Role::Admin, false, Administer));
    }

    #[tokio::test]
    async fn password_hash_round_trip_and_dummy() {
        let h = hash_password("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"));
        assert!(
            verify_password("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify_password("wrong".into(), Some(h)).await.unwrap());
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }
}
