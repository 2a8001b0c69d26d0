//! A static checker and mechanical repairer for the Python files the agents
//! write: missing imports are added, imports of names from the wrong module
//! are pointed at the right one, float equality becomes `assertAlmostEqual`;
//! what cannot be repaired (a syntax error, an import of nothing, a stub, a
//! test that cannot fail) becomes a [`Problem`] for the file's author.
//!
//! Key design decision: the checker is a Python script
//! (`python/pycheck.py`, embedded here) that only *parses* the code with
//! Python's own `ast`: the checked code is never imported or run, and no
//! model is called. It runs as `python3 -I -c <script>` (isolated: no
//! `PYTHONPATH`, no user site, not the current directory), reads a
//! [`PyCheckInput`] as JSON on stdin and writes a [`PyCheckReport`] as JSON
//! on stdout. `python3` must be 3.10 or newer. "Installed" in the import
//! rules means importable by that `python3`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use agentry_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The checker, run by `python3 -I -c`.
const SCRIPT: &str = include_str!("python/pycheck.py");
/// The interface reader, run the same way.
const INTERFACE_SCRIPT: &str = include_str!("python/interface.py");

/// How much of the checker's stderr an error quotes.
const STDERR_TAIL: usize = 2000;

/// The rule names of [`Rewrite::rule`] and [`Problem::rule`]: the one place
/// they are documented.
///
/// A *test file* is a `.py` file under a `tests/` or `test/` directory, or
/// named `test_*.py`, `*_test.py` or `conftest.py`; the others are *code
/// files*. A *repository module* is a `.py` file or a directory of the tree,
/// at the root or under `src/`, whose path is a valid dotted name.
pub mod rules {
    /// Repair: a standard-library module used as `name.attr` but never
    /// bound gets `import name`; a well-known standard-library name used
    /// bare (`defaultdict`, `dataclass`, `Path`, `Optional`, `patch`,
    /// `StringIO`, `ABC`, `timedelta`...; `datetime.now()` means the class)
    /// gets `from module import name`. New imports go after the docstring,
    /// `from __future__` and the leading imports.
    pub const MISSING_STDLIB_IMPORT: &str = "missing_stdlib_import";
    /// Repair: a name used but never bound that the project package
    /// exports, or that exactly one repository module defines at top level
    /// (def, class, assignment), gets `from that_module import name`; a
    /// repository module used as `name.attr` gets `import name`.
    pub const UNDEFINED_NAME_FROM_PACKAGE: &str = "undefined_name_from_package";
    /// Repair: `from M import f` where `M` does not exist or lacks `f` is
    /// pointed at the project package when it exports `f`, else at the one
    /// repository module that defines it (relative imports stay relative
    /// within the file's package: `from .KeyValueStore import
    /// KeyValueStore` becomes `from .keyvaluestore import KeyValueStore`).
    pub const UNRESOLVED_FROM_IMPORT: &str = "unresolved_from_import";
    /// Repair: `assertEqual`/`assertEquals` with a float literal (`0.3`,
    /// `-1.5`) as either operand becomes `assertAlmostEqual` (a third
    /// positional argument, the message, becomes `msg=`).
    pub const FLOAT_ASSERT_EQUAL: &str = "float_assert_equal";
    /// Repair: a file that does not compile because an f-string field
    /// holds the f-string's own quote (`f'{t['id']}'`, valid only from
    /// Python 3.12) gets those inner quotes swapped for the other kind,
    /// when that makes it compile.
    pub const FSTRING_QUOTES: &str = "fstring_quotes";
    /// Repair (made by the developer node before the checker runs, not by
    /// the checker): a developer's Python test file outside the top-level
    /// `tests/` moves into it, where the test runner discovers tests; its
    /// relative imports become absolute.
    pub const MOVED_TEST: &str = "moved_test";
    /// Repair (made by the developer node before the checker runs): a
    /// package written under one top-level directory that no `import` can
    /// name (`number-theory/` for `numtheory`) moves to `<package>/`, when
    /// nothing is there yet.
    pub const MOVED_PACKAGE: &str = "moved_package";
    /// Repair: the project package's `__init__.py` (when a checked code
    /// file is in the package) gains `from .<module> import <names>` for
    /// the public top-level classes and functions (not `main`) of its
    /// direct modules that it does not bind yet, so `from package import
    /// Name` works for what the code defines. Skipped: modules that do
    /// more than define things at import, modules that import the package
    /// itself (a cycle), names defined in two modules, an `__init__.py`
    /// with a star import.
    pub const PACKAGE_EXPORTS: &str = "package_exports";
    /// Repair (test files): a data file made with `tempfile.mkstemp()[1]`
    /// or `tempfile.NamedTemporaryFile(delete=False).name` exists and is
    /// empty, so code that loads its file when it exists fails on it
    /// (`JSONDecodeError`, seen in three real runs): the path becomes
    /// `os.path.join(tempfile.mkdtemp(), "data.json")`, where nothing
    /// exists until the code writes it. Not done when the file removes a
    /// file without checking it exists (a `tearDown` would then fail).
    pub const EMPTY_TEMP_FILE: &str = "empty_temp_file";
    /// Problem: the file does not compile; no other rule runs on it.
    pub const SYNTAX: &str = "syntax";
    /// Problem: an import of a module that is neither in the repository,
    /// the standard library nor installed, of a repository submodule that
    /// does not exist, or of a name a repository module does not have
    /// (imports guarded by `except ImportError` are exempt). The message
    /// lists the importable repository modules and their names.
    pub const UNRESOLVED_IMPORT: &str = "unresolved_import";
    /// Problem: a call of the repository's own function, class or method
    /// whose arguments do not fit its definition (too many positional
    /// arguments, an unknown keyword, a required parameter not passed): a
    /// `TypeError` waiting to happen. Checked: names bound by a top-level
    /// `def`/`class` of the file or a top-level import from a repository
    /// module (followed through re-exports), and methods called on a
    /// local variable or `self.<attr>` always assigned one such class's
    /// instance. Not checked (unknown, never guessed): decorated functions
    /// other than `staticmethod`/`classmethod`, classes with bases and no
    /// `__init__` of their own, decorated classes (`@dataclass`), `*args`
    /// or `**kwargs` at the call, names rebound anywhere in the file.
    pub const WRONG_ARGUMENTS: &str = "wrong_arguments";
    /// Problem: a method called on an instance of a repository class (a
    /// receiver known as for [`WRONG_ARGUMENTS`]) that the class does not
    /// have: not a method, class attribute or `self.<name>` assignment of
    /// its body. Only for classes whose body says everything: no base, no
    /// decorator, no `__getattr__`, no `setattr`/`__dict__`. The message
    /// lists the methods it has. Not reported for a method
    /// [`PyCheckInput::requirement`] names.
    pub const MISSING_METHOD: &str = "missing_method";
    /// Problem (only with [`PyCheckInput::requirement`]: an acceptance
    /// suite and its requirement): the checked test files, together, never
    /// name (in code or in a string) a public function or method of the
    /// code that the requirement names, or never expect an exception the
    /// code raises and the requirement names (`assertRaises`,
    /// `pytest.raises`). One problem, on the first test file, lists them.
    pub const UNTESTED: &str = "untested";
    /// Problem (code files): a function whose body, after an optional
    /// docstring, is only `pass`, `...`, `return`, `return None` or
    /// `raise NotImplementedError`. Exempt: `@abstractmethod`/`@overload`,
    /// methods of `ABC`/`Protocol`/`metaclass=ABCMeta` classes, methods a
    /// subclass in the tree overrides, and the dunders whose empty body is
    /// legitimate (`__init__`, `__post_init__`, `__init_subclass__`,
    /// `__enter__`, `__exit__`, `__aenter__`, `__aexit__`, `__del__`,
    /// `__set_name__`).
    pub const STUB: &str = "stub";
    /// Problem (code files): a file saves serialized data
    /// (`json.dump(data, f)`, `pickle.dump`, `f.write(json.dumps(data))`,
    /// `path.write_text(json.dumps(data))`...) and no code file of the
    /// repository reads anything back (`json.load`, `read_text`, `.read()`,
    /// `open` in a reading mode...): every new run starts empty. Reported
    /// once, on the first save.
    pub const SAVED_NEVER_LOADED: &str = "saved_never_loaded";
    /// Problem (test files): a `test*` function with no live assertion
    /// (`assert`, `self.assert*`/`self.fail*`, `pytest.raises`/`fail`,
    /// a mock's `assert_*`, `raise AssertionError`, or a helper of the file
    /// that asserts) and no tautology.
    pub const NO_ASSERTION: &str = "no_assertion";
    /// Problem (test files): a test whose every assertion is that a call
    /// returns None (calls named like lookups, `get*`/`find*`/`load*`...,
    /// are exempt: None is their "not found").
    pub const CHECKS_ONLY_NONE: &str = "checks_only_none";
    /// Problem (test files): an assertion that cannot fail
    /// (`assertTrue(True)`, `assert (x, "msg")`, `assertEqual(x, x)`,
    /// `assertIsNotNone(<literal>)`, `assertIn(x, [x, ...])`); it does not
    /// count as a live assertion.
    pub const TAUTOLOGY: &str = "tautology";
    /// Problem (test files): a test whose every assertion checks only
    /// values the test built itself from literals and builtins
    /// (`self.tasks = []`, then `assertEqual(self.tasks, ['a'])`): nothing
    /// the code returned, stored, read or was handed. It passes or fails
    /// whatever the code does.
    pub const DISCONNECTED: &str = "disconnected";
    /// Problem (test files): in a test, `except:`, `except Exception:`,
    /// `except BaseException:` or `except AssertionError:` whose body is
    /// only `pass`, `...` or `continue`.
    pub const SWALLOWED_FAILURE: &str = "swallowed_failure";

