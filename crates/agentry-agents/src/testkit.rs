//! In-memory fakes of the ports for unit tests (the integration tests use
//! the real local adapters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use agentry_core::*;
use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Value};

use crate::runner::{AgentConfig, AgentDeps, AgentNodeRunner};
use crate::tools::ToolEnv;

/// A final answer.
pub fn answer(content: &str) -> ChatResponse {
    ChatResponse {
        content: content.to_string(),
        tool_calls: Vec::new(),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached: false,
        },
        provider: "fake".into(),
        model: "fake-1".into(),
        finish_reason: "stop".into(),
    }
}

/// A single tool call.
pub fn tool_call(name: &str, arguments: Value) -> ChatResponse {
    ChatResponse {
        tool_calls: vec![ToolCall {
            id: String::new(),
            name: name.into(),
            arguments,
        }],
        finish_reason: "tool_calls".into(),
        ..answer("")
    }
}

/// Answers from a queue; records the requests.
#[derive(Default)]
pub struct FakeLlm {
    queue: Mutex<VecDeque<Result<ChatResponse>>>,
    requests: Mutex<Vec<ChatRequest>>,
    calls: Mutex<u32>,
}

impl FakeLlm {
    pub fn push_all(&self, replies: Vec<ChatResponse>) {
        self.queue
            .lock()
            .unwrap()
            .extend(replies.into_iter().map(Ok));
    }
    pub fn push_error(&self, error: Error) {
        self.queue.lock().unwrap().push_back(Err(error));
    }
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl LlmProvider for FakeLlm {
    fn name(&self) -> &str {
        "fake"
    }
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse> {
        self.requests.lock().unwrap().push(request.clone());
        let mut response = self
            .queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(Error::permanent("fake LLM has no reply left")))?;
        let mut n = self.calls.lock().unwrap();
        for (i, call) in response.tool_calls.iter_mut().enumerate() {
            if call.id.is_empty() {
                call.id = format!("call-{}", *n as usize + i);
            }
        }
        *n += 1;
        Ok(response)
    }
}

/// Files per (repo, branch), commits by key.
#[derive(Default)]
pub struct MemCodeHost {
    files: Mutex<BTreeMap<(String, String), BTreeMap<String, String>>>,
    pub commits: Mutex<Vec<(String, CommitRequest)>>,
    pub mrs: Mutex<Vec<MergeRequest>>,
}

impl MemCodeHost {
    pub fn seed(&self, repo: &str, branch: &str, path: &str, content: &str) {
        self.files
            .lock()
            .unwrap()
            .entry((repo.into(), branch.into()))
            .or_default()
            .insert(path.into(), content.into());
    }
}

fn info(sha: &str, r: &CommitRequest) -> CommitInfo {
    CommitInfo {
        sha: sha.into(),
        title: r.message.lines().next().unwrap_or_default().into(),
        author: r.author.clone(),
        files: r.files.iter().map(|f| f.path.to_string()).collect(),
        created_at: Utc::now(),
    }
}

