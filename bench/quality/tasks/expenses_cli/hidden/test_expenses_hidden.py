"""Hidden acceptance suite for the `expenses` command-line tool."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ExpensesCliTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.db = self.dir / "spend.json"

    def tearDown(self):
        self._tmp.cleanup()

    def cli(self, *args, use_option=True, env_db=None):
        env = {k: v for k, v in os.environ.items() if k not in ("EXPENSES_DB", "PYTHONPATH")}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONIOENCODING"] = "utf-8"
        if env_db is not None:
            env["EXPENSES_DB"] = str(env_db)
        argv = [sys.executable, "-m", "expenses"]
        if use_option:
            argv += ["--db", str(self.db)]
        return subprocess.run(
            argv + list(args), cwd=self.dir, env=env, capture_output=True,
            text=True, encoding="utf-8", timeout=60,
        )

    def ok(self, *args, **kwargs):
        result = self.cli(*args, **kwargs)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def stored(self, path=None):
        return json.loads((path or self.db).read_text(encoding="utf-8"))

    def assert_error(self, args, message):
        result = self.cli(*args)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"Error: {message}\n")
        self.assertEqual(result.stdout, "")

    # add

    def test_add_prints_the_expense(self):
        result = self.cli("add", "12.50", "food")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "Added 1: 12.50 food\n")
        self.assertEqual(result.stderr, "")

    def test_add_writes_the_pinned_file_format(self):
        self.ok("add", "12.50", "food", "--note", "lunch")
        self.assertEqual(self.stored(), {"next_id": 2, "expenses": [
            {"id": 1, "cents": 1250, "category": "food", "note": "lunch"}]})

    def test_note_is_empty_when_not_given(self):
        self.ok("add", "3", "bus")
        self.assertEqual(self.stored()["expenses"][0]["note"], "")

    def test_amount_forms_are_stored_in_cents(self):
        self.assertEqual(self.ok("add", "12", "a"), "Added 1: 12.00 a\n")
        self.assertEqual(self.ok("add", "12.5", "a"), "Added 2: 12.50 a\n")
        self.assertEqual(self.ok("add", "0.05", "a"), "Added 3: 0.05 a\n")
        self.assertEqual(self.ok("add", "1234.99", "a"), "Added 4: 1234.99 a\n")
        self.assertEqual(self.ok("add", "0.01", "a"), "Added 5: 0.01 a\n")
        self.assertEqual([e["cents"] for e in self.stored()["expenses"]], [1200, 1250, 5, 123499, 1])

    def test_category_is_stripped_and_lowercased(self):
        self.assertEqual(self.ok("add", "4.20", "  Coffee "), "Added 1: 4.20 coffee\n")
        self.assertEqual(self.stored()["expenses"][0]["category"], "coffee")

    def test_zero_amount_is_invalid(self):
        self.assert_error(["add", "0", "food"], "invalid amount: 0")
        self.assert_error(["add", "0.00", "food"], "invalid amount: 0.00")
        self.assertFalse(self.db.exists())

    def test_malformed_amounts_are_invalid(self):
        for amount in ["abc", "12.345", "1,50", ".5", "12.", "1e3", ""]:
            with self.subTest(amount=amount):
                self.assert_error(["add", amount, "food"], f"invalid amount: {amount}")
        self.assertFalse(self.db.exists())

    def test_invalid_amount_changes_nothing(self):
        self.ok("add", "1", "food")
        before = self.db.read_bytes()
        self.assert_error(["add", "ten", "food"], "invalid amount: ten")
        self.assertEqual(self.db.read_bytes(), before)

    def test_empty_category_is_rejected(self):
        self.assert_error(["add", "5", "   "], "category must not be empty")
        self.assertFalse(self.db.exists())

    def test_ids_are_not_reused(self):
        self.ok("add", "1", "a")
        self.ok("add", "2", "b")
        self.ok("remove", "2")
        self.assertEqual(self.ok("add", "3", "c"), "Added 3: 3.00 c\n")

    # list

    def test_list_without_a_file(self):
        self.assertEqual(self.ok("list"), "No expenses.\n")
        self.assertFalse(self.db.exists())

    def test_list_lines_with_and_without_notes(self):
        self.ok("add", "12.50", "food", "--note", "lunch")
        self.ok("add", "2", "transport")
        self.ok("add", "7.25", "food", "--note", "team dinner")
        self.assertEqual(self.ok("list"),
                         "1 12.50 food lunch\n2 2.00 transport\n3 7.25 food team dinner\n")

    def test_list_filters_by_category_ignoring_case(self):
        self.ok("add", "1", "food")
        self.ok("add", "2", "rent")
        self.ok("add", "3", "Food")
        self.assertEqual(self.ok("list", "--category", "FOOD"), "1 1.00 food\n3 3.00 food\n")

    def test_list_with_no_match(self):
        self.ok("add", "1", "food")
        self.assertEqual(self.ok("list", "--category", "rent"), "No expenses.\n")

    # total

    def test_total_of_everything(self):
        self.ok("add", "0.75", "a")
        self.ok("add", "0.50", "b")
        self.ok("add", "10", "a")
        self.assertEqual(self.ok("total"), "Total: 11.25\n")

    def test_total_by_category(self):
        self.ok("add", "0.75", "a")
        self.ok("add", "0.50", "b")
        self.ok("add", "10", "A")
        self.assertEqual(self.ok("total", "--category", "a"), "Total: 10.75\n")
        self.assertEqual(self.ok("total", "--category", "B"), "Total: 0.50\n")

    def test_total_when_nothing_matches(self):
        self.assertEqual(self.ok("total"), "Total: 0.00\n")
        self.ok("add", "3", "a")
        self.assertEqual(self.ok("total", "--category", "zzz"), "Total: 0.00\n")

    # summary

    def test_summary_largest_first(self):
        self.ok("add", "5", "food")
        self.ok("add", "100", "rent")
        self.ok("add", "20.05", "fun")
        self.ok("add", "0.95", "food")
        self.assertEqual(self.ok("summary"), "rent: 100.00\nfun: 20.05\nfood: 5.95\n")

    def test_summary_ties_by_category_name(self):
        self.ok("add", "2", "zoo")
        self.ok("add", "2", "art")
        self.ok("add", "1", "mid")
        self.ok("add", "1", "bar")
        self.assertEqual(self.ok("summary"), "art: 2.00\nzoo: 2.00\nbar: 1.00\nmid: 1.00\n")

    def test_summary_when_empty(self):
        self.assertEqual(self.ok("summary"), "No expenses.\n")

    # remove

    def test_remove_prints_and_removes(self):
        self.ok("add", "12.50", "food", "--note", "lunch")
        self.ok("add", "3", "bus")
        self.assertEqual(self.ok("remove", "1"), "Removed 1: 12.50 food\n")
        self.assertEqual(self.stored(), {"next_id": 3, "expenses": [
            {"id": 2, "cents": 300, "category": "bus", "note": ""}]})
        self.assertEqual(self.ok("total"), "Total: 3.00\n")

    def test_remove_unknown_id(self):
        self.ok("add", "1", "a")
        before = self.db.read_bytes()
        self.assert_error(["remove", "9"], "no expense with id 9")
        self.assertEqual(self.db.read_bytes(), before)

    # storage location and existing data

    def test_environment_variable_chooses_the_file(self):
        env_db = self.dir / "env.json"
        self.ok("add", "1", "a", use_option=False, env_db=env_db)
        self.assertEqual(self.stored(env_db)["expenses"][0]["cents"], 100)
        self.assertFalse((self.dir / "expenses.json").exists())

    def test_option_wins_over_environment_variable(self):
        env_db = self.dir / "env.json"
        self.ok("add", "1", "a", env_db=env_db)
        self.assertTrue(self.db.exists())
        self.assertFalse(env_db.exists())

    def test_default_file_in_the_current_directory(self):
        self.ok("add", "1", "a", use_option=False)
        self.assertEqual(self.stored(self.dir / "expenses.json")["next_id"], 2)
        self.assertEqual(self.ok("total", use_option=False), "Total: 1.00\n")

    def test_existing_file_is_read(self):
        self.db.write_text(json.dumps({"next_id": 8, "expenses": [
            {"id": 3, "cents": 999, "category": "books", "note": "novel"},
            {"id": 5, "cents": 1, "category": "misc", "note": ""},
        ]}), encoding="utf-8")
        self.assertEqual(self.ok("list"), "3 9.99 books novel\n5 0.01 misc\n")
        self.assertEqual(self.ok("add", "1", "misc"), "Added 8: 1.00 misc\n")
        self.assertEqual(self.ok("summary"), "books: 9.99\nmisc: 1.01\n")
        self.assertEqual(self.ok("remove", "5"), "Removed 5: 0.01 misc\n")

    # usage errors

    def test_usage_errors_exit_2(self):
        self.assertEqual(self.cli().returncode, 2)
        self.assertEqual(self.cli("spend", "1").returncode, 2)
        self.assertEqual(self.cli("add", "1").returncode, 2)
        self.assertEqual(self.cli("remove", "x").returncode, 2)
        self.assertFalse(self.db.exists())


if __name__ == "__main__":
    unittest.main()
