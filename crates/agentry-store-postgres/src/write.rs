//! The store's writes that belong to the commit protocol: task commits and
//! guarded transitions, each ONE transaction on a pooled connection.
//!
//! Every such transaction takes its locks in the same order: first the
//! workflow's row (`SELECT ... FOR UPDATE`, which is where the guard is
//! checked), last the outbox's `event_seq` row (only when it writes events,
//! just before inserting them). No transaction waits for a workflow row
//! while it holds `event_seq`, so the two locks cannot deadlock, and
//! `event_seq` is held only for the events' INSERT and the COMMIT.

use agentry_core::{
    CommitOutcome, Error, Event, Result, StateDelta, TaskCommit, Transition, WorkflowId,
    WorkflowRecord, WorkflowStatus,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::error::db_error;
use crate::rows::{get_status, json, now, split_time, to_i64, workflow_from_row, WORKFLOW_COLUMNS};

/// What the guard reads from the locked workflow row.
struct Locked {
    status: WorkflowStatus,
    step: i64,
    current_step: String,
    last_seq: i64,
}

async fn begin(pool: &PgPool, what: &str) -> Result<Transaction<'static, Postgres>> {
    pool.begin()
        .await
        .map_err(|error| db_error(&format!("{what}: starting a transaction"), error))
}

/// Locks workflow `id`'s row until the transaction ends and reads its guard.
async fn lock_workflow(conn: &mut PgConnection, id: WorkflowId, what: &str) -> Result<Locked> {
    let row = sqlx::query(
        "SELECT status, cursor_step, current_step, last_seq FROM workflows \
         WHERE id = $1 FOR UPDATE",
    )
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|error| db_error(&format!("{what}: locking workflow {id}"), error))?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("workflow {id}")));
    };
    let read = |error| db_error(&format!("{what}: reading workflow {id}"), error);
    Ok(Locked {
        status: get_status(&row, "workflows", "status")?,
        step: row.try_get("cursor_step").map_err(read)?,
        current_step: row.try_get("current_step").map_err(read)?,
        last_seq: row.try_get("last_seq").map_err(read)?,
    })
}

async fn finish(tx: Transaction<'static, Postgres>, what: &str) -> Result<()> {
    tx.commit()
        .await
        .map_err(|error| db_error(&format!("{what}: committing"), error))
}

/// Ends a transaction that wrote nothing. A failed rollback only costs the
/// connection (sqlx closes it), so it is logged, not returned.
async fn roll_back(tx: Transaction<'static, Postgres>) {
    if let Err(error) = tx.rollback().await {
        tracing::debug!(%error, "Rolling back a refused write failed.");
    }
}

/// Applies a task commit (see [`agentry_core::Store::commit_task`]).
pub(crate) async fn commit_task(pool: &PgPool, commit: &TaskCommit) -> Result<CommitOutcome> {
    const WHAT: &str = "commit_task";
    let task = &commit.task;
    let id = task.workflow_id;
    let step = to_i64(task.step, "step")?;
    let mut tx = begin(pool, WHAT).await?;
    let locked = lock_workflow(&mut tx, id, WHAT).await?;
    if locked.status != WorkflowStatus::Running || locked.step != step {
        // A redelivery of a task that committed (and moved the workflow
        // on) is a Duplicate, not Stale.
        let done = sqlx::query(
            "SELECT 1 FROM checkpoints WHERE workflow_id = $1 AND step = $2 AND node = $3",
        )
        .bind(id.0)
        .bind(step)
        .bind(&task.node)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|error| db_error(&format!("{WHAT}: reading checkpoints of {id}"), error))?;
        roll_back(tx).await;
        return Ok(match done {
            Some(_) => CommitOutcome::Duplicate,
            None => CommitOutcome::Stale {
                status: locked.status,
                step: u64::try_from(locked.step).unwrap_or(0),
            },
        });
    }
    let at = now();
    let seq = locked.last_seq + 1;
    let (status, current_step) = match &commit.advance {
        Some(advance) => (advance.status, advance.current_step.clone()),
        None => (locked.status, locked.current_step),
    };
    let cursor = commit.advance.as_ref().map(|a| &a.cursor);
    let inserted = sqlx::query(
        "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
         current_step, note, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '', $10) \
         ON CONFLICT (workflow_id, step, node) DO NOTHING",
    )
    .bind(id.0)
    .bind(seq)
    .bind(step)
    .bind(&task.node)
    .bind(i64::from(task.attempt))
    .bind(json(&commit.delta))
    .bind(cursor.map(json))
    .bind(status.as_str())
    .bind(&current_step)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(|error| db_error(&format!("{WHAT}: writing the checkpoint of {task}"), error))?;
    if inserted.rows_affected() == 0 {
        roll_back(tx).await;
        return Ok(CommitOutcome::Duplicate);
    }
    write_seed_tables(&mut tx, id, step, &commit.delta, at, WHAT).await?;
    let cursor_step = cursor.map(|c| to_i64(c.step, "cursor step")).transpose()?;
    sqlx::query(
        "UPDATE workflows SET status = $2, current_step = $3, cursor = COALESCE($4, cursor), \
         cursor_step = COALESCE($5, cursor_step), last_seq = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(id.0)
    .bind(status.as_str())
    .bind(&current_step)
    .bind(cursor.map(json))
    .bind(cursor_step)
    .bind(seq)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(|error| db_error(&format!("{WHAT}: updating workflow {id}"), error))?;
    insert_events(&mut tx, &commit.events, WHAT).await?;
    finish(tx, WHAT).await?;
    Ok(CommitOutcome::Committed {
        seq: u64::try_from(seq).unwrap_or(0),
    })
}

