//! Routing: from a finished super-step to the next cursor. A pure function of
//! the definition, the cursor of the step and the merged state, so the task
//! that finishes a step, a resume after a crash and the tests all compute the
//! same answer.

use std::collections::BTreeSet;

use agentry_core::{
    Cursor, ErrorClass, Event, EventKind, WorkflowErrorEntry, WorkflowId, WorkflowState,
    WorkflowStatus,
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
    request_id: Option<&str>,
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
        let mut e = Event::workflow(kind, workflow_id, payload)
            .with_request_id(request_id.map(String::from));
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

/// `agent.task.assigned` events for every pending node of a cursor.
pub fn assigned_events(
    cursor: &Cursor,
    workflow_id: WorkflowId,
    request_id: Option<&str>,
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
            .with_request_id(request_id.map(String::from));
            e.step = Some(cursor.step);
            e.node = Some(n.clone());
            e.attempt = Some(1);
            e
        })
        .collect()
}
