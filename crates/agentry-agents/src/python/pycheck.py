"""Static checker and mechanical repairer for the Python files agents write.

Reads a JSON object on stdin:
    {"tree": {path: content}, "check": [path, ...], "package": name or null}
and writes a JSON report on stdout:
    {"files": {path: new content}, "rewrites": [{path, line, rule, detail}],
     "problems": [{path, line, rule, message}], "assertions": {path: count}}

The checked code is only parsed with `ast`: it is never imported or run.
The rule names are listed (and explained) in `pycheck.rs`, the one place
they are documented; this script and that list must agree.

Python 3.10 or newer, standard library only.
"""

import ast
import builtins
import importlib.util
import json
import keyword
import re
import sys

# Repairs.
MISSING_STDLIB_IMPORT = "missing_stdlib_import"
UNDEFINED_NAME_FROM_PACKAGE = "undefined_name_from_package"
UNRESOLVED_FROM_IMPORT = "unresolved_from_import"
FLOAT_ASSERT_EQUAL = "float_assert_equal"
FSTRING_QUOTES = "fstring_quotes"
PACKAGE_EXPORTS = "package_exports"
EMPTY_TEMP_FILE = "empty_temp_file"
# Problems.
SYNTAX = "syntax"
UNRESOLVED_IMPORT = "unresolved_import"
STUB = "stub"
SAVED_NEVER_LOADED = "saved_never_loaded"
WRONG_ARGUMENTS = "wrong_arguments"
MISSING_METHOD = "missing_method"
UNTESTED = "untested"
NO_ASSERTION = "no_assertion"
CHECKS_ONLY_NONE = "checks_only_none"
TAUTOLOGY = "tautology"
DISCONNECTED = "disconnected"
SWALLOWED_FAILURE = "swallowed_failure"

# Well-known standard-library names used bare: name -> module.
STDLIB_NAMES = {
    "defaultdict": "collections",
    "Counter": "collections",
    "OrderedDict": "collections",
    "namedtuple": "collections",
    "deque": "collections",
    "dataclass": "dataclasses",
    "field": "dataclasses",
    "Path": "pathlib",
    "List": "typing",
    "Dict": "typing",
    "Optional": "typing",
    "Any": "typing",
    "Tuple": "typing",
    "Set": "typing",
    "Union": "typing",
    "Callable": "typing",
    "Iterable": "typing",
    "Iterator": "typing",
    "partial": "functools",
    "reduce": "functools",
    "lru_cache": "functools",
    "patch": "unittest.mock",
    "MagicMock": "unittest.mock",
    "mock_open": "unittest.mock",
    "mock": "unittest",
    "StringIO": "io",
    "ABC": "abc",
    "abstractmethod": "abc",
    "Enum": "enum",
    "date": "datetime",
    "timedelta": "datetime",
}

# `datetime.now()` means the class: `from datetime import datetime`.
DATETIME_CLASS_ATTRS = {
    "now", "utcnow", "today", "strptime", "fromisoformat", "fromtimestamp",
    "utcfromtimestamp", "combine", "min", "max",
}

# Standard-library modules never imported for a bare `name.attr`: more
# likely a misspelt variable (`this.x`, `code.strip()`), or harmful to import.
NOT_AUTO_IMPORTED = {"this", "antigravity", "test", "code", "token", "site", "idlelib", "tkinter", "turtle"}

# Dunders whose empty body is legitimate (nothing to set up or tear down).
EMPTY_OK_DUNDERS = {
    "__init__",
    "__post_init__",
    "__init_subclass__",
    "__enter__",
    "__exit__",
    "__aenter__",
    "__aexit__",
    "__del__",
    "__set_name__",
}

ABSTRACT_DECORATORS = {
    "abstractmethod",
    "abstractproperty",
    "abstractclassmethod",
    "abstractstaticmethod",
    "overload",
}
ABSTRACT_BASES = {"ABC", "Protocol"}

# Calls whose None result is a meaningful answer ("not found"): checking
# that they return None is a real assertion.
LOOKUP_PREFIXES = (
    "get", "find", "lookup", "search", "fetch", "load", "read", "pop", "peek",
    "first", "last", "next", "match", "parse", "resolve", "query", "select",
)

EQUALITY_ASSERTS = {
    "assertEqual", "assertEquals", "assertIs", "assertListEqual",
    "assertDictEqual", "assertTupleEqual", "assertSetEqual",
    "assertSequenceEqual", "assertCountEqual", "assertAlmostEqual",
    "assertAlmostEquals", "assertGreaterEqual", "assertLessEqual",
    "assertMultiLineEqual",
}

KNOWN_GLOBALS = set(dir(builtins)) | {
    "__file__", "__name__", "__doc__", "__builtins__", "__spec__",
    "__loader__", "__package__", "__path__", "__annotations__", "__class__",
    "__qualname__", "__module__", "__dict__", "__debug__", "__cached__",
}

STDLIB = set(getattr(sys, "stdlib_module_names", ()))


# ---------------------------------------------------------------- paths


