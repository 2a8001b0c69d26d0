//! Disputed assertions, settled by independent evidence rather than by
//! asking the model who is right.
//!
//! When acceptance tests fail on a check (an `AssertionError`), or on an
//! exception the code raised on purpose (a `ValueError`, a `KeyError`, an
//! exception of its own, where the test expected no error), either the code
//! or the test's expectation is wrong, and a small model is poor at telling
//! which. (Exceptions that only a bug raises, an `AttributeError` or a
//! `TypeError`, are the developer's without a dispute.) So two more
//! implementations are written from the specification alone (the requirement, the criteria and the interface's
//! signatures; neither the developer's code nor QA's tests), sampled more
//! freely, and the failing tests are run against each in the sandbox:
//!
//! - an implementation *agrees* with the code when it fails the test the
//!   same way: the same error line for a failed check (the same actual
//!   value), the same exception type for an error (its message may word
//!   the same refusal differently); it *disagrees* when it passes the test
//!   or gives another answer; it *abstains* when it is broken itself (a
//!   `NameError`, a `TypeError`, a test that could not run: no evidence
//!   either way);
//! - at least one agrees and none disagrees: the test's expectation is the
//!   likely mistake, and QA gets the failure with that evidence;
//! - otherwise (one disagrees, or all abstain): the developer.
//!
//! A test QA keeps after losing a dispute, and which fails the same way
//! again, is set aside: reported, never deleted, and no longer deciding.

use std::collections::{BTreeMap, BTreeSet};

use agentry_core::{RepoPath, Result, TestOutcome, TestRunRequest, UsageRecord};
use serde::{Deserialize, Serialize};

use crate::context;
use crate::output::{FileSpec, Implementation};
use crate::runner::AgentEnv;
use crate::triage::{Finding, Owner, Triage};

/// Independent implementations written per dispute.
pub const ALTERNATIVES: usize = 2;

/// Disputes a workflow may hold (each costs two generations of the code).
pub const MAX_DISPUTES: u32 = 2;

/// Failing tests disputed at once.
const MAX_TESTS: usize = 6;

/// The disputes so far (shared-context `qa.disputes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disputes {
    /// Disputes held.
    pub held: u32,
    /// Tests that lost a dispute (independent implementations agreed with
    /// the code), by id, with the failure they lost on.
    pub lost: BTreeMap<String, String>,
    /// Tests set aside: lost a dispute, kept by QA, failed the same way
    /// again. Reported; they no longer decide.
    pub set_aside: BTreeSet<String>,
}

/// What one dispute found, for the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The test disputed.
    pub test: String,
    /// Independent implementations on which the test passed.
    pub passed_on: u32,
    /// Independent implementations that failed it as the code did.
    pub agreed_with_code: u32,
    /// Independent implementations that were broken themselves (no
    /// evidence either way).
    #[serde(default)]
    pub abstained: u32,
    /// Of how many.
    pub of: u32,
    /// What each independent implementation did with the test: `passed`,
    /// its error line, or why it did not run (for the history: a verdict
    /// for the developer says what the other implementations answered).
    #[serde(default)]
    pub seen: Vec<String>,
    /// Who acts: QA (all independent implementations fail it as the code
    /// does) or the developer.
    pub owner: Owner,
}

/// Whether `triage` has failed checks worth disputing.
pub fn disputable(triage: &Triage, disputes: &Disputes) -> bool {
    disputes.held < MAX_DISPUTES && !checks_failed(triage, disputes).is_empty()
}

/// Exceptions only a bug (or a call the code cannot take) raises, never an
/// answer a requirement asks for: their failures are not disputed.
const BUG_ERRORS: &[&str] = &[
    "AttributeError",
    "NameError",
    "TypeError",
    "ImportError",
    "ModuleNotFoundError",
    "UnboundLocalError",
    "SyntaxError",
    "IndentationError",
    "RecursionError",
    "NotImplementedError",
];

/// Whether a failure is the code's answer, which independent
/// implementations may confirm: a failed check, or an exception the code
/// raised that is not a bug's.
fn is_answer(error: &str) -> bool {
    let kind = error_type(error);
    !kind.is_empty()
        && !kind.contains(char::is_whitespace)
        && (kind == "AssertionError" || !BUG_ERRORS.contains(&kind))
}

/// The developer-owned acceptance failures that are the code's answers
/// (failed checks, deliberate exceptions), not already set aside.
fn checks_failed<'a>(triage: &'a Triage, disputes: &Disputes) -> Vec<&'a Finding> {
    triage
        .acceptance
        .iter()
        .filter(|f| f.owner == Owner::Developer && is_answer(&f.error))
        .filter(|f| !disputes.set_aside.contains(&f.test))
        .take(MAX_TESTS)
        .collect()
}

