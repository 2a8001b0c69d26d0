//! Scripted `LlmProvider`: replays a TOML script of responses per agent
//! role, node visit and turn, for offline runs and tests
//! ([`ScriptedProvider`]).
//!
//! Key design decision: the response is chosen from the request's
//! [`RequestMeta`] alone (`role`, `visit`, `turn`), never from counters kept
//! in the provider. A workflow that is killed and resumed in a new process
//! asks the same question again and must get the same answer, and
//! concurrent nodes must not disturb each other's sequence; a pure function
//! of the request guarantees both. Optional simulated latency
//! ([`ScriptedProvider::with_latency`]) lets tests slow a run down to kill
//! it mid-way.
//!
#![doc = include_str!("../SCRIPT_FORMAT.md")]

mod script;

use std::path::Path;
use std::time::Duration;

use agentry_core::llm::estimate_tokens;
use agentry_core::{
    ChatRequest, ChatResponse, Error, LlmProvider, RequestMeta, Result, ToolCall, Usage,
};
use async_trait::async_trait;
use tracing::debug;

use crate::script::Script;

/// The provider name every scripted response carries.
pub const PROVIDER_NAME: &str = "scripted";

/// Replays a validated script; see the crate docs for the format.
#[derive(Debug, Clone)]
pub struct ScriptedProvider {
    script: Script,
    model: String,
    latency: Duration,
}

impl ScriptedProvider {
    /// Reads and validates a script file. The session name defaults to the
    /// file's stem. A missing file is `NotFound`; an invalid script is
    /// `InvalidInput` naming the response index and the problem.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| {
            let msg = format!("LLM script {}: {error}", path.display());
            if error.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(msg)
            } else {
                Error::permanent(msg)
            }
        })?;
        let origin = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self::from_toml_str(&text, &origin)
            .map_err(|error| error.context(format!("LLM script {}", path.display())))
    }

    /// Parses and validates a script from text; `origin_name` names the
    /// session when the script has no `name`.
    pub fn from_toml_str(text: &str, origin_name: &str) -> Result<Self> {
        let script = Script::parse(text, origin_name)?;
        Ok(ScriptedProvider {
            model: format!("scripted:{}", script.name),
            script,
            latency: Duration::ZERO,
        })
    }

    /// Sleeps this long (tokio time) before each answer.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The session's name (the script's `name`, or the origin name).
    pub fn session_name(&self) -> &str {
        &self.script.name
    }

    /// The simulated latency.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// The answer for `meta`, without latency or usage: a pure function of
    /// the request's role, visit and turn.
    fn answer(&self, meta: &RequestMeta) -> Result<(usize, String, Vec<ToolCall>)> {
        let (index, response) = self
            .script
            .find(meta.role, meta.visit, meta.turn)
            .ok_or_else(|| {
                Error::permanent(format!(
                    "scripted session `{}` has no response for role {}, visit {}, turn {}",
                    self.script.name, meta.role, meta.visit, meta.turn
                ))
            })?;
        let tool_calls = response
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, call)| ToolCall {
                id: format!("call_{}_{}_{i}", meta.visit, meta.turn),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .collect();
        Ok((index, response.content.clone(), tool_calls))
    }
}

#[async_trait]
impl LlmProvider for ScriptedProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        let meta = &request.meta;
        let span = tracing::debug_span!(
            "llm.scripted",
            session = %self.script.name,
            workflow_id = ?meta.workflow_id,
            step = meta.step,
            node = %meta.node,
            role = %meta.role,
            visit = meta.visit,
            turn = meta.turn,
            request_id = ?meta.request_id,
        );
        let entered = span.enter();
        // Resolve before sleeping so a missing response fails fast, but
        // answer only after the latency, like a real provider would.
        let (index, content, tool_calls) = self.answer(meta)?;
        drop(entered);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }

        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + tool_call_tokens(&m.tool_calls))
            .sum();
        let completion_tokens = estimate_tokens(&content) + tool_call_tokens(&tool_calls);
        let finish_reason = if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        span.in_scope(|| {
            debug!(
                response_index = index,
                tool_calls = tool_calls.len(),
                prompt_tokens,
                completion_tokens,
                "Scripted response."
            )
        });
        Ok(ChatResponse {
            content,
            tool_calls,
            usage: Usage {
                prompt_tokens,
                completion_tokens,
                cached: false,
            },
            provider: PROVIDER_NAME.to_owned(),
            model: self.model.clone(),
            finish_reason: finish_reason.to_owned(),
        })
    }
}

fn tool_call_tokens(calls: &[ToolCall]) -> u64 {
    calls
        .iter()
        .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments.to_string()))
        .sum()
}