def is_test_file(path):
    parts = path.split("/")
    name = parts[-1]
    return (
        any(p in ("tests", "test") for p in parts[:-1])
        or (name.startswith("test_") and name.endswith(".py"))
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


def importable(parts):
    return bool(parts) and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def module_parts(path):
    """Dotted parts of a `.py` path relative to the repository root."""
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts


def canonical(path):
    """The import name of a `.py` file (src layout stripped), or None."""
    parts = module_parts(path)
    if len(parts) > 1 and parts[0] == "src":
        parts = parts[1:]
    return ".".join(parts) if importable(parts) else None


# ---------------------------------------------------------------- text edits


def split_lines(src):
    """Lines as Python counts them (form feeds and U+2028 do not end a line)."""
    lines, start = [], 0
    for m in re.finditer(r"\r\n|\r|\n", src):
        lines.append(src[start:m.end()])
        start = m.end()
    if start < len(src):
        lines.append(src[start:])
    return lines


class Text:
    """Source text with edits addressed by ast positions (byte columns)."""

    def __init__(self, src):
        self.lines = split_lines(src)

    def col(self, lineno, bytecol):
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        return len(line.encode("utf-8")[:bytecol].decode("utf-8", "replace"))

    def offset(self, lineno, bytecol):
        return sum(len(l) for l in self.lines[: lineno - 1]) + self.col(lineno, bytecol)


def apply_edits(src, edits):
    """edits: [(start_offset, end_offset, text)], non-overlapping."""
    for start, end, text in sorted(edits, key=lambda e: e[0], reverse=True):
        src = src[:start] + text + src[end:]
    return src


def newline_of(src):
    return "\r\n" if "\r\n" in src else "\n"


def segment(src, node, limit=70):
    text = ast.get_source_segment(src, node) or ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- module facts


def is_main_guard(node):
    t = node.test
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def target_names(target, out):
    if isinstance(target, ast.Name):
        out.add(target.id)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for e in target.elts:
            target_names(e, out)
    elif isinstance(target, ast.Starred):
        target_names(target.value, out)


class ModInfo:
    """What a module binds at top level when it is imported."""

    def __init__(self, src):
        self.defined = set()  # def, class, assignment
        self.imported = set()  # bound by an import
        self.stars = []  # (level, module) of `from x import *`
        self.getattr = False
        self.ok = True
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            self.ok = False
            return
        self._walk(tree.body)
        self.getattr = "__getattr__" in self.defined

    def _walk(self, body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defined.add(node.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    target_names(t, self.defined)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                target_names(node.target, self.defined)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.imported.add(a.asname or a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name == "*":
                        self.stars.append((node.level, node.module or ""))
                    else:
                        self.imported.add(a.asname or a.name)
            elif isinstance(node, ast.If):
                if not is_main_guard(node):
                    self._walk(node.body)
                self._walk(node.orelse)
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                self._walk(node.body)
                for h in node.handlers:
                    self._walk(h.body)
                self._walk(node.orelse)
                self._walk(node.finalbody)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        target_names(item.optional_vars, self.defined)
                self._walk(node.body)
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
                if isinstance(node, (ast.For, ast.AsyncFor)):
                    target_names(node.target, self.defined)
                self._walk(node.body)
                self._walk(node.orelse)


class Repo:
    """The repository tree as an import system."""

    def __init__(self, tree, package):
        self.tree = tree
        self.package = package
        self.requirement = ""  # the requirement a suite answers to, when given
        self.modules = {}  # dotted -> path of its .py (a package's __init__.py)
        self.packages = set()  # dotted names of directories
        self._info = {}
        self._trees = {}
        self._installed = {}
        for src_pass in (False, True):
            for path in sorted(tree):
                parts = path.split("/")
                if src_pass:
                    if len(parts) < 2 or parts[0] != "src":
                        continue
                    parts = parts[1:]
                dirs = parts[:-1]
                for i in range(1, len(dirs) + 1):
                    if importable(dirs[:i]):
                        self.packages.add(".".join(dirs[:i]))
                if path.endswith(".py"):
                    mod = parts[:-1] + [parts[-1][:-3]]
                    if mod[-1] == "__init__":
                        mod = mod[:-1]
                    if importable(mod):
                        self.modules.setdefault(".".join(mod), path)

    def update(self, path, src):
        self.tree[path] = src
        self._info.pop(path, None)
        self._trees.pop(path, None)

    def parsed(self, path):
        """The file's syntax tree, parsed once per content; None when it
        does not compile (or is not in the tree)."""
        if path not in self._trees:
            tree, error = parse(self.tree.get(path, ""), path)
            self._trees[path] = tree if error is None else None
        return self._trees[path]

    def code_trees(self):
        """Every code file that compiles, as (path, tree)."""
        out = []
        for path in sorted(self.tree):
            if path.endswith(".py") and not is_test_file(path):
                tree = self.parsed(path)
                if tree is not None:
                    out.append((path, tree))
        return out

    def info(self, dotted):
        path = self.modules.get(dotted)
        if path is None:
            return None
        if path not in self._info:
            self._info[path] = ModInfo(self.tree.get(path, ""))
        return self._info[path]

    def exists(self, dotted):
        return dotted in self.modules or dotted in self.packages

    def installed(self, top):
        if top not in self._installed:
            try:
                self._installed[top] = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError, AttributeError):
                self._installed[top] = False
        return self._installed[top]

    def external(self, top):
        """A top-level module outside the repository that Python can import."""
        return top in STDLIB or self.installed(top)

    def resolve_absolute(self, path, dotted):
        """The repository module an absolute import of `dotted` means in `path`."""
        if self.exists(dotted):
            return dotted
        # Script-style import of a sibling (`python tests/test_x.py`).
        here = canonical(path)
        if here and "." in here:
            sibling = here.rsplit(".", 1)[0] + "." + dotted
            if self.exists(sibling):
                return sibling
        return None

    def provides(self, dotted, name, strict=False, depth=0):
        """Whether `from dotted import name` works. `strict`: an unknown
        star import or a `__getattr__` does not count."""
        if self.exists(dotted + "." + name):
            return True
        info = self.info(dotted)
        if info is None:
            return False
        if not info.ok:
            return not strict
        if name in info.defined or name in info.imported:
            return True
        if info.getattr and not strict:
            return True
        for level, module in info.stars:
            source = self.relative(self.modules[dotted], level, module) if level else module
            if source and self.exists(source) and depth < 5:
                if self.provides(source, name, strict, depth + 1):
                    return True
            elif not strict:
                return True
        return False

    def relative(self, path, level, module):
        """The dotted name a relative import means in `path`, or None."""
        here = canonical(path)
        if here is None:
            return None
        parts = here.split(".")
        if not path.endswith("__init__.py"):
            parts = parts[:-1]
        if level - 1 >= len(parts):
            return None  # no parent package, or beyond the top-level one
        parts = parts[: len(parts) - (level - 1)]
        if module:
            parts = parts + module.split(".")
        return ".".join(parts) if parts else None

    def package_module(self):
        if self.package and self.package in self.modules:
            return self.package
        return None

    def code_modules(self, exclude):
        out = []
        for dotted, path in sorted(self.modules.items()):
            if path == exclude or is_test_file(path) or canonical(path) != dotted:
                continue
            if dotted.split(".")[-1] in ("setup", "__main__", "conftest"):
                continue
            out.append(dotted)
        return out

    def home_of(self, name, exclude):
        """The module to import `name` from: the project package when it
        exports it, else the one module that defines it."""
        pkg = self.package_module()
        here = canonical(exclude) or ""
        # Inside the package, importing from its `__init__` risks a cycle.
        if pkg and here != pkg and not here.startswith(pkg + ".") \
                and self.provides(pkg, name, strict=True):
            return pkg
        for test_modules in (False, True):
            found = []
            for dotted, path in sorted(self.modules.items()):
                if path == exclude or is_test_file(path) != test_modules:
                    continue
                if canonical(path) != dotted:
                    continue
                info = self.info(dotted)
                if info and info.ok and name in info.defined:
                    found.append(dotted)
            if len(found) == 1:
                return found[0]
            if found:
                return None
        return None

    def listing(self, exclude, cap=30):
        """The importable repository modules and what they define."""
        items = []
        left = cap
        for dotted in self.code_modules(exclude):
            info = self.info(dotted)
            names = []
            if info and info.ok:
                pool = set(info.defined)
                if self.modules[dotted].endswith("__init__.py"):
                    pool |= info.imported
                    for level, module in info.stars:
                        source = self.relative(self.modules[dotted], level, module) if level else module
                        star = self.info(source) if source else None
                        if star and star.ok:
                            pool |= star.defined
                names = sorted(n for n in pool if not n.startswith("_"))
            shown = names[: max(left, 0)]
            left -= len(shown)
            more = ", …" if len(shown) < len(names) else ""
            items.append(f"`{dotted}` ({', '.join(shown)}{more})" if names else f"`{dotted}`")
        return "; ".join(items)


# ---------------------------------------------------------------- imports


def import_guarded(tree):
    """Imports inside `try` blocks that handle ImportError (optional imports)."""
    guarded = set()
    catches = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            handled = False
            for h in node.handlers:
                types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
                for t in types:
                    if t is None or (isinstance(t, ast.Name) and t.id in catches) or (
                        isinstance(t, ast.Attribute) and t.attr in catches
                    ):
                        handled = True
            if handled:
                for stmt in node.body:
                    for sub in ast.walk(stmt):
                        if isinstance(sub, (ast.Import, ast.ImportFrom)):
                            guarded.add(id(sub))
    return guarded


def alias_text(a):
    return f"{a.name} as {a.asname}" if a.asname else a.name


def from_import_status(repo, path, node):
    """(module exists?, resolved dotted or None, missing aliases) of an
    absolute `from M import ...` (M known to be external: (True, None, []))."""
    module = node.module or ""
    top = module.split(".")[0]
    dotted = repo.resolve_absolute(path, module)
    if dotted is not None:
        missing = [a for a in node.names if a.name != "*" and not repo.provides(dotted, a.name)]
        return True, dotted, missing
    if repo.exists(top) or not repo.external(top):
        return False, None, list(node.names)
    return True, None, []


def repair_from_imports(repo, path, src, tree, rewrites):
    guarded = import_guarded(tree)
    text = Text(src)
    nl = newline_of(src)
    edits = []
    here = repo.relative(path, 1, "")  # the file's own package, for relative imports
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in guarded:
            continue
        if node.level:
            dotted = repo.relative(path, node.level, node.module or "")
            if dotted is None:
                continue
            exists = repo.exists(dotted)
            missing = [a for a in node.names if a.name != "*"
                       and (not exists or not repo.provides(dotted, a.name))]
        else:
            exists, dotted, missing = from_import_status(repo, path, node)
        if not missing:
            continue
        moves = {}
        keep = []
        for a in node.names:
            home = repo.home_of(a.name, path) if a in missing else None
            if home is not None and home != dotted:
                moves.setdefault(home, []).append(a)
            else:
                keep.append(a)
        if not moves:
            continue
        written = "." * node.level + (node.module or "")
        stmts = []
        if keep:
            stmts.append(f"from {written} import {', '.join(alias_text(a) for a in keep)}")
        for home, aliases in moves.items():
            # A relative import stays relative within the file's package.
            if node.level and here and home.startswith(here + "."):
                home = "." + home[len(here) + 1:]
            stmts.append(f"from {home} import {', '.join(alias_text(a) for a in aliases)}")
        start = text.offset(node.lineno, node.col_offset)
        end = text.offset(node.end_lineno, node.end_col_offset)
        line_start = text.offset(node.lineno, 0)
        prefix = src[line_start:start]
        joiner = (nl + prefix) if prefix.strip() == "" else "; "
        edits.append((start, end, joiner.join(stmts)))
        what = "does not exist" if not exists else f"has no {', '.join('`' + a.name + '`' for a in missing)}"
        rewrites.append((
            node.lineno,
            UNRESOLVED_FROM_IMPORT,
            f"`from {written} import ...`: `{dotted or written}` {what}; now "
            + "; ".join(f"`{s}`" for s in stmts),
        ))
    return apply_edits(src, edits) if edits else src


def import_problems(repo, path, src, tree, problems):
    guarded = import_guarded(tree)

    def report(node, message):
        problems.append((node.lineno, UNRESOLVED_IMPORT, message))

    def listing():
        found = repo.listing(path)
        if found:
            return f" Importable repository modules: {found}."
        return " The repository has no importable modules."

    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                dotted = repo.resolve_absolute(path, top)
                if dotted is not None:
                    full = repo.resolve_absolute(path, a.name)
                    if full is None:
                        report(node, f"`import {a.name}` at line {node.lineno}: module `{a.name}` "
                               f"does not exist: import an existing module.{listing()}")
                elif not repo.external(top):
                    report(node, f"`import {a.name}` at line {node.lineno}: no module `{top}` "
                           f"in the repository, the standard library or the installed "
                           f"packages: import an existing module.{listing()}")
        elif isinstance(node, ast.ImportFrom):
            names = ", ".join(alias_text(a) for a in node.names)
            stmt = f"from {'.' * node.level}{node.module or ''} import {names}"
            if node.level:
                dotted = repo.relative(path, node.level, node.module or "")
                if dotted is None:
                    report(node, f"`{stmt}` at line {node.lineno}: relative import with no "
                           f"package to resolve it against: use an absolute import.{listing()}")
                    continue
                if not repo.exists(dotted):
                    report(node, f"`{stmt}` at line {node.lineno}: module `{dotted}` does not "
                           f"exist: import an existing module.{listing()}")
                    continue
                missing = [a for a in node.names if a.name != "*" and not repo.provides(dotted, a.name)]
                exists = True
            else:
                exists, dotted, missing = from_import_status(repo, path, node)
            if not missing:
                continue
            if not exists:
                report(node, f"`{stmt}` at line {node.lineno}: module `{node.module}` does not "
                       f"exist: import from an existing module.{listing()}")
            else:
                info = repo.info(dotted)
                defined = sorted(n for n in (info.defined if info and info.ok else ()) if not n.startswith("_"))
                has = f" It defines: {', '.join(defined[:30])}." if defined else ""
                gone = ", ".join(f"`{a.name}`" for a in missing)
                report(node, f"`{stmt}` at line {node.lineno}: `{dotted}` has no {gone}: import "
                       f"a name it has, or define it there.{has}")


# ---------------------------------------------------------------- undefined names


def bindings(tree):
    bound = set()
    stars = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Import):
            for a in node.names:
                bound.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name == "*":
                    stars.append(node)
                else:
                    bound.add(a.asname or a.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif type(node).__name__ in ("MatchAs", "MatchStar", "TypeVar", "ParamSpec", "TypeVarTuple"):
            if getattr(node, "name", None):
                bound.add(node.name)
        elif type(node).__name__ == "MatchMapping" and getattr(node, "rest", None):
            bound.add(node.rest)
    return bound, stars


def header_end(tree):
    """The line after which new imports go (0: before the first statement)."""
    body = tree.body
    end = None
    i = 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        end = body[0].end_lineno
        i = 1
    imports = False
    while i < len(body) and isinstance(body[i], (ast.Import, ast.ImportFrom)):
        end = body[i].end_lineno
        imports = imports or not (isinstance(body[i], ast.ImportFrom) and body[i].module == "__future__")
        i += 1
    if end is not None:
        return end, imports
    if not body:
        return 0, False
    first = body[0]
    starts = [first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])]
    return min(starts) - 1, False


def repair_undefined(repo, path, src, tree, rewrites):
    bound, stars = bindings(tree)
    for star in stars:
        dotted = repo.relative(path, star.level, star.module or "") if star.level \
            else repo.resolve_absolute(path, star.module or "")
        if dotted is None:
            return src  # names from an external star import cannot be known
        info = repo.info(dotted)
        if info is None or not info.ok or info.stars or info.getattr:
            return src
        bound |= {n for n in info.defined | info.imported if not n.startswith("_")}
    first_use = {}
    as_module = {}  # name -> attributes read from it
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in bound and node.id not in KNOWN_GLOBALS:
                first_use[node.id] = min(first_use.get(node.id, node.lineno), node.lineno)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            as_module.setdefault(node.value.id, set()).add(node.attr)
    plain, froms = {}, {}  # module -> (rule, [names])
    for name in sorted(first_use):
        if name == "datetime" and as_module.get(name, set()) & DATETIME_CLASS_ATTRS:
            froms.setdefault("datetime", (MISSING_STDLIB_IMPORT, []))[1].append(name)
        elif name in as_module and name in STDLIB and not name.startswith("_") \
                and name not in NOT_AUTO_IMPORTED:
            plain[name] = (MISSING_STDLIB_IMPORT, name)
            continue
        home = repo.home_of(name, path)
        if home is not None:
            froms.setdefault(home, (UNDEFINED_NAME_FROM_PACKAGE, []))[1].append(name)
        elif name in STDLIB_NAMES:
            froms.setdefault(STDLIB_NAMES[name], (MISSING_STDLIB_IMPORT, []))[1].append(name)
        elif name in as_module and repo.resolve_absolute(path, name) in repo.modules:
            plain[name] = (UNDEFINED_NAME_FROM_PACKAGE, name)
    if not plain and not froms:
        return src
    stmts = []
    for module in sorted(plain):
        rule, name = plain[module]
        stmts.append((f"import {module}", rule, [name]))
    for module in sorted(froms):
        rule, names = froms[module]
        stmts.append((f"from {module} import {', '.join(names)}", rule, names))
    nl = newline_of(src)
    lines = split_lines(src)
    at, after_imports = header_end(tree)
    if at > 0 and at <= len(lines) and not lines[at - 1].endswith(("\n", "\r")):
        lines[at - 1] += nl
    new = [s + nl for s, _, _ in stmts]
    if not after_imports and at < len(lines) and lines[at].strip():
        new.append(nl)  # a new import block stands apart from the code
    lines[at:at] = new
    for k, (s, rule, names) in enumerate(stmts):
        used = ", ".join(f"`{n}` (line {first_use[n]})" for n in names)
        rewrites.append((at + 1 + k, rule, f"added `{s}`: {used} used but never imported"))
    return "".join(lines)


# ---------------------------------------------------------------- package exports


def quiet_module(tree):
    """Whether importing the module only defines things: its top level is
    docstrings, imports, defs, classes, assignments and a main guard."""
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.Assign,
                             ast.AnnAssign) + FUNCTION_DEFS):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.If) and is_main_guard(node):
            continue
        return False
    return True


