//! LLM contract servers.
