//! Per-key, per-minute rate limiting with GCRA (the generic cell rate algorithm): the decision
//! itself, and the in-memory limiter of the sled store (time from an injectable [`Clock`]).
//! May not touch a database.
//!
//! A key allowed `N` per minute has emission interval `T = 60 s / N` and may burst up to `N`.
//! The only state per key is its theoretical arrival time `TAT`: a request at `t` is allowed
//! iff `max(TAT, t) + T − t ≤ N·T`, and then `TAT := max(TAT, t) + T`. The bucket is full
//! again at `TAT`, so `reset_after = TAT − t`. The sled store keeps `TAT` in memory (lost on
//! restart, which errs towards allowing: a fresh full budget); the PostgreSQL store keeps it
//! in the key's row and makes the same decision in SQL with the database's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::clock::{Clock, MonotonicClock};

use super::token::KeyId;

/// Entries beyond this many trigger dropping the ones whose bucket is full again.
const PRUNE_ABOVE: usize = 10_000;

/// What the API layer reports to a client (e.g. as `RateLimit-*` / `Retry-After` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Whether this request may proceed (for a peek: whether one more would).
    pub allowed: bool,
    /// Requests per minute for this key.
    pub limit: u32,
    /// Requests still allowed right now, after this one.
    pub remaining: u32,
    /// Until the budget is full (`limit` remaining) again.
    pub reset_after: Duration,
    /// When `!allowed`: how long until one more request would be allowed.
    pub retry_after: Option<Duration>,
}

pub struct RateLimiter {
    clock: Arc<dyn Clock>,
    tats: Mutex<HashMap<KeyId, Duration>>,
}

