"""Cross-file completion holes cut from the stdlib, with the target renamed.

Issue 9's benchmark suite (`limner bench context`), made on the machine
from code already on it: the packages of this Python's stdlib (email,
asyncio, importlib, xml, http, json, logging, unittest, concurrent) are
copied, and each target (a top-level function or class defined once in its
package and used in another file of it) is renamed across the copy to
made-up words (`parse_header` -> `vorbex_quillan`), so a model cannot
recall it from pretraining. Every renamed file must still compile.

A hole is a statement line in another file that uses the renamed symbol.
`cut="line"` blanks the whole line; `cut="symbol"` puts the cursor just
before the symbol, as CrossCodeEval does (the text before it on the line
stays in the prefix: `x = parser.` | `vorbex_quillan(value)`).

A suite is JSONL, one object per hole: root, path, prefix, suffix,
expected, symbol, def_path, def_line (and id, package, original, cut), so
the same bench runs on a user's own repository.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import shutil
import sysconfig

from limner.retrieval import retrieve

PACKAGES = ("email", "asyncio", "importlib", "xml", "http", "json", "logging", "unittest",
            "concurrent")
WORDS = ("vorbex", "quillan", "tamsic", "drovel", "yennet", "plosk", "murvian", "kestrin",
         "zobble", "fendra", "gralix", "umbrot", "shenval", "ticrop", "wendle", "oxtra")


def made_up(name: str) -> str:
    """The same shape (snake_case, CamelCase, leading _), other words."""
    lead = len(name) - len(name.lstrip("_"))
    body = name[lead:]
    parts = [p for p in re.split(r"_|(?<=[a-z0-9])(?=[A-Z])", body) if p]
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    new = []
    for i, p in enumerate(parts):
        w = WORDS[(h >> (4 * i)) % len(WORDS)]
        new.append(w.capitalize() if p[0].isupper() else w)
    sep = "" if "_" not in body else "_"
    return "_" * lead + sep.join(new)


def py_files(root: str) -> list[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("__pycache__", "test", "tests"))
        out += [os.path.relpath(os.path.join(d, f), root) for f in sorted(files) if f.endswith(".py")]
    return out


def targets_in(pkg_root: str, pkg: str) -> list[tuple[str, str, int]]:
    """(name, defining file, line): top-level defs, unique in the package, used elsewhere in it."""
    defs: dict[str, list[tuple[str, int]]] = {}
    texts = {}
    for rel in py_files(pkg_root):
        with open(os.path.join(pkg_root, rel), encoding="utf-8") as fh:
            texts[rel] = fh.read()
        try:
            tree = ast.parse(texts[rel])
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs.setdefault(node.name, []).append((rel, node.lineno))
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):  # a constant elsewhere makes the name ambiguous
                        defs.setdefault(t.id, []).append((rel, -1))
    every = "\n".join(texts.values())
    # A name also used for a variable or parameter (a local `timeout`) is not
    # one symbol: renaming it everywhere would rename unrelated things.
    stores = set()
    for t in texts.values():
        try:
            for node in ast.walk(ast.parse(t)):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    stores.add(node.id)
                elif isinstance(node, ast.arg) or isinstance(node, ast.keyword) and node.arg:
                    stores.add(node.arg)
        except SyntaxError:
            continue
    out = []
    for name, where in sorted(defs.items()):
        if len(where) != 1 or where[0][1] < 0 or len(name) < 5 or name.startswith("__"):
            continue
        if (name in retrieve.GENERIC or name in stores or every.count(f"def {name}(") > 1
                or re.search(rf"\b(self|cls)\.{name}\b", every)):
            continue  # also a method or attribute: renaming could change meaning
        users = [r for r, t in texts.items() if r != where[0][0] and re.search(rf"\b{name}\b", t)]
        if users:
            out.append((name, where[0][0], where[0][1]))
    return out


def new_names(names: list[str]) -> dict[str, str]:
    """Made-up names, distinct from each other (a numeral breaks a tie)."""
    out: dict[str, str] = {}
    for name in names:
        new, k = made_up(name), 2
        while new in out.values():
            new, k = f"{made_up(name)}{k}", k + 1
        out[name] = new
    return out


def rename(pkg_root: str, mapping: dict[str, str]) -> None:
    """Rename every target in every file of the copy; fail loudly if one no longer compiles."""
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    for rel in py_files(pkg_root):
        path = os.path.join(pkg_root, rel)
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
        new = pattern.sub(lambda m: mapping[m.group(1)], old)
        if new != old:
            compile(new, path, "exec")  # consistent renaming keeps every file valid
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(new)


def uses(text: str, name: str) -> dict[int, int]:
    """{0-based line: column} where code uses `name`: a name or an attribute
    read in an expression. Not an import list, a string, `__all__` or a
    comment: the renaming reaches those too, but the line is no use of it."""
    out: dict[int, int] = {}
    lines = text.split("\n")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Name) and node.id == name:
            line, col = node.lineno - 1, node.col_offset
        elif isinstance(node, ast.Attribute) and node.attr == name and node.end_lineno:
            line, col = node.end_lineno - 1, node.end_col_offset - len(name)
        else:
            continue
        # Offsets are in UTF-8 bytes; the cut is in characters.
        col = len(lines[line].encode("utf-8")[:col].decode("utf-8", "replace"))
        if line not in out or col < out[line]:
            out[line] = col
    return out


def holes_for(pkg_root: str, pkg: str, targets, mapping, rng: random.Random, per_target: int = 2,
              cut: str = "line"):
    holes = []
    for name, def_path, def_line in targets:
        new = mapping[name]
        sites = []
        for rel in py_files(pkg_root):
            if rel == def_path:
                continue
            with open(os.path.join(pkg_root, rel), encoding="utf-8") as fh:
                text = fh.read()
            lines = text.split("\n")
            for i, col in sorted(uses(text, new).items()):
                s = lines[i].strip()
                if not s.startswith(("def ", "class ", "@")) and len(s) >= 12 and i > 5:
                    sites.append((rel, i, col, lines))
        for rel, i, col, lines in rng.sample(sites, min(per_target, len(sites))):
            line = lines[i]
            at = len(line) - len(line.lstrip()) if cut == "line" else col
            holes.append({
                "id": f"{pkg}/{rel}:{i + 1}", "root": os.path.join(pkg_root, ""), "package": pkg, "path": rel,
                "prefix": "\n".join(lines[:i]) + "\n" + line[:at], "suffix": "\n" + "\n".join(lines[i + 1:]),
                "expected": line[at:].strip(), "symbol": new, "original": name,
                "def_path": def_path, "def_line": def_line, "cut": cut})
    return holes


def default_work() -> str:
    """Where the renamed package copies live (re-made on every generate)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "limner", "bench", "context")


