//! The one agent loop every role runs: LLM turns (with the role's tools,
//! unless the agent is compact), tool execution up to `max_tool_rounds`,
//! and validation of the final answer: its schema, the agent's own check
//! ([`Conversation::run_checked`], as QA's suite rules) and the limits on
//! the files it staged. An invalid answer goes back to the model with the
//! problems for up to `with_repairs` repair rounds (one by default; compact
//! agents get two), each sampled more freely than the last. Before each
//! call the workflow's and the role's budgets are checked; after it the
//! call is priced, added to the usage records and written to the LLM
//! ledger. Each turn and tool call is reported as progress.

use std::sync::Arc;
use std::time::Instant;

use agentry_core::llm::estimate_tokens;
use agentry_core::{
    AgentRole, Budget, ChatMessage, ChatRequest, ChatResponse, Error, LlmCall, LlmLedger,
    LlmProvider, NodeContext, PriceTable, RequestMeta, Result, Spend, UsageRecord,
};
use serde_json::Value;
use tracing::{debug, warn};

use crate::output::{output_schema_with, AgentOutput, OutputValidator};
use crate::tools::Toolbox;

/// The sampling temperature of an agent's first answer, then of each
/// repair round.
const REPAIR_TEMPERATURES: [f32; 3] = [0.2, 0.5, 0.8];

/// How a conversation prices, records and caps its LLM calls.
#[derive(Clone, Default)]
pub struct Accounting {
    /// Where each call is recorded; None: not recorded (spend then counts
    /// the workflow state's usage plus this run's calls).
    pub ledger: Option<Arc<dyn LlmLedger>>,
    /// Prices per model.
    pub prices: PriceTable,
    /// The workflow's budget.
    pub budget: Budget,
}

/// One node run's conversation with the model.
pub struct Conversation<'a> {
    ctx: &'a NodeContext,
    role: AgentRole,
    llm: Arc<dyn LlmProvider>,
    max_tool_rounds: u32,
    turn: u32,
    usage: Vec<UsageRecord>,
    accounting: Accounting,
    offer_tools: bool,
    max_repairs: u32,
    first_temperature: Option<f32>,
    raw_files: bool,
}

impl<'a> Conversation<'a> {
    /// A conversation for `role` in the node run `ctx`.
    pub fn new(
        ctx: &'a NodeContext,
        role: AgentRole,
        llm: Arc<dyn LlmProvider>,
        max_tool_rounds: u32,
    ) -> Self {
        Conversation {
            ctx,
            role,
            llm,
            max_tool_rounds,
            turn: 0,
            usage: Vec::new(),
            accounting: Accounting::default(),
            offer_tools: true,
            max_repairs: 1,
            first_temperature: None,
            raw_files: false,
        }
    }

    /// Offers the toolbox's tools to the model (default), or none.
    pub fn with_tools(mut self, offer: bool) -> Self {
        self.offer_tools = offer;
        self
    }

    /// Repair rounds allowed after an invalid answer (default 1).
    pub fn with_repairs(mut self, repairs: u32) -> Self {
        self.max_repairs = repairs;
        self
    }

    /// Samples the first answer at `temperature` (and each repair at least
    /// as freely): for answers that should differ from one another, such
    /// as a dispute's independent implementations.
    pub fn with_first_temperature(mut self, temperature: f32) -> Self {
        self.first_temperature = Some(temperature);
        self
    }

    /// Asks for an answer's files as raw blocks after its JSON (for answers
    /// that have files, [`AgentOutput::FILES_FIELD`]), rather than as JSON
    /// strings a small model fails to escape. Off by default.
    pub fn with_raw_files(mut self, raw: bool) -> Self {
        self.raw_files = raw;
        self
    }

    /// Prices, records and caps the calls with `accounting`.
    pub fn with_accounting(mut self, accounting: Accounting) -> Self {
        self.accounting = accounting;
        self
    }

    /// Usage of every call so far, one record per call.
    pub fn into_usage(self) -> Vec<UsageRecord> {
        self.usage
    }

