//! In-memory [`Store`] adapter, for tests and benchmarks.
//!
//! It implements exactly the semantics of the `Store` port (guarded commits,
//! duplicate detection, a store-wide event outbox, newest-first listings), so
//! the engine's tests and benchmark exercise the same commit protocol as the
//! SQLite and PostgreSQL stores, minus the I/O. It also keeps the LLM call
//! ledger and cache, the gateway's API keys and the worker registry
//! ([`WorkerRegistry`]: workers and leases), with the same semantics as the
//! SQLite store (the conformance suites hold both to them). Beside the
//! store, [`MemoryRateLimiter`] keeps rate-limit buckets in this process:
//! the one in-memory adapter the shipped binary uses (the embedded mode's
//! buckets, and a distributed deployment's without Redis).
//!
//! Key design decision: all data lives in ONE struct behind ONE
//! `parking_lot::Mutex`, taken for the whole of each operation and never held
//! across an `.await` (no method awaits while holding it). One lock makes every
//! operation trivially atomic, which is the property the commit protocol
//! relies on; the critical sections are short (clones and inserts), so
//! contention stays low even under the engine benchmark. The rate limiter
//! is the exception: its buckets take no part in a commit, and every
//! request of the API takes one, so they are sharded by key instead.

mod ratelimit;

pub use ratelimit::MemoryRateLimiter;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use agentry_core::{
    AgentOutputRecord, ApiKeyRecord, ApiKeyStore, ChatResponse, Checkpoint, CommitOutcome, Error,
    Event, ListPage, LlmCache, LlmCall, LlmLedger, NewWorkflow, RequestId, Result, StateDelta,
    Store, StoredEvent, TaskCommit, Transition, WorkerBeat, WorkerInfo, WorkerRecord,
    WorkerRegistry, WorkflowId, WorkflowQuery, WorkflowRecord, WorkflowStatus,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::Value;
use uuid::Uuid;

/// A [`Store`] that keeps everything in memory. Cheap to create; cloning is
/// not offered, share it as `Arc<MemoryStore>`.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    workflows: HashMap<WorkflowId, WorkflowData>,
    /// Ids in creation (id) order, for newest-first listings.
    order: BTreeSet<WorkflowId>,
    by_request: HashMap<RequestId, WorkflowId>,
    /// Every stored event; `events[i].seq == i + 1`.
    events: Vec<StoredEvent>,
    /// Seqs of events not yet published.
    unpublished: BTreeSet<u64>,
    /// The LLM call ledger, in record order.
    llm_calls: Vec<LlmCall>,
    /// The LLM response cache: key -> (response, expiry; None: never).
    llm_cache: HashMap<String, (ChatResponse, Option<std::time::Instant>)>,
    /// The gateway's API keys, by id.
    api_keys: HashMap<String, ApiKeyRecord>,
    /// Registered workers, by id.
    workers: HashMap<String, WorkerRecord>,
    /// Leases by name: (holder, expiry). Live while `now < expiry`.
    leases: HashMap<String, (String, DateTime<Utc>)>,
}

struct WorkflowData {
    record: WorkflowRecord,
    checkpoints: Vec<Checkpoint>,
    /// `(step, node)` of every task checkpoint, for duplicate detection.
    task_keys: HashSet<(u64, String)>,
    outputs: Vec<AgentOutputRecord>,
    context: BTreeMap<String, Value>,
    /// Seqs of this workflow's events.
    event_seqs: Vec<u64>,
}

impl MemoryStore {
    /// An empty store: no workflow, event, key or worker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rough size in bytes of the stored data (workflow rows, checkpoints,
    /// agent outputs, shared context and events, measured as their compact
    /// JSON length). Walks everything: call it once, after a benchmark, not
    /// on a hot path.
    pub fn approx_bytes(&self) -> u64 {
        fn json_len<T: serde::Serialize>(v: &T) -> u64 {
            serde_json::to_vec(v).map(|b| b.len() as u64).unwrap_or(0)
        }
        let inner = self.inner.lock();
        let mut total = 0u64;
        for data in inner.workflows.values() {
            total += json_len(&data.record);
            total += data.checkpoints.iter().map(json_len).sum::<u64>();
            total += data.outputs.iter().map(json_len).sum::<u64>();
            total += json_len(&data.context);
        }
        total += inner.events.iter().map(json_len).sum::<u64>();
        total
    }
}

