//! What the benchmarks that put a requirement through the whole crew share
//! (`bench quality`, `bench humaneval --mode harness`): one requirement
//! through the crew on a fresh embedded data directory ([`run_crew`]),
//! a hidden suite run afterwards in a clone of the branch the agents
//! produced ([`CrewRun::run_on_branch`]), and the figures both print
//! ([`tally`], [`percentile`]).
//!
//! Key design decision: a hidden suite reaches nothing the agents see. It
//! is handed over only after the workflow has ended, and goes into the
//! sandbox's overlay of a fresh clone, never into the repository.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use agentry_core::{
    Budget, RepoPath, RunOptions, SandboxLimits, TestOutcome, TestRun, TestRunRequest,
    WorkflowRecord, WorkflowState, WorkflowStatus,
};
use agentry_engine::Submission;

use crate::app::App;
use crate::cli::LlmArgs;
use crate::config::Config;
use crate::llm::LlmChoice;
use crate::summary::Summary;

/// One requirement for the crew.
#[derive(Debug, Clone)]
pub struct CrewTask<'a> {
    /// The requirement's text, as `agentry run` would get it.
    pub requirement: &'a str,
    /// The repository the agents must use.
    pub repository: &'a str,
    /// The tracker project the agents must use.
    pub project_key: String,
    /// 1, 2, ...: each seed samples differently (the local model's sampling
    /// seed; hosted providers sample as they do); seed 1 keeps the
    /// configured one.
    pub seed: u32,
}

/// A workflow the crew ran to its end, with the deployment it ran in (kept
/// open for the hidden runs).
pub struct CrewRun {
    app: App,
    /// The workflow's record at the end.
    pub record: WorkflowRecord,
    /// Its state at the last checkpoint.
    pub state: WorkflowState,
    /// What it made (repository, tokens, ...).
    pub summary: Summary,
    /// Seconds from submission to the end of the run.
    pub wall_s: f64,
}

/// The directory a benchmark's runs live under: `keep`, created, or a
/// temporary directory removed when the returned guard drops.
pub fn bench_root(keep: Option<&Path>) -> Result<(tempfile::TempDir, PathBuf)> {
    let scratch = tempfile::tempdir().context("creating the benchmark's scratch directory")?;
    let root = match keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.to_path_buf()
        }
        None => scratch.path().to_path_buf(),
    };
    Ok((scratch, root))
}

/// `root/name`, which must not exist yet: each run needs a fresh data
/// directory.
pub fn fresh_data_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let data_dir = root.join(name);
    if data_dir.exists() {
        bail!(
            "{} exists: each run needs a fresh data directory (remove it, or keep the runs elsewhere)",
            data_dir.display()
        );
    }
    Ok(data_dir)
}

/// Runs `task` through the crew on a fresh embedded deployment in
/// `data_dir`, with the LLM `llm` chooses (the configured provider, else
/// the local model), until the workflow ends.
pub async fn run_crew(
    task: &CrewTask<'_>,
    data_dir: &Path,
    config: &Config,
    llm: &LlmArgs,
) -> Result<CrewRun> {
    let mut config = config.clone();
    config.mode = crate::config::Mode::Embedded;
    config.llm.local.seed = config
        .llm
        .local
        .seed
        .wrapping_add(u64::from(task.seed.saturating_sub(1)));
    let app = App::open(Some(data_dir), config).await?;
    let choice = LlmChoice::resolve(llm, None, &app.config)?;
    // The workers are stopped when the run ends: left running (as a
    // one-shot command may leave them), they would keep the runner and
    // its local model alive, and a benchmark running task after task in
    // one process grew by a model's worth of memory per task until the
    // kernel killed it (24 GB after five tasks).
    let (engine, workers) = app
        .engine_with_workers(
            choice.provider(&app.config, app.llm_cache.clone())?,
            Budget::default(),
        )
        .await?;
    let options = RunOptions {
        llm: Some(choice.selection()),
        project_key: Some(task.project_key.clone()),
        repository: Some(task.repository.to_string()),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let record = engine
        .submit(Submission {
            requirements: task.requirement.to_string(),
            request_id: None,
            definition: app.definition(None)?,
            options,
            tenant: None,
        })
        .await?;
    let result = engine.run(record.id).await;
    engine.close().await;
    workers.shutdown().await;
    let wall_s = started.elapsed().as_secs_f64();
    let record = result?;
    let summary = crate::summary::summarize(&app, record.id).await?;
    let state = app.store().state_at(record.id, None).await?;
    Ok(CrewRun {
        app,
        record,
        state,
        summary,
        wall_s,
    })
}

impl CrewRun {
    /// The workflow completed.
    pub fn completed(&self) -> bool {
        self.record.status == WorkflowStatus::Completed
    }

    /// QA's own verdict at the end: its acceptance suite passed.
    pub fn own_passed(&self) -> bool {
        self.state
            .shared_context
            .get("qa.passed")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    /// QA's final acceptance suite: (path, content) per file.
    pub fn qa_suite(&self) -> Vec<(String, String)> {
        self.state
            .shared_context
            .get("qa.test_files")
            .and_then(|v| serde_json::from_value::<Vec<agentry_agents::FileSpec>>(v.clone()).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.path, f.content))
            .collect()
    }

    /// Why the workflow did not complete (None when it did).
    pub fn failure_reason(&self) -> Option<String> {
        (!self.completed()).then(|| {
            self.state
                .errors
                .last()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| self.record.status.to_string())
        })
    }

    /// The mutation score of the agents' final suite on their final code
    /// (the workflow's own check), when it ran.
    pub fn mutation_score(&self) -> Option<f64> {
        self.state
            .shared_context
            .get("quality")
            .and_then(|q| q["mutation_score"].as_f64())
    }

    /// Prompt plus completion tokens of every role.
    pub fn tokens(&self) -> u64 {
        self.summary.total_tokens
    }

    /// The limits of a test run in this deployment's sandbox (the
    /// configured ones, as the agents' own runs have them).
    pub fn sandbox_limits(&self) -> SandboxLimits {
        self.app.config.sandbox.limits()
    }

    /// Runs `command` under `limits` in the sandbox, in a fresh clone of
    /// the branch the agents produced with `overlay` written over it; None
    /// when the workflow made no repository.
    pub async fn run_on_branch(
        &self,
        overlay: Vec<(RepoPath, String)>,
        command: &[&str],
        limits: SandboxLimits,
    ) -> Result<Option<TestRun>> {
        let Some(repo) = &self.summary.repository else {
            return Ok(None);
        };
        let run = self
            .app
            .sandbox_run(TestRunRequest {
                clone_from: repo.path.clone(),
                branch: repo.branch.clone(),
                overlay,
                command: Some(command.iter().map(|s| (*s).to_string()).collect()),
                limits,
            })
            .await?;
        Ok(Some(run))
    }
}

/// A tracker key from an id: its letters, upper-cased, at most 8.
pub fn project_key(id: &str) -> String {
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

/// Passed and run tests of a run (skipped ones left out); without
/// per-test results, the runner's counts.
pub fn tally(run: &TestRun) -> (u32, u32) {
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

/// Nearest-rank percentile of sorted values.
/// Prints a benchmark's result: with `json`, every run and the totals as
/// one pretty JSON document; else the table (`table`) and the totals as
/// one JSON line.
pub fn emit<O: serde::Serialize, R: serde::Serialize>(
    json: bool,
    outcomes: &[O],
    report: &R,
    table: impl FnOnce(),
) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "runs": outcomes, "overall": report
            }))?
        );
    } else {
        table();
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(())
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
