//! Failure routing: who acts on each failing test of a run.
//!
//! Only QA's acceptance suite decides the workflow. Within it, a test that
//! errs in its own code (a `NameError`, an import that does not resolve, a
//! data file it never wrote, an error in `setUp`) is QA's to fix: the code
//! is not known to be wrong, and the developer cannot touch QA's tests. A
//! failed check, or an exception raised inside the code under test, is the
//! developer's. The developer's own unit tests still run; their failures
//! go to the developer with the next round, and never decide the workflow.
//!
//! Key design decision: the decision follows the innermost frame of the
//! repository in each traceback (where it was raised), not the model's
//! judgement of who is wrong.

use agentry_core::{TestCaseResult, TestOutcome, TestRun};
use serde::{Deserialize, Serialize};

use crate::output::FileSpec;

/// Who acts on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// QA fixes its test.
    Qa,
    /// The developer fixes the code.
    Developer,
}

/// One failing test and who acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The runner's id of the test.
    pub test: String,
    /// Who acts on it.
    pub owner: Owner,
    /// Why it is theirs, one line.
    pub reason: String,
    /// `AssertionError: 1 != 2`, capped.
    pub error: String,
    /// `path:line` where it was raised, when the traceback said.
    pub at: Option<String>,
}

/// A run's failures sorted by owner, and the verdict of the acceptance
/// suite alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triage {
    /// The acceptance suite ran (at least one of its tests did) and every
    /// one of its tests passed.
    pub acceptance_passed: bool,
    /// Acceptance tests that passed, failed or erred.
    pub acceptance_total: u32,
    /// Failures of acceptance tests, each with its owner.
    pub acceptance: Vec<Finding>,
    /// Failures of the developer's own tests (always the developer's).
    pub unit: Vec<Finding>,
    /// Whether per-test results were available; without them the whole
    /// run's verdict stands, and its failures are the developer's.
    pub per_test: bool,
}

/// What the next round is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextFix {
    /// Nothing: the acceptance suite passed.
    None,
    /// QA fixes tests that cannot run as written.
    Tests,
    /// The developer fixes the code.
    Code,
}

impl Triage {
    /// The next round: QA's broken tests first (until they run, their
    /// failures say nothing about the code), then the code.
    pub fn next_fix(&self) -> NextFix {
        if self.acceptance_passed {
            NextFix::None
        } else if self.acceptance.iter().any(|f| f.owner == Owner::Qa) {
            NextFix::Tests
        } else {
            NextFix::Code
        }
    }

    /// The findings that are `owner`'s, acceptance first.
    pub fn for_owner(&self, owner: Owner) -> Vec<&Finding> {
        self.acceptance
            .iter()
            .chain(&self.unit)
            .filter(|f| f.owner == owner)
            .collect()
    }
}

/// Sorts `run`'s failures. `acceptance` are QA's test files (their paths
/// tell its tests from the developer's); `requirement` is the text the
/// code answers to (an attribute it names and the code lacks is the
/// code's to add).
pub fn triage(run: &TestRun, acceptance: &[FileSpec], requirement: &str) -> Triage {
    let qa_paths: Vec<String> = acceptance
        .iter()
        .map(|f| f.path.trim_start_matches("./").to_string())
        .filter(|p| p.ends_with(".py") || !p.contains('.'))
        .collect();
    if run.cases.is_empty() {
        // Nothing per test: the run's verdict stands, and what failed is
        // the code's until shown otherwise.
        let finding = (!run.passed).then(|| Finding {
            test: "(whole run)".into(),
            owner: Owner::Developer,
            reason: "the runner's output named no test".into(),
            error: run_error(run),
            at: None,
        });
        return Triage {
            acceptance_passed: run.passed,
            acceptance_total: run.tests_passed.unwrap_or(0) + run.tests_failed.unwrap_or(0),
            acceptance: finding.into_iter().collect(),
            unit: Vec::new(),
            per_test: false,
        };
    }
    let mut out = Triage {
        per_test: true,
        ..Triage::default()
    };
    let mut acceptance_ran = 0u32;
    for case in &run.cases {
        let is_acceptance = qa_paths.iter().any(|p| belongs_to(&case.id, p));
        if is_acceptance && case.outcome != TestOutcome::Skipped {
            acceptance_ran += 1;
        }
        if !case.is_failure() {
            continue;
        }
        if is_acceptance {
            out.acceptance.push(finding(case, acceptance, requirement));
        } else {
            let mut f = finding(case, &[], requirement);
            f.owner = Owner::Developer;
            f.reason = "one of the developer's own tests".into();
            out.unit.push(f);
        }
    }
    out.acceptance_total = acceptance_ran;
    out.acceptance_passed = acceptance_ran > 0 && out.acceptance.is_empty();
    out
}

