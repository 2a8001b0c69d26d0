//! Measures group-commit throughput: W concurrent workflows, S steps each,
//! one `commit_task` per step (with a ~2 KiB output, a context key and one
//! event), as the engine does.
//!
//! `cargo run --release -p agentry-store-sqlite --example commit_throughput -- [workflows] [steps] [full|normal] [dir]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use agentry_core::{
    Advance, AgentOutputWrite, CommitOutcome, Cursor, Event, EventKind, NewWorkflow, StateDelta,
    Store, TaskCommit, TaskId, TaskKey, Transition, WorkflowId, WorkflowStatus,
};
use agentry_store_sqlite::{SqliteStore, SqliteStoreOptions};
use serde_json::json;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().collect();
    let workflows: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let steps: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let synchronous = args.get(3).map(|s| s.parse().unwrap()).unwrap_or_default();
    let dir = args.get(4).map(std::path::PathBuf::from);
    let options = SqliteStoreOptions::default().with_synchronous(synchronous);
    let temp = tempfile::tempdir().unwrap();
    let path = dir
        .unwrap_or_else(|| temp.path().to_path_buf())
        .join(format!("throughput-{}.db", uuid::Uuid::new_v4().simple()));
    let store = Arc::new(SqliteStore::open(&path, options).await.unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    let blob = "x".repeat(2048);

    let mut ids = Vec::new();
    for i in 0..workflows {
        let id = WorkflowId::new();
        dyn_store
            .create_workflow(NewWorkflow {
                id,
                request_id: agentry_core::RequestId::new(format!("r{i}")).expect("a valid id"),
                requirements: "bench".into(),
                workflow_name: "bench".into(),
                definition: String::new(),
                options: agentry_core::RunOptions::default(),
                tenant: None,
            })
            .await
            .unwrap();
        dyn_store
            .transition(
                id,
                Transition {
                    expected_status: vec![WorkflowStatus::Pending],
                    expected_step: Some(0),
                    status: WorkflowStatus::Running,
                    cursor: Some(Cursor {
                        step: 0,
                        pending: vec!["n".into()],
                        ..Cursor::default()
                    }),
                    current_step: Some("n".into()),
                    delta: StateDelta::default(),
                    events: vec![],
                    note: "started".into(),
                },
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let before = store.write_stats();
    let started = Instant::now();
    let handles: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let store = dyn_store.clone();
            let blob = blob.clone();
            tokio::spawn(async move {
                for step in 0..steps {
                    let task = TaskId::new(TaskKey::new(id, step, "n"), 1);
                    let commit = TaskCommit {
                        task: task.clone(),
                        delta: StateDelta {
                            agent_outputs: vec![AgentOutputWrite {
                                agent_name: "developer".into(),
                                output_type: "code".into(),
                                content: json!({"blob": blob}),
                            }],
                            shared_context: BTreeMap::from([("step".to_string(), json!(step))]),
                            ..StateDelta::default()
                        },
                        events: vec![Event::task(EventKind::TaskCompleted, &task, json!({}))],
                        advance: Some(Advance {
                            cursor: Cursor {
                                step: step + 1,
                                pending: vec!["n".into()],
                                ..Cursor::default()
                            },
                            status: WorkflowStatus::Running,
                            current_step: "n".into(),
                        }),
                    };
                    assert!(matches!(
                        store.commit_task(commit).await.unwrap(),
                        CommitOutcome::Committed { .. }
                    ));
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = store.write_stats();
    let commits = workflows as u64 * steps;
    println!(
        "synchronous={synchronous} workflows={workflows} steps={steps}: {commits} commits in {:.2}s = {:.0} commits/s; {} batches, avg batch {:.1}, largest {}; {} bytes/workflow",
        elapsed.as_secs_f64(),
        commits as f64 / elapsed.as_secs_f64(),
        after.batches - before.batches,
        (after.requests - before.requests) as f64 / (after.batches - before.batches).max(1) as f64,
        after.largest_batch,
        store.file_size_bytes().unwrap() / workflows as u64,
    );
}
