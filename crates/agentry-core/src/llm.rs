//! The `LlmProvider` port: chat messages, tool definitions and tool calls,
//! structured-output schemas and usage counts. Providers (scripted, OpenAI-
//! compatible, Anthropic, local) and resilience layers (retry, breaker,
//! fallback, cache) all implement this one trait, so they stack.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layout::AnswerLayout;
use crate::{AgentRole, RequestId, Result, Spend, UsageRecord, WorkflowId};

/// Who said a message; each provider maps it to its wire format's roles
/// (Anthropic takes the system prompt apart, for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    /// The agent's instructions: its role prompt, first in the conversation.
    System,
    /// What the engine and the agent put to the model: the task, context,
    /// a repair request.
    User,
    /// The model's own earlier answers and tool calls.
    Assistant,
    /// A tool's result, answering one of the model's calls by its id.
    Tool,
}

/// One tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned id, echoed in the tool result message.
    pub id: String,
    /// One of the offered tools' names (a model may invent others; the
    /// agent refuses them).
    pub name: String,
    /// Arguments (a JSON object, not yet checked against the tool's
    /// schema).
    pub arguments: Value,
}

/// One chat message of a conversation, as every provider takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
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
    /// The instructions that open a conversation.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(ChatRole::System, content)
    }
    /// A message put to the model, with no tool calls.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(ChatRole::User, content)
    }
    /// The model's answer as it came back, tool calls included, to send
    /// back with the next turn.
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            role: ChatRole::Assistant,
            content: content.into(),
            tool_calls,
            tool_call_id: None,
        }
    }
    /// The result of the model's tool call `call_id`.
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
    /// What the model calls it by (`create_story`, `write_file`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of its arguments object.
    pub parameters: Value,
}

/// A JSON schema the final answer must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// The output type's name (`BusinessAnalysis`), which OpenAI's
    /// `response_format` requires.
    pub name: String,
    /// A draft 2020-12 JSON schema, as `schemars` writes it.
    pub schema: Value,
    /// How the answer is written down (plain JSON unless said otherwise;
    /// not serialized then, so request keys of plain answers stay as they
    /// were).
    #[serde(default, skip_serializing_if = "AnswerLayout::is_json")]
    pub layout: AnswerLayout,
}

impl OutputSchema {
    /// A plain JSON answer of `schema`.
    pub fn json(name: impl Into<String>, schema: Value) -> Self {
        OutputSchema {
            name: name.into(),
            schema,
            layout: AnswerLayout::Json,
        }
    }

    /// What a model not held to the answer by a grammar must be told.
    pub fn instructions(&self) -> String {
        self.layout.instructions(&self.schema)
    }
}

/// Where a request comes from: used for tracing, scripted replay, per-role
/// provider selection, usage accounting and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// The workflow asking; None for calls outside one (`llm check`,
    /// `bench llm`).
    pub workflow_id: Option<WorkflowId>,
    /// The role asking: per-role routing and budgets go by it.
    pub role: AgentRole,
    /// The graph node running (a role may have several nodes).
    pub node: String,
    /// The super-step the node runs in.
    pub step: u64,
    /// How many times this node has run before in this workflow (0 on the
    /// first visit): the QA loop's round is `visit + 1`.
    pub visit: u32,
    /// Index of this call within the node run's conversation (0-based;
    /// tool rounds and repair rounds increase it).
    pub turn: u32,
    /// The workflow's request id, carried into logs and the ledger.
    pub request_id: Option<RequestId>,
}

/// One chat completion request, the same for every provider: each client
/// turns it into its vendor's wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model override (None: the provider's configured model).
    pub model: Option<String>,
    /// The whole conversation so far, system prompt first (providers keep
    /// no state between calls).
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call this turn (none for a compact prompt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Schema the final answer must satisfy.
    pub response_schema: Option<OutputSchema>,
    /// Sampling temperature (None: the provider's default).
    pub temperature: Option<f32>,
    /// Most tokens the answer may have (None: the provider's default).
    pub max_tokens: Option<u32>,
    /// Who asks, and in which run, node and turn.
    pub meta: RequestMeta,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens the model read, as the provider counted them (estimated
    /// at four characters a token when it does not say).
    pub prompt_tokens: u64,
    /// Tokens the model wrote, counted the same way.
    pub completion_tokens: u64,
    /// Answered from the response cache.
    pub cached: bool,
}

/// One chat completion: an answer, tool calls to run, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Text answer (may be empty when only tool calls came back).
    pub content: String,
    /// Calls the model asks for; the agent runs them and sends the
    /// results back in the next turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// What the call cost in tokens (its price comes from the agents'
    /// price table).
    pub usage: Usage,
    /// Provider that answered (after fallbacks).
    pub provider: String,
    /// The model the provider says answered (a server may map names).
    pub model: String,
    /// Why generation stopped (`stop`, `tool_calls`, `length`).
    pub finish_reason: String,
}

/// What kind of model answers a provider's calls, as far as a caller shapes
/// its requests to it. Decisions about a model (compact prompts, say) read
/// this, never [`LlmProvider::name`]: a name is the user's to choose and
/// says nothing about the model behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LlmProfile {
    /// A model served behind an API, hosted or self-hosted: it takes the
    /// full prompts and calls tools. The default, since a remote server's
    /// model is whatever the operator loaded; the configuration's
    /// `compact_prompts` says otherwise for a small one.
    #[default]
    Standard,
    /// A small model (the in-process local one: 1.5 billion parameters on
    /// the CPU), which does better with compact prompts: shorter, no
    /// tools, concrete limits, one more repair round.
    Small,
}

