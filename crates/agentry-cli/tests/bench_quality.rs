//! A one-task smoke run of `agentry bench quality` on the scripted demo
//! session: the workflow runs end to end, the task's hidden suite runs
//! against the branch the agents produced, and the figures come out. The
//! real benchmark (the local model, the whole set) is not part of CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::*;

const REQUIREMENT: &str = include_str!("../../agentry-agents/demo/url-shortener/requirement.md");

/// A hidden suite for the demo's shortener, checked through its public
/// interface only: two tests that pass on the demo's code and, in
/// `wrong`'s variant, one that cannot.
fn hidden_suite(wrong: bool) -> String {
    let expected_code = if wrong { "'zz'" } else { "'1'" };
    format!(
        "import unittest\n\nfrom shortener.core import InvalidURL, Shortener\n\n\n\
         class Hidden(unittest.TestCase):\n    def test_round_trip(self):\n        s = Shortener()\n        \
         code = s.shorten('https://example.com/a')\n        self.assertEqual(s.resolve(code), 'https://example.com/a')\n\n    \
         def test_first_code(self):\n        self.assertEqual(Shortener().shorten('https://example.com/b'), {expected_code})\n\n    \
         def test_invalid(self):\n        with self.assertRaises(InvalidURL):\n            Shortener().shorten('ftp://x')\n"
    )
}

fn write_task(set: &Path, id: &str, wrong: bool) {
    let dir = set.join("tasks").join(id);
    std::fs::create_dir_all(dir.join("hidden")).unwrap();
    std::fs::write(dir.join("requirement.md"), REQUIREMENT).unwrap();
    std::fs::write(
        dir.join("task.toml"),
        format!(
            "id = \"{id}\"\ntitle = \"URL shortener\"\ncategory = \"stateful\"\nrepository = \"url-shortener\"\n\
             package = \"shortener\"\ntest_command = \"python3 -m unittest discover -s hidden_tests -t . -v\"\n\
             expected = \"success\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("hidden/__init__.py"), "").unwrap();
    std::fs::write(dir.join("hidden/test_hidden.py"), hidden_suite(wrong)).unwrap();
}

#[test]
fn a_scripted_run_of_one_task_reports_verified_success_and_a_false_green() {
    let dir = tempdir();
    let set = dir.path().join("set");
    write_task(&set, "shortener", false);
    write_task(&set, "shortener_wrong", true);
    let out = run(agentry(&dir.path().join("data")).args([
        "--json",
        "bench",
        "quality",
        "--set",
        set.to_str().unwrap(),
        "--llm",
        "demo",
    ]));
    assert_ok(&out);
    let report = stdout_json(&out);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{report:#}");
    // The demo's code passes the hidden suite: verified.
    let good = &runs[0];
    assert_eq!(good["task"], "shortener");
    assert_eq!(good["status"], "completed", "{good:#}");
    assert_eq!(good["own_passed"], true);
    assert_eq!(
        (
            good["hidden_passed"].as_u64(),
            good["hidden_total"].as_u64()
        ),
        (Some(3), Some(3)),
        "{good:#}"
    );
    assert_eq!(good["verified"], true);
    assert_eq!(good["false_green"], false);
    // A hidden test the code fails: the agents' own tests passed anyway,
    // which the benchmark counts as a false green.
    let bad = &runs[1];
    assert_eq!(
        (bad["hidden_passed"].as_u64(), bad["hidden_total"].as_u64()),
        (Some(2), Some(3)),
        "{bad:#}"
    );
    assert_eq!(bad["verified"], false);
    assert_eq!(bad["false_green"], true);
    let overall = &report["overall"];
    assert_eq!(overall["runs"], 2);
    assert_eq!(overall["verified_success"], 0.5);
    assert_eq!(overall["false_green"], 1);
    assert!(overall["wall_p50_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn an_unknown_task_is_named() {
    let dir = tempdir();
    let set = dir.path().join("set");
    write_task(&set, "shortener", false);
    let out = run(agentry(&dir.path().join("data")).args([
        "bench",
        "quality",
        "--set",
        set.to_str().unwrap(),
        "--tasks",
        "nope",
        "--llm",
        "demo",
    ]));
    assert_fails_with(&out, "no task `nope`");
}
