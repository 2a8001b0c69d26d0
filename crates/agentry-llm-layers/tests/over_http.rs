//! The layers around the real HTTP clients, against the OpenAI and
//! Anthropic contract servers: the breaker opens on a failing server and
//! half-opens to probe it, retries honour a 429's Retry-After, the fallback
//! chain crosses vendors, and a cache hit sends nothing over the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, ChatResponse, ErrorClass, LlmProvider, RequestMeta,
    Result, Usage,
};
use agentry_llm_contract::{ContractServer, Fault, Vendor};
use agentry_llm_http::{AnthropicConfig, AnthropicProvider, OpenAiConfig, OpenAiProvider};
use agentry_llm_layers::{
    BreakerConfig, BreakerState, Cached, CircuitBreaker, Fallback, MemoryCache, Retry, RetryPolicy,
};
use async_trait::async_trait;

/// Answers every request with a fixed text.
struct Echo;

#[async_trait]
impl LlmProvider for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        Ok(ChatResponse {
            content: format!("answer to {}", request.messages.len()),
            tool_calls: Vec::new(),
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                cached: false,
            },
            provider: "echo".into(),
            model: "echo-1".into(),
            finish_reason: "stop".into(),
        })
    }
}

async fn server(vendor: Vendor) -> ContractServer {
    ContractServer::start(vendor, Arc::new(Echo))
        .await
        .with_api_key("test-key")
}

fn openai(server: &ContractServer, name: &str) -> Arc<dyn LlmProvider> {
    Arc::new(
        OpenAiProvider::new(
            OpenAiConfig::new(name, server.base_url(), "gpt-test").with_api_key("test-key"),
        )
        .unwrap(),
    )
}

fn anthropic(server: &ContractServer, name: &str) -> Arc<dyn LlmProvider> {
    Arc::new(
        AnthropicProvider::new(
            AnthropicConfig::new(name, "claude-test")
                .with_base_url(server.base_url())
                .with_api_key("test-key"),
        )
        .unwrap(),
    )
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![
            ChatMessage::system("You are the developer of a small software team."),
            ChatMessage::user(text),
        ],
        tools: Vec::new(),
        response_schema: None,
        temperature: Some(0.2),
        max_tokens: Some(64),
        meta: RequestMeta {
            workflow_id: None,
            role: AgentRole::Developer,
            node: "developer".into(),
            step: 1,
            visit: 0,
            turn: 0,
            request_id: None,
        },
    }
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_server_then_a_probe_closes_it() {
    let s = server(Vendor::OpenAi).await;
    let breaker = CircuitBreaker::new(
        openai(&s, "openai"),
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(300),
        },
    );
    for _ in 0..3 {
        s.push_fault(Fault::ServerError);
    }
    for _ in 0..3 {
        let error = breaker.complete(&request("hi")).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    }
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    // Open: fails fast, nothing reaches the server.
    let error = breaker.complete(&request("hi")).await.unwrap_err();
    assert!(
        error.to_string().contains("circuit breaker open"),
        "{error}"
    );
    assert_eq!(s.request_count(), 3);

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // The probe fails: open again, for another period.
    s.push_fault(Fault::Malformed);
    let error = breaker.complete(&request("hi")).await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    assert_eq!(s.request_count(), 4);

    tokio::time::sleep(Duration::from_millis(350)).await;
    let answer = breaker.complete(&request("hi")).await.unwrap();
    assert_eq!(answer.content, "answer to 2");
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn retry_waits_out_a_429_and_a_500_then_succeeds() {
    let s = server(Vendor::Anthropic).await;
    s.push_fault(Fault::RateLimited {
        retry_after_secs: 1,
    });
    s.push_fault(Fault::ServerError);
    let retry = Retry::new(
        anthropic(&s, "claude"),
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
    );
    let started = std::time::Instant::now();
    let answer = retry.complete(&request("hi")).await.unwrap();
    assert_eq!(answer.provider, "claude");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(s.request_count(), 3);
}

#[tokio::test]
async fn the_fallback_chain_crosses_vendors_and_names_who_answered() {
    let primary = server(Vendor::OpenAi).await;
    let secondary = server(Vendor::Anthropic).await;
    primary.push_fault(Fault::Status {
        status: 503,
        body:
            r#"{"error":{"message":"overloaded","type":"server_error","param":null,"code":null}}"#
                .into(),
        headers: Vec::new(),
    });
    let chain = Fallback::new(
        "chain",
        vec![openai(&primary, "openai"), anthropic(&secondary, "claude")],
    );
    let answer = chain.complete(&request("hi")).await.unwrap();
    assert_eq!(answer.provider, "claude");
    assert_eq!(answer.model, "claude-test");
    assert_eq!((primary.request_count(), secondary.request_count()), (1, 1));
    // The primary is back: it answers again.
    let answer = chain.complete(&request("hi")).await.unwrap();
    assert_eq!(answer.provider, "openai");
}

#[tokio::test]
async fn a_cache_hit_sends_nothing_over_the_wire() {
    let s = server(Vendor::OpenAi).await;
    let cached = Cached::new(
        openai(&s, "openai"),
        Arc::new(MemoryCache::new()),
        Duration::from_secs(60),
    );
    let first = cached.complete(&request("hi")).await.unwrap();
    assert!(!first.usage.cached);
    let second = cached.complete(&request("hi")).await.unwrap();
    assert!(second.usage.cached);
    assert_eq!(second.content, first.content);
    assert_eq!(second.usage.prompt_tokens, first.usage.prompt_tokens);
    assert_eq!(s.request_count(), 1, "the hit made no request");
    // A failed call is never cached.
    s.push_fault(Fault::ServerError);
    cached.complete(&request("other")).await.unwrap_err();
    cached.complete(&request("other")).await.unwrap();
    assert_eq!(s.request_count(), 3);
}
