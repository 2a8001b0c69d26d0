//! The writer connection's "stored procedures": task commits and
//! transitions as INSTEAD OF INSERT triggers on TEMP views, and [`BATCH`],
//! the one statement that runs a whole batch of writes.
//!
//! Why: every sqlx statement is a round trip to sqlx's connection thread
//! (tens of microseconds on a busy machine, and two context switches), and
//! a task commit touches five tables. Inserting one row per request into a
//! view runs the trigger once per row inside SQLite, so all the task
//! commits of a batch are ONE statement, all its transitions another, all
//! its creates a third, and [`BATCH`] sends them (and the outbox marks) in
//! ONE round trip, whatever the batch's size. The objects are TEMP, so they
//! live on the writer's connection only and nothing is added to the file's
//! schema; they are created when the store opens.
//!
//! Both triggers do the same, in order:
//!
//! 1. insert the checkpoint as `seq = workflows.last_seq + 1`, only if the
//!    guard holds: for a task commit, the workflow is running at the task's
//!    step and no checkpoint of that (step, node) exists; for a transition,
//!    the workflow has an expected status (and step, when one is expected);
//! 2. insert one `agent_outputs` row per output, upsert the
//!    `shared_context` keys, insert the events (each from a JSON array);
//! 3. record the outcome in `commit_results` / `transition_results` (a
//!    transition's with the workflow row as step 4 leaves it);
//! 4. apply the checkpoint to the workflow row.
//!
//! Steps 2 to 4 act on "the pending checkpoint", the one at
//! `workflows.last_seq + 1`. Every write keeps `last_seq` equal to the
//! workflow's newest checkpoint, so a pending checkpoint exists exactly when
//! step 1 inserted one: a request whose guard refuses it (a stale or
//! duplicate commit, a transition from the wrong status) writes nothing but
//! its outcome, by construction.

/// Columns of the `task_commits` view (the `transitions` view has the
/// same but `step`, `node` and `attempt`, and adds `expected_status`, a
/// JSON array of statuses, and `expected_step`): one write request each.
/// `request` is the request's position in its batch, `now`
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
        concat!(
            // The status on its own, only when it changes: assigning it
            // re-writes its index entry even to the same value.
            "UPDATE workflows SET status = NEW.status \
             WHERE id = NEW.workflow_id AND status IS NOT NEW.status AND NEW.status IS NOT NULL \
                 AND EXISTS (SELECT 1 FROM checkpoints c \
                     WHERE c.workflow_id = workflows.id AND c.seq = workflows.last_seq + 1);\n",
            "UPDATE workflows SET last_seq = last_seq + 1, updated_at = NEW.now, \
                 cursor = COALESCE(NEW.cursor, cursor), \
                 cursor_step = COALESCE(NEW.cursor ->> 'step', cursor_step), \
                 current_step = COALESCE(NEW.current_step, current_step) \
             WHERE id = NEW.workflow_id AND EXISTS (SELECT 1 FROM checkpoints c \
                 WHERE c.workflow_id = workflows.id AND c.seq = workflows.last_seq + 1);\n"
        )
    };
}

/// The `workflows` columns of a [`agentry_core::WorkflowRecord`] (see
/// [`crate::rows::WORKFLOW_COLUMNS`]) plus `cursor_step`.
macro_rules! record_columns {
    () => {
        "id, request_id, requirements, status, workflow_name, definition, options, tenant, \
         cursor, cursor_step, current_step, created_at, updated_at"
    };
}

