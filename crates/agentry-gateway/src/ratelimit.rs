//! The in-process [`RateLimiter`]: token buckets in a sharded map.
//!
//! Buckets that are full again are dropped on the next sweep, so the map
//! holds only callers seen within a refill period. Gateway replicas share
//! buckets through the Redis limiter instead (same port).

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

/// Token buckets in this process.
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
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The decision for `key` at `now` (the clock is a parameter for tests).
    pub fn acquire_at(&self, key: &str, limit: RateLimit, now: Instant) -> RateDecision {
        let shard = &self.shards[shard_of(key)];
        let mut guard = shard.lock();
        let (buckets, ops) = &mut *guard;
        *ops += 1;
        if *ops >= SWEEP_EVERY {
            *ops = 0;
            let full_after = Duration::from_secs_f64(f64::from(limit.burst) / limit.rate_per_s);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        let burst = f64::from(limit.burst);
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.rate_per_s).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            RateDecision {
                allowed: true,
                remaining: bucket.tokens.floor() as u32,
                retry_after: Duration::ZERO,
            }
        } else {
            let wait = (1.0 - bucket.tokens) / limit.rate_per_s;
            RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_secs_f64(wait),
            }
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
        Ok(self.acquire_at(key, limit, Instant::now()))
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