def imports_package(tree, package):
    """Whether the module imports its own package (`from . import x`,
    `from pkg import x`, `import pkg`): importing it from the package's
    `__init__` could close a cycle."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and not node.module:
                return True
            if node.level > 1:
                return True
            if node.level == 0 and node.module == package:
                return True
        elif isinstance(node, ast.Import):
            if any(a.name == package for a in node.names):
                return True
    return False


def imports_resolve(repo, path, tree):
    """Whether every absolute import at the module's top level resolves
    (the repository, the standard library, an installed package):
    importing it from the package must not break the package."""
    for node in tree.body:
        tops = []
        if isinstance(node, ast.Import):
            tops = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops = [node.module.split(".")[0]]
        for top in tops:
            if repo.resolve_absolute(path, top) is None and not repo.external(top):
                return False
    return True


def repair_exports(repo, report, checked):
    """The project package's `__init__.py` re-exports the public classes
    and functions of its modules that it does not bind yet, so
    `from package import Name` works for every name the code defines (the
    requirement's interface is usually written so)."""
    pkg = repo.package_module()
    if pkg is None:
        return
    init = repo.modules[pkg]
    if not init.endswith("__init__.py"):
        return
    base = init[: -len("__init__.py")]
    if not any(p.startswith(base) and p.endswith(".py") and not is_test_file(p) for p in checked):
        return
    src = repo.tree.get(init, "")
    tree, error = parse(src, init)
    if error is not None:
        return
    bound, _ = bindings(tree)
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body):
        return
    offers = {}  # name -> [module]
    for dotted, path in sorted(repo.modules.items()):
        if not dotted.startswith(pkg + ".") or dotted.count(".") != pkg.count(".") + 1:
            continue
        leaf = dotted.rsplit(".", 1)[1]
        if is_test_file(path) or leaf.startswith("_") or leaf in ("setup", "conftest"):
            continue
        mtree = repo.parsed(path)
        if mtree is None or not quiet_module(mtree) or imports_package(mtree, pkg) \
                or not imports_resolve(repo, path, mtree):
            continue
        for node in mtree.body:
            if isinstance(node, (ast.ClassDef,) + FUNCTION_DEFS) and not node.name.startswith("_") \
                    and node.name != "main":
                offers.setdefault(node.name, []).append(leaf)
    adds = {}
    for name, homes in offers.items():
        if name in bound or len(homes) != 1:
            continue  # bound already, or defined twice: no guess
        adds.setdefault(homes[0], []).append(name)
    if not adds:
        return
    nl = newline_of(src) if src else "\n"
    lines = split_lines(src)
    at, _ = header_end(tree)
    if at > 0 and at <= len(lines) and not lines[at - 1].endswith(("\n", "\r")):
        lines[at - 1] += nl
    stmts = [f"from .{leaf} import {', '.join(sorted(names))}" for leaf, names in sorted(adds.items())]
    lines[at:at] = [stmt + nl for stmt in stmts]
    new = "".join(lines)
    if parse(new, init)[1] is not None:
        return
    repo.update(init, new)
    report["files"][init] = new
    for k, stmt in enumerate(stmts):
        report["rewrites"].append({
            "path": init, "line": at + 1 + k, "rule": PACKAGE_EXPORTS,
            "detail": f"added `{stmt}`: the package exports what its modules define",
        })