    /// Runs the loop until the model gives a valid `T`: returns it and its
    /// JSON. Tool rounds past the bound, or an answer still invalid after
    /// the repair rounds, are permanent errors naming the role; LLM errors
    /// propagate with their class.
    pub async fn run<T: AgentOutput>(
        &mut self,
        system: String,
        user: String,
        tools: &mut Toolbox,
    ) -> Result<(T, Value)> {
        self.run_checked(system, user, tools, &NoCheck).await
    }

    /// [`Conversation::run`] with one more check of a parsed answer, for
    /// rules that depend on more than the answer (QA's files are checked
    /// together with those kept from its last round). Its problems get the
    /// same repair rounds as the schema's. The check may run a process
    /// (the static checks of Python files), so it is async.
    pub async fn run_checked<T: AgentOutput>(
        &mut self,
        system: String,
        user: String,
        tools: &mut Toolbox,
        check: &dyn AnswerCheck<T>,
    ) -> Result<(T, Value)> {
        let schema = output_schema_with::<T>(self.raw_files)?;
        let validator = OutputValidator::new(&schema)?;
        let definitions = if self.offer_tools {
            tools.definitions()
        } else {
            Vec::new()
        };
        let mut messages = vec![ChatMessage::system(system), ChatMessage::user(user)];
        let mut tool_rounds = 0u32;
        let mut repairs = 0u32;
        loop {
            let turn = self.turn;
            self.turn += 1;
            self.ctx.report(format!("LLM turn {turn}"), None);
            let request = ChatRequest {
                model: None,
                messages: messages.clone(),
                tools: definitions.clone(),
                response_schema: Some(schema.clone()),
                // A repair round that repeats the rejected answer wastes the
                // call: each one samples a little more freely.
                temperature: Some(
                    REPAIR_TEMPERATURES[(repairs as usize).min(REPAIR_TEMPERATURES.len() - 1)]
                        .max(self.first_temperature.unwrap_or(0.0)),
                ),
                max_tokens: None,
                meta: RequestMeta {
                    workflow_id: Some(self.ctx.task.key.workflow),
                    role: self.role,
                    node: self.ctx.task.key.node.clone(),
                    step: self.ctx.task.key.step,
                    visit: self.ctx.visit,
                    turn,
                    request_id: self.ctx.request_id.clone(),
                },
            };
            self.check_budget(&request).await?;
            let started = Instant::now();
            let response = self.llm.complete(&request).await?;
            self.account(&response, turn, started).await;

            // A generation cut in a loop is sampled again, more freely, from
            // the same messages: repairing a half-written answer that
            // rambled would only feed the loop back to the model.
            if response.finish_reason == "repetition" {
                if repairs >= self.max_repairs {
                    return Err(Error::permanent(format!(
                        "{} fell into a loop on every try ({} samples): the generation repeated itself until it was cut",
                        self.role,
                        repairs + 1
                    )));
                }
                warn!(workflow_id = %self.ctx.task.key.workflow, node = %self.ctx.task.key.node,
                    step = self.ctx.task.key.step, turn, "Generation fell into a loop; sampling again.");
                self.ctx
                    .report("the answer fell into a loop: sampling again", None);
                repairs += 1;
                continue;
            }

            if !response.tool_calls.is_empty() {
                tool_rounds += 1;
                if tool_rounds > self.max_tool_rounds {
                    return Err(Error::permanent(format!(
                        "{} used more than {} tool rounds without a final answer",
                        self.role, self.max_tool_rounds
                    )));
                }
                messages.push(ChatMessage::assistant(
                    response.content.clone(),
                    response.tool_calls.clone(),
                ));
                for call in &response.tool_calls {
                    self.ctx.report(Toolbox::describe(call), None);
                    let result = tools.call(call).await;
                    debug!(workflow_id = %self.ctx.task.key.workflow, node = %self.ctx.task.key.node,
                        tool = %call.name, turn, "Tool call.");
                    messages.push(ChatMessage::tool_result(call.id.clone(), result));
                }
                continue;
            }

            let checked = match validator.parse::<T>(&response.content) {
                Ok(parsed) => {
                    let hard = tools.answer_problems(&parsed.0.files());
                    let soft = check.problems(&parsed.0, tools.staged()).await;
                    if hard.is_empty() && soft.is_empty() {
                        Ok(parsed)
                    } else if hard.is_empty()
                        && repairs >= self.max_repairs
                        && check.accept_after_repairs()
                    {
                        // The rule keeps being broken: the answer goes on,
                        // and what runs next (the tests) shows the problem
                        // to the next round, rather than the workflow
                        // failing here.
                        warn!(workflow_id = %self.ctx.task.key.workflow, node = %self.ctx.task.key.node,
                            problems = %soft.join("; "), "Answer accepted with problems the repair rounds did not fix.");
                        return Ok(parsed);
                    } else {
                        let mut problems = soft;
                        problems.extend(hard);
                        Err(problems)
                    }
                }
                Err(problems) => Err(problems),
            };
            match checked {
                Ok(parsed) => return Ok(parsed),
                Err(problems) => {
                    let errors = problems.join("; ");
                    if repairs >= self.max_repairs {
                        let rounds = match self.max_repairs {
                            0 => "without a repair round".to_string(),
                            1 => "after one repair round".to_string(),
                            n => format!("after {n} repair rounds"),
                        };
                        return Err(Error::permanent(format!(
                            "{} returned invalid output {rounds}: {errors}",
                            self.role
                        )));
                    }
                    repairs += 1;
                    // An answer that ran to the token cap is sampled again,
                    // more freely, from the same messages: shown back, its
                    // half (often a loop) is what a small model writes again.
                    if response.finish_reason == "length" {
                        warn!(workflow_id = %self.ctx.task.key.workflow, node = %self.ctx.task.key.node,
                            step = self.ctx.task.key.step, error = %errors, "Answer cut at the token cap; sampling again.");
                        self.ctx
                            .report("the answer ran to the token cap: sampling again", None);
                        continue;
                    }
                    warn!(workflow_id = %self.ctx.task.key.workflow, node = %self.ctx.task.key.node,
                        step = self.ctx.task.key.step, error = %errors, "Agent output invalid; asking for a repair.");
                    messages.push(ChatMessage::assistant(response.content, Vec::new()));
                    let again = if schema.layout.is_json() {
                        "Reply with the corrected JSON only."
                    } else {
                        "Reply with the corrected answer: the JSON line, then every file again in full."
                    };
                    messages.push(ChatMessage::user(format!(
                        "Your answer did not validate against the schema: {errors}. {again}"
                    )));
                }
            }
        }
    }
}

