"""The public interface of a Python project, without function bodies.

Input (stdin, JSON): {"files": {path: content}} for the project's code
files. Output (stdout, JSON): {"interface": text}, where text lists, per
module, its import name, then each public function, class and method with
its signature and the first paragraph of its docstring, and the names the
package re-exports. Nothing is imported or run: the files are parsed.
"""

import ast
import json
import sys


def first_paragraph(node):
    doc = ast.get_docstring(node)
    if not doc:
        return None
    return doc.strip().split("\n\n")[0].strip()


def signature(fn, indent=""):
    """The function as a valid Python stub: its signature, then the first
    paragraph of its docstring as the body, or `...` (a model imitates
    what it is shown, so what it is shown must be Python)."""
    args = ast.unparse(fn.args)
    ret = f" -> {ast.unparse(fn.returns)}" if fn.returns is not None else ""
    prefix = "async def" if isinstance(fn, ast.AsyncFunctionDef) else "def"
    doc = first_paragraph(fn)
    head = f"{indent}{prefix} {fn.name}({args}){ret}:"
    if doc:
        return f'{head}\n{indent}    """{doc}"""'
    return f"{head} ..."


def module_name(path):
    name = path[:-3] if path.endswith(".py") else path
    if name.startswith("src/"):
        name = name[4:]
    parts = name.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def describe(path, source, out):
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as error:
        out.append(f"# {path}: does not parse (line {error.lineno}: {error.msg})")
        return
    lines = [f"# module {module_name(path)} ({path})"]
    doc = first_paragraph(tree)
    if doc:
        lines.append(f'"""{doc}"""')
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and path.endswith("__init__.py"):
            names = [a.asname or a.name for a in node.names if not (a.asname or a.name).startswith("_")]
            if names:
                dots = "." * node.level
                lines.append(f"from {dots}{node.module or ''} import {', '.join(names)}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            lines.append(signature(node))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            lines.append(f"class {node.name}({bases}):" if bases else f"class {node.name}:")
            doc = first_paragraph(node)
            lines.append(f'    """{doc}"""' if doc else "    ...")
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    not item.name.startswith("_") or item.name in ("__init__", "__call__", "__len__", "__iter__", "__contains__", "__eq__", "__str__")
                ):
                    lines.append(signature(item, "    "))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    lines.append(f"    {ast.unparse(item)}")
        elif isinstance(node, ast.Assign) and path.endswith("__init__.py") is False:
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    lines.append(ast.unparse(node))
        elif isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"':
            lines.append('if __name__ == "__main__": ...  # runs as a program')
    if path.endswith("__main__.py") or any("argparse" in l for l in source.splitlines()[:40]):
        args = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("add_argument", "add_parser"):
                args.append(ast.unparse(node))
        if args:
            lines.append("# command line: " + "; ".join(args[:30]))
    out.append("\n".join(lines))


def main():
    request = json.load(sys.stdin)
    out = []
    for path in sorted(request["files"]):
        if path.endswith(".py"):
            describe(path, request["files"][path], out)
    json.dump({"interface": "\n\n".join(out)}, sys.stdout)


main()