# ---------------------------------------------------------------- temporary files


def empty_temp_file(node):
    """`tempfile.mkstemp()[1]` or `tempfile.NamedTemporaryFile(delete=False).name`:
    a path to a file that already exists, empty."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
            and node.slice.value == 1 and isinstance(node.value, ast.Call) \
            and dotted_tail(node.value.func) == "mkstemp" and not node.value.args \
            and not node.value.keywords:
        return "mkstemp()[1]"
    if isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Call) \
            and dotted_tail(node.value.func) == "NamedTemporaryFile" and not node.value.args \
            and any(k.arg == "delete" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.value.keywords) \
            and all(k.arg in ("delete", "mode") for k in node.value.keywords):
        return "NamedTemporaryFile(delete=False).name"
    return None


def unguarded_removal(tree):
    """Whether the file removes a file (`os.remove`, `os.unlink`,
    `.unlink()` without `missing_ok`) outside an `if ...exists(...)` and a
    `try`."""
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or dotted_tail(node.func) not in ("remove", "unlink"):
            continue
        if any(k.arg == "missing_ok" for k in node.keywords):
            continue
        if dotted_tail(node.func) == "remove" and not (
                isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "os"):
            continue  # `list.remove(x)`
        up, guarded = parents.get(node), False
        while up is not None and not guarded:
            if isinstance(up, ast.If) and any(
                    isinstance(n, ast.Call) and dotted_tail(n.func) in ("exists", "isfile")
                    for n in ast.walk(up.test)):
                guarded = True
            if isinstance(up, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                guarded = True
            up = parents.get(up)
        if not guarded:
            return True
    return False


def repair_empty_temp_file(src, tree, rewrites):
    """A test's data file made with `tempfile.mkstemp()[1]` exists and is
    empty, so code that loads a file when it exists reads nothing valid
    (`JSONDecodeError`): the path becomes one in a fresh temporary
    directory, where no file exists until the code writes it."""
    if unguarded_removal(tree):
        return src  # a `tearDown` removing the file would fail where the code never wrote it
    text = Text(src)
    edits = []
    for node in ast.walk(tree):
        what = empty_temp_file(node)
        if what is None:
            continue
        start = text.offset(node.lineno, node.col_offset)
        end = text.offset(node.end_lineno, node.end_col_offset)
        edits.append((start, end, 'os.path.join(tempfile.mkdtemp(), "data.json")'))
        rewrites.append((node.lineno, EMPTY_TEMP_FILE,
                         f"`{what}` (an existing, empty file) became a path in a fresh "
                         f"temporary directory: `{segment(src, node)}`"))
    return apply_edits(src, edits) if edits else src


# ---------------------------------------------------------------- float equality


def is_float_literal(node):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, float)


def repair_float_equal(src, tree, rewrites):
    text = Text(src)
    edits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("assertEqual", "assertEquals")):
            continue
        pair = list(node.args[:2]) + [k.value for k in node.keywords if k.arg in ("first", "second")]
        if not any(is_float_literal(a) for a in pair):
            continue
        f = node.func
        end = text.offset(f.end_lineno, f.end_col_offset)
        edits.append((end - len(f.attr), end, "assertAlmostEqual"))
        if len(node.args) > 2:  # assertAlmostEqual's third parameter is `places`
            third = node.args[2]
            at = text.offset(third.lineno, third.col_offset)
            edits.append((at, at, "msg="))
        rewrites.append((node.lineno, FLOAT_ASSERT_EQUAL,
                         f"`{f.attr}` on a float became `assertAlmostEqual`: {segment(src, node)}"))
    return apply_edits(src, edits) if edits else src


# ---------------------------------------------------------------- stubs


def dotted_tail(node):
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def stub_kind(fn):
    """What a do-nothing body consists of, or None when it does something."""
    body = fn.body
    kinds = []
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
        if not body:
            return "a docstring"
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            kinds.append("`pass`")
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and stmt.value.value is Ellipsis:
            kinds.append("`...`")
        elif isinstance(stmt, ast.Return) and stmt.value is None:
            kinds.append("`return`")
        elif isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Constant) \
                and stmt.value.value is None:
            kinds.append("`return None`")
        elif isinstance(stmt, ast.Raise) and stmt.exc is not None \
                and dotted_tail(stmt.exc) == "NotImplementedError":
            kinds.append("`raise NotImplementedError`")
        else:
            return None
    return " and ".join(dict.fromkeys(kinds)) if kinds else None


def abstract_class(cls):
    for b in cls.bases:
        if dotted_tail(b) in ABSTRACT_BASES:
            return True
    for k in cls.keywords:
        if k.arg == "metaclass" and dotted_tail(k.value) == "ABCMeta":
            return True
    return False


def overridden_methods(repo):
    """class name -> method names that a subclass somewhere in the tree defines."""
    out = {}
    for path, src in repo.tree.items():
        if not path.endswith(".py") or not src:
            continue
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = {n.name for n in node.body
                           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                for b in node.bases:
                    name = dotted_tail(b)
                    if name:
                        out.setdefault(name, set()).update(methods)
    return out


def repo_classes(repo):
    """Names of the classes defined anywhere in the tree."""
    names = set()
    for path, src in repo.tree.items():
        if not path.endswith(".py") or not src:
            continue
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        names.update(n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef))
    return names


def overrides_outside_base(cls, defined):
    """Whether `cls` derives from a class the repository does not define
    (`BaseHTTPRequestHandler`): an empty method there is an override that
    silences the base's behaviour (`log_message`), not a stub."""
    for b in cls.bases:
        name = dotted_tail(b)
        if name and name not in defined and name != "object":
            return True
    return False


def stub_problems(repo, tree, problems, overridden):
    defined = repo_classes(repo)

    def visit(body, cls):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, node)
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                check(node, cls)
                visit(node.body, None)
                continue
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit([s for s in sub if isinstance(s, ast.AST)], cls)

    def check(fn, cls):
        kind = stub_kind(fn)
        if kind is None:
            return
        if any(dotted_tail(d) in ABSTRACT_DECORATORS for d in fn.decorator_list):
            return
        if fn.name in EMPTY_OK_DUNDERS:
            return
        if cls is not None:
            if abstract_class(cls) or fn.name in overridden.get(cls.name, ()):
                return
            if overrides_outside_base(cls, defined) and "NotImplementedError" not in kind:
                return
        name = f"{cls.name}.{fn.name}" if cls is not None else fn.name
        problems.append((fn.lineno, STUB,
                         f"`{name}` at line {fn.lineno} does nothing (its body is only {kind}): "
                         f"implement it"))

    visit(tree.body, None)


# ---------------------------------------------------------------- call arity

FUNCTION_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Decorators that keep a function's signature as written.
PLAIN_DECORATORS = {"staticmethod", "classmethod"}


