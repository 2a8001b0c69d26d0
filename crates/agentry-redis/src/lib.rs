//! Redis adapters of what gateway replicas and workers must share when
//! Agentry is scaled out: the rate-limit buckets ([`RedisRateLimiter`],
//! the [`agentry_core::RateLimiter`] port) and the LLM response cache
//! ([`RedisLlmCache`], the [`agentry_core::LlmCache`] port), both on one
//! [`RedisClient`] (an auto-reconnecting multiplexed connection).
//!
//! Key layout, under the configured prefix (default `agentry:`):
//!
//! - `<prefix>rl:<key>`: a token bucket, a hash `{tokens, at}` (`at` in
//!   server microseconds), expiring when it would be full again.
//! - `<prefix>llm:<key>`: a cached response, the JSON of a
//!   [`agentry_core::ChatResponse`], expiring after its TTL.
//!
//! Key design decision: a rate-limit decision is ONE Lua script
//! (`EVALSHA`) that reads the bucket, refills it by the time elapsed on
//! the **server's** clock (`TIME`), takes a token and sets the expiry,
//! atomically; a check (`RateLimiter::check`) is the same script told not
//! to take, so it writes nothing and decides exactly as a take would. Several replicas thus share one bucket without a lock,
//! without a read-modify-write race (a script runs alone on the server, so
//! concurrent requests never get more than `burst`), and without trusting
//! their own clocks to agree; one round trip per request. The price is a
//! script (cached by the server, loaded again after a restart by the
//! client on `NOSCRIPT`) and a single-key layout, which is also what Redis
//! Cluster needs.
//!
//! Every command runs under [`RedisOptions::timeout`]; a timeout or a
//! connection failure is transient (the caller may retry), a protocol or
//! type error permanent. The URL's password never reaches a message or a
//! log line ([`redact_url`]).

mod cache;
mod client;
mod options;
mod ratelimit;

pub use cache::{RedisLlmCache, LLM_CACHE_SPACE};
pub use client::RedisClient;
pub use options::{redact_url, RedisOptions, DEFAULT_PREFIX};
pub use ratelimit::{RedisRateLimiter, RATE_LIMIT_SPACE};
