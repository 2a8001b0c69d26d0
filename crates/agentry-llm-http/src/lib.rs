//! HTTP LLM providers.