class Defs:
    """The repository's top-level functions and classes, found through the
    imports that bind them (only plain top-level statements are followed:
    a name bound under `if`/`try` is not known, so it is never checked)."""

    def __init__(self, repo):
        self.repo = repo

    def tree(self, dotted):
        path = self.repo.modules.get(dotted)
        return None if path is None else self.repo.parsed(path)

    def find(self, dotted, name, depth=0):
        """(module, node): the def or class `from dotted import name` binds."""
        tree = self.tree(dotted)
        if tree is None or depth > 5:
            return None
        found = None
        for node in tree.body:
            if isinstance(node, FUNCTION_DEFS + (ast.ClassDef,)):
                if node.name == name:
                    found = (dotted, node)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name != "*" and (a.asname or a.name) == name:
                        found = self.imported(self.repo.modules[dotted], node, a.name, depth)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Import)):
                bound = set()
                if isinstance(node, ast.Import):
                    bound = {a.asname or a.name.split(".")[0] for a in node.names}
                else:
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                        target_names(t, bound)
                if name in bound:
                    found = None
        return found

    def imported(self, path, node, name, depth=0):
        if node.level:
            source = self.repo.relative(path, node.level, node.module or "")
        else:
            source = self.repo.resolve_absolute(path, node.module or "")
        if not source or source not in self.repo.modules:
            return None
        return self.find(source, name, depth + 1)


def plain(fn):
    return all(dotted_tail(d) in PLAIN_DECORATORS for d in fn.decorator_list)


def method_of(cls, name):
    """The plain method `name` defined in `cls`'s own body, if it is the
    one a call reaches: None when a base class could define it instead."""
    for node in cls.body:
        if isinstance(node, FUNCTION_DEFS) and node.name == name:
            return node if plain(node) else None
    return None


def closed_class(cls):
    """Whether every attribute of `cls`'s instances is visible in its body:
    no base, no `__getattr__`, no `__slots__` tricks, no decorator."""
    if cls.bases or cls.keywords or cls.decorator_list:
        return False
    return not any(isinstance(n, FUNCTION_DEFS) and n.name in ("__getattr__", "__getattribute__")
                   for n in cls.body)


def attributes(cls):
    """Names an instance of `cls` has: its methods, class-level names and
    `self.<name>` assignments (and `setattr` makes it unknown: None)."""
    names = set()
    for node in cls.body:
        if isinstance(node, FUNCTION_DEFS + (ast.ClassDef,)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                target_names(t, names)
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load) \
                and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("setattr", "vars") or \
                isinstance(node, ast.Attribute) and node.attr == "__dict__":
            return None
    return names


def constructor(cls):
    """The `__init__` a call of `cls` runs, "object" when it is object's,
    or None when unknown (bases, decorators, `__new__`, a metaclass)."""
    if cls.decorator_list or cls.keywords:
        return None
    if any(isinstance(n, FUNCTION_DEFS) and n.name == "__new__" for n in cls.body):
        return None
    init = method_of(cls, "__init__")
    if init is not None:
        return init
    if cls.bases or any(isinstance(n, FUNCTION_DEFS) and n.name == "__init__" for n in cls.body):
        return None
    return "object"


class Signature:
    def __init__(self, fn, bound):
        a = fn.args
        self.name = fn.name
        positional = [p.arg for p in a.posonlyargs + a.args]
        posonly = len(a.posonlyargs)
        defaults = len(a.defaults)
        if bound and positional:
            positional = positional[1:]
            posonly = max(posonly - 1, 0)
        self.positional = positional
        self.by_keyword = positional[posonly:]
        self.required = positional[: max(len(positional) - defaults, 0)]
        self.kwonly = [k.arg for k in a.kwonlyargs]
        self.kwonly_required = [k.arg for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is None]
        self.varargs = a.vararg is not None
        self.kwargs = a.kwarg is not None
        optional = positional[len(self.required):]
        parts = list(self.required) + [f"{p}=..." for p in optional]
        if self.varargs:
            parts.append(f"*{a.vararg.arg}")
        elif self.kwonly:
            parts.append("*")
        parts += [k if k in self.kwonly_required else f"{k}=..." for k in self.kwonly]
        if self.kwargs:
            parts.append(f"**{a.kwarg.arg}")
        self.text = f"({', '.join(parts)})"

    def mismatch(self, call):
        """What is wrong with `call`'s arguments, or None."""
        if any(isinstance(a, ast.Starred) for a in call.args):
            return None
        if any(k.arg is None for k in call.keywords):
            return None
        n = len(call.args)
        if n > len(self.positional) and not self.varargs:
            takes = len(self.positional)
            return (f"passes {n} positional argument{'s' if n != 1 else ''}, but it takes "
                    f"{takes if takes else 'none'}")
        names = [k.arg for k in call.keywords]
        for k in names:
            if k not in self.by_keyword and k not in self.kwonly and not self.kwargs:
                return f"passes `{k}=`, but it has no parameter `{k}`"
        covered = set(self.positional[:n]) | set(names)
        missing = [p for p in self.required + self.kwonly_required if p not in covered]
        if missing:
            return f"does not pass {', '.join(f'`{m}`' for m in missing)}"
        return None


def rebound_names(tree):
    """Names bound other than by a top-level def, class or import: a call
    of one of them may mean something else."""
    top = {id(n) for n in tree.body}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            out.add(node.id)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, (FUNCTION_DEFS + (ast.ClassDef,))) and id(node) not in top:
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
            for a in node.names:
                out.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            out.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
    return out


def arity_problems(repo, path, src, tree, problems):
    """Calls of the repository's own functions, classes and methods whose
    arguments do not fit the definition: a TypeError waiting to happen."""
    defs = Defs(repo)
    here = canonical(path)
    known = {}  # name -> (module, node), from top-level defs and imports
    counts = {}
    for node in tree.body:
        names = []
        if isinstance(node, FUNCTION_DEFS + (ast.ClassDef,)):
            names = [(node.name, (here or path, node))]
        elif isinstance(node, ast.ImportFrom):
            names = [(a.asname or a.name, defs.imported(path, node, a.name))
                     for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Import):
            names = [(a.asname or a.name.split(".")[0], None) for a in node.names]
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            bound = set()
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                target_names(t, bound)
            names = [(n, None) for n in bound]
        for name, found in names:
            counts[name] = counts.get(name, 0) + 1
            known[name] = found
    rebound = rebound_names(tree)
    known = {n: f for n, f in known.items() if f is not None and counts[n] == 1 and n not in rebound}

    def klass(call):
        """The repository class `call` constructs, or None."""
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            found = known.get(call.func.id)
            if found and isinstance(found[1], ast.ClassDef):
                return found
        return None

    def instances(fn_nodes, key):
        """Receivers (by `key`) always assigned a call of one repository class."""
        seen = {}
        for fn in fn_nodes:
            for node in ast.walk(fn):
                targets = []
                if isinstance(node, ast.Assign):
                    targets = [(t, node.value) for t in node.targets]
                elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                    targets = [(node.target, node.value)]
                elif isinstance(node, (ast.For, ast.AsyncFor)):
                    targets = [(node.target, None)]
                elif isinstance(node, (ast.With, ast.AsyncWith)):
                    targets = [(i.optional_vars, None) for i in node.items if i.optional_vars is not None]
                for target, value in targets:
                    k = key(target)
                    if k is None:
                        continue
                    found = klass(value)
                    previous = seen.get(k, found)
                    seen[k] = found if previous is not None and found is not None \
                        and previous[1] is found[1] else None
        return {k: v for k, v in seen.items() if v is not None}

    def self_attr(target):
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id == "self":
            return target.attr
        return None

    def local(target):
        return target.id if isinstance(target, ast.Name) else None

    def check(call, found, bound, what):
        module, fn = found
        sig = Signature(fn, bound)
        wrong = sig.mismatch(call)
        if wrong is None:
            return
        problems.append((call.lineno, WRONG_ARGUMENTS,
                         f"`{segment(src, call)}` at line {call.lineno} {wrong}: `{what}{sig.text}` "
                         f"in `{module}` is defined so. Call it with the parameters it has"))

    def visit_function(fn, attrs):
        locals_ = instances([fn], local)
        params = {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name):
                found = known.get(f.id)
                if found is None or f.id in params:
                    continue
                if isinstance(found[1], ast.ClassDef):
                    init = constructor(found[1])
                    if init == "object":
                        if node.args or node.keywords:
                            problems.append((node.lineno, WRONG_ARGUMENTS,
                                             f"`{segment(src, node)}` at line {node.lineno} passes "
                                             f"arguments, but `{found[1].name}()` in `{found[0]}` takes none "
                                             f"(it has no `__init__`). Call it with the parameters "
                                             f"it has"))
                    elif init is not None:
                        check(node, (found[0], init), True, found[1].name)
                elif plain(found[1]):
                    check(node, found, False, found[1].name)
            elif isinstance(f, ast.Attribute):
                recv = f.value
                cls = None
                if isinstance(recv, ast.Name) and recv.id in locals_:
                    cls = locals_[recv.id]
                elif self_attr(recv) in attrs:
                    cls = attrs[self_attr(recv)]
                if cls is None:
                    continue
                method = method_of(cls[1], f.attr)
                if method is None:
                    has = attributes(cls[1]) if closed_class(cls[1]) else None
                    # A method the requirement names is the code's to add:
                    # the test is right to call it.
                    if has is not None and f.attr not in has and not f.attr.startswith("__") \
                            and not names_word(repo.requirement, f.attr):
                        methods = sorted(n.name for n in cls[1].body
                                         if isinstance(n, FUNCTION_DEFS) and not n.name.startswith("_"))
                        shown = f" It has: {', '.join(methods)}." if methods else ""
                        problems.append((node.lineno, MISSING_METHOD,
                                         f"`{segment(src, node)}` at line {node.lineno}: "
                                         f"`{cls[1].name}` in `{cls[0]}` has no method "
                                         f"`{f.attr}`.{shown}"))
                    continue
                static = any(dotted_tail(d) == "staticmethod" for d in method.decorator_list)
                check(node, (cls[0], method), not static, f"{cls[1].name}.{f.attr}")

    for node in tree.body:
        if isinstance(node, FUNCTION_DEFS):
            visit_function(node, {})
        elif isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, FUNCTION_DEFS)]
            attrs = instances(methods, self_attr)
            for m in methods:
                visit_function(m, attrs)


