//! Login throttling, per client IP and per account, with a growing delay.
//!
//! Each failed sign-in counts against the client IP and against the email it
//! named (whether or not such an account exists, so the answer tells nothing).
//! After `threshold` failures a key is locked for 1 s, then 2 s, 4 s, … up to
//! `max_delay_secs`; a locked key is answered 429 `too_many_attempts` with
//! `Retry-After` before any password is checked, and that attempt counts as
//! a failure too (the lock keeps growing while guessing goes on). A successful sign-in clears
//! the account's counter (not the IP's: one valid account must not let an IP
//! guess others). Counters are forgotten after an hour without failures.
//!
//! State is in memory, per server process: with several replicas behind a
//! load balancer each applies its own limit (documented in docs/security.md).

use std::collections::HashMap;
use std::sync::Mutex;

/// A counter is forgotten this long after its last failure.
const FORGET_AFTER_SECS: i64 = 3600;
/// Most keys tracked at once; beyond it stale keys are pruned first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: i64,
    locked_until: i64,
}

/// The limiter, shared by every request.
#[derive(Debug)]
pub struct LoginLimiter {
    account_threshold: u32,
    ip_threshold: u32,
    max_delay_secs: i64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl LoginLimiter {
    /// A limiter with the configured thresholds.
    pub fn new(account_threshold: u32, ip_threshold: u32, max_delay_secs: u64) -> Self {
        LoginLimiter {
            account_threshold,
            ip_threshold,
            max_delay_secs: i64::try_from(max_delay_secs).unwrap_or(i64::MAX),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: Option<&str>, email: &str) -> [Option<String>; 2] {
        [
            ip.map(|ip| format!("ip:{ip}")),
            Some(format!("acct:{}", email.trim().to_lowercase())),
        ]
    }

    /// Seconds the caller must wait before trying again, if either key is locked.
    pub fn retry_after(&self, ip: Option<&str>, email: &str, now: i64) -> Option<u64> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(ip, email)
            .iter()
            .flatten()
            .filter_map(|k| map.get(k))
            .map(|e| e.locked_until - now)
            .filter(|wait| *wait > 0)
            .max()
            .map(|w| u64::try_from(w).unwrap_or(1))
    }

    /// Counts a failure against the IP and the account.
    pub fn failed(&self, ip: Option<&str>, email: &str, now: i64) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, e| now - e.last_failure < FORGET_AFTER_SECS);
        }
        for (i, key) in Self::keys(ip, email).into_iter().enumerate() {
            let Some(key) = key else { continue };
            if map.len() >= MAX_KEYS && !map.contains_key(&key) {
                continue;
            }
            let threshold = if i == 0 {
                self.ip_threshold
            } else {
                self.account_threshold
            };
            let e = map.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                locked_until: 0,
            });
            if now - e.last_failure >= FORGET_AFTER_SECS {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            if e.failures >= threshold {
                let exp = (e.failures - threshold).min(30);
                let delay = (1i64 << exp).min(self.max_delay_secs);
                e.locked_until = now + delay;
            }
        }
    }

    /// A successful sign-in: the account's counter starts again.
    pub fn succeeded(&self, email: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("acct:{}", email.trim().to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_per_account_and_per_ip() {
        let l = LoginLimiter::new(3, 5, 60);
        let t = 1000;
        for _ in 0..2 {
            l.failed(Some("1.2.3.4"), "a@x", t);
        }
        assert_eq!(l.retry_after(Some("1.2.3.4"), "a@x", t), None);
        l.failed(Some("1.2.3.4"), "a@x", t);
        assert_eq!(l.retry_after(Some("9.9.9.9"), "A@x", t), Some(1));
        l.failed(Some("1.2.3.4"), "a@x", t + 1);
        assert_eq!(l.retry_after(None, "a@x", t + 1), Some(2));
        // The IP reached its threshold (5) with another account.
        l.failed(Some("1.2.3.4"), "b@x", t + 1);
        assert_eq!(l.retry_after(Some("1.2.3.4"), "c@x", t + 1), Some(1));
        for _ in 0..20 {
            l.failed(None, "a@x", t + 2);
        }
        assert_eq!(l.retry_after(None, "a@x", t + 2), Some(60));
        l.succeeded("a@x");
        assert_eq!(l.retry_after(None, "a@x", t + 2), None);
        // Forgotten after an hour.
        l.failed(Some("5.5.5.5"), "z@x", t);
        assert_eq!(l.retry_after(Some("1.2.3.4"), "q@x", t + 4000), None);
    }
}
