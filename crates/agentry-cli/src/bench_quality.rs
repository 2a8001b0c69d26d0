//! `agentry bench quality`: the quality development set (`bench/quality/`)
//! end to end. Each task's requirement goes through the whole crew on a
//! fresh embedded data directory; after the workflow has ended, the
//! task's hidden suite is copied into a clone of the branch the agents
//! produced and run in the sandbox, and QA's acceptance suite is run
//! against the task's reference solution (how often QA's expected values
//! are right).
//!
//! Key design decision: the hidden suites reach nothing the agents see.
//! They are read only after the workflow ended, and go into the sandbox's
//! overlay of a fresh clone, never into the repository.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use agentry_core::{
    Budget, RepoPath, RunOptions, TestOutcome, TestRun, TestRunRequest, WorkflowStatus,
};
use agentry_engine::Submission;

use crate::app::App;
use crate::cli::BenchQualityArgs;
use crate::config::Config;
use crate::llm::LlmChoice;

/// One task of the set, from its `task.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
struct Task {
    id: String,
    title: String,
    category: String,
    repository: String,
    test_command: String,
    /// `success`, or `failure` for a contradictory requirement.
    expected: String,
    #[serde(skip)]
    dir: PathBuf,
}

/// How one run of one task went.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    task: String,
    category: String,
    seed: u32,
    /// The workflow's end state.
    status: String,
    /// Why it failed, when it did.
    reason: Option<String>,
    /// QA's own verdict at the end: its acceptance suite passed.
    own_passed: bool,
    /// Hidden tests that passed, of those that ran.
    hidden_passed: u32,
    hidden_total: u32,
    /// Completed, the hidden suite passed whole.
    verified: bool,
    /// Own tests passed, hidden suite failed.
    false_green: bool,
    /// Hidden suite passed, own tests failed.
    false_red: bool,
    /// A contradictory task that ended in failure, as it should.
    honest_failure: Option<bool>,
    /// QA's acceptance tests that pass on the reference solution, of those
    /// that ran (None without a suite or a reference).
    qa_on_reference: Option<(u32, u32)>,
    /// The mutation score of the agents' final suite on their final code
    /// (the workflow's own check), when it ran.
    mutation_score: Option<f64>,
    wall_s: f64,
    tokens: u64,
}

