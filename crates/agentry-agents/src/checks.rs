//! Check nodes: steps of the workflow graph that are no agent and call no
//! model (`kind = "check"` in the workflow file), so what they decide is
//! visible in the graph, the history and the progress like any agent's
//! step.
//!
//! `mutation_score`: how much of the code's behaviour the acceptance suite
//! pins down. Small automatic changes to the code (mutants: an operator
//! swapped, a constant changed, a condition negated, a return value
//! dropped) are made one at a time in the sandbox, and the suite is run
//! against each; a suite that still passes on a changed program did not
//! notice the change. Under half killed, the workflow carries the quality
//! verdict `weak_tests` (shared-context `quality`), shown by `workflows
//! show`, the run summary and the API; it is a verdict on the tests, not a
//! status: the code passed them.

use std::collections::BTreeMap;

use agentry_core::{
    Error, NodeContext, RepoPath, Result, SandboxLimits, StateDelta, TestRunRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::context;
use crate::output::FileSpec;
use crate::runner::{AgentConfig, AgentDeps};

/// The checks this runner knows, by the name a workflow file gives them.
pub const CHECKS: &[&str] = &[MUTATION_SCORE];

/// The mutation score of the acceptance suite on the final code.
pub const MUTATION_SCORE: &str = "mutation_score";

/// Below this share of killed mutants, the tests are weak.
pub const WEAK_BELOW: f64 = 0.5;

/// Mutants run at most (spread over all the code's mutants).
const MAX_MUTANTS: u32 = 20;

/// The mutator and its driver, written into the sandbox's checkout.
const MUTATE: &str = include_str!("python/mutate.py");
const DRIVER: &str = include_str!("python/mutation_run.py");

/// Runs check `name` for `ctx`'s workflow.
pub(crate) async fn run(
    name: &str,
    ctx: &NodeContext,
    deps: &AgentDeps,
    config: &AgentConfig,
) -> Result<StateDelta> {
    match name {
        MUTATION_SCORE => mutation_score(ctx, deps, config).await,
        other => Err(Error::permanent(format!(
            "node `{}`: unknown check `{other}`: this runner knows {}",
            ctx.task.key.node,
            CHECKS.join(", ")
        ))),
    }
}

/// The `quality` record (shared-context `quality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// `ok`, `weak_tests` (under half the mutants killed), or
    /// `unmeasured` (no mutant could be run; `reason` says why).
    pub verdict: String,
    /// Killed of run, 0..=1; None when unmeasured.
    pub mutation_score: Option<f64>,
    /// Mutants of the code found.
    pub mutants_found: u32,
    /// Mutants run (at most 20, spread over those found).
    pub mutants_run: u32,
    /// Mutants the suite noticed (failed, erred or hung on).
    pub mutants_killed: u32,
    /// Up to 10 mutants the suite did not notice.
    pub survived: Vec<Survivor>,
    /// Why it is unmeasured, or a note (a run cut short by its budget).
    pub reason: Option<String>,
    /// Acceptance tests a dispute set aside, left out of the runs: they no
    /// longer decide, and the suite passes without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<String>,
}

/// A mutant the suite did not notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Survivor {
    /// File, relative to the repository.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// Operator (`ROR`: comparison replaced, ...).
    pub operator: String,
    /// What changed (`> -> >=`).
    pub change: String,
}

/// What the driver prints.
#[derive(Debug, Deserialize)]
struct DriverReport {
    found: u32,
    run: u32,
    killed: u32,
    baseline_passed: bool,
    #[serde(default)]
    survived: Vec<Survivor>,
    #[serde(default)]
    stopped_early: bool,
    #[serde(default)]
    error: Option<String>,
}

impl Quality {
    fn unmeasured(reason: impl Into<String>) -> Quality {
        Quality {
            verdict: "unmeasured".into(),
            mutation_score: None,
            mutants_found: 0,
            mutants_run: 0,
            mutants_killed: 0,
            survived: Vec::new(),
            reason: Some(reason.into()),
            set_aside: Vec::new(),
        }
    }

