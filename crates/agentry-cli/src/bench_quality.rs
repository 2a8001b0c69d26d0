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

use anyhow::{bail, Context, Result};
use serde::Serialize;

use agentry_core::RepoPath;

use crate::bench_crew::{
    bench_root, emit, fresh_data_dir, percentile, project_key, run_crew, tally, CrewTask,
};
use crate::cli::BenchQualityArgs;
use crate::config::Config;

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
    let (_scratch, root) = bench_root(args.keep.as_deref())?;
    let mut outcomes = Vec::new();
    for task in &tasks {
        for seed in 1..=args.seeds {
            let data_dir = fresh_data_dir(&root, &format!("{}-{seed}", task.id))?;
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
    emit(json, &outcomes, &report, || print_table(&outcomes, &report))?;
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
    let run = run_crew(
        &CrewTask {
            requirement: &requirement,
            repository: &task.repository,
            project_key: project_key(&task.id),
            seed,
        },
        data_dir,
        config,
        &args.llm,
    )
    .await?;
    let own_passed = run.own_passed();
    let suite = run.qa_suite();

    let (mut hidden_passed, mut hidden_total) = (0, 0);
    let hidden = files_under(&task.dir.join("hidden"), "hidden_tests")?;
    if !hidden.is_empty() {
        let command: Vec<&str> = task.test_command.split_whitespace().collect();
        if let Some(result) = run
            .run_on_branch(hidden, &command, run.sandbox_limits())
            .await?
        {
            (hidden_passed, hidden_total) = tally(&result);
        }
    }
    let mut qa_on_reference = None;
    let reference = files_under(&task.dir.join("reference"), "")?;
    let has_code = reference
        .iter()
        .any(|(p, _)| p.to_string().ends_with(".py"));
    if has_code && suite.iter().any(|(p, _)| p.ends_with(".py")) {
        let mut overlay = reference;
        for (path, content) in &suite {
            overlay.push((RepoPath::parse(path)?, content.clone()));
        }
        let command = [
            "python3",
            "-m",
            "unittest",
            "discover",
            "-v",
            "-s",
            "tests/acceptance",
            "-t",
            ".",
        ];
        if let Some(result) = run
            .run_on_branch(overlay, &command, run.sandbox_limits())
            .await?
        {
            qa_on_reference = Some(tally(&result));
        }
    }
    let completed = run.completed();
    let hidden_ok = hidden_total > 0 && hidden_passed == hidden_total;
    let contradictory = task.expected == "failure";
    Ok(Outcome {
        task: task.id.clone(),
        category: task.category.clone(),
        seed,
        status: run.record.status.to_string(),
        reason: run.failure_reason(),
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
        mutation_score: run.mutation_score(),
        wall_s: run.wall_s,
        tokens: run.tokens(),
    })
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
