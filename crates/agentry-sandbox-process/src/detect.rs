//! Project detection: which test runner a checkout wants, from its files.

use std::fs;
use std::path::Path;

use agentry_core::ProjectKind;

/// A recognised project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Project {
    /// Python; `uses_pytest` when it says so (pytest.ini, `[tool.pytest]`,
    /// conftest.py, pytest in its requirements).
    Python {
        uses_pytest: bool,
        tests_dir: TestsDir,
    },
    /// `Cargo.toml`.
    Rust,
    /// `package.json` with a `test` script.
    Node,
}

/// The `tests/` directory of a Python project, which decides how
/// unittest discovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestsDir {
    /// No `tests/`: discover from the top level.
    Absent,
    /// `tests/` is a package: `-s tests -t .` (imports as `tests.test_x`).
    Package,
    /// `tests/` without `__init__.py`: `-s tests` (unittest refuses `-t .`
    /// for a start directory that is not importable; the checkout root is
    /// still on `sys.path` through `python3 -m`).
    Plain,
}

impl Project {
    pub(crate) fn kind(self) -> ProjectKind {
        match self {
            Project::Python { .. } => ProjectKind::Python,
            Project::Rust => ProjectKind::Rust,
            Project::Node => ProjectKind::Node,
        }
    }

    /// The test command; `pytest_installed` only matters for a project
    /// that uses pytest.
    pub(crate) fn command(self, pytest_installed: bool) -> Vec<String> {
        let words: &[&str] = match self {
            Project::Python {
                uses_pytest: true, ..
            } if pytest_installed => &["python3", "-m", "pytest", "-q", "-rA"],
            Project::Python {
                tests_dir: TestsDir::Package,
                ..
            } => &[
                "python3", "-m", "unittest", "discover", "-v", "-s", "tests", "-t", ".",
            ],
            Project::Python {
                tests_dir: TestsDir::Plain,
                ..
            } => &["python3", "-m", "unittest", "discover", "-v", "-s", "tests"],
            Project::Python { .. } => &["python3", "-m", "unittest", "discover", "-v", "-s", "."],
            Project::Rust => &["cargo", "test", "--offline"],
            Project::Node => &["npm", "test", "--silent"],
        };
        words.iter().map(|w| w.to_string()).collect()
    }
}

/// What the error says when nothing is recognised.
pub(crate) const EXPECTED: &str = "expected pyproject.toml, Cargo.toml or package.json \
     (or setup.py, setup.cfg, requirements*.txt, pytest.ini, tox.ini, *.py files at the \
     top level or anywhere under tests/, or a top-level package with __init__.py)";

/// Detects the project at `root`. Strong markers (Python packaging files,
/// `Cargo.toml`, `package.json` with a test script) win over loose `*.py`
/// files, so a Node project with a helper script is still Node.
pub(crate) fn detect(root: &Path) -> Option<Project> {
    let has = |name: &str| root.join(name).is_file();
    let read = |name: &str| fs::read_to_string(root.join(name)).unwrap_or_default();
    let top = file_names(root);
    let tests_dir = root.join("tests");
    let tests = if !tests_dir.is_dir() {
        TestsDir::Absent
    } else if tests_dir.join("__init__.py").is_file() {
        TestsDir::Package
    } else {
        TestsDir::Plain
    };

    let requirements: Vec<&String> = top
        .iter()
        .filter(|n| n.starts_with("requirements") && n.ends_with(".txt"))
        .collect();
    let python_packaging = [
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "pytest.ini",
        "tox.ini",
    ]
    .iter()
    .any(|n| has(n))
        || !requirements.is_empty();

    let python = |()| {
        let uses_pytest = has("pytest.ini")
            || has("conftest.py")
            || tests_dir.join("conftest.py").is_file()
            || read("pyproject.toml").contains("pytest")
            || read("setup.cfg").contains("[tool:pytest]")
            || read("tox.ini").contains("[pytest]")
            || requirements.iter().any(|n| {
                read(n)
                    .lines()
                    .any(|l| l.trim_start().to_ascii_lowercase().starts_with("pytest"))
            });
        Project::Python {
            uses_pytest,
            tests_dir: tests,
        }
    };

    if python_packaging {
        return Some(python(()));
    }
    if has("Cargo.toml") {
        return Some(Project::Rust);
    }
    if has("package.json") && node_has_test_script(&read("package.json")) {
        return Some(Project::Node);
    }
    let loose_python = top.iter().any(|n| n.ends_with(".py"))
        || has_python_below(&tests_dir, MAX_TESTS_DEPTH)
        || dir_names(root)
            .iter()
            .any(|d| root.join(d).join("__init__.py").is_file());
    loose_python.then(|| python(()))
}

