//! Routing: from a finished super-step to the next cursor. Pure functions of
//! the definition, the cursor of the step and the state, so the task that
//! finishes a step, a recovery after a crash and the tests all compute the
//! same answer:
//!
//! - [`route`]: the next cursor and status from the state merged over the
//!   whole step (every rule is in its doc);
//! - [`advance`]: a finished step's whole advance, the ONE function the
//!   engine decides it with, on the commit path and in recovery alike: the
//!   step's task deltas merged in commit order, routed, the routing errors
//!   applied, and the state the next step starts from;
//! - [`fold_step_start`] and [`task_checkpoints_at`]: a step's start state
//!   and its committed tasks, read off the checkpoints.

use std::collections::{BTreeMap, BTreeSet};

use agentry_core::{
    Advance, Checkpoint, Cursor, ErrorClass, Event, EventKind, RequestId, StateDelta,
    WorkflowErrorEntry, WorkflowId, WorkflowRecord, WorkflowState, WorkflowStatus,
};
use chrono::Utc;
use serde_json::json;

use crate::definition::{EdgeAction, EdgeDef, WorkflowDefinition, END};
use crate::expr::Env;

/// The scheduler's decision after a super-step.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The next cursor (`step + 1`).
    pub cursor: Cursor,
    /// The next status.
    pub status: WorkflowStatus,
    /// Node(s) to show as current.
    pub current_step: String,
    /// Error entries to record (a routing failure).
    pub errors: Vec<WorkflowErrorEntry>,
    /// Events to commit with the advance.
    pub events: Vec<Event>,
}

/// Routes after every node of `cursor.pending` completed; `state` is the
/// state merged over the whole step.
///
/// Rules: visits of the completed nodes are counted first (so `when` sees
/// them); for each completed node in order, its outgoing edges fire in file
/// order when their `when` holds; a join edge records the arrival and fires
/// once all its sources arrived. A fired fail edge fails the workflow with
/// its filled reason (fail takes precedence); a completed node with outgoing
/// edges none of which fired fails it ("no edge from `qa` matched"); a target
/// beyond its `max_visits` fails it unless approved; approval edges and
/// `approval_before` nodes (before their first run) put the workflow in
/// `awaiting_approval` with the targets pending; no target left: completed.
///
/// On a failure, the cursor's pending list holds what a `resume` should run:
/// the node whose routing failed, or the targets that were over their bound.
pub fn route(
    def: &WorkflowDefinition,
    cursor: &Cursor,
    state: &WorkflowState,
    workflow_id: WorkflowId,
    request_id: Option<&RequestId>,
) -> Routed {
    let step = cursor.step;
    let mut next = cursor.clone();
    next.step = step + 1;
    for n in &cursor.pending {
        *next.visits.entry(n.clone()).or_insert(0) += 1;
        next.approved.remove(n);
    }
    let mut targets: Vec<String> = Vec::new();
    let mut approval_targets: BTreeSet<String> = BTreeSet::new();
    let mut approval_reasons: Vec<String> = Vec::new();
    let mut failure: Option<(String, Option<String>)> = None;
    let mut failed_nodes: Vec<String> = Vec::new();
    let mut touched_joins: BTreeSet<usize> = BTreeSet::new();
    let mut unmatched: Vec<String> = Vec::new();
    {
        let visits = next.visits.clone();
        let env = Env {
            state,
            visits: &visits,
        };
        let mut take = |edge: &EdgeDef, node: &str, targets: &mut Vec<String>| match &edge.action {
            EdgeAction::Goto => targets.extend(edge.to.iter().filter(|t| *t != END).cloned()),
            EdgeAction::Approval(t) => {
                approval_reasons.push(t.render(&env));
                for to in edge.to.iter().filter(|t| *t != END) {
                    approval_targets.insert(to.clone());
                    targets.push(to.clone());
                }
            }
            EdgeAction::Fail(t) => {
                if failure.is_none() {
                    failure = Some((t.render(&env), Some(node.to_string())));
                }
                failed_nodes.push(node.to_string());
            }
        };
        for n in &cursor.pending {
            let mut has_edges = false;
            let mut matched = false;
            for edge in def.outgoing(n) {
                has_edges = true;
                if !edge.when.as_ref().is_none_or(|w| w.holds(&env)) {
                    continue;
                }
                matched = true;
                if edge.is_join() {
                    next.joins
                        .entry(edge.join_key())
                        .or_default()
                        .insert(n.clone());
                    touched_joins.insert(edge.index);
                } else {
                    take(edge, n, &mut targets);
                }
            }
            if has_edges && !matched {
                unmatched.push(n.clone());
            }
        }
        for idx in touched_joins {
            let Some(edge) = def.edges.get(idx) else {
                continue;
            };
            let key = edge.join_key();
            let complete = next
                .joins
                .get(&key)
                .is_some_and(|arrived| edge.from.iter().all(|f| arrived.contains(f)));
            if complete {
                next.joins.remove(&key);
                let node = edge.from.join("+");
                take(edge, &node, &mut targets);
            }
        }
    }
    if failure.is_none() {
        if let Some(n) = unmatched.first() {
            failure = Some((format!("no edge from `{n}` matched"), Some(n.clone())));
            failed_nodes = unmatched;
        }
    }
    // Dedupe, stable.
    let mut seen = BTreeSet::new();
    targets.retain(|t| seen.insert(t.clone()));

    if failure.is_none() {
        for t in &targets {
            let Some(bound) = def.node(t).and_then(|d| d.max_visits) else {
                continue;
            };
            let visits = next.visits.get(t).copied().unwrap_or(0);
            if visits >= bound && !approval_targets.contains(t) && !next.approved.contains(t) {
                failure = Some((
                    format!("node `{t}` would run more than its max_visits = {bound} (it ran {visits} times)"),
                    Some(t.clone()),
                ));
                failed_nodes = targets.clone();
                break;
            }
        }
    }

    let task_event = |kind: EventKind, payload: serde_json::Value| {
        let mut e =
            Event::workflow(kind, workflow_id, payload).with_request_id(request_id.cloned());
        e.step = Some(step);
        e
    };
    let mut events = vec![task_event(
        EventKind::StepCompleted,
        json!({ "step": step, "completed": cursor.pending, "next": targets }),
    )];
    let ran = cursor.pending.join("+");

    if let Some((reason, node)) = failure {
        failed_nodes.dedup();
        next.pending = failed_nodes;
        events.push(task_event(
            EventKind::WorkflowFailed,
            json!({ "error": reason, "node": node, "class": ErrorClass::Permanent }),
        ));
        return Routed {
            cursor: next,
            status: WorkflowStatus::Failed,
            current_step: ran,
            errors: vec![WorkflowErrorEntry {
                step,
                node,
                attempt: 0,
                class: ErrorClass::Permanent,
                message: reason,
                at: Utc::now(),
            }],
            events,
        };
    }

    let needs_approval: Vec<String> = targets
        .iter()
        .filter(|t| !next.approved.contains(*t))
        .filter(|t| {
            approval_targets.contains(*t)
                || (def.approval_before.contains(t)
                    && next.visits.get(*t).copied().unwrap_or(0) == 0)
        })
        .cloned()
        .collect();
    next.pending = targets.clone();
    if targets.is_empty() {
        events.push(task_event(
            EventKind::WorkflowCompleted,
            json!({ "steps": step + 1 }),
        ));
        return Routed {
            cursor: next,
            status: WorkflowStatus::Completed,
            current_step: ran,
            errors: vec![],
            events,
        };
    }
    let current_step = targets.join("+");
    if !needs_approval.is_empty() {
        let reason = if approval_reasons.is_empty() {
            format!("approval required before {}", needs_approval.join(", "))
        } else {
            approval_reasons.join("; ")
        };
        events.push(task_event(
            EventKind::WorkflowAwaitingApproval,
            json!({ "pending": targets, "needs_approval": needs_approval, "reason": reason }),
        ));
        return Routed {
            cursor: next,
            status: WorkflowStatus::AwaitingApproval,
            current_step,
            errors: vec![],
            events,
        };
    }
    events.extend(assigned_events(&next, workflow_id, request_id));
    Routed {
        cursor: next,
        status: WorkflowStatus::Running,
        current_step,
        errors: vec![],
        events,
    }
}

