//! [`Fallback`]: a chain of providers tried in order.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, Error, ErrorClass, LlmProfile, LlmProvider, Result};
use async_trait::async_trait;

use crate::trace::llm_event;

/// Tries each provider of its chain in order and returns the first answer.
///
/// It moves on after any error except `BudgetExceeded` and `Cancelled`,
/// which are returned at once (another provider would not make the budget
/// larger or the caller less cancelled). The answering provider fills the
/// response's `provider` and `model` as usual, so usage is booked to it.
///
/// When every provider fails, the error lists each one's failure
/// (`all LLM providers failed: openai: ...; claude: ...`) and is classed
/// `RateLimited` (with the smallest Retry-After) when all were rate
/// limited, `Transient` when any failure was retryable, `Permanent`
/// otherwise.
///
/// Its [`LlmProvider::profile`] is its first provider's: the request is
/// shaped before anyone knows who will answer, and it is shaped for the
/// provider that answers while all is well. A fallback of another kind
/// (a hosted model falling back on the local one) answers the same
/// request as best it can; a chain that should write compact prompts for
/// every member says so in the configuration (`llm.compact_prompts`).
pub struct Fallback {
    name: String,
    chain: Vec<Arc<dyn LlmProvider>>,
}

impl Fallback {
    /// A chain named `name` (its [`LlmProvider::name`]); its
    /// [`LlmProvider::model`] and [`LlmProvider::profile`] are the first
    /// provider's.
    pub fn new(name: impl Into<String>, chain: Vec<Arc<dyn LlmProvider>>) -> Self {
        Fallback {
            name: name.into(),
            chain,
        }
    }
}

#[async_trait]
impl LlmProvider for Fallback {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        self.chain.first().map(|p| p.model()).unwrap_or("")
    }

    fn profile(&self) -> LlmProfile {
        self.chain.first().map(|p| p.profile()).unwrap_or_default()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let mut failures: Vec<(&str, Error)> = Vec::new();
        for provider in &self.chain {
            match provider.complete(request).await {
                Ok(response) => {
                    if !failures.is_empty() {
                        let failed = failures
                            .iter()
                            .map(|(name, error)| format!("{name} failed: {error}"))
                            .collect::<Vec<_>>()
                            .join("; ");
                        llm_event!(
                            info,
                            self.name,
                            request,
                            answered_by = provider.name(),
                            "Answered by fallback {} after {failed}.",
                            provider.name()
                        );
                    }
                    return Ok(response);
                }
                Err(error @ (Error::BudgetExceeded(_) | Error::Cancelled(_))) => {
                    return Err(error);
                }
                Err(error) => {
                    llm_event!(warn, self.name, request, failed = provider.name(),
                        class = %error.class(), %error, "LLM provider failed; trying the next in the chain.");
                    failures.push((provider.name(), error));
                }
            }
        }
        Err(all_failed(&failures))
    }
}

fn describe(failures: &[(&str, Error)]) -> String {
    failures
        .iter()
        .map(|(name, error)| format!("{name}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn all_failed(failures: &[(&str, Error)]) -> Error {
    if failures.is_empty() {
        return Error::permanent("the LLM fallback chain has no providers");
    }
    let message = format!("all LLM providers failed: {}", describe(failures));
    let classes: Vec<ErrorClass> = failures.iter().map(|(_, e)| e.class()).collect();
    if classes.iter().all(|c| *c == ErrorClass::RateLimited) {
        let retry_after: Option<Duration> =
            failures.iter().filter_map(|(_, e)| e.retry_after()).min();
        Error::RateLimited {
            message,
            retry_after,
        }
    } else if classes.iter().any(|c| c.is_retryable()) {
        Error::Transient(message)
    } else {
        Error::Permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{ok, rate_limited, request, transient, FakeProvider};

    fn chain(providers: &[&Arc<FakeProvider>]) -> Fallback {
        Fallback::new(
            "chain",
            providers
                .iter()
                .map(|p| (*p).clone() as Arc<dyn LlmProvider>)
                .collect(),
        )
    }

    /// The error of a chain whose providers fail with `errors`.
    async fn all_failing(errors: Vec<Error>) -> Error {
        let fakes: Vec<_> = errors
            .into_iter()
            .enumerate()
            .map(|(i, e)| FakeProvider::answering(&format!("p{i}"), [Err(e)]))
            .collect();
        let refs: Vec<_> = fakes.iter().collect();
        chain(&refs).complete(&request("hi")).await.unwrap_err()
    }

    #[tokio::test]
    async fn the_second_provider_answers_and_is_named() {
        let openai = FakeProvider::answering("openai", [Err(transient())]);
        let claude = FakeProvider::answering("claude", [ok("claude", "from claude")]);
        let fallback = chain(&[&openai, &claude]);
        assert_eq!(fallback.name(), "chain");
        assert_eq!(fallback.model(), "openai-model");
        let response = fallback.complete(&request("hi")).await.unwrap();
        assert_eq!(response.content, "from claude");
        assert_eq!(response.provider, "claude");
        assert_eq!((openai.calls(), claude.calls()), (1, 1));
    }

    #[tokio::test]
    async fn budget_and_cancellation_are_not_fallen_back() {
        for error in [
            Error::BudgetExceeded("developer: over".into()),
            Error::Cancelled("workflow cancelled".into()),
        ] {
            let first = FakeProvider::answering("openai", [Err(error.clone())]);
            let second = FakeProvider::new("claude");
            let got = chain(&[&first, &second])
                .complete(&request("hi"))
                .await
                .unwrap_err();
            assert_eq!(got, error);
            assert_eq!(second.calls(), 0);
        }
    }

    #[tokio::test]
    async fn all_failed_lists_every_provider() {
        let error = all_failing(vec![transient(), Error::invalid("400 bad tool schema")]).await;
        assert_eq!(
            error.to_string(),
            "transient failure: all LLM providers failed: \
             p0: transient failure: 503 service unavailable; \
             p1: invalid input: 400 bad tool schema"
        );
    }

    #[tokio::test]
    async fn all_failed_class_follows_the_failures() {
        let secs = Duration::from_secs;
        let error = all_failing(vec![
            rate_limited(Some(secs(20))),
            rate_limited(None),
            rate_limited(Some(secs(5))),
        ])
        .await;
        assert_eq!(error.class(), ErrorClass::RateLimited);
        assert_eq!(error.retry_after(), Some(secs(5)));

        let error = all_failing(vec![rate_limited(Some(secs(1))), Error::permanent("x")]).await;
        assert_eq!(error.class(), ErrorClass::Transient);

        let error = all_failing(vec![Error::permanent("x"), Error::invalid("y")]).await;
        assert_eq!(error.class(), ErrorClass::Permanent);
    }
}