# ---------------------------------------------------------------- coverage

# Exceptions a check of the code's refusals is not asked for.
NOT_REFUSALS = {"NotImplementedError", "AssertionError", "SystemExit", "KeyboardInterrupt",
                "StopIteration", "Exception", "BaseException", "RuntimeError"}


def interface_names(repo):
    """What the code offers: (callables, exceptions raised), each a dict
    name -> module. Callables: public top-level functions (not `main`) and
    public methods of public classes; exceptions: the classes deriving from
    an exception that the code raises (its own or built-in ones)."""
    callables, raised, classes = {}, {}, {}
    for dotted in repo.code_modules(None):
        tree = repo.parsed(repo.modules[dotted])
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, FUNCTION_DEFS) and not node.name.startswith("_") and node.name != "main":
                callables.setdefault(node.name, dotted)
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                classes[node.name] = (dotted, [dotted_tail(b) or "" for b in node.bases], node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                name = dotted_tail(node.exc)
                if name and name[0].isupper():
                    raised.setdefault(name, dotted)
    exceptions = set()
    changed = True
    while changed:
        changed = False
        for name, (_, bases, _) in classes.items():
            if name not in exceptions and any(
                    b in exceptions or b.endswith(("Error", "Exception")) for b in bases):
                exceptions.add(name)
                changed = True
    for name, (dotted, _, node) in classes.items():
        if name in exceptions:
            continue
        for item in node.body:
            if isinstance(item, FUNCTION_DEFS) and not item.name.startswith("_"):
                callables.setdefault(item.name, dotted)
    refusals = {name: dotted for name, dotted in raised.items()
                if name not in NOT_REFUSALS and (name in exceptions or name in dir(builtins))}
    return callables, refusals


def names_word(text, word):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])", text) is not None


def coverage_problems(repo, paths, report, requirement):
    """What of the code's interface that `requirement` names no test of
    `paths` uses: a function or method no test names (in code or in a
    string: `'/stats/'`), an exception the code raises that no test
    expects (`assertRaises`, `pytest.raises`)."""
    tests = [p for p in paths if is_test_file(p)]
    if not tests:
        return
    callables, refusals = interface_names(repo)
    callables = {n: m for n, m in callables.items() if names_word(requirement, n)}
    refusals = {n: m for n, m in refusals.items() if names_word(requirement, n)}
    used, expected = set(), set()
    for path in tests:
        tree = repo.parsed(path)
        if tree is None:
            return  # reported as a syntax problem; coverage waits for it
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add((node.asname or node.name).split(".")[-1])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
            if isinstance(node, ast.Call) and dotted_tail(node.func) in (
                    "assertRaises", "assertRaisesRegex", "raises"):
                for arg in node.args[:1]:
                    for sub in ast.walk(arg):
                        name = dotted_tail(sub) if isinstance(sub, (ast.Name, ast.Attribute)) else None
                        if name:
                            expected.add(name)
    untested = sorted(n for n in callables if n not in used)
    unexpected = sorted(n for n in refusals if n not in expected)
    if not untested and not unexpected:
        return
    parts = []
    if untested:
        shown = ", ".join(f"`{n}`" for n in untested[:8])
        more = f" and {len(untested) - 8} more" if len(untested) > 8 else ""
        parts.append(f"no test calls {shown}{more}")
    if unexpected:
        shown = ", ".join(f"`{n}`" for n in unexpected[:8])
        parts.append(f"no test expects {shown} (the code raises it: check the refusal with "
                     f"`with self.assertRaises(...)` where the requirement describes it)")
    report["problems"].append({
        "path": sorted(tests)[0], "line": 1, "rule": UNTESTED,
        "message": "the suite leaves part of the interface untested: " + "; ".join(parts)
                   + ". Add a test for each, through the interface, as the requirement describes it",
    })


# ---------------------------------------------------------------- storage

# Serializers whose `dump` writes a stream: `json.dump(data, f)`.
SERIALIZERS = {"json", "pickle", "marshal", "yaml", "toml", "tomli_w", "plistlib"}
# Calls that read saved data back, whatever the receiver.
READ_CALLS = {
    "load", "loads", "safe_load", "full_load", "read", "readline", "readlines",
    "read_text", "read_bytes", "reader", "DictReader", "readfp", "read_file",
    "read_string", "fromfile", "loadtxt", "genfromtxt", "read_csv", "read_json",
}


def saves(node):
    """How `node` (a call) saves serialized data to a file, or None."""
    recv, name = call_name(node)
    if recv in SERIALIZERS and name in ("dump", "safe_dump"):
        return f"{recv}.{name}"
    # `f.write(json.dumps(data))`, `path.write_text(json.dumps(data))`.
    if name in ("write", "write_text", "write_bytes", "writelines") and node.args:
        inner = node.args[0]
        if isinstance(inner, ast.Call):
            r, n = call_name(inner)
            if r in SERIALIZERS and n in ("dumps", "safe_dump", "dump"):
                return f"{name}({r}.{n}(...))"
    return None


def open_mode(node, position):
    """The mode of an `open` call (argument `position` or `mode=`): "r"
    when absent, None when computed."""
    mode = node.args[position] if len(node.args) > position else None
    for kw in node.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return "r"
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return mode.value
    return None


def reads(node):
    """Whether `node` (a call) may read data from a file or stream."""
    recv, name = call_name(node)
    if name in READ_CALLS:
        return True
    if name != "open":
        return False
    # `open(path, mode)` and `io.open(...)`; `path.open(mode)` otherwise.
    builtin = not isinstance(node.func, ast.Attribute) or recv in ("io", "codecs", "os")
    mode = open_mode(node, 1 if builtin else 0)
    return mode is None or "r" in mode or "+" in mode


def storage_problems(repo, tree, problems):
    """Data saved in `path` that no code file of the repository ever reads
    back: every new run (each invocation, each new instance) starts empty."""
    saved = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            how = saves(node)
            if how is not None:
                saved.append((node.lineno, how))
    if not saved:
        return
    for _, other_tree in repo.code_trees():
        if any(isinstance(n, ast.Call) and reads(n) for n in ast.walk(other_tree)):
            return
    line, how = min(saved)
    problems.append((line, SAVED_NEVER_LOADED,
                     f"line {line} saves data ({how}), but no code ever reads a saved file back: "
                     f"every new run (each command-line invocation, each new instance) starts "
                     f"empty and what was saved is lost. Load the file when it exists (for "
                     f"instance in `__init__`, before the first use), and save after each change"))


# ---------------------------------------------------------------- test rules