/// How deep under `tests/` a loose `*.py` file is looked for.
const MAX_TESTS_DEPTH: usize = 4;

/// Whether `dir` or a directory below it (at most `depth` levels) holds a
/// `*.py` file (`tests/acceptance/test_x.py`).
fn has_python_below(dir: &Path, depth: usize) -> bool {
    file_names(dir).iter().any(|n| n.ends_with(".py"))
        || (depth > 0
            && dir_names(dir)
                .iter()
                .any(|d| has_python_below(&dir.join(d), depth - 1)))
}

/// Names of the directories directly in `dir`, hidden ones left out (empty
/// when unreadable).
fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn node_has_test_script(package_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(package_json)
        .ok()
        .and_then(|v| v.get("scripts")?.get("test")?.as_str().map(str::to_owned))
        .is_some_and(|script| !script.trim().is_empty())
}

/// Names of the regular files directly in `dir` (empty when unreadable).
fn file_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[(&str, &str)], expected: Option<Project>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        assert_eq!(detect(dir.path()), expected, "{files:?}");
    }

    const UNITTEST: Option<Project> = Some(Project::Python {
        uses_pytest: false,
        tests_dir: TestsDir::Absent,
    });
    const UNITTEST_IN_TESTS: Option<Project> = Some(Project::Python {
        uses_pytest: false,
        tests_dir: TestsDir::Plain,
    });
    const UNITTEST_IN_TESTS_PACKAGE: Option<Project> = Some(Project::Python {
        uses_pytest: false,
        tests_dir: TestsDir::Package,
    });
    const PYTEST: Option<Project> = Some(Project::Python {
        uses_pytest: true,
        tests_dir: TestsDir::Absent,
    });

    #[test]
    fn python_projects() {
        check(&[("pyproject.toml", "[project]\nname='x'\n")], UNITTEST);
        check(&[("setup.py", "")], UNITTEST);
        check(&[("requirements-dev.txt", "requests\n")], UNITTEST);
        check(&[("app.py", "")], UNITTEST);
        check(&[("tests/test_app.py", "")], UNITTEST_IN_TESTS);
        check(&[("tests/acceptance/test_app.py", "")], UNITTEST_IN_TESTS);
        check(&[("app/__init__.py", ""), ("app/core.py", "")], UNITTEST);
        check(
            &[("tests/__init__.py", ""), ("tests/test_app.py", "")],
            UNITTEST_IN_TESTS_PACKAGE,
        );
        check(&[("pytest.ini", "[pytest]\n")], PYTEST);
        check(&[("pyproject.toml", "[tool.pytest.ini_options]\n")], PYTEST);
        check(&[("requirements.txt", "Pytest>=7\n")], PYTEST);
        check(&[("app.py", ""), ("conftest.py", "")], PYTEST);
    }

    #[test]
    fn rust_and_node_projects() {
        check(&[("Cargo.toml", "[package]\n")], Some(Project::Rust));
        check(
            &[("package.json", r#"{"scripts": {"test": "node test.js"}}"#)],
            Some(Project::Node),
        );
        // A helper script does not turn a Node project into Python.
        check(
            &[
                ("package.json", r#"{"scripts": {"test": "jest"}}"#),
                ("build.py", ""),
            ],
            Some(Project::Node),
        );
    }

    #[test]
    fn nothing_recognised() {
        check(&[], None);
        check(&[("README.md", "# hi")], None);
        check(
            &[("package.json", r#"{"scripts": {"build": "tsc"}}"#)],
            None,
        );
        check(&[("docs/conf.py", "")], None);
        // A package needs its `__init__.py`; tests are looked for in `tests/` only.
        check(&[("app/core.py", ""), ("docs/test_x.py", "")], None);
    }

    #[test]
    fn commands() {
        let py = |uses_pytest, tests_dir| Project::Python {
            uses_pytest,
            tests_dir,
        };
        let check = |p: Project, pytest: bool, want: &str| {
            assert_eq!(p.command(pytest).join(" "), want, "{p:?}");
        };
        check(py(true, TestsDir::Absent), true, "python3 -m pytest -q -rA");
        check(
            py(true, TestsDir::Package),
            false,
            "python3 -m unittest discover -v -s tests -t .",
        );
        check(
            py(false, TestsDir::Plain),
            true,
            "python3 -m unittest discover -v -s tests",
        );
        check(
            py(false, TestsDir::Absent),
            true,
            "python3 -m unittest discover -v -s .",
        );
        assert_eq!(
            Project::Rust.command(false).join(" "),
            "cargo test --offline"
        );
        assert_eq!(Project::Node.command(false).join(" "), "npm test --silent");
    }
}
