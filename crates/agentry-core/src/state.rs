//! The seed's `WorkflowState`, its status, and the deltas checkpoints store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, ErrorClass, RequestId, WorkflowId};

/// A workflow's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowStatus {
    /// Created, not yet started by a scheduler.
    Pending,
    /// Tasks are (or should be) running.
    Running,
    /// Waiting for a human to approve or reject the pending nodes.
    AwaitingApproval,
    /// Finished: every branch reached the end.
    Completed,
    /// Stopped by an error; `errors` says why.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// A human rejected it at an approval point.
    Rejected,
}

impl WorkflowStatus {
    /// Stable snake_case name, as stored in the `workflows.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "pending",
            WorkflowStatus::Running => "running",
            WorkflowStatus::AwaitingApproval => "awaiting_approval",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
            WorkflowStatus::Rejected => "rejected",
        }
    }

    /// No further work will happen without an explicit `resume`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Completed
                | WorkflowStatus::Failed
                | WorkflowStatus::Cancelled
                | WorkflowStatus::Rejected
        )
    }

    /// Every status, for validation messages and filters.
    pub const ALL: [WorkflowStatus; 7] = [
        WorkflowStatus::Pending,
        WorkflowStatus::Running,
        WorkflowStatus::AwaitingApproval,
        WorkflowStatus::Completed,
        WorkflowStatus::Failed,
        WorkflowStatus::Cancelled,
        WorkflowStatus::Rejected,
    ];
}

impl std::fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WorkflowStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        WorkflowStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = WorkflowStatus::ALL.iter().map(|s| s.as_str()).collect();
                Error::invalid(format!(
                    "unknown workflow status `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// The five agent roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Requirement -> scope, epics, stories -> tracker.
    BusinessAnalyst,
    /// Design + code -> branch, commits, merge request.
    Developer,
    /// Test plan + tests, run in the sandbox.
    Qa,
    /// Documentation pages -> wiki.
    TechnicalWriter,
    /// CI config, Dockerfile, deployment manifest -> code host.
    Devops,
}

impl AgentRole {
    /// Every role, in pipeline order.
    pub const ALL: [AgentRole; 5] = [
        AgentRole::BusinessAnalyst,
        AgentRole::Developer,
        AgentRole::Qa,
        AgentRole::TechnicalWriter,
        AgentRole::Devops,
    ];

    /// Stable snake_case name (`business_analyst`, `developer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::BusinessAnalyst => "business_analyst",
            AgentRole::Developer => "developer",
            AgentRole::Qa => "qa",
            AgentRole::TechnicalWriter => "technical_writer",
            AgentRole::Devops => "devops",
        }
    }
}

impl std::fmt::Display for AgentRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AgentRole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        AgentRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = AgentRole::ALL.iter().map(|r| r.as_str()).collect();
                Error::invalid(format!(
                    "unknown agent role `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// One recorded error (the seed's `errors: List[Error]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowErrorEntry {
    /// Super-step where it happened.
    pub step: u64,
    /// Node that failed, if a node did.
    pub node: Option<String>,
    /// Attempt that failed (1-based); 0 when no attempt did (a rejection,
    /// a routing error).
    pub attempt: u32,
    /// The error's class.
    pub class: ErrorClass,
    /// The error's text as users see it (a rejection's is `rejected:
    /// <reason>`).
    pub message: String,
    /// When it was recorded (UTC).
    pub at: DateTime<Utc>,
}

/// LLM usage of one call (or an aggregate), per agent role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Agent role (or node) that spent it.
    pub agent: String,
    /// Provider name (`scripted`, `openai`, ...).
    pub provider: String,
    /// Model that answered, as the provider named it; in a per-agent total,
    /// the first call's.
    pub model: String,
    /// LLM calls.
    pub calls: u64,
    /// Prompt (input) tokens as the provider counted them; a cached answer
    /// adds none.
    pub prompt_tokens: u64,
    /// Completion (output) tokens; a cached answer adds none.
    pub completion_tokens: u64,
    /// Calls answered from the cache.
    pub cached_calls: u64,
    /// Cost in US dollars, when a price is known.
    pub cost_usd: f64,
}

impl UsageRecord {
    /// Adds another record's counts into this one.
    pub fn add(&mut self, other: &UsageRecord) {
        self.calls += other.calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_calls += other.cached_calls;
        self.cost_usd += other.cost_usd;
    }