/// Applies what earlier disputes decided to a new triage: a test that lost
/// a dispute and fails the same way again (QA kept it) is set aside and
/// taken out of the verdict. Returns the ids set aside now. When that
/// would leave no test deciding, nothing is set aside: the failures go
/// back to QA, whose suite is then written again (a real run set aside
/// all six of its tests, and the developer got the rounds).
pub fn apply_set_aside(triage: &mut Triage, disputes: &mut Disputes) -> Vec<String> {
    let mut now = Vec::new();
    let mut removed = Vec::new();
    triage.acceptance.retain(|f| {
        let again = disputes
            .lost
            .get(&f.test)
            .is_some_and(|error| *error == f.error);
        if again || disputes.set_aside.contains(&f.test) {
            if disputes.set_aside.insert(f.test.clone()) {
                now.push(f.test.clone());
            }
            removed.push(f.clone());
            return false;
        }
        true
    });
    if triage.per_test && triage.acceptance.is_empty() {
        let decided = triage
            .acceptance_total
            .saturating_sub(u32::try_from(disputes.set_aside.len()).unwrap_or(u32::MAX));
        if decided == 0 && !removed.is_empty() {
            for test in &now {
                disputes.set_aside.remove(test);
            }
            triage.acceptance = removed
                .into_iter()
                .map(|mut f| {
                    f.owner = Owner::Qa;
                    f.reason = "every test of the suite lost a dispute and fails the same way again: write the suite again from the requirement".to_string();
                    f
                })
                .collect();
            triage.acceptance_passed = false;
            return Vec::new();
        }
        triage.acceptance_passed = decided > 0;
    }
    now
}

/// Holds a dispute over `triage`'s failed checks: writes independent
/// implementations, runs the failing tests against each, and hands the
/// tests every implementation fails to QA. Returns the verdicts and the
/// usage of the generations.
pub(crate) async fn hold(
    env: &AgentEnv<'_>,
    triage: &mut Triage,
    disputes: &mut Disputes,
    interface: &str,
    suite: &[FileSpec],
    code_paths: &[String],
) -> Result<(Vec<Verdict>, Vec<UsageRecord>)> {
    let disputed: Vec<Finding> = checks_failed(triage, disputes)
        .into_iter()
        .cloned()
        .collect();
    if disputed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    disputes.held += 1;
    let state = &env.ctx.state;
    let project = context::project(state)?;
    let repo = env
        .ports
        .code_host
        .get_repository(&project.repository)
        .await?;
    let mut usage = Vec::new();
    // Per test: how each independent implementation answered it.
    let mut judged: BTreeMap<String, Vec<Judgement>> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let package =
        crate::agents::developer::project_package(&state.requirements, &project.repository);
    let mut ran = 0u32;
    for k in 1..=ALTERNATIVES {
        env.ctx.report(
            format!("dispute: writing independent implementation {k} of {ALTERNATIVES}"),
            None,
        );
        let (files, used) = match alternative(env, interface, k).await {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(%error, k, "An independent implementation could not be written.");
                for f in &disputed {
                    seen.entry(f.test.clone()).or_default().push(format!(
                        "not written: {}",
                        context::head(&error.to_string(), 200)
                    ));
                }
                continue;
            }
        };
        usage.extend(used);
        // The same mechanical repairs as the developer's code gets (a
        // missing import, the package's exports), so an implementation is
        // judged on its answers, not on a slip the developer's code was
        // forgiven.
        let files = repaired(files, &package).await;
        // The alternative replaces the developer's code files; QA's suite
        // is added as it ran.
        let mut overlay = Vec::new();
        for path in code_paths {
            if !files.iter().any(|f| &f.path == path) {
                // A file the alternative does not have is emptied, so the
                // developer's code cannot answer for it.
                overlay.push((RepoPath::parse(path)?, String::new()));
            }
        }
        for f in files.iter().chain(suite) {
            overlay.push((RepoPath::parse(&f.path)?, f.content.clone()));
        }
        let mut command = vec![
            "python3".to_string(),
            "-m".into(),
            "unittest".into(),
            "-v".into(),
        ];
        command.extend(disputed.iter().map(|f| unittest_name(&f.test)));
        let run = env
            .deps
            .sandbox
            .run_tests(TestRunRequest {
                clone_from: repo.clone_url.clone(),
                branch: project.branch.clone(),
                overlay,
                command: Some(command),
                limits: env.config.sandbox_limits.clone(),
            })
            .await?;
        ran += 1;
        for f in &disputed {
            let case = run.cases.iter().find(|c| c.id == f.test);
            judged
                .entry(f.test.clone())
                .or_default()
                .push(judge(&f.error, case));
            let outcome = match case {
                Some(case) if case.outcome == TestOutcome::Passed => "passed".to_string(),
                Some(case) => crate::triage::error_line(case),
                None => format!(
                    "did not run: {}",
                    run.cases
                        .iter()
                        .find(|c| c.is_failure())
                        .map(crate::triage::error_line)
                        .unwrap_or_else(|| context::head(run.stderr.trim(), 200).to_string())
                ),
            };
            seen.entry(f.test.clone()).or_default().push(outcome);
        }
    }
    let mut verdicts = Vec::new();
    for finding in &disputed {
        let answers = judged.remove(&finding.test).unwrap_or_default();
        let count = |j: Judgement| {
            u32::try_from(answers.iter().filter(|a| **a == j).count()).unwrap_or(u32::MAX)
        };
        let passed_on = count(Judgement::Passes);
        let agreeing = count(Judgement::Agrees);
        let abstained = count(Judgement::Abstains);
        let disagreeing = passed_on + count(Judgement::Disagrees);
        let owner = if agreeing > 0 && disagreeing == 0 {
            Owner::Qa
        } else {
            Owner::Developer
        };
        if owner == Owner::Qa {
            disputes
                .lost
                .insert(finding.test.clone(), finding.error.clone());
            if let Some(f) = triage
                .acceptance
                .iter_mut()
                .find(|f| f.test == finding.test)
            {
                f.owner = Owner::Qa;
                f.reason = if finding.error.starts_with("AssertionError") {
                    format!(
                        "disputed: {agreeing} independent implementation(s) written from the requirement fail this check exactly as the code does and none passes it, so its expected value is the likely mistake; check it against the requirement"
                    )
                } else {
                    format!(
                        "disputed: {agreeing} independent implementation(s) written from the requirement raise this same error here, as the code does, and none passes it, so the test's expectation is the likely mistake; check the requirement (it may ask for this error) and the test's setup"
                    )
                };
            }
        }
        verdicts.push(Verdict {
            test: finding.test.clone(),
            passed_on,
            agreed_with_code: agreeing,
            abstained,
            of: ran,
            owner,
            seen: seen.remove(&finding.test).unwrap_or_default(),
        });
    }
    Ok((verdicts, usage))
}

