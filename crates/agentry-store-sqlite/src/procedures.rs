//! The writer connection's two "stored procedures": task commits and
//! transitions as INSTEAD OF INSERT triggers on TEMP views.
//!
//! Why: every sqlx statement is a round trip to sqlx's connection thread
//! (tens of microseconds on a busy machine), and a task commit touches five
//! tables. Inserting one row per request into a view runs the trigger once
//! per row inside SQLite, so a whole batch of task commits is ONE statement,
//! and ONE round trip, whatever its size. The objects are TEMP, so they live
//! on the writer's connection only and nothing is added to the file's
//! schema; they are created when the store opens.
//!
//! Both triggers do the same, in order:
//!
//! 1. insert the checkpoint as `seq = workflows.last_seq + 1`; for a task
//!    commit only if the workflow is running at the task's step and no
//!    checkpoint of that (step, node) exists: the commit guard;
//! 2. insert one `agent_outputs` row per output, upsert the
//!    `shared_context` keys, insert the events (each from a JSON array);
//! 3. (task commits) record the outcome in `commit_results`;
//! 4. apply the checkpoint to the workflow row.
//!
//! Steps 2 to 4 act on "the pending checkpoint", the one at
//! `workflows.last_seq + 1`. Every write keeps `last_seq` equal to the
//! workflow's newest checkpoint, so a pending checkpoint exists exactly when
//! step 1 inserted one: a commit whose guard refuses it (stale, duplicate)
//! writes nothing but its outcome, by construction.

/// Columns of the `task_commits` and `transitions` views: one write
/// request each. `request` is the request's position in its batch, `now`
/// the commit time; `delta` and `cursor` are JSON; `output_ids` is a JSON
/// array of the new `agent_outputs` rows' ids, one per output of the delta
/// (the rows themselves are read from the delta); `context` is a JSON array
/// of `{id, key, value}` and `events` of `{id, kind, workflow_id, step,
/// node, attempt, request_id, payload, at}`.
macro_rules! request_columns {
    () => {
        "(request, workflow_id, step, node, attempt, delta, cursor, status, current_step, note, \
          now, output_ids, context, events)"
    };
}

/// The pending checkpoint `c` of workflow `w` (FROM items and WHERE).
macro_rules! pending_checkpoint {
    () => {
        "workflows w, checkpoints c \
         WHERE w.id = NEW.workflow_id AND c.workflow_id = w.id AND c.seq = w.last_seq + 1"
    };
}

/// Step 2: the seed tables and the outbox. Fields are read by path from
/// the (once parsed) JSON columns rather than from `json_each`'s `value`,
/// which would copy and parse each element again.
macro_rules! write_rows {
    () => {
        concat!(
            "INSERT INTO agent_outputs (id, workflow_id, agent_name, output_type, content, \
                 created_at, step) \
             SELECT NEW.output_ids ->> o.key, c.workflow_id, \
                 NEW.delta ->> (o.fullkey || '.agent_name'), \
                 NEW.delta ->> (o.fullkey || '.output_type'), \
                 NEW.delta -> (o.fullkey || '.content'), c.created_at, c.step \
             FROM json_each(NEW.delta, '$.agent_outputs') o, ",
            pending_checkpoint!(),
            " ORDER BY o.id;\n",
            "INSERT INTO shared_context (id, workflow_id, key, value, updated_at) \
             SELECT NEW.context ->> (e.fullkey || '.id'), c.workflow_id, \
                 NEW.context ->> (e.fullkey || '.key'), NEW.context -> (e.fullkey || '.value'), \
                 c.created_at \
             FROM json_each(NEW.context) e, ",
            pending_checkpoint!(),
            " ORDER BY e.id \
             ON CONFLICT (workflow_id, key) DO UPDATE \
                 SET value = excluded.value, updated_at = excluded.updated_at;\n",
            "INSERT INTO events (id, kind, workflow_id, step, node, attempt, request_id, \
                 payload, at, published) \
             SELECT NEW.events ->> (e.fullkey || '.id'), NEW.events ->> (e.fullkey || '.kind'), \
                 NEW.events ->> (e.fullkey || '.workflow_id'), \
                 NEW.events ->> (e.fullkey || '.step'), NEW.events ->> (e.fullkey || '.node'), \
                 NEW.events ->> (e.fullkey || '.attempt'), \
                 NEW.events ->> (e.fullkey || '.request_id'), \
                 NEW.events -> (e.fullkey || '.payload'), NEW.events ->> (e.fullkey || '.at'), 0 \
             FROM json_each(NEW.events) e, ",
            pending_checkpoint!(),
            " ORDER BY e.id;\n"
        )
    };
}

