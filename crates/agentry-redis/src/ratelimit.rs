//! The shared [`RateLimiter`]: token buckets in Redis, decided by one Lua
//! script per request (a take or a look).

use std::time::Duration;

use agentry_core::{RateDecision, RateLimit, RateLimiter, Result};
use async_trait::async_trait;
use redis::Script;

use crate::RedisClient;

/// The key space of the buckets: `<prefix>rl:<key>`.
pub const RATE_LIMIT_SPACE: &str = "rl";

/// Token buckets in Redis, shared by every gateway replica connected to the
/// same server and prefix.
///
/// Same semantics as the gateway's in-process limiter: a bucket holds up
/// to `burst` tokens, refills at `rate_per_s`, starts full; a request
/// takes one token or is refused with the time until one is there; a
/// check looks without taking. Each decision is one `EVALSHA` of the same
/// script, which refills and takes (or only looks) atomically on the
/// server's clock, so replicas never over-grant and never disagree about
/// time.
#[derive(Debug, Clone)]
pub struct RedisRateLimiter {
    client: RedisClient,
    script: Script,
}

impl RedisRateLimiter {
    /// A limiter on `client`'s connection.
    pub fn new(client: RedisClient) -> Self {
        RedisRateLimiter {
            client,
            script: Script::new(include_str!("token_bucket.lua")),
        }
    }
}

impl RedisRateLimiter {
    /// One run of the script: takes a token when `take`, else only looks.
    async fn decide(&self, key: &str, limit: RateLimit, take: bool) -> Result<RateDecision> {
        limit.validate()?;
        let mut invocation = self.script.key(self.client.key(RATE_LIMIT_SPACE, key));
        invocation
            .arg(limit.rate_per_s)
            .arg(limit.burst)
            .arg(u8::from(take));
        let (allowed, remaining, wait_us): (i64, i64, i64) = self
            .client
            .invoke("token bucket script", &invocation)
            .await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0))
                .unwrap_or(limit.burst)
                .min(limit.burst),
            retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, key: &str, limit: RateLimit) -> Result<RateDecision> {
        self.decide(key, limit, true).await
    }

    async fn check(&self, key: &str, limit: RateLimit) -> Result<RateDecision> {
        self.decide(key, limit, false).await
    }
}
