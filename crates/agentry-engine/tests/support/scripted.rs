//! A node runner whose behaviour per node is a table ([`Scripted`]), and
//! the [`Harness`]: an engine over a memory store and an in-process bus,
//! with workers, and what a test reads back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_bus_inproc::InprocBus;
use agentry_core::{
    AgentOutputWrite, Error, EventKind, NodeContext, NodeOutput, NodeRunner, Result, StateDelta,
    Store, TaskKey, WorkflowId, WorkflowRecord, WorkflowState,
};
use agentry_engine::{Engine, EngineConfig, WorkerHandle, WorkflowDefinition};
use agentry_store_memory::MemoryStore;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{config, submission_of, RUN_DEADLINE};

/// How one node behaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Sleep before answering.
    pub sleep: Duration,
    /// Fail this many first attempts (per task) with a transient error.
    pub transient: u32,
    /// Always fail with a permanent error.
    pub permanent: Option<&'static str>,
    /// Shared-context writes per visit (the last entry repeats).
    pub context: Vec<Vec<(&'static str, Value)>>,
}

/// Answers after `ms` milliseconds.
pub fn sleep(ms: u64) -> Behaviour {
    Behaviour {
        sleep: Duration::from_millis(ms),
        ..Default::default()
    }
}

/// Writes these shared-context entries, one list per visit.
pub fn writes(per_visit: Vec<Vec<(&'static str, Value)>>) -> Behaviour {
    Behaviour {
        context: per_visit,
        ..Default::default()
    }
}

/// QA whose tests fail on visits before `visit` and pass from it on.
pub fn qa_passes_from(visit: usize) -> Behaviour {
    let mut v: Vec<Vec<(&'static str, Value)>> = vec![vec![("qa.passed", json!(false))]; visit];
    v.push(vec![("qa.passed", json!(true))]);
    writes(v)
}

/// One recorded node attempt.
#[derive(Debug, Clone)]
pub struct Run {
    pub node: String,
    pub step: u64,
    pub attempt: u32,
    pub visit: u32,
    /// The check a check node ran (None for an agent node).
    pub check: Option<String>,
    pub start: Instant,
    pub end: Option<Instant>,
    pub aborted: bool,
}

/// Runs each node as its [`Behaviour`] says (a node not in the table
/// answers at once) and records every attempt. Each answer is an agent
/// output `<node>.result` of `{"visit": n}`.
#[derive(Default)]
pub struct Scripted {
    table: HashMap<String, Behaviour>,
    runs: Mutex<Vec<Run>>,
    attempts: Mutex<HashMap<TaskKey, u32>>,
}

impl Scripted {
    pub fn new(script: Vec<(&str, Behaviour)>) -> Self {
        Scripted {
            table: script
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Default::default()
        }
    }

    /// Every attempt so far, in start order.
    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().clone()
    }

    /// Completed (not aborted) runs of a node.
    pub fn count(&self, node: &str) -> usize {
        self.runs()
            .iter()
            .filter(|r| r.node == node && !r.aborted)
            .count()
    }

    /// The nodes of the completed runs, in start order.
    pub fn nodes(&self) -> Vec<String> {
        self.runs()
            .into_iter()
            .filter(|r| !r.aborted)
            .map(|r| r.node)
            .collect()
    }
}

/// Marks a run aborted if the node future is dropped before it finishes.
struct AbortGuard<'a> {
    runner: &'a Scripted,
    index: usize,
    done: bool,
}

impl Drop for AbortGuard<'_> {
    fn drop(&mut self) {
        let mut runs = self.runner.runs.lock();
        let r = &mut runs[self.index];
        r.end = Some(Instant::now());
        r.aborted = !self.done;
    }
}