    /// Every rule name.
    pub const ALL: &[&str] = &[
        MISSING_STDLIB_IMPORT,
        UNDEFINED_NAME_FROM_PACKAGE,
        UNRESOLVED_FROM_IMPORT,
        FLOAT_ASSERT_EQUAL,
        FSTRING_QUOTES,
        PACKAGE_EXPORTS,
        EMPTY_TEMP_FILE,
        MOVED_TEST,
        MOVED_PACKAGE,
        SYNTAX,
        UNRESOLVED_IMPORT,
        WRONG_ARGUMENTS,
        MISSING_METHOD,
        UNTESTED,
        STUB,
        SAVED_NEVER_LOADED,
        NO_ASSERTION,
        CHECKS_ONLY_NONE,
        TAUTOLOGY,
        DISCONNECTED,
        SWALLOWED_FAILURE,
    ];
}

/// What the checker is given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PyCheckInput {
    /// Every file of the tree after the change: path -> content (Python
    /// files with content; other files may have empty content, only their
    /// path matters for import resolution).
    pub tree: BTreeMap<String, String>,
    /// The files to check and repair (paths into `tree`), e.g. the files an
    /// agent just wrote. Files that are not `.py` are ignored.
    pub check: Vec<String>,
    /// The project's own package import name (e.g. `todo_cli`), if any.
    pub package: Option<String>,
    /// For an acceptance suite: the requirement it answers to. The names
    /// of the code's interface it gives, the checked test files must
    /// together exercise ([`rules::UNTESTED`]), and a method it names that
    /// the code lacks is the code's to add, not the test's problem
    /// ([`rules::MISSING_METHOD`] is not reported for it). None: neither.
    #[serde(default)]
    pub requirement: Option<String>,
}

/// One mechanical rewrite of a checked file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// The file rewritten.
    pub path: String,
    /// The 1-based line of the rewrite, in the file as it was rewritten.
    pub line: u32,
    /// One of the [`rules`].
    pub rule: String,
    /// What was changed, for the workflow history.
    pub detail: String,
}

/// What could not be repaired and must go back to the file's author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file with the problem.
    pub path: String,
    /// The 1-based line, in the repaired file.
    pub line: u32,
    /// One of the [`rules`].
    pub rule: String,
    /// A short repair instruction for the author.
    pub message: String,
}

/// What the checker found and repaired.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PyCheckReport {
    /// Repaired files: path -> new content (only files that changed).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Each mechanical rewrite, for the workflow history.
    #[serde(default)]
    pub rewrites: Vec<Rewrite>,
    /// What could not be repaired and must go back to the file's author.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Live assertions counted per checked test file (an assertion in a
    /// loop counts once).
    #[serde(default)]
    pub assertions: BTreeMap<String, u32>,
}

/// Checks and repairs the `.py` files of `input.check` with `python3`.
///
/// Errors: `python3` missing (permanent), the checker running past
/// `timeout` ([`Error::Timeout`], transient), exiting non-zero or writing
/// something that is not a report (permanent, with the tail of its stderr).
pub async fn check_python(input: &PyCheckInput, timeout: Duration) -> Result<PyCheckReport> {
    if !input.check.iter().any(|path| path.ends_with(".py")) {
        return Ok(PyCheckReport::default());
    }
    check_with("python3", SCRIPT, input, timeout).await
}

