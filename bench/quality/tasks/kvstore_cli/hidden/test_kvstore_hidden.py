"""Hidden acceptance suite for the `kvstore` command-line tool."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class KvStoreCliTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.store = self.dir / "data.json"

    def tearDown(self):
        self._tmp.cleanup()

    def kv(self, *args, use_option=True, env_store=None):
        env = {k: v for k, v in os.environ.items() if k not in ("KVSTORE_PATH", "PYTHONPATH")}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONIOENCODING"] = "utf-8"
        if env_store is not None:
            env["KVSTORE_PATH"] = str(env_store)
        argv = [sys.executable, "-m", "kvstore"]
        if use_option:
            argv += ["--store", str(self.store)]
        return subprocess.run(
            argv + list(args), cwd=self.dir, env=env, capture_output=True,
            text=True, encoding="utf-8", timeout=60,
        )

    def ok(self, *args, **kwargs):
        result = self.kv(*args, **kwargs)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def stored(self, path=None):
        return json.loads((path or self.store).read_text(encoding="utf-8"))

    def assert_error(self, args, message):
        result = self.kv(*args)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"Error: {message}\n")
        self.assertEqual(result.stdout, "")

    def write(self, data):
        self.store.write_text(json.dumps(data), encoding="utf-8")

    # set / get

    def test_set_prints_nothing_and_writes_the_pinned_format(self):
        result = self.kv("set", "name", "Ada")
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))
        self.assertEqual(self.stored(), {"name": "Ada"})

    def test_get_prints_the_value(self):
        self.ok("set", "name", "Ada Lovelace")
        self.assertEqual(self.ok("get", "name"), "Ada Lovelace\n")

    def test_set_replaces_and_keeps_other_keys(self):
        self.ok("set", "a", "1")
        self.ok("set", "b", "2")
        self.ok("set", "a", "one")
        self.assertEqual(self.stored(), {"a": "one", "b": "2"})

    def test_empty_and_unicode_values(self):
        self.ok("set", "empty", "")
        self.ok("set", "city", "Zürich")
        self.assertEqual(self.ok("get", "empty"), "\n")
        self.assertEqual(self.ok("get", "city"), "Zürich\n")
        self.assertEqual(self.stored(), {"empty": "", "city": "Zürich"})

    def test_get_missing_key_is_an_error(self):
        self.ok("set", "a", "1")
        self.assert_error(["get", "b"], "key not found: b")

    def test_get_missing_key_with_default(self):
        self.assertEqual(self.ok("get", "colour", "--default", "blue"), "blue\n")
        self.assertFalse(self.store.exists())

    def test_get_existing_key_ignores_default(self):
        self.ok("set", "colour", "red")
        self.assertEqual(self.ok("get", "colour", "--default", "blue"), "red\n")

    # delete

    def test_delete_removes_the_key(self):
        self.ok("set", "a", "1")
        self.ok("set", "b", "2")
        result = self.kv("delete", "a")
        self.assertEqual((result.returncode, result.stdout), (0, ""))
        self.assertEqual(self.stored(), {"b": "2"})
        self.assert_error(["get", "a"], "key not found: a")

    def test_delete_missing_key_is_an_error(self):
        self.ok("set", "a", "1")
        before = self.store.read_bytes()
        self.assert_error(["delete", "zz"], "key not found: zz")
        self.assertEqual(self.store.read_bytes(), before)

    # keys / count

    def test_keys_sorted(self):
        for key in ["pear", "apple", "fig"]:
            self.ok("set", key, "x")
        self.assertEqual(self.ok("keys"), "apple\nfig\npear\n")

    def test_keys_with_prefix(self):
        for key in ["user.2", "user.1", "users", "admin.user"]:
            self.ok("set", key, "x")
        self.assertEqual(self.ok("keys", "--prefix", "user."), "user.1\nuser.2\n")
        self.assertEqual(self.ok("keys", "--prefix", "nobody"), "")

    def test_keys_and_count_on_a_missing_file(self):
        self.assertEqual(self.ok("keys"), "")
        self.assertEqual(self.ok("count"), "0\n")
        self.assertFalse(self.store.exists())

    def test_count(self):
        self.ok("set", "a", "1")
        self.ok("set", "b", "2")
        self.ok("set", "a", "3")
        self.assertEqual(self.ok("count"), "2\n")

    # incr

    def test_incr_missing_key_starts_at_zero(self):
        self.assertEqual(self.ok("incr", "visits"), "1\n")
        self.assertEqual(self.stored(), {"visits": "1"})
        self.assertEqual(self.ok("incr", "visits"), "2\n")

    def test_incr_by_amount(self):
        self.ok("set", "n", "10")
        self.assertEqual(self.ok("incr", "n", "--by", "5"), "15\n")
        self.assertEqual(self.ok("get", "n"), "15\n")

    def test_incr_by_negative_amount(self):
        self.ok("set", "n", "2")
        self.assertEqual(self.ok("incr", "n", "--by", "-3"), "-1\n")
        self.assertEqual(self.ok("incr", "n", "--by", "-10"), "-11\n")
        self.assertEqual(self.ok("incr", "n"), "-10\n")

    def test_incr_by_zero(self):
        self.ok("set", "n", "7")
        self.assertEqual(self.ok("incr", "n", "--by", "0"), "7\n")

    def test_incr_rejects_non_integer_values(self):
        for value in ["abc", "1.5", "", "7x"]:
            with self.subTest(value=value):
                self.ok("set", "n", value)
                before = self.store.read_bytes()
                self.assert_error(["incr", "n"], "not an integer: n")
                self.assertEqual(self.store.read_bytes(), before)

    # keys' validity

    def test_invalid_keys_are_rejected_by_every_command(self):
        for key in ["a b", "a/b", "", "x" * 65, "k=v"]:
            for args in (["set", key, "v"], ["get", key], ["delete", key], ["incr", key]):
                with self.subTest(args=args):
                    self.assert_error(args, f"invalid key: {key}")
        self.assertFalse(self.store.exists())

    def test_longest_key_and_every_allowed_character(self):
        long_key = "k" * 64
        self.ok("set", long_key, "1")
        self.ok("set", "Az09_.-", "2")
        self.assertEqual(self.ok("get", long_key), "1\n")
        self.assertEqual(self.ok("get", "Az09_.-"), "2\n")

    def test_invalid_key_is_reported_before_missing_key(self):
        self.assert_error(["get", "bad key", "--default", "x"], "invalid key: bad key")

    # storage location and existing data

    def test_environment_variable_chooses_the_file(self):
        env_store = self.dir / "env.json"
        self.ok("set", "a", "1", use_option=False, env_store=env_store)
        self.assertEqual(self.stored(env_store), {"a": "1"})
        self.assertFalse((self.dir / "kvstore.json").exists())

    def test_option_wins_over_environment_variable(self):
        env_store = self.dir / "env.json"
        self.ok("set", "a", "1", env_store=env_store)
        self.assertEqual(self.stored(), {"a": "1"})
        self.assertFalse(env_store.exists())

    def test_default_file_in_the_current_directory(self):
        self.ok("set", "a", "1", use_option=False)
        self.assertEqual(self.stored(self.dir / "kvstore.json"), {"a": "1"})
        self.assertEqual(self.ok("get", "a", use_option=False), "1\n")

    def test_existing_file_is_read(self):
        self.write({"b": "2", "a": "-4", "c": "x"})
        self.assertEqual(self.ok("keys"), "a\nb\nc\n")
        self.assertEqual(self.ok("count"), "3\n")
        self.assertEqual(self.ok("incr", "a"), "-3\n")
        self.assertEqual(self.ok("get", "c"), "x\n")

    # usage errors

    def test_usage_errors_exit_2(self):
        self.assertEqual(self.kv().returncode, 2)
        self.assertEqual(self.kv("put", "a", "1").returncode, 2)
        self.assertEqual(self.kv("set", "a").returncode, 2)
        self.assertEqual(self.kv("incr", "a", "--by", "two").returncode, 2)
        self.assertFalse(self.store.exists())


if __name__ == "__main__":
    unittest.main()
