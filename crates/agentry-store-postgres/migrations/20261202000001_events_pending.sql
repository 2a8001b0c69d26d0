-- The outbox's staging table: commits write their events here, without a
-- seq and without taking any store-wide lock, so commits of different
-- workflows run (and wait for their WAL flush) in parallel. The sequencer
-- (src/outbox.rs) moves committed rows into `events` in short transactions
-- of its own: it locks the `event_seq` row, deletes the pending rows in
-- `ord` order, numbers them from `event_seq.last` and inserts them into
-- `events`. Seqs are thus handed out in the sequencer's commit order, which
-- keeps the no-skip rule of `events(after)` (see the crate docs).
--
-- `ord` is taken at INSERT time. Two commits of one workflow are serialised
-- by the workflow's row lock, so the later one's events get larger `ord`s,
-- and the sequencer keeps each workflow's events in commit order.
--
-- An event id is unique here as in `events`: a commit repeating the id of
-- a pending event fails (unique violation). One repeating the id of an
-- event already sequenced is the same event: the sequencer drops it.
-- No foreign key: a commit holds its workflow's row lock while it inserts,
-- and `events`' key checks the row again when the sequencer moves it.
--
-- Additive: `events` and `event_seq` keep their rows; the sequencer goes on
-- from `event_seq.last`.

CREATE TABLE events_pending (
    ord         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          UUID    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    workflow_id UUID    NOT NULL,
    step        BIGINT,
    node        TEXT,
    attempt     BIGINT,
    request_id  TEXT,
    payload     JSONB   NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    at_ns       INTEGER NOT NULL DEFAULT 0
);