/// Whether test `id` (unittest's dotted id, pytest's node id, or a module
/// that failed to load) is defined in the file at `path`.
fn belongs_to(id: &str, path: &str) -> bool {
    if id == path || id.starts_with(&format!("{path}::")) {
        return true;
    }
    let module = path.strip_suffix(".py").unwrap_or(path).replace('/', ".");
    id == module || id.starts_with(&format!("{module}."))
}

/// A failure as one line: `AssertionError: 1 != 2`.
pub(crate) fn error_line(case: &TestCaseResult) -> String {
    match (&case.error_type, &case.message) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        (Some(t), None) => t.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => format!("{:?}", case.outcome).to_lowercase(),
    }
}

/// The owner of one failing acceptance test.
fn finding(case: &TestCaseResult, acceptance: &[FileSpec], requirement: &str) -> Finding {
    let error_type = case.error_type.as_deref().unwrap_or("");
    let error = error_line(case);
    let at = case
        .raised_in
        .as_ref()
        .map(|l| format!("{}:{}", l.path, l.line));
    let in_tests = case.raised_in.as_ref().map(|l| is_test_file(&l.path));
    let (owner, reason) = match (error_type, in_tests) {
        ("AssertionError", _) if case.outcome == TestOutcome::Failed => (
            Owner::Developer,
            "a check of the test failed on the code's answer".to_string(),
        ),
        ("AssertionError", Some(false)) => (
            Owner::Developer,
            "an assertion inside the code under test failed".to_string(),
        ),
        // A data file the test names but nobody wrote: the test's.
        ("FileNotFoundError", _) if names_a_test_literal(case, acceptance) => (
            Owner::Qa,
            "the test reads a file it never wrote".to_string(),
        ),
        // The test calls what the requirement names and the code lacks
        // (a rewrite dropped `close_account`): the code's to add.
        ("AttributeError", Some(true))
            if missing_attribute(case).is_some_and(|a| names(requirement, a)) =>
        {
            (
                Owner::Developer,
                format!(
                    "the code lacks `{}`, which the requirement names",
                    missing_attribute(case).unwrap_or_default()
                ),
            )
        }
        (_, Some(true)) => (
            Owner::Qa,
            format!("{error_type} raised in the test's own code"),
        ),
        (_, Some(false)) => (
            Owner::Developer,
            format!("{error_type} raised in the code under test"),
        ),
        // No frame of the repository: the module did not load or the
        // runner could not set it up.
        ("ImportError" | "ModuleNotFoundError" | "SyntaxError" | "NameError", None) => {
            (Owner::Qa, "the test module does not load".to_string())
        }
        (_, None) => (
            Owner::Developer,
            "the traceback names no file of the repository".to_string(),
        ),
    };
    Finding {
        test: case.id.clone(),
        owner,
        reason,
        error,
        at,
    }
}

/// The attribute an `AttributeError` says is missing: `close_account` in
/// `'Bank' object has no attribute 'close_account'` (or `module 'bank'
/// has no attribute ...`, `type object 'Bank' has no attribute ...`).
fn missing_attribute(case: &TestCaseResult) -> Option<&str> {
    let (_, rest) = case.message.as_deref()?.split_once("has no attribute '")?;
    rest.split('\'').next().filter(|a| !a.is_empty())
}

