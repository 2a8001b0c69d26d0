//! What the developer says it staged is what lands: a scripted model's
//! `write_file` calls through the real developer agent onto the real local
//! git code host, the tool answers the model gets read back from its next
//! request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentry_agents::{AgentConfig, AgentDeps, AgentNodeRunner};
use agentry_core::{
    AgentRole, ArtifactOwner, ChatRequest, ChatResponse, ChatRole, CodeHost, LlmProvider,
    NoProgress, NodeContext, NodeRunner, Result, TaskId, TaskKey, WorkflowId, WorkflowState,
    MAX_FILE_BYTES,
};
use agentry_integrations_local::LocalIntegrations;
use agentry_llm_scripted::ScriptedProvider;
use agentry_sandbox_process::{ProcessSandbox, SandboxConfig};
use serde_json::json;

/// The scripted model, keeping every request it was sent.
struct Recording {
    inner: ScriptedProvider,
    requests: Mutex<Vec<ChatRequest>>,
}

#[async_trait::async_trait]
impl LlmProvider for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        self.requests.lock().unwrap().push(request.clone());
        self.inner.complete(request).await
    }
}

const ANALYSIS: &str = r#"{"summary": "A greeter.", "project_key": "GRT",
  "project_name": "Greeter", "repository": "greeter",
  "epics": [{"title": "Greet", "description": "Say hello.",
    "stories": [{"title": "Say hello", "description": "As a user, I want a greeting.",
      "acceptance_criteria": ["hello() returns 'hello'"]}]}]}"#;

const IMPLEMENTATION: &str = r#"{"summary": "hello()", "design": "one module",
  "language": "python", "files": [{"path": "greeter/util.py", "content": "X = 1\n"}],
  "commit_message": "Add the greeter"}"#;

/// The developer's first turn: four writes, two of which cannot land.
fn session() -> String {
    let big = "x".repeat(MAX_FILE_BYTES + 1);
    format!(
        r#"
[[responses]]
role = "business_analyst"
content = '''{ANALYSIS}'''

[[responses]]
role = "developer"
turn = 0
[[responses.tool_calls]]
name = "write_file"
arguments = {{ path = ".GIT/config", content = "[core]\n\thooksPath = /tmp/x\n" }}
[[responses.tool_calls]]
name = "write_file"
arguments = {{ path = "data/dump.json", content = "{big}" }}
[[responses.tool_calls]]
name = "write_file"
arguments = {{ path = "greeter/__init__.py", content = "def hello():\n    return 'hello'\n" }}

[[responses]]
role = "developer"
turn = 1
content = '''{IMPLEMENTATION}'''
"#
    )
}

fn ctx(
    workflow: WorkflowId,
    node: &str,
    role: AgentRole,
    step: u64,
    state: &WorkflowState,
) -> NodeContext {
    NodeContext {
        task: TaskId::new(TaskKey::new(workflow, step, node), 1),
        role: Some(role),
        check: None,
        settings: json!({}),
        visit: 0,
        state: Arc::new(state.clone()),
        options: agentry_core::RunOptions::default(),
        request_id: None,
        owner: ArtifactOwner::Cli,
        progress: Arc::new(NoProgress),
    }
}

/// A developer's `write_file` to `.GIT/config` was answered "staged ... it
/// is committed with your final answer", and git dropped it from the
/// commit; a file of any size was committed.
#[tokio::test]
async fn the_developer_is_told_staged_only_for_files_that_land() {
    let data_dir = tempfile::tempdir().unwrap();
    let local = LocalIntegrations::open(&data_dir.path().join("agentry.db"), data_dir.path())
        .await
        .unwrap();
    let code_host: Arc<dyn CodeHost> = local.code_host_for(&ArtifactOwner::Cli).await.unwrap();
    let llm = Arc::new(Recording {
        inner: ScriptedProvider::from_toml_str(&session(), "repository writes").unwrap(),
        requests: Mutex::default(),
    });
    let runner = AgentNodeRunner::new(
        AgentDeps {
            llm: llm.clone(),
            llm_by_role: HashMap::new(),
            integrations: Arc::new(local.clone()),
            sandbox: Arc::new(ProcessSandbox::new(SandboxConfig::default())),
            ledger: None,
        },
        AgentConfig::default(),
    );
    let mut state = WorkflowState::initial(
        WorkflowId::new(),
        agentry_core::RequestId::new("writes-1").unwrap(),
        "A greeter.",
        chrono::Utc::now(),
    );
    let id = state.id;
    for (step, (node, role)) in [
        ("business_analyst", AgentRole::BusinessAnalyst),
        ("developer", AgentRole::Developer),
    ]
    .into_iter()
    .enumerate()
    {
        let out = runner
            .run(ctx(id, node, role, step as u64, &state))
            .await
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        state.apply(&out.delta);
        state.step = step as u64 + 1;
    }

    // What the model was told, in its next request.
    let last = llm.requests.lock().unwrap().last().cloned().unwrap();
    let answers: Vec<&str> = last
        .messages
        .iter()
        .filter(|m| m.role == ChatRole::Tool)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(answers.len(), 3, "{answers:#?}");
    assert!(
        answers[0].starts_with("error: path `.GIT/config` rejected: `.GIT` names git's own"),
        "{}",
        answers[0]
    );
    assert!(
        answers[1]
            .starts_with("error: `data/dump.json` is 1.0 MiB (1048577 bytes), over the 1 MiB"),
        "{}",
        &answers[1][..answers[1].len().min(200)]
    );
    assert!(
        answers[2].starts_with("staged `greeter/__init__.py`"),
        "{}",
        answers[2]
    );

    // What landed: exactly the staged file and the answer's.
    let branch = state
        .lookup("context.developer.branch")
        .and_then(|b| b.as_str().map(str::to_string))
        .expect("the developer records its branch");
    assert_eq!(
        code_host.list_files("greeter", &branch).await.unwrap(),
        ["README.md", "greeter/__init__.py", "greeter/util.py"]
    );
    let recorded = &state.agent_outputs["developer.implementation"]["files"];
    let paths: Vec<&str> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["greeter/__init__.py", "greeter/util.py"]);
}
