//! A run's options: what a workflow was started with, built once where a
//! run begins (the CLI's `run`, the gateway's `POST /v1/workflows`, the
//! engine benchmark), stored with the workflow (its `options` JSON column)
//! and read as a type by the agents, the workers and a resume.
//!
//! Every field is optional and the JSON form ignores keys it does not
//! know, so options stored by an older or newer version still read, and the
//! integration and memory settings that come later are new fields, not a
//! new format.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Budget, Error, Result};

/// What a workflow was started with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// The LLM the run was started with; a resume and a worker answer with
    /// the same one. None: the deployment's configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSelection>,
    /// Tracker project key and wiki space key (`SHOP`); None: the business
    /// analyst proposes one from the requirement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_key: Option<String>,
    /// Repository name (`shop`); None: the analyst proposes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The branch the merge request targets; None: the repository's
    /// default branch (`main`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_branch: Option<String>,
    /// This run's caps, laid over the deployment's default budget (a cap
    /// raised on resume is laid over both).
    #[serde(skip_serializing_if = "Budget::is_unlimited")]
    pub budget: Budget,
    /// Set by `agentry bench engine` only: the workflow is a benchmark's,
    /// and a worker runs its nodes as sleeps of this length instead of
    /// agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchRun>,
}

impl RunOptions {
    /// Checks what a caller gave: names are non-blank and have no control
    /// characters (each adapter still checks its own rules: a Jira key, a
    /// git branch). The error names the option.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("project_key", &self.project_key),
            ("repository", &self.repository),
            ("target_branch", &self.target_branch),
        ] {
            if let Some(v) = value {
                if v.trim().is_empty() || v.chars().any(char::is_control) {
                    return Err(Error::invalid(format!(
                        "run option `{name}` must be a non-blank name without control characters"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The LLM a run was started with, as the app resolved it from flags and
/// configuration. Keys and secrets are never part of it: they come from the
/// environment or files of the process that calls the provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmSelection {
    /// What answers: `local`, `demo`, `scripted`, `replay`, a preset
    /// (`openai`, `anthropic`, `ollama`, `vllm`) or a configured provider's
    /// name.
    pub provider: String,
    /// Base URL given for this run (None: the provider's configured one).
    pub base_url: Option<String>,
    /// Model given for this run (None: the provider's configured one).
    pub model: Option<String>,
    /// The script a `scripted` run replays (absolute, so a resume from
    /// another directory finds it).
    pub script: Option<PathBuf>,
    /// The cassette a `replay` run answers from (absolute).
    pub replay: Option<PathBuf>,
    /// The cassette the submitting process appends every answer to
    /// (absolute); workers do not record.
    pub record: Option<PathBuf>,
    /// Latency a `scripted` or `demo` provider adds to each answer, ms.
    pub latency_ms: u64,
}

/// A benchmark workflow's node behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// How long each node sleeps, milliseconds (fractions allowed).
    pub node_latency_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limit;
    use serde_json::json;

    #[test]
    fn options_round_trip_and_unset_fields_are_left_out() {
        let options = RunOptions {
            llm: Some(LlmSelection {
                provider: "scripted".into(),
                script: Some("/srv/session.toml".into()),
                ..LlmSelection::default()
            }),
            project_key: Some("SHOP".into()),
            budget: Budget {
                workflow: Limit {
                    max_cost_usd: Some(2.5),
                    max_tokens: None,
                },
                ..Budget::default()
            },
            ..RunOptions::default()
        };
        let value = serde_json::to_value(&options).unwrap();
        assert_eq!(value["project_key"], "SHOP");
        assert!(value.get("repository").is_none());
        assert!(value.get("bench").is_none());
        assert_eq!(value["budget"]["max_cost_usd"], 2.5);
        assert_eq!(
            serde_json::from_value::<RunOptions>(value).unwrap(),
            options
        );
        assert_eq!(
            serde_json::to_value(RunOptions::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn options_stored_by_other_versions_still_read() {
        // Written before options were typed: an unknown key, nulls, and the
        // LLM choice as the CLI wrote it.
        let stored = json!({
            "llm": {"provider": "demo", "script": null, "replay": null, "record": null,
                    "base_url": null, "model": null, "latency_ms": 0},
            "project_key": null,
            "repository": "shop",
            "rounds": 3,
        });
        let options: RunOptions = serde_json::from_value(stored).unwrap();
        assert_eq!(options.llm.unwrap().provider, "demo");
        assert_eq!(options.project_key, None);
        assert_eq!(options.repository.as_deref(), Some("shop"));
    }

    #[test]
    fn blank_or_control_names_are_refused_naming_the_option() {
        let bad = RunOptions {
            target_branch: Some("  ".into()),
            ..RunOptions::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("`target_branch`"), "{err}");
        let bad = RunOptions {
            repository: Some("a\nb".into()),
            ..RunOptions::default()
        };
        assert!(bad.validate().is_err());
        assert!(RunOptions::default().validate().is_ok());
    }
}