/// The public interface of the Python files of `files` (path ->
/// content): per module, its import name and each public function, class
/// and method with its signature and the first paragraph of its
/// docstring, the names a package re-exports and the command-line
/// arguments an `argparse` parser declares; never a function body. QA
/// writes its tests from this and the specification. Errors as
/// [`check_python`]'s.
pub async fn interface(files: &BTreeMap<String, String>, timeout: Duration) -> Result<String> {
    #[derive(Deserialize)]
    struct Answer {
        interface: String,
    }
    let code: BTreeMap<&String, &String> = files
        .iter()
        .filter(|(path, _)| path.ends_with(".py"))
        .collect();
    if code.is_empty() {
        return Ok(String::new());
    }
    let stdin = serde_json::to_vec(&serde_json::json!({ "files": code }))?;
    let stdout = run_script("python3", INTERFACE_SCRIPT, stdin, timeout).await?;
    let answer: Answer = serde_json::from_slice(&stdout).map_err(|error| {
        Error::permanent(format!(
            "the interface reader's answer is not valid JSON ({error}): {}",
            tail(&String::from_utf8_lossy(&stdout))
        ))
    })?;
    Ok(answer.interface)
}

/// Runs `script` with `program` on `input` and reads its report.
async fn check_with(
    program: &str,
    script: &str,
    input: &PyCheckInput,
    timeout: Duration,
) -> Result<PyCheckReport> {
    let stdin = serde_json::to_vec(input)?;
    let stdout = run_script(program, script, stdin, timeout).await?;
    serde_json::from_slice(&stdout).map_err(|error| {
        Error::permanent(format!(
            "the Python checker's report is not valid JSON ({error}): {}",
            tail(&String::from_utf8_lossy(&stdout))
        ))
    })
}

/// Runs `program -I -c script` with `stdin`; its stdout on a zero exit.
async fn run_script(
    program: &str,
    script: &str,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let mut child = Command::new(program)
        .args(["-I", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                Error::permanent(format!(
                    "`{program}` was not found on PATH: the Python checker needs Python 3.10 or newer"
                ))
            } else {
                Error::transient(format!("starting the Python checker (`{program}`): {error}"))
            }
        })?;
    if let Some(mut pipe) = child.stdin.take() {
        // Written concurrently with reading the output, so a large input
        // cannot deadlock against a full stdout pipe.
        tokio::spawn(async move {
            let _ = pipe.write_all(&stdin).await;
            let _ = pipe.shutdown().await;
        });
    }
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            return Err(Error::Timeout {
                what: "the Python checker".into(),
                after: timeout,
            })
        }
        Ok(Err(error)) => {
            return Err(Error::transient(format!(
                "running the Python checker: {error}"
            )))
        }
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        return Err(Error::permanent(format!(
            "the Python checker failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(out.stdout)
}

/// The last [`STDERR_TAIL`] bytes of `text` (on a character boundary).
fn tail(text: &str) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// Checks every `.py` file of `files` with the project package `todo_cli`.
    async fn run(files: &[(&str, &str)]) -> PyCheckReport {
        let input = PyCheckInput {
            tree: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
            check: files.iter().map(|(p, _)| p.to_string()).collect(),
            package: Some("todo_cli".into()),
            requirement: None,
        };
        check_python(&input, TIMEOUT).await.unwrap()
    }

    /// Repairs: `path` comes back as `want` (None: unchanged), with
    /// rewrites of exactly the `rules` and no problems.
    async fn repair(files: &[(&str, &str)], path: &str, want: Option<&str>, rules: &[&str]) {
        let report = run(files).await;
        assert_eq!(
            report.files.get(path).map(String::as_str),
            want,
            "{report:#?}"
        );
        let got: Vec<&str> = report.rewrites.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(got, rules, "{report:#?}");
        assert!(report.problems.is_empty(), "{report:#?}");
        for rule in got {
            assert!(rules::ALL.contains(&rule));
        }
    }

    /// Problems: exactly `want`, as (path, line, rule), each message
    /// containing the `words`.
    async fn problems(files: &[(&str, &str)], want: &[(&str, u32, &str)], words: &[&str]) {
        let report = run(files).await;
        let got: Vec<(&str, u32, &str)> = report
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.line, p.rule.as_str()))
            .collect();
        assert_eq!(got, want, "{report:#?}");
        assert!(report.rewrites.is_empty(), "{report:#?}");
        let messages: Vec<&str> = report.problems.iter().map(|p| p.message.as_str()).collect();
        for word in words {
            assert!(
                messages.iter().any(|m| m.contains(word)),
                "`{word}` in {messages:#?}"
            );
        }
        for rule in &report.problems {
            assert!(rules::ALL.contains(&rule.rule.as_str()));
        }
    }

    /// A small, correct project: a CLI with argparse and json, a class with
    /// `__init__` and methods, an ABC, a unittest suite with `setUp`, a
    /// helper assertion and `assertRaises`, and a pytest-style suite.
    const CORE: &str = r#""""The todo list."""
import argparse
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class Task:
    title: str
    done: bool = False
    tags: List[str] = field(default_factory=list)


class Store(ABC):
    @abstractmethod
    def save(self, tasks):
        """Persist the tasks."""


class Exporter:
    def render(self, tasks):
        raise NotImplementedError


class JsonExporter(Exporter):
    def render(self, tasks):
        return json.dumps([t.title for t in tasks])


class TodoList:
    def __init__(self, path):
        self.path = path
        self.tasks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def add(self, title):
        if not title:
            raise ValueError("empty title")
        task = Task(title)
        self.tasks.append(task)
        return task

    def find(self, title) -> Optional[Task]:
        return next((t for t in self.tasks if t.title == title), None)

    def save(self):
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump([t.__dict__ for t in self.tasks], f)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="todo")
    parser.add_argument("title")
    args = parser.parse_args(argv)
    todo = TodoList(os.environ.get("TODO_FILE", "todo.json"))
    todo.add(args.title)
    todo.save()
    return 0


def read_tasks(path):
    with open(path, encoding="utf-8") as f:
        return [Task(**t) for t in json.load(f)]


if __name__ == "__main__":
    raise SystemExit(main())
"#;

    const INIT: &str =
        "from .core import Exporter, JsonExporter, Store, Task, TodoList, main, read_tasks\n";

    const SUITE: &str = r#"import os
import tempfile
import unittest
from unittest.mock import patch

from todo_cli import TodoList, main


