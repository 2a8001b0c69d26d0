//! The bundled demo session through the five agents in graph order, on the
//! real local tracker, wiki, git code host and process sandbox: round 1's
//! tests fail for real, round 2's pass, and a retried node makes nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use agentry_agents::demo::{DEMO_REQUIREMENT, DEMO_SESSION};
use agentry_agents::{AgentConfig, AgentDeps, AgentNodeRunner};
use agentry_core::{
    AgentRole, ArtifactOwner, CodeHost, IntegrationResolver, IssueKind, NoProgress, NodeContext,
    NodeRunner, TaskId, TaskKey, Tracker, Wiki, WorkflowId, WorkflowState,
};
use agentry_integrations_local::LocalIntegrations;
use agentry_llm_scripted::ScriptedProvider;
use agentry_sandbox_process::{ProcessSandbox, SandboxConfig};
use serde_json::{json, Value};

struct Demo {
    runner: AgentNodeRunner,
    owner: ArtifactOwner,
    tracker: Arc<dyn Tracker>,
    wiki: Arc<dyn Wiki>,
    code_host: Arc<dyn CodeHost>,
    state: WorkflowState,
    visits: HashMap<String, u32>,
}

/// The local integrations on a fresh data directory.
async fn open_local() -> (LocalIntegrations, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().unwrap();
    let local = LocalIntegrations::open(&data_dir.path().join("agentry.db"), data_dir.path())
        .await
        .unwrap();
    (local, data_dir)
}

impl Demo {
    /// A demo workflow of `owner` on the local integrations in `data_dir`.
    async fn new(local: &LocalIntegrations, data_dir: &Path, owner: ArtifactOwner) -> Demo {
        let ports = local.integrations(&owner).await.unwrap();
        let sandbox = ProcessSandbox::new(SandboxConfig {
            work_root: Some(data_dir.join("sandbox")),
            ..SandboxConfig::default()
        });
        let llm = ScriptedProvider::from_toml_str(DEMO_SESSION, "url-shortener demo").unwrap();
        let runner = AgentNodeRunner::new(
            AgentDeps {
                llm: Arc::new(llm),
                llm_by_role: HashMap::new(),
                integrations: Arc::new(local.clone()),
                sandbox: Arc::new(sandbox),
                ledger: None,
            },
            AgentConfig::default(),
        );
        let state = WorkflowState::initial(
            WorkflowId::new(),
            agentry_core::RequestId::new("demo-1").unwrap(),
            DEMO_REQUIREMENT,
            chrono::Utc::now(),
        );
        Demo {
            runner,
            owner,
            tracker: ports.tracker,
            wiki: ports.wiki,
            code_host: ports.code_host,
            state,
            visits: HashMap::new(),
        }
    }

    fn ctx(
        &self,
        node: &str,
        role: AgentRole,
        step: u64,
        visit: u32,
        attempt: u32,
        state: &WorkflowState,
    ) -> NodeContext {
        NodeContext {
            task: TaskId::new(TaskKey::new(self.state.id, step, node), attempt),
            role: Some(role),
            check: None,
            settings: json!({}),
            visit,
            state: Arc::new(state.clone()),
            options: agentry_core::RunOptions::default(),
            owner: self.owner.clone(),
            request_id: Some(agentry_core::RequestId::new("demo").unwrap()),
            progress: Arc::new(NoProgress),
        }
    }

    /// Runs one super-step of nodes against the same state, then applies
    /// every delta (like the engine's fan-out).
    async fn step(&mut self, step: u64, nodes: &[(&str, AgentRole)]) {
        let before = self.state.clone();
        for (node, role) in nodes {
            let visit = *self.visits.get(*node).unwrap_or(&0);
            let out = self
                .runner
                .run(self.ctx(node, *role, step, visit, 1, &before))
                .await
                .unwrap_or_else(|e| panic!("{node} (step {step}) failed: {e}"));
            self.state.apply(&out.delta);
            *self.visits.entry(node.to_string()).or_default() += 1;
        }
        self.state.step = step + 1;
    }