    /// The verdict from the driver's report.
    fn from_report(report: DriverReport) -> Quality {
        if let Some(error) = report.error {
            return Quality::unmeasured(error);
        }
        if !report.baseline_passed {
            return Quality::unmeasured("the acceptance suite does not pass on the unchanged code");
        }
        if report.run == 0 {
            let mut q = Quality::unmeasured(if report.found == 0 {
                "the code has nothing to mutate"
            } else {
                "no mutant could be run within the time limit"
            });
            q.mutants_found = report.found;
            return q;
        }
        let score = f64::from(report.killed) / f64::from(report.run);
        Quality {
            verdict: if score < WEAK_BELOW {
                "weak_tests"
            } else {
                "ok"
            }
            .into(),
            mutation_score: Some(score),
            mutants_found: report.found,
            mutants_run: report.run,
            mutants_killed: report.killed,
            survived: report.survived,
            reason: report
                .stopped_early
                .then(|| "stopped early: the time limit ran out".to_string()),
            set_aside: Vec::new(),
        }
    }

    /// One line for progress and summaries.
    pub fn describe(&self) -> String {
        match self.mutation_score {
            Some(score) => format!(
                "{}: {} of {} mutants killed ({:.0}%)",
                self.verdict,
                self.mutants_killed,
                self.mutants_run,
                score * 100.0
            ),
            None => format!(
                "{}: {}",
                self.verdict,
                self.reason.as_deref().unwrap_or("no figure")
            ),
        }
    }
}

/// Reads the driver's line from the run's output.
fn parse_driver(stdout: &str) -> Option<DriverReport> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("AGENTRY-MUTATION "))
        .and_then(|json| serde_json::from_str(json).ok())
}

