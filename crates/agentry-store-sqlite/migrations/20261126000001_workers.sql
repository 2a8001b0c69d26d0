-- The worker registry (the `WorkerRegistry` port): live worker processes
-- and leases for jobs one process of many must do.
--
-- One row per worker: what it said when it registered (roles and tags as
-- JSON arrays), its last beat (`beat_at` is the worker's clock; tasks as a
-- JSON array) and, once it deregistered, `stopped_at`. Health is derived by
-- readers from `beat_at`; nothing writes for a dead worker. Timestamps are
-- RFC 3339 TEXT with nanoseconds, like every other table (fixed width, so
-- text order is time order). No index beyond the keys: a deployment has a
-- handful of workers, and listing or pruning them scans a handful of rows.

CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    roles        TEXT    NOT NULL,     -- JSON array of role names
    tags         TEXT    NOT NULL,     -- JSON array of variant tags
    concurrency  INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    started_at   TEXT    NOT NULL,
    -- the last beat (at registration: zero load at `started_at`)
    in_flight    INTEGER NOT NULL,
    tasks        TEXT    NOT NULL,     -- JSON array of TaskId texts
    completed    INTEGER NOT NULL,
    failed       INTEGER NOT NULL,
    last_task_at TEXT,
    beat_at      TEXT    NOT NULL,
    stopped_at   TEXT                  -- NULL while it runs
);

-- Leases: `name` is held by `holder` while `expires_at` is in the future
-- (the caller's clock). Taking one is ONE upsert whose DO UPDATE applies
-- only for the same holder or an expired lease, so it is atomic across
-- processes sharing the file.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
