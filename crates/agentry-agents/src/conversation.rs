//! The one agent loop every role runs: LLM turns with the role's tools, tool
//! execution, output validation with a single repair round, usage records
//! and progress reports.

use std::sync::Arc;

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, Error, LlmProvider, NodeContext, RequestMeta, Result,
    UsageRecord,
};
use serde_json::Value;
use tracing::{debug, warn};

use crate::output::{output_schema, AgentOutput, OutputValidator};
use crate::tools::Toolbox;

/// One node run's conversation with the model.
pub struct Conversation<'a> {
    ctx: &'a NodeContext,
    role: AgentRole,
    llm: Arc<dyn LlmProvider>,
    max_tool_rounds: u32,
    turn: u32,
    usage: Vec<UsageRecord>,
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
        }
    }

    /// Usage of every call so far, one record per call.
    pub fn into_usage(self) -> Vec<UsageRecord> {
        self.usage
    }

    /// Runs the loop until the model gives a valid `T`: returns it and its
    /// JSON. Tool rounds past the bound, or an answer still invalid after
    /// one repair round, are permanent errors naming the role; LLM errors
    /// propagate with their class.
    pub async fn run<T: AgentOutput>(
        &mut self,
        system: String,
        user: String,
        tools: &mut Toolbox,
    ) -> Result<(T, Value)> {
        let schema = output_schema::<T>()?;
        let validator = OutputValidator::new(&schema)?;
        let definitions = tools.definitions();
        let mut messages = vec![ChatMessage::system(system), ChatMessage::user(user)];
        let mut tool_rounds = 0u32;
        let mut repaired = false;
        loop {
            let turn = self.turn;
            self.turn += 1;
            self.ctx.report(format!("LLM turn {turn}"), None);
            let request = ChatRequest {
                model: None,
                messages: messages.clone(),
                tools: definitions.clone(),
                response_schema: Some(schema.clone()),
                temperature: Some(0.2),
                max_tokens: None,
                meta: RequestMeta {
                    workflow_id: Some(self.ctx.task.workflow_id),
                    role: self.role,
                    node: self.ctx.task.node.clone(),
                    step: self.ctx.task.step,
                    visit: self.ctx.visit,
                    turn,
                    request_id: self.ctx.request_id.clone(),
                },
            };
            let response = self.llm.complete(&request).await?;
            self.usage.push(UsageRecord {
                agent: self.role.as_str().to_string(),
                provider: response.provider.clone(),
                model: response.model.clone(),
                calls: 1,
                prompt_tokens: response.usage.prompt_tokens,
                completion_tokens: response.usage.completion_tokens,
                cached_calls: u64::from(response.usage.cached),
                cost_usd: 0.0,
            });

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
                    debug!(workflow_id = %self.ctx.task.workflow_id, node = %self.ctx.task.node,
                        tool = %call.name, turn, "Tool call.");
                    messages.push(ChatMessage::tool_result(call.id.clone(), result));
                }
                continue;
            }

            match validator.parse::<T>(&response.content) {
                Ok(parsed) => return Ok(parsed),
                Err(problems) => {
                    let errors = problems.join("; ");
                    if repaired {
                        return Err(Error::permanent(format!(
                            "{} returned invalid output after one repair round: {errors}",
                            self.role
                        )));
                    }
                    warn!(workflow_id = %self.ctx.task.workflow_id, node = %self.ctx.task.node,
                        step = self.ctx.task.step, error = %errors, "Agent output invalid; asking for a repair.");
                    repaired = true;
                    messages.push(ChatMessage::assistant(response.content, Vec::new()));
                    messages.push(ChatMessage::user(format!(
                        "Your answer did not validate against the schema: {errors}. \
                         Reply with the corrected JSON only."
                    )));
                }
            }
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

    fn report(test_plan: Option<&str>) -> String {
        let mut v =
            json!({"test_files": [{"path": "tests/test_a.py", "content": "x"}], "focus": []});
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
}