    /// Prompt plus completion tokens: what token budgets count.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Its spend, as budgets count it.
    pub fn spend(&self) -> crate::Spend {
        crate::Spend {
            cost_usd: self.cost_usd,
            tokens: self.total_tokens(),
        }
    }
}

/// What one task (or one control action) changed. Checkpoints store these,
/// not whole states; the state at a step is the fold of the deltas up to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDelta {
    /// Outputs to set: the state keys each by
    /// [`AgentOutputWrite::state_key`] (`<agent>.<output_type>`), and the
    /// store also writes one `agent_outputs` row per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_outputs: Vec<AgentOutputWrite>,
    /// Shared-context keys to set (upsert into `shared_context`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_context: BTreeMap<String, Value>,
    /// Tracker keys to append (deduplicated on fold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jira_tickets: Vec<String>,
    /// Wiki page ids to append (deduplicated on fold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confluence_pages: Vec<String>,
    /// Repositories to append (deduplicated on fold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gitlab_repos: Vec<String>,
    /// Errors to append.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<WorkflowErrorEntry>,
    /// LLM usage to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UsageRecord>,
}

/// One agent output written by a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutputWrite {
    /// Agent name (role) that wrote it: the `agent_outputs.agent_name` column.
    pub agent_name: String,
    /// Kind of output (`analysis`, `implementation`, `test_run`, ...): the
    /// `agent_outputs.output_type` column. The state keys it as
    /// `<agent_name>.<output_type>` ([`AgentOutputWrite::state_key`]).
    pub output_type: String,
    /// The output itself.
    pub content: Value,
}

impl AgentOutputWrite {
    /// The key under which the state's `agent_outputs` map holds it:
    /// `<agent_name>.<output_type>`.
    pub fn state_key(&self) -> String {
        format!("{}.{}", self.agent_name, self.output_type)
    }
}

impl StateDelta {
    /// True when the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &StateDelta::default()
    }
}

/// The seed's `WorkflowState`, plus the fields the engine adds (`id`, `step`,
/// `usage`, timestamps). Built by folding checkpoint deltas over
/// [`WorkflowState::initial`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowState {
    /// The workflow's id (`workflows.id`; not in the seed's class).
    pub id: WorkflowId,
    /// Caller's request id (unique per workflow).
    pub request_id: RequestId,
    /// The requirement text.
    pub requirements: String,
    /// Name of the node(s) currently (or last) running, `+`-joined for fan-out.
    pub current_step: String,
    /// Latest output per `<agent>.<output_type>`.
    pub agent_outputs: BTreeMap<String, Value>,
    /// Shared context, key -> value.
    pub shared_context: BTreeMap<String, Value>,
    /// Tracker issue keys made by this workflow.
    pub jira_tickets: Vec<String>,
    /// Wiki page ids made by this workflow.
    pub confluence_pages: Vec<String>,
    /// Repositories touched by this workflow.
    pub gitlab_repos: Vec<String>,
    /// Where its lifecycle stands, as of the last checkpoint folded in.
    pub status: WorkflowStatus,
    /// Errors recorded so far.
    pub errors: Vec<WorkflowErrorEntry>,
    /// Super-step the state is at.
    pub step: u64,
    /// LLM usage per agent.
    pub usage: BTreeMap<String, UsageRecord>,
    /// When the workflow was submitted (UTC).
    pub created_at: DateTime<Utc>,
    /// When the last checkpoint folded in was committed (UTC); for the
    /// current state, the record's `updated_at`.
    pub updated_at: DateTime<Utc>,
}

impl WorkflowState {
    /// The empty state a workflow starts from.
    pub fn initial(
        id: WorkflowId,
        request_id: RequestId,
        requirements: impl Into<String>,
        created_at: DateTime<Utc>,
    ) -> Self {
        WorkflowState {
            id,
            request_id,
            requirements: requirements.into(),
            current_step: String::new(),
            agent_outputs: BTreeMap::new(),
            shared_context: BTreeMap::new(),
            jira_tickets: Vec::new(),
            confluence_pages: Vec::new(),
            gitlab_repos: Vec::new(),
            status: WorkflowStatus::Pending,
            errors: Vec::new(),
            step: 0,
            usage: BTreeMap::new(),
            created_at,
            updated_at: created_at,
        }
    }

