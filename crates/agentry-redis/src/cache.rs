//! The shared [`LlmCache`]: responses as JSON strings with a Redis expiry.

use std::time::Duration;

use agentry_core::{ChatResponse, LlmCache, Result};
use async_trait::async_trait;
use tracing::warn;

use crate::RedisClient;

/// The key space of the cache: `<prefix>llm:<key>`.
pub const LLM_CACHE_SPACE: &str = "llm";

/// The longest expiry written (about 146 million years): longer TTLs are
/// cut to it, since Redis refuses an expiry past the end of its clock.
const MAX_TTL_MS: u64 = 1 << 62;

/// LLM responses in Redis, shared by every worker connected to the same
/// server and prefix.
///
/// Same semantics as the store-backed caches: `get` returns only unexpired
/// entries (Redis drops them on expiry), `put` overwrites. A value this
/// build cannot decode (written by another version, or damaged) is a miss:
/// it is logged at warn and deleted, so it is fetched fresh and stored
/// again.
#[derive(Debug, Clone)]
pub struct RedisLlmCache {
    client: RedisClient,
}

impl RedisLlmCache {
    /// A cache on `client`'s connection.
    pub fn new(client: RedisClient) -> Self {
        RedisLlmCache { client }
    }
}

#[async_trait]
impl LlmCache for RedisLlmCache {
    async fn get(&self, key: &str) -> Result<Option<ChatResponse>> {
        let redis_key = self.client.key(LLM_CACHE_SPACE, key);
        let value: Option<Vec<u8>> = self
            .client
            .query("GET (LLM cache)", redis::cmd("GET").arg(&redis_key))
            .await?;
        let Some(value) = value else { return Ok(None) };
        match serde_json::from_slice(&value) {
            Ok(response) => Ok(Some(response)),
            Err(error) => {
                warn!(key = %redis_key, %error, "Undecodable LLM cache entry; treating it as a miss and deleting it.");
                // Best effort: a racing put may have replaced it with a good
                // value, which costs one more miss at worst.
                let _: i64 = self
                    .client
                    .query("DEL (LLM cache)", redis::cmd("DEL").arg(&redis_key))
                    .await?;
                Ok(None)
            }
        }
    }

    /// A zero `ttl` stores nothing and removes what `key` held (an entry
    /// that expires at once); a TTL below a millisecond is rounded up to
    /// one.
    async fn put(&self, key: &str, response: &ChatResponse, ttl: Duration) -> Result<()> {
        let redis_key = self.client.key(LLM_CACHE_SPACE, key);
        if ttl.is_zero() {
            let _: i64 = self
                .client
                .query("DEL (LLM cache)", redis::cmd("DEL").arg(&redis_key))
                .await?;
            return Ok(());
        }
        let json = serde_json::to_vec(response)?;
        let ttl_ms = u64::try_from(ttl.as_millis())
            .unwrap_or(MAX_TTL_MS)
            .clamp(1, MAX_TTL_MS);
        let () = self
            .client
            .query(
                "SET (LLM cache)",
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(json)
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(())
    }
}
