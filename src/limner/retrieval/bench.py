"""`limner bench context`: cross-file completion with and without repository context.

Part 1 (no model): per hole, whether `retrieve_for_cursor` puts the target's
definition in its first 5 blocks (recall@5), whether the outline focused on
the hole's file names the symbol, and the tokens each condition adds.

Part 2 (`model`): the model completes every hole under four conditions that
share one in-file window (the last PREFIX_LINES lines before the hole, the
next SUFFIX_LINES after it), preceded by nothing (in-file), the outline, the
retrieved blocks, or the true definition (its first 30 lines: the upper
bound), each rendered as `#` comments as `!retrieve` renders them in an
infill buffer. Greedy FIM on the embedded engine with the syntax-aware stop;
the first line of the reply is compared with the hole. Metrics: exact match,
edit similarity, identifier match (the renamed symbol appears), prompt
tokens, latency; paired against in-file (McNemar's exact test, bootstrap
interval of the edit-similarity difference).

The index must never know the answer: while a hole is measured its file is
re-indexed without the hole's text, as an editor would have it before the
line is written, and restored after.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time

from limner.retrieval import budget, index, outline, retrieve
from limner.stats import bootstrap_ci, mcnemar
from limner.textsim import levenshtein

PREFIX_LINES = 60
SUFFIX_LINES = 15
CONDITIONS = ("in-file", "+outline", "+retrieve", "+definition")
DEFINITION_LINES = 30


def definition_text(h: dict) -> str:
    with open(os.path.join(h["root"], h["def_path"]), encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    return "\n".join(lines[h["def_line"] - 1: h["def_line"] - 1 + DEFINITION_LINES])


class Indexes:
    """One open index per suite root, and the hole's file without the hole while it is measured."""

    def __init__(self):
        self.opened: dict[str, index.Index] = {}

    def get(self, root: str) -> index.Index:
        if root not in self.opened:
            self.opened[root] = index.open_index(root)
        return self.opened[root]

    @contextlib.contextmanager
    def without_hole(self, h: dict):
        idx = self.get(h["root"])
        full = os.path.join(h["root"], h["path"])
        with open(full, encoding="utf-8") as fh:
            original = fh.read()
        try:
            with open(full, "w", encoding="utf-8") as fh:
                fh.write(h["prefix"] + h["suffix"])
            idx.update(jobs=1)
            yield idx
        finally:
            with open(full, "w", encoding="utf-8") as fh:
                fh.write(original)
            st = os.stat(full)  # a new mtime even within the clock's tick
            os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))

    def close(self) -> None:
        for idx in self.opened.values():
            idx.update(jobs=1)  # back to the files as they are
            idx.close()


def is_hit(blocks, h: dict, k: int = 5) -> bool:
    """A top-k block from the defining file covers the definition or names the symbol."""
    for b in blocks[:k]:
        path, _, span = b.source.rpartition(":")
        start, _, end = span.partition("-")
        if path == h["def_path"] and (int(start) <= h["def_line"] <= int(end)
                                      or h["symbol"] in b.text):
            return True
    return False


def measure(holes: list[dict], budget_tokens: int, out=None) -> dict:
    """Part 1: recall@5, outline coverage, context tokens, retrieval latency."""
    out = out or sys.stdout
    counter = budget.Approx()
    indexes = Indexes()
    rec5 = in_outline = 0
    tokens: dict[str, list[int]] = {"outline": [], "retrieve": [], "definition": []}
    lat = []
    try:
        for h in holes:
            with indexes.without_hole(h) as idx:
                t = time.perf_counter()
                blocks = retrieve.retrieve_for_cursor(idx, os.path.join(h["root"], h["path"]),
                                                      h["prefix"], h["suffix"], budget_tokens,
                                                      counter)
                lat.append(time.perf_counter() - t)
                rec5 += is_hit(blocks, h)
                o = outline.outline(idx, [".py"], budget_tokens, counter, focus=[h["path"]])
                in_outline += h["symbol"] in o.text
                tokens["outline"].append(o.tokens)
                tokens["retrieve"].append(counter.count(budget.render(blocks)) if blocks else 0)
                tokens["definition"].append(counter.count(definition_text(h)))
    finally:
        indexes.close()
    n = len(holes)
    lat.sort()
    print(f"holes: {n} from {len({h.get('package', '') for h in holes})} packages, "
          f"{len({h['symbol'] for h in holes})} renamed symbols", file=out)
    print(f"retrieve recall@5 (a top-5 block from the defining file covers or names it): "
          f"{rec5}/{n} = {rec5 / n:.2f}", file=out)
    print(f"outline names the symbol (budget {budget_tokens}, focus = hole's file): "
          f"{in_outline}/{n} = {in_outline / n:.2f}", file=out)
    for k, xs in tokens.items():
        print(f"context tokens, +{k:10s}: mean {sum(xs) / n:6.0f}  max {max(xs)}", file=out)
    print(f"retrieve_for_cursor latency: p50 {lat[n // 2] * 1000:.1f} ms  "
          f"p95 {lat[int(0.95 * (n - 1))] * 1000:.1f} ms", file=out)
    return {"holes": n, "recall@5": rec5 / n, "outline": in_outline / n,
            "latency_p95_ms": lat[int(0.95 * (n - 1))] * 1000}