async fn mutation_score(
    ctx: &NodeContext,
    deps: &AgentDeps,
    config: &AgentConfig,
) -> Result<StateDelta> {
    let state = &ctx.state;
    let project = context::project(state)?;
    let ports = deps.integrations.integrations(&ctx.owner).await?;
    let repo = ports.code_host.get_repository(&project.repository).await?;
    let suite: Vec<FileSpec> = context::shared(state, context::QA_TEST_FILES)?.unwrap_or_default();
    let set_aside: Vec<String> =
        context::shared::<crate::dispute::Disputes>(state, context::QA_DISPUTES)?
            .map(|d| d.set_aside.into_iter().collect())
            .unwrap_or_default();
    let quality = if suite.is_empty() {
        Quality::unmeasured("there is no acceptance suite")
    } else {
        ctx.report("mutation score: running the suite against mutants", None);
        let limits: SandboxLimits = config.sandbox_limits.clone();
        let budget_s = (limits.wall_time.as_secs_f64() * 0.8).max(10.0);
        let mut overlay = vec![
            (RepoPath::parse(".agentry/mutate.py")?, MUTATE.to_string()),
            (
                RepoPath::parse(".agentry/mutation_run.py")?,
                DRIVER.to_string(),
            ),
        ];
        for file in &suite {
            overlay.push((RepoPath::parse(&file.path)?, file.content.clone()));
        }
        let mut command = vec![
            "python3".to_string(),
            "-B".into(),
            ".agentry/mutation_run.py".into(),
            "--suite".into(),
            context::ACCEPTANCE_DIR.trim_end_matches('/').into(),
            "--max".into(),
            MAX_MUTANTS.to_string(),
            "--budget-s".into(),
            format!("{budget_s:.0}"),
        ];
        for test in &set_aside {
            command.push("--exclude".into());
            command.push(crate::dispute::unittest_name(test));
        }
        let run = deps
            .sandbox
            .run_tests(TestRunRequest {
                clone_from: repo.clone_url.clone(),
                branch: project.branch.clone(),
                overlay,
                command: Some(command),
                limits,
            })
            .await
            .map_err(|error| error.context("mutation score run"))?;
        match parse_driver(&run.stdout) {
            Some(report) => Quality::from_report(report),
            None if run.timed_out => Quality::unmeasured("the mutation run timed out"),
            None => Quality::unmeasured(format!(
                "the mutation run printed no report (exit {:?}): {}",
                run.exit_code,
                context::tail(&run.stderr, 300)
            )),
        }
    };
    let mut quality = quality;
    quality.set_aside = set_aside;
    let line = format!("mutation score {}", quality.describe());
    ctx.report(line.clone(), None);
    if quality.verdict == "weak_tests" {
        tracing::warn!(workflow_id = %ctx.task.key.workflow, verdict = %quality.verdict, "{line}");
    } else {
        tracing::info!(workflow_id = %ctx.task.key.workflow, "{line}");
    }
    Ok(StateDelta {
        agent_outputs: vec![crate::agents::output(
            &ctx.task.key.node,
            "mutation_score",
            &quality,
        )?],
        shared_context: BTreeMap::from([(context::QUALITY.to_string(), json!(quality))]),
        ..StateDelta::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(found: u32, run: u32, killed: u32, baseline: bool) -> DriverReport {
        DriverReport {
            found,
            run,
            killed,
            baseline_passed: baseline,
            survived: Vec::new(),
            stopped_early: false,
            error: None,
        }
    }

    #[test]
    fn under_half_the_mutants_killed_is_weak_tests() {
        let q = Quality::from_report(report(40, 30, 14, true));
        assert_eq!(q.verdict, "weak_tests");
        assert_eq!(q.describe(), "weak_tests: 14 of 30 mutants killed (47%)");
        let q = Quality::from_report(report(40, 30, 15, true));
        assert_eq!(q.verdict, "ok");
    }

    #[test]
    fn what_cannot_be_measured_says_why() {
        let q = Quality::from_report(report(10, 0, 0, false));
        assert_eq!(q.verdict, "unmeasured");
        assert!(q
            .reason
            .unwrap()
            .contains("does not pass on the unchanged code"));
        let q = Quality::from_report(report(0, 0, 0, true));
        assert_eq!(q.reason.as_deref(), Some("the code has nothing to mutate"));
    }

    #[test]
    fn tests_a_dispute_set_aside_are_left_out_of_the_mutation_runs() {
        // The driver itself, on a real Python project: a suite with one
        // test set aside (it fails on the unchanged code) is measured on
        // the rest; without the exclusion it cannot be measured at all.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(".agentry/mutate.py", MUTATE);
        write(".agentry/mutation_run.py", DRIVER);
        write("calc.py", "def add(a, b):\n    return a + b\n");
        write("tests/__init__.py", "");
        write("tests/acceptance/__init__.py", "");
        write(
            "tests/acceptance/test_calc.py",
            "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n    def test_wrong(self):\n        self.assertEqual(add(1, 1), 3)\n",
        );
        let driver = |exclude: &[&str]| {
            let mut command = std::process::Command::new("python3");
            command.current_dir(root).args([
                "-B",
                ".agentry/mutation_run.py",
                "--suite",
                "tests/acceptance",
            ]);
            for test in exclude {
                command.args(["--exclude", test]);
            }
            let out = command.output().unwrap();
            parse_driver(&String::from_utf8_lossy(&out.stdout)).unwrap()
        };
        let all = driver(&[]);
        assert!(!all.baseline_passed);
        let rest = driver(&["tests.acceptance.test_calc.T.test_wrong"]);
        assert!(rest.baseline_passed);
        assert!(rest.run > 0 && rest.killed > 0, "{rest:?}");
    }

    #[test]
    fn the_driver_line_is_found_in_the_output() {
        let out = "noise\nAGENTRY-MUTATION {\"found\": 5, \"run\": 5, \"killed\": 3, \"baseline_passed\": true, \"survived\": [{\"file\": \"app/core.py\", \"line\": 5, \"operator\": \"ROR\", \"change\": \"> -> >=\"}], \"stopped_early\": false}\n";
        let r = parse_driver(out).unwrap();
        assert_eq!((r.found, r.run, r.killed), (5, 5, 3));
        assert_eq!(r.survived[0].change, "> -> >=");
        assert!(parse_driver("nothing here").is_none());
    }
}
