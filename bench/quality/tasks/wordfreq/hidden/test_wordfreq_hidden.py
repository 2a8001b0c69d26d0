"""Hidden acceptance suite for the `wordfreq` library and command line."""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from wordfreq import count_words, tokenize, top_words

ROOT = Path(__file__).resolve().parents[1]
TWELVE = "a b b c c c d d d d e f g h i j k l"


class TokenizeTest(unittest.TestCase):
    def test_the_example(self):
        self.assertEqual(tokenize("Don't stop -- 'Rock'n'roll' x-ray!"),
                         ["don't", "stop", "rock'n'roll", "x", "ray"])

    def test_lowercase_and_punctuation(self):
        self.assertEqual(tokenize("Hello, WORLD! hello."), ["hello", "world", "hello"])

    def test_digits_belong_to_words(self):
        self.assertEqual(tokenize("Route 66 opened in 1926; R2D2"), ["route", "66", "opened", "in", "1926", "r2d2"])

    def test_apostrophes_at_the_ends_are_removed(self):
        self.assertEqual(tokenize("''' 'tis the dogs' ' it''s"), ["tis", "the", "dogs", "it''s"])

    def test_every_other_character_separates(self):
        self.assertEqual(tokenize("snake_case naïve\ttab\nline/slash"),
                         ["snake", "case", "na", "ve", "tab", "line", "slash"])

    def test_no_words(self):
        self.assertEqual(tokenize(""), [])
        self.assertEqual(tokenize(" ... ''' -- !"), [])


class CountWordsTest(unittest.TestCase):
    def test_counts(self):
        self.assertEqual(count_words("The cat and the hat. THE END"),
                         {"the": 3, "cat": 1, "and": 1, "hat": 1, "end": 1})

    def test_stopwords_are_case_insensitive(self):
        self.assertEqual(count_words("The cat and the hat", stopwords=["The", "AND"]),
                         {"cat": 1, "hat": 1})
        self.assertEqual(count_words("a b a", stopwords={"a"}), {"b": 1})

    def test_empty_text(self):
        self.assertEqual(count_words(""), {})
        self.assertEqual(count_words("only stop", stopwords=("only", "stop")), {})


class TopWordsTest(unittest.TestCase):
    def test_highest_count_first_ties_alphabetical(self):
        text = "pear apple pear fig apple pear kiwi"
        self.assertEqual(top_words(text), [("pear", 3), ("apple", 2), ("fig", 1), ("kiwi", 1)])

    def test_n_limits_the_result(self):
        text = "pear apple pear fig apple pear kiwi"
        self.assertEqual(top_words(text, 2), [("pear", 3), ("apple", 2)])
        self.assertEqual(top_words(text, n=3), [("pear", 3), ("apple", 2), ("fig", 1)])
        self.assertEqual(top_words(text, 1), [("pear", 3)])

    def test_default_n_is_ten(self):
        result = top_words(TWELVE)
        self.assertEqual(len(result), 10)
        self.assertEqual(result[:4], [("d", 4), ("c", 3), ("b", 2), ("a", 1)])
        self.assertEqual(result[-1], ("j", 1))

    def test_returns_a_list_of_tuples(self):
        result = top_words("x y x")
        self.assertIsInstance(result, list)
        self.assertEqual(result, [("x", 2), ("y", 1)])
        self.assertTrue(all(type(pair) is tuple for pair in result))

    def test_stopwords(self):
        self.assertEqual(top_words("the the the cat sat", 2, stopwords=["THE"]), [("cat", 1), ("sat", 1)])

    def test_n_below_one(self):
        for n in (0, -3):
            with self.subTest(n=n):
                with self.assertRaises(ValueError) as caught:
                    top_words("a b", n)
                self.assertEqual(str(caught.exception), "n must be at least 1")

    def test_no_words(self):
        self.assertEqual(top_words("?!"), [])


class CommandLineTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.text = self.dir / "text.txt"
        self.text.write_text("It was the best of times, it was the worst of times.\n"
                             "It was the age of wisdom.", encoding="utf-8")

    def tearDown(self):
        self._tmp.cleanup()

    def cli(self, *args):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONIOENCODING"] = "utf-8"
        return subprocess.run([sys.executable, "-m", "wordfreq", *args], cwd=self.dir, env=env,
                              capture_output=True, text=True, encoding="utf-8", timeout=60)

    def ok(self, *args):
        result = self.cli(*args)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        return result.stdout

    def test_prints_word_and_count(self):
        self.assertEqual(self.ok("text.txt", "-n", "5"), "it 3\nof 3\nthe 3\nwas 3\ntimes 2\n")
        self.assertEqual(self.ok("text.txt", "-n", "1"), "it 3\n")

    def test_default_n_is_ten(self):
        (self.dir / "twelve.txt").write_text(TWELVE, encoding="utf-8")
        lines = self.ok("twelve.txt").splitlines()
        self.assertEqual(len(lines), 10)
        self.assertEqual(lines[0], "d 4")
        self.assertEqual(lines[-1], "j 1")

    def test_stopwords_file(self):
        (self.dir / "stop.txt").write_text("the\nOF\n\nwas it\n", encoding="utf-8")
        self.assertEqual(self.ok(str(self.text), "--stopwords", "stop.txt", "-n", "3"),
                         "times 2\nage 1\nbest 1\n")

    def test_reads_utf8(self):
        (self.dir / "utf8.txt").write_text("Grüße — grüße zoë", encoding="utf-8")
        self.assertEqual(self.ok("utf8.txt"), "e 2\ngr 2\nzo 1\n")

    def test_file_without_words_prints_nothing(self):
        (self.dir / "empty.txt").write_text("... --- !!!", encoding="utf-8")
        self.assertEqual(self.ok("empty.txt"), "")

    def test_missing_file(self):
        result = self.cli("missing.txt")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: cannot read missing.txt\n")
        self.assertEqual(result.stdout, "")

    def test_missing_stopwords_file(self):
        result = self.cli("text.txt", "--stopwords", "nope.txt")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: cannot read nope.txt\n")
        self.assertEqual(result.stdout, "")

    def test_n_below_one(self):
        result = self.cli("text.txt", "-n", "0")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error: n must be at least 1\n")
        self.assertEqual(result.stdout, "")

    def test_usage_errors(self):
        self.assertEqual(self.cli().returncode, 2)
        self.assertEqual(self.cli("text.txt", "-n", "many").returncode, 2)


if __name__ == "__main__":
    unittest.main()
