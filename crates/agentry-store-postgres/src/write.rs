//! The store's writes that belong to the commit protocol: task commits and
//! guarded transitions, each ONE statement (one round trip) run outside an
//! explicit transaction, so it commits on its own.
//!
//! Each statement is a chain of CTEs: `w` locks the workflow's row (`FOR NO
//! KEY UPDATE`: it serialises writers of one workflow, and does not block
//! the foreign-key checks of the outbox's sequencer) and reads the guard;
//! in READ COMMITTED a lock that had to wait returns the row as the winner
//! left it. `ok` is one row when the guard holds, none otherwise, and every
//! write hangs off it, so a refused write writes nothing. The events go to
//! `events_pending` (see [`crate::outbox`]); no store-wide lock is taken.

use std::sync::LazyLock;

use agentry_core::{
    CommitOutcome, Error, Result, StateDelta, TaskCommit, Transition, WorkflowId, WorkflowRecord,
    WorkflowStatus,
};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use crate::error::db_error;
use crate::outbox::{unnest_events, EventColumns, EVENT_DATA};
use crate::rows::{get_status, json, now, to_i64, workflow_from_row, WORKFLOW_COLUMNS};

/// A task commit (see [`commit_task`]). `cp`, the checkpoint's INSERT,
/// returns no row for a duplicate; the delta's writes hang off it. The
/// result is the guard as read and the new checkpoint's seq (NULL when
/// nothing was written); no row at all when the workflow does not exist.
static COMMIT_TASK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS (\
             SELECT status, cursor_step, current_step, last_seq FROM workflows \
             WHERE id = $1 FOR NO KEY UPDATE\
         ), ok AS (\
             SELECT last_seq + 1 AS seq, COALESCE($10::text, status) AS status, \
             COALESCE($11::text, current_step) AS current_step \
             FROM w WHERE status = $2 AND cursor_step = $3\
         ), cp AS (\
             INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, \
             status, current_step, note, created_at) \
             SELECT $1, ok.seq, $3, $4, $5, $6::jsonb, $7::jsonb, ok.status, ok.current_step, \
             '', $8 FROM ok ON CONFLICT (workflow_id, step, node) DO NOTHING \
             RETURNING seq, status, current_step\
         ), advanced AS (\
             UPDATE workflows SET status = cp.status, current_step = cp.current_step, \
             cursor = COALESCE($7::jsonb, workflows.cursor), \
             cursor_step = COALESCE($9::bigint, workflows.cursor_step), last_seq = cp.seq, \
             updated_at = $8 FROM cp WHERE workflows.id = $1\
         ){delta} \
         SELECT w.status, w.cursor_step, (SELECT seq FROM cp) AS committed FROM w",
        delta = delta_writes("cp", "$3", 12)
    )
});

/// A guarded control action (see [`transition`]): `up` moves the workflow
/// and returns its record, `cp` writes the control checkpoint (at the step
/// the workflow was at). The result is the guard as read and the record
/// when the guard held; no row when the workflow does not exist.
static TRANSITION_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w AS (\
             SELECT status, cursor_step, current_step, last_seq FROM workflows \
             WHERE id = $1 FOR NO KEY UPDATE\
         ), ok AS (\
             SELECT last_seq + 1 AS next_seq, cursor_step AS at_step, \
             COALESCE($6::text, current_step) AS next_current_step \
             FROM w WHERE status = ANY($2::text[]) \
             AND ($3::bigint IS NULL OR cursor_step = $3::bigint)\
         ), up AS (\
             UPDATE workflows SET status = $4, current_step = ok.next_current_step, \
             cursor = COALESCE($5::jsonb, workflows.cursor), \
             cursor_step = COALESCE($7::bigint, workflows.cursor_step), \
             last_seq = ok.next_seq, updated_at = $8 \
             FROM ok WHERE workflows.id = $1 RETURNING {WORKFLOW_COLUMNS}\
         ), cp AS (\
             INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, \
             status, current_step, note, created_at) \
             SELECT $1, ok.next_seq, ok.at_step, NULL, NULL, $9::jsonb, $5::jsonb, $4, \
             ok.next_current_step, $10, $8 FROM ok\
         ){delta} \
         SELECT w.status AS locked_status, w.cursor_step AS locked_step, up.* \
         FROM w LEFT JOIN up ON TRUE",
        delta = delta_writes("ok", "ok.at_step", 11)
    )
});

