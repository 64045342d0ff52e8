//! The reconnect schedule.
//!
//! A fleet of agents must not come back in the same second after a server
//! restart, and a flapping server must not be hammered. The schedule:
//!
//! 1. **Caps** come from `backon`'s [`ExponentialBuilder`]: 1 s, 2 s, 4 s, …,
//!    doubling up to 300 s, then 300 s for ever (no retry limit).
//! 2. **Full jitter**: the agent sleeps a uniform random time in `[0, cap]`
//!    (not `cap ± x`), which spreads a herd over the whole window.
//! 3. **Stability before reset**: the caps go back to 1 s only after a
//!    session that stayed up for at least [`STABLE_AFTER`] (60 s). A server
//!    that accepts and drops connections keeps the agent on a growing delay.
//! 4. **Server-initiated close** (close frame or EOF from the server, e.g. a
//!    restart or deploy): an extra uniform delay in `[0, 5 s]` is added, so
//!    agents dropped together do not reconnect together.
//! 5. **`RetryAfter { secs }`**: the agent waits `secs` plus a uniform
//!    random delay in `[0, 1 s]` ([`RETRY_AFTER_SPREAD`]), and the caps keep
//!    growing. The server already gives each refused agent its own slot (its
//!    admission queue tells the n-th refused agent about n / rate seconds),
//!    in whole seconds: the jitter only spreads the agents of one slot over
//!    its second. A larger jitter (it was up to `secs` again) made a fleet
//!    miss its slots and take twice as long to come back (92 s instead of
//!    about 48 s for 10,000 agents at 200/s, `picket-loadgen storm`). `secs`
//!    is honoured up to [`MAX_RETRY_AFTER`] (1 hour): the message is not
//!    signed, so a forged one must not be able to park an agent for longer
//!    than that.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Uptime after which a session counts as stable and the schedule restarts at 1 s.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Smallest cap.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// Largest cap.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// Longest `RetryAfter` the agent honours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Upper bound of the jitter added to a `RetryAfter` (the server's slots are whole seconds).
pub const RETRY_AFTER_SPREAD: Duration = Duration::from_secs(1);
/// Upper bound of the extra delay after a server-initiated close.
pub const SERVER_CLOSE_SPREAD: Duration = Duration::from_secs(5);

/// How a session ended, as far as the schedule is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Connecting, TLS, the WebSocket upgrade or the handshake failed, or the
    /// connection broke (I/O error, read deadline, protocol error).
    Failed,
    /// The server closed the connection (close frame or clean EOF).
    ServerClosed,
    /// The server asked the agent to come back later.
    RetryAfter(u32),
}

/// A source of uniform random numbers in `[0, 1)`.
pub type Rng = Box<dyn FnMut() -> f64 + Send>;

/// Reconnect delay state (see the module doc for the schedule).
pub struct Backoff {
    builder: ExponentialBuilder,
    caps: <ExponentialBuilder as BackoffBuilder>::Backoff,
    rng: Rng,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff").finish_non_exhaustive()
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::with_rng(Box::new(os_uniform))
    }
}

impl Backoff {
    /// The schedule with the operating system's random source.
    pub fn new() -> Self {
        Self::default()
    }

    /// The schedule with a given random source (tests).
    pub fn with_rng(rng: Rng) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(MIN_DELAY)
            .with_factor(2.0)
            .with_max_delay(MAX_DELAY)
            .without_max_times();
        Backoff {
            caps: builder.build(),
            builder,
            rng,
        }
    }

    /// The delay before the next connection attempt, after a session that
    /// ended as `end` having been up for `uptime` (zero if it never came up).
    pub fn delay_after(&mut self, end: SessionEnd, uptime: Duration) -> Duration {
        if uptime >= STABLE_AFTER {
            self.caps = self.builder.build();
        }
        let cap = self.next_cap();
        match end {
            SessionEnd::Failed => self.jitter(cap),
            SessionEnd::ServerClosed => {
                let spread = self.jitter(SERVER_CLOSE_SPREAD);
                self.jitter(cap).saturating_add(spread)
            }
            SessionEnd::RetryAfter(secs) => {
                let asked = Duration::from_secs(u64::from(secs)).min(MAX_RETRY_AFTER);
                asked.saturating_add(self.jitter(RETRY_AFTER_SPREAD))
            }
        }
    }

    /// The current cap, advancing the sequence.
    fn next_cap(&mut self) -> Duration {
        self.caps.next().unwrap_or(MAX_DELAY).min(MAX_DELAY)
    }

    /// Full jitter: uniform in `[0, d]`.
    fn jitter(&mut self, d: Duration) -> Duration {
        let u = (self.rng)();
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.5
        };
        d.mul_f64(u)
    }
}

