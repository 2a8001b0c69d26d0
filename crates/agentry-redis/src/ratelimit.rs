//! The shared [`RateLimiter`]: token buckets in Redis, decided by one Lua
//! script per request.

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
/// takes one token or is refused with the time until one is there. Each
/// decision is one `EVALSHA` of a script that refills and takes
/// atomically on the server's clock, so replicas never over-grant and
/// never disagree about time.
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

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, key: &str, limit: RateLimit) -> Result<RateDecision> {
        limit.validate()?;
        let mut invocation = self.script.key(self.client.key(RATE_LIMIT_SPACE, key));
        invocation.arg(limit.rate_per_s).arg(limit.burst);
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
