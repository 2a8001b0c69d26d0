//! The `LlmProvider` port: chat messages, tool definitions and tool calls,
//! structured-output schemas and usage counts. Providers (scripted, OpenAI-
//! compatible, Anthropic, local) and resilience layers (retry, breaker,
//! fallback, cache) all implement this one trait, so they stack.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AgentRole, Result, WorkflowId};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    /// System prompt.
    System,
    /// User / orchestrator input.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned id, echoed in the tool result message.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON object).
    pub arguments: Value,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: ChatRole,
    /// Text content (may be empty for a pure tool-call message).
    pub content: String,
    /// Tool calls (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call this message answers (tool messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(ChatRole::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(ChatRole::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            role: ChatRole::Assistant,
            content: content.into(),
            tool_calls,
            tool_call_id: None,
        }
    }
    /// A tool-result message.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: ChatRole::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
    fn text(role: ChatRole, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Name (`create_story`, `write_file`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of its arguments object.
    pub parameters: Value,
}

/// A JSON schema the final answer must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// Schema name (`BusinessAnalysis`).
    pub name: String,
    /// The JSON schema.
    pub schema: Value,
}

/// Where a request comes from: used for tracing, scripted replay, per-role
/// provider selection, usage accounting and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Workflow.
    pub workflow_id: Option<WorkflowId>,
    /// Agent role.
    pub role: AgentRole,
    /// Graph node.
    pub node: String,
    /// Super-step.
    pub step: u64,
    /// How many times this node has run before in this workflow (0 on the
    /// first visit): the QA loop's round is `visit + 1`.
    pub visit: u32,
    /// Index of this call within the node run's conversation (0-based;
    /// tool rounds and the repair round increase it).
    pub turn: u32,
    /// Correlation id.
    pub request_id: Option<String>,
}

/// One chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model override (None: the provider's configured model).
    pub model: Option<String>,
    /// Conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Schema the final answer must satisfy.
    pub response_schema: Option<OutputSchema>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token cap.
    pub max_tokens: Option<u32>,
    /// Provenance.
    pub meta: RequestMeta,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Answered from the response cache.
    pub cached: bool,
}

/// One chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Text answer (may be empty when only tool calls came back).
    pub content: String,
    /// Tool calls to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Token counts.
    pub usage: Usage,
    /// Provider that answered (after fallbacks).
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Why generation stopped (`stop`, `tool_calls`, `length`).
    pub finish_reason: String,
}

/// A chat-completion backend.
#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// Configured name (`scripted`, `openai`, `claude`).
    fn name(&self) -> &str;

    /// One completion. Errors are classified: network/5xx transient, 429
    /// rate-limited (with `retry_after`), 4xx invalid input, malformed
    /// bodies permanent.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse>;
}

/// Rough token count of a text (about 4 characters a token), for providers
/// that do not report usage themselves.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}