impl LlmProfile {
    /// Whether agents write compact prompts for this model when the
    /// configuration does not decide.
    pub fn compact_prompts(self) -> bool {
        matches!(self, LlmProfile::Small)
    }
}

/// A chat-completion backend: a model behind a client, or a layer around
/// another provider.
#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// Configured name (`scripted`, `openai`, `claude`): for logs, prices
    /// and the ledger, never for deciding how to talk to the model (that is
    /// [`LlmProvider::profile`]).
    fn name(&self) -> &str;

    /// What kind of model this is. A layer reports its inner provider's,
    /// so a decision holds however many layers wrap the model.
    fn profile(&self) -> LlmProfile {
        LlmProfile::Standard
    }

    /// The model a request with `model: None` goes to (empty when the
    /// provider has no single model, e.g. a scripted session). Part of the
    /// response cache key.
    fn model(&self) -> &str {
        ""
    }

    /// One completion. Errors are classified: network/5xx transient, 429
    /// rate-limited (with `retry_after`), 4xx invalid input, malformed
    /// bodies permanent.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse>;
}

/// What a provider reports while it works on one call, for progress
/// displays: the local model reports every token; hosted providers may
/// report nothing.
#[derive(Debug, Clone, Copy)]
pub enum LlmProgress<'a> {
    /// Prompt tokens processed so far, of `total`.
    Prompt {
        /// Prompt tokens read so far.
        done: u64,
        /// Prompt tokens in all.
        total: u64,
    },
    /// Text generated since the last report, and the tokens so far.
    Tokens {
        /// The text of the tokens since the last report.
        text: &'a str,
        /// Completion tokens so far.
        generated: u64,
        /// Generation speed so far, tokens per second.
        tokens_per_s: f64,
    },
}

/// Receives [`LlmProgress`] reports (the CLI draws them on the node's
/// progress line). Called on the generating thread: it must not block.
pub trait LlmObserver: Send + Sync + 'static {
    /// One report on the call `meta` describes.
    fn on_progress(&self, meta: &RequestMeta, progress: LlmProgress<'_>);
}

/// Rough token count of a text (about 4 characters a token), for providers
/// that do not report usage themselves.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// One LLM call as the ledger keeps it: who asked, who answered, what it
/// cost. Written for every call, including calls of attempts that failed
/// later, so budgets count real spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The workflow that spent it.
    pub workflow_id: WorkflowId,
    /// The super-step of the node run.
    pub step: u64,
    /// The graph node that asked.
    pub node: String,
    /// The role that asked, which budgets and per-role spend count by.
    pub role: AgentRole,
    /// The attempt of the node run (a retried node's calls count too).
    pub attempt: u32,
    /// Turn within the node run's conversation.
    pub turn: u32,
    /// Provider that answered (after fallbacks).
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Tokens the model read (the answer's count, also when cached).
    pub prompt_tokens: u64,
    /// Tokens the model wrote (the answer's count, also when cached).
    pub completion_tokens: u64,
    /// Answered from the response cache (costs nothing).
    pub cached: bool,
    /// Cost in US dollars (0 when unpriced or cached).
    pub cost_usd: f64,
    /// Wall time of the call, milliseconds.
    pub latency_ms: u64,
    /// Why generation stopped (`stop`, `tool_calls`, `length`).
    pub finish_reason: String,
    /// The workflow's request id.
    pub request_id: Option<RequestId>,
    /// When the answer came back.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl LlmCall {
    /// Its usage as the state counts it: one call; a cached answer adds
    /// no tokens (the ledger keeps the answer's counts) and costs nothing.
    pub fn usage_record(&self) -> UsageRecord {
        let (prompt_tokens, completion_tokens) = if self.cached {
            (0, 0)
        } else {
            (self.prompt_tokens, self.completion_tokens)
        };
        UsageRecord {
            agent: self.role.as_str().to_string(),
            provider: self.provider.clone(),
            model: self.model.clone(),
            calls: 1,
            prompt_tokens,
            completion_tokens,
            cached_calls: u64::from(self.cached),
            cost_usd: self.cost_usd,
        }
    }

    /// Its spend, as budgets count it.
    pub fn spend(&self) -> Spend {
        self.usage_record().spend()
    }
}

/// Where LLM calls are recorded (the store's `llm_calls` table).
#[async_trait]
pub trait LlmLedger: Send + Sync + 'static {
    /// Records one call that answered (a call that errored has no usage
    /// to record).
    async fn record_call(&self, call: &LlmCall) -> Result<()>;

    /// Every call of a workflow, oldest first.
    async fn calls(&self, workflow: WorkflowId) -> Result<Vec<LlmCall>>;

    /// What a workflow has spent in all, and per role.
    async fn spend(
        &self,
        workflow: WorkflowId,
    ) -> Result<(Spend, std::collections::BTreeMap<String, Spend>)> {
        let calls = self.calls(workflow).await?;
        Ok(Spend::by_role(calls.iter().map(|call| {
            (call.role.as_str().to_string(), call.spend())
        })))
    }
}

/// A store of LLM responses keyed by a request hash, with expiry
/// (SQLite table in embedded mode, Redis when scaled out).
#[async_trait]
pub trait LlmCache: Send + Sync + 'static {
    /// The unexpired response stored under `key`.
    async fn get(&self, key: &str) -> Result<Option<ChatResponse>>;

    /// Stores `response` under `key` for `ttl`.
    async fn put(&self, key: &str, response: &ChatResponse, ttl: std::time::Duration)
        -> Result<()>;
}
