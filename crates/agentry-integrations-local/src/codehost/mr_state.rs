//! Merge request states: their names in `code_merge_requests`, and the
//! moves between them an update may make. Pure: no git, no SQL.

use agentry_core::{Error, MergeRequestState, Result};

pub(super) fn parse_state(raw: &str) -> Result<MergeRequestState> {
    match raw {
        "opened" => Ok(MergeRequestState::Opened),
        "merged" => Ok(MergeRequestState::Merged),
        "closed" => Ok(MergeRequestState::Closed),
        other => Err(Error::permanent(format!(
            "code_merge_requests holds an unknown state `{other}`"
        ))),
    }
}

pub(super) fn state_str(state: MergeRequestState) -> &'static str {
    match state {
        MergeRequestState::Opened => "opened",
        MergeRequestState::Merged => "merged",
        MergeRequestState::Closed => "closed",
    }
}

/// Whether moving merge request `id` from `from` to `to` merges its
/// branches. Only opened -> merged does; no new state, the same state, and
/// opened <-> closed change nothing in git; every other move (out of
/// merged, or closed -> merged) is a conflict.
pub(super) fn needs_merge(
    id: u64,
    from: MergeRequestState,
    to: Option<MergeRequestState>,
) -> Result<bool> {
    use MergeRequestState::{Closed, Merged, Opened};
    match (from, to) {
        (_, None) => Ok(false),
        (from, Some(to)) if from == to => Ok(false),
        (Opened, Some(Merged)) => Ok(true),
        (Opened, Some(Closed)) | (Closed, Some(Opened)) => Ok(false),
        (from, Some(to)) => Err(Error::Conflict(format!(
            "merge request !{id} is {}; it cannot become {}",
            state_str(from),
            state_str(to)
        ))),
    }
}
