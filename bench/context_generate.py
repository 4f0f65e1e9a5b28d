"""Part 2 of the cross-file completion bench: the model under four conditions.

For each hole (from context_completion.py, generated or a --suite JSONL):
the same in-file window (the last PREFIX_LINES lines before the hole, the
next SUFFIX_LINES after it), preceded by nothing (in-file), the outline
(focused on the hole's file), retrieve_for_cursor's blocks, or the true
definition (its first 30 lines: the upper bound), each rendered as `#`
comments as `!retrieve` renders them in an infill buffer. Generation is
greedy FIM on the embedded engine with the syntax-aware stop, at most
--max-tokens tokens; the first line of the reply is compared with the hole.

Metrics per condition: exact match (the line, whitespace-stripped), edit
similarity (1 - Levenshtein / longer length), identifier match (the renamed
symbol appears in the line), prompt tokens and latency. Paired against
in-file: McNemar's exact test for EM and identifier match, a bootstrap 95 %
interval for the edit-similarity difference. As in part 1, the hole's file
is re-indexed without the hole's line while it is measured.
"""
from __future__ import annotations

import math
import os
import random
import time

from limner.retrieval import budget, index, outline, retrieve
from limner.textsim import levenshtein

PREFIX_LINES = 60
SUFFIX_LINES = 15
CONDITIONS = ("in-file", "+outline", "+retrieve", "+definition")


FRAME = "comment"  # --frame code: blocks as plain code under a `# file: path` line instead


def commented(text: str) -> str:
    if FRAME == "code":
        head, _, body = text.partition("\n")
        if head.startswith("--- "):  # a retrieved block's or the definition's frame line
            return f"# file: {head[4:]}\n{body.rstrip()}\n\n\n"
        return text.rstrip("\n") + "\n\n\n"
    return "\n".join(f"# {ln}".rstrip() for ln in text.rstrip("\n").split("\n")) + "\n\n"


def contexts(idx, h: dict, budget_tokens: int, counter, definition: str) -> dict[str, str]:
    def framer(path, start, end, text):
        return commented(retrieve.frame(path, start, end, text.rstrip("\n"))).rstrip("\n")

    blocks = retrieve.retrieve_for_cursor(idx, os.path.join(h["root"], h["path"]), h["prefix"],
                                          h["suffix"], budget_tokens, counter, framer)
    o = outline.outline(idx, [".py"], budget_tokens,
                        budget.Callable(lambda t: counter.count(commented(t))), focus=[h["path"]])
    return {
        "in-file": "",
        "+outline": commented(o.text) if o.text else "",
        "+retrieve": ("\n#\n" if FRAME == "comment" else "").join(b.text for b in blocks) + "\n\n"
                     if blocks else "",
        "+definition": commented(f"--- {h['def_path']}:{h['def_line']}\n{definition}"),
    }


def window(h: dict) -> tuple[str, str]:
    before = h["prefix"].split("\n")
    after = h["suffix"].split("\n")
    return "\n".join(before[-PREFIX_LINES:]), "\n".join(after[: SUFFIX_LINES + 1])


def generate(engine, model: str, prefix: str, suffix: str, max_tokens: int, threads: int):
    from limner.engine.core import Job
    from limner.events import Failure, Text, Usage

    job = Job(model=model, mode="fim", prefix=prefix, suffix=suffix,
              params={"max_tokens": max_tokens, "temperature": 0, "n_threads": threads},
              stop_spec={"language": "python", "prefix": prefix, "suffix": suffix})
    t = time.perf_counter()
    text, usage = [], None
    for e in engine.stream(job):
        if isinstance(e, Text):
            text.append(e.text)
        elif isinstance(e, Usage):
            usage = e
        elif isinstance(e, Failure):
            raise RuntimeError(e.message)
    return "".join(text), usage, time.perf_counter() - t


def first_line(reply: str) -> str:
    for ln in reply.split("\n"):
        if ln.strip():
            return ln.strip()
    return ""


def mcnemar(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    """(b wins, a wins, exact two-sided p) over the discordant pairs."""
    wins = sum(y and not x for x, y in zip(a, b))
    losses = sum(x and not y for x, y in zip(a, b))
    n = wins + losses
    if n == 0:
        return 0, 0, 1.0
    k = min(wins, losses)
    p = 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return wins, losses, min(1.0, p)


def bootstrap(diffs: list[float], seed: int = 7, rounds: int = 2000) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds)]


