//! Randomness from the operating system, for keys, nonces and tokens.
//!
//! Everything here reads the OS generator through `getrandom` directly; there
//! is no user-space RNG to seed or to fork badly. A failure is returned, not
//! panicked on: callers treat it as fatal for the operation at hand.

use zeroize::Zeroizing;

use crate::error::CryptoError;

/// `N` bytes from the operating system's cryptographically secure generator.
///
/// For secret material prefer [`random_secret`], which zeroizes the bytes on drop.
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails (on Linux, essentially only
/// when `getrandom(2)` is unavailable or blocked by a seccomp filter).
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(CryptoError::rng)?;
    Ok(out)
}

/// `N` secret random bytes, filled in place inside a [`Zeroizing`] buffer so
/// the only copy is wiped when it is dropped.
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails.
pub fn random_secret<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::fill(out.as_mut_slice()).map_err(CryptoError::rng)?;
    Ok(out)
}

/// The secret part of a new enrollment token (32 bytes, as in
/// [`picket_proto::EnrollmentToken::secret`], which zeroizes itself on drop).
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails.
pub fn random_token_secret() -> Result<[u8; 32], CryptoError> {
    random_array()
}

/// A fresh 32-byte connection challenge nonce (not secret, must be unpredictable).
///
/// # Errors
/// [`CryptoError::Rng`] if the OS generator fails.
pub fn random_nonce() -> Result<[u8; 32], CryptoError> {
    random_array()
}

#[cfg(test)]
// Tests: a failed unwrap is a failed assertion, with its location.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_are_not_zero() {
        let a: [u8; 32] = random_array().unwrap();
        let b: [u8; 32] = random_array().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
        let s = random_secret::<16>().unwrap();
        assert_ne!(*s, [0u8; 16]);
        assert_ne!(random_token_secret().unwrap(), random_nonce().unwrap());
    }
}