    fn output(&self, key: &str) -> Value {
        self.state
            .agent_outputs
            .get(key)
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn counts(&self) -> (usize, usize, usize, usize) {
        let issues = self.tracker.list_issues("URL").await.unwrap().len();
        let pages = self.wiki.list_pages("URL").await.unwrap().len();
        let commits = self
            .code_host
            .commits("url-shortener", "agentry/url-shortener")
            .await
            .unwrap()
            .len();
        let mrs = self
            .code_host
            .list_merge_requests("url-shortener")
            .await
            .unwrap()
            .len();
        (issues, pages, commits, mrs)
    }
}

fn git_log_authors(git_dir: &Path, branch: &str) -> Vec<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["log", "--format=%an", branch])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The demo's graph in order: analyst, developer, QA (fails), developer,
/// QA (passes), then the writer and DevOps. Returns the state just before
/// the developer's fix.
async fn run_demo(demo: &mut Demo) -> WorkflowState {
    demo.step(0, &[("business", AgentRole::BusinessAnalyst)])
        .await;
    demo.step(1, &[("developer", AgentRole::Developer)]).await;
    demo.step(2, &[("qa", AgentRole::Qa)]).await;

    let round1 = demo.output("qa.test_run");
    assert_eq!(round1["round"], json!(1));
    assert_eq!(round1["passed"], json!(false), "{round1:#}");
    assert_ne!(round1["exit_code"], json!(0));
    assert_eq!(demo.state.lookup("context.qa.passed"), Some(json!(false)));
    let failure = demo.state.lookup("context.qa.failure").unwrap();
    assert!(
        failure["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("test_each_code_resolves_to_its_own_url"),
        "{failure:#}"
    );

    let state_before_fix = demo.state.clone();
    demo.step(3, &[("developer", AgentRole::Developer)]).await;
    demo.step(4, &[("qa", AgentRole::Qa)]).await;
    demo.step(
        5,
        &[
            ("technical_writer", AgentRole::TechnicalWriter),
            ("devops", AgentRole::Devops),
        ],
    )
    .await;
    state_before_fix
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_session_fails_once_then_passes_and_retries_make_nothing_twice() {
    let (local, data_dir) = open_local().await;
    let mut demo = Demo::new(&local, data_dir.path(), ArtifactOwner::Cli).await;
    let state_before_fix = run_demo(&mut demo).await;
    let round2 = demo.output("qa.test_run");
    assert_eq!(
        (
            round2["round"].clone(),
            round2["passed"].clone(),
            round2["exit_code"].clone()
        ),
        (json!(2), json!(true), json!(0)),
        "{round2:#}"
    );

    // Tracker: one epic, its stories (Done), and the round-1 bug.
    let issues = demo.tracker.list_issues("URL").await.unwrap();
    let of = |k: IssueKind| issues.iter().filter(|i| i.kind == k).collect::<Vec<_>>();
    assert!(!of(IssueKind::Epic).is_empty());
    assert!(of(IssueKind::Story).len() >= 3);
    assert!(of(IssueKind::Story).iter().all(|s| s.status == "Done"));
    assert_eq!(of(IssueKind::Bug).len(), 1);
    let epic = &of(IssueKind::Epic)[0].key;
    assert_eq!(
        demo.tracker.attachments(epic).await.unwrap()[0].filename,
        "analysis.json"
    );
    let comments: Vec<String> = demo
        .tracker
        .comments(epic)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.body)
        .collect();
    assert!(
        comments.iter().any(|c| c.starts_with("round 2: ")),
        "{comments:?}"
    );
    assert!(
        comments.iter().any(|c| c.starts_with("QA round 1: FAILED")),
        "{comments:?}"
    );

    // Wiki: one tree of at least three pages.
    let pages = demo.wiki.list_pages("URL").await.unwrap();
    assert!(pages.len() >= 3);
    assert_eq!(pages.iter().filter(|p| p.parent_id.is_none()).count(), 1);

    // Code host: the developer's two rounds, QA's suite (committed before
    // its first run, unchanged after), DevOps's files.
    let authors = git_log_authors(
        &data_dir.path().join("repos/url-shortener.git"),
        "agentry/url-shortener",
    );
    let agent_commits: Vec<&String> = authors
        .iter()
        .filter(|a| a.starts_with("Agentry "))
        .collect();
    assert_eq!(
        agent_commits,
        vec![
            "Agentry DevOps",
            "Agentry Developer",
            "Agentry QA",
            "Agentry Developer"
        ],
        "{authors:?}"
    );
    let files = demo
        .code_host
        .list_files("url-shortener", "agentry/url-shortener")
        .await
        .unwrap();
    for f in [
        ".gitlab-ci.yml",
        "Dockerfile",
        "deploy/deployment.yaml",
        "tests/acceptance/test_acceptance.py",
        "shortener/core.py",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} missing from {files:?}");
    }
    assert_eq!(
        demo.state
            .lookup("context.developer.commits")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // One merge request, with the passing result.
    let mrs = demo
        .code_host
        .list_merge_requests("url-shortener")
        .await
        .unwrap();
    assert_eq!(mrs.len(), 1);
    assert!(mrs[0].test_result.as_ref().unwrap().passed);
    assert!(
        mrs[0].description.contains("## Checklist"),
        "{}",
        mrs[0].description
    );

    // A retry of the developer's second visit (same task, next attempt).
    let before = demo.counts().await;
    let retry = demo.ctx(
        "developer",
        AgentRole::Developer,
        3,
        1,
        2,
        &state_before_fix,
    );
    let out = demo.runner.run(retry).await.unwrap();
    assert_eq!(
        demo.counts().await,
        before,
        "(issues, pages, commits, merge requests) changed on retry"
    );
    let commits = demo.state.lookup("context.developer.commits").unwrap();
    assert_eq!(
        out.delta.shared_context["developer.commits"][1], commits[1],
        "the retry found the same commit"
    );
}

/// Regression: a second tenant running a workflow with the same project key
/// and repository as a first one committed onto the first one's branch,
/// updated its merge request and listed its wiki pages and tracker project
/// as its own. Two tenants (and the command line) now run the whole demo on
/// ONE data directory and each ends with exactly what a lone run makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_the_same_repository_and_project_get_disjoint_artifacts() {
    let (local, data_dir) = open_local().await;
    let acme = ArtifactOwner::tenant("acme").unwrap();
    let globex = ArtifactOwner::tenant("globex").unwrap();
    let mut first = Demo::new(&local, data_dir.path(), acme.clone()).await;
    run_demo(&mut first).await;
    let first_mr = first
        .code_host
        .list_merge_requests("url-shortener")
        .await
        .unwrap();
    let first_pages = first.wiki.list_pages("URL").await.unwrap();
    let first_issues = first.tracker.list_issues("URL").await.unwrap();

    // The second tenant's round 1 fails for real: its branch does not hold
    // the first tenant's fixed code.
    let mut second = Demo::new(&local, data_dir.path(), globex).await;
    run_demo(&mut second).await;

    for demo in [&first, &second] {
        let (issues, pages, commits, mrs) = demo.counts().await;
        assert_eq!(
            (issues, pages, mrs),
            (first_issues.len(), first_pages.len(), 1),
            "{}: (issues, pages, merge requests)",
            demo.owner
        );
        assert_eq!(
            commits, 5,
            "{}: the initial commit and four of its own",
            demo.owner
        );
        let tickets = &demo.state.jira_tickets;
        let listed: Vec<String> = demo
            .tracker
            .list_issues("URL")
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert!(
            tickets.iter().all(|t| listed.contains(t)),
            "{tickets:?} {listed:?}"
        );
    }
    assert_eq!(
        first
            .code_host
            .list_merge_requests("url-shortener")
            .await
            .unwrap(),
        first_mr,
        "the second tenant changed the first one's merge request"
    );
    assert_eq!(
        first.tracker.list_issues("URL").await.unwrap(),
        first_issues
    );
    let first_ids: Vec<String> = first_pages.iter().map(|p| p.id.clone()).collect();
    for page in second.wiki.list_pages("URL").await.unwrap() {
        assert!(!first_ids.contains(&page.id), "page {} is shared", page.id);
    }

    // Real, separate repositories on disk; the command line's is untouched.
    let tenant_repo = |name: &str| {
        data_dir
            .path()
            .join(format!("tenants/{name}/repos/url-shortener.git"))
    };
    for name in ["acme", "globex"] {
        let authors = git_log_authors(&tenant_repo(name), "agentry/url-shortener");
        assert_eq!(authors.len(), 5, "{name}: {authors:?}");
    }
    for name in ["acme", "globex"] {
        let mirror = data_dir.path().join(format!("tenants/{name}/wiki/URL"));
        assert!(mirror.is_dir(), "{}", mirror.display());
    }
    assert!(!data_dir.path().join("repos/url-shortener.git").exists());
    assert!(!data_dir.path().join("wiki/URL").exists());
    let cli = local.integrations(&ArtifactOwner::Cli).await.unwrap();
    assert!(cli.tracker.list_issues("URL").await.is_err());
    assert!(cli.code_host.get_repository("url-shortener").await.is_err());
}