def run(holes: list[dict], budget_tokens: int, model: str, max_tokens: int, threads: int,
        definition_text, conditions=CONDITIONS) -> dict:
    from limner.engine.core import Engine
    from limner.engine import models

    counter = budget.Approx()
    engine = Engine(n_threads=threads, max_models=1)
    path = models.resolve(model, "completion")[1]
    exact = budget.Vocab.from_gguf(path)
    opened: dict[str, index.Index] = {}
    rows = {c: [] for c in conditions}
    try:
        for n, h in enumerate(holes, 1):
            idx = opened.get(h["root"]) or opened.setdefault(h["root"], index.open_index(h["root"]))
            full = os.path.join(h["root"], h["path"])
            with open(full, encoding="utf-8") as fh:
                original = fh.read()
            try:
                with open(full, "w", encoding="utf-8") as fh:
                    fh.write(h["prefix"] + h["suffix"])
                idx.update(jobs=1)
                ctx = contexts(idx, h, budget_tokens, counter, definition_text(h))
            finally:
                with open(full, "w", encoding="utf-8") as fh:
                    fh.write(original)
                st = os.stat(full)
                os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
            pre, suf = window(h)
            for c in conditions:
                reply, usage, secs = generate(engine, model, ctx[c] + pre, suf, max_tokens, threads)
                line = first_line(reply)
                want = h["expected"]
                longest = max(len(line), len(want)) or 1
                rows[c].append(dict(
                    em=line == want, es=1 - levenshtein(line, want) / longest,
                    ident=h["symbol"] in line, secs=secs,
                    prompt=usage.prompt_tokens if usage and usage.prompt_tokens else 0,
                    ctx_tokens=exact.count(ctx[c]) if ctx[c] else 0))
            print(f"  {n}/{len(holes)} {h['id']}: " + "  ".join(
                f"{c} {'EM' if rows[c][-1]['em'] else ('id' if rows[c][-1]['ident'] else '--')}"
                for c in conditions), flush=True)
    finally:
        engine.close()
        for idx in opened.values():
            idx.update(jobs=1)
            idx.close()
    return rows


def report(rows: dict, n: int) -> None:
    conds = [c for c in CONDITIONS if c in rows]
    base = rows.get("in-file")
    print(f"\n{'condition':12s} {'EM':>6s} {'edit sim':>9s} {'ident':>6s} {'ctx tok':>8s} "
          f"{'prompt tok':>10s} {'latency p50':>12s}")
    for c in conds:
        r = rows[c]
        secs = sorted(x["secs"] for x in r)
        print(f"{c:12s} {sum(x['em'] for x in r) / n:6.3f} {sum(x['es'] for x in r) / n:9.3f} "
              f"{sum(x['ident'] for x in r) / n:6.3f} {sum(x['ctx_tokens'] for x in r) / n:8.0f} "
              f"{sum(x['prompt'] for x in r) / n:10.0f} {secs[n // 2]:11.2f}s")
    if base is None or len(conds) < 4:
        return
    print("\npaired vs in-file (wins/losses on discordant holes, McNemar exact p; "
          "edit-sim difference with bootstrap 95 % CI):")
    for c in CONDITIONS[1:]:
        r = rows[c]
        w, l, p = mcnemar([x["em"] for x in base], [x["em"] for x in r])
        wi, li, pi = mcnemar([x["ident"] for x in base], [x["ident"] for x in r])
        diffs = [y["es"] - x["es"] for x, y in zip(base, r)]
        lo, hi = bootstrap(diffs)
        print(f"  {c:12s} EM +{w}/-{l} p={p:.3f}   ident +{wi}/-{li} p={pi:.3f}   "
              f"edit sim {sum(diffs) / n:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    em = {c: sum(x["em"] for x in rows[c]) / n for c in CONDITIONS}
    idm = {c: sum(x["ident"] for x in rows[c]) / n for c in CONDITIONS}
    for name, m in (("EM", em), ("ident", idm)):
        gap = m["+definition"] - m["in-file"]
        closed = (m["+retrieve"] - m["in-file"]) / gap if gap > 0 else float("nan")
        rel = (m["+retrieve"] / m["in-file"] - 1) if m["in-file"] else float("inf")
        print(f"{name}: retrieve vs in-file {rel:+.0%} relative, "
              f"{(m['+retrieve'] - m['in-file']) * 100:+.1f} points; gap to +definition closed {closed:.0%}")
