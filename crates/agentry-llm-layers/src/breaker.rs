//! [`CircuitBreaker`]: stops calling a provider that keeps failing, and
//! lets one probe call find out when it has recovered.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, Error, LlmProfile, LlmProvider, Result};
use async_trait::async_trait;
use tokio::time::Instant;

use crate::trace::llm_event;

/// When [`CircuitBreaker`] opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 5; 0 counts as 1).
    pub failure_threshold: u32,
    /// How long it stays open before one probe call is let through
    /// (default 30 s).
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// Where a [`CircuitBreaker`] stands, as `agentry llm check` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through, and failures are counted.
    Closed,
    /// Calls fail fast until `until` (tokio time).
    Open {
        /// When the next probe may go through.
        until: Instant,
    },
    /// The open period is over: the next call (or the one in flight) is the
    /// probe that decides between closed and open.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, failures: u32 },
    HalfOpen { probing: bool, failures: u32 },
}

/// What a call says about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Good,
    Bad,
    /// Says nothing (the request was wrong, a budget ran out, the caller
    /// cancelled).
    Unknown,
}

fn health(result: &Result<ChatResponse>) -> Health {
    match result {
        Ok(_) => Health::Good,
        Err(
            Error::Transient(_)
            | Error::Timeout { .. }
            | Error::RateLimited { .. }
            | Error::Permanent(_),
        ) => Health::Bad,
        Err(_) => Health::Unknown,
    }
}

/// Fails calls fast while its provider is known to be down.
///
/// Closed: calls go through; `failure_threshold` consecutive failures
/// (transient, timeout, rate-limited and permanent errors — a provider
/// answering garbage is broken too) open it. A success resets the count;
/// `InvalidInput`, `NotFound`, `BudgetExceeded` and `Cancelled` say nothing
/// about the provider and neither count nor reset. Open: calls fail with
/// [`Error::Transient`] without touching the provider, so the engine (or a
/// [`crate::Fallback`]) moves on. After `open_for`, exactly one probe call
/// goes through (half-open; concurrent calls keep failing fast): success
/// closes the breaker, failure opens it for another `open_for`.
///
/// Time is `tokio::time`, so tests drive it with `tokio::time::pause()`.
pub struct CircuitBreaker {
    inner: Arc<dyn LlmProvider>,
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// Wraps `inner`, closed with no failure counted.
    pub fn new(inner: Arc<dyn LlmProvider>, config: BreakerConfig) -> Self {
        CircuitBreaker {
            inner,
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// The current state; an open breaker whose time is up reads as
    /// half-open.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until, .. } if Instant::now() < until => BreakerState::Open { until },
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through (`Ok(is_probe)`) or fails it fast.
    fn admit(&self) -> Result<bool> {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until, failures } if now >= until => {
                *state = State::HalfOpen {
                    probing: true,
                    failures,
                };
                Ok(true)
            }
            State::HalfOpen {
                probing: false,
                failures,
            } => {
                *state = State::HalfOpen {
                    probing: true,
                    failures,
                };
                Ok(true)
            }
            State::Open { until, failures } => Err(Error::Transient(format!(
                "circuit breaker open for provider {} after {failures} consecutive failures; \
                 next probe in {}s",
                self.inner.name(),
                (until - now).as_secs_f64().ceil() as u64
            ))),
            State::HalfOpen {
                probing: true,
                failures,
            } => Err(Error::Transient(format!(
                "circuit breaker open for provider {} after {failures} consecutive failures; \
                 a probe call is in flight",
                self.inner.name()
            ))),
        }
    }

    /// Applies a call's outcome. Only the probe decides a half-open
    /// breaker; late results of calls admitted while closed do not touch an
    /// open one.
    fn settle(&self, probe: bool, health: Health, request: &ChatRequest) {
        let mut state = self.lock();
        let threshold = self.config.failure_threshold.max(1);
        let open = |failures| State::Open {
            until: Instant::now() + self.config.open_for,
            failures,
        };
        match (*state, probe, health) {
            (State::Closed { .. }, false, Health::Good) => {
                *state = State::Closed { failures: 0 };
            }
            (State::Closed { failures }, false, Health::Bad) => {
                let failures = failures + 1;
                if failures >= threshold {
                    llm_event!(
                        warn,
                        self.inner.name(),
                        request,
                        failures,
                        open_for_ms = self.config.open_for.as_millis() as u64,
                        "Circuit breaker opened."
                    );
                    *state = open(failures);
                } else {
                    *state = State::Closed { failures };
                }
            }
            (State::HalfOpen { .. }, true, Health::Good) => {
                llm_event!(
                    info,
                    self.inner.name(),
                    request,
                    "Circuit breaker closed: the probe call succeeded."
                );
                *state = State::Closed { failures: 0 };
            }
            (State::HalfOpen { failures, .. }, true, Health::Bad) => {
                let failures = failures + 1;
                llm_event!(
                    warn,
                    self.inner.name(),
                    request,
                    failures,
                    open_for_ms = self.config.open_for.as_millis() as u64,
                    "Circuit breaker reopened: the probe call failed."
                );
                *state = open(failures);
            }
            (State::HalfOpen { failures, .. }, true, Health::Unknown) => {
                // The probe proved nothing; the next call probes again.
                *state = State::HalfOpen {
                    probing: false,
                    failures,
                };
            }
            _ => {}
        }
    }
}

