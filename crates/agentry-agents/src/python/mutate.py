"""Mutants of Python source code, made with the standard library's `ast`.

A mutant is a copy of a source file with one small change (`+` becomes `-`,
`<` becomes `<=`, a condition is negated, a `return` loses its value...).
A test suite *kills* a mutant when it fails (or errors, or hangs) against it;
the share of mutants killed measures how much of the code's behaviour the
suite actually pins down.

API:

    list_mutants(source, file="<string>") -> list[Mutant]
        Every mutant of one source text, in a deterministic order.
    apply_mutant(source, mutant) -> str
        The mutated source text (regenerated with `ast.unparse`).
    tree_mutants(root, exclude=...) -> list[Mutant]
        The mutants of every `.py` file under a directory, files in sorted
        order; `Mutant.file` is the path relative to `root` (POSIX style).
    write_mutant(root, mutant) -> None
        Overwrites `root / mutant.file` with its mutated text.

What is never mutated: docstrings, `if __name__ == "__main__":` blocks,
type annotations, the format spec of f-string fields and `__all__`.
Mutants that leave the program text unchanged, duplicate an earlier
mutant's text or no longer compile are dropped.

Run it as a script to look at the mutants of a file:

    python3 bench/quality/mutate.py path/to/module.py          # list
    python3 bench/quality/mutate.py path/to/module.py --show 7  # one, as a diff
"""

from __future__ import annotations

import argparse
import ast
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# The operators, by the short names used in reports.
OPERATORS = {
    "AOR": "arithmetic operator replacement (+ -, * /, // /, % //, ** *)",
    "ROR": "comparison replacement (< <=, > >=, == !=, in / not in, is / is not)",
    "LCR": "boolean operator replacement (and <-> or)",
    "UOD": "unary operator deletion (not x -> x, -x -> x)",
    "CRP": "constant replacement (0 -> 1, 1 -> 0, n -> n+1, x.y -> x.y+1, "
    "True <-> False, 'text' -> '', '' -> 'X')",
    "NEG": "condition negation (if / while / conditional expression / "
    "comprehension filter: c -> not c)",
    "RVR": "return value removal (return x -> return None)",
    "SDL": "statement deletion (expression statement, augmented assignment, "
    "raise, break, continue, del -> pass)",
}

_AOR = {
    ast.Add: (ast.Sub,),
    ast.Sub: (ast.Add,),
    ast.Mult: (ast.Div,),
    ast.Div: (ast.Mult,),
    ast.FloorDiv: (ast.Div,),
    ast.Mod: (ast.FloorDiv,),
    ast.Pow: (ast.Mult,),
}
_ROR = {
    ast.Lt: (ast.LtE,),
    ast.LtE: (ast.Lt,),
    ast.Gt: (ast.GtE,),
    ast.GtE: (ast.Gt,),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
_LCR = {ast.And: ast.Or, ast.Or: ast.And}
_SYMBOL = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
    ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.And: "and",
    ast.Or: "or",
}
_DELETABLE = (ast.Expr, ast.AugAssign, ast.Raise, ast.Break, ast.Continue, ast.Delete)
_SCOPES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

# A path from the module to a node: (field name, index in that field's list
# or None) for each step.
NodePath = tuple[tuple[str, "int | None"], ...]


@dataclass(frozen=True)
class Mutant:
    """One mutation of one file.

    `number` is the mutant's position in `list_mutants`' answer (0-based);
    `path` locates the mutated node in the file's AST and `change` says what
    happens to it, so `apply_mutant` needs nothing else.
    """

    file: str
    number: int
    operator: str
    lineno: int
    col: int
    description: str
    path: NodePath
    change: tuple

    @property
    def id(self) -> str:
        return f"{self.file}#{self.number}"

    def __str__(self) -> str:
        return f"{self.file}:{self.lineno}:{self.col + 1} {self.operator} {self.description}"