#[async_trait]
impl CodeHost for MemCodeHost {
    fn name(&self) -> &'static str {
        "mem"
    }
    async fn ensure_repository(&self, name: &str, _d: &str) -> Result<Repository> {
        self.get_repository(name).await
    }
    async fn get_repository(&self, name: &str) -> Result<Repository> {
        Ok(Repository {
            name: name.into(),
            clone_url: format!("/mem/{name}"),
            default_branch: "main".into(),
        })
    }
    async fn ensure_branch(&self, _r: &str, _b: &str, _f: &str) -> Result<()> {
        Ok(())
    }
    async fn commit_files(&self, request: CommitRequest) -> Result<CommitInfo> {
        let mut commits = self.commits.lock().unwrap();
        if let Some((sha, r)) = commits
            .iter()
            .find(|(_, r)| r.idempotency_key == request.idempotency_key)
        {
            return Ok(info(sha, r));
        }
        let sha = format!("{:040x}", commits.len() + 1);
        let mut files = self.files.lock().unwrap();
        let tree = files
            .entry((request.repository.clone(), request.branch.clone()))
            .or_default();
        for f in &request.files {
            match &f.content {
                Some(c) => tree.insert(f.path.to_string(), c.clone()),
                None => tree.remove(f.path.as_str()),
            };
        }
        let out = info(&sha, &request);
        commits.push((sha, request));
        Ok(out)
    }
    async fn read_file(&self, repo: &str, branch: &str, path: &RepoPath) -> Result<Option<String>> {
        Ok(self
            .files
            .lock()
            .unwrap()
            .get(&(repo.into(), branch.into()))
            .and_then(|t| t.get(path.as_str()).cloned()))
    }
    async fn list_files(&self, repo: &str, branch: &str) -> Result<Vec<String>> {
        Ok(self
            .files
            .lock()
            .unwrap()
            .get(&(repo.into(), branch.into()))
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default())
    }
    async fn commits(&self, _r: &str, _b: &str) -> Result<Vec<CommitInfo>> {
        Ok(self
            .commits
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|(s, r)| info(s, r))
            .collect())
    }
    async fn create_merge_request(&self, new: NewMergeRequest) -> Result<MergeRequest> {
        let mut mrs = self.mrs.lock().unwrap();
        let mr = MergeRequest {
            id: mrs.len() as u64 + 1,
            repository: new.repository,
            source_branch: new.source_branch,
            target_branch: new.target_branch,
            title: new.title,
            description: new.description,
            state: MergeRequestState::Opened,
            test_result: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        mrs.push(mr.clone());
        Ok(mr)
    }
    async fn update_merge_request(
        &self,
        _r: &str,
        id: u64,
        update: MergeRequestUpdate,
    ) -> Result<MergeRequest> {
        let mut mrs = self.mrs.lock().unwrap();
        let mr = mrs
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::not_found("mr"))?;
        if let Some(t) = update.test_result {
            mr.test_result = Some(t);
        }
        if let Some(d) = update.description {
            mr.description = d;
        }
        Ok(mr.clone())
    }
    async fn get_merge_request(&self, _r: &str, id: u64) -> Result<MergeRequest> {
        self.mrs
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| Error::not_found("mr"))
    }
    async fn list_merge_requests(&self, _r: &str) -> Result<Vec<MergeRequest>> {
        Ok(self.mrs.lock().unwrap().clone())
    }
}

/// A tracker that records created issues by key (idempotent).
#[derive(Default)]
pub struct MemTracker {
    pub issues: Mutex<Vec<(IdempotencyKey, Issue)>>,
    pub comments: Mutex<HashMap<IdempotencyKey, NewComment>>,
}

#[async_trait]
impl Tracker for MemTracker {
    fn name(&self) -> &'static str {
        "mem"
    }
    async fn ensure_project(&self, key: &str, name: &str) -> Result<Project> {
        Ok(Project {
            key: key.into(),
            name: name.into(),
        })
    }
    async fn create_issue(&self, new: NewIssue) -> Result<Issue> {
        let mut issues = self.issues.lock().unwrap();
        if let Some((_, i)) = issues.iter().find(|(k, _)| *k == new.idempotency_key) {
            return Ok(i.clone());
        }
        let issue = Issue {
            key: format!("{}-{}", new.project, issues.len() + 1),
            project: new.project.clone(),
            kind: new.kind,
            title: new.title.clone(),
            description: new.description.clone(),
            status: "To Do".into(),
            parent: new.parent.clone(),
            labels: new.labels.clone(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        issues.push((new.idempotency_key, issue.clone()));
        Ok(issue)
    }
    async fn get_issue(&self, key: &str) -> Result<Issue> {
        self.issues
            .lock()
            .unwrap()
            .iter()
            .find(|(_, i)| i.key == key)
            .map(|(_, i)| i.clone())
            .ok_or_else(|| Error::not_found(key))
    }
    async fn list_issues(&self, project: &str) -> Result<Vec<Issue>> {
        Ok(self
            .issues
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, i)| i.project == project)
            .map(|(_, i)| i.clone())
            .collect())
    }
    async fn transition_issue(&self, key: &str, status: &str) -> Result<Issue> {
        let mut issues = self.issues.lock().unwrap();
        let (_, i) = issues
            .iter_mut()
            .find(|(_, i)| i.key == key)
            .ok_or_else(|| Error::not_found(key))?;
        i.status = status.into();
        Ok(i.clone())
    }
    async fn link_issues(&self, link: NewIssueLink) -> Result<IssueLink> {
        Ok(IssueLink {
            from: link.from,
            to: link.to,
            kind: link.kind,
        })
    }
    async fn links(&self, _key: &str) -> Result<Vec<IssueLink>> {
        Ok(Vec::new())
    }
    async fn add_comment(&self, comment: NewComment) -> Result<Comment> {
        self.comments
            .lock()
            .unwrap()
            .insert(comment.idempotency_key.clone(), comment.clone());
        Ok(Comment {
            id: comment.idempotency_key.0,
            issue: comment.issue,
            body: comment.body,
            created_at: Utc::now(),
        })
    }
    async fn comments(&self, _key: &str) -> Result<Vec<Comment>> {
        Ok(Vec::new())
    }
    async fn add_attachment(&self, a: NewAttachment) -> Result<Attachment> {
        Ok(Attachment {
            id: a.idempotency_key.0,
            issue: a.issue,
            filename: a.filename,
            media_type: a.media_type,
            size: a.content.len() as u64,
            created_at: Utc::now(),
        })
    }
    async fn attachments(&self, _key: &str) -> Result<Vec<Attachment>> {
        Ok(Vec::new())
    }
}

