"""Mutation score of an acceptance suite, run inside the sandbox.

Usage: python3 -B .agentry/mutation_run.py --suite tests/acceptance
           [--max 20] [--budget-s 90] [--exclude TEST_ID ...]

Lists the mutants of the repository's code (`mutate.py`, beside this
file: every `.py` file outside test directories), takes at most `--max` of
them spread evenly over the list, and runs the suite against each, one at
a time, restoring the file after each. A mutant is killed when the suite
fails, errs or hangs (past five times the unmutated run's time, at least 5
seconds). Stops early when `--budget-s` runs out. Prints one line,
`AGENTRY-MUTATION {json}`: the mutants found, run and killed, and up to 10
that survived (where, and what changed). Tests named by `--exclude`
(unittest ids: tests a dispute set aside, which no longer decide) are left
out of every run.
"""

import argparse
import json
import os
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutate  # noqa: E402

EXCLUDE = ("tests", "test", "hidden_tests", ".agentry")


def without(tests, exclude):
    """`tests` (a loaded suite) less the tests whose id is in `exclude`."""
    kept = unittest.TestSuite()
    for test in tests:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(without(test, exclude))
        elif test.id() not in exclude:
            kept.addTest(test)
    return kept


def run_suite(suite, timeout, exclude=frozenset()):
    """(passed, seconds); a run past `timeout` did not pass.

    The suite runs in a forked child of this process, which has imported
    `unittest` but none of the repository's code: each child loads the code
    as it is on disk now (a mutant), and nothing it does reaches the next.
    Forking saves an interpreter start per mutant."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            sys.dont_write_bytecode = True
            sys.path.insert(0, os.getcwd())
            tests = without(unittest.defaultTestLoader.discover(suite, top_level_dir="."), exclude)
            result = unittest.TextTestRunner(stream=open(os.devnull, "w"), verbosity=0).run(tests)
            code = 0 if result.wasSuccessful() and result.testsRun > 0 else 1
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    deadline = started + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            passed = os.waitstatus_to_exitcode(status) == 0
            break
        if time.monotonic() > deadline:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            passed = False
            break
        time.sleep(0.005)
    return passed, time.monotonic() - started


def spread(items, most):
    if len(items) <= most:
        return list(items)
    return [items[(i * len(items)) // most] for i in range(most)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", required=True)
    parser.add_argument("--max", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=90.0)
    parser.add_argument("--exclude", action="append", default=[])
    args = parser.parse_args()
    exclude = frozenset(args.exclude)
    started = time.monotonic()
    root = Path(".")
    report = {"found": 0, "run": 0, "killed": 0, "baseline_passed": False, "survived": [], "stopped_early": False}
    try:
        mutants = mutate.tree_mutants(root, EXCLUDE)
    except SyntaxError as error:
        report["error"] = f"the code does not parse: {error}"
        print("AGENTRY-MUTATION " + json.dumps(report))
        return
    report["found"] = len(mutants)
    passed, seconds = run_suite(args.suite, timeout=max(30.0, args.budget_s / 3), exclude=exclude)
    report["baseline_passed"] = passed
    if not passed:
        print("AGENTRY-MUTATION " + json.dumps(report))
        return
    timeout = max(5.0, 5 * seconds)
    for mutant in spread(mutants, args.max):
        if time.monotonic() - started + timeout > args.budget_s:
            report["stopped_early"] = True
            break
        target = root / mutant.file
        original = target.read_text(encoding="utf-8")
        try:
            mutate.write_mutant(root, mutant)
            survived, _ = run_suite(args.suite, timeout, exclude)
        finally:
            target.write_text(original, encoding="utf-8")
        report["run"] += 1
        if survived:
            if len(report["survived"]) < 10:
                report["survived"].append(
                    {"file": mutant.file, "line": mutant.lineno, "operator": mutant.operator, "change": mutant.description}
                )
        else:
            report["killed"] += 1
    print("AGENTRY-MUTATION " + json.dumps(report))


main()
