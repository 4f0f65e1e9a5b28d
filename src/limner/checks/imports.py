"""Hallucinated imports: does every imported top-level name exist somewhere?

Each name is looked up, in order, in the standard library
(`sys.stdlib_module_names`), the local project (modules and packages next to
the code, or under a given root and its src/), and the installed
distributions (`importlib.metadata.packages_distributions()`, then the
import system's own finders, which see modules without metadata). Nothing
is imported and nothing is ever installed: the check only reads.

What is not found is flagged, and the message says which case it is: a real
PyPI package that is just not installed (`yaml` -> PyYAML), a distribution
name written where the import name belongs (`import beautifulsoup4`), or a
name nobody knows, which may be hallucinated.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from limner.checks.known_packages import distribution_for, import_for_distribution
from limner.checks.report import Finding

_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass
class Imported:
    name: str  # the top-level name: `a` for `import a.b.c`
    line: int
    guarded: bool  # inside `try/except ImportError` or `if TYPE_CHECKING:`
    count: int = 1


def imported_names(code: str) -> list[Imported]:
    """Every absolute import in the code (any depth), first line of each name."""
    tree = ast.parse(code)
    found: dict[str, Imported] = {}

    def add(name: str, line: int, guarded: bool) -> None:
        top = name.split(".")[0]
        if not top:
            return
        if top in found:
            found[top].count += 1
            found[top].guarded = found[top].guarded and guarded
        else:
            found[top] = Imported(top, line, guarded)

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, guarded)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:  # relative imports are local by definition
                add(node.module, node.lineno, guarded)
        elif isinstance(node, ast.Call) and _literal_import(node):
            add(node.args[0].value, node.lineno, guarded)
        if isinstance(node, ast.Try):
            catches = any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, guarded or catches)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, guarded)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return list(found.values())


def _literal_import(call: ast.Call) -> bool:
    """`importlib.import_module("x")` or `__import__("x")` with a literal name."""
    f = call.func
    named = (isinstance(f, ast.Name) and f.id in ("__import__", "import_module")) or (
        isinstance(f, ast.Attribute) and f.attr == "import_module"
    )
    return bool(named and call.args and isinstance(call.args[0], ast.Constant)
                and isinstance(call.args[0].value, str) and not call.args[0].value.startswith("."))


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    t = handler.type
    if t is None:
        return True
    names = t.elts if isinstance(t, ast.Tuple) else [t]
    return any(
        (isinstance(n, ast.Name) and n.id in _GUARDS) or (isinstance(n, ast.Attribute) and n.attr in _GUARDS)
        for n in names
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


# --- where names resolve ---------------------------------------------------------


def local_names(root: str | None) -> set[str]:
    """Modules and packages a script in `root` (or root/src) could import."""
    names: set[str] = set()
    if not root:
        return names
    for base in (root, os.path.join(root, "src")):
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(base, entry)
            if os.path.isdir(path) and entry.isidentifier():
                names.add(entry)  # a package, or a namespace package
            elif entry.endswith((".py", ".pyi")):
                names.add(entry.rsplit(".", 1)[0])
            elif entry.endswith((".so", ".pyd")):
                names.add(entry.split(".", 1)[0])
    return names


@functools.lru_cache(maxsize=1)
def _installed_here() -> dict[str, tuple[str, ...]]:
    from importlib.metadata import packages_distributions

    return {k: tuple(v) for k, v in packages_distributions().items()}


def _resolve_here(names: list[str]) -> dict[str, str | None]:
    """name -> how it resolves in this interpreter ("stdlib", "dist:X", "module"), or None."""
    dists = _installed_here()
    out: dict[str, str | None] = {}
    for name in names:
        if name in sys.stdlib_module_names or name in sys.builtin_module_names:
            out[name] = "stdlib"
        elif name in dists:
            out[name] = "dist:" + ",".join(dists[name])
        else:
            try:
                # Top-level names only: finding a spec runs no package code.
                out[name] = "module" if importlib.util.find_spec(name) is not None else None
            except (ImportError, ValueError):
                out[name] = None
    return out


# Run in another interpreter (`--python`) to answer the same question there.
_REMOTE = """
import importlib.util, json, sys
from importlib.metadata import packages_distributions
names = json.loads(sys.argv[1]); dists = packages_distributions(); out = {}
for n in names:
    if n in sys.stdlib_module_names or n in sys.builtin_module_names: out[n] = "stdlib"
    elif n in dists: out[n] = "dist:" + ",".join(dists[n])
    else:
        try: out[n] = "module" if importlib.util.find_spec(n) is not None else None
        except (ImportError, ValueError): out[n] = None
print(json.dumps(out))
"""


def _resolve_in(python: str, names: list[str]) -> dict[str, str | None]:
    p = subprocess.run([python, "-I", "-c", _REMOTE, json.dumps(names)],
                       capture_output=True, text=True, timeout=60, cwd="/")
    if p.returncode != 0:
        raise RuntimeError(f"{python} could not list its packages: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def check(code: str, *, root: str | None = None, local_modules: set[str] | frozenset = frozenset(),
          python: str | None = None) -> list[Finding]:
    """Findings for imports that resolve nowhere. Code that does not parse
    has no findings here (the syntax check reports it)."""
    try:
        imported = imported_names(code)
    except (SyntaxError, ValueError):
        return []
    local = local_names(root) | set(local_modules)
    todo = [i.name for i in imported if i.name not in local]
    where = _resolve_in(python, todo) if python else _resolve_here(todo)
    env = f"`{python}`" if python else "this Python"
    findings = []
    for imp in imported:
        if imp.name in local or where.get(imp.name):
            continue
        findings.append(_unresolved(imp, env))
    return findings


def _unresolved(imp: Imported, env: str) -> Finding:
    name = imp.name
    times = f" (imported {imp.count} times)" if imp.count > 1 else ""
    dist = distribution_for(name)
    proper = import_for_distribution(name)
    if dist:
        f = Finding("imports", "warning",
                    f"`{name}` is not installed in {env}{times}; it comes from the PyPI distribution `{dist}`",
                    line=imp.line, code="missing-package",
                    hint=f"install `{dist}` yourself if you want it (`pip install {dist}`); limner never installs anything")
    elif proper:
        f = Finding("imports", "error",
                    f"`{name}` is a distribution name, not a module{times}: the import name is `{proper}`",
                    line=imp.line, code="wrong-import-name", hint=f"write `import {proper}`")
    else:
        f = Finding("imports", "error",
                    f"`{name}` is not in the standard library, the project, or any package installed in {env}{times}: "
                    "it may be hallucinated",
                    line=imp.line, code="unresolved-import",
                    hint="check that a real, trusted package provides it before installing anything "
                         "(invented package names get registered by squatters)")
    if imp.guarded:
        f.severity = "info"
        f.message += " (optional: the import is guarded)"
    return f
