//! The gateway's API keys ([`ApiKeyStore`]) in the store's schema. Each write
//! is ONE statement, atomic without a transaction: a duplicate id is the
//! primary key's violation (no check-then-insert race), and a revoke keeps
//! the first time with `COALESCE` in its `UPDATE`. Times are the caller's,
//! kept to the nanosecond (see `rows`).

use agentry_core::{ApiKeyRecord, ApiKeyStore, Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{db_error, is_unique_violation};
use crate::rows::{api_key_from_row, split_time, API_KEY_COLUMNS};
use crate::PostgresStore;

#[async_trait]
impl ApiKeyStore for PostgresStore {
    #[tracing::instrument(skip_all, fields(key_id = %key.id, tenant = %key.tenant, role = %key.role))]
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        let (created, created_ns) = split_time(key.created_at);
        let revoked = key.revoked_at.map(split_time);
        self.bounded("create_api_key", async {
            let inserted = sqlx::query(
                "INSERT INTO api_keys (id, tenant, role, name, secret_hash, created_at, \
                 created_at_ns, revoked_at, revoked_at_ns) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(key.role.as_str())
            .bind(&key.name)
            .bind(&key.secret_hash)
            .bind(created)
            .bind(created_ns)
            .bind(revoked.map(|(at, _)| at))
            .bind(revoked.map(|(_, ns)| ns))
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(error) if is_unique_violation(&error) => Err(Error::Conflict(format!(
                    "API key `{}` already exists",
                    key.id
                ))),
                Err(error) => Err(db_error(&format!("creating API key `{}`", key.id), error)),
            }
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        self.bounded("api_key", async {
            let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1");
            let row = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|error| db_error(&format!("reading API key `{id}`"), error))?;
            row.as_ref().map(api_key_from_row).transpose()
        })
        .await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        self.bounded("list_api_keys", async {
            let order = "ORDER BY created_at, created_at_ns, id";
            let rows = match tenant {
                Some(tenant) => {
                    let sql =
                        format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = $1 {order}");
                    sqlx::query(&sql).bind(tenant).fetch_all(&self.pool).await
                }
                None => {
                    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys {order}");
                    sqlx::query(&sql).fetch_all(&self.pool).await
                }
            }
            .map_err(|error| db_error("listing API keys", error))?;
            rows.iter().map(api_key_from_row).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(key_id = %id))]
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord> {
        let (at, ns) = split_time(at);
        self.bounded("revoke_api_key", async {
            // Every right-hand side reads the row as it was, so the CASE
            // keeps the first revocation's nanoseconds with its time.
            let sql = format!(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2), \
                 revoked_at_ns = CASE WHEN revoked_at IS NULL THEN $3 ELSE revoked_at_ns END \
                 WHERE id = $1 RETURNING {API_KEY_COLUMNS}"
            );
            let row = sqlx::query(&sql)
                .bind(id)
                .bind(at)
                .bind(ns)
                .fetch_optional(&self.pool)
                .await
                .map_err(|error| db_error(&format!("revoking API key `{id}`"), error))?;
            match row {
                Some(row) => api_key_from_row(&row),
                None => Err(Error::not_found(format!("API key `{id}`"))),
            }
        })
        .await
    }
}
