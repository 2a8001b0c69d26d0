//! `agentry bench humaneval`: OpenAI's HumanEval as an outside yardstick,
//! on a fixed selection of its problems (`problems.rs`), in one of two
//! modes:
//!
//! - `direct`: the LLM provider alone. One chat request per problem
//!   (temperature 0, so greedy on the local model: pass@1), its code
//!   taken from the answer and made a program with the prompt
//!   (`program.rs`). The request says role `developer`, node `humaneval`
//!   and, as its visit, the problem's position in the selection (0, 1,
//!   ...), so a scripted session can answer each problem its own way.
//! - `harness`: the whole crew. The problem's prompt (signature and
//!   docstring) becomes a requirement that pins the public interface
//!   (`from solution import <entry_point>`), run as `bench quality` runs
//!   its tasks (`bench_crew.rs`); a problem passes when the workflow
//!   completed and HumanEval's test passes on the branch.
//!
//! Either way HumanEval's own test, `check(<entry_point>)`, runs as a real
//! Python process in the project's sandbox with a per-problem time limit.
//!
//! Key design decision: HumanEval's tests reach nothing the model or the
//! agents see. The direct prompt is the problem's prompt alone; the
//! harness's requirement quotes the prompt and nothing of the test, and
//! the test goes into the sandbox's overlay of a fresh clone only after
//! the workflow has ended.

mod problems;
mod program;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use agentry_core::{
    AgentRole, ArtifactOwner, ChatMessage, ChatRequest, RepoPath, RequestMeta, SandboxLimits,
    TestOutcome, TestRun, TestRunRequest,
};

use crate::app::App;
use crate::bench_crew::{bench_root, emit, fresh_data_dir, percentile, run_crew, CrewTask};
use crate::cli::{BenchHumanevalArgs, HumanevalMode};
use crate::config::Config;
use crate::llm::LlmChoice;
use problems::Problem;
use program::{CHECK_COMMAND, CHECK_FILE};

/// The tracker project of every harness run.
const PROJECT_KEY: &str = "HEVAL";

/// How one problem went.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    /// `HumanEval/<n>`.
    id: String,
    /// It counts for pass@1: direct, HumanEval's test passed; harness, the
    /// workflow completed too.
    passed: bool,
    /// HumanEval's test passed on the code, whatever the workflow's end.
    code_passed: bool,
    /// Harness: the workflow's end state.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    /// Harness: QA's own verdict at the end (its acceptance suite passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    own_passed: Option<bool>,
    /// Why it did not pass: the workflow's failure, the check's first
    /// error, a timeout, a failed LLM call.
    detail: Option<String>,
    /// Seconds to the solution: the LLM call (direct) or the workflow
    /// (harness); the check is not counted.
    wall_s: f64,
    /// Prompt plus completion tokens.
    tokens: u64,
}

/// Runs the selection in `--mode` and prints the table and one JSON line
/// (or, with `--json`, every outcome and the totals).
pub async fn bench_humaneval(
    args: &BenchHumanevalArgs,
    config: &Config,
    json: bool,
) -> Result<ExitCode> {
    let all = problems::load(args.problems.as_deref())?;
    let selected = problems::select(&all, &args.problem_ids, args.limit)?;
    // Fails now, naming what is missing (the local model, a key), before
    // any run.
    let provider = LlmChoice::resolve(&args.llm, None, config)?.provider;
    let (_scratch, root) = bench_root(args.keep.as_deref())?;
    let mut config = config.clone();
    config.mode = crate::config::Mode::Embedded;
    let outcomes = match args.mode {
        HumanevalMode::Direct => run_direct(&selected, &root, &config, args).await?,
        HumanevalMode::Harness => run_harness(&selected, &root, &config, args).await?,
    };
    let report = Report {
        mode: Some(args.mode),
        llm: provider,
        selection: if args.problem_ids.is_empty() {
            format!(
                "every {}th from HumanEval/0{}",
                problems::SELECTION_STEP,
                args.limit
                    .map(|n| format!(", first {n}"))
                    .unwrap_or_default()
            )
        } else {
            "chosen".into()
        },
        ..Report::of(&outcomes)
    };
    emit(json, &outcomes, &report, || print_table(&outcomes, &report))?;
    Ok(ExitCode::SUCCESS)
}

/// The limits of a problem's check: the configured ones, with the
/// benchmark's time limit.
fn check_limits(config: &Config, timeout_s: u64) -> SandboxLimits {
    let timeout = Duration::from_secs(timeout_s.max(1));
    SandboxLimits {
        wall_time: timeout,
        cpu_time: timeout,
        ..config.sandbox.limits()
    }
}

/// The check module as the sandbox's overlay.
fn check_overlay(problem: &Problem, program: &str) -> Result<Vec<(RepoPath, String)>> {
    Ok(vec![(
        RepoPath::parse(CHECK_FILE)?,
        program::check_module(problem, program),
    )])
}

