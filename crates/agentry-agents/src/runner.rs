//! [`AgentNodeRunner`]: the engine's [`NodeRunner`] for agent nodes; it
//! picks the agent by `ctx.role` and hands it the ports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use agentry_core::{
    AgentRole, Budget, Error, IdempotencyKey, IntegrationResolver, Integrations, LlmLedger,
    LlmProvider, NodeContext, NodeOutput, NodeRunner, PriceTable, Result, Sandbox, SandboxLimits,
};
use async_trait::async_trait;
use tracing::{info, Instrument};

use crate::agents;
use crate::conversation::{Accounting, Conversation};
use crate::prompts;
use crate::tools::{ToolEnv, Toolbox};

/// The ports the agents use.
#[derive(Clone)]
pub struct AgentDeps {
    /// Default LLM.
    pub llm: Arc<dyn LlmProvider>,
    /// Per-role overrides (a cheaper model for the writer, say).
    pub llm_by_role: HashMap<AgentRole, Arc<dyn LlmProvider>>,
    /// Where each owner's tracker, wiki and code host are: every node run
    /// resolves those of its workflow's owner (`NodeContext::owner`).
    pub integrations: Arc<dyn IntegrationResolver>,
    /// Where QA runs the tests: a fresh checkout of the branch, isolated
    /// from the host.
    pub sandbox: Arc<dyn Sandbox>,
    /// Where every LLM call is recorded (cost, provider, tokens); budgets
    /// read their spend from it. None: spend is counted from the workflow
    /// state and this run only (calls of failed attempts are not seen).
    pub ledger: Option<Arc<dyn LlmLedger>>,
}

/// Settings every node run of one [`AgentNodeRunner`] shares; the CLI
/// builds them from its configuration and the provider's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Most LLM answers with tool calls per node run (default 8).
    pub max_tool_rounds: u32,
    /// Limits of QA's test runs.
    pub sandbox_limits: SandboxLimits,
    /// Directory with `<role>.md` files overriding the bundled prompts.
    pub prompts_dir: Option<PathBuf>,
    /// Tracker project key used when a run's options name none; when unset
    /// too, the business analyst's proposal is used.
    pub default_project_key: Option<String>,
    /// Prices per model, for the cost of each call.
    pub prices: PriceTable,
    /// Default budget of every workflow; a workflow's `options.budget`
    /// overlays it.
    pub budget: Budget,
    /// Caps that win over both (a raised budget given on resume).
    pub budget_override: Budget,
    /// Sized for a small local model: compact system prompts, no tools
    /// (the code an agent would read is put in its message instead), and
    /// two repair rounds.
    pub compact: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_tool_rounds: 8,
            sandbox_limits: SandboxLimits::default(),
            prompts_dir: None,
            default_project_key: None,
            prices: PriceTable::default(),
            budget: Budget::default(),
            budget_override: Budget::default(),
            compact: false,
        }
    }
}

/// Runs agent nodes: dispatches on `ctx.role` to one of the five agents.
#[derive(Clone)]
pub struct AgentNodeRunner {
    deps: AgentDeps,
    config: AgentConfig,
}

impl AgentNodeRunner {
    /// A runner over these ports.
    pub fn new(deps: AgentDeps, config: AgentConfig) -> Self {
        AgentNodeRunner { deps, config }
    }
}

#[async_trait]
impl NodeRunner for AgentNodeRunner {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        if let Some(check) = ctx.check.clone() {
            let span = tracing::info_span!("check", workflow_id = %ctx.task.key.workflow,
                step = ctx.task.key.step, node = %ctx.task.key.node, check = %check, visit = ctx.visit);
            let delta = crate::checks::run(&check, &ctx, &self.deps, &self.config)
                .instrument(span)
                .await?;
            return Ok(NodeOutput {
                delta,
                events: Vec::new(),
            });
        }
        let role = ctx.role.ok_or_else(|| {
            Error::permanent(format!(
                "node `{}` has neither an agent role nor a check",
                ctx.task.key.node
            ))
        })?;
        let span = tracing::info_span!("agent", workflow_id = %ctx.task.key.workflow,
            step = ctx.task.key.step, node = %ctx.task.key.node, role = %role, visit = ctx.visit,
            owner = %ctx.owner, request_id = ctx.request_id.as_ref().map(agentry_core::RequestId::as_str).unwrap_or(""));
        async {
            let ports = self.deps.integrations.integrations(&ctx.owner).await?;
            let env = AgentEnv {
                ctx: &ctx,
                deps: &self.deps,
                ports,
                config: &self.config,
                role,
            };
            info!("Agent started.");
            let delta = match role {
                AgentRole::BusinessAnalyst => agents::business::run(&env).await,
                AgentRole::Developer => agents::developer::run(&env).await,
                AgentRole::Qa => agents::qa::run(&env).await,
                AgentRole::TechnicalWriter => agents::writer::run(&env).await,
                AgentRole::Devops => agents::devops::run(&env).await,
            }?;
            info!("Agent finished.");
            Ok(NodeOutput {
                delta,
                events: Vec::new(),
            })
        }
        .instrument(span)
        .await
    }
}

