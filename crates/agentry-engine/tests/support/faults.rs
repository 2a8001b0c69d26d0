//! A store and a bus that fail on cue, around the memory store and the
//! in-process bus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentry_bus_inproc::InprocBus;
use agentry_core::store::{AgentOutputRecord, Page};
use agentry_core::{
    Bus, Checkpoint, CommitOutcome, Delivery, Error, Event, NewWorkflow, Result, Store,
    StoredEvent, TaskCommit, TaskMessage, Transition, WorkflowId, WorkflowQuery, WorkflowRecord,
};
use agentry_store_memory::MemoryStore;
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

/// What a [`FaultyStore`] does around its memory store's calls.
pub trait Faults: Send + Sync + 'static {
    /// Before every call; an error fails the call.
    fn before(&self) -> Result<()> {
        Ok(())
    }

    /// After the memory store committed `commit`; an error is what the
    /// caller sees instead of the outcome (a lost reply).
    fn after_commit(&self, commit_advanced: bool) -> Result<()> {
        let _ = commit_advanced;
        Ok(())
    }
}

/// A memory store with [`Faults`].
pub struct FaultyStore<F> {
    pub inner: MemoryStore,
    pub faults: F,
}

impl<F: Faults> FaultyStore<F> {
    pub fn new(faults: F) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner: MemoryStore::new(),
            faults,
        })
    }
}

/// A database that goes away while `down`: every call fails with a
/// transient error, counted in `refused`.
#[derive(Default)]
pub struct Outage {
    pub down: AtomicBool,
    pub refused: AtomicUsize,
}

impl Faults for Outage {
    fn before(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::transient("database restarting"));
        }
        Ok(())
    }
}

/// A store that commits the first advancing commit while `armed` and then
/// loses the reply (the caller sees a timeout, as when the writer is slow).
pub struct LosesOneReply {
    pub armed: AtomicBool,
}

impl Faults for LosesOneReply {
    fn after_commit(&self, commit_advanced: bool) -> Result<()> {
        if commit_advanced && self.armed.swap(false, Ordering::SeqCst) {
            return Err(Error::Timeout {
                what: "commit".into(),
                after: Duration::from_secs(30),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl<F: Faults> Store for FaultyStore<F> {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn health(&self) -> Result<()> {
        self.faults.before()?;
        self.inner.health().await
    }
    async fn create_workflow(&self, new: NewWorkflow) -> Result<WorkflowRecord> {
        self.faults.before()?;
        self.inner.create_workflow(new).await
    }
    async fn get_workflow(&self, id: WorkflowId) -> Result<WorkflowRecord> {
        self.faults.before()?;
        self.inner.get_workflow(id).await
    }
    async fn find_by_request_id(
        &self,
        r: &agentry_core::RequestId,
    ) -> Result<Option<WorkflowRecord>> {
        self.faults.before()?;
        self.inner.find_by_request_id(r).await
    }
    async fn list_workflows(&self, query: WorkflowQuery) -> Result<Page<WorkflowRecord>> {
        self.faults.before()?;
        self.inner.list_workflows(query).await
    }
    async fn commit_task(&self, commit: TaskCommit) -> Result<CommitOutcome> {
        self.faults.before()?;
        let advances = commit.advance.is_some();
        let outcome = self.inner.commit_task(commit).await?;
        self.faults.after_commit(advances)?;
        Ok(outcome)
    }
    async fn transition(&self, id: WorkflowId, t: Transition) -> Result<WorkflowRecord> {
        self.faults.before()?;
        self.inner.transition(id, t).await
    }
    async fn checkpoints(&self, id: WorkflowId) -> Result<Vec<Checkpoint>> {
        self.faults.before()?;
        self.inner.checkpoints(id).await
    }
    async fn agent_outputs(&self, id: WorkflowId) -> Result<Vec<AgentOutputRecord>> {
        self.faults.before()?;
        self.inner.agent_outputs(id).await
    }
    async fn shared_context(&self, id: WorkflowId) -> Result<BTreeMap<String, Value>> {
        self.faults.before()?;
        self.inner.shared_context(id).await
    }
    async fn events(
        &self,
        workflow: Option<WorkflowId>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        self.faults.before()?;
        self.inner.events(workflow, after, limit).await
    }
    async fn unpublished_events(&self, limit: u32) -> Result<Vec<StoredEvent>> {
        self.faults.before()?;
        self.inner.unpublished_events(limit).await
    }
    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        self.faults.before()?;
        self.inner.mark_published(seqs).await
    }
}

/// A bus whose dispatches fail while `down`, or silently vanish while
/// `drop_next` counts down (a broker that lost them); it records the queue
/// of every dispatch it took.
pub struct FlakyBus {
    pub inner: InprocBus,
    pub down: AtomicBool,
    pub drop_next: AtomicUsize,
    pub queues: Mutex<Vec<String>>,
}

impl FlakyBus {
    pub fn new() -> Arc<FlakyBus> {
        Arc::new(FlakyBus {
            inner: InprocBus::new(),
            down: AtomicBool::new(false),
            drop_next: AtomicUsize::new(0),
            queues: Mutex::new(Vec::new()),
        })
    }

    /// The queues of the dispatches taken so far.
    pub fn queues(&self) -> Vec<String> {
        self.queues.lock().unwrap().clone()
    }
}

#[async_trait]
impl Bus for FlakyBus {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
    async fn publish(&self, events: &[Event]) -> Result<()> {
        self.inner.publish(events).await
    }
    fn subscribe(&self) -> BoxStream<'static, Event> {
        self.inner.subscribe()
    }
    async fn dispatch(&self, task: TaskMessage) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::transient("broker down"));
        }
        self.queues.lock().unwrap().push(task.queue.clone());
        if self
            .drop_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(());
        }
        self.inner.dispatch(task).await
    }
    async fn consume(&self, queues: &[String]) -> Result<BoxStream<'static, Result<Delivery>>> {
        self.inner.consume(queues).await
    }
}
