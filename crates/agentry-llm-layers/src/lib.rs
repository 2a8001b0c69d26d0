//! LLM layers.
