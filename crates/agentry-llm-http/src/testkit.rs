//! Fixtures of the vendor modules' unit tests.

use std::time::Duration;

use agentry_core::{ChatMessage, ChatRequest, ChatResponse, RequestMeta, Result, ToolCall, Usage};
use bytes::Bytes;
use serde_json::Value;

use crate::transport::{read_stream, AnswerStream, Limits, ParseAnswer};

/// A request of `messages` with no tools, schema or limits.
pub(crate) fn request(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        model: None,
        messages,
        tools: Vec::new(),
        response_schema: None,
        temperature: None,
        max_tokens: None,
        meta: RequestMeta {
            workflow_id: None,
            role: agentry_core::AgentRole::Developer,
            node: "developer".into(),
            step: 1,
            visit: 0,
            turn: 0,
            request_id: Some(agentry_core::RequestId::new("req-1").unwrap()),
        },
    }
}

/// A tool call.
pub(crate) fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments,
    }
}

/// What `S` makes of the event-stream body `text`, read the way a
/// response body is (one chunk), for a request that said "hi" and named no
/// model.
pub(crate) fn stream_result<S: AnswerStream>(
    provider: &str,
    requested_model: &str,
    text: &str,
) -> Result<ChatResponse> {
    let request = request(vec![ChatMessage::user("hi")]);
    let body = futures::stream::iter([Ok(Bytes::from(text.to_string()))]);
    let limits = Limits {
        request: Duration::from_secs(10),
        connect: Duration::from_secs(10),
        idle: Duration::from_secs(10),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a test runtime")
        .block_on(read_stream::<S>(
            provider,
            limits,
            body,
            requested_model,
            &request,
        ))
}

/// What `parse` makes of the plain answer `body`, as the port's answer to
/// `request`.
pub(crate) fn parse_result(
    parse: ParseAnswer,
    provider: &str,
    requested_model: &str,
    request: &ChatRequest,
    body: &[u8],
) -> Result<ChatResponse> {
    parse(provider, body).map(|answer| answer.into_response(provider, requested_model, request))
}

/// An expected answer: `(prompt, completion)` tokens, not cached.
pub(crate) fn answer(
    content: &str,
    tool_calls: Vec<ToolCall>,
    finish_reason: &str,
    (prompt_tokens, completion_tokens): (u64, u64),
    provider: &str,
    model: &str,
) -> ChatResponse {
    ChatResponse {
        content: content.into(),
        tool_calls,
        usage: Usage {
            prompt_tokens,
            completion_tokens,
            cached: false,
        },
        provider: provider.into(),
        model: model.into(),
        finish_reason: finish_reason.into(),
    }
}