/// How one independent implementation answered a disputed test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// It passed the test: the code's answer is not the only one.
    Passes,
    /// It failed the test as the code does.
    Agrees,
    /// It gave another answer (another value, another exception).
    Disagrees,
    /// It was broken itself, or the test did not run on it.
    Abstains,
}

/// How an implementation's result for a test (`None`: the test did not
/// run) compares with the code's failure `code_error`. A failed check
/// agrees on the same error line (the same actual value); an exception on
/// the same type, whatever its message.
fn judge(code_error: &str, case: Option<&agentry_core::TestCaseResult>) -> Judgement {
    let Some(case) = case else {
        return Judgement::Abstains;
    };
    match case.outcome {
        TestOutcome::Passed => return Judgement::Passes,
        TestOutcome::Skipped => return Judgement::Abstains,
        TestOutcome::Failed | TestOutcome::Error => {}
    }
    let line = crate::triage::error_line(case);
    if !is_answer(&line) {
        return Judgement::Abstains;
    }
    let same = if code_error.starts_with("AssertionError") {
        line == code_error
    } else {
        error_type(&line) == error_type(code_error)
    };
    if same {
        Judgement::Agrees
    } else {
        Judgement::Disagrees
    }
}

/// The exception's class name of an error line (`UnknownAccount` of
/// `bank.errors.UnknownAccount: 'x'`).
fn error_type(line: &str) -> &str {
    line.split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .rsplit('.')
        .next()
        .unwrap_or_default()
}