/// Uniform `[0, 1)` from the OS random source, falling back to the clock's
/// nanoseconds if it is unavailable (jitter needs spread, not secrecy).
fn os_uniform() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .unwrap_or(0)
    });
    // 53 random bits → an exactly representable f64 in [0, 1).
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(u: f64) -> Backoff {
        Backoff::with_rng(Box::new(move || u))
    }

    fn caps_seen(b: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| b.delay_after(SessionEnd::Failed, Duration::ZERO).as_secs())
            .collect()
    }

    #[test]
    fn caps_double_to_five_minutes_and_stay() {
        // With u ≈ 1 the jittered delay equals the cap.
        let mut b = fixed(1.0);
        assert_eq!(
            caps_seen(&mut b, 12),
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
    }

    #[test]
    fn full_jitter_stays_within_zero_and_cap() {
        let mut b = Backoff::new();
        let mut saw_small = false;
        for i in 0..200u32 {
            let cap = Duration::from_secs(1u64 << i.min(9)).min(MAX_DELAY);
            let d = b.delay_after(SessionEnd::Failed, Duration::ZERO);
            assert!(d <= cap, "attempt {i}: {d:?} > {cap:?}");
            saw_small |= i > 10 && d < cap / 2;
        }
        assert!(
            saw_small,
            "jitter must spread over [0, cap], not hug the cap"
        );
        let mut zero = fixed(0.0);
        assert_eq!(
            zero.delay_after(SessionEnd::Failed, Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn not_reset_before_sixty_seconds_of_stability() {
        let mut b = fixed(1.0);
        caps_seen(&mut b, 4); // 1, 2, 4, 8
        // A session that lasted 59 s does not reset the schedule.
        assert_eq!(
            b.delay_after(SessionEnd::Failed, Duration::from_secs(59)),
            Duration::from_secs(16)
        );
        // One that lasted 60 s does.
        assert_eq!(
            b.delay_after(SessionEnd::Failed, Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.delay_after(SessionEnd::Failed, Duration::ZERO),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn server_close_adds_up_to_five_seconds() {
        let mut b = fixed(1.0);
        assert_eq!(
            b.delay_after(SessionEnd::ServerClosed, Duration::ZERO),
            Duration::from_secs(1 + 5)
        );
        let mut b = fixed(0.5);
        assert_eq!(
            b.delay_after(SessionEnd::ServerClosed, Duration::ZERO),
            Duration::from_millis(500 + 2500)
        );
    }

    #[test]
    fn retry_after_is_bounded() {
        let mut b = Backoff::new();
        let d = b.delay_after(SessionEnd::RetryAfter(u32::MAX), Duration::ZERO);
        assert!(
            d >= MAX_RETRY_AFTER && d <= MAX_RETRY_AFTER + RETRY_AFTER_SPREAD,
            "{d:?}"
        );
    }

    #[test]
    fn retry_after_waits_at_least_what_was_asked() {
        let mut b = fixed(0.0);
        assert_eq!(
            b.delay_after(SessionEnd::RetryAfter(30), Duration::ZERO),
            Duration::from_secs(30)
        );
        let mut b = fixed(1.0);
        // At most one second more, however many times it was refused.
        for _ in 0..20 {
            assert_eq!(
                b.delay_after(SessionEnd::RetryAfter(30), Duration::ZERO),
                Duration::from_secs(31)
            );
        }
        let mut b = Backoff::new();
        for _ in 0..50 {
            let d = b.delay_after(SessionEnd::RetryAfter(10), Duration::ZERO);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }
}