class TodoTest(unittest.TestCase):
    def setUp(self):
        self.todo = TodoList(os.path.join(tempfile.mkdtemp(), "t.json"))

    def assertHasTitle(self, title):
        self.assertIn(title, [t.title for t in self.todo.tasks])

    def test_add(self):
        self.todo.add("milk")
        self.assertHasTitle("milk")

    def test_an_empty_title_is_refused(self):
        with self.assertRaises(ValueError):
            self.todo.add("")

    def test_find_misses(self):
        self.assertIsNone(self.todo.find("nothing"))

    def test_each_task_is_open(self):
        self.todo.add("a")
        self.todo.add("b")
        for task in self.todo.tasks:
            self.assertFalse(task.done)

    @patch.object(TodoList, "save")
    def test_main_saves(self, save):
        main(["milk"])
        save.assert_called_once_with()


if __name__ == "__main__":
    unittest.main()
"#;

    const PYTEST_SUITE: &str = r#"from todo_cli.core import TodoList


def make():
    return TodoList("unused.json")


def test_add_returns_the_task():
    assert make().add("a").title == "a"


def test_a_new_list_is_empty():
    todo = make()
    assert todo.tasks == []
"#;

    fn project() -> Vec<(&'static str, &'static str)> {
        vec![
            ("todo_cli/__init__.py", INIT),
            ("todo_cli/core.py", CORE),
            ("tests/__init__.py", ""),
            ("tests/test_todo.py", SUITE),
            ("tests/test_pytest_style.py", PYTEST_SUITE),
            ("README.md", ""),
        ]
    }

    #[tokio::test]
    async fn a_correct_project_has_no_problems_and_its_assertions_are_counted() {
        repair(&project(), "todo_cli/core.py", None, &[]).await;
        let report = run(&project()).await;
        let counts: Vec<(&str, u32)> = report
            .assertions
            .iter()
            .map(|(p, n)| (p.as_str(), *n))
            .collect();
        assert_eq!(
            counts,
            [
                ("tests/__init__.py", 0),
                ("tests/test_pytest_style.py", 2),
                ("tests/test_todo.py", 5)
            ]
        );
    }

    #[tokio::test]
    async fn non_python_files_are_ignored() {
        let input = PyCheckInput {
            tree: BTreeMap::from([("README.md".to_string(), "def (".to_string())]),
            check: vec!["README.md".into()],
            package: None,
            requirement: None,
        };
        let report = check_python(&input, TIMEOUT).await.unwrap();
        assert_eq!(report, PyCheckReport::default());
    }

    // ------------------------------------------------------------ repairs

    #[tokio::test]
    async fn a_missing_unittest_import_is_added() {
        let suite = "\"\"\"Tests.\"\"\"\nfrom todo_cli import TodoList\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(TodoList('p').path, 'p')\n";
        let want = "\"\"\"Tests.\"\"\"\nfrom todo_cli import TodoList\nimport unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(TodoList('p').path, 'p')\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        repair(
            &files,
            "tests/test_a.py",
            Some(want),
            &[rules::MISSING_STDLIB_IMPORT],
        )
        .await;
    }

    #[tokio::test]
    async fn well_known_stdlib_names_are_imported_from_their_module() {
        let code =
            "def count(words):\n    return Counter(words), defaultdict(list), datetime.now()\n";
        let want = "from collections import Counter, defaultdict\nfrom datetime import datetime\n\ndef count(words):\n    return Counter(words), defaultdict(list), datetime.now()\n";
        repair(
            &[("words.py", code)],
            "words.py",
            Some(want),
            &[rules::MISSING_STDLIB_IMPORT, rules::MISSING_STDLIB_IMPORT],
        )
        .await;
        // Bound names, builtins and a local `Counter` class need nothing.
        let fine = "class Counter:\n    pass\n\n\ndef f(json):\n    return json.dumps(1), Counter(), len([])\n";
        repair(&[("fine.py", fine)], "fine.py", None, &[]).await;
    }

    #[tokio::test]
    async fn an_undefined_name_is_imported_from_the_package() {
        let suite = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(TodoList('p').add('x').title, 'x')\n";
        let want = "import unittest\nfrom todo_cli import TodoList\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(TodoList('p').add('x').title, 'x')\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        repair(
            &files,
            "tests/test_a.py",
            Some(want),
            &[rules::UNDEFINED_NAME_FROM_PACKAGE],
        )
        .await;
        // Defined in two modules and exported by none: ambiguous, left alone.
        let two = [
            ("a.py", "def f():\n    return 1\n"),
            ("b.py", "def f():\n    return 2\n"),
        ];
        let user = ("c.py", "def g():\n    return f()\n");
        let report = run(&[two[0], two[1], user]).await;
        assert!(report.rewrites.is_empty(), "{report:#?}");
    }

    #[tokio::test]
    async fn from_import_of_a_missing_module_becomes_the_package() {
        let suite = "import unittest\nfrom todo import TodoList, Task\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(Task('x'), TodoList('p').add('x'))\n";
        let want = "import unittest\nfrom todo_cli import TodoList, Task\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(Task('x'), TodoList('p').add('x'))\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        repair(
            &files,
            "tests/test_a.py",
            Some(want),
            &[rules::UNRESOLVED_FROM_IMPORT],
        )
        .await;
    }

    #[tokio::test]
    async fn a_name_imported_from_the_wrong_module_moves_to_the_one_defining_it() {
        let files = [
            ("src/shop/__init__.py", ""),
            (
                "src/shop/cart.py",
                "def total(items):\n    return sum(items)\n",
            ),
            (
                "src/shop/cli.py",
                "from shop.util import total\n\nprint(total([1]))\n",
            ),
            ("src/shop/util.py", "def clean(s):\n    return s.strip()\n"),
        ];
        let want = "from shop.cart import total\n\nprint(total([1]))\n";
        repair(
            &files,
            "src/shop/cli.py",
            Some(want),
            &[rules::UNRESOLVED_FROM_IMPORT],
        )
        .await;
    }

    #[tokio::test]
    async fn a_relative_import_of_a_missing_module_moves_to_the_one_defining_it() {
        // A real run: `from .KeyValueStore import KeyValueStore` in the
        // package's `__init__.py`, where the module is `keyvaluestore`.
        let files = [
            (
                "todo_cli/__init__.py",
                "from .KeyValueStore import KeyValueStore\nfrom .keyvaluestore import load\n",
            ),
            (
                "todo_cli/keyvaluestore.py",
                "class KeyValueStore:\n    pass\n\n\ndef load(path):\n    return path\n",
            ),
        ];
        repair(
            &files,
            "todo_cli/__init__.py",
            Some("from .keyvaluestore import KeyValueStore\nfrom .keyvaluestore import load\n"),
            &[rules::UNRESOLVED_FROM_IMPORT],
        )
        .await;
    }

    #[tokio::test]
    async fn an_empty_temporary_file_becomes_a_path_nothing_is_at_yet() {
        // A real QA suite: every test failed on `JSONDecodeError`, the
        // code loading the empty file `mkstemp` had made.
        let suite = "import os\nimport tempfile\nimport unittest\n\n\nclass T(unittest.TestCase):\n    def setUp(self):\n        self.path = tempfile.mkstemp()[1]\n\n    def tearDown(self):\n        if os.path.exists(self.path):\n            os.remove(self.path)\n\n    def test_a(self):\n        self.assertTrue(self.path)\n";
        let want = suite.replace(
            "tempfile.mkstemp()[1]",
            "os.path.join(tempfile.mkdtemp(), \"data.json\")",
        );
        repair(
            &[("tests/test_t.py", suite)],
            "tests/test_t.py",
            Some(&want),
            &[rules::EMPTY_TEMP_FILE],
        )
        .await;
        // A `tearDown` that removes the file unchecked would fail on a
        // path the code never wrote: left as it is.
        let unchecked = suite.replace(
            "        if os.path.exists(self.path):\n            os.remove(self.path)",
            "        os.remove(self.path)",
        );
        repair(
            &[("tests/test_t.py", &unchecked)],
            "tests/test_t.py",
            None,
            &[],
        )
        .await;
    }

    #[tokio::test]
    async fn float_equality_becomes_almost_equal() {
        let suite = "import math\nimport unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(0.1 + 0.2, 0.3)\n        self.assertEquals(-1.5, -3 / 2, 'halves')\n        self.assertEqual(math.floor(2.5), 2)\n";
        let want = "import math\nimport unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertAlmostEqual(0.1 + 0.2, 0.3)\n        self.assertAlmostEqual(-1.5, -3 / 2, msg='halves')\n        self.assertEqual(math.floor(2.5), 2)\n";
        repair(
            &[("tests/test_f.py", suite)],
            "tests/test_f.py",
            Some(want),
            &[rules::FLOAT_ASSERT_EQUAL, rules::FLOAT_ASSERT_EQUAL],
        )
        .await;
    }

    #[tokio::test]
    async fn quotes_nested_in_an_fstring_are_swapped_so_it_compiles() {
        // Python 3.12 syntax a small model writes; 3.11 refuses it.
        let code = "def show(tasks):\n    print('\\n'.join([f'{t['id']} [{'x' if t['done'] else ' '}] {t[\"title\"]}' for t in tasks]))\n    return f\"{{kept}} {tasks[0]['id']}\"  # it's fine\n";
        let want = "def show(tasks):\n    print('\\n'.join([f'{t[\"id\"]} [{\"x\" if t[\"done\"] else \" \"}] {t[\"title\"]}' for t in tasks]))\n    return f\"{{kept}} {tasks[0]['id']}\"  # it's fine\n";
        repair(
            &[("todo/show.py", code)],
            "todo/show.py",
            Some(want),
            &[rules::FSTRING_QUOTES],
        )
        .await;
    }

    // ------------------------------------------------------------ problems

    #[tokio::test]
    async fn a_syntax_error_is_reported_with_its_line() {
        let broken = "import os\n\n\ndef f(:\n    return os.sep\n";
        problems(
            &[("broken.py", broken)],
            &[("broken.py", 4, rules::SYNTAX)],
            &["line 4", "def f(:"],
        )
        .await;
        let outside = "def f():\n    return 1\nreturn 2\n";
        problems(
            &[("outside.py", outside)],
            &[("outside.py", 3, rules::SYNTAX)],
            &["'return' outside function"],
        )
        .await;
    }

    #[tokio::test]
    async fn an_unresolvable_import_names_what_can_be_imported() {
        let mut files = project();
        let suite = "import unittest\nimport requests_that_do_not_exist\nfrom todo_cli.core import remove_task\nfrom todo_cli.storage import load\nfrom nowhere import *\n";
        files.push(("tests/test_a.py", suite));
        problems(
            &files,
            &[
                ("tests/test_a.py", 2, rules::UNRESOLVED_IMPORT),
                ("tests/test_a.py", 3, rules::UNRESOLVED_IMPORT),
                ("tests/test_a.py", 4, rules::UNRESOLVED_IMPORT),
                ("tests/test_a.py", 5, rules::UNRESOLVED_IMPORT),
            ],
            &[
                "`todo_cli.core` (Exporter, JsonExporter, Store, Task, TodoList, main, read_tasks)",
                "`todo_cli.core` has no `remove_task`",
                "module `todo_cli.storage` does not exist",
                "no module `requests_that_do_not_exist`",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn resolvable_imports_are_no_problem() {
        let code = "import os.path\nimport json as j\nfrom . import core\nfrom .core import TodoList\nfrom todo_cli import core as c\ntry:\n    import yaml_is_optional\nexcept ImportError:\n    yaml_is_optional = None\n\n\ndef f():\n    return os.path.sep, j, core, TodoList, c\n";
        let mut files = project();
        files.push(("todo_cli/extra.py", code));
        problems(&files, &[], &[]).await;
    }

    #[tokio::test]
    async fn a_stub_goes_back_to_its_author() {
        let code = "class Cart:\n    def __init__(self):\n        pass\n\n    def total(self):\n        \"\"\"Sum.\"\"\"\n        pass\n\n\ndef checkout(cart):\n    raise NotImplementedError(\"later\")\n\n\ndef cancel(cart):\n    ...\n";
        problems(
            &[("cart.py", code)],
            &[
                ("cart.py", 5, rules::STUB),
                ("cart.py", 10, rules::STUB),
                ("cart.py", 14, rules::STUB),
            ],
            &[
                "`Cart.total` at line 5 does nothing (its body is only `pass`): implement it",
                "`raise NotImplementedError`",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn the_package_exports_what_its_modules_define() {
        // A real run: `bank/__init__.py` exported `Bank` only, and the
        // requirement's `from bank import Bank, UnknownAccount` failed.
        let errors = "class UnknownAccount(KeyError):\n    pass\n\n\ndef _check(x):\n    return x\n\n\ndef main():\n    return 0\n\n\nif __name__ == '__main__':\n    main()\n";
        let core = "from .errors import UnknownAccount\n\n\nclass Bank:\n    def get(self, k):\n        raise UnknownAccount(k)\n";
        let noisy = "print('hello')\n\n\ndef shout():\n    return 1\n";
        let cycle = "from todo_cli import Bank\n\n\ndef wrap():\n    return Bank()\n";
        let files = [
            (
                "todo_cli/__init__.py",
                "\"\"\"The bank.\"\"\"\nfrom .core import Bank\n",
            ),
            ("todo_cli/core.py", core),
            ("todo_cli/errors.py", errors),
            ("todo_cli/noisy.py", noisy),
            ("todo_cli/wrap.py", cycle),
            (
                "todo_cli/__main__.py",
                "from .errors import main\n\nmain()\n",
            ),
        ];
        repair(
            &files,
            "todo_cli/__init__.py",
            Some("\"\"\"The bank.\"\"\"\nfrom .core import Bank\nfrom .errors import UnknownAccount\n"),
            &[rules::PACKAGE_EXPORTS],
        )
        .await;
        // A module whose own imports do not resolve is left out: importing
        // it would break the package (the import is reported on it).
        let mut with_heavy = files.to_vec();
        with_heavy.push((
            "todo_cli/heavy.py",
            "import not_installed_anywhere\n\n\ndef draw():\n    return not_installed_anywhere\n",
        ));
        let report = run(&with_heavy).await;
        assert_eq!(
            report.files.get("todo_cli/__init__.py").map(String::as_str),
            Some("\"\"\"The bank.\"\"\"\nfrom .core import Bank\nfrom .errors import UnknownAccount\n"),
            "{report:#?}"
        );
        // Nothing to add: no rewrite; a name two modules define is not
        // guessed.
        let mut files = files.to_vec();
        files[0].1 = "from .core import Bank\nfrom .errors import UnknownAccount\n";
        files.push(("todo_cli/other.py", "class Shared:\n    pass\n"));
        files.push(("todo_cli/more.py", "class Shared:\n    pass\n"));
        repair(&files, "todo_cli/__init__.py", None, &[]).await;
    }

    #[tokio::test]
    async fn an_acceptance_suite_that_leaves_the_interface_untested_is_told_what() {
        // A real run's suite passed on a bank that failed 16 of 23 hidden
        // tests: it never called `accounts` or `total`, and never checked
        // one of the refusals the requirement lists.
        let code = "class BankError(Exception):\n    pass\n\n\nclass UnknownAccount(BankError):\n    pass\n\n\nclass Bank:\n    def __init__(self):\n        self.accounts_ = {}\n\n    def deposit(self, k, amount):\n        if amount < 1:\n            raise ValueError('amount must be a positive integer')\n        if k not in self.accounts_:\n            raise UnknownAccount(k)\n        self.accounts_[k] += amount\n\n    def total(self):\n        return sum(self.accounts_.values())\n\n    def _audit(self):\n        raise NotImplementedError\n\n\ndef main():\n    return 0\n";
        let thin = "import unittest\nfrom bank import Bank\n\n\nclass T(unittest.TestCase):\n    def test_deposit(self):\n        b = Bank()\n        with self.assertRaises(ValueError):\n            b.deposit('a', 0)\n";
        let full = "import unittest\nfrom bank import Bank, UnknownAccount\n\n\nclass T(unittest.TestCase):\n    def test_deposit(self):\n        b = Bank()\n        with self.assertRaises(ValueError):\n            b.deposit('a', 0)\n        self.assertRaises(UnknownAccount, b.deposit, 'x', 1)\n        self.assertEqual(b.total(), 0)\n";
        // `deposit` and `_audit` are not named: never asked for.
        const REQUIREMENT: &str = "`Bank()`; `total() -> int`; `deposit(k, amount)`: `ValueError` when the amount is not positive, `UnknownAccount` for an unknown account. `accounts()` lists them.";
        let check = |suite: &'static str| async move {
            let input = PyCheckInput {
                tree: [
                    (
                        "bank/__init__.py",
                        "from .core import Bank, BankError, UnknownAccount\n",
                    ),
                    ("bank/core.py", code),
                    ("tests/acceptance/test_a.py", suite),
                ]
                .into_iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
                check: vec!["tests/acceptance/test_a.py".into()],
                package: None,
                requirement: Some(REQUIREMENT.into()),
            };
            check_python(&input, TIMEOUT).await.unwrap()
        };
        let report = check(thin).await;
        let untested: Vec<&Problem> = report
            .problems
            .iter()
            .filter(|p| p.rule == rules::UNTESTED)
            .collect();
        assert_eq!(untested.len(), 1, "{report:#?}");
        assert!(
            untested[0]
                .message
                .contains("no test calls `total`; no test expects `UnknownAccount`"),
            "{}",
            untested[0].message
        );
        // Every method named, every raised exception expected (a base the
        // code never raises is not asked for): nothing to add.
        let report = check(full).await;
        assert!(
            report.problems.iter().all(|p| p.rule != rules::UNTESTED),
            "{report:#?}"
        );
    }

    #[tokio::test]
    async fn calls_that_do_not_fit_the_definition_are_caught() {
        // A real QA round: `save_tasks(self.tasks)` where the interface
        // shows `save_tasks()`; the test erred on a TypeError in its own
        // code, and QA spent its rounds on it.
        let core = "class Todo:\n    def __init__(self, path):\n        self.path = path\n\n    def add(self, title):\n        return title\n\n    @staticmethod\n    def norm(text):\n        return text.strip()\n\n\nclass Plain:\n    pass\n\n\ndef save_tasks():\n    return 1\n\n\ndef add(path, title, *, done=False):\n    return path, title, done\n";
        let init = "from .core import Todo, save_tasks, add\n";
        let suite = "import unittest\nfrom todo import Todo, save_tasks, add as add_task\nfrom todo.core import Plain\n\n\nclass T(unittest.TestCase):\n    def setUp(self):\n        self.todo = Todo('t.json')\n        self.tasks = []\n\n    def test_wrong(self):\n        save_tasks(self.tasks)\n        self.todo.add('a', 'b')\n        t = Todo()\n        t.add(name='x')\n        self.todo.norm(' a ', 2)\n        add_task('p')\n        Plain(1)\n        self.assertTrue(t)\n\n    def test_right(self):\n        save_tasks()\n        self.todo.add('a')\n        t = Todo(path='x')\n        t.add(title='x')\n        Todo.norm(' a ')\n        add_task('p', 't', done=True)\n        args = ['p', 't']\n        add_task(*args)\n        self.assertTrue(t)\n";
        let want: Vec<(&str, u32, &str)> = [12, 13, 14, 15, 16, 17, 18]
            .into_iter()
            .map(|line| ("tests/test_todo.py", line, rules::WRONG_ARGUMENTS))
            .collect();
        problems(
            &[
                ("todo/__init__.py", init),
                ("todo/core.py", core),
                ("tests/__init__.py", ""),
                ("tests/test_todo.py", suite),
            ],
            &want,
            &[
                "`save_tasks(self.tasks)` at line 12 passes 1 positional argument, but it takes none: `save_tasks()` in `todo.core`",
                "`self.todo.add('a', 'b')` at line 13 passes 2 positional arguments, but it takes 1: `Todo.add(title)`",
                "`Todo()` at line 14 does not pass `path`: `Todo(path)`",
                "passes `name=`, but it has no parameter `name`",
                "`Todo.norm(text)`",
                "`add(path, title, *, done=...)` in `todo.core`",
                "`Plain()` in `todo.core` takes none",
            ],
        )
        .await;
        // A method the class does not have; attributes it does have
        // (assigned in `__init__`) are no problem.
        let calls = "from todo import Todo\n\n\ndef use():\n    t = Todo('x')\n    t.path.strip()\n    return t.close_account(1)\n";
        problems(
            &[
                ("todo/__init__.py", init),
                ("todo/core.py", core),
                ("use.py", calls),
            ],
            &[("use.py", 7, rules::MISSING_METHOD)],
            &["`t.close_account(1)` at line 7: `Todo` in `todo.core` has no method `close_account`. It has: add, norm."],
        )
        .await;
        // Unless the requirement names it: then the code is to add it (a
        // real rewrite dropped `close_account`), and the call stays.
        let input = PyCheckInput {
            tree: [
                ("todo/__init__.py", init),
                ("todo/core.py", core),
                ("use.py", calls),
            ]
            .into_iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect(),
            check: vec!["use.py".into()],
            package: Some("todo".into()),
            requirement: Some("`close_account(id)` closes an account.".into()),
        };
        let report = check_python(&input, TIMEOUT).await.unwrap();
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.rule != rules::MISSING_METHOD),
            "{report:#?}"
        );
        // What is not known is not checked: a decorated function, a class
        // with a base and no `__init__`, a name rebound in the file.
        let code = "import functools\n\n\ndef deco(f):\n    @functools.wraps(f)\n    def inner(*a, **k):\n        return f(*a, **k)\n    return inner\n\n\n@deco\ndef wrapped(a):\n    return a\n\n\nclass Base:\n    def __init__(self, a, b):\n        self.a = a\n\n\nclass Child(Base):\n    pass\n\n\ndef one(a):\n    return a\n\n\ndef use(flag):\n    first = one\n    if flag:\n        one = print\n    return wrapped(1, 2), Child(1, 2), first, one(1, 2, 3)\n";
        problems(&[("lib.py", code)], &[], &[]).await;
    }

    #[tokio::test]
    async fn data_saved_and_never_loaded_goes_back_to_its_author() {
        // The todo run at `28c7948`: a class saved its tasks after each
        // change and never read the file, so the command line forgot them.
        let saves = "import json\n\n\nclass Todo:\n    def __init__(self, path):\n        self.path = path\n        self.tasks = []\n\n    def add(self, task):\n        self.tasks.append(task)\n        with open(self.path, 'w') as f:\n            json.dump(self.tasks, f)\n";
        problems(
            &[("todo/__init__.py", ""), ("todo/core.py", saves)],
            &[("todo/core.py", 12, rules::SAVED_NEVER_LOADED)],
            &["saves data (json.dump)", "Load the file when it exists"],
        )
        .await;
        let dumps = "import json\nfrom pathlib import Path\n\n\ndef save(path, data):\n    Path(path).write_text(json.dumps(data))\n\n\ndef export(path, data):\n    with Path(path).open('w') as f:\n        f.write(json.dumps(data))\n";
        problems(
            &[("store.py", dumps)],
            &[("store.py", 6, rules::SAVED_NEVER_LOADED)],
            &["write_text(json.dumps(...))"],
        )
        .await;
        // A read anywhere in the code (another module, `path.open()` with
        // no mode, a computed mode) is enough.
        let loads = "import json\n\n\ndef load(path):\n    with open(path) as f:\n        return json.load(f)\n";
        problems(
            &[("todo/core.py", saves), ("todo/store.py", loads)],
            &[],
            &[],
        )
        .await;
        let method = "from pathlib import Path\n\n\ndef lines(path):\n    with Path(path).open() as f:\n        return list(f)\n";
        problems(&[("store.py", dumps), ("lines.py", method)], &[], &[]).await;
        let computed = "def handle(path, mode):\n    return open(path, mode)\n";
        problems(&[("store.py", dumps), ("io_.py", computed)], &[], &[]).await;
        // Writing text that is not serialized data (a report) is no store.
        let report = "def write_report(path, lines):\n    with open(path, 'w') as f:\n        f.write('\\n'.join(lines))\n";
        problems(&[("report.py", report)], &[], &[]).await;
        // Tests that save fixtures are not code.
        let fixture = "import json\nimport unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        with open('x.json', 'w') as f:\n            json.dump([1], f)\n        self.assertTrue(f.closed)\n";
        let report = run(&[("tests/test_x.py", fixture)]).await;
        assert!(report
            .problems
            .iter()
            .all(|p| p.rule != rules::SAVED_NEVER_LOADED));
    }

    #[tokio::test]
    async fn an_empty_override_of_a_library_base_is_no_stub() {
        // Silencing `BaseHTTPRequestHandler.log_message` is an override;
        // the same empty method on a class of the repository's own is a stub.
        let code = "from http.server import BaseHTTPRequestHandler\n\n\nclass Handler(BaseHTTPRequestHandler):\n    def log_message(self, format, *args):\n        pass\n\n\nclass Store:\n    pass\n\n\nclass Cache(Store):\n    def clear(self):\n        pass\n";
        problems(
            &[("server.py", code)],
            &[("server.py", 14, rules::STUB)],
            &["`Cache.clear` at line 14"],
        )
        .await;
    }

    #[tokio::test]
    async fn an_abstract_method_is_no_stub() {
        let code = "import abc\nfrom typing import Protocol, overload\n\n\nclass A(abc.ABC):\n    def run(self):\n        pass\n\n\nclass B:\n    @abc.abstractmethod\n    def run(self):\n        raise NotImplementedError\n\n    @overload\n    def get(self, k: int) -> int: ...\n\n    def get(self, k):\n        return k\n\n\nclass C(Protocol):\n    def go(self) -> int: ...\n\n\nclass D(metaclass=abc.ABCMeta):\n    def go(self):\n        return None\n";
        problems(&[("abstract.py", code)], &[], &[]).await;
        // Stubs in test files are not this rule's business.
        let helper =
            "def helper():\n    pass\n\n\ndef test_a():\n    assert helper() is None or True\n";
        let report = run(&[("tests/test_h.py", helper)]).await;
        assert!(report.problems.iter().all(|p| p.rule != rules::STUB));
    }

    #[tokio::test]
    async fn a_test_without_assertion_is_caught() {
        let suite = "import unittest\nfrom todo_cli import TodoList\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        TodoList('p').add('x')\n\n\ndef test_plain():\n    TodoList('p')\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        problems(
            &files,
            &[
                ("tests/test_a.py", 6, rules::NO_ASSERTION),
                ("tests/test_a.py", 10, rules::NO_ASSERTION),
            ],
            &[
                "`T.test_add` at line 6 asserts nothing",
                "`assert actual == expected`",
            ],
        )
        .await;
    }

    #[tokio::test]
    async fn a_suite_that_only_checks_none_is_caught() {
        let suite = "import unittest\nfrom todo_cli import main, TodoList\n\n\nclass T(unittest.TestCase):\n    def test_main(self):\n        self.assertIsNone(main(['x']))\n        self.assertEqual(None, TodoList('p').save())\n\n\ndef test_save():\n    assert TodoList('p').save() is None\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        problems(
            &files,
            &[
                ("tests/test_a.py", 6, rules::CHECKS_ONLY_NONE),
                ("tests/test_a.py", 11, rules::CHECKS_ONLY_NONE),
            ],
            &["only checks that calls return None"],
        )
        .await;
    }

    #[tokio::test]
    async fn a_tautology_is_caught_and_not_counted() {
        let suite = "import unittest\nfrom todo_cli import TodoList\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        todo = TodoList('p')\n        self.assertTrue(True)\n        self.assertEqual(todo, todo)\n        self.assertIsNotNone('x')\n        self.assertIn(1, [1, 2])\n\n\ndef test_b():\n    assert (TodoList('p').tasks == [], 'empty')\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        problems(
            &files,
            &[
                ("tests/test_a.py", 8, rules::TAUTOLOGY),
                ("tests/test_a.py", 9, rules::TAUTOLOGY),
                ("tests/test_a.py", 10, rules::TAUTOLOGY),
                ("tests/test_a.py", 11, rules::TAUTOLOGY),
                ("tests/test_a.py", 15, rules::TAUTOLOGY),
            ],
            &["`self.assertTrue(True)` at line 8 can never fail"],
        )
        .await;
        let report = run(&files).await;
        assert_eq!(report.assertions["tests/test_a.py"], 0);
    }

    #[tokio::test]
    async fn a_test_that_checks_only_its_own_values_is_caught() {
        let suite = "import unittest\nimport json\nfrom todo_cli import TodoList\n\n\nclass T(unittest.TestCase):\n    def setUp(self):\n        self.tasks = []\n\n    def test_own(self):\n        TodoList('p').add('x')\n        self.assertEqual(self.tasks, ['x'])\n        self.assertEqual(len(self.tasks), 1)\n        self.assertIsNone(TodoList('p').add('y'))\n\n    def test_returned(self):\n        todo = TodoList('p')\n        self.assertEqual(todo.tasks, [])\n\n    def test_handed(self):\n        tasks = []\n        TodoList('p').load_into(tasks)\n        self.assertEqual(tasks, ['x'])\n\n    def test_read_back(self):\n        TodoList('p').add('x')\n        with open('p') as f:\n            self.assertEqual(json.load(f), ['x'])\n\n    def test_raises(self):\n        with self.assertRaises(ValueError):\n            TodoList('p').add('')\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        problems(
            &files,
            &[("tests/test_a.py", 12, rules::DISCONNECTED)],
            &["`T.test_own`: `self.assertEqual(self.tasks, ['x'])` at line 12 checks only values the test built itself"],
        )
        .await;
    }

    #[tokio::test]
    async fn a_swallowed_failure_is_caught() {
        let suite = "import unittest\nfrom todo_cli import TodoList\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        try:\n            self.assertEqual(TodoList('p').add('x').title, 'x')\n        except Exception:\n            pass\n\n    def test_b(self):\n        try:\n            TodoList('p').add('')\n        except ValueError:\n            pass\n        self.assertTrue(TodoList('p').path)\n";
        let mut files = project();
        files.push(("tests/test_a.py", suite));
        problems(
            &files,
            &[("tests/test_a.py", 9, rules::SWALLOWED_FAILURE)],
            &["`except Exception: pass` at line 9 hides failures"],
        )
        .await;
    }

    // ------------------------------------------------------------ the process

    #[tokio::test]
    async fn the_interface_shows_signatures_and_docstrings_never_bodies() {
        let files: BTreeMap<String, String> = [
            ("todo/__init__.py", "from .core import add, Store\n"),
            (
                "todo/core.py",
                "\"\"\"Tasks.\"\"\"\nimport json\n\ndef add(title: str, path='t.json') -> int:\n    \"\"\"Adds a task; returns its id.\n\n    More detail.\"\"\"\n    secret_body = 41 + 1\n    return secret_body\n\nclass Store:\n    def __init__(self, path):\n        self.path = path\n\n    def get(self, task_id):\n        return None\n\n    def _private(self):\n        pass\n",
            ),
            (
                "todo/__main__.py",
                "import argparse\np = argparse.ArgumentParser()\np.add_argument('--file')\n",
            ),
            ("README.md", "not python"),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
        let text = interface(&files, Duration::from_secs(20)).await.unwrap();
        for want in [
            "# module todo (todo/__init__.py)",
            "from .core import add, Store",
            "def add(title: str, path='t.json') -> int",
            "Adds a task; returns its id.",
            "class Store:",
            "def __init__(self, path)",
            "def get(self, task_id)",
            "p.add_argument('--file')",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        for never in [
            "secret_body",
            "More detail",
            "_private",
            "not python",
            "self.path = path",
        ] {
            assert!(!text.contains(never), "{never:?} leaked into:\n{text}");
        }
        assert_eq!(
            interface(&BTreeMap::new(), Duration::from_secs(5))
                .await
                .unwrap(),
            ""
        );
    }

    #[tokio::test]
    async fn a_timeout_is_an_error() {
        let input = PyCheckInput {
            tree: BTreeMap::from([("a.py".to_string(), "x = 1\n".to_string())]),
            check: vec!["a.py".into()],
            package: None,
            requirement: None,
        };
        let error = check_python(&input, Duration::from_millis(1))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        assert!(error.class().is_retryable());
    }

    #[tokio::test]
    async fn a_failing_or_missing_interpreter_is_an_error() {
        let input = PyCheckInput {
            check: vec!["a.py".into()],
            ..PyCheckInput::default()
        };
        let error = check_with("python3-not-installed", SCRIPT, &input, TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`python3-not-installed` was not found on PATH"),
            "{error}"
        );
        let crash = "import sys\nsys.stderr.write('boom at the end')\nsys.exit(3)";
        let error = check_with("python3", crash, &input, TIMEOUT)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("exit status: 3") && message.contains("boom at the end"),
            "{message}"
        );
        let error = check_with("python3", "print('not json')", &input, TIMEOUT)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("not valid JSON") && message.contains("not json"),
            "{message}"
        );
    }
}
