//! The end-of-run summary: every artifact a workflow made, read back from the
//! tracker, wiki, code host and store (never from memory), so it shows what
//! really exists.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use agentry_core::{
    ArtifactOwner, Integrations, LlmCall, MergeRequest, UsageRecord, WorkflowErrorEntry,
    WorkflowId, WorkflowState, WorkflowStatus,
};

use crate::app::App;

/// What a workflow produced, read back from where it landed (the
/// owner's tracker, wiki and code host, and the store) rather than from
/// what the agents said they did. `agentry run` prints it at the end,
/// `agentry workflows show` any time (with `--json`, under `artifacts`).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The workflow summarized.
    pub id: WorkflowId,
    /// Its status in the last checkpoint.
    pub status: WorkflowStatus,
    /// Whose artifacts these are: `cli` (started from the command line) or
    /// `tenant:<name>` (submitted through the API).
    pub owner: ArtifactOwner,
    /// The submission's request id (also its idempotency key).
    pub request_id: agentry_core::RequestId,
    /// The node that ran last, or runs now.
    pub current_step: String,
    /// The issues the workflow created, as the tracker has them now, in
    /// creation order.
    pub tickets: Vec<Ticket>,
    /// The pages the workflow created, as the wiki has them now.
    pub pages: Vec<PageSummary>,
    /// The project's repository and its working branch; None when the
    /// workflow made none (or it is gone).
    pub repository: Option<RepositorySummary>,
    /// Every QA test run (the `test_run` outputs), oldest first.
    pub test_runs: Vec<TestRunSummary>,
    /// The quality verdict of the final tests (`ok`, `weak_tests`,
    /// `unmeasured`) with the mutation score, once the mutation check ran.
    pub quality: Option<serde_json::Value>,
    /// LLM calls, tokens and cost per agent role: from the call ledger
    /// (every call, failed attempts included) when it has the workflow's
    /// calls, else from the state.
    pub usage: BTreeMap<String, UsageRecord>,
    /// Prompt plus completion tokens of every role.
    pub total_tokens: u64,
    /// Cost of every role in US dollars (0 for unpriced models).
    pub total_cost_usd: f64,
    /// Every LLM call: who asked, which provider and model answered, tokens,
    /// cost, latency.
    pub llm_calls: Vec<LlmCall>,
    /// Every error the workflow recorded, retried ones included, oldest
    /// first.
    pub errors: Vec<WorkflowErrorEntry>,
}

/// A tracker issue, as the tracker has it now.
#[derive(Debug, Serialize)]
pub struct Ticket {
    /// The tracker's key (`SHOP-12`).
    pub key: String,
    /// `epic`, `story`, `task`, `bug`.
    pub kind: String,
    /// One line, as the analyst wrote it.
    pub title: String,
    /// The tracker's workflow status (`To Do`, `Done`, ...).
    pub status: String,
    /// The key of its epic, for a story.
    pub parent: Option<String>,
}

/// A wiki page, as the wiki has it now.
#[derive(Debug, Serialize)]
pub struct PageSummary {
    /// The wiki's page id.
    pub id: String,
    /// Unique within its space.
    pub title: String,
    /// The page it sits under; None at the top of the space.
    pub parent_id: Option<String>,
    /// 1 for a page written once; each update adds one.
    pub version: u32,
    /// The space key (the project key).
    pub space: String,
}

/// A commit on the working branch.
#[derive(Debug, Serialize)]
pub struct CommitSummary {
    /// Full hexadecimal object id.
    pub sha: String,
    /// The message's first line.
    pub title: String,
    /// The agent (or person) it is attributed to.
    pub author: String,
}

/// The project's repository, seen from the working branch.
#[derive(Debug, Serialize)]
pub struct RepositorySummary {
    /// The code host's repository name.
    pub name: String,
    /// Its clone URL (a local path for the local code host).
    pub path: String,
    /// The developer's branch, else the project's, else the default one.
    pub branch: String,
    /// Commits on the branch, newest first.
    pub commits: Vec<CommitSummary>,
    /// Every file path at the branch's head.
    pub files: Vec<String>,
    /// The developer's merge request, as the code host has it now.
    pub merge_request: Option<MergeRequest>,
}

/// One QA test run, from its recorded `test_run` output.
#[derive(Debug, Serialize)]
pub struct TestRunSummary {
    /// QA round (1-based).
    pub round: u64,
    /// Exit code (None when killed).
    pub exit_code: Option<i64>,
    /// Exited 0, was not killed, and ran at least one test.
    pub passed: bool,
    /// Tests passed, when the runner said.
    pub tests_passed: Option<u64>,
    /// Tests failed, when the runner said.
    pub tests_failed: Option<u64>,
    /// The test command, one argument an element.
    pub command: Vec<String>,
    /// Wall time of the run, milliseconds.
    pub duration_ms: Option<u64>,
    /// The commit the sandbox checked out.
    pub commit: Option<String>,
    /// The isolation the run had (`full (namespaces: ...)`), as recorded;
    /// None for runs recorded before isolation was.
    pub isolation: Option<String>,
}

