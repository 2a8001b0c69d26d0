#!/usr/bin/env python3
"""Self-check of the quality development set (see README.md).

For every task under `tasks/`:

- `task.toml` has the fields the benchmark reads, and `requirement.md` is
  the length of a real ticket (120-350 words);
- ordinary tasks: the hidden suite has 20-40 test methods, passes 100%
  against `reference/` when run the benchmark's way (the reference copied
  as a checkout, `hidden/` copied into it as `hidden_tests/`, the task's
  `test_command` run from the checkout root), and kills at least 80% of the
  reference's mutants (`mutate.py`); a mutant that makes the suite fail,
  error or run past its timeout is killed, every other one survives
  (equivalent mutants included);
- contradictory tasks: `expected = "failure"`, a `contradiction` line,
  `reference/` holding only `CONTRADICTION.md`, and a hidden suite that
  contains the tests named in `contradicting_tests`.

Standard library only. Exit status 0 when every check holds.

    python3 bench/quality/check_set.py                 # everything
    python3 bench/quality/check_set.py --task todo_cli --survivors
    python3 bench/quality/check_set.py --no-mutants    # quick: suites only
"""

from __future__ import annotations

import argparse
import ast
import collections
import concurrent.futures
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mutate  # noqa: E402

TASKS_DIR = HERE / "tasks"
HIDDEN_DIR = "hidden_tests"  # where the hidden suite goes inside a checkout
CATEGORIES = ("cli_json", "numeric", "text", "stateful", "contradictory")
MIN_TESTS, MAX_TESTS = 20, 40
MIN_SCORE = 0.80
MIN_WORDS, MAX_WORDS = 120, 350
REQUIRED_KEYS = ("id", "title", "category", "repository", "package", "test_command", "expected")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass
class RunResult:
    returncode: int | None  # None when it timed out
    ran: int | None  # from unittest's "Ran N tests"
    elapsed: float
    output: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


@dataclass
class TaskReport:
    id: str
    category: str
    problems: list[str] = field(default_factory=list)
    tests: int | None = None
    mutants: int = 0
    killed: int = 0
    survivors: list[mutate.Mutant] = field(default_factory=list)
    by_operator: dict[str, list[int]] = field(default_factory=dict)  # op -> [killed, total]
    seconds: float = 0.0

    @property
    def score(self) -> float | None:
        return self.killed / self.mutants if self.mutants else None


def load_task(task_dir: Path) -> dict:
    with open(task_dir / "task.toml", "rb") as f:
        return tomllib.load(f)


