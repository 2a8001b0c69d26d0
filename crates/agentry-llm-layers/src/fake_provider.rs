//! Test doubles: a [`FakeProvider`] answering from a queue and counting
//! calls, and builders of requests and responses.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, ChatResponse, Error, LlmProfile, LlmProvider, RequestMeta,
    Result, Usage, WorkflowId,
};
use async_trait::async_trait;

/// Answers with queued results in order; once the queue is empty, with
/// `ok("default")`. Optionally sleeps (tokio time) before answering.
pub struct FakeProvider {
    name: String,
    model: String,
    queue: Mutex<VecDeque<Result<ChatResponse>>>,
    calls: AtomicUsize,
    latency: Duration,
    profile: LlmProfile,
}

impl FakeProvider {
    pub fn new(name: &str) -> Arc<Self> {
        Self::with(name, Duration::ZERO, [])
    }

    pub fn answering(
        name: &str,
        results: impl IntoIterator<Item = Result<ChatResponse>>,
    ) -> Arc<Self> {
        Self::with(name, Duration::ZERO, results)
    }

    pub fn with(
        name: &str,
        latency: Duration,
        results: impl IntoIterator<Item = Result<ChatResponse>>,
    ) -> Arc<Self> {
        Arc::new(FakeProvider {
            name: name.to_string(),
            model: format!("{name}-model"),
            queue: Mutex::new(results.into_iter().collect()),
            calls: AtomicUsize::new(0),
            latency,
            profile: LlmProfile::Standard,
        })
    }

    /// A provider whose model is of `profile`.
    pub fn of_profile(name: &str, profile: LlmProfile) -> Arc<Self> {
        let mut fake = Self::with(name, Duration::ZERO, []);
        if let Some(fake) = Arc::get_mut(&mut fake) {
            fake.profile = profile;
        }
        fake
    }

    pub fn push(&self, result: Result<ChatResponse>) {
        self.queue.lock().unwrap().push_back(result);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LlmProvider for FakeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn profile(&self) -> LlmProfile {
        self.profile
    }

    async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let next = self.queue.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(response(&self.name, "default")))
    }
}

/// A successful response from `provider`.
pub fn response(provider: &str, content: &str) -> ChatResponse {
    ChatResponse {
        content: content.to_string(),
        tool_calls: Vec::new(),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached: false,
        },
        provider: provider.to_string(),
        model: format!("{provider}-model"),
        finish_reason: "stop".into(),
    }
}

/// `Ok(response(provider, content))`.
pub fn ok(provider: &str, content: &str) -> Result<ChatResponse> {
    Ok(response(provider, content))
}

/// A developer request at node `developer`, visit 0, turn 0.
pub fn request(user: &str) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![
            ChatMessage::system("You are a developer."),
            ChatMessage::user(user),
        ],
        tools: Vec::new(),
        response_schema: None,
        temperature: Some(0.2),
        max_tokens: Some(1000),
        meta: RequestMeta {
            workflow_id: Some(WorkflowId::new()),
            role: AgentRole::Developer,
            node: "developer".into(),
            step: 1,
            visit: 0,
            turn: 0,
            request_id: Some(agentry_core::RequestId::new("req-1").unwrap()),
        },
    }
}

pub fn transient() -> Error {
    Error::transient("503 service unavailable")
}

pub fn rate_limited(after: Option<Duration>) -> Error {
    Error::RateLimited {
        message: "429 too many requests".into(),
        retry_after: after,
    }
}