/// Direct mode: one greedy answer per problem, checked in a clone of a
/// scratch repository.
async fn run_direct(
    selected: &[Problem],
    root: &Path,
    config: &Config,
    args: &BenchHumanevalArgs,
) -> Result<Vec<Outcome>> {
    let app = App::open(Some(&fresh_data_dir(root, "direct")?), config.clone()).await?;
    let choice = LlmChoice::resolve(&args.llm, None, &app.config)?;
    let llm = choice.provider(&app.config, app.llm_cache.clone())?;
    let repo = app
        .integrations
        .code_host(&ArtifactOwner::Cli)
        .await?
        .ensure_repository(
            "humaneval",
            "Where `agentry bench humaneval --mode direct` checks its answers.",
        )
        .await?;
    let limits = check_limits(&app.config, args.timeout_s);
    let mut outcomes = Vec::new();
    for (position, problem) in selected.iter().enumerate() {
        eprintln!(
            "== {} ({}/{})",
            problem.task_id,
            position + 1,
            selected.len()
        );
        let request = direct_request(problem, position, args.max_tokens);
        let started = Instant::now();
        let answer = llm.complete(&request).await;
        let wall_s = started.elapsed().as_secs_f64();
        let outcome = match answer {
            Ok(response) => {
                let code = program::extract_code(&response.content);
                let program = program::candidate_program(problem, &code);
                let run = app
                    .sandbox_run(TestRunRequest {
                        clone_from: repo.clone_url.clone(),
                        branch: repo.default_branch.clone(),
                        overlay: check_overlay(problem, &program)?,
                        command: Some(CHECK_COMMAND.map(String::from).to_vec()),
                        limits: limits.clone(),
                    })
                    .await?;
                let passed = check_passed(&run);
                Outcome {
                    id: problem.task_id.clone(),
                    passed,
                    code_passed: passed,
                    status: None,
                    own_passed: None,
                    detail: (!passed).then(|| failure_detail(&run, args.timeout_s)),
                    wall_s,
                    tokens: response.usage.prompt_tokens + response.usage.completion_tokens,
                }
            }
            Err(error) => Outcome {
                id: problem.task_id.clone(),
                passed: false,
                code_passed: false,
                status: None,
                own_passed: None,
                detail: Some(format!("the LLM call failed: {error}")),
                wall_s,
                tokens: 0,
            },
        };
        report_progress(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// The chat request of a direct answer: greedy, no tools, no schema.
fn direct_request(problem: &Problem, position: usize, max_tokens: u32) -> ChatRequest {
    let (system, user) = program::direct_prompt(problem);
    ChatRequest {
        model: None,
        messages: vec![ChatMessage::system(system), ChatMessage::user(user)],
        tools: Vec::new(),
        response_schema: None,
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        meta: RequestMeta {
            workflow_id: None,
            role: AgentRole::Developer,
            node: "humaneval".into(),
            step: 0,
            visit: u32::try_from(position).unwrap_or(u32::MAX),
            turn: 0,
            request_id: None,
        },
    }
}

/// Harness mode: each problem through the crew on its own data directory,
/// then HumanEval's test on the branch.
async fn run_harness(
    selected: &[Problem],
    root: &Path,
    config: &Config,
    args: &BenchHumanevalArgs,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for (position, problem) in selected.iter().enumerate() {
        eprintln!(
            "== {} ({}/{})",
            problem.task_id,
            position + 1,
            selected.len()
        );
        let data_dir = fresh_data_dir(root, &problem.task_id.replace('/', "-"))?;
        let requirement = program::requirement(problem);
        let repository = program::repository_name(problem);
        let run = run_crew(
            &CrewTask {
                requirement: &requirement,
                repository: &repository,
                project_key: PROJECT_KEY.into(),
                seed: 1,
            },
            &data_dir,
            config,
            &args.llm,
        )
        .await?;
        let program = program::harness_program(problem);
        let check = run
            .run_on_branch(
                check_overlay(problem, &program)?,
                &CHECK_COMMAND,
                check_limits(config, args.timeout_s),
            )
            .await?;
        let code_passed = check.as_ref().is_some_and(check_passed);
        let mut detail: Vec<String> = run.failure_reason().into_iter().collect();
        match &check {
            None => detail.push("the workflow made no repository".into()),
            Some(check) if !code_passed => detail.push(failure_detail(check, args.timeout_s)),
            Some(_) => {}
        }
        let outcome = Outcome {
            id: problem.task_id.clone(),
            passed: run.completed() && code_passed,
            code_passed,
            status: Some(run.record.status.to_string()),
            own_passed: Some(run.own_passed()),
            detail: (!detail.is_empty()).then(|| detail.join("; ")),
            wall_s: run.wall_s,
            tokens: run.tokens(),
        };
        report_progress(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Whether HumanEval's test passed: the check module's own case, when the
/// runner's output was read (an answer may bring unittest cases of its
/// own, which do not count), else the run's verdict.
fn check_passed(run: &TestRun) -> bool {
    if run.timed_out {
        return false;
    }
    if run.cases.is_empty() {
        return run.passed;
    }
    run.cases
        .iter()
        .any(|c| c.id.ends_with("HumanEvalCheck.test_check") && c.outcome == TestOutcome::Passed)
}

/// Why a check failed, in one line: a timeout, the check's (or a module
/// load's) exception, else the last line the run wrote.
fn failure_detail(run: &TestRun, timeout_s: u64) -> String {
    if run.timed_out {
        return format!("timed out after {timeout_s} s");
    }
    let case = run
        .cases
        .iter()
        .find(|c| c.id.ends_with("HumanEvalCheck.test_check") && c.is_failure())
        .or_else(|| run.cases.iter().find(|c| c.is_failure()));
    if let Some(case) = case {
        let message = case
            .message
            .as_deref()
            .and_then(|m| m.lines().next())
            .unwrap_or_default();
        return match &case.error_type {
            Some(kind) if message.is_empty() => kind.clone(),
            Some(kind) => format!("{kind}: {message}"),
            None if message.is_empty() => "failed".into(),
            None => message.to_string(),
        };
    }
    run.stderr
        .lines()
        .chain(run.stdout.lines())
        .rfind(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "the check did not pass".into())
}

fn report_progress(outcome: &Outcome) {
    eprintln!(
        "   {} in {:.0} s, {} tokens{}{}",
        if outcome.passed { "passed" } else { "failed" },
        outcome.wall_s,
        outcome.tokens,
        outcome
            .status
            .as_deref()
            .map(|s| format!("; workflow {s}"))
            .unwrap_or_default(),
        outcome
            .detail
            .as_deref()
            .map(|d| format!("; {d}"))
            .unwrap_or_default()
    );
}

/// The totals.
#[derive(Debug, Default, Serialize)]
struct Report {
    mode: Option<HumanevalMode>,
    /// The provider that answered (`local`, a preset, ...).
    llm: String,
    /// Which problems: the default selection (maybe its first N) or chosen.
    selection: String,
    problems: usize,
    passed: usize,
    /// `passed / problems`.
    pass_at_1: f64,
    /// Problems whose code passed HumanEval's test, whatever the workflow's
    /// end (the same as `passed` in direct mode).
    code_passed: usize,
    wall_p50_s: f64,
    wall_p90_s: f64,
    tokens_total: u64,
    tokens_p50: u64,
}

impl Report {
    fn of(outcomes: &[Outcome]) -> Report {
        let mut walls: Vec<f64> = outcomes.iter().map(|o| o.wall_s).collect();
        walls.sort_by(f64::total_cmp);
        let mut tokens: Vec<u64> = outcomes.iter().map(|o| o.tokens).collect();
        tokens.sort_unstable();
        let passed = outcomes.iter().filter(|o| o.passed).count();
        Report {
            problems: outcomes.len(),
            passed,
            pass_at_1: if outcomes.is_empty() {
                0.0
            } else {
                passed as f64 / outcomes.len() as f64
            },
            code_passed: outcomes.iter().filter(|o| o.code_passed).count(),
            wall_p50_s: percentile(&walls, 0.5),
            wall_p90_s: percentile(&walls, 0.9),
            tokens_total: tokens.iter().sum(),
            tokens_p50: tokens.get(tokens.len() / 2).copied().unwrap_or(0),
            ..Report::default()
        }
    }
}

fn print_table(outcomes: &[Outcome], report: &Report) {
    println!(
        "{:<14} {:>6} {:<10} {:>8} {:>8}  detail",
        "problem", "passed", "status", "wall_s", "tokens"
    );
    for o in outcomes {
        let mut detail: String = o.detail.clone().unwrap_or_default();
        if detail.chars().count() > 80 {
            detail = detail.chars().take(77).collect::<String>() + "...";
        }
        println!(
            "{:<14} {:>6} {:<10} {:>8.1} {:>8}  {}",
            o.id,
            if o.passed { "yes" } else { "no" },
            o.status.as_deref().unwrap_or("-"),
            o.wall_s,
            o.tokens,
            detail
        );
    }
    println!(
        "\npass@1 {:.1}% ({}/{}; code passed {}); wall p50 {:.1} s, p90 {:.1} s; tokens {} in all, p50 {}",
        report.pass_at_1 * 100.0,
        report.passed,
        report.problems,
        report.code_passed,
        report.wall_p50_s,
        report.wall_p90_s,
        report.tokens_total,
        report.tokens_p50
    );
}