/// Whether `text` holds `word` as a whole identifier (`close_account`,
/// not inside `reclose_accounts`).
fn names(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Whether the missing file of a `FileNotFoundError` is named by a
/// string in one of QA's test files.
fn names_a_test_literal(case: &TestCaseResult, acceptance: &[FileSpec]) -> bool {
    let Some(message) = &case.message else {
        return false;
    };
    // `[Errno 2] No such file or directory: 'data/example.txt'`
    let Some((_, quoted)) = message.rsplit_once(": ") else {
        return false;
    };
    let name = quoted.trim().trim_matches(|c| c == '\'' || c == '"');
    let base = name.rsplit('/').next().unwrap_or(name);
    !base.is_empty()
        && acceptance.iter().any(|f| {
            f.content.contains(&format!("'{base}"))
                || f.content.contains(&format!("\"{base}"))
                || f.content.contains(&format!("/{base}"))
        })
}

/// Whether a path is a test file by Python's conventions.
pub(crate) fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "tests" | "test"))
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || name == "conftest.py"
}

fn run_error(run: &TestRun) -> String {
    let out = if run.stderr.trim().is_empty() {
        &run.stdout
    } else {
        &run.stderr
    };
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if run.timed_out {
        "timed out".into()
    } else {
        crate::context::head(last, 300)
    }
}

/// The temperature of a round that writes code or tests again from
/// scratch: a fresh draw, not the patch that did not help.
pub(crate) const REWRITE_TEMPERATURE: f32 = 0.7;

/// The developer's failures of `now` that failed the same way in `before`
/// (same test, same error): a patch did not move them, so the next round
/// writes their code again from scratch rather than patching it a third
/// time.
pub fn repeated<'a>(now: &'a Triage, before: &Triage) -> Vec<&'a Finding> {
    repeated_for(now, before, Owner::Developer)
}

/// [`repeated`] for the failures that are `owner`'s.
pub fn repeated_for<'a>(now: &'a Triage, before: &Triage, owner: Owner) -> Vec<&'a Finding> {
    let earlier = before.for_owner(owner);
    now.for_owner(owner)
        .into_iter()
        .filter(|f| {
            earlier
                .iter()
                .any(|e| e.test == f.test && e.error == f.error)
        })
        .collect()
}

/// The files to write again for `findings`: those of `code` the errors
/// were raised in. That is a module of the code, or one of the
/// developer's own unit tests (whose check failed twice: the test is
/// written again, not the code QA's suite may already pass on). When a
/// finding points at no file of `code` (a failed check of QA's raises in
/// QA's test), every module of `code` but the package's `__init__.py` and
/// `__main__.py`.
pub fn files_to_rewrite(findings: &[&Finding], code: &[&str]) -> Vec<String> {
    if findings.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    let mut unplaced = false;
    for finding in findings {
        let path = finding
            .at
            .as_deref()
            .map(|at| at.rsplit_once(':').map_or(at, |(p, _)| p));
        match path.filter(|p| code.contains(p)) {
            Some(p) if !out.iter().any(|o| o == p) => out.push(p.to_string()),
            Some(_) => {}
            None => unplaced = true,
        }
    }
    if unplaced {
        for path in code {
            let init = path.ends_with("__init__.py") || path.ends_with("__main__.py");
            if !init && !is_test_file(path) && !out.iter().any(|o| o == path) {
                out.push(path.to_string());
            }
        }
    }
    out.sort();
    out
}