/// A wiki with no pages that refuses writes (unit tests never write pages).
pub struct NoWiki;

#[async_trait]
impl Wiki for NoWiki {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn ensure_space(&self, key: &str, name: &str) -> Result<Space> {
        Ok(Space {
            key: key.into(),
            name: name.into(),
        })
    }
    async fn create_page(&self, _new: NewPage) -> Result<Page> {
        Err(Error::permanent("no wiki in unit tests"))
    }
    async fn update_page(&self, _u: PageUpdate) -> Result<Page> {
        Err(Error::permanent("no wiki in unit tests"))
    }
    async fn get_page(&self, id: &str) -> Result<Page> {
        Err(Error::not_found(id))
    }
    async fn list_pages(&self, _space: &str) -> Result<Vec<Page>> {
        Ok(Vec::new())
    }
    async fn page_versions(&self, id: &str) -> Result<Vec<PageVersion>> {
        Err(Error::not_found(id))
    }
}

/// A sandbox that reports a fixed result, or an error.
pub struct FakeSandbox {
    pub result: Mutex<Result<TestRun>>,
    pub requests: Mutex<Vec<TestRunRequest>>,
}

pub fn test_run(passed: bool) -> TestRun {
    TestRun {
        id: uuid::Uuid::new_v4(),
        project_kind: Some(ProjectKind::Python),
        command: vec!["python3".into(), "-m".into(), "unittest".into()],
        exit_code: Some(if passed { 0 } else { 1 }),
        passed,
        timed_out: false,
        signal: None,
        isolation: Isolation {
            mode: IsolationMode::Full,
            namespaces: vec![Namespace::Mount, Namespace::Pid, Namespace::Net],
            host_uid: None,
            private_filesystem: true,
            limits: SandboxLimits::default(),
        },
        stdout: String::new(),
        stderr: if passed {
            "OK".into()
        } else {
            "FAILED (failures=1)".into()
        },
        duration_ms: 12,
        tests_passed: Some(3),
        tests_failed: Some(u32::from(!passed)),
        cases: Vec::new(),
        commit: Some("abc".into()),
        started_at: Utc::now(),
    }
}

#[async_trait]
impl Sandbox for FakeSandbox {
    fn name(&self) -> &'static str {
        "fake"
    }
    async fn run_tests(&self, request: TestRunRequest) -> Result<TestRun> {
        self.requests.lock().unwrap().push(request);
        self.result.lock().unwrap().clone()
    }
}

/// Records progress messages.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    pub fn messages(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl ProgressSink for Recorder {
    fn report(&self, progress: Progress) {
        self.0.lock().unwrap().push(progress.message);
    }
}

/// Hands out the kit's fakes to its one owner and refuses every other, so
/// a test sees which owner the agents asked for.
pub struct KitIntegrations {
    owner: ArtifactOwner,
    tracker: Arc<MemTracker>,
    code_host: Arc<MemCodeHost>,
}

impl KitIntegrations {
    fn check(&self, owner: &ArtifactOwner) -> Result<()> {
        if *owner == self.owner {
            Ok(())
        } else {
            Err(Error::invalid(format!("no integrations for `{owner}`")))
        }
    }
}

#[async_trait]
impl IntegrationResolver for KitIntegrations {
    async fn tracker(&self, owner: &ArtifactOwner) -> Result<Arc<dyn Tracker>> {
        self.check(owner)?;
        Ok(self.tracker.clone())
    }
    async fn wiki(&self, owner: &ArtifactOwner) -> Result<Arc<dyn Wiki>> {
        self.check(owner)?;
        Ok(Arc::new(NoWiki))
    }
    async fn code_host(&self, owner: &ArtifactOwner) -> Result<Arc<dyn CodeHost>> {
        self.check(owner)?;
        Ok(self.code_host.clone())
    }
}

