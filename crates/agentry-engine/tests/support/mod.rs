//! What the engine's tests share: fast engine settings, submissions from
//! workflow text, node runners that record what ran ([`Recorder`], and
//! [`scripted::Scripted`], whose behaviour per node is a table), the
//! [`scripted::Harness`] (an engine over the memory store and the
//! in-process bus, with workers), a store and a bus that fail on cue
//! ([`faults`]), and waits with a deadline.

// Each test binary uses part of this module.
#![allow(dead_code)]

pub mod faults;
pub mod scripted;

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentry_core::{
    NodeContext, NodeOutput, NodeRunner, Result, Store, WorkflowId, WorkflowRecord, WorkflowStatus,
};
use agentry_engine::{Engine, EngineConfig, Submission, WorkflowDefinition};
use async_trait::async_trait;

/// How long a run may take before a test fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(20);
/// How long anything else a test waits for may take.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Between two polls.
const POLL: Duration = Duration::from_millis(5);

/// Settings for tests: the run's poll and the relay every few tens of
/// milliseconds, the rest as shipped.
pub fn config() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(20),
        relay_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// Parses a workflow file's text (a test's own, so it must be valid).
pub fn definition(text: &str) -> WorkflowDefinition {
    WorkflowDefinition::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// A submission of `definition` with a fresh request id.
pub fn submission_of(definition: WorkflowDefinition) -> Submission {
    Submission {
        requirements: "Build a todo app".into(),
        request_id: None,
        definition,
        options: agentry_core::RunOptions::default(),
        tenant: None,
    }
}

/// A submission of the workflow file `text`.
pub fn submission(text: &str) -> Submission {
    submission_of(definition(text))
}

/// Runs (or resumes) `id` to its end, within [`RUN_DEADLINE`].
pub async fn run_to_end(engine: &Engine, id: WorkflowId) -> WorkflowRecord {
    tokio::time::timeout(RUN_DEADLINE, engine.run(id))
        .await
        .expect("run returns within its deadline")
        .unwrap()
}

/// Polls `cond` until it holds, or panics after [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `probe` until it yields a value, or panics after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the stored workflow `id` is `want`; returns its record.
pub async fn wait_status(
    store: &dyn Store,
    id: WorkflowId,
    want: WorkflowStatus,
) -> WorkflowRecord {
    wait_for(&format!("workflow {id} to be {want}"), || async {
        store
            .get_workflow(id)
            .await
            .ok()
            .filter(|r| r.status == want)
    })
    .await
}

/// Waits until the stored workflow `id` is at `step`.
pub async fn wait_step(store: &dyn Store, id: WorkflowId, step: u64) -> WorkflowRecord {
    wait_for(&format!("workflow {id} to reach step {step}"), || async {
        store
            .get_workflow(id)
            .await
            .ok()
            .filter(|r| r.cursor.step == step)
    })
    .await
}

/// Waits until the store holds a task checkpoint of `node`.
pub async fn wait_checkpoint(store: &dyn Store, id: WorkflowId, node: &str) {
    wait_for(&format!("a checkpoint of {node}"), || async {
        let cps = store.checkpoints(id).await.unwrap();
        cps.iter()
            .any(|c| c.node.as_deref() == Some(node))
            .then_some(())
    })
    .await
}

/// Waits until every workflow of `ids` is terminal; returns their
/// statuses in order.
pub async fn wait_terminal(store: &dyn Store, ids: &[WorkflowId]) -> Vec<WorkflowStatus> {
    let mut finals = Vec::new();
    for id in ids {
        let status = wait_for(&format!("workflow {id} to end"), || async {
            let status = store.get_workflow(*id).await.unwrap().status;
            status.is_terminal().then_some(status)
        })
        .await;
        finals.push(status);
    }
    finals
}

/// Records which nodes ran, in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<String>>);

#[async_trait]
impl NodeRunner for Recorder {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        self.0.lock().unwrap().push(ctx.task.key.node.clone());
        Ok(NodeOutput::default())
    }
}

impl Recorder {
    /// The nodes that ran, in order.
    pub fn ran(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// How often `node` ran.
    pub fn runs(&self, node: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|n| *n == node).count()
    }
}
