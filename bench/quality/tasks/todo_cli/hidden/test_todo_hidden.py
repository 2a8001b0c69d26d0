"""Hidden acceptance suite for the `todo` command-line tool."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class TodoCliTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.file = self.dir / "tasks.json"

    def tearDown(self):
        self._tmp.cleanup()

    def todo(self, *args, use_option=True, env_file=None):
        env = {k: v for k, v in os.environ.items() if k not in ("TODO_FILE", "PYTHONPATH")}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONIOENCODING"] = "utf-8"
        if env_file is not None:
            env["TODO_FILE"] = str(env_file)
        argv = [sys.executable, "-m", "todo"]
        if use_option:
            argv += ["--file", str(self.file)]
        return subprocess.run(
            argv + list(args), cwd=self.dir, env=env, capture_output=True,
            text=True, encoding="utf-8", timeout=60,
        )

    def ok(self, *args, **kwargs):
        result = self.todo(*args, **kwargs)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def stored(self, path=None):
        return json.loads((path or self.file).read_text(encoding="utf-8"))

    # add

    def test_add_prints_id_and_title(self):
        result = self.todo("add", "Buy milk")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "Added 1: Buy milk\n")
        self.assertEqual(result.stderr, "")

    def test_add_writes_the_pinned_file_format(self):
        self.ok("add", "Buy milk")
        self.assertEqual(
            self.stored(),
            {"next_id": 2, "tasks": [{"id": 1, "title": "Buy milk", "done": False}]},
        )

    def test_ids_go_up_by_one(self):
        self.assertEqual(self.ok("add", "a"), "Added 1: a\n")
        self.assertEqual(self.ok("add", "b"), "Added 2: b\n")
        self.assertEqual(self.ok("add", "c"), "Added 3: c\n")
        self.assertEqual([t["id"] for t in self.stored()["tasks"]], [1, 2, 3])

    def test_deleted_id_is_never_reused(self):
        self.ok("add", "a")
        self.ok("add", "b")
        self.ok("delete", "2")
        self.assertEqual(self.ok("add", "c"), "Added 3: c\n")
        self.assertEqual(self.stored()["next_id"], 4)

    def test_title_is_stored_stripped(self):
        self.assertEqual(self.ok("add", "  Call mom  "), "Added 1: Call mom\n")
        self.assertEqual(self.stored()["tasks"][0]["title"], "Call mom")

    def test_title_with_spaces_and_accents_round_trips(self):
        self.ok("add", "Café au lait, twice")
        self.assertEqual(self.ok("list"), "1 [ ] Café au lait, twice\n")

    def test_empty_title_is_rejected(self):
        result = self.todo("add", "")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: title must not be empty\n")
        self.assertEqual(result.stdout, "")
        self.assertFalse(self.file.exists())

    def test_whitespace_title_is_rejected_and_changes_nothing(self):
        self.ok("add", "a")
        before = self.file.read_bytes()
        result = self.todo("add", "   ")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: title must not be empty\n")
        self.assertEqual(self.file.read_bytes(), before)

    # list

    def test_list_without_a_file_prints_no_tasks(self):
        result = self.todo("list")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "No tasks.\n")
        self.assertFalse(self.file.exists())

    def test_list_shows_open_tasks_in_id_order(self):
        self.ok("add", "first")
        self.ok("add", "second")
        self.assertEqual(self.ok("list"), "1 [ ] first\n2 [ ] second\n")

    def test_list_hides_done_tasks(self):
        self.ok("add", "first")
        self.ok("add", "second")
        self.ok("done", "1")
        self.assertEqual(self.ok("list"), "2 [ ] second\n")

    def test_list_all_shows_done_tasks_marked(self):
        self.ok("add", "first")
        self.ok("add", "second")
        self.ok("done", "1")
        self.assertEqual(self.ok("list", "--all"), "1 [x] first\n2 [ ] second\n")

    def test_list_prints_no_tasks_when_all_are_done(self):
        self.ok("add", "first")
        self.ok("done", "1")
        self.assertEqual(self.ok("list"), "No tasks.\n")
        self.assertEqual(self.ok("list", "--all"), "1 [x] first\n")

    def test_list_all_on_an_empty_list(self):
        self.assertEqual(self.ok("list", "--all"), "No tasks.\n")

    # done

    def test_done_prints_and_persists(self):
        self.ok("add", "Water plants")
        self.assertEqual(self.ok("done", "1"), "Completed 1: Water plants\n")
        self.assertEqual(self.stored()["tasks"], [{"id": 1, "title": "Water plants", "done": True}])

    def test_done_twice_is_allowed(self):
        self.ok("add", "a")
        self.ok("done", "1")
        self.assertEqual(self.ok("done", "1"), "Completed 1: a\n")
        self.assertTrue(self.stored()["tasks"][0]["done"])

    def test_done_leaves_other_tasks_alone(self):
        self.ok("add", "a")
        self.ok("add", "b")
        self.ok("add", "c")
        self.ok("done", "2")
        self.assertEqual([t["done"] for t in self.stored()["tasks"]], [False, True, False])

    def test_done_unknown_id_is_an_error(self):
        self.ok("add", "a")
        before = self.file.read_bytes()
        result = self.todo("done", "7")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: no task with id 7\n")
        self.assertEqual(result.stdout, "")
        self.assertEqual(self.file.read_bytes(), before)

    # delete

    def test_delete_prints_and_removes(self):
        self.ok("add", "a")
        self.ok("add", "b")
        self.assertEqual(self.ok("delete", "1"), "Deleted 1: a\n")
        self.assertEqual(self.stored(), {"next_id": 3, "tasks": [{"id": 2, "title": "b", "done": False}]})
        self.assertEqual(self.ok("list", "--all"), "2 [ ] b\n")

    def test_delete_a_done_task(self):
        self.ok("add", "a")
        self.ok("done", "1")
        self.assertEqual(self.ok("delete", "1"), "Deleted 1: a\n")
        self.assertEqual(self.ok("list", "--all"), "No tasks.\n")

    def test_delete_unknown_id_is_an_error(self):
        result = self.todo("delete", "3")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: no task with id 3\n")
        self.assertFalse(self.file.exists())

    def test_deleted_task_cannot_be_completed(self):
        self.ok("add", "a")
        self.ok("delete", "1")
        result = self.todo("done", "1")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: no task with id 1\n")

    # storage location

    def test_environment_variable_chooses_the_file(self):
        env_file = self.dir / "from-env.json"
        self.ok("add", "a", use_option=False, env_file=env_file)
        self.assertEqual(self.stored(env_file)["tasks"][0]["title"], "a")
        self.assertFalse((self.dir / "todo.json").exists())

    def test_option_wins_over_environment_variable(self):
        env_file = self.dir / "from-env.json"
        self.ok("add", "a", env_file=env_file)
        self.assertTrue(self.file.exists())
        self.assertFalse(env_file.exists())

    def test_default_file_is_todo_json_in_the_current_directory(self):
        self.ok("add", "a", use_option=False)
        self.assertEqual(self.stored(self.dir / "todo.json")["tasks"][0]["title"], "a")
        self.assertEqual(self.ok("list", use_option=False), "1 [ ] a\n")

    def test_existing_file_is_read(self):
        self.file.write_text(json.dumps({"next_id": 10, "tasks": [
            {"id": 4, "title": "old", "done": True},
            {"id": 7, "title": "older", "done": False},
        ]}), encoding="utf-8")
        self.assertEqual(self.ok("list"), "7 [ ] older\n")
        self.assertEqual(self.ok("list", "--all"), "4 [x] old\n7 [ ] older\n")
        self.assertEqual(self.ok("add", "new"), "Added 10: new\n")
        self.assertEqual(self.ok("done", "7"), "Completed 7: older\n")

    # usage errors

    def test_no_command_is_a_usage_error(self):
        self.assertEqual(self.todo().returncode, 2)

    def test_unknown_command_is_a_usage_error(self):
        self.assertEqual(self.todo("purge").returncode, 2)

    def test_missing_id_is_a_usage_error(self):
        self.assertEqual(self.todo("done").returncode, 2)

    def test_non_integer_id_is_a_usage_error(self):
        self.ok("add", "a")
        self.assertEqual(self.todo("delete", "one").returncode, 2)
        self.assertEqual(len(self.stored()["tasks"]), 1)


if __name__ == "__main__":
    unittest.main()