/// A finished super-step's advance: what the commit of its last task (or
/// the transition that repairs a lost advance) writes, and the state the
/// next step starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAdvance {
    /// The next cursor, status and current step.
    pub advance: Advance,
    /// Error entries to record with it (a routing failure).
    pub errors: Vec<WorkflowErrorEntry>,
    /// Events to commit with it (`workflow.step.completed`, the end of the
    /// run or the next assignments).
    pub events: Vec<Event>,
    /// The state at the start of the next step: the merged state with the
    /// errors applied, at the next step, status and current step.
    pub next_state: WorkflowState,
}

/// Decides the advance of a super-step every pending node of which
/// committed. `start` is the state at the start of the step and `deltas`
/// the step's task deltas IN COMMIT ORDER (the order the store folds them
/// in, so routing sees the state that is stored); they are merged, routed
/// ([`route`]), and routing's errors applied.
///
/// The one place a step's advance is decided: the task that commits last
/// carries it in its commit, and the recovery of an advance no task carried
/// (a crash between sibling commits) applies it with a guarded transition.
pub fn advance<'a>(
    def: &WorkflowDefinition,
    cursor: &Cursor,
    start: WorkflowState,
    deltas: impl IntoIterator<Item = &'a StateDelta>,
    workflow_id: WorkflowId,
    request_id: Option<&RequestId>,
) -> StepAdvance {
    let mut state = start;
    for delta in deltas {
        state.apply(delta);
    }
    let Routed {
        cursor,
        status,
        current_step,
        errors,
        events,
    } = route(def, cursor, &state, workflow_id, request_id);
    state.apply(&StateDelta {
        errors: errors.clone(),
        ..StateDelta::default()
    });
    state.step = cursor.step;
    state.status = status;
    state.current_step = current_step.clone();
    StepAdvance {
        advance: Advance {
            cursor,
            status,
            current_step,
        },
        errors,
        events,
        next_state: state,
    }
}