impl RateLimiter {
    pub fn new(clock: Arc<dyn Clock>) -> RateLimiter {
        RateLimiter {
            clock,
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// Consumes one unit of `key`'s budget if it has one.
    pub fn check(&self, key: &KeyId, per_minute: u32) -> RateLimitStatus {
        let now = self.clock.now();
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let (status, new_tat) = decide(per_minute, now, tats.get(key).copied());
        if let Some(new_tat) = new_tat {
            if tats.len() > PRUNE_ABOVE {
                tats.retain(|_, t| *t > now);
            }
            tats.insert(key.clone(), new_tat);
        }
        status
    }

    /// The current budget, without consuming any.
    pub fn peek(&self, key: &KeyId, per_minute: u32) -> RateLimitStatus {
        let now = self.clock.now();
        let tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        peek(per_minute, now, tats.get(key).copied())
    }
}

/// One GCRA step at `now` for a key whose theoretical arrival time is `tat` (`None`: no
/// state, a full budget): the status to report and, when allowed, the new `TAT` to store.
/// Pure, so that the PostgreSQL store's SQL (which makes the same decision with the
/// database's clock, in integer nanoseconds) and this limiter report identical statuses.
pub(crate) fn decide(
    per_minute: u32,
    now: Duration,
    tat: Option<Duration>,
) -> (RateLimitStatus, Option<Duration>) {
    let (interval, window) = shape(per_minute);
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    if new_tat > now + window {
        let denied = RateLimitStatus {
            allowed: false,
            limit: per_minute,
            remaining: 0,
            reset_after: tat - now,
            retry_after: Some(new_tat - window - now),
        };
        return (denied, None);
    }
    let allowed = RateLimitStatus {
        allowed: true,
        limit: per_minute,
        remaining: remaining(now, new_tat, interval, window),
        reset_after: new_tat - now,
        retry_after: None,
    };
    (allowed, Some(new_tat))
}

/// The budget at `now` for a key whose theoretical arrival time is `tat`, consuming none.
pub(crate) fn peek(per_minute: u32, now: Duration, tat: Option<Duration>) -> RateLimitStatus {
    let (interval, window) = shape(per_minute);
    let tat = tat.unwrap_or(now).max(now);
    let remaining = remaining(now, tat, interval, window);
    RateLimitStatus {
        allowed: remaining > 0,
        limit: per_minute,
        remaining,
        reset_after: tat - now,
        retry_after: (remaining == 0).then(|| tat + interval - window - now),
    }
}

/// Emission interval and burst window (`N·T`, within a few ns of 60 s) for `per_minute`.
fn shape(per_minute: u32) -> (Duration, Duration) {
    let n = per_minute.max(1);
    let interval = Duration::from_secs(60) / n;
    (interval, interval * n)
}

fn remaining(now: Duration, tat: Duration, interval: Duration, window: Duration) -> u32 {
    let headroom = (now + window).saturating_sub(tat);
    u32::try_from(headroom.as_nanos() / interval.as_nanos()).unwrap_or(u32::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter() -> (Arc<ManualClock>, RateLimiter) {
        let clock = Arc::new(ManualClock::default());
        (clock.clone(), RateLimiter::new(clock))
    }

    fn id(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn allows_a_full_burst_then_denies_with_retry_after() {
        let (_clock, rl) = limiter();
        let k = id("sk_test_AAAAAAAA");
        for i in 1..=60 {
            let s = rl.check(&k, 60);
            assert!(s.allowed, "request {i}");
            assert_eq!(s.remaining, 60 - i);
            assert_eq!(s.reset_after, SEC * i);
            assert_eq!(s.retry_after, None);
        }
        let denied = rl.check(&k, 60);
        assert_eq!(
            denied,
            RateLimitStatus {
                allowed: false,
                limit: 60,
                remaining: 0,
                reset_after: SEC * 60,
                retry_after: Some(SEC),
            }
        );
        // A denied request does not consume budget.
        assert_eq!(rl.check(&k, 60).reset_after, SEC * 60);
    }

    #[test]
    fn budget_refills_at_the_emission_interval() {
        let (clock, rl) = limiter();
        let k = id("sk_test_AAAAAAAA");
        for _ in 0..60 {
            assert!(rl.check(&k, 60).allowed);
        }
        clock.advance(SEC / 2);
        let s = rl.check(&k, 60);
        assert!(!s.allowed);
        assert_eq!(s.retry_after, Some(SEC / 2));
        clock.advance(SEC / 2);
        let s = rl.check(&k, 60);
        assert!(s.allowed);
        assert_eq!(s.remaining, 0);
        clock.advance(SEC * 10);
        assert_eq!(rl.peek(&k, 60).remaining, 10);
        clock.advance(SEC * 60);
        let full = rl.peek(&k, 60);
        assert_eq!(full.remaining, 60);
        assert_eq!(full.reset_after, Duration::ZERO);
    }

    #[test]
    fn peek_does_not_consume() {
        let (_clock, rl) = limiter();
        let k = id("sk_test_AAAAAAAA");
        let fresh = rl.peek(&k, 5);
        assert_eq!(
            fresh,
            RateLimitStatus {
                allowed: true,
                limit: 5,
                remaining: 5,
                reset_after: Duration::ZERO,
                retry_after: None,
            }
        );
        for _ in 0..5 {
            assert!(rl.check(&k, 5).allowed);
            assert_eq!(rl.peek(&k, 5), rl.peek(&k, 5));
        }
        let empty = rl.peek(&k, 5);
        assert!(!empty.allowed);
        assert_eq!(empty.remaining, 0);
        assert_eq!(empty.reset_after, SEC * 60);
        assert_eq!(empty.retry_after, Some(SEC * 12));
        assert!(!rl.check(&k, 5).allowed);
    }

    #[test]
    fn keys_are_limited_independently() {
        let (_clock, rl) = limiter();
        let a = id("sk_test_AAAAAAAA");
        let b = id("sk_prod_AAAAAAAA");
        assert!(rl.check(&a, 1).allowed);
        assert!(!rl.check(&a, 1).allowed);
        assert!(rl.check(&b, 1).allowed);
    }

    #[test]
    fn uneven_limits_still_allow_exactly_n_per_minute() {
        let (clock, rl) = limiter();
        let k = id("sk_test_AAAAAAAA");
        let allowed = (0..100).filter(|_| rl.check(&k, 7).allowed).count();
        assert_eq!(allowed, 7);
        clock.advance(SEC * 60);
        let allowed = (0..100).filter(|_| rl.check(&k, 7).allowed).count();
        assert_eq!(allowed, 7);
    }

    #[test]
    fn steady_traffic_at_the_limit_is_never_denied() {
        let (clock, rl) = limiter();
        let k = id("sk_test_AAAAAAAA");
        for _ in 0..600 {
            assert!(rl.check(&k, 120).allowed);
            clock.advance(SEC / 2);
        }
    }
}
