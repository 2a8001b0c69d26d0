//! The bundled demo: a URL-shortener requirement and a scripted LLM session
//! (the scripted provider's TOML format) that drives all five agents through
//! one failed QA round and one passing round, offline and deterministically.

/// The demo requirement.
pub const DEMO_REQUIREMENT: &str = include_str!("../demo/url-shortener/requirement.md");

/// The demo's scripted LLM session (responses by role, visit and turn).
pub const DEMO_SESSION: &str = include_str!("../demo/url-shortener/session.toml");
