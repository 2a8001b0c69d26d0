//! Layers around any [`LlmProvider`]: [`Retry`], [`CircuitBreaker`],
//! [`Timeout`], [`Fallback`], [`Cached`] (with [`MemoryCache`]), and
//! [`Recorder`] / [`ReplayProvider`] for record and replay.
//!
//! Key design decision: every layer is itself an [`LlmProvider`] wrapping an
//! `Arc<dyn LlmProvider>`, so layers stack in any order and the agents never
//! know which ones are there — they see one provider. Order is therefore a
//! choice of the wiring code, and it matters:
//!
//! - [`resilient`] builds the usual per-provider stack,
//!   `CircuitBreaker(Retry(Timeout(raw)))`: the timeout bounds each attempt,
//!   the retry absorbs short hiccups, and the breaker counts a call whose
//!   retries all failed as one failure and then fails fast.
//! - A [`Fallback`] goes above several such stacks, so an open breaker
//!   hands the call to the next provider at once.
//! - [`Cached`] goes above one provider's stack, under the [`Fallback`]
//!   (the CLI's order): a hit costs no breaker slot and no retry, and its
//!   key names the provider and model, so each provider of a chain has its
//!   own entries. [`Recorder`] goes on top of everything and records what
//!   the workflow saw.
//! - [`ReplayProvider`] replaces the whole stack in a replayed run.
//!
//! Every layer reports the inner provider's `name()`, `model()` and
//! `profile()` (a [`Fallback`] has its own name and its first provider's
//! model and profile), so a decision that reads the profile (compact
//! prompts for a small model) holds however the stack is built. Every
//! layer leaves the response's `provider` and `model` as the answering
//! provider set them. Layers log with `tracing`, with the request's
//! provenance as fields and never message contents.

mod breaker;
mod cache;
mod cassette;
mod fallback;
mod record;
mod replay;
mod request_key;
mod retry;
mod timeout;
mod trace;

#[cfg(test)]
mod fake_provider;

use std::sync::Arc;
use std::time::Duration;

use agentry_core::LlmProvider;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use cache::{Cached, MemoryCache};
pub use cassette::{CassetteEntry, CASSETTE_FORMAT};
pub use fallback::Fallback;
pub use record::{Recorder, DEFAULT_MAX_ENTRY_BYTES};
pub use replay::{ReplayProvider, REPLAY_PROVIDER_NAME};
pub use request_key::{cache_key, normalize, replay_key};
pub use retry::{Retry, RetryPolicy};
pub use timeout::Timeout;

/// Settings of the [`resilient`] stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerConfig {
    /// Retries of one call (default: [`RetryPolicy::default`]).
    pub retry: RetryPolicy,
    /// When the breaker opens (default: [`BreakerConfig::default`]).
    pub breaker: BreakerConfig,
    /// Limit of each attempt, not of the whole call (default 120 s).
    pub timeout: Duration,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Wraps a raw provider in `CircuitBreaker(Retry(Timeout(raw)))`.
///
/// The timeout applies to each attempt, inside the retry; the retry absorbs
/// transient and rate-limit failures; the breaker sees only what the retry
/// gave up on, so one call whose attempts all failed counts as one failure,
/// and once open it fails calls fast (class transient) without waiting out
/// retries. The stack keeps `raw`'s name and model. To read the breaker's
/// state (`agentry llm check`), build it with [`resilient_breaker`].
pub fn resilient(raw: Arc<dyn LlmProvider>, config: &LayerConfig) -> Arc<dyn LlmProvider> {
    resilient_breaker(raw, config)
}

