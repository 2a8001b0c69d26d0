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
        /// Done.
        done: u64,
        /// To do.
        total: u64,
    },
    /// Text generated since the last report, and the tokens so far.
    Tokens {
        /// New text.
        text: &'a str,
        /// Completion tokens so far.
        generated: u64,
        /// Generation speed so far, tokens per second.
        tokens_per_s: f64,
    },
}

/// Receives [`LlmProgress`] reports.
pub trait LlmObserver: Send + Sync + 'static {
    /// One report on the call `meta` describes.
    fn on_progress(&self, meta: &RequestMeta, progress: LlmProgress<'_>);
}

/// Rough token count of a text (about 4 characters a token), for providers
/// that do not report usage themselves.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Input and output prices of one model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Price of a million prompt tokens.
    pub input_per_mtok: f64,
    /// Price of a million completion tokens.
    pub output_per_mtok: f64,
}

/// Prices per model name. A model without a price costs nothing (local
/// servers); lookups try the exact name, then `provider/model`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub std::collections::BTreeMap<String, ModelPrice>);

impl PriceTable {
    /// The price of `model` as served by `provider`, if configured: the
    /// key `provider/model`, else `model`, else the longest key that
    /// `model` extends by a dated or versioned suffix (`gpt-4o` prices
    /// `gpt-4o-2024-08-06`, but not `gpt-4o-mini`).
    pub fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        if let Some(p) = self
            .0
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.0.get(model))
        {
            return Some(*p);
        }
        let versioned = |key: &str| {
            model.strip_prefix(key).is_some_and(|rest| {
                let mut chars = rest.chars();
                matches!(chars.next(), Some('-' | '@' | ':'))
                    && chars.next().is_some_and(|c| c.is_ascii_digit())
            })
        };
        self.0
            .iter()
            .filter(|(key, _)| versioned(key))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, price)| *price)
    }

    /// Cost in US dollars of the given token counts (0 when unpriced).
    pub fn cost(&self, provider: &str, model: &str, prompt: u64, completion: u64) -> f64 {
        self.price(provider, model)
            .map(|p| {
                (prompt as f64 * p.input_per_mtok + completion as f64 * p.output_per_mtok) / 1e6
            })
            .unwrap_or(0.0)
    }
}

/// A cost and token cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limit {
    /// At most this many US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// At most this many tokens (prompt + completion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

impl Limit {
    /// True when neither cap is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_tokens.is_none()
    }

    /// Overlays `other`'s set caps on this one.
    pub fn merged(self, other: Limit) -> Limit {
        Limit {
            max_cost_usd: other.max_cost_usd.or(self.max_cost_usd),
            max_tokens: other.max_tokens.or(self.max_tokens),
        }
    }
}

/// Budgets of one workflow: a cap on the whole workflow and caps per agent
/// role. Spend counts every LLM call, including those of failed attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Cap on the whole workflow.
    #[serde(flatten)]
    pub workflow: Limit,
    /// Caps per role (`developer`, `technical_writer`, ...).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub roles: std::collections::BTreeMap<String, Limit>,
}

/// What has been spent so far (or what a call is expected to spend).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// US dollars.
    pub cost_usd: f64,
    /// Tokens (prompt + completion).
    pub tokens: u64,
}

impl Spend {
    /// The total and the per-role sums of `(role, spend)` pairs (a role may
    /// come more than once): what [`LlmLedger::spend`] returns.
    pub fn by_role(
        parts: impl IntoIterator<Item = (String, Spend)>,
    ) -> (Spend, std::collections::BTreeMap<String, Spend>) {
        let mut total = Spend::default();
        let mut roles = std::collections::BTreeMap::<String, Spend>::new();
        for (role, s) in parts {
            total = total.plus(s);
            let entry = roles.entry(role).or_default();
            *entry = entry.plus(s);
        }
        (total, roles)
    }

    /// Sum of two spends.
    pub fn plus(self, other: Spend) -> Spend {
        Spend {
            cost_usd: self.cost_usd + other.cost_usd,
            tokens: self.tokens + other.tokens,
        }
    }
}

impl Budget {
    /// True when no cap is set anywhere.
    pub fn is_unlimited(&self) -> bool {
        self.workflow.is_unlimited() && self.roles.values().all(Limit::is_unlimited)
    }

    /// Overlays `other`'s set caps on this budget (role by role).
    pub fn merged(mut self, other: &Budget) -> Budget {
        self.workflow = self.workflow.merged(other.workflow);
        for (role, limit) in &other.roles {
            let entry = self.roles.entry(role.clone()).or_default();
            *entry = entry.merged(*limit);
        }
        self
    }

