//! Passwords: the policy (length bounds, no common password), Argon2id
//! hashing (64 MiB, 3 iterations, 4 lanes) and verification, always on the
//! blocking pool. Verification of an unknown account runs against a dummy
//! hash so a login costs the same whether or not the account exists.

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use std::collections::HashSet;
use std::sync::OnceLock;

use crate::error::ApiError;

/// Minimum password length, in characters.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (Argon2 input is bounded to keep hashing cost bounded).
pub const MAX_PASSWORD_LEN: usize = 256;

/// The embedded list of common passwords (one per line, `#` comments).
const COMMON_PASSWORDS: &str = include_str!("../common_passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether `password` is a common password, or one with only digits and
/// symbols added after it (`Password123!`), ignoring case.
pub fn is_common(password: &str) -> bool {
    let lower = password.trim().to_lowercase();
    let set = common_passwords();
    if set.contains(lower.as_str()) {
        return true;
    }
    let stem = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    !stem.is_empty() && set.contains(stem)
}

fn argon2() -> Result<Argon2<'static>, ApiError> {
    let params =
        Params::new(64 * 1024, 3, 4, None).map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks a new password against the policy.
///
/// # Errors
/// [`ApiError::BadRequest`] (`weak_password`) saying which rule it breaks.
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
    if is_common(password) {
        return Err(ApiError::bad_request(
            "weak_password",
            "password is too common (it is on a list of leaked passwords); choose another",
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

/// A PHC hash of a random password with the real parameters, verified against
/// when the account does not exist so that a login takes the same time either way.
const DUMMY_HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$gq1kEovnMvdJLnV5b+6jsXoVg0GtvcNGqvnh8vU7oPk";

/// Verifies a password on the blocking pool; `None` hash = unknown account
/// (still costs one full verification, against [`DUMMY_HASH`]).
///
/// # Errors
/// Only on an internal failure.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_long_and_common() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy(&"x".repeat(300)).is_err());
        assert!(check_password_policy("qwertyuiop123").is_err());
        assert!(check_password_policy("Password1234!").is_err());
        assert!(check_password_policy("baseball123456").is_err());
        assert!(check_password_policy("correct-horse-battery-staple").is_ok());
        assert!(common_passwords().len() >= 4000);
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
