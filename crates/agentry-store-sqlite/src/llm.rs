//! The LLM call ledger ([`LlmLedger`]) and response cache ([`LlmCache`]) in
//! the store's file. Both write through the read pool (short single-row
//! statements, serialized by SQLite's write lock and the busy timeout)
//! rather than the group-commit writer: they are not part of a task's
//! commit, and one call's row must not wait for a batch.

use std::time::Duration;

use std::collections::BTreeMap;

use agentry_core::{ChatResponse, Error, LlmCache, LlmCall, LlmLedger, Result, Spend, WorkflowId};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;

use crate::error::db_error;
use crate::rows::{id_text, timestamp, to_i64};
use crate::SqliteStore;

#[async_trait]
impl LlmLedger for SqliteStore {
    #[tracing::instrument(skip_all, fields(workflow_id = %call.workflow_id, node = %call.node, provider = %call.provider))]
    async fn record_call(&self, call: &LlmCall) -> Result<()> {
        let json = serde_json::to_string(call)?;
        let prompt = to_i64(call.prompt_tokens, "prompt_tokens")?;
        let completion = to_i64(call.completion_tokens, "completion_tokens")?;
        let call = call.clone();
        self.read("record_llm_call", move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO llm_calls (workflow_id, role, provider, model, prompt_tokens, \
                     completion_tokens, cached, cost_usd, at, call) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .bind(id_text(call.workflow_id))
                .bind(call.role.as_str())
                .bind(&call.provider)
                .bind(&call.model)
                .bind(prompt)
                .bind(completion)
                .bind(call.cached)
                .bind(call.cost_usd)
                .bind(timestamp(call.at))
                .bind(&json)
                .execute(&mut *conn)
                .await
                .map_err(|error| db_error("recording an LLM call", error))?;
                Ok(())
            })
        })
        .await
    }

    async fn calls(&self, workflow: WorkflowId) -> Result<Vec<LlmCall>> {
        self.read("llm_calls", move |conn| {
            Box::pin(async move {
                let rows =
                    sqlx::query("SELECT call FROM llm_calls WHERE workflow_id = ?1 ORDER BY id")
                        .bind(id_text(workflow))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(|error| db_error("reading LLM calls", error))?;
                rows.iter()
                    .map(|row| {
                        let text: String = row
                            .try_get("call")
                            .map_err(|error| db_error("reading llm_calls.call", error))?;
                        serde_json::from_str(&text).map_err(|error| {
                            Error::permanent(format!("malformed llm_calls row: {error}"))
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    /// Summed in SQL: budgets ask before every LLM call, and decoding every
    /// call of the workflow each time would grow with its length. The rule
    /// is [`LlmCall::spend`]'s (a cached call adds no tokens); the
    /// conformance suite holds both to it.
    async fn spend(&self, workflow: WorkflowId) -> Result<(Spend, BTreeMap<String, Spend>)> {
        self.read("llm_spend", move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT role, SUM(cost_usd) AS cost, \
                     SUM(CASE WHEN cached THEN 0 ELSE prompt_tokens + completion_tokens END) AS tokens \
                     FROM llm_calls WHERE workflow_id = ?1 GROUP BY role",
                )
                .bind(id_text(workflow))
                .fetch_all(&mut *conn)
                .await
                .map_err(|error| db_error("summing LLM spend", error))?;
                let parts = rows
                    .iter()
                    .map(|row| {
                        let get = |e| db_error("reading LLM spend", e);
                        let tokens: i64 = row.try_get("tokens").map_err(get)?;
                        Ok((
                            row.try_get::<String, _>("role").map_err(get)?,
                            Spend {
                                cost_usd: row.try_get("cost").map_err(get)?,
                                tokens: u64::try_from(tokens).unwrap_or(0),
                            },
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Spend::by_role(parts))
            })
        })
        .await
    }
}

#[async_trait]
impl LlmCache for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<ChatResponse>> {
        let key = key.to_string();
        let now = now_ms();
        self.read("llm_cache_get", move |conn| {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT response FROM llm_cache WHERE key = ?1 AND expires_at > ?2",
                )
                .bind(&key)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|error| db_error("reading the LLM cache", error))?;
                let Some(row) = row else { return Ok(None) };
                let text: String = row
                    .try_get("response")
                    .map_err(|error| db_error("reading llm_cache.response", error))?;
                // A row this build cannot read is a miss, not a failure.
                Ok(serde_json::from_str(&text).ok())
            })
        })
        .await
    }

    async fn put(&self, key: &str, response: &ChatResponse, ttl: Duration) -> Result<()> {
        let key = key.to_string();
        let json = serde_json::to_string(response)?;
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.read("llm_cache_put", move |conn| {
            Box::pin(async move {
                sqlx::query("DELETE FROM llm_cache WHERE expires_at <= ?1")
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(|error| db_error("purging the LLM cache", error))?;
                sqlx::query(
                    "INSERT INTO llm_cache (key, response, expires_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO UPDATE SET \
                     response = excluded.response, expires_at = excluded.expires_at, \
                     created_at = excluded.created_at",
                )
                .bind(&key)
                .bind(&json)
                .bind(expires)
                .bind(timestamp(Utc::now()))
                .execute(&mut *conn)
                .await
                .map_err(|error| db_error("writing the LLM cache", error))?;
                Ok(())
            })
        })
        .await
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
