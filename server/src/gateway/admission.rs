//! Connection admission control: a token bucket on new agent connections.
//!
//! The bucket holds up to `agents.admission_burst` tokens and refills at
//! `agents.admission_rate_per_sec`. Each new connection takes one token; with
//! none left the gateway still completes the (cheap) WebSocket upgrade, sends
//! `RetryAfter { secs }` and closes, so a fleet reconnecting at once (server
//! restart, network blip) is spread over time instead of hammering the
//! database with handshakes.
//!
//! `secs` spreads the refused: the limiter keeps a virtual queue (`backlog`,
//! one per refusal, draining at the refill rate), and a refused connection is
//! told the time until the bucket will have served the bucket's deficit plus
//! everyone refused before it: `ceil((1 - tokens + backlog) / rate)`, at least
//! 1 s and at most [`MAX_RETRY_AFTER_SECS`]. So 10 000 agents arriving at once
//! against 200/s are told 1 s, 1 s, ..., 50 s, and the agent adds its own
//! jitter on top. The backlog only shapes the advice, never admission.
//!
//! The state is a plain `std::sync::Mutex` held for a few arithmetic
//! operations and never across an `.await`; the counters are atomics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Longest `RetryAfter` the gateway asks for.
pub const MAX_RETRY_AFTER_SECS: u32 = 300;

struct Bucket {
    /// Tokens available now (fractional: refill is continuous).
    tokens: f64,
    /// Refused connections still expected back (drains at the refill rate).
    backlog: f64,
    /// When `tokens` and `backlog` were last brought up to date.
    updated: Instant,
}

/// The admission limiter of one server process, with its counters.
pub struct Admission {
    rate_per_sec: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
    admitted: AtomicU64,
    refused: AtomicU64,
}

impl Admission {
    /// A full bucket of `burst` tokens refilling at `rate_per_sec` (both at least 1).
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Admission {
            rate_per_sec: f64::from(rate_per_sec.max(1)),
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                backlog: 0.0,
                updated: Instant::now(),
            }),
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes a token for a new connection.
    ///
    /// # Errors
    /// When the bucket is empty: the seconds the client should wait before retrying.
    pub fn try_admit(&self) -> Result<(), u32> {
        self.try_admit_at(Instant::now())
    }

    fn try_admit_at(&self, now: Instant) -> Result<(), u32> {
        let verdict = {
            let mut b = match self.bucket.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.rate_per_sec).min(self.burst);
            b.backlog = (b.backlog - elapsed * self.rate_per_sec).max(0.0);
            b.updated = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                let wait = (1.0 - b.tokens + b.backlog) / self.rate_per_sec;
                b.backlog += 1.0;
                Err(wait)
            }
        };
        match verdict {
            Ok(()) => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(wait) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                // In range by construction: clamp before the cast.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let secs = wait.ceil().clamp(1.0, f64::from(MAX_RETRY_AFTER_SECS)) as u32;
                Err(secs)
            }
        }
    }

    /// Connections admitted since start.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Connections refused with `RetryAfter` since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate_then_refill() {
        let a = Admission::new(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(a.try_admit_at(t0), Ok(()));
        }
        // Empty: one token takes 0.5 s at 2/s, rounded up to the 1 s minimum;
        // each later refusal is queued behind the earlier ones.
        assert_eq!(a.try_admit_at(t0), Err(1));
        assert_eq!(a.try_admit_at(t0), Err(1));
        assert_eq!(a.try_admit_at(t0), Err(2));
        assert_eq!(a.try_admit_at(t0 + Duration::from_millis(500)), Ok(()));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(a.try_admit_at(later), Ok(()));
        }
        assert_eq!(a.try_admit_at(later), Err(1), "the backlog has drained");
        assert_eq!((a.admitted(), a.refused()), (7, 4));
    }

    #[test]
    fn retry_after_spreads_a_herd_and_is_capped() {
        let a = Admission::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(a.try_admit_at(t0), Ok(()));
        let secs: Vec<u32> = (0..4).map(|_| a.try_admit_at(t0).unwrap_err()).collect();
        assert_eq!(secs, [1, 2, 3, 4]);
        assert_eq!(
            a.try_admit_at(t0 + Duration::from_millis(100)).unwrap_err(),
            5,
            "0.9 s deficit + 3.9 s of backlog, rounded up"
        );
        let herd = Admission::new(1, 1);
        for _ in 0..1000 {
            let _ = herd.try_admit_at(t0);
        }
        assert_eq!(herd.try_admit_at(t0), Err(MAX_RETRY_AFTER_SECS));
    }
}