def _is_docstring(parent: ast.AST, field: str, index: int | None) -> bool:
    if not isinstance(parent, _SCOPES) or field != "body" or index != 0:
        return False
    stmt = parent.body[0]
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _is_dunder_all(node: ast.AST) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _constant_changes(value: object) -> list[object]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        if value == 0:
            return [1]
        if value == 1:
            return [0]
        return [value + 1]
    if isinstance(value, float):
        return [1.0] if value == 0.0 else [value + 1.0]
    if isinstance(value, str):
        return ["X"] if value == "" else [""]
    return []  # None, Ellipsis, bytes, complex: left alone


def _location(node: ast.AST, fallback: tuple[int, int]) -> tuple[int, int]:
    if hasattr(node, "lineno"):
        return node.lineno, node.col_offset
    return fallback


def _candidates(tree: ast.Module) -> Iterator[tuple[str, int, int, str, NodePath, tuple]]:
    """(operator, line, col, description, path, change) in traversal order."""

    def visit(node: ast.AST, path: NodePath, where: tuple[int, int], *, in_fstring_spec=False):
        where = _location(node, where)
        yield from mutations_of(node, path, where, in_fstring_spec)
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns", "type_comment"):
                continue
            if isinstance(node, ast.arguments) and field in ("posonlyargs", "args", "kwonlyargs", "vararg", "kwarg"):
                continue  # parameter names and their annotations
            spec = in_fstring_spec or (isinstance(node, ast.FormattedValue) and field == "format_spec")
            if isinstance(value, list):
                for i, child in enumerate(value):
                    if not isinstance(child, ast.AST):
                        continue
                    if _is_docstring(node, field, i) or _is_main_guard(child) or _is_dunder_all(child):
                        continue
                    yield from visit(child, path + ((field, i),), where, in_fstring_spec=spec)
            elif isinstance(value, ast.AST):
                yield from visit(value, path + ((field, None),), where, in_fstring_spec=spec)

    def mutations_of(node, path, where, in_spec):
        line, col = where
        if isinstance(node, ast.BinOp) and type(node.op) in _AOR:
            for new in _AOR[type(node.op)]:
                yield ("AOR", line, col, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", path, ("op", new.__name__))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _AOR:
            for new in _AOR[type(node.op)]:
                yield ("AOR", line, col, f"{_SYMBOL[type(node.op)]}= -> {_SYMBOL[new]}=", path, ("op", new.__name__))
        elif isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for new in _ROR.get(type(op), ()):
                    yield ("ROR", line, col, f"{_SYMBOL[type(op)]} -> {_SYMBOL[new]}", path, ("cmp", i, new.__name__))
        elif isinstance(node, ast.BoolOp):
            new = _LCR[type(node.op)]
            yield ("LCR", line, col, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", path, ("op", new.__name__))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            sym = "not " if isinstance(node.op, ast.Not) else "-"
            yield ("UOD", line, col, f"{sym}x -> x", path, ("operand",))
        elif isinstance(node, ast.Constant) and not in_spec:
            for new in _constant_changes(node.value):
                yield ("CRP", line, col, f"{node.value!r} -> {new!r}", path, ("const", new))

        # Conditions.
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            if not (isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)):
                yield ("NEG", line, col, "condition c -> not c", path + (("test", None),), ("negate",))
        if isinstance(node, ast.comprehension):
            for i, cond in enumerate(node.ifs):
                if not (isinstance(cond, ast.UnaryOp) and isinstance(cond.op, ast.Not)):
                    yield ("NEG", line, col, "filter c -> not c", path + (("ifs", i),), ("negate",))

        # Statements.
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield ("RVR", line, col, "return x -> return None", path, ("return_none",))
        if isinstance(node, _DELETABLE):
            kind = type(node).__name__.lower()
            yield ("SDL", line, col, f"{kind} statement -> pass", path, ("pass",))

    yield from visit(tree, (), (1, 0))


def _locate(tree: ast.AST, path: NodePath) -> tuple[ast.AST | None, str | None, int | None, ast.AST]:
    parent, field, index, node = None, None, None, tree
    for field, index in path:
        parent = node
        value = getattr(node, field)
        node = value[index] if index is not None else value
    return parent, field, index, node


def _mutate_tree(tree: ast.Module, path: NodePath, change: tuple) -> None:
    parent, field, index, node = _locate(tree, path)
    kind = change[0]
    replacement: ast.AST | None = None
    if kind == "op":
        node.op = getattr(ast, change[1])()
    elif kind == "cmp":
        node.ops[change[1]] = getattr(ast, change[2])()
    elif kind == "operand":
        replacement = node.operand
    elif kind == "const":
        node.value = change[1]
    elif kind == "negate":
        replacement = ast.UnaryOp(op=ast.Not(), operand=node)
    elif kind == "return_none":
        node.value = None
    elif kind == "pass":
        replacement = ast.Pass()
    else:
        raise ValueError(f"unknown change {change!r}")
    if replacement is not None:
        ast.copy_location(replacement, node)
        if parent is None:
            raise ValueError("cannot replace the module itself")
        if index is None:
            setattr(parent, field, replacement)
        else:
            getattr(parent, field)[index] = replacement
    ast.fix_missing_locations(tree)


def list_mutants(source: str, file: str = "<string>") -> list[Mutant]:
    """Every mutant of `source`, ordered by position (line, column) and then
    by the order the AST walk met it; `Mutant.number` is the index here."""
    tree = ast.parse(source, filename=file)
    original = ast.unparse(tree)
    seen = {original}
    found = []
    for seq, (operator, line, col, description, path, change) in enumerate(_candidates(tree)):
        mutated = ast.parse(source, filename=file)
        _mutate_tree(mutated, path, change)
        text = ast.unparse(mutated)
        if text in seen:
            continue
        try:
            compile(text, file, "exec")
        except (SyntaxError, ValueError):
            continue
        seen.add(text)
        found.append((line, col, seq, operator, description, path, change))
    found.sort(key=lambda m: m[:3])
    return [
        Mutant(file, n, operator, line, col, description, path, change)
        for n, (line, col, _seq, operator, description, path, change) in enumerate(found)
    ]


def apply_mutant(source: str, mutant: Mutant) -> str:
    """The text of `source` with `mutant` applied. `source` must be the text
    the mutant was listed from."""
    tree = ast.parse(source, filename=mutant.file)
    _mutate_tree(tree, mutant.path, mutant.change)
    return ast.unparse(tree) + "\n"


def python_files(root: Path, exclude: tuple[str, ...] = ("tests", "test", "hidden_tests")) -> list[Path]:
    """The `.py` files under `root`, sorted, skipping directories named in
    `exclude`, hidden directories and files named `test_*.py` / `*_test.py`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(p in exclude or p.startswith(".") for p in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_") or rel.stem.endswith("_test"):
            continue
        out.append(path)
    return out


def tree_mutants(root: Path | str, exclude: tuple[str, ...] = ("tests", "test", "hidden_tests")) -> list[Mutant]:
    """The mutants of every Python file under `root` (see `python_files`)."""
    root = Path(root)
    mutants: list[Mutant] = []
    for path in python_files(root, exclude):
        rel = path.relative_to(root).as_posix()
        mutants.extend(list_mutants(path.read_text(encoding="utf-8"), rel))
    return mutants


def write_mutant(root: Path | str, mutant: Mutant) -> None:
    """Applies `mutant` to `root / mutant.file` in place."""
    target = Path(root) / mutant.file
    target.write_text(apply_mutant(target.read_text(encoding="utf-8"), mutant), encoding="utf-8")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List the mutants of a Python file.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--show", type=int, metavar="N", help="print mutant N as a unified diff")
    args = parser.parse_args(argv)
    source = args.file.read_text(encoding="utf-8")
    mutants = list_mutants(source, str(args.file))
    if args.show is None:
        for m in mutants:
            print(f"{m.number:4d} {m}")
        print(f"{len(mutants)} mutants", file=sys.stderr)
        return 0
    mutant = mutants[args.show]
    before = (ast.unparse(ast.parse(source)) + "\n").splitlines(keepends=True)
    after = apply_mutant(source, mutant).splitlines(keepends=True)
    print(mutant)
    sys.stdout.writelines(difflib.unified_diff(before, after, "original", f"mutant {mutant.number}"))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