/// Applies a guarded control action (see [`agentry_core::Store::transition`]).
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
    let mut tx = begin(pool, WHAT).await?;
    let locked = lock_workflow(&mut tx, id, WHAT).await?;
    let status_ok = transition.expected_status.contains(&locked.status);
    let step_ok = match transition.expected_step {
        None => true,
        Some(expected) => i64::try_from(expected).is_ok_and(|e| e == locked.step),
    };
    if !status_ok || !step_ok {
        roll_back(tx).await;
        let expected: Vec<&str> = transition
            .expected_status
            .iter()
            .map(|s| s.as_str())
            .collect();
        let step_note = match transition.expected_step {
            Some(s) if !step_ok => format!(" at step {} (expected step {s})", locked.step),
            _ => String::new(),
        };
        return Err(Error::Conflict(format!(
            "workflow {id} is {}{step_note}, expected {}",
            locked.status,
            expected.join(" or ")
        )));
    }
    let at = now();
    let seq = locked.last_seq + 1;
    // The checkpoint belongs to the step the workflow was at.
    let step = locked.step;
    let current_step = transition
        .current_step
        .clone()
        .unwrap_or(locked.current_step);
    write_seed_tables(&mut tx, id, step, &transition.delta, at, WHAT).await?;
    let sql = format!(
        "UPDATE workflows SET status = $2, current_step = $3, cursor = COALESCE($4, cursor), \
         cursor_step = COALESCE($5, cursor_step), last_seq = $6, updated_at = $7 WHERE id = $1 \
         RETURNING {WORKFLOW_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(id.0)
        .bind(transition.status.as_str())
        .bind(&current_step)
        .bind(transition.cursor.as_ref().map(json))
        .bind(new_step)
        .bind(seq)
        .bind(at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| db_error(&format!("{WHAT}: updating workflow {id}"), error))?;
    let record = workflow_from_row(&row)?;
    sqlx::query(
        "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
         current_step, note, created_at) VALUES ($1, $2, $3, NULL, NULL, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id.0)
    .bind(seq)
    .bind(step)
    .bind(json(&transition.delta))
    .bind(transition.cursor.as_ref().map(json))
    .bind(transition.status.as_str())
    .bind(&current_step)
    .bind(&transition.note)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(|error| db_error(&format!("{WHAT}: writing the checkpoint of {id}"), error))?;
    insert_events(&mut tx, &transition.events, WHAT).await?;
    finish(tx, WHAT).await?;
    Ok(record)
}

