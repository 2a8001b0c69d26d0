"""Tests of mutate.py: `python3 -m unittest discover -s bench/quality/tests`."""

import ast
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mutate  # noqa: E402

SOURCE = '''\
"""Module docstring."""

__all__ = ["f"]


def f(x: int = 3, *, label: str = "a") -> int:
    """Function docstring."""
    total = 0
    for i in range(x):
        if i % 2 == 0 and not label:
            total += i
        elif i > 1:
            break
    print(f"{total:.2f} items")
    return -total if total else [i for i in range(4) if i]


class C:
    """Class docstring."""

    def g(self, a, b):
        while a < b or a is None:
            a = a * 2
        del self.cache
        raise ValueError("bad")


if __name__ == "__main__":
    f(1 + 1)
'''


def kinds(mutants):
    return [(m.operator, m.description) for m in mutants]


class ListMutantsTest(unittest.TestCase):
    def setUp(self):
        self.mutants = mutate.list_mutants(SOURCE, "m.py")

    def test_order_is_deterministic_and_numbered(self):
        again = mutate.list_mutants(SOURCE, "m.py")
        self.assertEqual(self.mutants, again)
        self.assertEqual([m.number for m in self.mutants], list(range(len(self.mutants))))
        positions = [(m.lineno, m.col) for m in self.mutants]
        self.assertEqual(positions, sorted(positions))

    def test_every_operator_appears(self):
        self.assertEqual({m.operator for m in self.mutants}, set(mutate.OPERATORS))

    def test_expected_mutations(self):
        found = set(kinds(self.mutants))
        for expected in [
            ("AOR", "% -> //"), ("AOR", "+= -> -="), ("AOR", "* -> /"),
            ("ROR", "== -> !="), ("ROR", "> -> >="), ("ROR", "< -> <="), ("ROR", "is -> is not"),
            ("LCR", "and -> or"), ("LCR", "or -> and"),
            ("UOD", "not x -> x"), ("UOD", "-x -> x"),
            ("CRP", "3 -> 4"), ("CRP", "0 -> 1"), ("CRP", "1 -> 0"), ("CRP", "2 -> 3"),
            ("CRP", "'a' -> ''"), ("CRP", "' items' -> ''"), ("CRP", "'bad' -> ''"),
            ("NEG", "condition c -> not c"), ("NEG", "filter c -> not c"),
            ("RVR", "return x -> return None"),
            ("SDL", "augassign statement -> pass"), ("SDL", "break statement -> pass"),
            ("SDL", "expr statement -> pass"), ("SDL", "delete statement -> pass"),
            ("SDL", "raise statement -> pass"),
        ]:
            self.assertIn(expected, found)

    def test_left_alone(self):
        texts = [mutate.apply_mutant(SOURCE, m) for m in self.mutants]
        for text in texts:
            tree = ast.parse(text)
            self.assertEqual(ast.get_docstring(tree), "Module docstring.")
            self.assertIn("__all__ = ['f']", text)  # __all__
            self.assertIn("if __name__ == '__main__':\n    f(1 + 1)", text)  # the main guard
            self.assertIn("x: int=", text)  # annotations
            self.assertIn("-> int:", text)
            if "print(" in text:
                self.assertIn("{total:.2f}", text)  # format specs
            self.assertIn('"""Function docstring."""', text)
            self.assertIn('"""Class docstring."""', text)

    def test_each_mutant_changes_the_program_once(self):
        original = ast.unparse(ast.parse(SOURCE)) + "\n"
        texts = [mutate.apply_mutant(SOURCE, m) for m in self.mutants]
        self.assertEqual(len(set(texts)), len(texts))
        self.assertNotIn(original, texts)
        for text in texts:
            compile(text, "m.py", "exec")

    def test_negating_a_negation_is_left_to_uod(self):
        mutants = mutate.list_mutants("if not x:\n    y()\n")
        self.assertEqual(kinds(mutants), [("UOD", "not x -> x"), ("SDL", "expr statement -> pass")])

    def test_none_and_constant_none_returns_are_not_mutated(self):
        self.assertEqual(mutate.list_mutants("def f():\n    return None\n"), [])
        self.assertEqual(mutate.list_mutants("x = None\n"), [])

    def test_apply_mutant_examples(self):
        source = "def f(a, b):\n    return a + b if a < b else 0\n"
        by_kind = {m.description: m for m in mutate.list_mutants(source)}
        self.assertIn("return a - b if a < b else 0", mutate.apply_mutant(source, by_kind["+ -> -"]))
        self.assertIn("return a + b if a <= b else 0", mutate.apply_mutant(source, by_kind["< -> <="]))
        self.assertIn("return a + b if a < b else 1", mutate.apply_mutant(source, by_kind["0 -> 1"]))
        self.assertIn("if not a < b", mutate.apply_mutant(source, by_kind["condition c -> not c"]))
        self.assertIn("    return\n", mutate.apply_mutant(source, by_kind["return x -> return None"]))


class TreeTest(unittest.TestCase):
    def test_tree_mutants_and_write_mutant(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "pkg").mkdir()
            (root / "pkg" / "a.py").write_text("X = 1\n")
            (root / "pkg" / "b.py").write_text("Y = 'b'\n")
            for skipped in ["tests/test_a.py", "hidden_tests/test_b.py", "pkg/test_c.py", ".venv/d.py"]:
                (root / skipped).parent.mkdir(exist_ok=True)
                (root / skipped).write_text("Z = 5\n")
            mutants = mutate.tree_mutants(root)
            self.assertEqual([(m.file, m.description) for m in mutants],
                             [("pkg/a.py", "1 -> 0"), ("pkg/b.py", "'b' -> ''")])
            mutate.write_mutant(root, mutants[1])
            self.assertEqual((root / "pkg" / "b.py").read_text(), "Y = ''\n")
            self.assertEqual((root / "pkg" / "a.py").read_text(), "X = 1\n")


if __name__ == "__main__":
    unittest.main()
