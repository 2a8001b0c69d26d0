-- Agentry store schema (PostgreSQL).
--
-- The seed's three tables (workflows, agent_outputs, shared_context) as
-- written: UUID keys, JSONB content, the seed's VARCHAR lengths; TIMESTAMP
-- becomes TIMESTAMPTZ (an instant, whatever the session's time zone).
-- Engine columns follow the seed's. Everything is created in the
-- connection's search_path, so `PostgresOptions::schema` isolates a store.
--
-- TIMESTAMPTZ keeps microseconds. Timestamps the store makes itself are
-- truncated to microseconds before they are written (so what a call returns
-- is what a read returns); timestamps a caller hands in (an event's `at`)
-- keep their sub-microsecond nanoseconds in a `*_ns` column beside them, so
-- they round-trip exactly.

CREATE TABLE workflows (
    id            UUID PRIMARY KEY,
    request_id    VARCHAR(255) UNIQUE,
    requirements  TEXT,
    status        VARCHAR(50),
    created_at    TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ,
    -- engine columns
    workflow_name TEXT   NOT NULL DEFAULT '',
    definition    TEXT   NOT NULL DEFAULT '',
    options       JSONB  NOT NULL DEFAULT '{}',
    tenant        TEXT,
    cursor        JSONB  NOT NULL DEFAULT '{"step":0,"pending":[]}',
    cursor_step   BIGINT NOT NULL DEFAULT 0,   -- cursor.step, for the commit guard
    current_step  TEXT   NOT NULL DEFAULT '',
    last_seq      BIGINT NOT NULL DEFAULT 0    -- seq of the latest checkpoint
);
CREATE INDEX workflows_status ON workflows (status, id);
CREATE INDEX workflows_tenant ON workflows (tenant, id);

CREATE TABLE agent_outputs (
    id          UUID PRIMARY KEY,
    workflow_id UUID REFERENCES workflows (id),
    agent_name  VARCHAR(100),
    output_type VARCHAR(50),
    content     JSONB,
    created_at  TIMESTAMPTZ,
    -- engine columns
    step        BIGINT NOT NULL DEFAULT 0,
    ord         BIGINT GENERATED ALWAYS AS IDENTITY  -- write order
);
CREATE INDEX agent_outputs_workflow ON agent_outputs (workflow_id, ord);

CREATE TABLE shared_context (
    id          UUID PRIMARY KEY,
    workflow_id UUID REFERENCES workflows (id),
    key         VARCHAR(255),
    value       JSONB,
    updated_at  TIMESTAMPTZ,
    UNIQUE (workflow_id, key)
);

-- History: one row per task commit (node set) or control action (node NULL).
-- NULLs are distinct in UNIQUE, so any number of control rows share a step,
-- while a task row is unique per (workflow, step, node): a second commit of
-- the same task is a Duplicate by this constraint.
CREATE TABLE checkpoints (
    workflow_id  UUID   NOT NULL REFERENCES workflows (id),
    seq          BIGINT NOT NULL,
    step         BIGINT NOT NULL,
    node         TEXT,
    attempt      BIGINT,
    delta        JSONB  NOT NULL,              -- StateDelta (never the whole state)
    cursor       JSONB,                        -- Cursor, when it moved
    status       VARCHAR(50) NOT NULL,
    current_step TEXT   NOT NULL,
    note         TEXT   NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow_id, seq),
    UNIQUE (workflow_id, step, node)
);

-- The transactional outbox. `seq` is allocated from `event_seq` (below),
-- never from a sequence: see the crate docs.
CREATE TABLE events (
    seq         BIGINT  PRIMARY KEY,
    id          UUID    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    workflow_id UUID    NOT NULL REFERENCES workflows (id),
    step        BIGINT,
    node        TEXT,
    attempt     BIGINT,
    request_id  TEXT,
    payload     JSONB   NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    at_ns       INTEGER NOT NULL DEFAULT 0,    -- nanoseconds below `at`'s microsecond
    published   BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_workflow ON events (workflow_id, seq);
CREATE INDEX events_unpublished ON events (seq) WHERE NOT published;

-- The outbox's seq allocator: ONE row. A writer adds its events' count to
-- `last` in the transaction that inserts them; the row lock it takes is held
-- until that transaction ends, so seqs are handed out in commit order and
-- without gaps (a rollback gives them back).
CREATE TABLE event_seq (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    last     BIGINT  NOT NULL
);
INSERT INTO event_seq (only_row, last) VALUES (TRUE, 0);

-- LLM call ledger: one row per call of a workflow (including calls of
-- attempts that failed later); the queryable figures are columns, `call`
-- holds the whole record. No foreign key: a call may be recorded for a
-- workflow this store does not hold.
CREATE TABLE llm_calls (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id       UUID    NOT NULL,
    role              TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    cached            BOOLEAN NOT NULL,
    cost_usd          DOUBLE PRECISION NOT NULL,
    at                TIMESTAMPTZ NOT NULL,
    call              JSONB   NOT NULL
);
CREATE INDEX llm_calls_workflow ON llm_calls (workflow_id, id);

-- LLM response cache: responses by request hash, with an expiry; expired
-- rows are ignored and purged on write.
CREATE TABLE llm_cache (
    key        TEXT  PRIMARY KEY,
    response   JSONB NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX llm_cache_expiry ON llm_cache (expires_at);

-- API keys of the gateway: the id and a hash of the secret, never the
-- secret. A revoked key keeps its row with `revoked_at` set. Times are the
-- caller's, kept to the nanosecond with their `*_ns` columns.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    created_at_ns INTEGER NOT NULL DEFAULT 0,
    revoked_at    TIMESTAMPTZ,
    revoked_at_ns INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at, created_at_ns, id);
CREATE INDEX api_keys_created ON api_keys (created_at, created_at_ns, id);
