-- Agentry store schema (SQLite).
--
-- The seed's three tables (workflows, agent_outputs, shared_context) keep the
-- seed's column names; types are adapted to SQLite: UUIDs are TEXT (hyphenated,
-- lower case), JSONB is TEXT holding JSON, TIMESTAMP is TEXT in RFC 3339 with
-- nanoseconds (fixed width, so text order is time order). Declared types such
-- as UUID/JSONB/TIMESTAMP would get NUMERIC affinity in SQLite, which would
-- turn JSON text like `123` into an integer, hence TEXT.
--
-- Other crates (agentry-integrations-local) keep their own tables in the same
-- file with their own schema-version table; nothing here touches them.

CREATE TABLE workflows (
    id            TEXT PRIMARY KEY,              -- seed: UUID
    request_id    VARCHAR(255) UNIQUE,
    requirements  TEXT,
    status        VARCHAR(50),
    created_at    TEXT,                          -- seed: TIMESTAMP
    updated_at    TEXT,                          -- seed: TIMESTAMP
    -- engine columns
    workflow_name TEXT    NOT NULL DEFAULT '',
    definition    TEXT    NOT NULL DEFAULT '',
    options       TEXT    NOT NULL DEFAULT '{}', -- JSON
    tenant        TEXT,
    cursor        TEXT    NOT NULL DEFAULT '{"step":0,"pending":[]}', -- JSON
    cursor_step   INTEGER NOT NULL DEFAULT 0,    -- cursor.step, for the commit guard
    current_step  TEXT    NOT NULL DEFAULT '',
    last_seq      INTEGER NOT NULL DEFAULT 0     -- seq of the latest checkpoint
);
CREATE INDEX workflows_status ON workflows (status, id);
CREATE INDEX workflows_tenant ON workflows (tenant, id);

CREATE TABLE agent_outputs (
    id          TEXT PRIMARY KEY,                -- seed: UUID
    workflow_id TEXT REFERENCES workflows (id),
    agent_name  VARCHAR(100),
    output_type VARCHAR(50),
    content     TEXT,                            -- seed: JSONB
    created_at  TEXT,                            -- seed: TIMESTAMP
    -- engine column
    step        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX agent_outputs_workflow ON agent_outputs (workflow_id);

CREATE TABLE shared_context (
    id          TEXT PRIMARY KEY,                -- seed: UUID
    workflow_id TEXT REFERENCES workflows (id),
    key         VARCHAR(255),
    value       TEXT,                            -- seed: JSONB
    updated_at  TEXT,                            -- seed: TIMESTAMP
    UNIQUE (workflow_id, key)
);

-- History: one row per task commit (node set) or control action (node NULL).
-- A rowid table, not WITHOUT ROWID: deltas are often kilobytes, and large
-- rows in a WITHOUT ROWID (index) b-tree spill into overflow pages.
-- SQLite treats NULLs as distinct in UNIQUE, so any number of control rows
-- may share a step, while a task row is unique per (workflow, step, node).
CREATE TABLE checkpoints (
    workflow_id  TEXT    NOT NULL REFERENCES workflows (id),
    seq          INTEGER NOT NULL,
    step         INTEGER NOT NULL,
    node         TEXT,
    attempt      INTEGER,
    delta        TEXT    NOT NULL,               -- JSON StateDelta (never the whole state)
    cursor       TEXT,                           -- JSON Cursor, when it moved
    status       VARCHAR(50) NOT NULL,
    current_step TEXT    NOT NULL,
    note         TEXT    NOT NULL DEFAULT '',
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (workflow_id, seq),
    UNIQUE (workflow_id, step, node)
);

-- The transactional outbox.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    workflow_id TEXT    NOT NULL REFERENCES workflows (id),
    step        INTEGER,
    node        TEXT,
    attempt     INTEGER,
    request_id  TEXT,
    payload     TEXT    NOT NULL,                -- JSON
    at          TEXT    NOT NULL,
    published   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_workflow ON events (workflow_id, seq);
CREATE INDEX events_unpublished ON events (seq) WHERE published = 0;
