//! The five agents (business analyst, developer, QA, technical writer,
//! DevOps): their prompts, role-limited tools, typed outputs, and the
//! [`AgentNodeRunner`] that the workflow engine calls to run one graph node.
//!
//! Key design decision: every agent runs through ONE conversation loop
//! ([`conversation`]) that owns the LLM turns, the tool rounds, the
//! validation of the answer with its repair rounds (one, or two for a
//! compact agent on a small model), the budgets and the usage accounting;
//! an agent only builds its prompt and applies its typed output to the
//! ports. Side effects happen after the model has answered, each with an
//! idempotency key derived from the task, so a retried or resumed node
//! finds what an earlier attempt made instead of making it twice.

#![warn(missing_docs)]
pub mod agents;
pub mod checks;
pub mod conversation;
pub mod demo;
pub mod dispute;
pub mod output;
pub mod prompts;
pub mod pycheck;
pub mod runner;
pub mod tools;
pub mod triage;

mod context;

#[cfg(test)]
mod testkit;

pub use context::ProjectContext;
pub use output::{
    AgentOutput, BusinessAnalysis, Documentation, EpicSpec, FileSpec, Implementation, PageSpec,
    Pipeline, QaReport, StorySpec,
};
pub use runner::{AgentConfig, AgentDeps, AgentNodeRunner};
pub use tools::Tool;
