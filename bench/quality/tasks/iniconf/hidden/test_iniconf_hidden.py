"""Hidden acceptance suite for the `iniconf` library."""

import unittest

from iniconf import ParseError, dumps, get, get_bool, get_int, parse

SAMPLE = """\
# service settings
[server]
host = example.org
Port = 8080

; logging
[logging]
level = DEBUG
"""


class ParseTest(unittest.TestCase):
    def test_sections_and_keys(self):
        self.assertEqual(parse(SAMPLE), {"server": {"host": "example.org", "port": "8080"},
                                         "logging": {"level": "DEBUG"}})

    def test_keys_lowercased_values_kept_and_stripped(self):
        self.assertEqual(parse("[s]\n  User Name   =   Ada Lovelace  \n"), {"s": {"user name": "Ada Lovelace"}})

    def test_comments_and_blank_lines_are_ignored(self):
        text = "\n   # indented comment\n[s]\n\t; another = comment\n\n  \na=1\n#b=2\n"
        self.assertEqual(parse(text), {"s": {"a": "1"}})

    def test_value_may_contain_equals_or_be_empty(self):
        self.assertEqual(parse("[s]\nquery = a=1&b=2\nempty =\nalso=  \n"),
                         {"s": {"query": "a=1&b=2", "empty": "", "also": ""}})

    def test_repeated_key_replaces_the_value(self):
        config = parse("[s]\na = 1\nb = 2\nA = 3\n")
        self.assertEqual(config, {"s": {"a": "3", "b": "2"}})
        self.assertEqual(list(config["s"]), ["a", "b"])

    def test_section_names_are_stripped_and_case_sensitive(self):
        self.assertEqual(parse("[  My Section ]\nx = 1\n[my section]\n"), {"My Section": {"x": "1"}, "my section": {}})

    def test_order_of_first_appearance(self):
        config = parse("[zeta]\nz = 1\ny = 2\nx = 3\n[alpha]\n[mid]\nk = v\n")
        self.assertEqual(list(config), ["zeta", "alpha", "mid"])
        self.assertEqual(list(config["zeta"]), ["z", "y", "x"])

    def test_windows_line_endings(self):
        self.assertEqual(parse("[s]\r\na = 1\r\nb = 2\r\n"), {"s": {"a": "1", "b": "2"}})

    def test_empty_text(self):
        self.assertEqual(parse(""), {})
        self.assertEqual(parse("# only a comment\n\n"), {})


class ParseErrorTest(unittest.TestCase):
    def assertParseError(self, text, lineno, reason):
        with self.assertRaises(ParseError) as caught:
            parse(text)
        self.assertEqual(caught.exception.lineno, lineno)
        self.assertEqual(str(caught.exception), f"line {lineno}: {reason}")

    def test_parse_error_is_a_value_error(self):
        self.assertTrue(issubclass(ParseError, ValueError))
        with self.assertRaises(ValueError):
            parse("nonsense")

    def test_empty_section_name(self):
        self.assertParseError("[]", 1, "empty section name")
        self.assertParseError("[a]\n[   ]\n", 2, "empty section name")

    def test_duplicate_section(self):
        self.assertParseError("[db]\nx = 1\n[web]\n[db]\n", 4, "duplicate section: db")

    def test_empty_key(self):
        self.assertParseError("[s]\n = value\n", 2, "empty key")

    def test_key_outside_a_section(self):
        self.assertParseError("# header\nname = x\n[s]\n", 2, "key outside a section")

    def test_invalid_lines(self):
        self.assertParseError("[s]\njust some text\n", 2, "invalid line")
        self.assertParseError("[s]\n[unclosed\n", 2, "invalid line")
        self.assertParseError("[s]\nx = 1\nclosed]\n", 3, "invalid line")

    def test_line_numbers_count_blank_and_comment_lines(self):
        self.assertParseError("\n# c\n; c\n[s]\n\nok = 1\n\n???\n", 8, "invalid line")


class DumpsTest(unittest.TestCase):
    def test_format(self):
        config = {"server": {"host": "example.org", "port": "8080"}, "logging": {"level": "DEBUG"}}
        self.assertEqual(dumps(config), "[server]\nhost = example.org\nport = 8080\n\n[logging]\nlevel = DEBUG\n")

    def test_empty_config_and_empty_section(self):
        self.assertEqual(dumps({}), "")
        self.assertEqual(dumps({"a": {}}), "[a]\n")
        self.assertEqual(dumps({"a": {}, "b": {"k": ""}}), "[a]\n\n[b]\nk = \n")

    def test_round_trip(self):
        for text in [SAMPLE, "[s]\nquery = a=1&b=2\nempty =\n[t]\n", "", "[One]\n[Two]\nx=y\n"]:
            config = parse(text)
            self.assertEqual(parse(dumps(config)), config)


class GetterTest(unittest.TestCase):
    CONFIG = {"app": {"name": "demo", "workers": "4", "debug": "Yes", "ratio": "0.5",
                      "offset": "-12", "mode": "maybe"}}

    def test_get(self):
        self.assertEqual(get(self.CONFIG, "app", "name"), "demo")
        self.assertEqual(get(self.CONFIG, "app", "NAME"), "demo")

    def test_get_missing(self):
        self.assertIsNone(get(self.CONFIG, "app", "missing"))
        self.assertEqual(get(self.CONFIG, "app", "missing", "fallback"), "fallback")
        self.assertEqual(get(self.CONFIG, "nope", "name", default="x"), "x")

    def test_get_int(self):
        self.assertEqual(get_int(self.CONFIG, "app", "workers"), 4)
        self.assertEqual(get_int(self.CONFIG, "app", "Offset"), -12)
        self.assertIsNone(get_int(self.CONFIG, "app", "missing"))
        self.assertEqual(get_int(self.CONFIG, "other", "workers", 7), 7)
        with self.assertRaises(ValueError):
            get_int(self.CONFIG, "app", "ratio")
        with self.assertRaises(ValueError):
            get_int(self.CONFIG, "app", "name")

    def test_get_bool_true_words(self):
        for word in ["true", "yes", "on", "1", "TRUE", "Yes", "oN"]:
            with self.subTest(word=word):
                self.assertIs(get_bool({"s": {"k": word}}, "s", "k"), True)

    def test_get_bool_false_words(self):
        for word in ["false", "no", "off", "0", "False", "NO", "Off"]:
            with self.subTest(word=word):
                self.assertIs(get_bool({"s": {"k": word}}, "s", "k"), False)

    def test_get_bool_default_and_invalid(self):
        self.assertIs(get_bool(self.CONFIG, "app", "debug"), True)
        self.assertIsNone(get_bool(self.CONFIG, "app", "missing"))
        self.assertIs(get_bool(self.CONFIG, "app", "missing", False), False)
        with self.assertRaises(ValueError) as caught:
            get_bool(self.CONFIG, "app", "mode")
        self.assertEqual(str(caught.exception), "not a boolean: maybe")
        with self.assertRaises(ValueError):
            get_bool({"s": {"k": ""}}, "s", "k")


if __name__ == "__main__":
    unittest.main()
