"""`limner eval --select N`: greedy, random, mean log-prob, the vote and
pass@N on ONE pool of samples per task, scored on held-out tests only.

Per task: one greedy answer (T = 0) and N samples (T = 0.8, seeded); every
answer runs once in the sandbox (visible tests, probes, held-out tests).
For each curve point n in 1, 2, 4, 8 (<= N) the first n samples are the
pool: random@n is the expected held-out pass of a random pick (the mean over
the n), logprob@n the highest mean log-prob pick, vote@n the vote (vote.py),
pass@n whether any passes. Task rows go to OUT/select.jsonl as they finish,
so a re-run resumes. HTTP requests go through the run's dispatch.Dispatcher
(bounded, retried); its summary is the result's "dispatch".
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from limner.select import execute, sample, tests, vote
from limner.stats import bootstrap_ci, mcnemar

METHODS = ("greedy", "random", "logprob", "vote", "pass@n")


def curve_points(n: int) -> list[int]:
    return [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n] + ([n] if n not in (1, 2, 4, 8, 16, 32, 64) else [])


def task_row(targets, task, n: int, params: dict, seed: int, want: str, pool,
             dispatcher=None) -> dict | None:
    split = tests.for_task(task)
    if not split.visible or not split.held_out:
        return None  # nothing to select with, or nothing left to score on
    first = targets[0]
    how = first.how(task)
    greedy = sample.ask(first, None if first.engine else dispatcher, task, how, {**params, "temperature": 0})
    cands = sample.pooled(targets, task, n, params, seed, dispatcher)
    setup = split.setup + "\n" if split.setup else ""

    def full(code: str) -> str:  # the program the tests run against, as score.program builds it
        if how == "chat":
            return setup + (task.chat_prelude + "\n" if task.chat_prelude else "") + code
        return setup + task.prompt + code

    codes = [full(c.code) for c in cands] + [full(greedy.code)]
    probes = tests.probes(split.visible)
    beh = execute.run_all(codes, split.visible, probes, split.held_out, want=want, pool=pool)
    held = [int(b.passes_held) for b in beh[:-1]]
    row = {"task": task.id, "greedy": int(beh[-1].passes_held), "n": len(cands), "probes": len(probes),
           "held": held, "visible": [int(b.passes_visible) for b in beh[:-1]],
           "logprob": [c.logprob_mean for c in cands], "models": [c.model for c in cands],
           "curves": {}, "candidates": [c.code for c in cands]}
    for k in curve_points(len(cands)):
        sub = cands[:k]
        v = vote.choose(sub, beh[:k])
        row["curves"][str(k)] = {
            "random": sum(held[:k]) / k, "logprob": held[vote.logprob_pick(sub)],
            "vote": held[v.chosen] if v.chosen is not None else 0, "pass@n": int(any(held[:k])),
            "clusters": [len(c) for c in v.clusters], "fallback": v.fallback}
    return row


# ---------------------------------------------------------------- statistics


def summarize(rows: list[dict], n: int) -> dict:
    out = {"tasks": len(rows), "n": n, "curves": {}, "paired": {}}
    for k in curve_points(n):
        point = {}
        for m in METHODS:
            vals = [r["greedy"] if m == "greedy" else r["curves"][str(k)][m] for r in rows]
            mean = sum(vals) / len(vals) if vals else 0.0
            if all(v in (0, 1) for v in vals):  # pass/fail per task: Wilson, not degenerate at 0 or 1
                from limner.evals.report import wilson

                lo, hi = wilson(mean, len(vals))
            else:  # random@n is an expectation per task: bootstrap over tasks
                lo, hi = bootstrap_ci(vals)
            point[m] = {"mean": mean, "lo": lo, "hi": hi}
        point["fallback_tasks"] = sum(1 for r in rows if r["curves"][str(k)]["fallback"])
        out["curves"][str(k)] = point
    top = str(curve_points(n)[-1])
    vote_ = [r["curves"][top]["vote"] for r in rows]
    for other in ("greedy", "random", "logprob"):
        base = [r["greedy"] if other == "greedy" else r["curves"][top][other] for r in rows]
        diffs = [v - b for v, b in zip(vote_, base)]
        lo, hi = bootstrap_ci(diffs)
        entry = {"diff": sum(diffs) / len(diffs) if diffs else 0.0, "lo": lo, "hi": hi}
        if other != "random":  # random is an expectation, not a pass/fail: bootstrap only
            w, l, p = mcnemar(base, vote_)
            entry.update(vote_wins=w, vote_losses=l, mcnemar_p=p)
        out["paired"][f"vote@{top} - {other}" + ("" if other == "greedy" else f"@{top}")] = entry
    return out


def table(s: dict) -> str:
    lines = [f"select: {s['tasks']} tasks scored on held-out tests, N = {s['n']}",
             "  n  " + "".join(f"{m:>20}" for m in METHODS)]
    for k, point in s["curves"].items():
        cells = "".join(f"{point[m]['mean']:>8.3f} [{point[m]['lo']:.2f},{point[m]['hi']:.2f}]" for m in METHODS)
        lines.append(f"{k:>3}  {cells}")
    for name, e in s["paired"].items():
        extra = (f"; vote wins {e['vote_wins']}, losses {e['vote_losses']}, McNemar p = {e['mcnemar_p']:.3g}"
                 if "mcnemar_p" in e else "")
        lines.append(f"{name}: {e['diff'] * 100:+.1f} points (95 % CI {e['lo'] * 100:+.1f} .. "
                     f"{e['hi'] * 100:+.1f}){extra}")
    from limner.evals.dispatch import describe

    if describe(s.get("dispatch")):
        lines.append(describe(s["dispatch"]))
    return "\n".join(lines) + "\n"


def plot(s: dict, out: Path) -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from limner.evals import report

    return report.select_curves(s, out, METHODS)


def write_html(s: dict, out: Path) -> Path:
    import html

    img = plot(s, out)
    body = [f"<h1>limner eval --select {s['n']}</h1>",
            f'<img src="{img}" alt="pass rate vs N">' if img else "<p>matplotlib is not installed: no plot.</p>",
            f"<pre>{html.escape(table(s))}</pre>"]
    path = out / "select.html"
    path.write_text("<!doctype html><meta charset=utf-8><title>limner select</title>" + "".join(body),
                    encoding="utf-8")
    return path


def run(targets, tasks_by_suite: dict, n: int, params_by_suite: dict, seed: int, want: str,
        out: Path, stream=None, dispatcher=None) -> dict:
    from limner.sandbox.pool import Pool

    stream = stream or sys.stderr
    out.mkdir(parents=True, exist_ok=True)
    path = out / "select.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("n") == n and r.get("labels") == [t.label for t in targets]:
                done[(r["suite"], r["task"])] = r
    rows = []
    with Pool(2, want=want, python=sys.executable, site=False) as pool, \
            open(path, "a", encoding="utf-8") as log:
        total = sum(len(ts) for ts in tasks_by_suite.values())
        t0, i = time.monotonic(), 0
        for suite, tasks in tasks_by_suite.items():
            for task in tasks:
                i += 1
                r = done.get((suite, task.id))
                if r is None:
                    r = task_row(targets, task, n, params_by_suite[suite], seed, want, pool, dispatcher)
                    if r is None:
                        stream.write(f"select: {task.id}: no visible or no held-out test, skipped\n")
                        continue
                    r.update(suite=suite, labels=[t.label for t in targets])
                    log.write(json.dumps(r) + "\n")
                    log.flush()
                rows.append(r)
                stream.write(f"\rselect: {i}/{total} tasks, {time.monotonic() - t0:.0f} s")
                stream.flush()
    stream.write("\n")
    s = summarize(rows, n)
    s["labels"] = [t.label for t in targets]
    s["dispatch"] = dispatcher.stats.summary() if dispatcher is not None else None  # retries, 429s
    (out / "select.json").write_text(json.dumps({**s, "per_task": rows}, indent=1), encoding="utf-8")
    s["html"] = str(write_html(s, out))
    return s