/// The state at the START of `record`'s current step, folded from its
/// checkpoints: every checkpoint of earlier steps plus the control actions
/// of this step.
pub fn fold_step_start(record: &WorkflowRecord, checkpoints: &[Checkpoint]) -> WorkflowState {
    let step = record.cursor.step;
    let mut st = WorkflowState::initial(
        record.id,
        record.request_id.clone(),
        record.requirements.clone(),
        record.created_at,
    );
    for cp in checkpoints {
        if cp.step < step || (cp.step == step && cp.node.is_none()) {
            st.apply(&cp.delta);
            st.updated_at = cp.created_at;
        }
    }
    st.step = step;
    st.status = WorkflowStatus::Running;
    st.current_step = record.current_step.clone();
    st
}

/// The task checkpoints of `step`, by node.
pub fn task_checkpoints_at(checkpoints: &[Checkpoint], step: u64) -> BTreeMap<&str, &Checkpoint> {
    checkpoints
        .iter()
        .filter(|c| c.step == step)
        .filter_map(|c| c.node.as_deref().map(|n| (n, c)))
        .collect()
}

/// `agent.task.assigned` events for every pending node of a cursor.
pub fn assigned_events(
    cursor: &Cursor,
    workflow_id: WorkflowId,
    request_id: Option<&RequestId>,
) -> Vec<Event> {
    cursor
        .pending
        .iter()
        .map(|n| {
            let mut e = Event::workflow(
                EventKind::TaskAssigned,
                workflow_id,
                json!({ "visit": cursor.visits.get(n).copied().unwrap_or(0) }),
            )
            .with_request_id(request_id.cloned());
            e.step = Some(cursor.step);
            e.node = Some(n.clone());
            e.attempt = Some(1);
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    /// Two siblings whose join routes on the value the last of them wrote.
    const SIBLINGS: &str = r#"
name = "siblings"
start = ["x", "y"]
[nodes.x]
agent = "developer"
[nodes.y]
agent = "qa"
[nodes.z]
agent = "devops"
[[edges]]
from = ["x", "y"]
to = ["z"]
when = "context.k == 'from x'"
[[edges]]
from = ["x", "y"]
to = ["end"]
when = "context.k == 'from y'"
"#;

    fn writes(value: &str) -> StateDelta {
        StateDelta {
            shared_context: BTreeMap::from([("k".to_string(), json!(value))]),
            ..StateDelta::default()
        }
    }

    fn step_zero() -> (WorkflowDefinition, Cursor, WorkflowState) {
        let def = WorkflowDefinition::parse(SIBLINGS, "siblings.toml").unwrap();
        let cursor = Cursor {
            step: 0,
            pending: vec!["x".into(), "y".into()],
            ..Cursor::default()
        };
        let start = WorkflowState::initial(
            WorkflowId::new(),
            agentry_core::RequestId::new("req").unwrap(),
            "build it",
            Utc::now(),
        );
        (def, cursor, start)
    }

    #[test]
    fn advance_routes_on_the_deltas_merged_in_the_order_given() {
        let (def, cursor, start) = step_zero();
        let id = start.id;
        let (x, y) = (writes("from x"), writes("from y"));

        let x_last = advance(
            &def,
            &cursor,
            start.clone(),
            [&y, &x],
            id,
            Some(&RequestId::new("req").unwrap()),
        );
        assert_eq!(x_last.advance.status, WorkflowStatus::Running);
        assert_eq!(x_last.advance.cursor.step, 1);
        assert_eq!(x_last.advance.cursor.pending, ["z"]);
        assert_eq!(x_last.advance.current_step, "z");
        assert!(x_last.errors.is_empty());
        let kinds: Vec<EventKind> = x_last.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::StepCompleted, EventKind::TaskAssigned]);
        // The next step starts from the merged state, at the next step.
        let next = &x_last.next_state;
        assert_eq!(next.shared_context["k"], json!("from x"));
        assert_eq!(
            (next.step, next.status, next.current_step.as_str()),
            (1, WorkflowStatus::Running, "z")
        );

        let y_last = advance(
            &def,
            &cursor,
            start,
            [&x, &y],
            id,
            Some(&RequestId::new("req").unwrap()),
        );
        assert_eq!(y_last.advance.status, WorkflowStatus::Completed);
        assert_eq!(y_last.next_state.status, WorkflowStatus::Completed);
    }

    #[test]
    fn advance_records_a_routing_failure_in_the_next_state() {
        let (def, cursor, start) = step_zero();
        let id = start.id;
        let failed = advance(&def, &cursor, start, [&writes("neither")], id, None);
        assert_eq!(failed.advance.status, WorkflowStatus::Failed);
        assert_eq!(failed.errors.len(), 1);
        assert_eq!(failed.errors[0].message, "no edge from `x` matched");
        assert_eq!(failed.next_state.errors, failed.errors);
        assert_eq!(failed.next_state.status, WorkflowStatus::Failed);
    }
}
