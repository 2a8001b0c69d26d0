//! One result per test from a runner's output: unittest's verbose lines
//! (`test_add (tests.test_app.T.test_add) ... ok`) and failure sections,
//! pytest's `-rA` summary (`PASSED tests/test_app.py::T::test_add`) and
//! failure sections. The failure sections give each failing test its
//! exception and the innermost frame of the repository it was raised in,
//! which is what tells a test's own error from a failure of the code.
//!
//! Paths in the output must already be relative to the repository: a
//! frame whose path is absolute (`/usr/lib/python3.11/...`) is outside it.

use agentry_core::{SourceLocation, TestCaseResult, TestOutcome};

/// Longest message kept per test.
const MESSAGE_LIMIT: usize = 500;

/// Per-test results, from whichever runner's format the output is in;
/// empty when none is recognised.
pub(crate) fn parse(stdout: &str, stderr: &str) -> Vec<TestCaseResult> {
    let text = format!("{stdout}\n{stderr}");
    let cases = unittest(&text);
    if !cases.is_empty() {
        return cases;
    }
    pytest(&text)
}

/// A `======` line: unittest's and pytest's section rule.
fn is_rule(line: &str, c: char) -> bool {
    line.len() >= 20 && line.chars().all(|x| x == c)
}

/// unittest: the `-v` status lines, then a section per failure:
///
/// ```text
/// ======================================================================
/// FAIL: test_b (tests.test_app.TestApp.test_b)
/// ----------------------------------------------------------------------
/// Traceback (most recent call last):
///   File "tests/test_app.py", line 10, in test_b
///     self.assertEqual(1, 2)
/// AssertionError: 1 != 2
/// ```
fn unittest(text: &str) -> Vec<TestCaseResult> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases: Vec<TestCaseResult> = Vec::new();
    let mut pending: Option<String> = None;
    for line in &lines {
        // A test with a docstring prints `name (id)` on one line and the
        // docstring's first line, then ` ... ok`, on the next.
        let (id, rest) = match unittest_status_line(line) {
            Some((id, rest)) => (Some(id), rest),
            None => match (pending.take(), line.rsplit_once(" ... ")) {
                (Some(id), Some((_, rest))) => (Some(id), rest),
                (None, _) => {
                    pending = unittest_name(line.trim_end());
                    continue;
                }
                (Some(_), None) => {
                    pending = unittest_name(line.trim_end());
                    continue;
                }
            },
        };
        let Some(id) = id else { continue };
        let outcome = match rest.trim() {
            "ok" => TestOutcome::Passed,
            "FAIL" => TestOutcome::Failed,
            "ERROR" => TestOutcome::Error,
            "unexpected success" => TestOutcome::Failed,
            r if r.starts_with("skipped") || r == "expected failure" => TestOutcome::Skipped,
            _ => continue,
        };
        push_case(&mut cases, id, outcome);
    }
    // Failure sections: `ERROR: name (id)` between a `====` rule and a
    // `----` rule, the traceback up to the next `====` or `----` rule.
    let mut i = 0;
    while i + 2 < lines.len() {
        if !is_rule(lines[i], '=') || !is_rule(lines[i + 2], '-') {
            i += 1;
            continue;
        }
        let header = lines[i + 1];
        let (outcome, named) = if let Some(rest) = header.strip_prefix("FAIL: ") {
            (TestOutcome::Failed, rest)
        } else if let Some(rest) = header.strip_prefix("ERROR: ") {
            (TestOutcome::Error, rest)
        } else if let Some(rest) = header.strip_prefix("UNEXPECTED SUCCESS: ") {
            (TestOutcome::Failed, rest)
        } else {
            i += 1;
            continue;
        };
        let end = lines[i + 3..]
            .iter()
            .position(|l| is_rule(l, '=') || is_rule(l, '-'))
            .map_or(lines.len(), |n| i + 3 + n);
        let body = &lines[i + 3..end];
        // `setUpClass (tests.test_app.T)` names the class: every test of it.
        let id = unittest_name(named).unwrap_or_else(|| named.trim().to_string());
        let (error_type, message, raised_in) = python_traceback(body);
        let case = match cases.iter_mut().find(|c| c.id == id) {
            Some(case) => case,
            None => {
                cases.push(TestCaseResult {
                    id: id.clone(),
                    outcome,
                    error_type: None,
                    message: None,
                    raised_in: None,
                });
                cases.last_mut().expect("just pushed")
            }
        };
        case.outcome = outcome;
        case.error_type = error_type;
        case.message = message;
        case.raised_in = raised_in;
        i = end;
    }
    cases
}