def has_call(node):
    return any(isinstance(n, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr))
               for n in ast.walk(node))


def same(a, b):
    return not has_call(a) and ast.dump(a) == ast.dump(b)


def truthy_literal(node):
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return len(node.elts) > 0
    if isinstance(node, ast.Dict):
        return len(node.keys) > 0
    return False


def falsy_constant(node):
    return isinstance(node, ast.Constant) and not node.value and node.value is not Ellipsis


def literal(node):
    return isinstance(node, (ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict,
                             ast.JoinedStr, ast.Lambda, ast.ListComp, ast.DictComp,
                             ast.SetComp))


def is_none(node):
    return isinstance(node, ast.Constant) and node.value is None


def checked_call(node):
    """A call whose None result is the assertion's subject (not a lookup)."""
    if not isinstance(node, ast.Call):
        return False
    name = (dotted_tail(node.func) or "").lower().lstrip("_")
    return not name.startswith(LOOKUP_PREFIXES)


def call_name(node):
    f = node.func
    if isinstance(f, ast.Attribute):
        recv = f.value.id if isinstance(f.value, ast.Name) else None
        return recv, f.attr
    if isinstance(f, ast.Name):
        return None, f.id
    return None, None


def classify(node):
    """None, or (kind, node) with kind in live / tautology / none."""
    if isinstance(node, ast.Assert):
        t = node.test
        if truthy_literal(t):
            return "tautology"
        if isinstance(t, ast.Compare) and len(t.ops) == 1:
            op, right = t.ops[0], t.comparators[0]
            if isinstance(op, (ast.Eq, ast.Is, ast.GtE, ast.LtE)) and same(t.left, right):
                return "tautology"
            if isinstance(op, (ast.Eq, ast.Is)):
                if (checked_call(t.left) and is_none(right)) or (checked_call(right) and is_none(t.left)):
                    return "none"
        return "live"
    if isinstance(node, ast.Raise) and node.exc is not None \
            and dotted_tail(node.exc) == "AssertionError":
        return "live"
    if not isinstance(node, ast.Call):
        return None
    recv, name = call_name(node)
    if not name:
        return None
    if name.startswith("assert"):
        args = node.args
        if name == "assertTrue" and args and truthy_literal(args[0]):
            return "tautology"
        if name == "assertFalse" and args and falsy_constant(args[0]):
            return "tautology"
        if name in EQUALITY_ASSERTS and len(args) >= 2 and same(args[0], args[1]):
            return "tautology"
        if name == "assertIsNotNone" and args and literal(args[0]) and not is_none(args[0]):
            return "tautology"
        if name == "assertIsNone" and args and is_none(args[0]):
            return "tautology"
        if name == "assertIn" and len(args) >= 2 and isinstance(args[1], (ast.List, ast.Tuple, ast.Set)) \
                and any(same(args[0], e) for e in args[1].elts):
            return "tautology"
        if name == "assertIsNone" and args and checked_call(args[0]):
            return "none"
        if name in ("assertEqual", "assertEquals", "assertIs") and len(args) >= 2:
            if (checked_call(args[0]) and is_none(args[1])) or (checked_call(args[1]) and is_none(args[0])):
                return "none"
        return "live"
    if name.startswith("fail") and recv in ("self", "cls", "pytest", None):
        return "live"
    if name in ("raises", "warns", "deprecated_call") and recv in ("pytest", None):
        return "live"
    return None


def assertion_nodes(fn):
    for node in ast.walk(fn):
        kind = classify(node)
        if kind is not None:
            yield kind, node


def test_problems(src, tree, problems):
    """Problems of the test functions; returns the file's live assertion count."""
    module_funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    classes = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, node)

    def methods_of(cls, seen=None):
        seen = seen or set()
        if cls.name in seen:
            return {}
        seen.add(cls.name)
        out = {}
        for b in cls.bases:
            base = classes.get(dotted_tail(b) or "")
            if base is not None:
                out.update(methods_of(base, seen))
        for n in cls.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[n.name] = n
        return out

    memo = {}

    def asserts_via_helpers(fn, methods, depth=0):
        """Whether `fn` calls a helper of this file that asserts."""
        key = id(fn)
        if key in memo:
            return memo[key]
        memo[key] = False
        found = False
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call) or found:
                continue
            recv, name = call_name(node)
            target = None
            if recv in ("self", "cls") and name in methods:
                target = methods[name]
            elif recv is None and name in module_funcs:
                target = module_funcs[name]
            if target is None or target is fn or depth > 5:
                continue
            if any(k in ("live", "none") for k, _ in assertion_nodes(target)) \
                    or asserts_via_helpers(target, methods, depth + 1):
                found = True
        memo[key] = found
        return found

    def tests():
        def visit(body, cls):
            for n in body:
                if isinstance(n, ast.ClassDef):
                    visit(n.body, n)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test"):
                    yield_list.append((cls, n))
        yield_list = []
        visit(tree.body, None)
        return yield_list

    for cls, fn in tests():
        if any("skip" in (dotted_tail(d) or "") for d in fn.decorator_list):
            continue
        methods = methods_of(cls) if cls is not None else {}
        name = f"{cls.name}.{fn.name}" if cls is not None else fn.name
        kinds = list(assertion_nodes(fn))
        live = [k for k, _ in kinds if k in ("live", "none")]
        for kind, node in kinds:
            if kind == "tautology":
                problems.append((node.lineno, TAUTOLOGY,
                                 f"`{name}`: `{segment(src, node)}` at line {node.lineno} can never "
                                 f"fail: compare what the code under test returns with the "
                                 f"expected value"))
        helpers = asserts_via_helpers(fn, methods)
        how = "`self.assertEqual(actual, expected)`" if cls is not None else "`assert actual == expected`"
        if not live and not helpers and not any(k == "tautology" for k, _ in kinds):
            problems.append((fn.lineno, NO_ASSERTION,
                             f"`{name}` at line {fn.lineno} asserts nothing: call the code under "
                             f"test and check its result with {how}"))
        elif live and not helpers and all(k == "none" for k in live):
            problems.append((fn.lineno, CHECKS_ONLY_NONE,
                             f"`{name}` at line {fn.lineno} only checks that calls return None: "
                             f"assert on the values they return or on the state they change"))
        elif live and not helpers:
            setups = [m for n, m in methods.items() if n in ("setUp", "asyncSetUp", "setUpClass")]
            own = disconnected(fn, setups)
            if own:
                first = own[0]
                problems.append((first.lineno, DISCONNECTED,
                                 f"`{name}`: `{segment(src, first)}` at line {first.lineno} checks only "
                                 f"values the test built itself, never what the code returned or "
                                 f"stored: call the code inside the check (its result, or a function "
                                 f"that reads its state)"))
        for node in ast.walk(fn):
            if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                for h in node.handlers:
                    if swallows(h):
                        caught = segment(src, h.type) if h.type is not None else ""
                        problems.append((h.lineno, SWALLOWED_FAILURE,
                                         f"`{name}`: `except{' ' + caught if caught else ''}: pass` "
                                         f"at line {h.lineno} hides failures: remove the try/except "
                                         f"(expect an error with self.assertRaises or pytest.raises)"))
    # A call of the file's own assertion helper is counted in the helper.
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return sum(
        1 for node in ast.walk(tree)
        if classify(node) in ("live", "none")
        and not (isinstance(node, ast.Call) and call_name(node)[1] in own)
    )


# Calls that build a value from their arguments and observe nothing else.
PLAIN_CALLS = {
    "list", "dict", "set", "tuple", "frozenset", "str", "int", "float", "bool", "bytes",
    "len", "sorted", "reversed", "range", "repr", "abs", "min", "max", "sum", "round",
    "enumerate", "zip", "map", "filter", "any", "all", "isinstance", "type",
}
# Assertions about what a block raises, warns or logs: their subject is the
# block, not their arguments.
BLOCK_ASSERTS = ("assertRaises", "assertWarns", "assertLogs", "assertNoLogs")


