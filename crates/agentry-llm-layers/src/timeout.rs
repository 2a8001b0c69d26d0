//! [`Timeout`]: bounds one call's wall time.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{ChatRequest, ChatResponse, Error, LlmProfile, LlmProvider, Result};
use async_trait::async_trait;

use crate::trace::llm_event;

/// Fails a call that runs longer than `limit` with
/// `Error::Timeout { what: "LLM call to <provider>", after: limit }`
/// (class transient, so [`crate::Retry`] retries it). The inner call is
/// dropped, which cancels it.
pub struct Timeout {
    inner: Arc<dyn LlmProvider>,
    limit: Duration,
}

impl Timeout {
    /// Wraps `inner`, failing (transient) any call longer than `limit`.
    pub fn new(inner: Arc<dyn LlmProvider>, limit: Duration) -> Self {
        Timeout { inner, limit }
    }
}

#[async_trait]
impl LlmProvider for Timeout {
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
        match tokio::time::timeout(self.limit, self.inner.complete(request)).await {
            Ok(result) => result,
            Err(_) => {
                llm_event!(
                    warn,
                    self.inner.name(),
                    request,
                    limit_ms = self.limit.as_millis() as u64,
                    "LLM call timed out."
                );
                Err(Error::Timeout {
                    what: format!("LLM call to {}", self.inner.name()),
                    after: self.limit,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_provider::{request, FakeProvider};
    use agentry_core::ErrorClass;

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_limit() {
        let slow = FakeProvider::with("slow", Duration::from_secs(10), []);
        let error = Timeout::new(slow, Duration::from_secs(3))
            .complete(&request("hi"))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            Error::Timeout {
                what: "LLM call to slow".into(),
                after: Duration::from_secs(3)
            }
        );
        assert_eq!(error.class(), ErrorClass::Transient);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_limit_passes() {
        let fake = FakeProvider::with("p", Duration::from_secs(2), []);
        let response = Timeout::new(fake, Duration::from_secs(3))
            .complete(&request("hi"))
            .await
            .unwrap();
        assert_eq!(response.content, "default");
    }
}