impl Inner {
    fn workflow_mut(&mut self, id: WorkflowId) -> Result<&mut WorkflowData> {
        self.workflows
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("workflow {id}")))
    }

    fn workflow(&self, id: WorkflowId) -> Result<&WorkflowData> {
        self.workflows
            .get(&id)
            .ok_or_else(|| Error::not_found(format!("workflow {id}")))
    }

    /// Appends events to the outbox with fresh store-wide seqs.
    fn push_events(&mut self, id: WorkflowId, events: Vec<Event>) {
        let mut seqs = Vec::with_capacity(events.len());
        for event in events {
            let seq = self.events.len() as u64 + 1;
            self.events.push(StoredEvent {
                seq,
                published: false,
                event,
            });
            self.unpublished.insert(seq);
            seqs.push(seq);
        }
        if let Some(data) = self.workflows.get_mut(&id) {
            data.event_seqs.extend(seqs);
        }
    }
}

impl WorkflowData {
    /// Writes the seed tables (`agent_outputs` rows, `shared_context`
    /// upserts) for a delta.
    fn write_seed_tables(&mut self, step: u64, delta: &StateDelta) {
        let now = Utc::now();
        for out in &delta.agent_outputs {
            self.outputs.push(AgentOutputRecord {
                id: Uuid::now_v7(),
                workflow_id: self.record.id,
                agent_name: out.agent_name.clone(),
                output_type: out.output_type.clone(),
                content: out.content.clone(),
                step,
                created_at: now,
            });
        }
        for (k, v) in &delta.shared_context {
            self.context.insert(k.clone(), v.clone());
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    async fn create_workflow(&self, new: NewWorkflow) -> Result<WorkflowRecord> {
        if new.requirements.trim().is_empty() {
            return Err(Error::invalid("the requirement is empty"));
        }
        let mut inner = self.inner.lock();
        if let Some(id) = inner.by_request.get(&new.request_id) {
            return Ok(inner.workflow(*id)?.record.clone());
        }
        if inner.workflows.contains_key(&new.id) {
            return Err(Error::Conflict(format!(
                "workflow {} already exists",
                new.id
            )));
        }
        let now = Utc::now();
        let record = WorkflowRecord {
            id: new.id,
            request_id: new.request_id.clone(),
            requirements: new.requirements,
            status: WorkflowStatus::Pending,
            workflow_name: new.workflow_name,
            definition: new.definition,
            options: new.options,
            tenant: new.tenant,
            cursor: Default::default(),
            current_step: String::new(),
            created_at: now,
            updated_at: now,
        };
        inner.by_request.insert(new.request_id, new.id);
        inner.order.insert(new.id);
        inner.workflows.insert(
            new.id,
            WorkflowData {
                record: record.clone(),
                checkpoints: Vec::new(),
                task_keys: HashSet::new(),
                outputs: Vec::new(),
                context: BTreeMap::new(),
                event_seqs: Vec::new(),
            },
        );
        Ok(record)
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        Ok(self.inner.lock().workflow(id)?.record.clone())
    }

    async fn find_by_request_id(&self, request_id: &RequestId) -> Result<Option<WorkflowRecord>> {
        let inner = self.inner.lock();
        Ok(inner
            .by_request
            .get(request_id)
            .and_then(|id| inner.workflows.get(id))
            .map(|d| d.record.clone()))
    }

    async fn list_workflows(&self, query: WorkflowQuery) -> Result<ListPage<WorkflowRecord>> {
        let limit = query.page_size() as usize;
        let inner = self.inner.lock();
        let ids: Box<dyn Iterator<Item = &WorkflowId>> = match query.before {
            Some(before) => Box::new(inner.order.range(..before).rev()),
            None => Box::new(inner.order.iter().rev()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for id in ids {
            let Some(data) = inner.workflows.get(id) else {
                continue;
            };
            let r = &data.record;
            if query.status.is_some_and(|s| s != r.status) {
                continue;
            }
            if query.tenant.is_some() && query.tenant != r.tenant {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(r.clone());
        }
        let next = if more {
            items.last().map(|r: &WorkflowRecord| r.id)
        } else {
            None
        };
        Ok(ListPage { items, next })
    }

    async fn commit_task(&self, commit: TaskCommit) -> Result<CommitOutcome> {
        let TaskCommit {
            task,
            delta,
            events,
            advance,
        } = commit;
        let mut inner = self.inner.lock();
        let data = inner.workflow_mut(task.key.workflow)?;
        if data
            .task_keys
            .contains(&(task.key.step, task.key.node.clone()))
        {
            return Ok(CommitOutcome::Duplicate);
        }
        let record = &data.record;
        if record.status != WorkflowStatus::Running || record.cursor.step != task.key.step {
            return Ok(CommitOutcome::Stale {
                status: record.status,
                step: record.cursor.step,
            });
        }
        let now = Utc::now();
        data.write_seed_tables(task.key.step, &delta);
        let seq = data.checkpoints.len() as u64 + 1;
        let (cursor, status, current_step) = match advance {
            Some(a) => {
                data.record.cursor = a.cursor.clone();
                data.record.status = a.status;
                data.record.current_step = a.current_step.clone();
                (Some(a.cursor), a.status, a.current_step)
            }
            None => (None, data.record.status, data.record.current_step.clone()),
        };
        data.record.updated_at = now;
        data.task_keys
            .insert((task.key.step, task.key.node.clone()));
        data.checkpoints.push(Checkpoint {
            workflow_id: task.key.workflow,
            seq,
            step: task.key.step,
            node: Some(task.key.node),
            attempt: Some(task.attempt),
            delta,
            cursor,
            status,
            current_step,
            note: String::new(),
            created_at: now,
        });
        inner.push_events(task.key.workflow, events);
        Ok(CommitOutcome::Committed { seq })
    }

    async fn transition(&self, id: WorkflowId, t: Transition) -> Result<WorkflowRecord> {
        let mut inner = self.inner.lock();
        let data = inner.workflow_mut(id)?;
        let record = &data.record;
        let status_ok = t.expected_status.contains(&record.status);
        let step_ok = t.expected_step.is_none_or(|s| s == record.cursor.step);
        if !status_ok || !step_ok {
            let expected: Vec<&str> = t.expected_status.iter().map(|s| s.as_str()).collect();
            let step_note = match t.expected_step {
                Some(s) if !step_ok => {
                    format!(" at step {} (expected step {s})", record.cursor.step)
                }
                _ => String::new(),
            };
            return Err(Error::Conflict(format!(
                "workflow {id} is {}{step_note}, expected {}",
                record.status,
                expected.join(" or ")
            )));
        }
        let now = Utc::now();
        // The checkpoint belongs to the step the workflow was at.
        let step = data.record.cursor.step;
        data.write_seed_tables(step, &t.delta);
        data.record.status = t.status;
        if let Some(cursor) = &t.cursor {
            data.record.cursor = cursor.clone();
        }
        if let Some(cs) = &t.current_step {
            data.record.current_step = cs.clone();
        }
        data.record.updated_at = now;
        let seq = data.checkpoints.len() as u64 + 1;
        data.checkpoints.push(Checkpoint {
            workflow_id: id,
            seq,
            step,
            node: None,
            attempt: None,
            delta: t.delta,
            cursor: t.cursor,
            status: t.status,
            current_step: data.record.current_step.clone(),
            note: t.note,
            created_at: now,
        });
        let record = data.record.clone();
        inner.push_events(id, t.events);
        Ok(record)
    }

    async fn checkpoints(&self, id: WorkflowId) -> Result<Vec<Checkpoint>> {
        Ok(self.inner.lock().workflow(id)?.checkpoints.clone())
    }

    async fn agent_outputs(&self, id: WorkflowId) -> Result<Vec<AgentOutputRecord>> {
        Ok(self.inner.lock().workflow(id)?.outputs.clone())
    }

    async fn shared_context(&self, id: WorkflowId) -> Result<BTreeMap<String, Value>> {
        Ok(self.inner.lock().workflow(id)?.context.clone())
    }

    async fn events(
        &self,
        workflow: Option<WorkflowId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let inner = self.inner.lock();
        match workflow {
            Some(id) => {
                let data = inner.workflow(id)?;
                Ok(data
                    .event_seqs
                    .iter()
                    .filter(|s| **s > after)
                    .take(limit)
                    .filter_map(|s| inner.events.get((*s - 1) as usize).cloned())
                    .collect())
            }
            None => Ok(inner
                .events
                .iter()
                .skip(after.min(inner.events.len() as u64) as usize)
                .take(limit)
                .cloned()
                .collect()),
        }
    }

    async fn unpublished_events(&self, limit: u32) -> Result<Vec<StoredEvent>> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let inner = self.inner.lock();
        Ok(inner
            .unpublished
            .iter()
            .take(limit)
            .filter_map(|s| inner.events.get((*s - 1) as usize).cloned())
            .collect())
    }

    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        let mut inner = self.inner.lock();
        for seq in seqs {
            if inner.unpublished.remove(seq) {
                if let Some(e) = inner.events.get_mut((*seq - 1) as usize) {
                    e.published = true;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LlmLedger for MemoryStore {
    async fn record_call(&self, call: &LlmCall) -> Result<()> {
        self.inner.lock().llm_calls.push(call.clone());
        Ok(())
    }

    async fn calls(&self, workflow: WorkflowId) -> Result<Vec<LlmCall>> {
        Ok(self
            .inner
            .lock()
            .llm_calls
            .iter()
            .filter(|c| c.workflow_id == workflow)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl LlmCache for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<ChatResponse>> {
        let now = std::time::Instant::now();
        Ok(self
            .inner
            .lock()
            .llm_cache
            .get(key)
            .filter(|(_, expires)| expires.is_none_or(|e| e > now))
            .map(|(response, _)| response.clone()))
    }

    async fn put(
        &self,
        key: &str,
        response: &ChatResponse,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let now = std::time::Instant::now();
        let mut inner = self.inner.lock();
        inner
            .llm_cache
            .retain(|_, (_, expires)| expires.is_none_or(|e| e > now));
        inner
            .llm_cache
            .insert(key.to_string(), (response.clone(), now.checked_add(ttl)));
        Ok(())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.api_keys.contains_key(&key.id) {
            return Err(Error::Conflict(format!(
                "API key `{}` already exists",
                key.id
            )));
        }
        inner.api_keys.insert(key.id.clone(), key);
        Ok(())
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(self.inner.lock().api_keys.get(id).cloned())
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let mut keys: Vec<ApiKeyRecord> = self
            .inner
            .lock()
            .api_keys
            .values()
            .filter(|key| tenant.is_none_or(|t| t == key.tenant))
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<ApiKeyRecord> {
        let mut inner = self.inner.lock();
        let key = inner
            .api_keys
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("API key `{id}`")))?;
        key.revoked_at.get_or_insert(at);
        Ok(key.clone())
    }
}

#[async_trait]
impl WorkerRegistry for MemoryStore {
    async fn register(&self, info: WorkerInfo) -> Result<()> {
        let beat = WorkerBeat {
            id: info.id.clone(),
            in_flight: 0,
            tasks: Vec::new(),
            completed: 0,
            failed: 0,
            last_task_at: None,
            at: info.started_at,
        };
        let record = WorkerRecord {
            info,
            beat,
            stopped_at: None,
        };
        self.inner
            .lock()
            .workers
            .insert(record.info.id.clone(), record);
        Ok(())
    }

    async fn heartbeat(&self, beat: WorkerBeat) -> Result<()> {
        let mut inner = self.inner.lock();
        let record = inner
            .workers
            .get_mut(&beat.id)
            .ok_or_else(|| Error::not_found(format!("worker `{}`", beat.id)))?;
        record.beat = beat;
        Ok(())
    }

    async fn deregister(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        if let Some(record) = self.inner.lock().workers.get_mut(id) {
            record.stopped_at.get_or_insert(at);
        }
        Ok(())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
        let mut workers: Vec<WorkerRecord> = self.inner.lock().workers.values().cloned().collect();
        workers
            .sort_by(|a, b| (a.info.started_at, &a.info.id).cmp(&(b.info.started_at, &b.info.id)));
        Ok(workers)
    }

    async fn prune_workers(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut inner = self.inner.lock();
        let count = inner.workers.len();
        // Kept while its last beat or its stop is at or after the cut.
        inner.workers.retain(|_, record| {
            record.beat.at >= before || record.stopped_at.is_some_and(|at| at >= before)
        });
        Ok((count - inner.workers.len()) as u64)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let expires = agentry_core::lease_expiry(name, ttl, now)?;
        let mut inner = self.inner.lock();
        let granted = match inner.leases.get(name) {
            Some((current, expiry)) => current == holder || *expiry <= now,
            None => true,
        };
        if granted {
            inner
                .leases
                .insert(name.to_string(), (holder.to_string(), expires));
        }
        Ok(granted)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner
            .leases
            .get(name)
            .is_some_and(|(current, _)| current == holder)
        {
            inner.leases.remove(name);
        }
        Ok(())
    }
}