def disconnected(fn, setups):
    """The live assertions of `fn` when every one checks only values the
    test built itself from literals (`self.tasks = []` then
    `assertEqual(self.tasks, ['a'])`): values no call of the code made,
    returned, read or was handed. Checks that a call returns None are left
    out. Empty when one of them is connected."""
    bodies = [fn] + setups
    assigned = {}
    handed = set()

    def key(node):
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in ("self", "cls"):
            return "self." + node.attr
        return None

    def targets(t):
        return t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]

    for body in bodies:
        for node in ast.walk(body):
            pairs = []
            if isinstance(node, ast.Assign):
                pairs = [(t, node.value) for target in node.targets for t in targets(target)]
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                pairs = [(node.target, node.value)]
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                pairs = [(t, node.iter) for t in targets(node.target)]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                pairs = [(t, node.context_expr) for t in targets(node.optional_vars)]
            elif isinstance(node, ast.NamedExpr):
                pairs = [(node.target, node.value)]
            for target, value in pairs:
                k = key(target)
                if k:
                    assigned.setdefault(k, []).append(value)
            if isinstance(node, ast.Call) and classify(node) is None \
                    and not (isinstance(node.func, ast.Name) and node.func.id in PLAIN_CALLS):
                for a in list(node.args) + [kw.value for kw in node.keywords]:
                    k = key(a)
                    if k:
                        handed.add(k)

    def root(node):
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return node

    def connected(expr, seen):
        k = key(expr)
        if k is not None:
            if k in ("self", "cls") or k in seen:
                return False
            seen.add(k)
            if k in handed:
                return True
            if k in assigned:
                return any(connected(v, seen) for v in assigned[k])
            # Imported, global or set elsewhere: not the test's own.
            return k.startswith("self.") or not hasattr(builtins, k)
        if isinstance(expr, ast.Call):
            f = expr.func
            if isinstance(f, ast.Name) and f.id not in PLAIN_CALLS:
                return True
            if isinstance(f, ast.Attribute):
                base = root(f.value)
                if isinstance(base, ast.Name) and base.id not in assigned \
                        and base.id not in ("self", "cls"):
                    return True  # a module's function: json.load, todo.add
        return any(connected(c, seen) for c in ast.iter_child_nodes(expr))

    live = []
    for kind, node in assertion_nodes(fn):
        # A check that a call returns None connects nothing: a test that
        # adds one beside its own-values check still checks nothing.
        if kind != "live":
            continue
        if isinstance(node, ast.Call):
            name = call_name(node)[1] or ""
            if name.startswith(BLOCK_ASSERTS) or name.startswith("fail"):
                return []
            # The checked values, not the message; a mock's own assertion
            # (`save.assert_called_once_with()`) checks its receiver.
            args = list(node.args[:2]) + [kw.value for kw in node.keywords if kw.arg != "msg"]
            if isinstance(node.func, ast.Attribute) and call_name(node)[0] not in ("self", "cls"):
                args.append(node.func.value)
        elif isinstance(node, ast.Assert):
            args = [node.test]
        else:
            return []
        if any(connected(a, set()) for a in args):
            return []
        live.append(node)
    return live


def swallows(handler):
    broad = {"Exception", "BaseException", "AssertionError"}
    if handler.type is not None:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if not any(dotted_tail(t) in broad for t in types):
            return False
    return all(
        isinstance(s, (ast.Pass, ast.Continue))
        or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and s.value.value is Ellipsis)
        for s in handler.body
    )


# ---------------------------------------------------------------- driver


def parse(src, path):
    """(tree, None) or (None, (line, message))."""
    try:
        compile(src, path, "exec", dont_inherit=True)
        return ast.parse(src, path), None
    except SyntaxError as e:
        line = e.lineno or 1
        code = (e.text or "").strip()
        shown = f" (`{code[:70]}`)" if code else ""
        lines = src.rstrip("\n").split("\n")
        if line >= len(lines) and not src.endswith("\n") and "string" in e.msg:
            # The file stops inside a string on its last line: in a JSON
            # answer, an unescaped `"` in the code ended the file's content.
            return None, (line, f"the file stops in the middle of line {line}{shown}: a double quote "
                                f"inside the code ended the JSON string that holds the file. Write the "
                                f"whole file again, using single quotes for every Python string")
        return None, (line, f"syntax error at line {line}: {e.msg}{shown}: fix it so the file compiles")
    except (ValueError, RecursionError, MemoryError) as e:
        return None, (1, f"the file does not compile ({type(e).__name__}: {e}): fix it")


def requote_fstrings(src):
    """The text with the quotes nested inside f-string fields swapped for the
    other kind (`f'{t['id']}'` -> `f'{t["id"]}'`): Python 3.12 accepts the
    same quote inside a field, 3.11 and earlier do not, and small models
    write it all the time. Only single-line f-strings are touched."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        starts_f = (
            c in "fF"
            and i + 1 < n
            and src[i + 1] in "'\""
            and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))
            and not src.startswith(src[i + 1] * 3, i + 1)
        )
        if not starts_f:
            if c in "'\"":
                # An ordinary string: copy it whole.
                j = i + 1
                while j < n and src[j] != c and src[j] != "\n":
                    j += 2 if src[j] == "\\" else 1
                out.append(src[i:j + 1])
                i = j + 1
                continue
            if c == "#":
                j = src.find("\n", i)
                j = n if j < 0 else j
                out.append(src[i:j])
                i = j
                continue
            out.append(c)
            i += 1
            continue
        quote = src[i + 1]
        other = "'" if quote == '"' else '"'
        out.append(src[i:i + 2])
        j = i + 2
        depth = 0
        while j < n and src[j] != "\n":
            ch = src[j]
            if depth == 0:
                if ch == "\\":
                    out.append(src[j:j + 2])
                    j += 2
                    continue
                if ch == quote:
                    out.append(ch)
                    j += 1
                    break
                if ch == "{":
                    if src.startswith("{{", j):
                        out.append("{{")
                        j += 2
                        continue
                    depth = 1
                out.append(ch)
                j += 1
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            out.append(other if ch == quote else ch)
            j += 1
        i = j
    return "".join(out)


def check_file(repo, path, overridden, report):
    src = repo.tree.get(path)
    if src is None:
        return
    original = src
    test = is_test_file(path)
    rewrites, problems = [], []
    tree, error = parse(src, path)
    if error is not None:
        requoted = requote_fstrings(src)
        if requoted != src:
            new_tree, new_error = parse(requoted, path)
            if new_error is None:
                rewrites.append((error[0], FSTRING_QUOTES,
                                 "quotes nested in f-string fields swapped for the other kind "
                                 "(Python before 3.12 does not accept the same quote inside)"))
                src, tree, error = requoted, new_tree, None
                repo.update(path, src)
    if error is not None:
        problems.append((error[0], SYNTAX, error[1]))
        if test:
            report["assertions"][path] = 0
    else:
        for repair in (
            lambda s, t, r: repair_from_imports(repo, path, s, t, r),
            (lambda s, t, r: repair_empty_temp_file(s, t, r)) if test else (lambda s, t, r: s),
            lambda s, t, r: repair_undefined(repo, path, s, t, r),
            repair_float_equal,
        ):
            staged = []
            new = repair(src, tree, staged)
            if new == src:
                continue
            new_tree, new_error = parse(new, path)
            if new_error is not None:
                continue  # never hand back a repair that does not compile
            src, tree = new, new_tree
            rewrites.extend(staged)
            repo.update(path, src)
        import_problems(repo, path, src, tree, problems)
        arity_problems(repo, path, src, tree, problems)
        if test:
            report["assertions"][path] = test_problems(src, tree, problems)
        else:
            stub_problems(repo, tree, problems, overridden)
            storage_problems(repo, tree, problems)
    if src != original:
        report["files"][path] = src
    for line, rule, detail in rewrites:
        report["rewrites"].append({"path": path, "line": line, "rule": rule, "detail": detail})
    for line, rule, message in sorted(problems, key=lambda p: (p[0], p[1])):
        report["problems"].append({"path": path, "line": line, "rule": rule, "message": message})


def main():
    if not STDLIB:
        sys.stderr.write("pycheck needs Python 3.10 or newer (sys.stdlib_module_names)\n")
        return 2
    data = json.load(sys.stdin)
    tree = {str(k): (v or "") for k, v in (data.get("tree") or {}).items()}
    repo = Repo(tree, data.get("package") or None)
    repo.requirement = data.get("requirement") or ""
    report = {"files": {}, "rewrites": [], "problems": [], "assertions": {}}
    paths = [p for p in dict.fromkeys(data.get("check") or []) if p.endswith(".py") and p in tree]
    overridden = overridden_methods(repo)
    for path in sorted(paths, key=is_test_file):
        check_file(repo, path, overridden, report)
    repair_exports(repo, report, paths)
    if repo.requirement:
        coverage_problems(repo, paths, report, repo.requirement)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
