//! The in-process [`RateLimiter`]: token buckets in a sharded map, the
//! embedded mode's (and a distributed deployment's without Redis).
//!
//! Buckets that are full again are dropped on the next sweep, so the map
//! holds only callers seen within a refill period. Gateway replicas share
//! buckets through the Redis limiter instead (same port, same conformance
//! suite, run against this one from `agentry-store-conformance`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentry_core::{RateDecision, RateLimit, RateLimiter, Result};
use async_trait::async_trait;
use parking_lot::Mutex;

const SHARDS: usize = 16;
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets in this process, by key, in 16 shards: a bucket starts
/// full at the limit's `burst` and refills at its `rate_per_s`.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    shards: Vec<Mutex<(HashMap<String, Bucket>, u32)>>,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        MemoryRateLimiter {
            shards: (0..SHARDS)
                .map(|_| Mutex::new((HashMap::new(), 0)))
                .collect(),
        }
    }
}

impl MemoryRateLimiter {
    /// A limiter with no bucket: every caller starts with a full one.
    pub fn new() -> Self {
        Self::default()
    }

    /// The decision of [`RateLimiter::acquire`] for `key` at `now` (the
    /// clock is a parameter for tests).
    pub fn acquire_at(&self, key: &str, limit: RateLimit, now: Instant) -> RateDecision {
        self.decide_at(key, limit, now, true)
    }

    /// The decision of [`RateLimiter::check`] for `key` at `now`: nothing
    /// is taken, and a bucket never used is not created.
    pub fn check_at(&self, key: &str, limit: RateLimit, now: Instant) -> RateDecision {
        self.decide_at(key, limit, now, false)
    }

    /// One path for both: refill by the time elapsed, then take a token
    /// when `take` and one is there.
    fn decide_at(&self, key: &str, limit: RateLimit, now: Instant, take: bool) -> RateDecision {
        let shard = &self.shards[shard_of(key)];
        let mut guard = shard.lock();
        let (buckets, ops) = &mut *guard;
        let burst = f64::from(limit.burst);
        let tokens = match buckets.get(key) {
            Some(bucket) => {
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                (bucket.tokens + elapsed * limit.rate_per_s).min(burst)
            }
            None => burst,
        };
        if tokens < 1.0 {
            // A refusal writes nothing: the bucket refills to the same
            // value at the next call.
            let wait = (1.0 - tokens) / limit.rate_per_s;
            return RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_secs_f64(wait),
            };
        }
        if !take {
            return RateDecision {
                allowed: true,
                remaining: tokens.floor() as u32,
                retry_after: Duration::ZERO,
            };
        }
        *ops += 1;
        if *ops >= SWEEP_EVERY {
            *ops = 0;
            let full_after = Duration::from_secs_f64(burst / limit.rate_per_s);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        let left = tokens - 1.0;
        buckets.insert(
            key.to_string(),
            Bucket {
                tokens: left,
                at: now,
            },
        );
        RateDecision {
            allowed: true,
            remaining: left.floor() as u32,
            retry_after: Duration::ZERO,
        }
    }
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap and stable; the keys are ids, not attacker-chosen text
    // that could pile onto one shard in a way that matters.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn acquire(&self, key: &str, limit: RateLimit) -> Result<RateDecision> {
        limit.validate()?;
        Ok(self.acquire_at(key, limit, Instant::now()))
    }

    async fn check(&self, key: &str, limit: RateLimit) -> Result<RateDecision> {
        limit.validate()?;
        Ok(self.check_at(key, limit, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        rate_per_s: 2.0,
        burst: 3,
    };

    #[test]
    fn burst_then_refill_at_the_rate() {
        let l = MemoryRateLimiter::new();
        let t0 = Instant::now();
        for left in [2, 1, 0] {
            let d = l.acquire_at("k", LIMIT, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = l.acquire_at("k", LIMIT, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.acquire_at("k", LIMIT, t1).allowed);
        assert!(!l.acquire_at("k", LIMIT, t1).allowed);
    }

    #[test]
    fn a_check_takes_nothing_and_says_what_acquire_would() {
        let l = MemoryRateLimiter::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check_at("k", LIMIT, t0).remaining, 3);
        }
        assert!(
            l.shards.iter().all(|s| s.lock().0.is_empty()),
            "no bucket made"
        );
        for left in [2, 1, 0] {
            assert!(l.acquire_at("k", LIMIT, t0).allowed);
            assert_eq!(l.check_at("k", LIMIT, t0).remaining, left);
        }
        let refused = l.check_at("k", LIMIT, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // Half a second later the token that came back is still there
        // after any number of checks.
        let t1 = t0 + Duration::from_millis(500);
        for _ in 0..5 {
            assert!(l.check_at("k", LIMIT, t1).allowed);
        }
        assert!(l.acquire_at("k", LIMIT, t1).allowed);
        assert!(!l.check_at("k", LIMIT, t1).allowed);
    }

    #[test]
    fn callers_have_their_own_buckets() {
        let l = MemoryRateLimiter::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire_at("a", LIMIT, t0).allowed);
        }
        assert!(!l.acquire_at("a", LIMIT, t0).allowed);
        assert!(l.acquire_at("b", LIMIT, t0).allowed);
    }

    #[test]
    fn a_long_quiet_period_refills_only_to_the_burst() {
        let l = MemoryRateLimiter::new();
        let t0 = Instant::now();
        assert!(l.acquire_at("k", LIMIT, t0).allowed);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.acquire_at("k", LIMIT, later).allowed);
        }
        assert!(!l.acquire_at("k", LIMIT, later).allowed);
    }
}