#[async_trait]
impl NodeRunner for Scripted {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let node = ctx.task.key.node.clone();
        let b = self.table.get(&node).cloned().unwrap_or_default();
        let index = {
            let mut runs = self.runs.lock();
            runs.push(Run {
                node: node.clone(),
                step: ctx.task.key.step,
                attempt: ctx.task.attempt,
                visit: ctx.visit,
                check: ctx.check.clone(),
                start: Instant::now(),
                end: None,
                aborted: false,
            });
            runs.len() - 1
        };
        let mut guard = AbortGuard {
            runner: self,
            index,
            done: false,
        };
        let n = {
            let mut a = self.attempts.lock();
            let n = a.entry(ctx.task.key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        ctx.report(format!("running {node}"), Some(0.5));
        tokio::time::sleep(b.sleep).await;
        guard.done = true;
        if n <= b.transient {
            return Err(Error::transient(format!("{node} flaked (attempt {n})")));
        }
        if let Some(msg) = b.permanent {
            return Err(Error::permanent(msg));
        }
        let mut delta = StateDelta {
            agent_outputs: vec![AgentOutputWrite {
                agent_name: node.clone(),
                output_type: "result".into(),
                content: json!({ "visit": ctx.visit }),
            }],
            ..Default::default()
        };
        if !b.context.is_empty() {
            let i = (ctx.visit as usize).min(b.context.len() - 1);
            for (k, v) in &b.context[i] {
                delta.shared_context.insert(k.to_string(), v.clone());
            }
        }
        Ok(NodeOutput {
            delta,
            events: vec![],
        })
    }
}

/// An engine over a memory store and an in-process bus, with workers
/// serving every role.
pub struct Harness<R> {
    pub store: Arc<MemoryStore>,
    pub bus: Arc<InprocBus>,
    pub runner: Arc<R>,
    pub engine: Engine,
    pub workers: WorkerHandle,
}

impl<R: NodeRunner> Harness<R> {
    /// On `store`, with `workers` worker tasks.
    pub async fn on(
        store: Arc<MemoryStore>,
        runner: R,
        config: EngineConfig,
        workers: usize,
    ) -> Self {
        let runner = Arc::new(runner);
        let bus = Arc::new(InprocBus::new());
        let engine = Engine::new(store.clone(), bus.clone(), runner.clone(), config);
        let workers = engine.start_workers(Engine::all_queues(), workers).await;
        Harness {
            store,
            bus,
            runner,
            engine,
            workers,
        }
    }

    /// On a fresh store, with two worker tasks and [`config`].
    pub async fn new(runner: R) -> Self {
        Harness::on(Arc::new(MemoryStore::new()), runner, config(), 2).await
    }

    /// Submits a workflow of `definition`.
    pub async fn submit(&self, definition: WorkflowDefinition) -> WorkflowRecord {
        self.engine.submit(submission_of(definition)).await.unwrap()
    }

    /// Submits and runs with a deadline; returns the final record and state.
    pub async fn run(&self, definition: WorkflowDefinition) -> (WorkflowRecord, WorkflowState) {
        let rec = self.submit(definition).await;
        self.run_id(rec.id).await
    }

    /// Runs (or resumes) `id` with a deadline; returns the final record and
    /// state.
    pub async fn run_id(&self, id: WorkflowId) -> (WorkflowRecord, WorkflowState) {
        let rec = tokio::time::timeout(RUN_DEADLINE, self.engine.run(id))
            .await
            .expect("run finishes within its deadline")
            .unwrap();
        let state = self.store.state_at(id, None).await.unwrap();
        (rec, state)
    }

    /// The kinds of the workflow's stored events, in order.
    pub async fn event_kinds(&self, id: WorkflowId) -> Vec<EventKind> {
        self.store
            .events(Some(id), 0, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.kind)
            .collect()
    }

    /// `(step, node)` of every task checkpoint.
    pub async fn task_checkpoints(&self, id: WorkflowId) -> Vec<(u64, String)> {
        self.store
            .checkpoints(id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.node.map(|n| (c.step, n)))
            .collect()
    }
}
