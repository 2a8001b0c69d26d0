//! The five agents. Each builds its user message from the state, runs the
//! shared [`Conversation`](crate::conversation::Conversation) for its typed
//! output, applies the output to the ports with idempotent calls, and
//! returns the [`StateDelta`](agentry_core::StateDelta) it wrote.

pub mod business;
pub mod developer;
pub mod devops;
pub mod qa;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};

use agentry_core::{AgentOutputWrite, IssueKind, NewComment, RepoPath, Result, Tracker};
use serde::Serialize;

use crate::context::{EpicRecord, IssueRecord};
use crate::output::FileSpec;
use crate::runner::AgentEnv;

/// An agent output record.
pub(crate) fn output(
    role: &str,
    output_type: &str,
    content: &impl Serialize,
) -> Result<AgentOutputWrite> {
    Ok(AgentOutputWrite {
        agent_name: role.to_string(),
        output_type: output_type.to_string(),
        content: serde_json::to_value(content)?,
    })
}

/// Moves every story of every epic, and the tasks under those stories, to
/// `status`; with `epics_too`, the epics as well (a no-op where an issue
/// already is there).
pub(crate) async fn move_stories(
    tracker: &dyn Tracker,
    epics: &[EpicRecord],
    status: &str,
    epics_too: bool,
) -> Result<()> {
    let stories: Vec<&str> = epics
        .iter()
        .flat_map(|e| e.stories.iter().map(|s| s.key.as_str()))
        .collect();
    for story in &stories {
        tracker.transition_issue(story, status).await?;
    }
    let projects: BTreeSet<&str> = stories
        .iter()
        .filter_map(|k| k.rsplit_once('-').map(|(p, _)| p))
        .collect();
    for project in projects {
        for issue in tracker.list_issues(project).await? {
            let under_story = issue
                .parent
                .as_deref()
                .is_some_and(|p| stories.contains(&p));
            if issue.kind == IssueKind::Task && under_story {
                tracker.transition_issue(&issue.key, status).await?;
            }
        }
    }
    if epics_too {
        for epic in epics {
            tracker.transition_issue(&epic.key, status).await?;
        }
    }
    Ok(())
}

/// Closes the bugs QA filed in earlier rounds (their tests pass now).
pub(crate) async fn close_fixed_bugs(tracker: &dyn Tracker, tickets: &[String]) -> Result<()> {
    for key in tickets {
        let issue = tracker.get_issue(key).await?;
        if issue.kind == IssueKind::Bug && issue.status != "Done" {
            tracker.transition_issue(key, "Done").await?;
        }
    }
    Ok(())
}

/// Comments on every epic, idempotently (`<task key>/epic:<KEY>/<what>`).
pub(crate) async fn comment_on_epics(
    env: &AgentEnv<'_>,
    epics: &[EpicRecord],
    what: &str,
    body: &str,
) -> Result<()> {
    for epic in epics {
        env.ports
            .tracker
            .add_comment(NewComment {
                issue: epic.key.clone(),
                body: body.to_string(),
                idempotency_key: env.key().child(format!("epic:{}/{what}", epic.key)),
            })
            .await?;
    }
    Ok(())
}

/// Story records as Markdown bullets for prompts.
pub(crate) fn story_list(epics: &[EpicRecord]) -> Vec<&IssueRecord> {
    epics.iter().flat_map(|e| e.stories.iter()).collect()
}

/// The change set of an agent that writes to the repository: the files it
/// staged with `write_file` (or deleted), then the files of its answer,
/// which win on the same path.
pub(crate) fn change_set(
    staged: &BTreeMap<RepoPath, Option<String>>,
    answered: &[FileSpec],
) -> Result<BTreeMap<RepoPath, Option<String>>> {
    let mut changes = staged.clone();
    for file in answered {
        changes.insert(
            RepoPath::parse(&file.path)?,
            Some(crate::output::file_text(&file.path, &file.content)),
        );
    }
    Ok(changes)
}
