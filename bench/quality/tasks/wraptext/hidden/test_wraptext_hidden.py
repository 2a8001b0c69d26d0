"""Hidden acceptance suite for the `wraptext` library."""

import re
import unittest

from wraptext import fill, justify, truncate, wrap

FOX = "The quick brown fox jumps over the lazy dog"
PARAGRAPH = ("It was the best of times, it was the worst of times, it was the age of "
             "wisdom, it was the age of foolishness, it was the epoch of belief, it was "
             "the epoch of incredulity, it was the season of Light, it was the season of Darkness")


class WrapTest(unittest.TestCase):
    def test_greedy_lines(self):
        self.assertEqual(wrap(FOX, 10), ["The quick", "brown fox", "jumps over", "the lazy", "dog"])

    def test_exact_fit(self):
        self.assertEqual(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"])
        self.assertEqual(wrap("aaa bbb ccc", 11), ["aaa bbb ccc"])
        self.assertEqual(wrap("aaa bbb ccc", 10), ["aaa bbb", "ccc"])
        self.assertEqual(wrap("aaa bbb ccc", 6), ["aaa", "bbb", "ccc"])

    def test_long_word_gets_its_own_line(self):
        self.assertEqual(wrap("a supercalifragilistic b c", 5), ["a", "supercalifragilistic", "b c"])
        self.assertEqual(wrap("supercalifragilistic", 3), ["supercalifragilistic"])

    def test_any_whitespace_separates_words(self):
        self.assertEqual(wrap("  one\ttwo\n\nthree   four ", 9), ["one two", "three", "four"])

    def test_no_words(self):
        self.assertEqual(wrap("", 10), [])
        self.assertEqual(wrap("  \n\t ", 10), [])

    def test_width_one(self):
        self.assertEqual(wrap("a b c", 1), ["a", "b", "c"])

    def test_lines_fit_and_keep_every_word(self):
        for width in range(12, 40):
            lines = wrap(PARAGRAPH, width)
            self.assertEqual(" ".join(lines).split(), PARAGRAPH.split())
            for i, line in enumerate(lines):
                self.assertLessEqual(len(line), width)
                self.assertEqual(line, line.strip())
                if i + 1 < len(lines):  # greedy: the next word would not have fitted
                    self.assertGreater(len(line) + 1 + len(lines[i + 1].split()[0]), width)


class FillTest(unittest.TestCase):
    def test_fill_joins_lines(self):
        self.assertEqual(fill(FOX, 10), "The quick\nbrown fox\njumps over\nthe lazy\ndog")

    def test_fill_without_words(self):
        self.assertEqual(fill(" \n ", 5), "")

    def test_fill_single_line(self):
        self.assertEqual(fill("hello   world", 20), "hello world")


class JustifyTest(unittest.TestCase):
    def test_the_example(self):
        self.assertEqual(justify(FOX, 16), ["The  quick brown", "fox  jumps  over", "the lazy dog"])

    def test_wider_gaps_come_first(self):
        self.assertEqual(justify("a bb ccc dddd eeeee", 15), ["a  bb  ccc dddd", "eeeee"])
        self.assertEqual(justify("w x y z q", 8), ["w  x y z", "q"])

    def test_even_gaps(self):
        self.assertEqual(justify("aa bb cc dd", 10), ["aa  bb  cc", "dd"])

    def test_single_word_line_is_padded_on_the_right(self):
        self.assertEqual(justify("short incomprehensibly", 8), ["short   ", "incomprehensibly"])

    def test_long_word_line_is_left_alone(self):
        self.assertEqual(justify("incomprehensibly short", 8), ["incomprehensibly", "short"])

    def test_last_line_stays_as_wrapped(self):
        self.assertEqual(justify("hello world", 20), ["hello world"])
        self.assertEqual(justify("one two three", 9), ["one   two", "three"])

    def test_every_line_but_the_last_has_the_width(self):
        for width in range(12, 40):
            lines = justify(PARAGRAPH, width)
            wrapped = wrap(PARAGRAPH, width)
            self.assertEqual(len(lines), len(wrapped))
            self.assertEqual(lines[-1], wrapped[-1])
            for line, plain in zip(lines[:-1], wrapped[:-1]):
                self.assertEqual(len(line), width)
                self.assertEqual(line.split(), plain.split())
                if len(plain.split()) > 1:
                    gaps = [len(gap) for gap in re.findall(" +", line)]
                    self.assertEqual(gaps, sorted(gaps, reverse=True))
                    self.assertLessEqual(gaps[0] - gaps[-1], 1)

    def test_no_words(self):
        self.assertEqual(justify("   ", 10), [])


class TruncateTest(unittest.TestCase):
    def test_short_text_is_unchanged(self):
        self.assertEqual(truncate("Hello", 8), "Hello")
        self.assertEqual(truncate("Hello, w", 8), "Hello, w")
        self.assertEqual(truncate("", 3), "")

    def test_long_text_ends_with_the_placeholder(self):
        self.assertEqual(truncate("Hello, world", 8), "Hello...")
        self.assertEqual(truncate("Hello, world", 11), "Hello, w...")

    def test_custom_placeholder(self):
        self.assertEqual(truncate("Hello, world", 8, placeholder="~"), "Hello, ~")
        self.assertEqual(truncate("Hello, world", 8, placeholder=""), "Hello, w")
        self.assertEqual(truncate("Hello, world", 8, " [more]"), "H [more]")

    def test_placeholder_only(self):
        self.assertEqual(truncate("abcdef", 3), "...")

    def test_width_smaller_than_placeholder(self):
        for args in [("abcdef", 2), ("hi", 2), ("", 1), ("abc", 4, "-----")]:
            with self.subTest(args=args):
                with self.assertRaises(ValueError) as caught:
                    truncate(*args)
                self.assertEqual(str(caught.exception), "width too small for placeholder")


class WidthTest(unittest.TestCase):
    def test_invalid_widths(self):
        calls = [wrap, fill, justify, truncate]
        for width in [0, -1, 2.5, "10", None]:
            for call in calls:
                with self.subTest(call=call.__name__, width=width):
                    with self.assertRaises(ValueError) as caught:
                        call("some words here", width)
                    self.assertEqual(str(caught.exception), "width must be at least 1")


if __name__ == "__main__":
    unittest.main()
