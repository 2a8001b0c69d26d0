//! The five agents. Each builds its user message from the state, runs the
//! shared [`Conversation`](crate::conversation::Conversation) for its typed
//! output, applies the output to the ports with idempotent calls, and
//! returns the [`StateDelta`](agentry_core::StateDelta) it wrote.

pub mod business;
pub mod developer;
pub mod devops;
pub mod qa;
pub mod writer;

use agentry_core::{AgentOutputWrite, NewComment, Result, Tracker};
use serde::Serialize;

use crate::context::{EpicRecord, IssueRecord};
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

/// Moves every story of every epic to `status` (a no-op where it already is).
pub(crate) async fn move_stories(
    tracker: &dyn Tracker,
    epics: &[EpicRecord],
    status: &str,
) -> Result<()> {
    for story in epics.iter().flat_map(|e| e.stories.iter()) {
        tracker.transition_issue(&story.key, status).await?;
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
        env.deps
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