/// The CTEs that write a delta's seed-table rows and stage the events, for
/// each row of `gate` (one, or none when nothing may be written): one
/// `agent_outputs` row per output (in order), a `shared_context` upsert per
/// key, the events in order. `step` is the SQL of the step they belong to;
/// the workflow is `$1`, the time `$8`, the arrays parameters `$first` on
/// (see [`bind_delta`]).
fn delta_writes(gate: &str, step: &str, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        ", outputs AS (\
             INSERT INTO agent_outputs (id, workflow_id, agent_name, output_type, content, \
             created_at, step) \
             SELECT u.id, $1, u.agent_name, u.output_type, u.content, $8, {step} \
             FROM {gate}, UNNEST({}::uuid[], {}::text[], {}::text[], {}::jsonb[]) \
             WITH ORDINALITY AS u (id, agent_name, output_type, content, n) ORDER BY u.n\
         ), context AS (\
             INSERT INTO shared_context (id, workflow_id, key, value, updated_at) \
             SELECT u.id, $1, u.key, u.value, $8 \
             FROM {gate}, UNNEST({}::uuid[], {}::text[], {}::jsonb[]) AS u (id, key, value) \
             ON CONFLICT (workflow_id, key) DO UPDATE \
             SET value = excluded.value, updated_at = excluded.updated_at\
         ), staged AS (\
             INSERT INTO events_pending ({EVENT_DATA}) \
             SELECT {EVENT_DATA} FROM {gate}, {} ORDER BY e.n\
         )",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        unnest_events(first + 7),
    )
}

/// Binds the arrays of [`delta_writes`], in its order.
fn bind_delta<'q>(
    query: Query<'q, Postgres, PgArguments>,
    seed: &'q SeedColumns<'q>,
    events: &'q EventColumns<'q>,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(&seed.output_ids)
        .bind(&seed.agents)
        .bind(&seed.types)
        .bind(&seed.contents)
        .bind(&seed.context_ids)
        .bind(&seed.keys)
        .bind(&seed.values)
        .bind(&events.ids)
        .bind(&events.kinds)
        .bind(&events.workflows)
        .bind(&events.steps)
        .bind(&events.nodes)
        .bind(&events.attempts)
        .bind(&events.request_ids)
        .bind(&events.payloads)
        .bind(&events.ats)
        .bind(&events.at_ns)
}

/// Applies a task commit (see [`agentry_core::Store::commit_task`]) with
/// [`COMMIT_TASK_SQL`].
pub(crate) async fn commit_task(pool: &PgPool, commit: &TaskCommit) -> Result<CommitOutcome> {
    const WHAT: &str = "commit_task";
    let task = &commit.task;
    let id = task.key.workflow;
    let step = to_i64(task.key.step, "step")?;
    let advance = commit.advance.as_ref();
    let cursor_step = advance
        .map(|a| to_i64(a.cursor.step, "cursor step"))
        .transpose()?;
    let seed = SeedColumns::of(&commit.delta);
    let events = EventColumns::of(&commit.events)?;
    let query = sqlx::query(&COMMIT_TASK_SQL)
        .bind(id.0)
        .bind(WorkflowStatus::Running.as_str())
        .bind(step)
        .bind(&task.key.node)
        .bind(i64::from(task.attempt))
        .bind(json(&commit.delta))
        .bind(advance.map(|a| json(&a.cursor)))
        .bind(now())
        .bind(cursor_step)
        .bind(advance.map(|a| a.status.as_str()))
        .bind(advance.map(|a| a.current_step.as_str()));
    let row = bind_delta(query, &seed, &events)
        .fetch_optional(pool)
        .await
        .map_err(|error| db_error(&format!("{WHAT}: committing {task}"), error))?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("workflow {id}")));
    };
    let read = |error| db_error(&format!("{WHAT}: reading workflow {id}"), error);
    let status = get_status(&row, "workflows", "status")?;
    let at_step: i64 = row.try_get("cursor_step").map_err(read)?;
    let committed: Option<i64> = row.try_get("committed").map_err(read)?;
    if let Some(seq) = committed {
        return Ok(CommitOutcome::Committed {
            seq: u64::try_from(seq).unwrap_or(0),
        });
    }
    if status == WorkflowStatus::Running && at_step == step {
        // The guard held and the checkpoint exists: a duplicate.
        return Ok(CommitOutcome::Duplicate);
    }
    // A redelivery of a task that committed (and moved the workflow on) is
    // a Duplicate, not Stale. This statement's snapshot is taken after the
    // one above ended, so it sees whatever that one's lock waited for.
    let done =
        sqlx::query("SELECT 1 FROM checkpoints WHERE workflow_id = $1 AND step = $2 AND node = $3")
            .bind(id.0)
            .bind(step)
            .bind(&task.key.node)
            .fetch_optional(pool)
            .await
            .map_err(|error| db_error(&format!("{WHAT}: reading checkpoints of {id}"), error))?;
    Ok(match done {
        Some(_) => CommitOutcome::Duplicate,
        None => CommitOutcome::Stale {
            status,
            step: u64::try_from(at_step).unwrap_or(0),
        },
    })
}

