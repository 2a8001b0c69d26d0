//! The local LLM provider: Qwen2.5-Coder 1.5B Instruct (GGUF, Q4_K_M) run
//! on the CPU in Rust with candle, so `agentry run` works offline with no
//! API key.
//!
//! - [`model`]: the model cache: `pull` (pip fetches the model's chunk
//!   packages from the package index; they are assembled and checked
//!   against a pinned SHA-256), `verify`, `list`.
//! - [`tokenizer`]: the tokenizer, built from the GGUF file's metadata.
//! - [`chat`]: Qwen's chat template (ChatML, `<tool_call>` blocks).
//! - [`constraint`]: grammars from JSON schemas (llguidance), so an answer
//!   with a schema that ends within the token cap parses and validates.
//! - [`qwen2`]: the model's forward pass (grouped-query attention over a
//!   key-value cache that grows in place).
//! - [`generator`]: the decoding loop (sampling, stop tokens, caps).
//! - [`provider`]: [`LocalProvider`], the `LlmProvider` port.

pub mod chat;
pub mod constraint;
pub mod generator;
pub mod model;
pub mod provider;
pub mod qwen2;
mod repetition;
pub mod tokenizer;

pub use generator::Sampling;
pub use model::{
    find_model, ModelCache, ModelSpec, ModelState, ModelStatus, Progress, PullOptions, PullOutcome,
    DEFAULT_MODEL, MODELS,
};
pub use provider::{LocalConfig, LocalProvider};