def count_test_methods(hidden: Path) -> int:
    """Test methods (`test*` defined in a class body) in `hidden/test*.py`."""
    count = 0
    for path in sorted(hidden.glob("test*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                count += sum(
                    1
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and item.name.startswith("test")
                )
    return count


def test_method_names(hidden: Path) -> set[str]:
    names = set()
    for path in sorted(hidden.glob("test*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                        names.add(f"{node.name}.{item.name}")
    return names


def make_checkout(task_dir: Path, dest: Path) -> None:
    """`dest` becomes what the benchmark runs the suite in: the reference
    solution as a checkout, with the hidden suite at `hidden_tests/`."""
    shutil.copytree(task_dir / "reference", dest, ignore=_IGNORE)
    shutil.copytree(task_dir / "hidden", dest / HIDDEN_DIR, ignore=_IGNORE)


def command_argv(task: dict, failfast: bool = False) -> list[str]:
    argv = shlex.split(task["test_command"])
    if argv and argv[0] in ("python3", "python"):
        argv[0] = sys.executable  # the interpreter running this check
    if failfast and argv[1:4] == ["-m", "unittest", "discover"]:
        argv.append("--failfast")
    return argv


def run_suite(checkout: Path, argv: list[str], timeout: float) -> RunResult:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=checkout,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a timeout can end the CLI processes the tests start
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        returncode: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        returncode = None
    elapsed = time.monotonic() - start
    ran = re.findall(r"^Ran (\d+) tests? in ", output, re.MULTILINE)
    return RunResult(returncode, int(ran[-1]) if ran else None, elapsed, output)


def check_common(task_dir: Path, task: dict, report: TaskReport) -> None:
    for key in REQUIRED_KEYS:
        if key not in task:
            report.problems.append(f"task.toml lacks `{key}`")
    if task.get("id") != task_dir.name:
        report.problems.append(f"task.toml id {task.get('id')!r} is not the directory name")
    if task.get("category") not in CATEGORIES:
        report.problems.append(f"unknown category {task.get('category')!r}")
    requirement = task_dir / "requirement.md"
    if not requirement.is_file():
        report.problems.append("no requirement.md")
    else:
        words = len(requirement.read_text(encoding="utf-8").split())
        if not MIN_WORDS <= words <= MAX_WORDS:
            report.problems.append(f"requirement.md has {words} words (want {MIN_WORDS}-{MAX_WORDS})")
    hidden = task_dir / "hidden"
    if not (hidden / "__init__.py").is_file():
        report.problems.append("hidden/ lacks __init__.py (unittest discovery needs it)")
    if not list(hidden.glob("test*.py")):
        report.problems.append("hidden/ has no test*.py")


def check_contradictory(task_dir: Path, task: dict, report: TaskReport) -> None:
    if task.get("expected") != "failure":
        report.problems.append('a contradictory task must say expected = "failure"')
    if not str(task.get("contradiction", "")).strip():
        report.problems.append("no `contradiction` line in task.toml")
    reference = sorted(p.relative_to(task_dir / "reference").as_posix()
                       for p in (task_dir / "reference").rglob("*") if p.is_file())
    if reference != ["CONTRADICTION.md"]:
        report.problems.append(f"reference/ must hold only CONTRADICTION.md, has {reference}")
    names = test_method_names(task_dir / "hidden")
    report.tests = len(names)
    wanted = task.get("contradicting_tests", [])
    if len(wanted) < 2:
        report.problems.append("`contradicting_tests` must name at least two tests")
    for name in wanted:
        if name not in names:
            report.problems.append(f"contradicting test {name} is not in hidden/")


def check_ordinary(task_dir: Path, task: dict, report: TaskReport, args) -> None:
    if task.get("expected") != "success":
        report.problems.append('an ordinary task must say expected = "success"')
    package = task.get("package", "")
    if not (task_dir / "reference" / package / "__init__.py").is_file():
        report.problems.append(f"reference/{package}/__init__.py is missing")
    report.tests = count_test_methods(task_dir / "hidden")
    if not MIN_TESTS <= report.tests <= MAX_TESTS:
        report.problems.append(f"{report.tests} test methods (want {MIN_TESTS}-{MAX_TESTS})")

    with tempfile.TemporaryDirectory(prefix=f"devset-{task_dir.name}-") as tmp:
        checkout = Path(tmp) / "checkout"
        make_checkout(task_dir, checkout)
        base = run_suite(checkout, command_argv(task), args.suite_timeout)
        if base.timed_out or base.returncode != 0 or base.ran != report.tests:
            report.problems.append(
                f"the hidden suite does not pass on the reference (exit {base.returncode}, "
                f"ran {base.ran}, counted {report.tests})"
            )
            if args.verbose:
                print(base.output, file=sys.stderr)
            return
        if args.no_mutants:
            return

        mutants = mutate.tree_mutants(task_dir / "reference")
        timeout = max(args.mutant_timeout, 5 * base.elapsed)

        # Control: the reference regenerated by `ast.unparse` with no change
        # must still pass, or every mutant would count as killed.
        control = Path(tmp) / "control"
        make_checkout(task_dir, control)
        for path in mutate.python_files(task_dir / "reference"):
            target = control / path.relative_to(task_dir / "reference")
            target.write_text(ast.unparse(ast.parse(path.read_text(encoding="utf-8"))) + "\n", encoding="utf-8")
        result = run_suite(control, command_argv(task), timeout)
        if result.returncode != 0 or result.ran != report.tests:
            report.problems.append("the suite fails on the reference as regenerated by ast.unparse")
            return
        argv = command_argv(task, failfast=True)

        def run_one(i_mutant):
            i, m = i_mutant
            dest = Path(tmp) / f"mutant-{i}"
            make_checkout(task_dir, dest)
            mutate.write_mutant(dest, m)
            result = run_suite(dest, argv, timeout)
            shutil.rmtree(dest, ignore_errors=True)
            survived = result.returncode == 0 and result.ran == report.tests
            return m, not survived

        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for m, killed in pool.map(run_one, enumerate(mutants)):
                report.mutants += 1
                stats = report.by_operator.setdefault(m.operator, [0, 0])
                stats[1] += 1
                if killed:
                    report.killed += 1
                    stats[0] += 1
                else:
                    report.survivors.append(m)
        if report.mutants == 0:
            report.problems.append("the reference has no mutants")
        elif report.score < MIN_SCORE:
            report.problems.append(f"mutation score {report.score:.0%} is under {MIN_SCORE:.0%}")


def check_task(task_dir: Path, args) -> TaskReport:
    start = time.monotonic()
    try:
        task = load_task(task_dir)
    except (OSError, tomllib.TOMLDecodeError) as e:
        report = TaskReport(task_dir.name, "?")
        report.problems.append(f"task.toml: {e}")
        return report
    report = TaskReport(task_dir.name, task.get("category", "?"))
    check_common(task_dir, task, report)
    if report.category == "contradictory":
        check_contradictory(task_dir, task, report)
    else:
        check_ordinary(task_dir, task, report, args)
    report.seconds = time.monotonic() - start
    return report


def print_summary(reports: list[TaskReport]) -> None:
    print()
    print("| task | category | tests | mutants | killed | score | check |")
    print("|---|---|---|---|---|---|---|")
    for r in reports:
        score = f"{r.score:.1%}" if r.score is not None else "—"
        mutants = str(r.mutants) if r.mutants else "—"
        killed = str(r.killed) if r.mutants else "—"
        print(f"| {r.id} | {r.category} | {r.tests} | {mutants} | {killed} | {score} | "
              f"{'ok' if not r.problems else 'FAIL'} |")
    total = sum(r.mutants for r in reports)
    killed = sum(r.killed for r in reports)
    if total:
        ops: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for r in reports:
            for op, (k, t) in r.by_operator.items():
                ops[op][0] += k
                ops[op][1] += t
        print()
        print(f"All mutants: {killed}/{total} killed ({killed / total:.1%}). By operator: "
              + ", ".join(f"{op} {k}/{t}" for op, (k, t) in sorted(ops.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", metavar="ID", help="check only this task (repeatable)")
    parser.add_argument("--no-mutants", action="store_true", help="skip mutation testing")
    parser.add_argument("--survivors", action="store_true", help="list the mutants that survived")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    parser.add_argument("--suite-timeout", type=float, default=300.0, help="seconds for the reference run")
    parser.add_argument("--mutant-timeout", type=float, default=20.0,
                        help="at least this many seconds per mutant (else 5x the reference run)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the output of failing reference runs")
    args = parser.parse_args(argv)

    task_dirs = sorted(p for p in TASKS_DIR.iterdir() if (p / "task.toml").is_file())
    if args.task:
        unknown = set(args.task) - {p.name for p in task_dirs}
        if unknown:
            parser.error(f"no such task: {', '.join(sorted(unknown))}")
        task_dirs = [p for p in task_dirs if p.name in args.task]

    reports = []
    for task_dir in task_dirs:
        report = check_task(task_dir, args)
        reports.append(report)
        score = f", {report.killed}/{report.mutants} mutants killed ({report.score:.1%})" if report.mutants else ""
        status = "ok" if not report.problems else "FAIL"
        print(f"{report.id} [{report.category}]: {report.tests} tests{score} in {report.seconds:.0f}s: {status}",
              flush=True)
        for problem in report.problems:
            print(f"  - {problem}", flush=True)
        if args.survivors:
            for m in report.survivors:
                print(f"  survived: {m}", flush=True)
    print_summary(reports)
    failed = [r.id for r in reports if r.problems]
    print()
    print(f"{len(reports) - len(failed)}/{len(reports)} tasks pass their checks"
          + (f"; failing: {', '.join(failed)}" if failed else "."))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