/// Creates the procedures on the writer connection (run once, at open).
pub(crate) const INSTALL: &str = concat!(
    "PRAGMA temp_store = MEMORY;\n",
    // SQLite's default, set on purpose: the checkpointer (see `writer`) does
    // most of the copying, off this connection; what is left for the
    // writer's own checkpoint every 1000 pages is small, and it is what
    // lets the next transaction start the log over (so it stays short).
    "PRAGMA wal_autocheckpoint = 1000;\n",
    "CREATE TEMP VIEW task_commits ",
    request_columns!(),
    " AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL;\n",
    "CREATE TEMP VIEW transitions (request, workflow_id, expected_status, expected_step, delta, \
         cursor, status, current_step, note, now, output_ids, context, events) \
     AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;\n",
    // One row per task commit: `seq` when it applied; otherwise the
    // workflow's status and step and whether the checkpoint existed. No row:
    // no such workflow.
    "CREATE TEMP TABLE commit_results (request INTEGER NOT NULL, seq INTEGER, \
         status TEXT NOT NULL, step INTEGER NOT NULL, duplicate INTEGER NOT NULL);\n",
    // One row per transition: whether it applied, and the workflow row right
    // after it (all NULL: no such workflow).
    "CREATE TEMP TABLE transition_results (request INTEGER NOT NULL, applied INTEGER NOT NULL, ",
    record_columns!(),
    ");\n",
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
    // The guard (expected status and step) is the checkpoint's WHERE: a
    // refused transition writes nothing but its result.
    "CREATE TEMP TRIGGER transition INSTEAD OF INSERT ON transitions BEGIN\n",
    "INSERT INTO checkpoints (workflow_id, seq, step, node, attempt, delta, cursor, status, \
         current_step, note, created_at) \
     SELECT id, last_seq + 1, cursor_step, NULL, NULL, NEW.delta, NEW.cursor, NEW.status, \
         COALESCE(NEW.current_step, current_step), NEW.note, NEW.now \
     FROM workflows WHERE id = NEW.workflow_id \
         AND status IN (SELECT value FROM json_each(NEW.expected_status)) \
         AND (NEW.expected_step IS NULL OR cursor_step = NEW.expected_step);\n",
    "INSERT INTO transition_results (request, applied) \
     SELECT NEW.request, EXISTS (SELECT 1 FROM ",
    pending_checkpoint!(),
    ");\n",
    write_rows!(),
    apply_checkpoint!(),
    "UPDATE transition_results SET (",
    record_columns!(),
    ") = (SELECT ",
    record_columns!(),
    " FROM workflows WHERE id = NEW.workflow_id) WHERE request = NEW.request;\n",
    "END;\n",
);

/// The parameters of [`BATCH`] as the one-row table `p`, opening each of
/// its statements that reads them. Every such statement names all five, in
/// order: sqlx binds a numbered parameter that a statement skips wrongly.
/// With an argument, also the requests of that array as the table `r`
/// (`key`, `value`), MATERIALIZED so that each request object is rendered
/// as JSON text once, not again at every `r.value` in the statement (its
/// twelve fields are then read from one parse, by SQLite's JSON cache).
macro_rules! batch_input {
    () => {
        "WITH p (creates, transitions, commits, seqs, now) AS (SELECT ?1, ?2, ?3, ?4, ?5) "
    };
    ($array:literal) => {
        concat!(
            batch_input!(),
            ", r (key, value) AS MATERIALIZED (SELECT j.key, j.value FROM p, json_each(p.",
            $array,
            ") j) "
        )
    };
}

