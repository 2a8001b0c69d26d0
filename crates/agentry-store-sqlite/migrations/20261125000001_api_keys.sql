-- API keys of the gateway (the `ApiKeyStore` port).
--
-- One row per key; the secret itself is never stored, only `secret_hash`
-- (hex SHA-256 of the secret part). A revoked key keeps its row, with
-- `revoked_at` set, so listings and audits still show it. Timestamps are
-- RFC 3339 TEXT with nanoseconds, like every other table (fixed width, so
-- text order is time order): listings sort by (created_at, id).

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT              -- NULL while the key is valid
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
