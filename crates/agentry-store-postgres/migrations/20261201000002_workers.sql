-- The worker registry (the `WorkerRegistry` port): live worker processes
-- and leases for jobs one process of many must do.
--
-- One row per worker: what it said when it registered (roles and tags as
-- JSONB arrays), its last beat (`beat_at` is the worker's clock; tasks as
-- a JSONB array) and, once it deregistered, `stopped_at`. Health is
-- derived by readers from `beat_at`; nothing writes for a dead worker.
-- Every time is the caller's, kept to the nanosecond with its `*_ns`
-- column (as in api_keys). No index beyond the keys: a deployment has a
-- handful to a few hundred workers, and listing or pruning them scans
-- that many rows.

CREATE TABLE workers (
    id              TEXT    PRIMARY KEY,
    host            TEXT    NOT NULL,
    pid             BIGINT  NOT NULL,
    roles           JSONB   NOT NULL,      -- array of role names
    tags            JSONB   NOT NULL,      -- array of variant tags
    concurrency     BIGINT  NOT NULL,
    version         TEXT    NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    started_at_ns   INTEGER NOT NULL DEFAULT 0,
    -- the last beat (at registration: zero load at `started_at`)
    in_flight       BIGINT  NOT NULL,
    tasks           JSONB   NOT NULL,      -- array of TaskId texts
    completed       BIGINT  NOT NULL,
    failed          BIGINT  NOT NULL,
    last_task_at    TIMESTAMPTZ,
    last_task_at_ns INTEGER,
    beat_at         TIMESTAMPTZ NOT NULL,
    beat_at_ns      INTEGER NOT NULL DEFAULT 0,
    stopped_at      TIMESTAMPTZ,           -- NULL while it runs
    stopped_at_ns   INTEGER
);

-- Leases: `name` is held by `holder` while `(expires_at, expires_at_ns)`
-- is in the future (the caller's clock). Taking one is ONE
-- `INSERT ... ON CONFLICT DO UPDATE ... WHERE` that applies only for the
-- same holder or an expired lease; PostgreSQL runs it under the row's
-- lock, re-checking the WHERE on the latest version, so it is atomic
-- across processes.
CREATE TABLE leases (
    name          TEXT PRIMARY KEY,
    holder        TEXT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    expires_at_ns INTEGER NOT NULL DEFAULT 0
);