    /// Applies one delta. Lists are appended without duplicates; maps are
    /// overwritten key by key; usage is added up per agent.
    pub fn apply(&mut self, delta: &StateDelta) {
        for out in &delta.agent_outputs {
            self.agent_outputs
                .insert(out.state_key(), out.content.clone());
        }
        for (k, v) in &delta.shared_context {
            self.shared_context.insert(k.clone(), v.clone());
        }
        push_unique(&mut self.jira_tickets, &delta.jira_tickets);
        push_unique(&mut self.confluence_pages, &delta.confluence_pages);
        push_unique(&mut self.gitlab_repos, &delta.gitlab_repos);
        self.errors.extend(delta.errors.iter().cloned());
        for u in &delta.usage {
            let entry = self
                .usage
                .entry(u.agent.clone())
                .or_insert_with(|| UsageRecord {
                    agent: u.agent.clone(),
                    provider: u.provider.clone(),
                    model: u.model.clone(),
                    ..UsageRecord::default()
                });
            entry.add(u);
        }
    }

    /// Looks a value up by a dotted path: `shared_context.qa.passed`,
    /// `agent_outputs.qa.test_run.passed`, `status`, `step`, `requirements`.
    /// Map keys may themselves contain dots; the longest matching key wins.
    pub fn lookup(&self, path: &str) -> Option<Value> {
        let (head, rest) = match path.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (path, None),
        };
        let map_lookup = |map: &BTreeMap<String, Value>, rest: Option<&str>| -> Option<Value> {
            let rest = rest?;
            // Try the longest key prefix first, so `qa.test_run.passed` finds
            // key `qa.test_run` then field `passed`.
            let parts: Vec<&str> = rest.split('.').collect();
            for cut in (1..=parts.len()).rev() {
                let key = parts[..cut].join(".");
                if let Some(v) = map.get(&key) {
                    return json_path(v, &parts[cut..]);
                }
            }
            None
        };
        match head {
            "shared_context" | "context" => map_lookup(&self.shared_context, rest),
            "agent_outputs" | "outputs" => map_lookup(&self.agent_outputs, rest),
            "status" if rest.is_none() => Some(Value::String(self.status.as_str().into())),
            "step" if rest.is_none() => Some(Value::from(self.step)),
            "requirements" if rest.is_none() => Some(Value::String(self.requirements.clone())),
            "current_step" if rest.is_none() => Some(Value::String(self.current_step.clone())),
            "errors" if rest.is_none() => Some(Value::from(self.errors.len())),
            _ => None,
        }
    }
}

fn json_path(v: &Value, parts: &[&str]) -> Option<Value> {
    let mut cur = v;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(*p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur.clone())
}

fn push_unique(into: &mut Vec<String>, items: &[String]) {
    for item in items {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fold_appends_unique_and_sums_usage() {
        let mut st = WorkflowState::initial(
            WorkflowId::new(),
            RequestId::new("r").unwrap(),
            "req",
            Utc::now(),
        );
        let d = StateDelta {
            agent_outputs: vec![AgentOutputWrite {
                agent_name: "qa".into(),
                output_type: "test_run".into(),
                content: json!({"passed": false, "round": 1}),
            }],
            shared_context: BTreeMap::from([("qa.passed".into(), json!(false))]),
            jira_tickets: vec!["SHOP-1".into(), "SHOP-1".into()],
            usage: vec![UsageRecord {
                agent: "qa".into(),
                calls: 1,
                prompt_tokens: 10,
                ..Default::default()
            }],
            ..Default::default()
        };
        st.apply(&d);
        st.apply(&d);
        assert_eq!(st.jira_tickets, vec!["SHOP-1".to_string()]);
        assert_eq!(st.usage["qa"].prompt_tokens, 20);
        assert_eq!(st.lookup("context.qa.passed"), Some(json!(false)));
        assert_eq!(st.lookup("outputs.qa.test_run.round"), Some(json!(1)));
        assert_eq!(st.lookup("outputs.qa.nothing"), None);
        assert_eq!(st.lookup("status"), Some(json!("pending")));
    }

    #[test]
    fn unknown_status_names_choices() {
        let err = "done".parse::<WorkflowStatus>().unwrap_err().to_string();
        assert!(err.contains("`done`") && err.contains("awaiting_approval"));
    }
}
