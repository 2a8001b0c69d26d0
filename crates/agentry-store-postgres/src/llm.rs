//! The LLM call ledger ([`LlmLedger`]) and response cache ([`LlmCache`]) in
//! the store's schema. Single statements on the pool, outside the commit
//! protocol: a call's row belongs to no task's commit.

use std::collections::BTreeMap;
use std::time::Duration;

use agentry_core::{ChatResponse, LlmCache, LlmCall, LlmLedger, Result, Spend, WorkflowId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use crate::error::{corrupt, db_error};
use crate::rows::{json, now, to_i64};
use crate::PostgresStore;

/// The longest a cache entry is kept, whatever TTL it is given.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[async_trait]
impl LlmLedger for PostgresStore {
    #[tracing::instrument(skip_all, fields(workflow_id = %call.workflow_id, node = %call.node, provider = %call.provider))]
    async fn record_call(&self, call: &LlmCall) -> Result<()> {
        let prompt = to_i64(call.prompt_tokens, "prompt_tokens")?;
        let completion = to_i64(call.completion_tokens, "completion_tokens")?;
        self.bounded("record_llm_call", async {
            sqlx::query(
                "INSERT INTO llm_calls (workflow_id, role, provider, model, prompt_tokens, \
                 completion_tokens, cached, cost_usd, at, call) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(call.workflow_id.0)
            .bind(call.role.as_str())
            .bind(&call.provider)
            .bind(&call.model)
            .bind(prompt)
            .bind(completion)
            .bind(call.cached)
            .bind(call.cost_usd)
            .bind(call.at)
            .bind(json(call))
            .execute(&self.pool)
            .await
            .map_err(|error| db_error("recording an LLM call", error))?;
            Ok(())
        })
        .await
    }

    async fn calls(&self, workflow: WorkflowId) -> Result<Vec<LlmCall>> {
        self.bounded("llm_calls", async {
            let rows = sqlx::query("SELECT call FROM llm_calls WHERE workflow_id = $1 ORDER BY id")
                .bind(workflow.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|error| db_error("reading LLM calls", error))?;
            rows.iter()
                .map(|row| {
                    let call: Value = row
                        .try_get("call")
                        .map_err(|error| db_error("reading llm_calls.call", error))?;
                    serde_json::from_value(call).map_err(|error| corrupt("llm_calls", error))
                })
                .collect()
        })
        .await
    }

    /// Summed in SQL: budgets ask before every LLM call. The rule is
    /// [`LlmCall::spend`]'s (a cached call adds no tokens).
    async fn spend(&self, workflow: WorkflowId) -> Result<(Spend, BTreeMap<String, Spend>)> {
        self.bounded("llm_spend", async {
            let rows = sqlx::query(
                "SELECT role, SUM(cost_usd)::DOUBLE PRECISION AS cost, \
                 SUM(CASE WHEN cached THEN 0 ELSE prompt_tokens + completion_tokens END)::BIGINT \
                 AS tokens FROM llm_calls WHERE workflow_id = $1 GROUP BY role",
            )
            .bind(workflow.0)
            .fetch_all(&self.pool)
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
        .await
    }
}

#[async_trait]
impl LlmCache for PostgresStore {
    async fn get(&self, key: &str) -> Result<Option<ChatResponse>> {
        self.bounded("llm_cache_get", async {
            let response: Option<Value> = sqlx::query_scalar(
                "SELECT response FROM llm_cache WHERE key = $1 AND expires_at > $2",
            )
            .bind(key)
            .bind(Utc::now())
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| db_error("reading the LLM cache", error))?;
            // A row this build cannot read is a miss, not a failure.
            Ok(response.and_then(|r| serde_json::from_value(r).ok()))
        })
        .await
    }

    async fn put(&self, key: &str, response: &ChatResponse, ttl: Duration) -> Result<()> {
        let at = now();
        let expires: DateTime<Utc> =
            at + chrono::Duration::from_std(ttl.min(MAX_TTL)).unwrap_or(chrono::Duration::zero());
        self.bounded("llm_cache_put", async {
            sqlx::query("DELETE FROM llm_cache WHERE expires_at <= $1")
                .bind(at)
                .execute(&self.pool)
                .await
                .map_err(|error| db_error("purging the LLM cache", error))?;
            sqlx::query(
                "INSERT INTO llm_cache (key, response, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET \
                 response = excluded.response, expires_at = excluded.expires_at, \
                 created_at = excluded.created_at",
            )
            .bind(key)
            .bind(json(response))
            .bind(expires)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(|error| db_error("writing the LLM cache", error))?;
            Ok(())
        })
        .await
    }
}