/// Most bytes of code put in a compact-mode message.
pub const CODE_LISTING_LIMIT: usize = 12 * 1024;

/// What an agent gets for one node run.
pub(crate) struct AgentEnv<'a> {
    pub ctx: &'a NodeContext,
    pub deps: &'a AgentDeps,
    /// The tracker, wiki and code host of the workflow's owner.
    pub ports: Integrations,
    pub config: &'a AgentConfig,
    pub role: AgentRole,
}

impl AgentEnv<'_> {
    /// The role's LLM.
    pub fn llm(&self) -> Arc<dyn LlmProvider> {
        self.deps
            .llm_by_role
            .get(&self.role)
            .cloned()
            .unwrap_or_else(|| self.deps.llm.clone())
    }

    /// The role's system prompt.
    pub fn system_prompt(&self) -> Result<String> {
        prompts::load(
            self.role,
            self.config.prompts_dir.as_deref(),
            self.config.compact,
        )
    }

    /// The budget of this workflow: the configured default, overlaid by
    /// the run's options, overlaid by the override.
    pub fn budget(&self) -> Result<Budget> {
        Ok(self
            .config
            .budget
            .clone()
            .merged(&self.ctx.options.budget)
            .merged(&self.config.budget_override))
    }

    /// A conversation for this node run.
    pub fn conversation(&self) -> Result<Conversation<'_>> {
        Ok(
            Conversation::new(self.ctx, self.role, self.llm(), self.config.max_tool_rounds)
                .with_accounting(Accounting {
                    ledger: self.deps.ledger.clone(),
                    prices: self.config.prices.clone(),
                    budget: self.budget()?,
                })
                .with_tools(!self.config.compact)
                .with_raw_files(self.config.compact)
                .with_repairs(if self.config.compact { 2 } else { 1 }),
        )
    }

    /// The task's idempotency key.
    pub fn key(&self) -> IdempotencyKey {
        self.ctx.task.idempotency_key()
    }

    /// The role's toolbox.
    pub fn toolbox(
        &self,
        repository: Option<&str>,
        branch: Option<&str>,
        project: Option<&str>,
    ) -> Toolbox {
        Toolbox::new(
            self.role,
            ToolEnv {
                tracker: self.ports.tracker.clone(),
                wiki: self.ports.wiki.clone(),
                code_host: self.ports.code_host.clone(),
                repository: repository.map(str::to_owned),
                branch: branch.map(str::to_owned),
                project: project.map(str::to_owned),
                space: project.map(str::to_owned),
            },
        )
    }

    /// A name the run was started with (`options.project_key`, ...),
    /// trimmed; None when unset or blank.
    pub fn named(value: &Option<String>) -> Option<String> {
        value
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// In compact mode, the code on `branch` for the agent's message (it
    /// has no tools to read it): every file but QA's acceptance tests, up
    /// to [`CODE_LISTING_LIMIT`] bytes; None otherwise.
    pub async fn code_listing(
        &self,
        repository: &str,
        branch: &str,
        files: &[String],
    ) -> Result<Option<String>> {
        if !self.config.compact {
            return Ok(None);
        }
        let read = self
            .source_files(repository, branch, files, |p| {
                !p.starts_with(crate::context::ACCEPTANCE_DIR)
            })
            .await?;
        Ok(self.listing_of(&read))
    }

    /// [`AgentEnv::code_listing`] of files already read (path -> content),
    /// for an agent that needs their text for more than its message.
    pub fn listing_of(&self, read: &std::collections::BTreeMap<String, String>) -> Option<String> {
        if !self.config.compact {
            return None;
        }
        let mut out = String::new();
        for (path, content) in read {
            if path.starts_with(crate::context::ACCEPTANCE_DIR) {
                continue;
            }
            let block = format!("`{path}`:\n```\n{}\n```\n", content.trim_end());
            if out.len() + block.len() > CODE_LISTING_LIMIT {
                out.push_str(&format!("(`{path}` and later files left out: too long)\n"));
                break;
            }
            out.push_str(&block);
        }
        Some(out)
    }

    /// The text of `branch`'s files that `keep` selects, path -> content,
    /// read once: the file that takes the total past four times
    /// [`CODE_LISTING_LIMIT`] and those after it are left out.
    pub async fn source_files(
        &self,
        repository: &str,
        branch: &str,
        files: &[String],
        keep: impl Fn(&str) -> bool,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut total = 0usize;
        for path in files.iter().filter(|p| keep(p)) {
            let repo_path = agentry_core::RepoPath::parse(path)?;
            let Some(content) = self
                .ports
                .code_host
                .read_file(repository, branch, &repo_path)
                .await?
            else {
                continue;
            };
            total += content.len();
            if total > 4 * CODE_LISTING_LIMIT {
                break;
            }
            out.insert(path.clone(), content);
        }
        Ok(out)
    }

    /// The QA round of this visit (1-based).
    pub fn round(&self) -> u32 {
        self.ctx.visit + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context;
    use crate::testkit::{answer, test_run, tool_call, Kit};
    use agentry_core::ChatRole;
    use serde_json::json;

    fn compact() -> AgentConfig {
        AgentConfig {
            compact: true,
            ..AgentConfig::default()
        }
    }

    /// The workflow's state after a first compact developer round that
    /// answered `implementation`.
    async fn after_developer(
        kit: &Kit,
        implementation: agentry_core::ChatResponse,
    ) -> agentry_core::WorkflowState {
        kit.llm.push_all(vec![implementation]);
        let first = kit
            .runner_with(compact())
            .run(kit.ctx(AgentRole::Developer, 0))
            .await
            .unwrap();
        let mut state = kit.state_after_business();
        state.apply(&first.delta);
        state
    }

    /// The JSON line of a compact developer answer, before its files.
    const IMPLEMENTATION_HEADER: &str =
        r#"{"summary": "s", "design": "d", "language": "python", "commit_message": "m"}"#;

    fn qa_answer() -> String {
        json!({"test_plan": "plan", "focus": ["resolve"],
            "test_files": [{"path": "tests/acceptance/test_api.py", "content": "import os\nimport unittest\n\nclass T(unittest.TestCase):\n    def test_api(self):\n        self.assertTrue(os.path.isdir('tests'))\n"}]})
        .to_string()
    }

    /// A QA answer whose one test file exercises `names` of
    /// `shortener.core` (each called with `arg`), and expects `refusal`
    /// from the first when called with `bad`.
    fn qa_answer_calling(names: &[&str], arg: &str, refusal: Option<(&str, &str)>) -> String {
        let mut test = format!(
            "import unittest\nfrom shortener.core import {}\n\n\nclass T(unittest.TestCase):\n    def test_api(self):\n",
            names.join(", ")
        );
        for name in names {
            test.push_str(&format!("        self.assertTrue({name}({arg}))\n"));
        }
        if let Some((error, bad)) = refusal {
            test.push_str(&format!(
                "\n    def test_refuses(self):\n        with self.assertRaises({error}):\n            {}({bad})\n",
                names[0]
            ));
        }
        json!({"test_plan": "plan", "focus": ["resolve"],
            "test_files": [{"path": "tests/acceptance/test_api.py", "content": test}]})
        .to_string()
    }

    #[tokio::test]
    async fn compact_agents_get_short_prompts_no_tools_and_the_code() {
        let kit = Kit::new();
        let compact = compact();
        kit.llm.push_all(vec![answer(
            &json!({"summary": "s", "design": "d", "language": "python", "commit_message": "m",
                "files": [{"path": "shortener/core.py", "content": "```python\ndef shorten(url):\n    return url\n```"}]})
            .to_string(),
        )]);
        kit.runner_with(compact.clone())
            .run(kit.ctx(AgentRole::Developer, 0))
            .await
            .unwrap();
        kit.llm.push_all(vec![answer(&qa_answer_calling(
            &["shorten"],
            "'https://example.org'",
            None,
        ))]);
        kit.runner_with(compact)
            .run(kit.ctx(AgentRole::Qa, 0))
            .await
            .unwrap();
        let requests = kit.llm.requests();
        for request in &requests {
            assert!(request.tools.is_empty(), "no tools in compact mode");
        }
        let qa = requests.last().unwrap();
        assert_eq!(
            qa.messages[0].content,
            prompts::bundled_compact(AgentRole::Qa)
        );
        let user = &qa.messages[1].content;
        // QA writes from the specification: it sees the code's interface
        // (the committed, unfenced file, read as Python), never its bodies.
        assert!(
            user.contains("def shorten(url)") && user.contains("# module shortener.core"),
            "QA sees the interface:\n{user}"
        );
        assert!(!user.contains("return url"), "QA sees no body:\n{user}");
    }

    #[tokio::test]
    async fn code_that_fails_the_same_way_after_a_fix_is_written_again_from_scratch() {
        let kit = Kit::new();
        let implementation = |body: &str| {
            answer(&format!(
                "{}\nFILE shortener/core.py\n```python\ndef shorten(url):\n    return {body}\n```\n",
                IMPLEMENTATION_HEADER
            ))
        };
        let mut state = after_developer(&kit, implementation("url")).await;
        let failing = json!({"acceptance_passed": false, "acceptance_total": 1, "per_test": true,
            "unit": [], "acceptance": [{"test": "tests.acceptance.test_a.T.test_short", "owner": "developer",
            "reason": "raised in the code", "error": "ValueError: bad", "at": "shortener/core.py:2"}]});
        // The developer fixed against this failure, and it is still there.
        for key in [context::QA_TRIAGE, context::DEVELOPER_TRIAGE_SEEN] {
            state
                .shared_context
                .insert(key.to_string(), failing.clone());
        }
        kit.llm.push_all(vec![implementation("url[:8]")]);
        let second = kit
            .runner_with(compact())
            .run(kit.ctx_with(AgentRole::Developer, 1, state))
            .await
            .unwrap();
        let request = kit.llm.requests().last().unwrap().clone();
        let user = &request.messages[1].content;
        assert!(
            user.contains("## Write again from scratch")
                && user.contains("`shortener/core.py` again"),
            "{user}"
        );
        // Its last version is not shown, and it is sampled more freely.
        assert!(!user.contains("return url"), "{user}");
        assert_eq!(request.temperature, Some(0.7));
        let recorded = &second.delta.agent_outputs[0].content;
        assert_eq!(
            recorded["written_from_scratch"],
            json!(["shortener/core.py"])
        );
        assert_eq!(
            second.delta.shared_context[context::DEVELOPER_TRIAGE_SEEN],
            failing
        );
    }

    #[tokio::test]
    async fn a_fix_that_takes_away_what_qa_imports_goes_back_to_the_developer() {
        let kit = Kit::new();
        let implementation = |name: &str| {
            answer(&format!(
                "{}\nFILE shortener/core.py\n```python\ndef {name}(url):\n    return url[:8]\n```",
                IMPLEMENTATION_HEADER
            ))
        };
        let mut state = after_developer(&kit, implementation("shorten")).await;
        state.shared_context.insert(
            context::QA_TEST_FILES.to_string(),
            json!([{"path": "tests/acceptance/test_acceptance.py",
                "content": "import unittest\nfrom shortener.core import shorten\n\nclass T(unittest.TestCase):\n    def test_short(self):\n        self.assertTrue(len(shorten('https://example.org')) <= 8)\n"}]),
        );
        kit.llm.push_all(vec![
            implementation("make_short"),
            implementation("shorten"),
        ]);
        kit.runner_with(compact())
            .run(kit.ctx_with(AgentRole::Developer, 1, state))
            .await
            .unwrap();
        let requests = kit.llm.requests();
        let repair = &requests.last().unwrap().messages.last().unwrap().content;
        assert!(
            repair.contains("`tests/acceptance/test_acceptance.py` line 2 would no longer import")
                && repair.contains("shorten"),
            "{repair}"
        );
    }

    #[tokio::test]
    async fn tests_that_fail_the_same_way_after_qa_fixed_them_are_written_again_from_scratch() {
        let kit = Kit::new();
        let mut state = after_developer(
            &kit,
            answer(&format!(
                "{}\nFILE shortener/core.py\n```python\ndef shorten(url):\n    return url\n```",
                IMPLEMENTATION_HEADER
            )),
        )
        .await;
        let old_test = "import unittest\nfrom shortener.core import shorten\n\nclass T(unittest.TestCase):\n    def test_short(self):\n        self.assertEqual(shorten('u', 3), 'u')\n";
        let broken = json!({"acceptance_passed": false, "acceptance_total": 1, "per_test": true,
            "unit": [], "acceptance": [{"test": "tests.acceptance.test_acceptance.T.test_short", "owner": "qa",
            "reason": "raised in the test's own code",
            "error": "TypeError: shorten() takes 1 positional argument but 2 were given",
            "at": "tests/acceptance/test_acceptance.py:6"}]});
        for (key, value) in [
            (context::QA_TRIAGE, broken.clone()),
            (context::QA_TRIAGE_SEEN, broken.clone()),
            (context::QA_FIX, json!("tests")),
            (
                context::QA_TEST_FILES,
                json!([{"path": "tests/acceptance/test_acceptance.py", "content": old_test}]),
            ),
        ] {
            state.shared_context.insert(key.to_string(), value);
        }
        kit.llm.push_all(vec![answer(&qa_answer_calling(
            &["shorten"],
            "'https://example.org'",
            None,
        ))]);
        let qa = kit
            .runner_with(compact())
            .run(kit.ctx_with(AgentRole::Qa, 1, state))
            .await
            .unwrap();
        let request = kit.llm.requests().last().unwrap().clone();
        let user = &request.messages[1].content;
        assert!(
            user.contains("write your tests again from scratch"),
            "{user}"
        );
        assert!(
            !user.contains("shorten('u', 3)"),
            "the last version is not shown:\n{user}"
        );
        assert_eq!(request.temperature, Some(0.7));
        // The old file is not kept beside the new one.
        let suite = &qa.delta.shared_context[context::QA_TEST_FILES];
        assert!(!suite.to_string().contains("shorten('u', 3)"), "{suite}");
        assert_eq!(qa.delta.shared_context[context::QA_TRIAGE_SEEN], broken);
    }

    #[tokio::test]
    async fn qa_cannot_write_to_the_repository() {
        let kit = Kit::new();
        kit.llm.push_all(vec![
            tool_call(
                "write_file",
                json!({"path": "shortener/core.py", "content": "hacked"}),
            ),
            answer(&qa_answer()),
        ]);
        let out = kit.runner().run(kit.ctx(AgentRole::Qa, 0)).await.unwrap();
        let tool_msg = kit.llm.requests()[1]
            .messages
            .iter()
            .find(|m| m.role == ChatRole::Tool)
            .cloned()
            .unwrap();
        assert!(
            tool_msg
                .content
                .starts_with("error: tool `write_file` is not available to the qa agent"),
            "{}",
            tool_msg.content
        );
        // QA commits its own tests, and nothing else.
        let commits = kit.code_host.commits.lock().unwrap().clone();
        assert_eq!(commits.len(), 1);
        assert_eq!(commits[0].1.author, "Agentry QA");
        let committed: Vec<String> = commits[0]
            .1
            .files
            .iter()
            .map(|f| f.path.to_string())
            .collect();
        assert_eq!(
            committed,
            [
                "tests/acceptance/test_api.py",
                "tests/acceptance/__init__.py",
                "tests/__init__.py"
            ]
        );
        let overlay = &kit.sandbox.requests.lock().unwrap()[0].overlay;
        // QA's test file, and the `__init__.py` files that make its
        // directories packages unittest discovers (the branch has none).
        let paths: Vec<&str> = overlay.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tests/acceptance/test_api.py",
                "tests/acceptance/__init__.py",
                "tests/__init__.py"
            ]
        );
        assert_eq!(out.delta.shared_context["qa.passed"], json!(true));
        assert_eq!(out.delta.shared_context["qa.failure"], json!(null));
    }

    #[tokio::test]
    async fn an_error_the_code_raises_on_purpose_is_disputed_and_goes_to_qa_when_confirmed() {
        // A real run's QA test closed an account holding money; the code
        // refused with the error the requirement asks for, and triage sent
        // it to the developer. Independent implementations that raise the
        // same error move it to QA.
        use agentry_core::{SourceLocation, TestCaseResult, TestOutcome};
        let kit = Kit::new();
        let code = "def close(balance):\n    if balance:\n        raise ValueError('balance must be zero to close')\n    return True\n";
        let implementation = answer(&format!(
            "{IMPLEMENTATION_HEADER}\nFILE shortener/core.py\n```python\n{code}```\n"
        ));
        let state = after_developer(&kit, implementation.clone()).await;
        let mut run = test_run(false);
        run.cases = vec![TestCaseResult {
            id: "tests.acceptance.test_api.T.test_api".into(),
            outcome: TestOutcome::Error,
            error_type: Some("ValueError".into()),
            message: Some("balance must be zero to close".into()),
            raised_in: Some(SourceLocation {
                path: "shortener/core.py".into(),
                line: 3,
                function: Some("close".into()),
            }),
        }];
        *kit.sandbox.result.lock().unwrap() = Ok(run);
        // QA's suite, then the two independent implementations.
        kit.llm.push_all(vec![
            answer(&qa_answer_calling(
                &["close"],
                "0",
                Some(("ValueError", "5")),
            )),
            implementation.clone(),
            implementation,
        ]);
        let out = kit
            .runner_with(compact())
            .run(kit.ctx_with(AgentRole::Qa, 0, state))
            .await
            .unwrap();
        let ctx = &out.delta.shared_context;
        let finding = &ctx["qa.triage"]["acceptance"][0];
        assert_eq!(finding["owner"], json!("qa"), "{ctx:#?}");
        assert!(
            finding["reason"]
                .as_str()
                .unwrap()
                .contains("raise this same error here"),
            "{finding}"
        );
        assert_eq!(ctx["qa.fix"], json!("tests"));
        assert_eq!(ctx["qa.disputes"]["held"], json!(1));
        // The history says what each independent implementation answered.
        let run = out
            .delta
            .agent_outputs
            .iter()
            .find(|o| o.output_type == "test_run")
            .unwrap();
        assert_eq!(
            run.content["disputes"][0]["seen"],
            json!([
                "ValueError: balance must be zero to close",
                "ValueError: balance must be zero to close"
            ])
        );
        // The suite's run, then one run per independent implementation,
        // of the disputed test alone.
        let requests = kit.sandbox.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 3);
        assert_eq!(
            requests[2].command.as_ref().unwrap().last().unwrap(),
            "tests.acceptance.test_api.T.test_api"
        );
    }

    #[tokio::test]
    async fn the_mutation_check_leaves_out_the_tests_a_dispute_set_aside() {
        let kit = Kit::new();
        let mut state = after_developer(
            &kit,
            answer(&format!(
                "{IMPLEMENTATION_HEADER}\nFILE shortener/core.py\n```python\ndef shorten(url):\n    return url\n```\n"
            )),
        )
        .await;
        let aside = "tests.acceptance.test_api.T.test_wrong";
        state.shared_context.insert(
            context::QA_TEST_FILES.to_string(),
            json!([{"path": "tests/acceptance/test_api.py", "content": "import unittest\n"}]),
        );
        state.shared_context.insert(
            context::QA_DISPUTES.to_string(),
            json!({"held": 1, "lost": {aside: "AssertionError: x"}, "set_aside": [aside]}),
        );
        let mut run = test_run(true);
        run.stdout = "AGENTRY-MUTATION {\"found\": 4, \"run\": 4, \"killed\": 3, \"baseline_passed\": true}\n".into();
        *kit.sandbox.result.lock().unwrap() = Ok(run);
        let mut ctx = kit.ctx_with(AgentRole::Qa, 0, state);
        ctx.role = None;
        ctx.check = Some("mutation_score".into());
        let out = kit.runner().run(ctx).await.unwrap();
        let command = kit.sandbox.requests.lock().unwrap()[0]
            .command
            .clone()
            .unwrap();
        let at = command.iter().position(|w| w == "--exclude").unwrap();
        assert_eq!(command[at + 1], aside);
        let quality = &out.delta.shared_context[context::QUALITY];
        assert_eq!(quality["set_aside"], json!([aside]));
        assert_eq!(quality["verdict"], json!("ok"));
    }

    #[tokio::test]
    async fn a_failing_suite_is_an_output_not_an_error() {
        let kit = Kit::new();
        *kit.sandbox.result.lock().unwrap() = Ok(test_run(false));
        kit.llm.push_all(vec![answer(&qa_answer())]);
        let out = kit.runner().run(kit.ctx(AgentRole::Qa, 1)).await.unwrap();
        let ctx = &out.delta.shared_context;
        assert_eq!(ctx["qa.passed"], json!(false));
        assert_eq!(ctx["qa.round"], json!(2));
        assert_eq!(ctx["qa.failure"]["exit_code"], json!(1));
        assert_eq!(
            ctx["qa.failure"]["stderr_tail"],
            json!("FAILED (failures=1)")
        );
        assert_eq!(
            ctx["qa.test_files"][0]["path"],
            json!("tests/acceptance/test_api.py")
        );
        let run = out
            .delta
            .agent_outputs
            .iter()
            .find(|o| o.output_type == "test_run")
            .unwrap();
        assert_eq!(
            (run.content["round"].clone(), run.content["passed"].clone()),
            (json!(2), json!(false))
        );
        let issues = kit.tracker.issues.lock().unwrap();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].1.kind, agentry_core::IssueKind::Bug);
        assert_eq!(out.delta.jira_tickets, vec![issues[0].1.key.clone()]);
        assert_eq!(
            kit.progress
                .messages()
                .iter()
                .filter(|m| *m == "running tests")
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn no_runner_detected_is_permanent() {
        let kit = Kit::new();
        *kit.sandbox.result.lock().unwrap() = Err(Error::invalid("no project detected"));
        kit.llm.push_all(vec![answer(&qa_answer())]);
        let err = kit
            .runner()
            .run(kit.ctx(AgentRole::Qa, 0))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::permanent("qa cannot run the tests: no project detected")
        );
    }

    #[tokio::test]
    async fn developer_commits_staged_and_answered_files_once() {
        let kit = Kit::new();
        kit.llm.push_all(vec![
            tool_call("write_file", json!({"path": "app/a.py", "content": "staged"})),
            tool_call("write_file", json!({"path": "app/b.py", "content": "B = 2"})),
            answer(&json!({"summary": "s", "design": "d", "language": "python", "commit_message": "feat: a",
                "files": [{"path": "app/a.py", "content": "final"}]}).to_string()),
        ]);
        let out = kit
            .runner()
            .run(kit.ctx(AgentRole::Developer, 0))
            .await
            .unwrap();
        let commits = kit.code_host.commits.lock().unwrap().clone();
        assert_eq!(commits.len(), 1);
        let files: Vec<(String, Option<String>)> = commits[0]
            .1
            .files
            .iter()
            .map(|f| (f.path.to_string(), f.content.clone()))
            .collect();
        assert_eq!(
            files,
            vec![
                ("app/a.py".into(), Some("final".into())),
                ("app/b.py".into(), Some("B = 2".into()))
            ]
        );
        assert_eq!(commits[0].1.author, "Agentry Developer");
        assert_eq!(
            out.delta.shared_context["developer.commits"],
            json!([commits[0].0])
        );
        assert_eq!(
            out.delta.shared_context["developer.merge_request"]["id"],
            json!(1)
        );
        assert_eq!(out.delta.gitlab_repos, vec!["demo".to_string()]);
        assert_eq!(out.delta.usage.len(), 3);
    }

    #[tokio::test]
    async fn an_escaping_path_in_the_answer_gets_a_repair_round() {
        let kit = Kit::new();
        let imp = |path: &str| {
            json!({"summary": "s", "design": "d", "language": "python", "commit_message": "m",
            "files": [{"path": path, "content": "x"}]})
            .to_string()
        };
        kit.llm.push_all(vec![
            answer(&imp("../outside.py")),
            answer(&imp("inside.py")),
        ]);
        kit.runner()
            .run(kit.ctx(AgentRole::Developer, 0))
            .await
            .unwrap();
        let repair = kit.llm.requests()[1]
            .messages
            .last()
            .unwrap()
            .content
            .clone();
        assert!(repair.contains("/files/0/path: invalid input: path `../outside.py` rejected: `..` leaves the repository"), "{repair}");
        let commits = kit.code_host.commits.lock().unwrap();
        assert_eq!(commits[0].1.files[0].path.as_str(), "inside.py");
    }

    #[tokio::test]
    async fn nodes_without_a_role_and_agents_without_a_project_fail_permanently() {
        let kit = Kit::new();
        let mut ctx = kit.ctx(AgentRole::Qa, 0);
        ctx.role = None;
        let err = kit.runner().run(ctx).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("has neither an agent role nor a check"),
            "{err}"
        );
        let empty = agentry_core::WorkflowState::initial(
            kit.workflow_id,
            agentry_core::RequestId::new("r").unwrap(),
            "req",
            chrono::Utc::now(),
        );
        let err = kit
            .runner()
            .run(kit.ctx_with(AgentRole::Devops, 0, empty))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::permanent(
                "shared_context `project` is missing: the business analyst must run first"
            )
        );
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;
    use crate::testkit::{answer, FakeLlm, Kit};
    use serde_json::json;

    #[tokio::test]
    async fn run_options_override_the_analysts_proposal_and_roles_get_their_own_llm() {
        let kit = Kit::new();
        let analyst_llm = Arc::new(FakeLlm::default());
        analyst_llm.push_all(vec![answer(
            &json!({"summary": "s", "project_key": "PROPOSED", "project_name": "Demo", "repository": "proposed",
                "epics": [{"title": "e", "description": "d", "stories": [
                    {"title": "t", "description": "As a user...", "acceptance_criteria": ["a"], "tasks": ["x"]}]}]})
            .to_string(),
        )]);
        let runner = AgentNodeRunner::new(
            AgentDeps {
                llm: kit.llm.clone(),
                llm_by_role: HashMap::from([(
                    AgentRole::BusinessAnalyst,
                    analyst_llm.clone() as Arc<dyn LlmProvider>,
                )]),
                integrations: kit.integrations(),
                sandbox: kit.sandbox.clone(),
                ledger: None,
            },
            AgentConfig::default(),
        );
        let mut ctx = kit.ctx(AgentRole::BusinessAnalyst, 0);
        ctx.options = agentry_core::RunOptions {
            project_key: Some("OPT".into()),
            repository: Some("custom-repo".into()),
            target_branch: Some("develop".into()),
            ..agentry_core::RunOptions::default()
        };
        let out = runner.run(ctx).await.unwrap();
        assert_eq!(
            out.delta.shared_context["project"],
            json!({"key": "OPT", "name": "Demo", "repository": "custom-repo", "space": "OPT",
                "branch": "agentry/custom-repo", "target_branch": "develop"})
        );
        assert!(analyst_llm.requests()[0].messages[1]
            .content
            .contains("Use project_key `OPT`"));
        assert!(
            kit.llm.requests().is_empty(),
            "the default LLM was used instead of the role's"
        );
        // epic, story, task
        assert_eq!(out.delta.jira_tickets, vec!["OPT-1", "OPT-2", "OPT-3"]);
        assert_eq!(
            out.delta.shared_context["business.epics"][0]["stories"][0]["key"],
            json!("OPT-2")
        );
        assert_eq!(
            out.delta.agent_outputs[0].content["project_key"],
            json!("OPT")
        );
    }

    /// Regression: agents used one tracker, wiki and code host for every
    /// workflow, so a second tenant choosing the same names reached the
    /// first one's artifacts. They now act through the integrations of the
    /// context's owner, and an owner the resolver refuses makes nothing.
    #[tokio::test]
    async fn agents_act_through_the_integrations_of_the_workflows_owner() {
        let kit = Kit::new();
        let mut ctx = kit.ctx(AgentRole::Developer, 0);
        ctx.owner = agentry_core::ArtifactOwner::tenant("someone-else").unwrap();
        let error = kit.runner().run(ctx).await.unwrap_err();
        assert!(error.to_string().contains("tenant:someone-else"), "{error}");
        assert!(kit.llm.requests().is_empty(), "the agent ran anyway");
        assert!(kit.code_host.commits.lock().unwrap().is_empty());

        kit.llm.push_all(vec![answer(
            &json!({"summary": "s", "design": "d", "language": "python", "commit_message": "m",
                "files": [{"path": "shortener/core.py", "content": "x = 1\n"}]})
            .to_string(),
        )]);
        kit.runner()
            .run(kit.ctx(AgentRole::Developer, 0))
            .await
            .unwrap();
        assert_eq!(kit.code_host.commits.lock().unwrap().len(), 1);
    }
}