/// What an agent's tools staged: path -> content (None: deleted).
pub type Staged = std::collections::BTreeMap<agentry_core::RepoPath, Option<String>>;

/// A check of a parsed answer beyond its schema, whose problems go back to
/// the model as a repair request (QA's suite rules, the static checks of
/// Python files). Async: a check may run a process.
#[async_trait::async_trait]
pub trait AnswerCheck<T>: Send + Sync {
    /// What is wrong with `answer`, together with the files its tools
    /// `staged` (path -> content, None for a deletion), each as an
    /// instruction the model can act on; empty when it is accepted.
    async fn problems(&self, answer: &T, staged: &Staged) -> Vec<String>;

    /// Whether an answer whose only problems are this check's is accepted
    /// once the repair rounds are spent (the problems then show up where
    /// the answer is used, e.g. in the test run), rather than failing the
    /// node. Default: no.
    fn accept_after_repairs(&self) -> bool {
        false
    }
}

/// No check beyond the schema's.
pub struct NoCheck;

#[async_trait::async_trait]
impl<T: Sync> AnswerCheck<T> for NoCheck {
    async fn problems(&self, _: &T, _: &Staged) -> Vec<String> {
        Vec::new()
    }
}

impl Conversation<'_> {
    /// Refuses the next call when it would take the workflow or this role
    /// over budget. The next call's cost is estimated from its prompt
    /// (about 4 characters a token) at the first provider's price.
    async fn check_budget(&self, request: &ChatRequest) -> Result<()> {
        let budget = &self.accounting.budget;
        if budget.is_unlimited() {
            return Ok(());
        }
        let (workflow_spent, role_spent) = self.spent().await?;
        let prompt = estimate_tokens(&serde_json::to_string(&request.messages)?)
            + estimate_tokens(&serde_json::to_string(&request.tools)?);
        let next = Spend {
            cost_usd: self
                .accounting
                .prices
                .cost(self.llm.name(), self.llm.model(), prompt, 0),
            tokens: prompt,
        };
        budget.check(self.role.as_str(), workflow_spent, role_spent, next)
    }

    /// What the workflow and this role have spent: from the ledger when
    /// there is one (every call, failed attempts included), else from the
    /// state's usage plus this run's calls.
    async fn spent(&self) -> Result<(Spend, Spend)> {
        let role = self.role.as_str();
        if let Some(ledger) = &self.accounting.ledger {
            let (total, roles) = ledger.spend(self.ctx.task.key.workflow).await?;
            return Ok((total, roles.get(role).copied().unwrap_or_default()));
        }
        let mut total = Spend::default();
        let mut mine = Spend::default();
        for (agent, usage) in &self.ctx.state.usage {
            total = total.plus(usage.spend());
            if agent == role {
                mine = mine.plus(usage.spend());
            }
        }
        for usage in &self.usage {
            total = total.plus(usage.spend());
            mine = mine.plus(usage.spend());
        }
        Ok((total, mine))
    }

    /// Prices one answered call, adds it to this run's usage and records
    /// it in the ledger. A cached answer costs nothing and adds no tokens
    /// to what budgets count. A ledger failure is logged, not fatal: the
    /// call already happened and its usage is still in the state.
    async fn account(&mut self, response: &ChatResponse, turn: u32, started: Instant) {
        let cached = response.usage.cached;
        let cost_usd = if cached {
            0.0
        } else {
            self.accounting.prices.cost(
                &response.provider,
                &response.model,
                response.usage.prompt_tokens,
                response.usage.completion_tokens,
            )
        };
        let call = LlmCall {
            workflow_id: self.ctx.task.key.workflow,
            step: self.ctx.task.key.step,
            node: self.ctx.task.key.node.clone(),
            role: self.role,
            attempt: self.ctx.task.attempt,
            turn,
            provider: response.provider.clone(),
            model: response.model.clone(),
            prompt_tokens: response.usage.prompt_tokens,
            completion_tokens: response.usage.completion_tokens,
            cached,
            cost_usd,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            finish_reason: response.finish_reason.clone(),
            request_id: self.ctx.request_id.clone(),
            at: chrono::Utc::now(),
        };
        self.usage.push(call.usage_record());
        let Some(ledger) = &self.accounting.ledger else {
            return;
        };
        if let Err(error) = ledger.record_call(&call).await {
            warn!(workflow_id = %self.ctx.task.key.workflow, node = %self.ctx.task.key.node,
                %error, "Could not record the LLM call in the ledger.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::QaReport;
    use crate::testkit::{answer, tool_call, Kit};
    use agentry_core::ChatRole;
    use serde_json::json;

    const TEST: &str = "def test_a():\n    assert True\n";

    fn report(test_plan: Option<&str>) -> String {
        let mut v =
            json!({"test_files": [{"path": "tests/test_a.py", "content": TEST}], "focus": []});
        if let Some(p) = test_plan {
            v["test_plan"] = json!(p);
        }
        v.to_string()
    }

    async fn check(
        replies: Vec<agentry_core::ChatResponse>,
        max_rounds: u32,
    ) -> (Kit, Result<(QaReport, Value)>, Vec<UsageRecord>) {
        let kit = Kit::new();
        kit.llm.push_all(replies);
        let ctx = kit.ctx(AgentRole::Qa, 0);
        let mut tools = Toolbox::new(AgentRole::Qa, kit.tool_env(None, None));
        let mut conv = Conversation::new(&ctx, AgentRole::Qa, kit.llm.clone(), max_rounds);
        let out = conv
            .run::<QaReport>("sys".into(), "user".into(), &mut tools)
            .await;
        (kit, out, conv.into_usage())
    }

    #[tokio::test]
    async fn a_generation_cut_in_a_loop_is_sampled_again_from_the_same_messages() {
        let mut looped = answer("{\"test_plan\": \"16600\\n16700\\n16800");
        looped.finish_reason = "repetition".into();
        let (kit, out, _) = check(vec![looped.clone(), answer(&report(Some("plan")))], 8).await;
        assert_eq!(out.unwrap().0.test_plan, "plan");
        let requests = kit.llm.requests();
        assert_eq!(requests.len(), 2);
        // The same conversation, sampled more freely; the loop is not shown.
        assert_eq!(requests[0].messages, requests[1].messages);
        assert_eq!(
            requests.iter().map(|r| r.temperature).collect::<Vec<_>>(),
            vec![Some(0.2), Some(0.5)]
        );
        // Looping on every try ends the node with a reason that says so.
        let (_, out, _) = check(vec![looped.clone(), looped.clone(), looped], 8).await;
        let error = out.unwrap_err().to_string();
        assert!(error.contains("fell into a loop on every try"), "{error}");
    }

    #[tokio::test]
    async fn compact_answers_carry_their_files_raw_after_the_json() {
        let kit = Kit::new();
        // Double quotes and backslashes as they are: nothing to escape.
        let raw = "{\"test_plan\": \"plan\", \"focus\": []}\nFILE tests/test_a.py\n```python\nimport re\n\ndef test_a():\n    assert re.match(r\"\\d+\", \"12\")\n```\n";
        let cut = "{\"test_plan\": \"plan\", \"focus\": []}\nFILE tests/test_a.py\n```python\nimport re\n";
        kit.llm.push_all(vec![answer(cut), answer(raw)]);
        let ctx = kit.ctx(AgentRole::Qa, 0);
        let mut tools = Toolbox::new(AgentRole::Qa, kit.tool_env(None, None));
        let mut conv = Conversation::new(&ctx, AgentRole::Qa, kit.llm.clone(), 0)
            .with_tools(false)
            .with_raw_files(true);
        let (report, value) = conv
            .run::<QaReport>("sys".into(), "user".into(), &mut tools)
            .await
            .unwrap();
        assert_eq!(
            report.test_files[0].content,
            "import re\n\ndef test_a():\n    assert re.match(r\"\\d+\", \"12\")\n"
        );
        assert_eq!(value["test_files"][0]["path"], "tests/test_a.py");
        let requests = kit.llm.requests();
        let schema = requests[0].response_schema.as_ref().unwrap();
        assert_eq!(
            schema.layout,
            agentry_core::AnswerLayout::JsonThenFiles {
                field: "test_files".into()
            }
        );
        // The answer cut inside a file went back, naming the file.
        let repair = &requests[1].messages.last().unwrap().content;
        assert!(
            repair.contains("`tests/test_a.py` stops before"),
            "{repair}"
        );
        assert!(repair.contains("every file again in full"), "{repair}");
    }

    #[tokio::test]
    async fn an_answer_cut_at_the_token_cap_is_sampled_again_not_shown_back() {
        let mut capped = answer("{\"test_plan\": \"plan\", \"test_files\": [{\"path\": \"tests/test_a.py\", \"content\": \"def test_a():");
        capped.finish_reason = "length".into();
        let (kit, out, _) = check(vec![capped, answer(&report(Some("plan")))], 8).await;
        assert_eq!(out.unwrap().0.test_plan, "plan");
        let requests = kit.llm.requests();
        assert_eq!(requests[0].messages, requests[1].messages);
        assert_eq!(requests[1].temperature, Some(0.5));
    }

    /// A check that always finds one problem, accepted after the repairs
    /// or not.
    struct Nagging(bool);

    #[async_trait::async_trait]
    impl AnswerCheck<QaReport> for Nagging {
        async fn problems(&self, _: &QaReport, _: &Staged) -> Vec<String> {
            vec!["`tests/test_a.py` line 1: still broken".into()]
        }
        fn accept_after_repairs(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn a_check_decides_whether_problems_left_after_the_repairs_fail_the_node() {
        for accept in [true, false] {
            let kit = Kit::new();
            kit.llm
                .push_all(vec![answer(&report(Some("p"))), answer(&report(Some("p")))]);
            let ctx = kit.ctx(AgentRole::Qa, 0);
            let mut tools = Toolbox::new(AgentRole::Qa, kit.tool_env(None, None));
            let mut conv = Conversation::new(&ctx, AgentRole::Qa, kit.llm.clone(), 8);
            let out = conv
                .run_checked("s".into(), "u".into(), &mut tools, &Nagging(accept))
                .await;
            // One repair round was asked for either way.
            assert_eq!(kit.llm.requests().len(), 2);
            match out {
                Ok((r, _)) => assert!(accept, "accepted a guard's problem: {r:?}"),
                Err(error) => {
                    assert!(!accept, "{error}");
                    assert!(error.to_string().contains("still broken"), "{error}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_missing_field_is_repaired_in_one_round() {
        let (kit, out, usage) = check(
            vec![
                answer(&report(None)),
                answer(&format!("```json\n{}\n```", report(Some("plan")))),
            ],
            8,
        )
        .await;
        let (report, _) = out.unwrap();
        assert_eq!(report.test_plan, "plan");
        let requests = kit.llm.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests.iter().map(|r| r.meta.turn).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // The repair samples more freely than the first answer.
        assert_eq!(
            requests.iter().map(|r| r.temperature).collect::<Vec<_>>(),
            vec![Some(0.2), Some(0.5)]
        );
        let repair = requests[1].messages.last().unwrap();
        assert_eq!(repair.role, ChatRole::User);
        assert!(
            repair
                .content
                .starts_with("Your answer did not validate against the schema: "),
            "{}",
            repair.content
        );
        assert!(repair
            .content
            .contains("\"test_plan\" is a required property"));
        assert!(repair
            .content
            .ends_with("Reply with the corrected JSON only."));
        assert_eq!(requests[1].messages[2].role, ChatRole::Assistant);
        assert_eq!(
            requests[0].response_schema.as_ref().unwrap().name,
            "QaReport"
        );
        assert_eq!(usage.len(), 2);
        assert!(usage
            .iter()
            .all(|u| u.agent == "qa" && u.calls == 1 && u.provider == "fake"));
    }

    #[tokio::test]
    async fn still_invalid_after_repair_is_permanent_and_names_the_role() {
        let (_, out, _) = check(vec![answer("not json"), answer(&report(None))], 8).await;
        let err = out.unwrap_err();
        assert!(matches!(err, Error::Permanent(_)));
        assert!(
            err.to_string()
                .starts_with("qa returned invalid output after one repair round: "),
            "{err}"
        );
        assert!(err.to_string().contains("test_plan"), "{err}");
    }

    #[tokio::test]
    async fn tool_rounds_are_bounded() {
        let calls = (0..3).map(|_| tool_call("list_files", json!({}))).collect();
        let (_, out, usage) = check(calls, 2).await;
        let err = out.unwrap_err();
        assert_eq!(
            err,
            Error::permanent("qa used more than 2 tool rounds without a final answer")
        );
        assert_eq!(usage.len(), 3);
    }

    #[tokio::test]
    async fn llm_errors_keep_their_class() {
        let kit = Kit::new();
        kit.llm.push_error(Error::transient("502 from upstream"));
        let ctx = kit.ctx(AgentRole::Qa, 0);
        let mut tools = Toolbox::new(AgentRole::Qa, kit.tool_env(None, None));
        let mut conv = Conversation::new(&ctx, AgentRole::Qa, kit.llm.clone(), 8);
        let err = conv
            .run::<QaReport>("s".into(), "u".into(), &mut tools)
            .await
            .unwrap_err();
        assert!(err.class().is_retryable());
    }

    #[tokio::test]
    async fn tool_results_go_back_to_the_model_and_turns_count_up() {
        let (kit, out, _) = check(
            vec![
                tool_call(
                    "write_file",
                    json!({"path": "tests/x.py", "content": "boom"}),
                ),
                answer(&report(Some("p"))),
            ],
            8,
        )
        .await;
        out.unwrap();
        let requests = kit.llm.requests();
        assert_eq!(requests[1].meta.turn, 1);
        let result = requests[1].messages.last().unwrap();
        assert_eq!(result.role, ChatRole::Tool);
        assert_eq!(result.tool_call_id.as_deref(), Some("call-0"));
        assert!(result
            .content
            .starts_with("error: tool `write_file` is not available to the qa agent"));
        let progress = kit.progress.messages();
        assert_eq!(
            progress,
            vec!["LLM turn 0", "tool write_file tests/x.py", "LLM turn 1"]
        );
    }

    fn priced() -> PriceTable {
        PriceTable(
            [(
                "fake-1".to_string(),
                agentry_core::ModelPrice {
                    input_per_mtok: 1_000.0,
                    output_per_mtok: 2_000.0,
                },
            )]
            .into(),
        )
    }

    /// Runs a QA conversation with a ledger, the price table above (10
    /// prompt + 5 completion tokens cost $0.02) and `budget`.
    async fn budgeted(
        replies: Vec<ChatResponse>,
        budget: Budget,
    ) -> (Result<(QaReport, Value)>, Vec<LlmCall>, Vec<UsageRecord>) {
        let kit = Kit::new();
        kit.llm.push_all(replies);
        let ledger = Arc::new(crate::testkit::FakeLedger::default());
        let ctx = kit.ctx(AgentRole::Qa, 0);
        let mut tools = Toolbox::new(AgentRole::Qa, kit.tool_env(None, None));
        let mut conv = Conversation::new(&ctx, AgentRole::Qa, kit.llm.clone(), 8).with_accounting(
            Accounting {
                ledger: Some(ledger.clone()),
                prices: priced(),
                budget,
            },
        );
        let out = conv
            .run::<QaReport>("s".into(), "u".into(), &mut tools)
            .await;
        let calls = ledger.calls.lock().unwrap().clone();
        (out, calls, conv.into_usage())
    }

    #[tokio::test]
    async fn every_call_is_priced_and_recorded_with_its_provider() {
        let (out, calls, usage) = budgeted(
            vec![
                tool_call("list_files", json!({})),
                answer(&report(Some("p"))),
            ],
            Budget::default(),
        )
        .await;
        out.unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].turn, 1);
        assert!(calls
            .iter()
            .all(|c| c.provider == "fake" && c.role == AgentRole::Qa && !c.cached));
        assert!((calls[0].cost_usd - 0.02).abs() < 1e-9, "{:?}", calls[0]);
        assert!((usage[1].cost_usd - 0.02).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_call_that_would_exceed_the_budget_stops_the_run_with_the_figures() {
        let budget: Budget =
            serde_json::from_value(json!({"roles": {"qa": {"max_cost_usd": 0.03}}})).unwrap();
        let (out, calls, _) = budgeted(
            vec![
                tool_call("list_files", json!({})),
                tool_call("list_files", json!({})),
                answer(&report(Some("p"))),
            ],
            budget,
        )
        .await;
        let err = out.unwrap_err();
        assert_eq!(err.class(), agentry_core::ErrorClass::BudgetExceeded);
        let text = err.to_string();
        assert!(text.starts_with("budget_exceeded: qa: "), "{text}");
        assert!(text.contains("budget of role qa of $0.0300"), "{text}");
        assert!(text.contains("spent $0.0400"), "{text}");
        assert_eq!(calls.len(), 2, "the third call was never made");
    }

    #[tokio::test]
    async fn cached_answers_cost_nothing_and_are_counted_as_cached() {
        let mut cached = answer(&report(Some("p")));
        cached.usage.cached = true;
        let budget: Budget = serde_json::from_value(json!({"max_tokens": 10_000})).unwrap();
        let (out, calls, usage) = budgeted(vec![cached], budget).await;
        out.unwrap();
        assert!(calls[0].cached && calls[0].cost_usd == 0.0);
        assert_eq!(calls[0].prompt_tokens, 10, "the ledger keeps the counts");
        assert_eq!((usage[0].cached_calls, usage[0].total_tokens()), (1, 0));
    }
}