# ---------------------------------------------------------------- part 2: the model


def commented(text: str, frame: str = "comment") -> str:
    """A context block as `#` comments (as !retrieve renders it in an infill
    buffer), or as plain code under a `# file: PATH` line."""
    if frame == "code":
        head, _, body = text.partition("\n")
        if head.startswith("--- "):  # a retrieved block's or the definition's frame line
            return f"# file: {head[4:]}\n{body.rstrip()}\n\n\n"
        return text.rstrip("\n") + "\n\n\n"
    return "\n".join(f"# {ln}".rstrip() for ln in text.rstrip("\n").split("\n")) + "\n\n"


def contexts(idx, h: dict, budget_tokens: int, counter, frame: str = "comment") -> dict:
    """Per condition, the text before the in-file window; with frame "repo",
    (text, files) where files go through the model's repo-level FIM tokens
    (the outline stays comments: it is not a file)."""
    files: dict[str, tuple[str, str]] = {}  # framed text -> (path, text)

    def framer(path, start, end, text):
        if frame == "repo":
            shown = f"<sep>{path}\n{text.rstrip()}\n"  # what it costs in the prompt
            files[shown] = (path, text.rstrip("\n") + "\n")
            return shown
        return commented(retrieve.frame(path, start, end, text.rstrip("\n")), frame).rstrip("\n")

    blocks = retrieve.retrieve_for_cursor(idx, os.path.join(h["root"], h["path"]), h["prefix"],
                                          h["suffix"], budget_tokens, counter, framer)
    shown = frame if frame != "repo" else "comment"
    o = outline.outline(idx, [".py"], budget_tokens,
                        budget.Callable(lambda t: counter.count(commented(t, shown))),
                        focus=[h["path"]])
    out = {"in-file": "", "+outline": commented(o.text, shown) if o.text else ""}
    if frame == "repo":
        out["+retrieve"] = ("", [files[b.text] for b in blocks])  # what fit() kept, in its order
        out["+definition"] = ("", [(h["def_path"], definition_text(h) + "\n")])
        return out
    joiner = "\n#\n" if frame == "comment" else ""
    out["+retrieve"] = joiner.join(b.text for b in blocks) + "\n\n" if blocks else ""
    out["+definition"] = commented(f"--- {h['def_path']}:{h['def_line']}\n{definition_text(h)}", frame)
    return out


def window(h: dict) -> tuple[str, str]:
    before = h["prefix"].split("\n")
    after = h["suffix"].split("\n")
    return "\n".join(before[-PREFIX_LINES:]), "\n".join(after[: SUFFIX_LINES + 1])


def first_line(reply: str) -> str:
    for ln in reply.split("\n"):
        if ln.strip():
            return ln.strip()
    return ""


def _generate(engine, model: str, prefix: str, suffix: str, max_tokens: int, threads: int,
              files=None, filename: str = ""):
    from limner.engine.core import Job
    from limner.errors import LimnerError
    from limner.events import Failure, Text, Usage

    job = Job(model=model, mode="fim", prefix=prefix, suffix=suffix,
              params={"max_tokens": max_tokens, "temperature": 0, "n_threads": threads},
              stop_spec={"language": "python", "prefix": prefix, "suffix": suffix},
              extra=[list(f) for f in files] if files else None, filename=filename,
              repo="repo")
    t = time.perf_counter()
    text, usage = [], None
    for e in engine.stream(job):
        if isinstance(e, Text):
            text.append(e.text)
        elif isinstance(e, Usage):
            usage = e
        elif isinstance(e, Failure):
            raise LimnerError(f"the model failed on a hole: {e.message}", e.hint or "")
    return "".join(text), usage, time.perf_counter() - t


def score(reply: str, h: dict) -> dict:
    line, want = first_line(reply), h["expected"]
    longest = max(len(line), len(want)) or 1
    return {"em": line == want, "es": 1 - levenshtein(line, want) / longest,
                "ident": h["symbol"] in line}


def run(holes: list[dict], budget_tokens: int, model: str, max_tokens: int = 32,
        threads: int = 1, conditions=CONDITIONS, frame: str = "comment",
        progress=None, rows_file: str | None = None) -> dict:
    """Part 2: {condition: [per-hole row]} with em, es, ident, secs, prompt, ctx_tokens.

    With `rows_file`, each hole's rows are appended there (JSONL) as it
    finishes, and holes already in it are not generated again: a long run
    that is stopped resumes where it was."""
    progress = progress or sys.stderr
    done = _read_rows(rows_file, conditions) if rows_file else {}
    todo = [h for h in holes if _key(h) not in done]
    random.Random(0).shuffle(todo)  # a run stopped early still holds a random subset
    if todo:
        _generate_rows(todo, budget_tokens, model, max_tokens, threads, conditions, frame,
                       progress, rows_file, done, len(holes))
    rows: dict[str, list[dict]] = {c: [] for c in conditions}
    for h in holes:
        for c in conditions:
            rows[c].append(done[_key(h)][c])
    return rows