/// An independent implementation after the static checks' mechanical
/// repairs, with the package's `__init__.py` added where it wrote modules
/// of the package but not that file (its exports are then filled in).
async fn repaired(mut files: Vec<FileSpec>, package: &str) -> Vec<FileSpec> {
    let init = format!("{package}/__init__.py");
    let prefix = format!("{package}/");
    if files.iter().any(|f| f.path.starts_with(&prefix)) && !files.iter().any(|f| f.path == init) {
        files.push(FileSpec {
            path: init,
            content: String::new(),
        });
    }
    let input = crate::pycheck::PyCheckInput {
        tree: files
            .iter()
            .map(|f| (f.path.clone(), f.content.clone()))
            .collect(),
        check: files.iter().map(|f| f.path.clone()).collect(),
        package: Some(package.to_string()),
        requirement: None,
    };
    match crate::pycheck::check_python(&input, std::time::Duration::from_secs(30)).await {
        Ok(report) => {
            for f in &mut files {
                if let Some(content) = report.files.get(&f.path) {
                    f.content = content.clone();
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "The static checks of an independent implementation did not run.");
        }
    }
    files
}

/// A unittest name for a test id (`tests.acceptance.test_a.T.test_x`);
/// pytest ids (`path::Class::test`) are turned into the dotted form.
pub(crate) fn unittest_name(id: &str) -> String {
    match id.split_once("::") {
        Some((path, rest)) => format!(
            "{}.{}",
            path.trim_end_matches(".py").replace('/', "."),
            rest.replace("::", ".")
        ),
        None => id.to_string(),
    }
}

/// One independent implementation of the code from the specification
/// alone: the developer's prompt, the requirement, the criteria and the
/// interface's signatures, no code and no tests; sampled freely.
async fn alternative(
    env: &AgentEnv<'_>,
    interface: &str,
    k: usize,
) -> Result<(Vec<FileSpec>, Vec<UsageRecord>)> {
    let state = &env.ctx.state;
    let mut user = format!("## Requirement\n{}\n\n", state.requirements.trim());
    user.push_str(&crate::agents::business::analysis_context(state));
    user.push_str(&format!(
        "\n## The interface to implement (keep every module, name and signature exactly)\n```\n{}\n```\n\nWrite the code only (no tests), as independent implementation {k} of {ALTERNATIVES}: simple and exactly as the requirement says. Answer as the system prompt says.",
        context::head(interface, 8 * 1024)
    ));
    // The developer's instructions under an opening of its own: this is
    // not the developer's conversation (a provider, or a scripted session,
    // that tells roles apart by the opening must not take it for one).
    let developer = crate::prompts::load(
        agentry_core::AgentRole::Developer,
        env.config.prompts_dir.as_deref(),
        env.config.compact,
    )?;
    let rest = developer.split_once('\n').map_or("", |(_, rest)| rest);
    let system = format!(
        "You are an independent Python developer: you implement a specification from its text alone, without seeing anyone else's code or tests.\n{rest}"
    );
    let mut tools = env.toolbox(None, None, None);
    let mut conversation = env
        .conversation()?
        .with_tools(false)
        .with_first_temperature(0.6 + 0.2 * k as f32);
    let (answer, _) = conversation
        .run::<Implementation>(system, user, &mut tools)
        .await?;
    let files = answer
        .files
        .into_iter()
        .filter(|f| f.path.ends_with(".py") && !crate::triage::is_test_file(&f.path))
        .map(|f| FileSpec {
            content: crate::output::file_text(&f.path, &f.content),
            path: f.path.trim_start_matches("./").to_string(),
        })
        .collect();
    Ok((files, conversation.into_usage()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentry_core::TestCaseResult;

    fn finding(test: &str, error: &str) -> Finding {
        Finding {
            test: test.into(),
            owner: Owner::Developer,
            reason: "r".into(),
            error: error.into(),
            at: None,
        }
    }

    fn triage(findings: Vec<Finding>, total: u32) -> Triage {
        Triage {
            acceptance_passed: false,
            acceptance_total: total,
            acceptance: findings,
            unit: Vec::new(),
            per_test: true,
        }
    }

    #[test]
    fn only_failed_checks_are_disputed_and_only_twice() {
        let t = triage(
            vec![
                finding("a.T.test_1", "AssertionError: 373.15 != 100"),
                finding("a.T.test_2", "AttributeError: x"),
            ],
            5,
        );
        let mut d = Disputes::default();
        assert_eq!(checks_failed(&t, &d).len(), 1);
        assert!(disputable(&t, &d));
        d.held = MAX_DISPUTES;
        assert!(!disputable(&t, &d));
        let errors_only = triage(vec![finding("a.T.test_2", "AttributeError: x")], 5);
        assert!(!disputable(&errors_only, &Disputes::default()));
        // An exception the code raised on purpose is its answer, as a
        // value is: a real run's test closed an account holding money,
        // which the requirement forbids with this very error.
        let raised = triage(
            vec![
                finding("a.T.test_3", "ValueError: balance must be zero to close"),
                finding("a.T.test_4", "UnknownAccount"),
                finding("a.T.test_5", "bank.errors.AccountClosed: ACC-0001"),
                finding("a.T.test_6", "TypeError: f() takes 1 positional argument"),
                finding("a.T.test_7", "KeyError: 'x'"),
                finding("a.T.test_8", "Error in setUp"),
            ],
            8,
        );
        let disputed: Vec<&str> = checks_failed(&raised, &Disputes::default())
            .iter()
            .map(|f| f.test.as_str())
            .collect();
        assert_eq!(
            disputed,
            ["a.T.test_3", "a.T.test_4", "a.T.test_5", "a.T.test_7"]
        );
    }

    #[test]
    fn a_lost_test_that_fails_the_same_way_again_is_set_aside_not_deleted() {
        let mut d = Disputes::default();
        d.lost
            .insert("a.T.test_1".into(), "AssertionError: 373.15 != 100".into());
        // Fails the same way: set aside, and the rest passed.
        let mut t = triage(
            vec![finding("a.T.test_1", "AssertionError: 373.15 != 100")],
            5,
        );
        assert_eq!(apply_set_aside(&mut t, &mut d), ["a.T.test_1"]);
        assert!(t.acceptance.is_empty() && t.acceptance_passed);
        assert!(d.set_aside.contains("a.T.test_1"));
        // QA changed the expectation and it fails differently: it decides.
        let mut d = Disputes::default();
        d.lost
            .insert("a.T.test_1".into(), "AssertionError: 373.15 != 100".into());
        let mut t = triage(vec![finding("a.T.test_1", "AssertionError: 99 != 100")], 5);
        assert!(apply_set_aside(&mut t, &mut d).is_empty());
        assert!(!t.acceptance_passed);
        // A suite whose every test would be set aside does not pass, and
        // goes back to QA rather than to the developer.
        let mut d = Disputes::default();
        d.lost
            .insert("a.T.test_1".into(), "AssertionError: x".into());
        let mut t = triage(vec![finding("a.T.test_1", "AssertionError: x")], 1);
        assert!(apply_set_aside(&mut t, &mut d).is_empty());
        assert!(!t.acceptance_passed);
        assert_eq!(t.acceptance.len(), 1);
        assert_eq!(t.acceptance[0].owner, Owner::Qa);
        assert_eq!(t.next_fix(), crate::triage::NextFix::Tests);
        assert!(d.set_aside.is_empty());
    }

    #[test]
    fn implementations_agree_on_the_value_of_a_check_and_the_type_of_an_error() {
        let result = |outcome: TestOutcome, error: Option<(&str, &str)>| TestCaseResult {
            id: "a.T.test_1".into(),
            outcome,
            error_type: error.map(|e| e.0.to_string()),
            message: error.map(|e| e.1.to_string()),
            raised_in: None,
        };
        let check = "AssertionError: 5 != 6";
        let failed = |m: &str| result(TestOutcome::Failed, Some(("AssertionError", m)));
        assert_eq!(judge(check, Some(&failed("5 != 6"))), Judgement::Agrees);
        assert_eq!(judge(check, Some(&failed("4 != 6"))), Judgement::Disagrees);
        assert_eq!(
            judge(check, Some(&result(TestOutcome::Passed, None))),
            Judgement::Passes
        );
        // An error: the same type agrees, whatever its message (a real
        // run: `UnknownAccount` from the code, `UnknownAccount: 'Frank'`
        // from an independent implementation).
        let refused = "UnknownAccount";
        let raised = |t: &str, m: &str| result(TestOutcome::Error, Some((t, m)));
        assert_eq!(
            judge(refused, Some(&raised("bank.UnknownAccount", "'Frank'"))),
            Judgement::Agrees
        );
        assert_eq!(
            judge(refused, Some(&raised("ValueError", "no"))),
            Judgement::Disagrees
        );
        // A broken implementation is no evidence.
        assert_eq!(
            judge(
                refused,
                Some(&raised("NameError", "name 'Account' is not defined"))
            ),
            Judgement::Abstains
        );
        assert_eq!(judge(refused, None), Judgement::Abstains);
    }

    #[test]
    fn pytest_ids_become_unittest_names() {
        assert_eq!(
            unittest_name("tests/acceptance/test_a.py::T::test_x"),
            "tests.acceptance.test_a.T.test_x"
        );
        assert_eq!(
            unittest_name("tests.acceptance.test_a.T.test_x"),
            "tests.acceptance.test_a.T.test_x"
        );
    }
}
