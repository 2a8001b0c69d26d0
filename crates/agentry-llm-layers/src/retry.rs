//! [`Retry`]: retries retryable failures with exponential backoff and full
//! jitter, honouring a provider's Retry-After.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, LlmProfile, LlmProvider, Result};
use async_trait::async_trait;
use rand::Rng;

use crate::trace::llm_event;

/// How [`Retry`] retries: how many tries, and the backoff between them
/// (exponential, with jitter, capped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (default 3; 0 counts as 1).
    pub max_attempts: u32,
    /// Backoff cap of the first retry; it doubles on each further retry
    /// (default 500 ms).
    pub base_delay: Duration,
    /// Largest backoff cap (default 30 s).
    pub max_delay: Duration,
    /// Longest Retry-After this layer waits out (default 60 s); a provider
    /// asking for more gets its rate-limit error returned at once, so the
    /// engine can reschedule the node instead of holding a worker.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1-based): a uniformly
    /// random delay in `[0, min(max_delay, base_delay * 2^(retry-1))]`
    /// ("full jitter", so clients that failed together do not retry
    /// together).
    pub fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let cap = self
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::thread_rng().gen_range(0..=cap_nanos))
    }
}

/// Retries calls that failed with a retryable class (`Transient`, which
/// includes `Timeout`, and `RateLimited`); returns every other error at
/// once (`Permanent`, `InvalidInput`, `NotFound`, `BudgetExceeded`,
/// `Cancelled`). A rate-limited call waits `max(backoff, retry_after)`.
/// The error of the last try is returned, its class kept.
pub struct Retry {
    inner: Arc<dyn LlmProvider>,
    policy: RetryPolicy,
}

impl Retry {
    /// Wraps `inner`, retrying its retryable failures under `policy`.
    pub fn new(inner: Arc<dyn LlmProvider>, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }
}

#[async_trait]
impl LlmProvider for Retry {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn profile(&self) -> LlmProfile {
        self.inner.profile()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let max_attempts = self.policy.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let error = match self.inner.complete(request).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if !error.class().is_retryable() {
                return Err(error);
            }
            if attempt >= max_attempts {
                return Err(if attempt > 1 {
                    error.context(format!(
                        "LLM call to {} gave up after {attempt} attempts",
                        self.inner.name()
                    ))
                } else {
                    error
                });
            }
            let backoff = self.policy.backoff(attempt);
            let delay = match error.retry_after() {
                Some(asked) if asked > self.policy.max_retry_after => {
                    llm_event!(warn, self.inner.name(), request,
                        attempt, retry_after_ms = asked.as_millis() as u64,
                        max_retry_after_ms = self.policy.max_retry_after.as_millis() as u64,
                        %error, "Rate limited for longer than this layer waits; not retrying.");
                    return Err(error);
                }
                Some(asked) => backoff.max(asked),
                None => backoff,
            };
            llm_event!(warn, self.inner.name(), request,
                attempt, max_attempts, delay_ms = delay.as_millis() as u64,
                class = %error.class(), %error, "LLM call failed; retrying.");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, rate_limited, request, transient, FakeProvider};
    use agentry_core::{Error, ErrorClass};
    use tokio::time::Instant;

    fn retry(fake: &Arc<FakeProvider>) -> Retry {
        Retry::new(fake.clone(), RetryPolicy::default())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_until_one_succeeds() {
        let fake = FakeProvider::answering(
            "p",
            [
                Err(transient()),
                Err(Error::Timeout {
                    what: "LLM call to p".into(),
                    after: Duration::from_secs(1),
                }),
                ok("p", "third time"),
            ],
        );
        let response = retry(&fake).complete(&request("hi")).await.unwrap();
        assert_eq!(response.content, "third time");
        assert_eq!(fake.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_keeping_the_class() {
        let fake =
            FakeProvider::answering("p", [Err(transient()), Err(transient()), Err(transient())]);
        let error = retry(&fake).complete(&request("hi")).await.unwrap_err();
        assert_eq!(fake.calls(), 3);
        assert_eq!(error.class(), ErrorClass::Transient);
        assert!(error.to_string().contains("after 3 attempts"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_what_would_fail_again() {
        for error in [
            Error::permanent("malformed body"),
            Error::invalid("400 bad request"),
            Error::not_found("404 no such model"),
            Error::BudgetExceeded("over".into()),
            Error::Cancelled("stop".into()),
        ] {
            let fake = FakeProvider::answering("p", [Err(error.clone())]);
            let got = retry(&fake).complete(&request("hi")).await.unwrap_err();
            assert_eq!(got, error);
            assert_eq!(fake.calls(), 1, "{error} must not be retried");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_waits_at_least_retry_after() {
        let fake = FakeProvider::answering(
            "p",
            [
                Err(rate_limited(Some(Duration::from_secs(20)))),
                ok("p", "x"),
            ],
        );
        let started = Instant::now();
        retry(&fake).complete(&request("hi")).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(20));
        assert_eq!(fake.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_limit_is_returned_not_waited() {
        let fake = FakeProvider::answering(
            "p",
            [
                Err(rate_limited(Some(Duration::from_secs(3600)))),
                ok("p", "x"),
            ],
        );
        let started = Instant::now();
        let error = retry(&fake).complete(&request("hi")).await.unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3600)));
        assert_eq!(fake.calls(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            let cap = (policy.base_delay * 2u32.pow(retry.min(20) - 1)).min(policy.max_delay);
            assert!(policy.backoff(retry) <= cap, "retry {retry}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| policy.backoff(5)).collect();
        assert!(samples.len() > 1, "backoff must be jittered");
    }
}
