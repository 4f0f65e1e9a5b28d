"""Cross-file completion holes from the stdlib, and retrieval recall@5 (issue 9, bench 1).

Part 1, here now (no model needed):
- copy packages of this Python's stdlib (email, asyncio, importlib, xml,
  http, json, logging, unittest, concurrent) to a bench folder;
- pick target symbols: top-level functions/classes defined exactly once in
  the package and used in another file of it;
- rename each target consistently across its package copy to made-up words
  (`parse_header` -> `vorbex_quillan`), so a model cannot recall it from
  pretraining, and check every renamed file still compiles;
- cut holes: a whole statement line in another file that uses the renamed
  symbol (prefix = file up to the line's indentation, suffix = the rest);
- measure, per hole: recall@5 of `retrieve_for_cursor` (a top-5 block from
  the defining file that covers the definition), whether the outline
  (focused on the hole's file) names the symbol, and the prompt tokens each
  condition would add (in-file / +outline / +retrieve / +true definition).

The holes are written as JSONL (one object per hole: root, path, prefix,
suffix, expected, symbol, def_path, def_line), and `--suite FILE` reads such
a file instead of generating, so the same measurement runs on any repo.

Part 2 (`--model NAME`, bench/context_generate.py; needs a quiet machine):
generate with the model under the four conditions on --model-holes holes
(every k-th, so every package is in) and score exact match, edit similarity and identifier
match, paired.

    nice -n 10 .venv/bin/python bench/context_completion.py [--holes 120] [--out FILE]
    nice -n 10 .venv/bin/python bench/context_completion.py --model gemma3-270m --model-holes 40 --budget 512
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import sysconfig
import time

from limner.retrieval import budget, index, outline, retrieve

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
                elif isinstance(node, ast.arg):
                    stores.add(node.arg)
                elif isinstance(node, ast.keyword) and node.arg:
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


def string_lines(text: str) -> set[int]:
    """Lines inside a string literal (docstrings): a hole there is prose, not code."""
    out: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):  # a docstring: all of its lines
            out.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.update(range(node.lineno + 1, node.end_lineno + 1))  # continuation lines
    return out


def holes_for(pkg_root: str, pkg: str, targets, mapping, rng: random.Random, per_target: int = 2):
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
            in_string = string_lines(text)
            for i, line in enumerate(lines):
                s = line.strip()
                if (i + 1 not in in_string and re.search(rf"\b{new}\b", s) and not s.startswith(("#", "import ", "from ", "def ",
                                                                       "class ", "@", '"', "'"))
                        and len(s) >= 12 and i > 5):
                    sites.append((rel, i, lines))
        for rel, i, lines in rng.sample(sites, min(per_target, len(sites))):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            holes.append(dict(
                id=f"{pkg}/{rel}:{i + 1}", root=os.path.join(pkg_root, ""), package=pkg, path=rel,
                prefix="\n".join(lines[:i]) + "\n" + indent, suffix="\n" + "\n".join(lines[i + 1:]),
                expected=lines[i].strip(), symbol=new, original=name,
                def_path=def_path, def_line=def_line))
    return holes


def generate(work: str, n: int, seed: int) -> list[dict]:
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
        holes += holes_for(dst, pkg, targets, mapping, rng)
    rng.shuffle(holes)
    return sorted(holes[:n], key=lambda h: h["id"])


def definition_text(h: dict) -> str:
    with open(os.path.join(h["root"], h["def_path"]), encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    return "\n".join(lines[h["def_line"] - 1: h["def_line"] - 1 + 30])


def measure(holes: list[dict], budget_tokens: int) -> None:
    counter = budget.Approx()
    opened: dict[str, index.Index] = {}
    rec5 = in_outline = 0
    tokens = {"outline": [], "retrieve": [], "definition": []}
    lat = []
    for h in holes:
        idx = opened.get(h["root"]) or opened.setdefault(h["root"], index.open_index(h["root"]))
        # The index must not know the answer: the hole's file is re-indexed
        # without the hole's line (and restored after), as an editor would
        # have it before the line is written.
        full = os.path.join(h["root"], h["path"])
        with open(full, encoding="utf-8") as fh:
            original = fh.read()
        with open(full, "w", encoding="utf-8") as fh:
            fh.write(h["prefix"] + h["suffix"])
        idx.update(jobs=1)
        t = time.perf_counter()
        blocks = retrieve.retrieve_for_cursor(idx, os.path.join(h["root"], h["path"]),
                                              h["prefix"], h["suffix"], budget_tokens, counter)
        lat.append(time.perf_counter() - t)
        hit = False
        for b in blocks[:5]:
            path, _, span = b.source.rpartition(":")
            start, _, end = span.partition("-")
            if path == h["def_path"] and (int(start) <= h["def_line"] <= int(end)
                                          or h["symbol"] in b.text):
                hit = True
        rec5 += hit
        o = outline.outline(idx, [".py"], budget_tokens, counter, focus=[h["path"]])
        in_outline += h["symbol"] in o.text
        tokens["outline"].append(o.tokens)
        tokens["retrieve"].append(counter.count(budget.render(blocks)) if blocks else 0)
        tokens["definition"].append(counter.count(definition_text(h)))
        with open(full, "w", encoding="utf-8") as fh:
            fh.write(original)
        st = os.stat(full)  # a new mtime even within the clock's tick
        os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    n = len(holes)
    for idx in opened.values():
        idx.update(jobs=1)
    print(f"holes: {n} from {len({h['package'] for h in holes})} packages, "
          f"{len({h['symbol'] for h in holes})} renamed symbols")
    print(f"retrieve recall@5 (a top-5 block from the defining file covers or names it): "
          f"{rec5}/{n} = {rec5 / n:.2f}")
    print(f"outline names the symbol (budget {budget_tokens}, focus = hole's file): "
          f"{in_outline}/{n} = {in_outline / n:.2f}")
    for k, xs in tokens.items():
        print(f"context tokens, +{k:10s}: mean {sum(xs) / n:6.0f}  max {max(xs)}")
    lat.sort()
    print(f"retrieve_for_cursor latency: p50 {lat[n // 2] * 1000:.1f} ms  "
          f"p95 {lat[int(0.95 * (n - 1))] * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--holes", type=int, default=120)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--suite", help="read holes from this JSONL instead of generating them")
    ap.add_argument("--work", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "limner", "bench", "context"), help="where the renamed package copies live")
    ap.add_argument("--out", help="write the generated holes here (JSONL)")
    ap.add_argument("--model", help="part 2: also generate with this model (e.g. gemma3-270m) "
                    "under the four conditions on --model-holes holes spread over the list")
    ap.add_argument("--model-holes", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frame", choices=("comment", "code"), default="comment",
                    help="context as # comments (as !retrieve renders it) or as plain code")
    ap.add_argument("--conditions", default="in-file,+outline,+retrieve,+definition")
    a = ap.parse_args()
    if a.suite:
        with open(a.suite, encoding="utf-8") as fh:
            holes = [json.loads(line) for line in fh if line.strip()]
    else:
        holes = generate(a.work, a.holes, a.seed)
        if a.out:
            with open(a.out, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(h) + "\n" for h in holes)
    measure(holes, a.budget)
    if a.model:
        import context_generate as part2  # bench/ is on sys.path when run as a script

        subset = holes[:: max(1, len(holes) // a.model_holes)][: a.model_holes]  # every package
        print(f"\npart 2: {a.model}, {len(subset)} holes, greedy, max {a.max_tokens} tokens, "
              f"context budget {a.budget} (approximate count), {a.threads} thread(s), "
              f"context framed as {a.frame}")
        part2.FRAME = a.frame
        rows = part2.run(subset, a.budget, a.model, a.max_tokens, a.threads, definition_text,
                         tuple(a.conditions.split(",")))
        part2.report(rows, len(subset))


if __name__ == "__main__":
    main()
