//! Best-effort test counts from a runner's output: unittest, pytest and
//! `cargo test` summaries.

/// Passed and failed test counts, when a runner printed a summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub passed: Option<u32>,
    pub failed: Option<u32>,
}

impl Counts {
    /// The summary says no test ran (`Ran 0 tests`, `0 passed`): an
    /// empty suite exits 0 on Python 3.11 but tested nothing.
    pub(crate) fn none_ran(&self) -> bool {
        self.passed == Some(0) && self.failed.unwrap_or(0) == 0
    }
}

/// Tries each known summary format over the combined output.
pub(crate) fn parse(stdout: &str, stderr: &str) -> Counts {
    let text = format!("{stdout}\n{stderr}");
    cargo(&text)
        .or_else(|| pytest(&text))
        .or_else(|| unittest(&text))
        .unwrap_or_default()
}

/// `"3 passed"` -> `(3, "passed")`.
fn number_word(part: &str) -> Option<(u32, &str)> {
    let mut words = part.split_whitespace();
    let n = words.next()?.parse().ok()?;
    let word = words.next()?;
    words.next().is_none().then_some((n, word))
}

/// `test result: ok. 3 passed; 1 failed; 0 ignored; ...`, summed over
/// every test binary (unit, integration, doc tests).
fn cargo(text: &str) -> Option<Counts> {
    let mut found = false;
    let (mut passed, mut failed) = (0u32, 0u32);
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        let Some((_, tallies)) = rest.split_once(". ") else {
            continue;
        };
        for part in tallies.split(';') {
            match number_word(part) {
                Some((n, "passed")) => {
                    found = true;
                    passed = passed.saturating_add(n);
                }
                Some((n, "failed")) => failed = failed.saturating_add(n),
                _ => {}
            }
        }
    }
    found.then_some(Counts {
        passed: Some(passed),
        failed: Some(failed),
    })
}

/// pytest's last summary line: `==== 1 failed, 3 passed in 0.12s ====`.
fn pytest(text: &str) -> Option<Counts> {
    const WORDS: [&str; 12] = [
        "passed",
        "failed",
        "error",
        "errors",
        "skipped",
        "deselected",
        "xfailed",
        "xpassed",
        "warning",
        "warnings",
        "rerun",
        "reruns",
    ];
    text.lines().rev().find_map(|line| {
        let line = line.trim().trim_matches('=').trim();
        let (tallies, _time) = line.rsplit_once(" in ")?;
        let mut counts = Counts {
            passed: Some(0),
            failed: Some(0),
        };
        for part in tallies.split(',') {
            let (n, word) = number_word(part)?;
            if !WORDS.contains(&word) {
                return None;
            }
            match word {
                "passed" => counts.passed = Some(n),
                "failed" | "error" | "errors" => {
                    counts.failed = counts.failed.map(|f| f.saturating_add(n))
                }
                _ => {}
            }
        }
        Some(counts)
    })
}

/// unittest: `Ran 4 tests in 0.001s`, then `OK`, `OK (skipped=1)` or
/// `FAILED (failures=1, errors=2)`.
fn unittest(text: &str) -> Option<Counts> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let (at, ran) = lines.iter().enumerate().rev().find_map(|(i, line)| {
        let rest = line.strip_prefix("Ran ")?;
        let (n, _) = rest.split_once(' ')?;
        Some((i, n.parse::<u32>().ok()?))
    })?;
    let verdict = lines[at + 1..]
        .iter()
        .find(|l| l.starts_with("OK") || l.starts_with("FAILED"))?;
    let (mut failed, mut not_run) = (0u32, 0u32);
    if let Some((_, inner)) = verdict.split_once('(') {
        for pair in inner.trim_end_matches(')').split(',') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let n: u32 = value.trim().parse().unwrap_or(0);
            match key {
                "failures" | "errors" | "unexpected successes" => failed = failed.saturating_add(n),
                "skipped" | "expected failures" => not_run = not_run.saturating_add(n),
                _ => {}
            }
        }
    }
    Some(Counts {
        passed: Some(ran.saturating_sub(failed).saturating_sub(not_run)),
        failed: Some(failed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(output: &str, passed: Option<u32>, failed: Option<u32>) {
        assert_eq!(parse(output, ""), Counts { passed, failed }, "{output}");
        assert_eq!(parse("", output), Counts { passed, failed }, "{output}");
    }

    #[test]
    fn a_summary_of_no_tests_says_none_ran() {
        let none = |output: &str| parse(output, "").none_ran();
        assert!(none("\n----------------------------------------------------------------------\nRan 0 tests in 0.000s\n\nOK\n"));
        assert!(none("==== 2 skipped in 0.01s ===="));
        assert!(!none("Ran 2 tests in 0.001s\n\nOK\n"));
        assert!(!none("Ran 1 test in 0.001s\n\nFAILED (errors=1)\n"));
        // No summary at all: nothing is known, the exit code decides.
        assert!(!none("segfault"));
    }

    #[test]
    fn unittest_summaries() {
        check(
            "....\n------\nRan 4 tests in 0.001s\n\nOK\n",
            Some(4),
            Some(0),
        );
        check("Ran 5 tests in 0.1s\n\nOK (skipped=2)\n", Some(3), Some(0));
        check(
            "Ran 6 tests in 0.1s\n\nFAILED (failures=1, errors=2)\n",
            Some(3),
            Some(3),
        );
        check("Ran 1 test in 0.000s\n\nOK\n", Some(1), Some(0));
        // Killed before the verdict: no counts.
        check("Ran 3 tests in 0.1s\n", None, None);
    }

    #[test]
    fn pytest_summaries() {
        check("..F.\n1 failed, 3 passed in 0.05s\n", Some(3), Some(1));
        check(
            "===== 2 passed, 1 error, 1 warning in 0.10s =====",
            Some(2),
            Some(1),
        );
        check("==== 7 passed in 1.02 seconds ====", Some(7), Some(0));
        check("sign in the form in 3 places", None, None);
    }

    #[test]
    fn cargo_summaries_are_summed_over_binaries() {
        check(
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
             test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n",
            Some(4),
            Some(2),
        );
    }

    #[test]
    fn no_summary_no_counts() {
        check("", None, None);
        check("Segmentation fault\n", None, None);
    }
}
