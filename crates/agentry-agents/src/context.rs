//! The agents' memory interface: typed reads of the workflow state that
//! earlier agents wrote, and the shared-context records they share.

use agentry_core::{Error, Result, WorkflowState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Shared-context key of the [`ProjectContext`].
pub(crate) const PROJECT: &str = "project";
/// Shared-context key of the tracker keys the analyst made.
pub(crate) const BUSINESS_EPICS: &str = "business.epics";
/// Shared-context key of the developer's branch.
pub(crate) const DEVELOPER_BRANCH: &str = "developer.branch";
/// Shared-context key of the commit SHAs, oldest first.
pub(crate) const DEVELOPER_COMMITS: &str = "developer.commits";
/// Shared-context key of the merge request.
pub(crate) const DEVELOPER_MR: &str = "developer.merge_request";
/// Shared-context key of the [`crate::triage::Triage`] the developer last
/// fixed against: a failure still there the same way after the fix gets
/// its code written again from scratch.
pub(crate) const DEVELOPER_TRIAGE_SEEN: &str = "developer.triage_seen";
/// Shared-context keys QA writes.
pub(crate) const QA_PASSED: &str = "qa.passed";
pub(crate) const QA_ROUND: &str = "qa.round";
pub(crate) const QA_FAILURE: &str = "qa.failure";
pub(crate) const QA_TEST_FILES: &str = "qa.test_files";
/// Shared-context key of what the next round fixes (`none`, `tests`,
/// `code`: [`crate::triage::NextFix`]); the default graph routes on it.
pub(crate) const QA_FIX: &str = "qa.fix";
/// Shared-context key of the disputes held ([`crate::dispute::Disputes`]).
pub(crate) const QA_DISPUTES: &str = "qa.disputes";
/// Shared-context key of the last run's [`crate::triage::Triage`].
pub(crate) const QA_TRIAGE: &str = "qa.triage";
/// Shared-context key of the [`crate::triage::Triage`] QA last fixed its
/// tests against: a test of its own still failing the same way after the
/// fix gets the suite written again from scratch.
pub(crate) const QA_TRIAGE_SEEN: &str = "qa.triage_seen";
/// Where QA's tests live on the branch; the only folder QA writes to, and
/// one the developer may not.
pub(crate) const ACCEPTANCE_DIR: &str = "tests/acceptance/";
/// Shared-context key of the quality verdict of the final tests
/// ([`crate::checks::Quality`]).
pub(crate) const QUALITY: &str = "quality";
/// Shared-context key of the wiki pages.
pub(crate) const DOCS_PAGES: &str = "docs.pages";
/// Shared-context key of the DevOps files.
pub(crate) const DEVOPS_FILES: &str = "devops.files";

/// Where this workflow's artifacts live (shared-context key `project`),
/// written by the business analyst, read by every later agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectContext {
    /// Tracker project key.
    pub key: String,
    /// The project's name from the analysis, given to the tracker project.
    pub name: String,
    /// The code host repository every later agent works in: the run's
    /// `repository` option, else the analyst's choice.
    pub repository: String,
    /// Wiki space key (= `key`).
    pub space: String,
    /// Working branch (`agentry/<repository>`).
    pub branch: String,
    /// Merge request target (`main`).
    pub target_branch: String,
}

/// One epic the analyst made (shared-context `business.epics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpicRecord {
    pub key: String,
    pub title: String,
    pub stories: Vec<IssueRecord>,
}

/// A story key and title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IssueRecord {
    pub key: String,
    pub title: String,
}

/// The merge request (shared-context `developer.merge_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MergeRequestRecord {
    pub repository: String,
    pub id: u64,
    pub state: String,
}

/// QA's failure (shared-context `qa.failure`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QaFailure {
    pub command: String,
    pub exit_code: Option<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// A typed shared-context value; absent is `None`, malformed is permanent.
pub(crate) fn shared<T: DeserializeOwned>(state: &WorkflowState, key: &str) -> Result<Option<T>> {
    match state.shared_context.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|error| {
                Error::permanent(format!("shared_context `{key}` is malformed: {error}"))
            }),
    }
}

/// The project; missing means the analyst has not run.
pub(crate) fn project(state: &WorkflowState) -> Result<ProjectContext> {
    shared(state, PROJECT)?.ok_or_else(|| {
        Error::permanent("shared_context `project` is missing: the business analyst must run first")
    })
}

/// Story keys of every epic.
pub(crate) fn epics(state: &WorkflowState) -> Result<Vec<EpicRecord>> {
    Ok(shared(state, BUSINESS_EPICS)?.unwrap_or_default())
}

/// An agent output (`<agent>.<type>`), if written.
pub(crate) fn output<'a>(state: &'a WorkflowState, key: &str) -> Option<&'a Value> {
    state.agent_outputs.get(key)
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// The first `max` bytes of `text`, cut at a character boundary.
pub(crate) fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n... ({} more bytes)", &text[..end], text.len() - end)
}

/// Compact JSON for prompts.
pub(crate) fn compact(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