/// Reads everything back, from the integrations of the workflow's owner
/// (its API tenant, or the command line's namespace).
pub async fn summarize(app: &App, id: WorkflowId) -> Result<Summary> {
    let store = app.store();
    let record = store.get_workflow(id).await?;
    let owner = ArtifactOwner::of_workflow(&record)?;
    let ports = app.integrations.integrations(&owner).await?;
    let state = store.state_at(id, None).await?;

    let mut tickets = Vec::new();
    for key in &state.jira_tickets {
        let issue = ports.tracker.get_issue(key).await?;
        tickets.push(Ticket {
            key: issue.key,
            kind: issue.kind.as_str().to_string(),
            title: issue.title,
            status: issue.status,
            parent: issue.parent,
        });
    }

    let mut pages = Vec::new();
    for page_id in &state.confluence_pages {
        let page = ports.wiki.get_page(page_id).await?;
        pages.push(PageSummary {
            id: page.id,
            title: page.title,
            parent_id: page.parent_id,
            version: page.version,
            space: page.space,
        });
    }

    let repository = repository_summary(&ports, &state).await?;

    let outputs = store.agent_outputs(id).await?;
    let test_runs = outputs
        .iter()
        .filter(|o| o.output_type == "test_run")
        .map(|o| test_run_summary(&o.content))
        .collect();

    let llm_calls = app.store.calls(id).await?;
    let usage = if llm_calls.is_empty() {
        state.usage.clone()
    } else {
        usage_by_role(&llm_calls)
    };
    let total_tokens = usage.values().map(UsageRecord::total_tokens).sum();
    let total_cost_usd = usage.values().map(|u| u.cost_usd).sum();
    Ok(Summary {
        id,
        status: state.status,
        owner,
        request_id: state.request_id.clone(),
        current_step: state.current_step.clone(),
        tickets,
        pages,
        repository,
        test_runs,
        quality: state.shared_context.get("quality").cloned(),
        usage,
        total_tokens,
        total_cost_usd,
        llm_calls,
        errors: state.errors.clone(),
    })
}

/// Per-role totals of the ledger's calls. A role served by several
/// providers or models lists them joined with `,`.
fn usage_by_role(calls: &[LlmCall]) -> BTreeMap<String, UsageRecord> {
    let mut usage: BTreeMap<String, UsageRecord> = BTreeMap::new();
    for call in calls {
        let role = call.role.as_str();
        let entry = usage
            .entry(role.to_string())
            .or_insert_with(|| UsageRecord {
                agent: role.to_string(),
                ..UsageRecord::default()
            });
        for (list, item) in [
            (&mut entry.provider, &call.provider),
            (&mut entry.model, &call.model),
        ] {
            if !list.split(',').any(|p| p == item) {
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(item);
            }
        }
        entry.add(&call.usage_record());
    }
    usage
}

fn ctx_str(state: &WorkflowState, path: &str) -> Option<String> {
    state
        .lookup(&format!("context.{path}"))
        .and_then(|v| v.as_str().map(str::to_string))
}