/// The fakes wired together.
pub struct Kit {
    pub llm: Arc<FakeLlm>,
    /// The owner of the kit's workflow (a tenant).
    pub owner: ArtifactOwner,
    pub code_host: Arc<MemCodeHost>,
    pub tracker: Arc<MemTracker>,
    pub sandbox: Arc<FakeSandbox>,
    pub progress: Arc<Recorder>,
    pub workflow_id: WorkflowId,
}

impl Kit {
    pub fn new() -> Self {
        Kit {
            llm: Arc::new(FakeLlm::default()),
            owner: ArtifactOwner::tenant("kit-tenant").unwrap(),
            code_host: Arc::new(MemCodeHost::default()),
            tracker: Arc::new(MemTracker::default()),
            sandbox: Arc::new(FakeSandbox {
                result: Mutex::new(Ok(test_run(true))),
                requests: Mutex::default(),
            }),
            progress: Arc::new(Recorder::default()),
            workflow_id: WorkflowId::new(),
        }
    }

    pub fn tool_env(&self, repo: Option<&str>, branch: Option<&str>) -> ToolEnv {
        ToolEnv {
            tracker: self.tracker.clone(),
            wiki: Arc::new(NoWiki),
            code_host: self.code_host.clone(),
            repository: repo.map(str::to_owned),
            branch: branch.map(str::to_owned),
            project: Some("DEMO".into()),
            space: Some("DEMO".into()),
        }
    }

    pub fn runner(&self) -> AgentNodeRunner {
        self.runner_with(AgentConfig::default())
    }

    /// The resolver of the kit's fakes (for its owner only).
    pub fn integrations(&self) -> Arc<dyn IntegrationResolver> {
        Arc::new(KitIntegrations {
            owner: self.owner.clone(),
            tracker: self.tracker.clone(),
            code_host: self.code_host.clone(),
        })
    }

    pub fn runner_with(&self, config: AgentConfig) -> AgentNodeRunner {
        AgentNodeRunner::new(
            AgentDeps {
                llm: self.llm.clone(),
                llm_by_role: HashMap::new(),
                integrations: self.integrations(),
                sandbox: self.sandbox.clone(),
                ledger: None,
            },
            config,
        )
    }

    /// A state as the analyst leaves it: project DEMO, one epic, one story.
    pub fn state_after_business(&self) -> WorkflowState {
        let mut state = WorkflowState::initial(
            self.workflow_id,
            agentry_core::RequestId::new("r1").unwrap(),
            "Demo requirement: shorten URLs.",
            Utc::now(),
        );
        state.apply(&StateDelta {
            agent_outputs: vec![AgentOutputWrite {
                agent_name: "business_analyst".into(),
                output_type: "analysis".into(),
                content: json!({"summary": "A URL shortener", "epics": [{"title": "e", "stories": [
                    {"title": "story one", "acceptance_criteria": ["works"]}]}]}),
            }],
            shared_context: BTreeMap::from([
                (
                    "project".to_string(),
                    json!({"key": "DEMO", "name": "Demo", "repository": "demo",
                    "space": "DEMO", "branch": "agentry/demo", "target_branch": "main"}),
                ),
                ("business.epics".to_string(), json!([])),
            ]),
            ..StateDelta::default()
        });
        state
    }

    pub fn ctx(&self, role: AgentRole, visit: u32) -> NodeContext {
        self.ctx_with(role, visit, self.state_after_business())
    }

    pub fn ctx_with(&self, role: AgentRole, visit: u32, state: WorkflowState) -> NodeContext {
        NodeContext {
            task: TaskId::new(TaskKey::new(self.workflow_id, 2, role.as_str()), 1),
            role: Some(role),
            check: None,
            settings: json!({}),
            visit,
            state: Arc::new(state),
            options: agentry_core::RunOptions::default(),
            owner: self.owner.clone(),
            request_id: Some(agentry_core::RequestId::new("req-1").unwrap()),
            progress: self.progress.clone(),
        }
    }
}

/// An in-memory LLM ledger.
#[derive(Default)]
pub struct FakeLedger {
    pub calls: Mutex<Vec<LlmCall>>,
}

#[async_trait]
impl LlmLedger for FakeLedger {
    async fn record_call(&self, call: &LlmCall) -> Result<()> {
        self.calls.lock().unwrap().push(call.clone());
        Ok(())
    }
    async fn calls(&self, workflow: WorkflowId) -> Result<Vec<LlmCall>> {
        Ok(self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.workflow_id == workflow)
            .cloned()
            .collect())
    }
}