/// Writes the seed tables for a delta: one `agent_outputs` row per output
/// (in order) and a `shared_context` upsert per key.
async fn write_seed_tables(
    conn: &mut PgConnection,
    id: WorkflowId,
    step: i64,
    delta: &StateDelta,
    at: DateTime<Utc>,
    what: &str,
) -> Result<()> {
    if !delta.agent_outputs.is_empty() {
        let ids: Vec<Uuid> = delta.agent_outputs.iter().map(|_| Uuid::now_v7()).collect();
        let agents: Vec<&str> = delta
            .agent_outputs
            .iter()
            .map(|o| o.agent_name.as_str())
            .collect();
        let types: Vec<&str> = delta
            .agent_outputs
            .iter()
            .map(|o| o.output_type.as_str())
            .collect();
        let contents: Vec<Json<&serde_json::Value>> = delta
            .agent_outputs
            .iter()
            .map(|o| json(&o.content))
            .collect();
        sqlx::query(
            "INSERT INTO agent_outputs (id, workflow_id, agent_name, output_type, content, \
             created_at, step) \
             SELECT u.id, $1, u.agent_name, u.output_type, u.content, $2, $3 \
             FROM UNNEST($4::uuid[], $5::text[], $6::text[], $7::jsonb[]) \
             WITH ORDINALITY AS u (id, agent_name, output_type, content, n) ORDER BY u.n",
        )
        .bind(id.0)
        .bind(at)
        .bind(step)
        .bind(&ids)
        .bind(&agents)
        .bind(&types)
        .bind(&contents)
        .execute(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("{what}: writing agent_outputs of {id}"), error))?;
    }
    if !delta.shared_context.is_empty() {
        let ids: Vec<Uuid> = delta
            .shared_context
            .keys()
            .map(|_| Uuid::now_v7())
            .collect();
        let keys: Vec<&str> = delta.shared_context.keys().map(String::as_str).collect();
        let values: Vec<Json<&serde_json::Value>> =
            delta.shared_context.values().map(json).collect();
        sqlx::query(
            "INSERT INTO shared_context (id, workflow_id, key, value, updated_at) \
             SELECT u.id, $1, u.key, u.value, $2 \
             FROM UNNEST($3::uuid[], $4::text[], $5::jsonb[]) AS u (id, key, value) \
             ON CONFLICT (workflow_id, key) DO UPDATE \
             SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(id.0)
        .bind(at)
        .bind(&ids)
        .bind(&keys)
        .bind(&values)
        .execute(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("{what}: writing shared_context of {id}"), error))?;
    }
    Ok(())
}

/// Appends events to the outbox with the next store-wide seqs. The seqs
/// come from the `event_seq` row, whose lock this transaction then holds
/// until it ends: seqs are allocated in commit order (see the crate docs).
async fn insert_events(conn: &mut PgConnection, events: &[Event], what: &str) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(events.len())
        .map_err(|_| Error::invalid(format!("{what}: too many events")))?;
    let last: i64 = sqlx::query_scalar("UPDATE event_seq SET last = last + $1 RETURNING last")
        .bind(count)
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| db_error(&format!("{what}: allocating event seqs"), error))?;
    let first = last - count + 1;
    let seqs: Vec<i64> = (first..=last).collect();
    let mut ids = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut workflows = Vec::with_capacity(events.len());
    let mut steps = Vec::with_capacity(events.len());
    let mut nodes = Vec::with_capacity(events.len());
    let mut attempts = Vec::with_capacity(events.len());
    let mut request_ids = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut ats = Vec::with_capacity(events.len());
    let mut at_ns = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.id);
        kinds.push(event.kind.as_str());
        workflows.push(event.workflow_id.0);
        steps.push(event.step.map(|s| to_i64(s, "event step")).transpose()?);
        nodes.push(event.node.as_deref());
        attempts.push(event.attempt.map(i64::from));
        request_ids.push(event.request_id.as_deref());
        payloads.push(json(&event.payload));
        let (at, ns) = split_time(event.at);
        ats.push(at);
        at_ns.push(ns);
    }
    sqlx::query(
        "INSERT INTO events (seq, id, kind, workflow_id, step, node, attempt, request_id, \
         payload, at, at_ns) \
         SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::uuid[], $5::bigint[], \
         $6::text[], $7::bigint[], $8::text[], $9::jsonb[], $10::timestamptz[], $11::int[])",
    )
    .bind(&seqs)
    .bind(&ids)
    .bind(&kinds)
    .bind(&workflows)
    .bind(&steps)
    .bind(&nodes)
    .bind(&attempts)
    .bind(&request_ids)
    .bind(&payloads)
    .bind(&ats)
    .bind(&at_ns)
    .execute(&mut *conn)
    .await
    .map_err(|error| db_error(&format!("{what}: writing events"), error))?;
    Ok(())
}
