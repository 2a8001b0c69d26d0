//! The gateway's API keys ([`ApiKeyStore`]) in the store's file. Like the
//! LLM tables, they are written through the read pool (single-row
//! statements, serialized by SQLite's write lock and the busy timeout)
//! rather than the group-commit writer: a key belongs to no task's commit.
//! Each write is ONE statement, so it is atomic without a transaction: a
//! duplicate id is the primary key's violation (no check-then-insert race)
//! and a revoke keeps the first time with `COALESCE` in its `UPDATE`.

use agentry_core::{ApiKeyRecord, ApiKeyStore, Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{db_error, is_primary_key_violation};
use crate::rows::{api_key_from_row, timestamp, API_KEY_COLUMNS};
use crate::SqliteStore;

#[async_trait]
impl ApiKeyStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(key_id = %key.id, tenant = %key.tenant, role = %key.role))]
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        self.read("create_api_key", move |conn| {
            Box::pin(async move {
                let inserted = sqlx::query(
                    "INSERT INTO api_keys (id, tenant, role, name, secret_hash, created_at, \
                     revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .bind(&key.id)
                .bind(&key.tenant)
                .bind(key.role.as_str())
                .bind(&key.name)
                .bind(&key.secret_hash)
                .bind(timestamp(key.created_at))
                .bind(key.revoked_at.map(timestamp))
                .execute(&mut *conn)
                .await;
                match inserted {
                    Ok(_) => Ok(()),
                    Err(error) if is_primary_key_violation(&error) => Err(Error::Conflict(
                        format!("API key `{}` already exists", key.id),
                    )),
                    Err(error) => Err(db_error(&format!("creating API key `{}`", key.id), error)),
                }
            })
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let id = id.to_string();
        self.read("api_key", move |conn| {
            Box::pin(async move {
                let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?1");
                let row = sqlx::query(&sql)
                    .bind(&id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|error| db_error(&format!("reading API key `{id}`"), error))?;
                row.as_ref().map(api_key_from_row).transpose()
            })
        })
        .await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let tenant = tenant.map(str::to_string);
        self.read("list_api_keys", move |conn| {
            Box::pin(async move {
                // Two statements rather than `?1 IS NULL OR tenant = ?1`,
                // which would keep SQLite from using the (tenant, created_at)
                // index.
                let sql = match tenant {
                    Some(_) => format!(
                        "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 \
                         ORDER BY created_at, id"
                    ),
                    None => {
                        format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
                    }
                };
                let mut query = sqlx::query(&sql);
                if let Some(tenant) = &tenant {
                    query = query.bind(tenant);
                }
                let rows = query
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|error| db_error("listing API keys", error))?;
                rows.iter().map(api_key_from_row).collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(key_id = %id))]
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord> {
        let id = id.to_string();
        self.read("revoke_api_key", move |conn| {
            Box::pin(async move {
                let sql = format!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1 \
                     RETURNING {API_KEY_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&id)
                    .bind(timestamp(at))
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|error| db_error(&format!("revoking API key `{id}`"), error))?;
                match row {
                    Some(row) => api_key_from_row(&row),
                    None => Err(Error::not_found(format!("API key `{id}`"))),
                }
            })
        })
        .await
    }
}