/// The findings as a short list for a prompt or an issue.
pub fn describe(findings: &[&Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!("- `{}`: {}", f.test, f.error));
        if let Some(at) = &f.at {
            out.push_str(&format!(" (at {at})"));
        }
        out.push_str(&format!(": {}\n", f.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentry_core::SourceLocation;

    fn finding(test: &str, owner: Owner, error: &str, at: Option<&str>) -> Finding {
        Finding {
            test: test.into(),
            owner,
            reason: "r".into(),
            error: error.into(),
            at: at.map(str::to_string),
        }
    }

    #[test]
    fn a_failure_repeated_the_same_way_names_the_code_to_write_again() {
        let before = Triage {
            acceptance: vec![
                finding(
                    "t.A.test_add",
                    Owner::Developer,
                    "AssertionError: 1 != 2",
                    None,
                ),
                finding(
                    "t.A.test_load",
                    Owner::Developer,
                    "KeyError: 'id'",
                    Some("todo/store.py:9"),
                ),
                finding(
                    "t.A.test_qa",
                    Owner::Qa,
                    "NameError: x",
                    Some("tests/acceptance/t.py:3"),
                ),
            ],
            ..Triage::default()
        };
        let now = Triage {
            acceptance: vec![
                // Moved: a different error now.
                finding(
                    "t.A.test_add",
                    Owner::Developer,
                    "AssertionError: 1 != 3",
                    None,
                ),
                finding(
                    "t.A.test_load",
                    Owner::Developer,
                    "KeyError: 'id'",
                    Some("todo/store.py:12"),
                ),
                finding(
                    "t.A.test_qa",
                    Owner::Qa,
                    "NameError: x",
                    Some("tests/acceptance/t.py:3"),
                ),
            ],
            ..Triage::default()
        };
        let stuck = repeated(&now, &before);
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].test, "t.A.test_load");
        let code = [
            "todo/__init__.py",
            "todo/store.py",
            "todo/cli.py",
            "tests/test_store.py",
        ];
        assert_eq!(files_to_rewrite(&stuck, &code), vec!["todo/store.py"]);
        // A failed check points at no code: every module but the package's
        // own files is written again.
        let check = finding(
            "t.A.test_add",
            Owner::Developer,
            "AssertionError",
            Some("tests/acceptance/t.py:5"),
        );
        assert_eq!(
            files_to_rewrite(&[&check], &code),
            vec!["todo/cli.py", "todo/store.py"]
        );
        assert!(files_to_rewrite(&[], &code).is_empty());
        // The developer's own test failing twice: that test is written
        // again, not the code.
        let unit = finding(
            "tests.test_store.T.test_a",
            Owner::Developer,
            "AssertionError",
            Some("tests/test_store.py:4"),
        );
        assert_eq!(
            files_to_rewrite(&[&unit], &code),
            vec!["tests/test_store.py"]
        );
        assert!(repeated(&now, &Triage::default()).is_empty());
        let qa = repeated_for(&now, &before, Owner::Qa);
        assert_eq!(qa.len(), 1);
        assert_eq!(qa[0].test, "t.A.test_qa");
    }

    fn case(
        id: &str,
        outcome: TestOutcome,
        error: Option<(&str, &str)>,
        at: Option<&str>,
    ) -> TestCaseResult {
        TestCaseResult {
            id: id.into(),
            outcome,
            error_type: error.map(|(t, _)| t.to_string()),
            message: error.map(|(_, m)| m.to_string()),
            raised_in: at.map(|p| SourceLocation {
                path: p.into(),
                line: 3,
                function: None,
            }),
        }
    }

    fn qa_suite() -> Vec<FileSpec> {
        vec![FileSpec {
            path: "tests/acceptance/test_app.py".into(),
            content: "import unittest\nclass T(unittest.TestCase):\n    def test_a(self):\n        open('tests/acceptance/example.txt')\n".into(),
        }]
    }

    fn run_of(cases: Vec<TestCaseResult>) -> TestRun {
        let mut run = crate::testkit::test_run(false);
        run.cases = cases;
        run
    }

    /// Triage of one failing acceptance case: its owner.
    fn check(failing: TestCaseResult, owner: Owner) {
        let ok = case(
            "tests.acceptance.test_app.T.test_ok",
            TestOutcome::Passed,
            None,
            None,
        );
        let t = triage(&run_of(vec![ok, failing.clone()]), &qa_suite(), REQUIREMENT);
        assert!(!t.acceptance_passed);
        assert_eq!(t.acceptance.len(), 1, "{t:?}");
        assert_eq!(t.acceptance[0].owner, owner, "{failing:?} -> {t:?}");
    }

    const A: &str = "tests.acceptance.test_app.T.test_a";

    const REQUIREMENT: &str =
        "- `close_account(account_id)`: only with a zero balance.\n- `total() -> int`";

    #[test]
    fn errors_in_the_tests_own_code_go_to_qa() {
        check(
            case(
                A,
                TestOutcome::Error,
                Some(("NameError", "name 'unittest' is not defined")),
                Some("tests/acceptance/test_app.py"),
            ),
            Owner::Qa,
        );
        check(
            case(
                "tests.acceptance.test_app",
                TestOutcome::Error,
                Some(("ModuleNotFoundError", "No module named 'todo'")),
                Some("tests/acceptance/test_app.py"),
            ),
            Owner::Qa,
        );
        check(
            case(
                "tests.acceptance.test_app",
                TestOutcome::Error,
                Some(("ImportError", "cannot import name 'x'")),
                None,
            ),
            Owner::Qa,
        );
        // A method the requirement names, missing from the code (a real
        // rewrite dropped it): the developer's, though the AttributeError
        // is raised in the test.
        check(
            case(
                A,
                TestOutcome::Error,
                Some((
                    "AttributeError",
                    "'Bank' object has no attribute 'close_account'",
                )),
                Some("tests/acceptance/test_app.py"),
            ),
            Owner::Developer,
        );
        // A method the test calls that the requirement does not name (only
        // inside a longer word): the test's.
        check(
            case(
                A,
                TestOutcome::Error,
                Some(("AttributeError", "'Bank' object has no attribute 'close'")),
                Some("tests/acceptance/test_app.py"),
            ),
            Owner::Qa,
        );
        // A fixture file the test names and nobody wrote, opened by the code.
        check(
            case(
                A,
                TestOutcome::Error,
                Some((
                    "FileNotFoundError",
                    "[Errno 2] No such file or directory: 'tests/acceptance/example.txt'",
                )),
                Some("app/io.py"),
            ),
            Owner::Qa,
        );
    }

    #[test]
    fn failed_checks_and_errors_in_the_code_go_to_the_developer() {
        check(
            case(
                A,
                TestOutcome::Failed,
                Some(("AssertionError", "1 != 2")),
                Some("tests/acceptance/test_app.py"),
            ),
            Owner::Developer,
        );
        check(
            case(
                A,
                TestOutcome::Error,
                Some(("AttributeError", "'NoneType' object has no attribute 'x'")),
                Some("todo_cli/core.py"),
            ),
            Owner::Developer,
        );
        check(
            case(
                A,
                TestOutcome::Error,
                Some((
                    "FileNotFoundError",
                    "[Errno 2] No such file or directory: 'tasks.json'",
                )),
                Some("todo_cli/store.py"),
            ),
            Owner::Developer,
        );
        check(
            case(A, TestOutcome::Error, Some(("RuntimeError", "boom")), None),
            Owner::Developer,
        );
    }

    #[test]
    fn only_the_acceptance_suite_decides() {
        let unit_fail = case(
            "tests.test_core.T.test_x",
            TestOutcome::Failed,
            Some(("AssertionError", "x")),
            Some("tests/test_core.py"),
        );
        let ok = case(A, TestOutcome::Passed, None, None);
        let t = triage(&run_of(vec![ok, unit_fail]), &qa_suite(), "");
        assert!(t.acceptance_passed);
        assert_eq!(t.next_fix(), NextFix::None);
        assert_eq!(t.unit.len(), 1);
        assert_eq!(t.unit[0].owner, Owner::Developer);
        // No acceptance test ran at all: not passed.
        let only_unit = case("tests.test_core.T.test_x", TestOutcome::Passed, None, None);
        let t = triage(&run_of(vec![only_unit]), &qa_suite(), "");
        assert!(!t.acceptance_passed);
        // pytest ids name the file.
        let ok = case(
            "tests/acceptance/test_app.py::T::test_a",
            TestOutcome::Passed,
            None,
            None,
        );
        assert!(triage(&run_of(vec![ok]), &qa_suite(), "").acceptance_passed);
    }

    #[test]
    fn broken_tests_are_fixed_before_the_code() {
        let broken = case(
            A,
            TestOutcome::Error,
            Some(("NameError", "n")),
            Some("tests/acceptance/test_app.py"),
        );
        let wrong = case(
            "tests.acceptance.test_app.T.test_b",
            TestOutcome::Failed,
            Some(("AssertionError", "1 != 2")),
            Some("tests/acceptance/test_app.py"),
        );
        let t = triage(&run_of(vec![broken, wrong.clone()]), &qa_suite(), "");
        assert_eq!(t.next_fix(), NextFix::Tests);
        let t = triage(&run_of(vec![wrong]), &qa_suite(), "");
        assert_eq!(t.next_fix(), NextFix::Code);
    }

    #[test]
    fn without_per_test_results_the_run_decides_and_the_code_is_blamed() {
        let run = crate::testkit::test_run(false);
        let t = triage(&run, &qa_suite(), "");
        assert!(!t.per_test && !t.acceptance_passed);
        assert_eq!(t.next_fix(), NextFix::Code);
        let t = triage(&crate::testkit::test_run(true), &qa_suite(), "");
        assert!(t.acceptance_passed);
    }
}