/// The SQL of a whole batch of writes: `?1` a JSON array of create
/// objects, `?2` of transition objects, `?3` of task-commit objects (the
/// fields of [`INSTALL`]'s view columns), `?4` a JSON array of event seqs to
/// mark published, `?5` the commit time. Each kind runs in array order;
/// the kinds run in that order (requests of one batch were all in flight at
/// once, so any order among them is one their callers could have seen).
///
/// Returns rows tagged by `kind`: `create` (`request` the index in `?1` and
/// the workflow's [`crate::rows::WORKFLOW_COLUMNS`], that of an earlier
/// request with the same request id if there was one; no row when the
/// insert did nothing, which cannot happen without an error), `transition`
/// (`request`, `applied` and the workflow row after it, NULL when it does
/// not exist) and `commit` (a `commit_results` row).
macro_rules! batch_sql {
    () => {
        concat!(
    batch_input!("creates"),
    "INSERT INTO workflows (id, request_id, requirements, status, created_at, updated_at, \
         workflow_name, definition, options, tenant, cursor, cursor_step, current_step, last_seq) \
     SELECT ",
    "r.value ->> 'id'",
    ", ",
    "r.value ->> 'request_id'",
    ", ",
    "r.value ->> 'requirements'",
    ", 'pending', p.now, p.now, ",
    "r.value ->> 'workflow_name'",
    ", ",
    "r.value ->> 'definition'",
    ", ",
    "r.value ->> 'options'",
    ", ",
    "r.value ->> 'tenant'",
    ", ",
    "r.value ->> 'cursor'",
    ", 0, '', 0 \
     FROM p, r WHERE true ORDER BY r.key \
     ON CONFLICT (request_id) DO NOTHING;\n",
    batch_input!("creates"),
    "SELECT 'create' AS kind, r.key AS request, w.id, w.request_id, w.requirements, w.status, \
         w.workflow_name, w.definition, w.options, w.tenant, w.cursor, w.current_step, \
         w.created_at, w.updated_at \
     FROM p, r \
         JOIN workflows w ON w.request_id = ",
    "r.value ->> 'request_id'",
    ";\n",
    batch_input!("transitions"),
    "INSERT INTO transitions (request, workflow_id, expected_status, expected_step, delta, \
         cursor, status, current_step, note, output_ids, context, events, now) \
     SELECT r.key, ",
    "r.value ->> 'workflow_id'",
    ", ",
    "r.value -> 'expected_status'",
    ", ",
    "r.value ->> 'expected_step'",
    ", ",
    "r.value -> 'delta'",
    ", ",
    "r.value -> 'cursor'",
    ", ",
    "r.value ->> 'status'",
    ", ",
    "r.value ->> 'current_step'",
    ", ",
    "r.value ->> 'note'",
    ", ",
    "r.value -> 'output_ids'",
    ", ",
    "r.value -> 'context'",
    ", ",
    "r.value -> 'events'",
    ", p.now FROM p, r ORDER BY r.key;\n",
    "DELETE FROM transition_results RETURNING 'transition' AS kind, request, applied, ",
    record_columns!(),
    ";\n",
    batch_input!("commits"),
    "INSERT INTO task_commits (request, workflow_id, step, node, attempt, delta, cursor, status, \
         current_step, note, output_ids, context, events, now) \
     SELECT r.key, ",
    "r.value ->> 'workflow_id'",
    ", ",
    "r.value ->> 'step'",
    ", ",
    "r.value ->> 'node'",
    ", ",
    "r.value ->> 'attempt'",
    ", ",
    "r.value -> 'delta'",
    ", ",
    "r.value -> 'cursor'",
    ", ",
    "r.value ->> 'status'",
    ", ",
    "r.value ->> 'current_step'",
    ", ",
    "r.value ->> 'note'",
    ", ",
    "r.value -> 'output_ids'",
    ", ",
    "r.value -> 'context'",
    ", ",
    "r.value -> 'events'",
    ", p.now FROM p, r ORDER BY r.key;\n",
    "DELETE FROM commit_results RETURNING 'commit' AS kind, request, seq, status, step, \
         duplicate;\n",
    batch_input!(),
    "UPDATE events SET published = 1 \
     WHERE published = 0 AND seq IN (SELECT j.value FROM p, json_each(p.seqs) j);"
        )
    };
}

/// A whole batch of writes in ONE round trip (see `batch_sql!`).
pub(crate) const BATCH: &str = batch_sql!();

/// The optimistic run of a batch, transaction and all, in one round trip:
/// `BEGIN IMMEDIATE`, [`BATCH`], `COMMIT`. sqlx stops at the first
/// statement that fails, so a failure never reaches the COMMIT.
pub(crate) const BATCH_TRANSACTION: &str = concat!("BEGIN IMMEDIATE;\n", batch_sql!(), "\nCOMMIT;");