/// The same stack as [`resilient`], typed as its outermost layer so the
/// caller can keep a handle for [`CircuitBreaker::state`] and still use it
/// as an `Arc<dyn LlmProvider>`.
pub fn resilient_breaker(raw: Arc<dyn LlmProvider>, config: &LayerConfig) -> Arc<CircuitBreaker> {
    let timed: Arc<dyn LlmProvider> = Arc::new(Timeout::new(raw, config.timeout));
    let retried: Arc<dyn LlmProvider> = Arc::new(Retry::new(timed, config.retry));
    Arc::new(CircuitBreaker::new(retried, config.breaker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, request, FakeProvider};
    use agentry_core::{ErrorClass, LlmProfile};

    #[tokio::test(start_paused = true)]
    async fn resilient_times_out_each_attempt_and_breaks_once_per_call() {
        let slow = FakeProvider::with("slow", Duration::from_secs(10), []);
        let config = LayerConfig {
            timeout: Duration::from_secs(1),
            breaker: BreakerConfig {
                failure_threshold: 2,
                open_for: Duration::from_secs(30),
            },
            ..LayerConfig::default()
        };
        let breaker = resilient_breaker(slow.clone(), &config);
        let stack: Arc<dyn LlmProvider> = breaker.clone();
        assert_eq!((stack.name(), stack.model()), ("slow", "slow-model"));

        let error = stack.complete(&request("hi")).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient);
        assert!(error.to_string().contains("after 3 attempts"), "{error}");
        assert_eq!(slow.calls(), 3, "one timed-out call per attempt");

        stack.complete(&request("hi")).await.unwrap_err();
        assert_eq!(slow.calls(), 6);
        // Two calls failed: the breaker (threshold 2) is open now.
        let error = stack.complete(&request("hi")).await.unwrap_err();
        assert!(
            error.to_string().contains("circuit breaker open"),
            "{error}"
        );
        assert_eq!(slow.calls(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn layers_stack_in_any_order() {
        let openai = FakeProvider::answering("openai", [Err(agentry_core::Error::transient("x"))]);
        let claude = FakeProvider::answering("claude", [ok("claude", "hello")]);
        let cache = Arc::new(MemoryCache::new());
        let no_retry = LayerConfig {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..LayerConfig::default()
        };
        let chain = Fallback::new(
            "chain",
            vec![
                resilient(openai.clone(), &no_retry),
                resilient(claude.clone(), &no_retry),
            ],
        );
        let stack = Cached::new(Arc::new(chain), cache, Duration::from_secs(60));
        let first = stack.complete(&request("hi")).await.unwrap();
        assert_eq!(
            (first.provider.as_str(), first.usage.cached),
            ("claude", false)
        );
        let second = stack.complete(&request("hi")).await.unwrap();
        assert_eq!(
            (second.provider.as_str(), second.usage.cached),
            ("claude", true)
        );
        assert_eq!((openai.calls(), claude.calls()), (1, 1));
    }

    #[test]
    fn every_layer_reports_the_profile_of_the_model_it_wraps() {
        let small: Arc<dyn LlmProvider> = FakeProvider::of_profile("local", LlmProfile::Small);
        let cassette = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let cached = |inner| -> Arc<dyn LlmProvider> {
            Arc::new(Cached::new(inner, Arc::new(MemoryCache::new()), ttl))
        };
        let stacks: Vec<(&str, Arc<dyn LlmProvider>)> = vec![
            ("timeout", Arc::new(Timeout::new(small.clone(), ttl))),
            (
                "retry",
                Arc::new(Retry::new(small.clone(), RetryPolicy::default())),
            ),
            (
                "breaker",
                Arc::new(CircuitBreaker::new(small.clone(), BreakerConfig::default())),
            ),
            ("cached", cached(small.clone())),
            (
                "resilient",
                resilient(small.clone(), &LayerConfig::default()),
            ),
            (
                "recorder over the cache over the timeout (the CLI's local stack)",
                Arc::new(
                    Recorder::create(
                        cached(Arc::new(Timeout::new(small.clone(), ttl))),
                        cassette.path().join("run.jsonl"),
                    )
                    .unwrap(),
                ),
            ),
            (
                "a fallback chain led by it",
                Arc::new(Fallback::new(
                    "chain",
                    vec![small.clone(), FakeProvider::new("openai")],
                )),
            ),
        ];
        for (what, stack) in stacks {
            assert_eq!(stack.profile(), LlmProfile::Small, "{what}");
            assert!(stack.profile().compact_prompts(), "{what}");
        }
    }

    #[test]
    fn a_fallback_chain_has_the_profile_of_its_first_provider() {
        let small: Arc<dyn LlmProvider> = FakeProvider::of_profile("local", LlmProfile::Small);
        let hosted: Arc<dyn LlmProvider> = FakeProvider::new("openai");
        let led_by_hosted = Fallback::new("openai", vec![hosted.clone(), small.clone()]);
        assert_eq!(led_by_hosted.profile(), LlmProfile::Standard);
        let led_by_small = Fallback::new("local", vec![small, hosted]);
        assert_eq!(led_by_small.profile(), LlmProfile::Small);
        assert_eq!(
            Fallback::new("empty", Vec::new()).profile(),
            LlmProfile::Standard
        );
    }

    #[test]
    fn a_replayed_run_has_the_default_profile() {
        let cassette = tempfile::NamedTempFile::new().unwrap();
        let replay = ReplayProvider::open(cassette.path()).unwrap();
        assert_eq!(replay.profile(), LlmProfile::Standard);
    }
}