async fn repository_summary(
    ports: &Integrations,
    state: &WorkflowState,
) -> Result<Option<RepositorySummary>> {
    let Some(name) =
        ctx_str(state, "project.repository").or_else(|| state.gitlab_repos.first().cloned())
    else {
        return Ok(None);
    };
    let repo = match ports.code_host.get_repository(&name).await {
        Ok(repo) => repo,
        Err(agentry_core::Error::NotFound(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let branch = ctx_str(state, "developer.branch")
        .or_else(|| ctx_str(state, "project.branch"))
        .unwrap_or_else(|| repo.default_branch.clone());
    let commits = ports
        .code_host
        .commits(&name, &branch)
        .await?
        .into_iter()
        .map(|c| CommitSummary {
            sha: c.sha,
            title: c.title,
            author: c.author,
        })
        .collect();
    let files = ports.code_host.list_files(&name, &branch).await?;
    let mr_id = state
        .lookup("context.developer.merge_request.id")
        .and_then(|v| v.as_u64());
    let merge_request = match mr_id {
        Some(mr) => Some(ports.code_host.get_merge_request(&name, mr).await?),
        None => None,
    };
    Ok(Some(RepositorySummary {
        name,
        path: repo.clone_url,
        branch,
        commits,
        files,
        merge_request,
    }))
}

fn test_run_summary(content: &Value) -> TestRunSummary {
    let u = |k: &str| content.get(k).and_then(Value::as_u64);
    TestRunSummary {
        round: u("round").unwrap_or(0),
        exit_code: content.get("exit_code").and_then(Value::as_i64),
        passed: content
            .get("passed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        tests_passed: u("tests_passed"),
        tests_failed: u("tests_failed"),
        command: content
            .get("command")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        duration_ms: u("duration_ms"),
        commit: content
            .get("commit")
            .and_then(Value::as_str)
            .map(str::to_string),
        isolation: content
            .get("isolation")
            .and_then(|v| serde_json::from_value::<agentry_core::Isolation>(v.clone()).ok())
            .map(|i| i.describe()),
    }
}

/// The summary as text for a terminal: a section for each kind of
/// artifact there is, LLM usage per role, errors, and every LLM call when
/// `with_calls`.
pub fn render(summary: &Summary, with_calls: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "workflow {}: {}", summary.id, summary.status);
    if let Some(tenant) = summary.owner.tenant_id() {
        let _ = writeln!(out, "tenant: {tenant}");
    }
    if !summary.tickets.is_empty() {
        let _ = writeln!(out, "\ntickets:");
        for t in &summary.tickets {
            let _ = writeln!(
                out,
                "  {:<10} {:<6} [{}] {}",
                t.key, t.kind, t.status, t.title
            );
        }
    }
    if !summary.pages.is_empty() {
        let _ = writeln!(out, "\nwiki pages:");
        for p in &summary.pages {
            let indent = if p.parent_id.is_some() { "    " } else { "  " };
            let _ = writeln!(out, "{indent}{} (v{}, id {})", p.title, p.version, p.id);
        }
    }
    if let Some(repo) = &summary.repository {
        let _ = writeln!(out, "\nrepository: {} ({})", repo.name, repo.path);
        let _ = writeln!(
            out,
            "  branch {} with {} commits:",
            repo.branch,
            repo.commits.len()
        );
        for c in &repo.commits {
            let _ = writeln!(out, "    {} {}", c.sha.get(..10).unwrap_or(&c.sha), c.title);
        }
        if let Some(mr) = &repo.merge_request {
            let _ = writeln!(
                out,
                "  merge request !{} {} -> {} [{:?}]{}",
                mr.id,
                mr.source_branch,
                mr.target_branch,
                mr.state,
                mr.test_result
                    .as_ref()
                    .map(|t| format!(", tests: {}", if t.passed { "passed" } else { "failed" }))
                    .unwrap_or_default()
            );
        }
    }
    if !summary.test_runs.is_empty() {
        let _ = writeln!(out, "\ntest runs:");
        for r in &summary.test_runs {
            let _ = writeln!(
                out,
                "  round {}: {} (exit {}{})",
                r.round,
                if r.passed { "passed" } else { "FAILED" },
                r.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "killed".into()),
                match (r.tests_passed, r.tests_failed) {
                    (Some(p), Some(f)) => format!(", {p} passed, {f} failed"),
                    _ => String::new(),
                }
            );
            if let Some(isolation) = &r.isolation {
                let _ = writeln!(out, "    isolation: {isolation}");
            }
        }
    }
    if let Some(q) = &summary.quality {
        let verdict = q["verdict"].as_str().unwrap_or("unknown");
        let detail = match q["mutation_score"].as_f64() {
            Some(score) => format!(
                "{} of {} mutants killed ({:.0}%)",
                q["mutants_killed"],
                q["mutants_run"],
                score * 100.0
            ),
            None => q["reason"].as_str().unwrap_or("not measured").to_string(),
        };
        let _ = writeln!(out, "\ntest quality: {verdict} ({detail})");
    }
    if !summary.usage.is_empty() {
        let _ = writeln!(out, "\nLLM usage:");
        for (agent, u) in &summary.usage {
            let cached = if u.cached_calls > 0 {
                format!(", {} cached", u.cached_calls)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<18} {:>3} calls{cached} {:>7} tokens ({} in, {} out)  ${:.4}  {}",
                agent,
                u.calls,
                u.total_tokens(),
                u.prompt_tokens,
                u.completion_tokens,
                u.cost_usd,
                if u.provider.is_empty() {
                    String::new()
                } else {
                    format!("{} / {}", u.provider, u.model)
                }
            );
        }
        let _ = writeln!(
            out,
            "  {:<18} {:>17} tokens  ${:.4}",
            "total", summary.total_tokens, summary.total_cost_usd
        );
    }
    if with_calls && !summary.llm_calls.is_empty() {
        let _ = writeln!(out, "\nLLM calls:");
        for c in &summary.llm_calls {
            let _ = writeln!(
                out,
                "  step {:<3} {:<18} turn {:<2} {:<10} {:<24} {:>6} in {:>6} out  ${:.4} {:>6} ms{}",
                c.step,
                c.node,
                c.turn,
                c.provider,
                c.model,
                c.prompt_tokens,
                c.completion_tokens,
                c.cost_usd,
                c.latency_ms,
                if c.cached { "  (cached)" } else { "" }
            );
        }
    }
    if !summary.errors.is_empty() {
        let _ = writeln!(out, "\nerrors:");
        for e in &summary.errors {
            let _ = writeln!(
                out,
                "  step {} {}: [{}] {}",
                e.step,
                e.node.as_deref().unwrap_or("-"),
                e.class,
                e.message
            );
        }
    }
    out
}