/// Frees the probe slot if the probe call is dropped before it finishes
/// (its caller was cancelled), so the breaker cannot stay half-open with a
/// probe that will never report.
struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.breaker.lock();
            if let State::HalfOpen {
                probing: true,
                failures,
            } = *state
            {
                *state = State::HalfOpen {
                    probing: false,
                    failures,
                };
            }
        }
    }
}

#[async_trait]
impl LlmProvider for CircuitBreaker {
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
        let probe = match self.admit() {
            Ok(probe) => probe,
            Err(error) => {
                llm_event!(debug, self.inner.name(), request, %error, "Circuit breaker failed a call fast.");
                return Err(error);
            }
        };
        let mut guard = ProbeGuard {
            breaker: self,
            armed: probe,
        };
        let result = self.inner.complete(request).await;
        guard.armed = false;
        self.settle(probe, health(&result), request);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, request, transient, FakeProvider};
    use agentry_core::ErrorClass;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn breaker(fake: &Arc<FakeProvider>) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(
            fake.clone(),
            BreakerConfig {
                failure_threshold: 3,
                open_for: OPEN_FOR,
            },
        ))
    }

    async fn fail_times(breaker: &CircuitBreaker, fake: &FakeProvider, n: usize) {
        for _ in 0..n {
            fake.push(Err(transient()));
            breaker.complete(&request("hi")).await.unwrap_err();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let fake = FakeProvider::new("openai");
        let breaker = breaker(&fake);
        fail_times(&breaker, &fake, 2).await;
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail_times(&breaker, &fake, 1).await;
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));

        let error = breaker.complete(&request("hi")).await.unwrap_err();
        assert_eq!(
            fake.calls(),
            3,
            "an open breaker must not call the provider"
        );
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(
            error.to_string(),
            "transient failure: circuit breaker open for provider openai \
             after 3 consecutive failures; next probe in 30s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let fake = FakeProvider::new("p");
        let breaker = breaker(&fake);
        fail_times(&breaker, &fake, 2).await;
        breaker.complete(&request("hi")).await.unwrap();
        fail_times(&breaker, &fake, 2).await;
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_about_the_request_do_not_count() {
        let fake = FakeProvider::new("p");
        let breaker = breaker(&fake);
        for error in [
            Error::invalid("400"),
            Error::BudgetExceeded("over".into()),
            Error::Cancelled("stop".into()),
            Error::invalid("400"),
        ] {
            fake.push(Err(error));
            breaker.complete(&request("hi")).await.unwrap_err();
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        // Nor do they reset the run of real failures around them.
        fail_times(&breaker, &fake, 2).await;
        fake.push(Err(Error::invalid("400")));
        breaker.complete(&request("hi")).await.unwrap_err();
        fake.push(Err(Error::permanent("garbage body")));
        breaker.complete(&request("hi")).await.unwrap_err();
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through_and_success_closes() {
        let fake = FakeProvider::with("p", Duration::from_secs(5), []);
        let breaker = breaker(&fake);
        fail_times(&breaker, &fake, 3).await;
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);

        let probe = tokio::spawn({
            let breaker = breaker.clone();
            async move { breaker.complete(&request("probe")).await }
        });
        for _ in 0..100 {
            if fake.calls() == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(fake.calls(), 4, "the probe reached the provider");
        let error = breaker.complete(&request("hi")).await.unwrap_err();
        assert!(
            error.to_string().contains("probe call is in flight"),
            "{error}"
        );
        assert_eq!(fake.calls(), 4, "only the probe reaches the provider");

        probe.await.unwrap().unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.complete(&request("hi")).await.unwrap();
        assert_eq!(fake.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_failure_reopens_for_another_period() {
        let fake = FakeProvider::new("p");
        let breaker = breaker(&fake);
        fail_times(&breaker, &fake, 3).await;
        tokio::time::advance(OPEN_FOR).await;
        fail_times(&breaker, &fake, 1).await;
        assert_eq!(fake.calls(), 4);
        let BreakerState::Open { until } = breaker.state() else {
            panic!("a failed probe must reopen the breaker");
        };
        assert_eq!(until - Instant::now(), OPEN_FOR);
        breaker.complete(&request("hi")).await.unwrap_err();
        assert_eq!(fake.calls(), 4);

        tokio::time::advance(OPEN_FOR).await;
        fake.push(ok("p", "back"));
        assert_eq!(
            breaker.complete(&request("hi")).await.unwrap().content,
            "back"
        );
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_the_probe_slot() {
        let fake = FakeProvider::with("p", Duration::from_secs(5), []);
        let breaker = breaker(&fake);
        fail_times(&breaker, &fake, 3).await;
        tokio::time::advance(OPEN_FOR).await;
        let cancelled =
            tokio::time::timeout(Duration::from_secs(1), breaker.complete(&request("probe"))).await;
        assert!(cancelled.is_err());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.complete(&request("probe again")).await.unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