def generate(work: str, n: int, seed: int, cut: str = "line") -> list[dict]:
    stdlib = sysconfig.get_paths()["stdlib"]
    rng = random.Random(seed)
    holes = []
    for pkg in PACKAGES:
        dst = os.path.join(work, pkg)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(os.path.join(stdlib, pkg), dst,
                        ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))
        targets = targets_in(dst, pkg)
        mapping = new_names([t[0] for t in targets])
        rename(dst, mapping)
        holes += holes_for(dst, pkg, targets, mapping, rng, cut=cut)
    rng.shuffle(holes)
    return sorted(holes[:n], key=lambda h: h["id"])


def definition_text(h: dict) -> str:
    with open(os.path.join(h["root"], h["def_path"]), encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    return "\n".join(lines[h["def_line"] - 1: h["def_line"] - 1 + 30])




REQUIRED = ("root", "path", "prefix", "suffix", "expected", "symbol", "def_path", "def_line")


def load(path: str) -> list[dict]:
    """A JSONL suite; a hole missing a field is an error naming its line."""
    from limner.errors import LimnerError

    holes = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                h = json.loads(line)
            except ValueError as e:
                raise LimnerError(f"{path}:{n}: not JSON ({e})", "One hole object per line.") from None
            missing = [k for k in REQUIRED if not isinstance(h, dict) or k not in h]
            if missing:
                raise LimnerError(f"{path}:{n}: the hole has no {', '.join(missing)}",
                                  f"Each line needs {', '.join(REQUIRED)}.")
            h.setdefault("id", f"{h['path']}:{n}")
            h.setdefault("package", os.path.basename(os.path.normpath(h["root"])))
            holes.append(h)
    if not holes:
        raise LimnerError(f"{path}: no holes", "Write one JSON object per line.")
    return holes


def save(path: str, holes: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(h) + "\n" for h in holes)