/// Applies a guarded control action (see [`agentry_core::Store::transition`])
/// with [`TRANSITION_SQL`].
pub(crate) async fn transition(
    pool: &PgPool,
    id: WorkflowId,
    transition: &Transition,
) -> Result<WorkflowRecord> {
    const WHAT: &str = "transition";
    let new_step = transition
        .cursor
        .as_ref()
        .map(|c| to_i64(c.step, "cursor step"))
        .transpose()?;
    let expected: Vec<&str> = transition
        .expected_status
        .iter()
        .map(|s| s.as_str())
        .collect();
    // A step beyond i64 matches no workflow: -1 matches none either.
    let expected_step = transition
        .expected_step
        .map(|s| i64::try_from(s).unwrap_or(-1));
    let seed = SeedColumns::of(&transition.delta);
    let events = EventColumns::of(&transition.events)?;
    let query = sqlx::query(&TRANSITION_SQL)
        .bind(id.0)
        .bind(&expected)
        .bind(expected_step)
        .bind(transition.status.as_str())
        .bind(transition.cursor.as_ref().map(json))
        .bind(transition.current_step.as_deref())
        .bind(new_step)
        .bind(now())
        .bind(json(&transition.delta))
        .bind(&transition.note);
    let row = bind_delta(query, &seed, &events)
        .fetch_optional(pool)
        .await
        .map_err(|error| db_error(&format!("{WHAT}: updating workflow {id}"), error))?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("workflow {id}")));
    };
    let moved: Option<uuid::Uuid> = row
        .try_get("id")
        .map_err(|error| db_error(&format!("{WHAT}: reading workflow {id}"), error))?;
    if moved.is_some() {
        return workflow_from_row(&row);
    }
    let status = get_status(&row, "workflows", "locked_status")?;
    let step: i64 = row
        .try_get("locked_step")
        .map_err(|error| db_error(&format!("{WHAT}: reading workflow {id}"), error))?;
    let step_note = match transition.expected_step {
        Some(s) if expected_step != Some(step) => {
            format!(" at step {step} (expected step {s})")
        }
        _ => String::new(),
    };
    Err(Error::Conflict(format!(
        "workflow {id} is {status}{step_note}, expected {}",
        expected.join(" or ")
    )))
}

/// A delta's seed-table rows as one array per column: `agent_outputs` (in
/// order, with fresh ids) and `shared_context` (by key, with fresh ids for
/// the rows an upsert inserts).
struct SeedColumns<'a> {
    output_ids: Vec<Uuid>,
    agents: Vec<&'a str>,
    types: Vec<&'a str>,
    contents: Vec<Json<&'a serde_json::Value>>,
    context_ids: Vec<Uuid>,
    keys: Vec<&'a str>,
    values: Vec<Json<&'a serde_json::Value>>,
}

impl<'a> SeedColumns<'a> {
    fn of(delta: &'a StateDelta) -> Self {
        let outputs = &delta.agent_outputs;
        SeedColumns {
            output_ids: outputs.iter().map(|_| Uuid::now_v7()).collect(),
            agents: outputs.iter().map(|o| o.agent_name.as_str()).collect(),
            types: outputs.iter().map(|o| o.output_type.as_str()).collect(),
            contents: outputs.iter().map(|o| json(&o.content)).collect(),
            context_ids: delta
                .shared_context
                .keys()
                .map(|_| Uuid::now_v7())
                .collect(),
            keys: delta.shared_context.keys().map(String::as_str).collect(),
            values: delta.shared_context.values().map(json).collect(),
        }
    }
}
