//! Hand-written HTTP clients for hosted and self-hosted LLMs, implementing
//! [`agentry_core::LlmProvider`]: [`OpenAiProvider`] for every server that
//! speaks OpenAI's chat completions (OpenAI, OpenRouter, Ollama, vLLM,
//! llama.cpp) and [`AnthropicProvider`] for the Anthropic Messages API, each
//! plain or streamed (server-sent events, parsed by [`sse::SseParser`]).
//!
//! Key design decision: errors are classified where they arise, from the
//! HTTP status and the transport failure, never later from message text.
//! Connect and body-read failures and 5xx/529 are `Transient`, reqwest
//! timeouts and a stalled stream are `Timeout`, 429 is `RateLimited` with the
//! delay of `retry-after-ms` / `Retry-After` (seconds or HTTP date), 401/403
//! `Permanent` ("check the API key"), other 4xx `InvalidInput` with the
//! vendor's own message, and a 2xx body the client cannot read `Permanent`
//! (`malformed response from <provider>`). The retry, breaker and fallback
//! layers above read only the class. Every message names the provider, and
//! none contains the API key: keys live in [`Secret`] (whose `Debug` prints
//! `***`), go out in headers marked sensitive, and are redacted from any
//! vendor text that echoes them.
//!
//! Structured output: the OpenAI client sends the schema as `response_format`
//! and, in [`StructuredOutput::Auto`] mode, retries a call the server
//! rejected with 400/422 once with the schema as instructions in the system
//! prompt, remembering to do so for later calls when that retry succeeds.
//! Any 400/422 counts, not only messages that name `response_format`,
//! because local servers word the rejection in many ways; the cost of a
//! wrong guess is one extra request, and nothing is remembered unless the
//! instructions version worked. Anthropic has no `response_format`, so its
//! client always uses the same instructions text. Agents validate answers
//! against the schema either way.
//!
//! Streamed and plain answers yield the same [`agentry_core::ChatResponse`]:
//! text, tool calls (arguments that are not valid JSON are passed on as a
//! JSON string so the agent's tool can report the error to the model),
//! finish reason (`stop`, `tool_calls`, `length`), model, and usage (estimated
//! with [`agentry_core::llm::estimate_tokens`] when the server reports none).

mod anthropic;
mod http;
mod openai;
mod secret;
pub mod sse;
#[cfg(test)]
mod testkit;
mod transport;

pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use openai::{MaxTokensField, OpenAiConfig, OpenAiProvider, StructuredOutput};
pub use secret::Secret;