/// `test_add (tests.test_app.TestApp.test_add) ... ok` -> the id and
/// what follows ` ... `.
fn unittest_status_line(line: &str) -> Option<(String, &str)> {
    let (named, rest) = line.rsplit_once(" ... ")?;
    Some((unittest_name(named)?, rest))
}

/// `test_add (tests.test_app.TestApp.test_add)` -> the id in parentheses
/// (Python 3.11 prints the full id there; earlier versions print
/// `tests.test_app.TestApp` and the method before it). A subtest's
/// parameters after the parentheses are dropped.
fn unittest_name(named: &str) -> Option<String> {
    let named = named.trim();
    let (method, rest) = named.split_once(" (")?;
    let (inner, _) = rest.split_once(')')?;
    if method.is_empty()
        || method.contains(' ')
        || inner.is_empty()
        || !inner
            .chars()
            .all(|c| c.is_alphanumeric() || "._".contains(c))
    {
        return None;
    }
    // `unittest.loader._FailedTest.tests.test_app`: a module that did not load.
    if let Some(module) = inner.strip_prefix("unittest.loader._FailedTest.") {
        return Some(module.to_string());
    }
    let last = inner.rsplit('.').next().unwrap_or(inner);
    Some(if last == method || method.contains('.') {
        inner.to_string()
    } else {
        format!("{inner}.{method}")
    })
}

fn push_case(cases: &mut Vec<TestCaseResult>, id: String, outcome: TestOutcome) {
    match cases.iter_mut().find(|c| c.id == id) {
        // A subtest that failed marks the whole test.
        Some(case) => {
            if outcome != TestOutcome::Passed {
                case.outcome = outcome;
            }
        }
        None => cases.push(TestCaseResult {
            id,
            outcome,
            error_type: None,
            message: None,
            raised_in: None,
        }),
    }
}

/// The last traceback of a Python failure section: the exception's type,
/// its message and the innermost frame inside the repository (a relative
/// path). A chained exception (`During handling of the above exception`)
/// is described by its last traceback, the one that ended the test.
fn python_traceback(body: &[&str]) -> (Option<String>, Option<String>, Option<SourceLocation>) {
    let start = body
        .iter()
        .rposition(|l| l.starts_with("Traceback (most recent call last):"))
        .map_or(0, |n| n + 1);
    let mut raised_in = None;
    let mut exception_at = None;
    for (n, line) in body.iter().enumerate().skip(start) {
        if let Some(frame) = python_frame(line) {
            if !frame.path.starts_with('/') && !frame.path.starts_with('<') {
                raised_in = Some(frame);
            }
            continue;
        }
        if !line.starts_with(' ') && !line.trim().is_empty() {
            exception_at = Some(n);
            break;
        }
    }
    let Some(at) = exception_at else {
        return (None, None, raised_in);
    };
    let first = body[at];
    let (error_type, first_message) = match first.split_once(": ") {
        Some((ty, msg)) if is_type_name(ty) => (ty.to_string(), msg.to_string()),
        _ if is_type_name(first.trim()) => (first.trim().to_string(), String::new()),
        _ => return (None, Some(cap(first)), raised_in),
    };
    let mut message = first_message;
    for more in body[at + 1..].iter().take_while(|l| !l.trim().is_empty()) {
        message.push('\n');
        message.push_str(more);
    }
    let message = (!message.trim().is_empty()).then(|| cap(&message));
    (Some(short_type(&error_type)), message, raised_in)
}

/// `  File "tests/test_app.py", line 10, in test_b`.
fn python_frame(line: &str) -> Option<SourceLocation> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (path, rest) = rest.split_once("\", line ")?;
    let (number, function) = match rest.split_once(", in ") {
        Some((n, f)) => (n, Some(f.trim().to_string())),
        None => (rest, None),
    };
    Some(SourceLocation {
        path: path.trim_start_matches("./").to_string(),
        line: number.trim().parse().ok()?,
        function,
    })
}

