//! Smoke runs of `agentry bench humaneval` on problems written here in
//! HumanEval's format (HumanEval's own data is never part of the
//! repository): `direct` on a scripted session that answers one problem
//! right and one wrong, and `harness` on the scripted demo session with its
//! package renamed to the pinned one, whose crew has written one of the two
//! functions asked for. The real benchmark (the local model, 40 problems)
//! is not part of CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::*;

/// Two problems, numbered as the default selection's first two (0 and 4).
fn write_problems(dir: &Path) -> PathBuf {
    let problems = [
        json!({
            "task_id": "HumanEval/0",
            "prompt": "def add(a: int, b: int) -> int:\n    \"\"\" The sum of a and b.\n    >>> add(2, 3)\n    5\n    \"\"\"\n",
            "entry_point": "add",
            "canonical_solution": "    return a + b\n",
            "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
        }),
        json!({
            "task_id": "HumanEval/4",
            "prompt": "def shout(word: str) -> str:\n    \"\"\" The word in capitals, with an exclamation mark.\n    >>> shout('hi')\n    'HI!'\n    \"\"\"\n",
            "entry_point": "shout",
            "canonical_solution": "    return word.upper() + '!'\n",
            "test": "\n\ndef check(candidate):\n    assert candidate('hi') == 'HI!'\n    assert candidate('') == '!'\n",
        }),
    ];
    let path = dir.join("problems.jsonl");
    let text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Answers the first problem with a whole function in a fence, and the
/// second with a body that forgets the exclamation mark.
const SCRIPT: &str = r#"
name = "humaneval smoke"

[[responses]]
role = "developer"
visit = 0
content = '''
Here is the function:

```python
def add(a: int, b: int) -> int:
    return a + b
```
'''

[[responses]]
role = "developer"
visit = 1
content = '''
```python
    return word.upper()
```
'''
"#;

fn last_json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().rfind(|l| l.starts_with('{')).unwrap();
    serde_json::from_str(line).unwrap()
}

#[test]
fn a_direct_run_checks_each_answer_with_the_problems_own_test() {
    let dir = tempdir();
    let problems = write_problems(dir.path());
    let script = dir.path().join("script.toml");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = run(agentry(&dir.path().join("data")).args([
        "bench",
        "humaneval",
        "--problems",
        problems.to_str().unwrap(),
        "--limit",
        "2",
        "--llm-script",
        script.to_str().unwrap(),
    ]));
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("HumanEval/0")[1], "yes", "{stdout}");
    assert_eq!(row("HumanEval/4")[1], "no", "{stdout}");
    // The wrong answer fails on HumanEval's assertion, not on loading.
    assert!(
        row("HumanEval/4").join(" ").contains("AssertionError"),
        "{stdout}"
    );
    let overall = last_json_line(&out.stdout);
    assert_eq!(overall["mode"], "direct", "{overall:#}");
    assert_eq!(overall["llm"], "scripted");
    assert_eq!(overall["problems"], 2);
    assert_eq!(overall["passed"], 1);
    assert_eq!(overall["pass_at_1"], 0.5);
    assert!(overall["tokens_total"].as_u64().unwrap() > 0, "{overall:#}");
}

/// The demo session with its package renamed `solution`: a crew that
/// builds the pinned package, whose `__init__.py` exports `encode` (base62)
/// and nothing called `shout`.
fn crew_script(dir: &Path) -> PathBuf {
    let session = include_str!("../../agentry-agents/demo/url-shortener/session.toml");
    let path = dir.join("crew.toml");
    std::fs::write(&path, session.replace("shortener", "solution")).unwrap();
    path
}

/// HumanEval/0 asks for the crew's `encode`; HumanEval/4 for a function the
/// crew never wrote.
fn write_crew_problems(dir: &Path) -> PathBuf {
    let problems = [
        json!({
            "task_id": "HumanEval/0",
            "prompt": "def encode(number: int) -> str:\n    \"\"\" The number in base 62, digits 0-9a-zA-Z.\n    >>> encode(61)\n    'Z'\n    \"\"\"\n",
            "entry_point": "encode",
            "test": "\n\ndef check(candidate):\n    assert candidate(0) == '0'\n    assert candidate(61) == 'Z'\n    assert candidate(62) == '10'\n",
        }),
        json!({
            "task_id": "HumanEval/4",
            "prompt": "def shout(word: str) -> str:\n    \"\"\" The word in capitals.\n    \"\"\"\n",
            "entry_point": "shout",
            "test": "\n\ndef check(candidate):\n    assert candidate('hi') == 'HI'\n",
        }),
    ];
    let path = dir.join("crew-problems.jsonl");
    let text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_harness_run_checks_the_crews_branch_with_the_hidden_test() {
    let dir = tempdir();
    let out = run(agentry(&dir.path().join("data")).args([
        "--json",
        "bench",
        "humaneval",
        "--mode",
        "harness",
        "--problems",
        write_crew_problems(dir.path()).to_str().unwrap(),
        "--problem-ids",
        "0,4",
        "--llm-script",
        crew_script(dir.path()).to_str().unwrap(),
    ]));
    assert_ok(&out);
    let report = stdout_json(&out);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{report:#}");
    // The crew's `encode`, imported from the pinned package, passes
    // HumanEval's test on the branch.
    let good = &runs[0];
    assert_eq!(good["id"], "HumanEval/0");
    assert_eq!(good["status"], "completed", "{good:#}");
    assert_eq!(good["own_passed"], true, "{good:#}");
    assert_eq!(good["code_passed"], true, "{good:#}");
    assert_eq!(good["passed"], true);
    assert!(good["tokens"].as_u64().unwrap() > 0);
    // The same crew's workflow completes for `shout` too, with its own
    // tests green, but the branch has no such function: the hidden test
    // says so.
    let bad = &runs[1];
    assert_eq!(bad["status"], "completed", "{bad:#}");
    assert_eq!(bad["own_passed"], true);
    assert_eq!(bad["passed"], false);
    let detail = bad["detail"].as_str().unwrap();
    assert!(
        detail.contains("ImportError") && detail.contains("shout"),
        "{detail}"
    );
    let overall = &report["overall"];
    assert_eq!(overall["mode"], "harness");
    assert_eq!(overall["selection"], "chosen");
    assert_eq!(overall["problems"], 2);
    assert_eq!(overall["passed"], 1);
    assert_eq!(overall["pass_at_1"], 0.5);
    assert!(overall["wall_p50_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn without_a_problems_file_it_says_what_to_run() {
    let dir = tempdir();
    let script = dir.path().join("script.toml");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = run(agentry(&dir.path().join("data")).args([
        "bench",
        "humaneval",
        "--llm-script",
        script.to_str().unwrap(),
    ]));
    assert_fails_with(&out, "scripts/bench-humaneval");
    let out = run(agentry(&dir.path().join("data")).args([
        "bench",
        "humaneval",
        "--problems",
        write_problems(dir.path()).to_str().unwrap(),
        "--problem-ids",
        "7",
        "--llm-script",
        script.to_str().unwrap(),
    ]));
    assert_fails_with(&out, "no problem HumanEval/7");
}