/// Runs the set (or `--tasks`) `--seeds` times each and prints the table
/// and one JSON line.
pub async fn bench_quality(
    args: &BenchQualityArgs,
    config: &Config,
    json: bool,
) -> Result<ExitCode> {
    let tasks = load_tasks(&args.set, &args.tasks)?;
    let scratch = tempfile::tempdir().context("creating the benchmark's scratch directory")?;
    let root = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let mut outcomes = Vec::new();
    for task in &tasks {
        for seed in 1..=args.seeds {
            let data_dir = root.join(format!("{}-{seed}", task.id));
            if data_dir.exists() {
                bail!(
                    "{} exists: each run needs a fresh data directory (remove it, or keep the runs elsewhere)",
                    data_dir.display()
                );
            }
            eprintln!("== {} (seed {seed}): {}", task.id, task.title);
            let outcome = run_task(task, seed, &data_dir, config, args).await?;
            eprintln!(
                "   {} in {:.0} s; own tests {}; hidden {}/{}{}",
                outcome.status,
                outcome.wall_s,
                if outcome.own_passed { "pass" } else { "fail" },
                outcome.hidden_passed,
                outcome.hidden_total,
                outcome
                    .reason
                    .as_deref()
                    .map(|r| format!("; {r}"))
                    .unwrap_or_default()
            );
            outcomes.push(outcome);
        }
    }
    let report = Report::of(&outcomes);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": outcomes, "overall": report
            }))?
        );
    } else {
        print_table(&outcomes, &report);
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The tasks under `set/tasks/`, all or those named.
fn load_tasks(set: &Path, only: &[String]) -> Result<Vec<Task>> {
    let root = set.join("tasks");
    let mut tasks = Vec::new();
    let entries = std::fs::read_dir(&root)
        .with_context(|| format!("cannot read the task set {}", root.display()))?;
    for entry in entries {
        let dir = entry?.path();
        let file = dir.join("task.toml");
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut task: Task =
            toml::from_str(&text).with_context(|| format!("{} is not a task", file.display()))?;
        task.dir = dir;
        tasks.push(task);
    }
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    if !only.is_empty() {
        for name in only {
            if !tasks.iter().any(|t| &t.id == name) {
                bail!(
                    "no task `{name}` in {}: the set has {}",
                    root.display(),
                    tasks
                        .iter()
                        .map(|t| t.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        tasks.retain(|t| only.contains(&t.id));
    }
    if tasks.is_empty() {
        bail!("no task in {}", root.display());
    }
    Ok(tasks)
}

/// One task, one seed, on its own data directory.
async fn run_task(
    task: &Task,
    seed: u32,
    data_dir: &Path,
    config: &Config,
    args: &BenchQualityArgs,
) -> Result<Outcome> {
    let requirement = std::fs::read_to_string(task.dir.join("requirement.md"))
        .with_context(|| format!("cannot read {}'s requirement", task.id))?;
    let mut config = config.clone();
    config.mode = crate::config::Mode::Embedded;
    // Each seed samples differently (the local model's sampling seed;
    // hosted providers sample as they do); seed 1 keeps the configured one.
    config.llm.local.seed = config.llm.local.seed.wrapping_add(u64::from(seed - 1));
    let app = App::open(Some(data_dir), config).await?;
    let choice = LlmChoice::resolve(&args.llm, None, &app.config)?;
    let engine = app
        .engine(
            choice.provider(&app.config, app.llm_cache.clone())?,
            Budget::default(),
        )
        .await?;
    let options = RunOptions {
        llm: Some(choice.selection()),
        project_key: Some(project_key(&task.id)),
        repository: Some(task.repository.clone()),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let record = engine
        .submit(Submission {
            requirements: requirement,
            request_id: None,
            definition: app.definition(None)?,
            options,
            tenant: None,
        })
        .await?;
    let result = engine.run(record.id).await;
    engine.close().await;
    let wall_s = started.elapsed().as_secs_f64();
    let record = result?;
    let summary = crate::summary::summarize(&app, record.id).await?;
    let state = app.store().state_at(record.id, None).await?;
    let own_passed = state
        .shared_context
        .get("qa.passed")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let suite: Vec<(String, String)> = state
        .shared_context
        .get("qa.test_files")
        .and_then(|v| serde_json::from_value::<Vec<agentry_agents::FileSpec>>(v.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f.path, f.content))
        .collect();
    let reason = (record.status != WorkflowStatus::Completed).then(|| {
        state
            .errors
            .last()
            .map(|e| e.message.clone())
            .unwrap_or_else(|| record.status.to_string())
    });

    let (mut hidden_passed, mut hidden_total) = (0, 0);
    let mut qa_on_reference = None;
    if let Some(repo) = &summary.repository {
        let hidden = files_under(&task.dir.join("hidden"), "hidden_tests")?;
        if !hidden.is_empty() {
            let command: Vec<String> = task
                .test_command
                .split_whitespace()
                .map(String::from)
                .collect();
            let run = app
                .sandbox_run(TestRunRequest {
                    clone_from: repo.path.clone(),
                    branch: repo.branch.clone(),
                    overlay: hidden,
                    command: Some(command),
                    limits: app.config.sandbox.limits(),
                })
                .await?;
            (hidden_passed, hidden_total) = tally(&run);
        }
        let reference = files_under(&task.dir.join("reference"), "")?;
        let has_code = reference
            .iter()
            .any(|(p, _)| p.to_string().ends_with(".py"));
        if has_code && suite.iter().any(|(p, _)| p.ends_with(".py")) {
            let mut overlay = reference;
            for (path, content) in &suite {
                overlay.push((RepoPath::parse(path)?, content.clone()));
            }
            let run = app
                .sandbox_run(TestRunRequest {
                    clone_from: repo.path.clone(),
                    branch: repo.branch.clone(),
                    overlay,
                    command: Some(
                        [
                            "python3",
                            "-m",
                            "unittest",
                            "discover",
                            "-v",
                            "-s",
                            "tests/acceptance",
                            "-t",
                            ".",
                        ]
                        .map(String::from)
                        .to_vec(),
                    ),
                    limits: app.config.sandbox.limits(),
                })
                .await?;
            qa_on_reference = Some(tally(&run));
        }
    }
    let completed = record.status == WorkflowStatus::Completed;
    let hidden_ok = hidden_total > 0 && hidden_passed == hidden_total;
    let contradictory = task.expected == "failure";
    Ok(Outcome {
        task: task.id.clone(),
        category: task.category.clone(),
        seed,
        status: record.status.to_string(),
        reason,
        own_passed,
        hidden_passed,
        hidden_total,
        verified: !contradictory && completed && hidden_ok,
        false_green: if contradictory {
            completed
        } else {
            own_passed && !hidden_ok
        },
        false_red: !contradictory && hidden_ok && !own_passed,
        honest_failure: contradictory.then_some(!completed),
        qa_on_reference,
        mutation_score: state
            .shared_context
            .get("quality")
            .and_then(|q| q["mutation_score"].as_f64()),
        wall_s,
        tokens: summary.total_tokens,
    })
}

/// A tracker key from a task id: its letters, upper-cased, at most 8.
fn project_key(id: &str) -> String {
    let key: String = id
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    if key.len() < 2 {
        "QB".into()
    } else {
        key
    }
}

/// Every file under `dir` as an overlay entry under `prefix` (none when
/// `dir` does not exist). Caches are left out.
fn files_under(dir: &Path, prefix: &str) -> Result<Vec<(RepoPath, String)>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name == "__pycache__" || name.ends_with(".pyc") || name == "CONTRADICTION.md" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            let target = if prefix.is_empty() {
                relative
            } else {
                format!("{prefix}/{relative}")
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            out.push((RepoPath::parse(&target)?, text));
        }
    }
    out.sort_by_key(|entry| entry.0.to_string());
    Ok(out)
}

/// Passed and run tests of a run (skipped ones left out); without
/// per-test results, the runner's counts.
fn tally(run: &TestRun) -> (u32, u32) {
    if run.cases.is_empty() {
        let passed = run.tests_passed.unwrap_or(0);
        return (passed, passed + run.tests_failed.unwrap_or(0));
    }
    let ran: Vec<_> = run
        .cases
        .iter()
        .filter(|c| c.outcome != TestOutcome::Skipped)
        .collect();
    let passed = ran
        .iter()
        .filter(|c| c.outcome == TestOutcome::Passed)
        .count();
    (
        u32::try_from(passed).unwrap_or(u32::MAX),
        u32::try_from(ran.len()).unwrap_or(u32::MAX),
    )
}

/// The overall figures.
#[derive(Debug, Serialize)]
struct Report {
    runs: usize,
    /// Of the ordinary tasks' runs.
    verified_success: f64,
    false_green: usize,
    false_red: usize,
    /// Contradictory runs that ended in failure, of those run.
    honest_failures: String,
    /// QA's acceptance tests passing on the reference, all runs together.
    qa_expected_value_accuracy: Option<f64>,
    /// Median mutation score of the runs that measured one.
    mutation_score_p50: Option<f64>,
    wall_p50_s: f64,
    wall_p90_s: f64,
    tokens_p50: u64,
}

impl Report {
    fn of(outcomes: &[Outcome]) -> Report {
        let ordinary: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.honest_failure.is_none())
            .collect();
        let contradictory: Vec<bool> = outcomes.iter().filter_map(|o| o.honest_failure).collect();
        let verified = ordinary.iter().filter(|o| o.verified).count();
        let (qa_ok, qa_all) = outcomes
            .iter()
            .filter_map(|o| o.qa_on_reference)
            .fold((0u32, 0u32), |(a, b), (p, t)| (a + p, b + t));
        let mut walls: Vec<f64> = outcomes.iter().map(|o| o.wall_s).collect();
        walls.sort_by(f64::total_cmp);
        let mut scores: Vec<f64> = outcomes.iter().filter_map(|o| o.mutation_score).collect();
        scores.sort_by(f64::total_cmp);
        let mut tokens: Vec<u64> = outcomes.iter().map(|o| o.tokens).collect();
        tokens.sort_unstable();
        Report {
            runs: outcomes.len(),
            verified_success: if ordinary.is_empty() {
                0.0
            } else {
                verified as f64 / ordinary.len() as f64
            },
            false_green: outcomes.iter().filter(|o| o.false_green).count(),
            false_red: outcomes.iter().filter(|o| o.false_red).count(),
            honest_failures: format!(
                "{}/{}",
                contradictory.iter().filter(|h| **h).count(),
                contradictory.len()
            ),
            qa_expected_value_accuracy: (qa_all > 0).then(|| f64::from(qa_ok) / f64::from(qa_all)),
            mutation_score_p50: (!scores.is_empty()).then(|| percentile(&scores, 0.5)),
            wall_p50_s: percentile(&walls, 0.5),
            wall_p90_s: percentile(&walls, 0.9),
            tokens_p50: tokens.get(tokens.len() / 2).copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn print_table(outcomes: &[Outcome], report: &Report) {
    println!(
        "{:<16} {:>4} {:<10} {:>5} {:>9} {:>8} {:>6} {:>6} {:>8} {:>6} {:>8}",
        "task",
        "seed",
        "status",
        "own",
        "hidden",
        "verified",
        "fgreen",
        "fred",
        "qa/ref",
        "mut",
        "wall_s"
    );
    for o in outcomes {
        println!(
            "{:<16} {:>4} {:<10} {:>5} {:>9} {:>8} {:>6} {:>6} {:>8} {:>6} {:>8.0}",
            o.task,
            o.seed,
            o.status,
            if o.own_passed { "pass" } else { "fail" },
            format!("{}/{}", o.hidden_passed, o.hidden_total),
            match o.honest_failure {
                Some(true) => "honest",
                Some(false) => "FALSE",
                None if o.verified => "yes",
                None => "no",
            },
            o.false_green,
            o.false_red,
            o.qa_on_reference
                .map(|(p, t)| format!("{p}/{t}"))
                .unwrap_or_else(|| "-".into()),
            o.mutation_score
                .map(|m| format!("{:.0}%", m * 100.0))
                .unwrap_or_else(|| "-".into()),
            o.wall_s
        );
    }
    println!(
        "\nverified success {:.0}% ({} runs); false green {}; false red {}; contradictory ended in failure {}; QA expected values right {}; wall p50 {:.0} s, p90 {:.0} s; tokens p50 {}",
        report.verified_success * 100.0,
        report.runs,
        report.false_green,
        report.false_red,
        report.honest_failures,
        report
            .qa_expected_value_accuracy
            .map(|a| format!("{:.0}%", a * 100.0))
            .unwrap_or_else(|| "-".into()),
        report.wall_p50_s,
        report.wall_p90_s,
        report.tokens_p50
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0], 0.9), 3.0);
    }

    #[test]
    fn project_keys_are_letters_of_the_task() {
        assert_eq!(project_key("todo_cli"), "TODOCLI");
        assert_eq!(project_key("contra_discount"), "CONTRADI");
        assert_eq!(project_key("9"), "QB");
    }
}