def _key(h: dict) -> str:
    return h.get("id") or f"{h['path']}:{len(h['prefix'])}"


def _read_rows(path: str, conditions) -> dict:
    out: dict[str, dict] = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short when the run was stopped
            if isinstance(r, dict) and all(c in r.get("rows", {}) for c in conditions):
                out[r["id"]] = r["rows"]
    return out


def _generate_rows(todo, budget_tokens, model, max_tokens, threads, conditions, frame,
                   progress, rows_file, done, total) -> None:
    from limner.engine import models
    from limner.engine.core import Engine

    counter = budget.Approx()
    path = models.resolve(model, "completion")[1]
    exact = budget.Vocab.from_gguf(path)
    engine = Engine(n_threads=threads, max_models=1)
    indexes = Indexes()
    try:
        for h in todo:
            with indexes.without_hole(h) as idx:
                ctx = contexts(idx, h, budget_tokens, counter, frame)
            pre, suf = window(h)
            got = {}
            for c in conditions:
                text, files = ctx[c] if isinstance(ctx[c], tuple) else (ctx[c], [])
                reply, usage, secs = _generate(engine, model, text + pre, suf, max_tokens, threads,
                                               files, h["path"])
                shown = text + "".join(f"{p}\n{t}" for p, t in files)
                got[c] = dict(score(reply, h), secs=secs, reply=first_line(reply),
                              prompt=usage.prompt_tokens if usage and usage.prompt_tokens else 0,
                              ctx_tokens=exact.count(shown) if shown else 0)
            done[_key(h)] = got
            if rows_file:
                with open(rows_file, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"id": _key(h), "rows": got}) + "\n")
            print(f"  {len(done)}/{total} {_key(h)}: " + "  ".join(
                f"{c} {'EM' if got[c]['em'] else ('id' if got[c]['ident'] else '--')}"
                for c in conditions), file=progress, flush=True)
    finally:
        engine.close()
        indexes.close()


def report(rows: dict, out=None) -> dict:
    """The table, the paired comparisons and the issue's three goal numbers."""
    out = out or sys.stdout
    conds = [c for c in CONDITIONS if c in rows]
    n = len(rows[conds[0]])
    print(f"\n{'condition':12s} {'EM':>6s} {'edit sim':>9s} {'ident':>6s} {'ctx tok':>8s} "
          f"{'prompt tok':>10s} {'latency p50':>12s}", file=out)
    summary: dict = {"n": n}
    for c in conds:
        r = rows[c]
        secs = sorted(x["secs"] for x in r)
        m = {k: sum(x[k] for x in r) / n for k in ("em", "es", "ident", "ctx_tokens", "prompt")}
        summary[c] = m
        print(f"{c:12s} {m['em']:6.3f} {m['es']:9.3f} {m['ident']:6.3f} {m['ctx_tokens']:8.0f} "
              f"{m['prompt']:10.0f} {secs[n // 2]:11.2f}s", file=out)
    base = rows.get("in-file")
    if base is None or len(conds) < 2:
        return summary
    print("\npaired vs in-file (wins/losses on discordant holes, McNemar exact p; "
          "edit-sim difference with bootstrap 95 % CI):", file=out)
    for c in conds[1:]:
        r = rows[c]
        w, lo_, p = mcnemar([x["em"] for x in base], [x["em"] for x in r])
        wi, li, pi = mcnemar([x["ident"] for x in base], [x["ident"] for x in r])
        diffs = [y["es"] - x["es"] for x, y in zip(base, r)]
        lo, hi = bootstrap_ci(diffs)
        print(f"  {c:12s} EM +{w}/-{lo_} p={p:.3f}   ident +{wi}/-{li} p={pi:.3f}   "
              f"edit sim {sum(diffs) / n:+.3f} [{lo:+.3f}, {hi:+.3f}]", file=out)
    if all(c in summary for c in ("+retrieve", "+definition")):
        for name, key in (("EM", "em"), ("ident", "ident")):
            m = {c: summary[c][key] for c in ("in-file", "+retrieve", "+definition")}
            gap = m["+definition"] - m["in-file"]
            closed = (m["+retrieve"] - m["in-file"]) / gap if gap > 0 else float("nan")
            rel = (m["+retrieve"] / m["in-file"] - 1) if m["in-file"] else float("inf")
            print(f"{name}: retrieve vs in-file {rel:+.0%} relative, "
                  f"{(m['+retrieve'] - m['in-file']) * 100:+.1f} points; "
                  f"gap to +definition closed {closed:.0%}", file=out)
    return summary