    /// Checks that spending `next` on top of `workflow_spent` (whole
    /// workflow) and `role_spent` (this role) stays within the caps.
    /// The error is a [`crate::Error::BudgetExceeded`] naming the role,
    /// the cap, what was spent and what the next call would add.
    pub fn check(
        &self,
        role: &str,
        workflow_spent: Spend,
        role_spent: Spend,
        next: Spend,
    ) -> crate::Result<()> {
        let scopes = [
            ("workflow", Some(&self.workflow), workflow_spent),
            ("role", self.roles.get(role), role_spent),
        ];
        for (scope, limit, spent) in scopes {
            let Some(limit) = limit else { continue };
            let after = spent.plus(next);
            let what = if scope == "workflow" {
                "workflow budget".to_string()
            } else {
                format!("budget of role {role}")
            };
            if let Some(cap) = limit.max_cost_usd {
                if after.cost_usd > cap {
                    return Err(crate::Error::BudgetExceeded(format!(
                        "{role}: the {what} of ${cap:.4} would be exceeded \
                         (spent ${:.4}, next call about ${:.4}); raise it and resume",
                        spent.cost_usd, next.cost_usd
                    )));
                }
            }
            if let Some(cap) = limit.max_tokens {
                if after.tokens > cap {
                    return Err(crate::Error::BudgetExceeded(format!(
                        "{role}: the {what} of {cap} tokens would be exceeded \
                         (spent {} tokens, next call about {}); raise it and resume",
                        spent.tokens, next.tokens
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One LLM call as the ledger keeps it: who asked, who answered, what it
/// cost. Written for every call, including calls of attempts that failed
/// later, so budgets count real spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Workflow.
    pub workflow_id: WorkflowId,
    /// Super-step.
    pub step: u64,
    /// Graph node.
    pub node: String,
    /// Agent role.
    pub role: AgentRole,
    /// Node attempt.
    pub attempt: u32,
    /// Turn within the node run's conversation.
    pub turn: u32,
    /// Provider that answered (after fallbacks).
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Answered from the response cache (costs nothing).
    pub cached: bool,
    /// Cost in US dollars (0 when unpriced or cached).
    pub cost_usd: f64,
    /// Wall time of the call, milliseconds.
    pub latency_ms: u64,
    /// Why generation stopped.
    pub finish_reason: String,
    /// Correlation id.
    pub request_id: Option<String>,
    /// When it finished.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl LlmCall {
    /// Its usage as the state counts it: one call; a cached answer adds
    /// no tokens (the ledger keeps the answer's counts) and costs nothing.
    pub fn usage_record(&self) -> crate::UsageRecord {
        let (prompt_tokens, completion_tokens) = if self.cached {
            (0, 0)
        } else {
            (self.prompt_tokens, self.completion_tokens)
        };
        crate::UsageRecord {
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
    /// Records one call.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_budgets() {
        let prices = PriceTable(
            [(
                "gpt-4o-mini".to_string(),
                ModelPrice {
                    input_per_mtok: 0.15,
                    output_per_mtok: 0.60,
                },
            )]
            .into(),
        );
        let cost = prices.cost("openai", "gpt-4o-mini", 1_000_000, 500_000);
        assert!((cost - 0.45).abs() < 1e-9, "{cost}");
        let dated = prices.cost("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 0);
        assert!(
            (dated - 0.15).abs() < 1e-9,
            "a dated name has its model's price"
        );
        assert_eq!(prices.price("openai", "gpt-4o-mini-turbo"), None);
        assert_eq!(prices.cost("openai", "llama3", 10, 10), 0.0);

        let budget: Budget = serde_json::from_value(serde_json::json!({
            "max_cost_usd": 1.0,
            "roles": {"developer": {"max_tokens": 1000}}
        }))
        .unwrap();
        let spent = |c, t| Spend {
            cost_usd: c,
            tokens: t,
        };
        assert!(budget
            .check("qa", spent(0.5, 10), spent(0.1, 5), spent(0.4, 5))
            .is_ok());
        let err = budget
            .check("qa", spent(0.9, 10), spent(0.1, 5), spent(0.2, 5))
            .unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::BudgetExceeded);
        assert!(err.to_string().contains("$1.0000"), "{err}");
        let err = budget
            .check(
                "developer",
                spent(0.0, 900),
                spent(0.0, 900),
                spent(0.0, 200),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("role developer of 1000 tokens"),
            "{err}"
        );
        let raised = budget.merged(&Budget {
            workflow: Limit {
                max_cost_usd: Some(5.0),
                max_tokens: None,
            },
            roles: Default::default(),
        });
        assert_eq!(raised.workflow.max_cost_usd, Some(5.0));
        assert_eq!(raised.roles["developer"].max_tokens, Some(1000));
    }
}