/// Step 4: the pending checkpoint applied to the workflow row.
macro_rules! apply_checkpoint {
    () => {
        "UPDATE workflows SET last_seq = last_seq + 1, updated_at = NEW.now, \
             cursor = COALESCE(NEW.cursor, cursor), \
             cursor_step = COALESCE(NEW.cursor ->> 'step', cursor_step), \
             status = COALESCE(NEW.status, status), \
             current_step = COALESCE(NEW.current_step, current_step) \
         WHERE id = NEW.workflow_id AND EXISTS (SELECT 1 FROM checkpoints c \
             WHERE c.workflow_id = workflows.id AND c.seq = workflows.last_seq + 1);\n"
    };
}

/// Creates the procedures on the writer connection (run once, at open).
pub(crate) const INSTALL: &str = concat!(
    "PRAGMA temp_store = MEMORY;\n",
    "CREATE TEMP VIEW task_commits ",
    request_columns!(),
    " AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL;\n",
    "CREATE TEMP VIEW transitions ",
    request_columns!(),
    " AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL;\n",
    // One row per task commit: `seq` when it applied; otherwise the
    // workflow's status and step and whether the checkpoint existed. No row:
    // no such workflow.
    "CREATE TEMP TABLE commit_results (request INTEGER NOT NULL, seq INTEGER, \
         status TEXT NOT NULL, step INTEGER NOT NULL, duplicate INTEGER NOT NULL);\n",
    "CREATE TEMP TRIGGER task_commit INSTEAD OF INSERT ON task_commits BEGIN\n",
    "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
         current_step, note, created_at) \
     SELECT id, last_seq + 1, NEW.step, NEW.node, NEW.attempt, NEW.delta, NEW.cursor, \
         COALESCE(NEW.status, status), COALESCE(NEW.current_step, current_step), '', NEW.now \
     FROM workflows \
     WHERE id = NEW.workflow_id AND status = 'running' AND cursor_step = NEW.step \
     ON CONFLICT (workflow_id, step, node) DO NOTHING;\n",
    write_rows!(),
    "INSERT INTO commit_results (request, seq, status, step, duplicate) \
     SELECT NEW.request, c.seq, w.status, w.cursor_step, \
         EXISTS (SELECT 1 FROM checkpoints d \
             WHERE d.workflow_id = w.id AND d.step = NEW.step AND d.node = NEW.node) \
     FROM workflows w LEFT JOIN checkpoints c \
         ON c.workflow_id = w.id AND c.seq = w.last_seq + 1 \
     WHERE w.id = NEW.workflow_id;\n",
    apply_checkpoint!(),
    "END;\n",
    // The caller checked the expected status and step in this transaction.
    "CREATE TEMP TRIGGER transition INSTEAD OF INSERT ON transitions BEGIN\n",
    "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
         current_step, note, created_at) \
     SELECT id, last_seq + 1, cursor_step, NULL, NULL, NEW.delta, NEW.cursor, NEW.status, \
         COALESCE(NEW.current_step, current_step), NEW.note, NEW.now \
     FROM workflows WHERE id = NEW.workflow_id;\n",
    write_rows!(),
    apply_checkpoint!(),
    "END;\n",
);

/// The view columns but `request` and `now`, from the request object
/// `$r`.
macro_rules! request_fields {
    ($r:literal) => {
        concat!(
            $r,
            " ->> 'workflow_id', ",
            $r,
            " ->> 'step', ",
            $r,
            " ->> 'node', ",
            $r,
            " ->> 'attempt', ",
            $r,
            " -> 'delta', ",
            $r,
            " -> 'cursor', ",
            $r,
            " ->> 'status', ",
            $r,
            " ->> 'current_step', ",
            $r,
            " ->> 'note', ",
            $r,
            " -> 'output_ids', ",
            $r,
            " -> 'context', ",
            $r,
            " -> 'events'"
        )
    };
}

/// Task commits: `?1` a JSON array of request objects (the fields of
/// [`INSTALL`]'s columns), `?2` the commit time. Returns a `commit_results`
/// row per request whose workflow exists (`request` is the array index).
pub(crate) const COMMIT_TASKS: &str = concat!(
    "INSERT INTO task_commits (request, workflow_id, step, node, attempt, delta, cursor, status, \
         current_step, note, output_ids, context, events, now) \
     SELECT r.key, ",
    request_fields!("r.value"),
    ", ?2 FROM json_each(?1) r ORDER BY r.key;\n",
    "DELETE FROM commit_results RETURNING request, seq, status, step, duplicate;"
);

/// One transition: `?1` the request object, `?2` the commit time. Returns
/// the workflow's [`crate::rows::WORKFLOW_COLUMNS`] after it.
pub(crate) const TRANSITION: &str = concat!(
    "INSERT INTO transitions (request, workflow_id, step, node, attempt, delta, cursor, status, \
         current_step, note, output_ids, context, events, now) \
     SELECT 0, ",
    request_fields!("?1"),
    ", ?2;\n",
    "SELECT id, request_id, requirements, status, workflow_name, definition, options, tenant, \
         cursor, current_step, created_at, updated_at \
     FROM workflows WHERE id = ?1 ->> 'workflow_id';"
);
