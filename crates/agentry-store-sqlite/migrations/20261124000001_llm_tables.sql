-- LLM call ledger and response cache.
--
-- llm_calls: one row per LLM call of a workflow (including calls of attempts
-- that failed later), so budgets and `workflows show` count real spend. The
-- queryable figures are columns; `call` holds the whole record as JSON.
-- llm_cache: responses keyed by a hash of the normalized request, with an
-- expiry in Unix milliseconds; expired rows are ignored and purged on write.

CREATE TABLE llm_calls (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id       TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached            INTEGER NOT NULL,
    cost_usd          REAL    NOT NULL,
    at                TEXT    NOT NULL,
    call              TEXT    NOT NULL  -- JSON of the whole record
);
CREATE INDEX llm_calls_workflow ON llm_calls (workflow_id, id);

CREATE TABLE llm_cache (
    key        TEXT    PRIMARY KEY,
    response   TEXT    NOT NULL,        -- JSON ChatResponse
    expires_at INTEGER NOT NULL,        -- Unix milliseconds
    created_at TEXT    NOT NULL
);
CREATE INDEX llm_cache_expiry ON llm_cache (expires_at);