/// `AssertionError`, `json.decoder.JSONDecodeError`.
fn is_type_name(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// `json.decoder.JSONDecodeError` -> `JSONDecodeError`.
fn short_type(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_string()
}

fn cap(text: &str) -> String {
    if text.len() <= MESSAGE_LIMIT {
        return text.to_string();
    }
    let mut end = MESSAGE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// pytest with `-rA`: the short summary's `PASSED id`, `FAILED id - msg`,
/// `ERROR id - msg`, `SKIPPED [1] ...` lines, and the failure sections
/// (`____ TestApp.test_b ____`), whose `path:line: ErrorType` lines name
/// where each frame was.
fn pytest(text: &str) -> Vec<TestCaseResult> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(summary) = lines
        .iter()
        .rposition(|l| l.contains(" short test summary info "))
    else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for line in &lines[summary + 1..] {
        let (outcome, rest) = if let Some(rest) = line.strip_prefix("PASSED ") {
            (TestOutcome::Passed, rest)
        } else if let Some(rest) = line.strip_prefix("FAILED ") {
            (TestOutcome::Failed, rest)
        } else if let Some(rest) = line.strip_prefix("ERROR ") {
            (TestOutcome::Error, rest)
        } else if let Some(rest) = line.strip_prefix("XPASS ") {
            (TestOutcome::Failed, rest)
        } else if let Some(rest) = line.strip_prefix("XFAIL ") {
            (TestOutcome::Skipped, rest)
        } else {
            continue;
        };
        let (id, message) = match rest.split_once(" - ") {
            Some((id, message)) => (id.trim(), Some(message.trim())),
            None => (rest.trim(), None),
        };
        let (mut error_type, mut message) = match message {
            Some(m) => match m.split_once(": ") {
                Some((ty, msg)) if is_type_name(ty) => (Some(short_type(ty)), Some(cap(msg))),
                _ if is_type_name(m) => (Some(short_type(m)), None),
                _ => (None, Some(cap(m))),
            },
            None => (None, None),
        };
        let mut raised_in = None;
        if outcome != TestOutcome::Passed {
            if let Some((ty, location)) = pytest_section(&lines[..summary], id) {
                error_type = error_type.or(ty);
                raised_in = location;
            }
            // A test failing on a bare `assert` prints `assert 1 == 2`.
            if error_type.is_none() && message.as_deref().is_some_and(|m| m.starts_with("assert "))
            {
                error_type = Some("AssertionError".into());
            }
            // The outcome says more than pytest's word for a failure in a
            // test: an exception other than a failed check is an error.
            if outcome == TestOutcome::Failed
                && error_type.as_deref().is_some_and(|t| t != "AssertionError")
            {
                message = message.or_else(|| error_type.clone());
                cases.push(TestCaseResult {
                    id: id.to_string(),
                    outcome: TestOutcome::Error,
                    error_type,
                    message,
                    raised_in,
                });
                continue;
            }
        }
        cases.push(TestCaseResult {
            id: id.to_string(),
            outcome,
            error_type,
            message,
            raised_in,
        });
    }
    cases
}

/// The failure section of pytest test `id` before the summary: its last
/// `path:line: ErrorType` line (the frame that raised) and the innermost
/// `path:line:` of the repository.
fn pytest_section(lines: &[&str], id: &str) -> Option<(Option<String>, Option<SourceLocation>)> {
    // `tests/test_app.py::TestApp::test_b` -> `TestApp.test_b`; a
    // collection error's section is `ERROR collecting tests/test_app.py`.
    let (file, name) = id.split_once("::").unwrap_or((id, ""));
    let title = if name.is_empty() {
        format!("ERROR collecting {file}")
    } else {
        name.replace("::", ".")
    };
    let start = lines.iter().position(|l| {
        let t = l.trim_matches('_').trim_matches('=').trim();
        t == title && l.len() > t.len()
    })?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| {
            let t = l.trim();
            t.len() > 10 && (t.starts_with("____") || t.starts_with("===="))
        })
        .map_or(lines.len(), |n| start + 1 + n);
    let mut error_type = None;
    let mut raised_in = None;
    for line in &lines[start + 1..end] {
        // `E   ModuleNotFoundError: No module named 'todo'`.
        if let Some(explained) = line.strip_prefix("E ") {
            if let Some((ty, _)) = explained.trim().split_once(": ") {
                if is_type_name(ty) {
                    error_type = Some(short_type(ty));
                }
            }
            continue;
        }
        // `tests/test_app.py:10: AssertionError` or `app/core.py:3: in add`.
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        if !path.ends_with(".py") || path.contains(' ') {
            continue;
        }
        let Some((number, tail)) = rest.split_once(':') else {
            continue;
        };
        let Ok(line_no) = number.trim().parse::<u32>() else {
            continue;
        };
        let tail = tail.trim();
        if let Some(function) = tail.strip_prefix("in ") {
            if !path.starts_with('/') {
                raised_in = Some(SourceLocation {
                    path: path.to_string(),
                    line: line_no,
                    function: Some(function.to_string()),
                });
            }
        } else {
            if is_type_name(tail) {
                error_type = Some(short_type(tail));
            }
            if !path.starts_with('/') {
                raised_in = Some(SourceLocation {
                    path: path.to_string(),
                    line: line_no,
                    function: None,
                });
            }
        }
    }
    Some((error_type, raised_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, line: u32) -> Option<(String, u32)> {
        Some((path.to_string(), line))
    }

    /// One expected case: id, outcome, error type, where it was raised.
    type Expected<'a> = (&'a str, TestOutcome, Option<&'a str>, Option<(String, u32)>);

    /// Checks each case: id, outcome, error type and where it was raised.
    fn check(output: &str, expected: &[Expected<'_>]) {
        let cases = parse("", output);
        let got: Vec<_> = cases
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.outcome,
                    c.error_type.as_deref(),
                    c.raised_in.as_ref().map(|l| (l.path.clone(), l.line)),
                )
            })
            .collect();
        assert_eq!(got, expected, "{output}");
    }

    const RULE: &str = "======================================================================";
    const DASH: &str = "----------------------------------------------------------------------";

    #[test]
    fn unittest_verbose_output_gives_each_test_its_outcome_and_origin() {
        let output = format!(
            "test_add (tests.test_app.TestApp.test_add) ... ok\n\
             test_b (tests.test_app.TestApp.test_b) ... FAIL\n\
             test_c (tests.test_app.TestApp.test_c) ... ERROR\n\
             test_d (tests.test_app.TestApp.test_d) ... skipped 'later'\n\
             test_e (tests.test_app.TestApp.test_e)\nAdds then lists. ... ok\n\
             \n{RULE}\nERROR: test_c (tests.test_app.TestApp.test_c)\n{DASH}\n\
             Traceback (most recent call last):\n  File \"tests/test_app.py\", line 14, in test_c\n    add(None)\n  \
             File \"todo_cli/core.py\", line 3, in add\n    return x.strip()\n           ^^^^^^^\n\
             AttributeError: 'NoneType' object has no attribute 'strip'\n\
             \n{RULE}\nFAIL: test_b (tests.test_app.TestApp.test_b)\n{DASH}\n\
             Traceback (most recent call last):\n  File \"tests/test_app.py\", line 10, in test_b\n    self.assertEqual(1, 2)\n\
             AssertionError: 1 != 2\n\n{DASH}\nRan 5 tests in 0.001s\n\nFAILED (failures=1, errors=1, skipped=1)\n"
        );
        check(
            &output,
            &[
                (
                    "tests.test_app.TestApp.test_add",
                    TestOutcome::Passed,
                    None,
                    None,
                ),
                (
                    "tests.test_app.TestApp.test_b",
                    TestOutcome::Failed,
                    Some("AssertionError"),
                    at("tests/test_app.py", 10),
                ),
                (
                    "tests.test_app.TestApp.test_c",
                    TestOutcome::Error,
                    Some("AttributeError"),
                    at("todo_cli/core.py", 3),
                ),
                (
                    "tests.test_app.TestApp.test_d",
                    TestOutcome::Skipped,
                    None,
                    None,
                ),
                (
                    "tests.test_app.TestApp.test_e",
                    TestOutcome::Passed,
                    None,
                    None,
                ),
            ],
        );
        let cases = parse(&output, "");
        assert_eq!(
            cases[2].message.as_deref(),
            Some("'NoneType' object has no attribute 'strip'")
        );
        assert_eq!(
            cases[2]
                .raised_in
                .as_ref()
                .and_then(|l| l.function.as_deref()),
            Some("add")
        );
    }

    #[test]
    fn a_test_module_that_does_not_load_is_one_erred_case_raised_in_the_test() {
        let output = format!(
            "tests.acceptance.test_app (unittest.loader._FailedTest.tests.acceptance.test_app) ... ERROR\n\
             \n{RULE}\nERROR: tests.acceptance.test_app (unittest.loader._FailedTest.tests.acceptance.test_app)\n{DASH}\n\
             ImportError: Failed to import test module: tests.acceptance.test_app\n\
             Traceback (most recent call last):\n  File \"/usr/lib/python3.11/unittest/loader.py\", line 407, in _find_test_path\n    module = self._get_module_from_name(name)\n  \
             File \"tests/acceptance/test_app.py\", line 3, in <module>\n    from todo import add\n\
             ModuleNotFoundError: No module named 'todo'\n\n\n{DASH}\nRan 1 test in 0.000s\n\nFAILED (errors=1)\n"
        );
        check(
            &output,
            &[(
                "tests.acceptance.test_app",
                TestOutcome::Error,
                Some("ModuleNotFoundError"),
                at("tests/acceptance/test_app.py", 3),
            )],
        );
    }

    #[test]
    fn a_chained_exception_is_described_by_the_one_that_ended_the_test() {
        let output = format!(
            "test_load (tests.test_s.T.test_load) ... ERROR\n\n{RULE}\nERROR: test_load (tests.test_s.T.test_load)\n{DASH}\n\
             Traceback (most recent call last):\n  File \"app/store.py\", line 5, in load\n    return json.load(f)\n\
             json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n\n\
             During handling of the above exception, another exception occurred:\n\n\
             Traceback (most recent call last):\n  File \"tests/test_s.py\", line 9, in test_load\n    load(p)\n  \
             File \"app/store.py\", line 7, in load\n    raise StoreError(p)\napp.store.StoreError: bad file\n"
        );
        check(
            &output,
            &[(
                "tests.test_s.T.test_load",
                TestOutcome::Error,
                Some("StoreError"),
                at("app/store.py", 7),
            )],
        );
    }

    #[test]
    fn older_unittest_names_and_subtests_are_one_case_each() {
        let output = format!(
            "test_x (tests.test_a.T) ... ok\n\n{RULE}\nFAIL: test_y (tests.test_a.T.test_y) (n=2)\n{DASH}\n\
             Traceback (most recent call last):\n  File \"tests/test_a.py\", line 8, in test_y\n    self.assertTrue(n < 2)\nAssertionError: False is not true\n\n\
             {RULE}\nFAIL: test_y (tests.test_a.T.test_y) (n=3)\n{DASH}\n\
             Traceback (most recent call last):\n  File \"tests/test_a.py\", line 8, in test_y\n    self.assertTrue(n < 2)\nAssertionError: False is not true\n"
        );
        check(
            &output,
            &[
                ("tests.test_a.T.test_x", TestOutcome::Passed, None, None),
                (
                    "tests.test_a.T.test_y",
                    TestOutcome::Failed,
                    Some("AssertionError"),
                    at("tests/test_a.py", 8),
                ),
            ],
        );
    }

    #[test]
    fn pytest_summary_and_sections_give_each_test_its_outcome_and_origin() {
        let output = "\
tests/test_app.py::TestApp::test_a PASSED                                [ 33%]
tests/test_app.py::TestApp::test_b FAILED                                [ 66%]
tests/test_app.py::test_c FAILED                                         [100%]

=================================== FAILURES ===================================
_______________________________ TestApp.test_b ________________________________

self = <tests.test_app.TestApp testMethod=test_b>

    def test_b(self):
>       self.assertEqual(1, 2)
E       AssertionError: 1 != 2

tests/test_app.py:10: AssertionError
____________________________________ test_c ____________________________________

    def test_c():
>       add(None)

tests/test_app.py:14: 
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

x = None

    def add(x):
>       return x.strip()
E       AttributeError: 'NoneType' object has no attribute 'strip'

todo_cli/core.py:3: AttributeError
=========================== short test summary info ============================
PASSED tests/test_app.py::TestApp::test_a
FAILED tests/test_app.py::TestApp::test_b - AssertionError: 1 != 2
FAILED tests/test_app.py::test_c - AttributeError: 'NoneType' object has no attribute 'strip'
========================= 2 failed, 1 passed in 0.05s ==========================
";
        check(
            output,
            &[
                (
                    "tests/test_app.py::TestApp::test_a",
                    TestOutcome::Passed,
                    None,
                    None,
                ),
                (
                    "tests/test_app.py::TestApp::test_b",
                    TestOutcome::Failed,
                    Some("AssertionError"),
                    at("tests/test_app.py", 10),
                ),
                (
                    "tests/test_app.py::test_c",
                    TestOutcome::Error,
                    Some("AttributeError"),
                    at("todo_cli/core.py", 3),
                ),
            ],
        );
    }

    #[test]
    fn a_pytest_collection_error_is_one_erred_case() {
        let output = "\
==================================== ERRORS ====================================
_____________________ ERROR collecting tests/test_app.py ______________________
ImportError while importing test module 'tests/test_app.py'.
tests/test_app.py:1: in <module>
    from todo import add
E   ModuleNotFoundError: No module named 'todo'
=========================== short test summary info ============================
ERROR tests/test_app.py
!!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!
";
        check(
            output,
            &[(
                "tests/test_app.py",
                TestOutcome::Error,
                Some("ModuleNotFoundError"),
                at("tests/test_app.py", 1),
            )],
        );
    }

    #[test]
    fn output_of_no_known_runner_gives_no_cases() {
        check("Segmentation fault\n", &[]);
        check("test result: ok. 3 passed; 0 failed\n", &[]);
    }
}
