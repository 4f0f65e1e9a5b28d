"""The numbers of a run (`summarize`), and their HTML report with PNG plots.

    summary = summarize(store, plan)     # a plain dict: what --json prints
    write_html(summary, out_dir)         # report.html + plot PNGs next to it

matplotlib is imported only here, and only when a report is written.
"""
from __future__ import annotations

import html
import json
import os
import statistics
from collections import defaultdict
from pathlib import Path

from limner.evals.score import pass_at_k


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.fmean(xs), 4) if xs else None


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 4) if xs else None


def summarize(store, plan, codebleu: dict | None = None) -> dict:
    """Per (suite, model, variant): pass@k, exact match, edit similarity,
    latency, TTFT, tokens/s; then repair vs resample at equal samples."""
    wanted = {s.name: {t.id for t in plan.tasks[s.name]} for s in plan.suites}
    labels = [t.label for t in plan.targets]
    runs, repairs, resamples = [], [], []
    per_task: dict = defaultdict(dict)
    for suite in plan.suites:
        for label in labels:
            rows = [r for r in store.joined(suite=suite.name, model=label) if r["task"] in wanted[suite.name]]
            by_variant = defaultdict(list)
            for r in rows:
                by_variant[r["variant"]].append(r)
            for v in plan.variants:
                vrows = [r for r in by_variant.get(v.name, []) if r["sample"] < v.samples]
                if vrows:
                    runs.append(_run_summary(suite.name, label, v, vrows, len(wanted[suite.name])))
                    for r in vrows:
                        if r["sample"] == 0:
                            per_task[(suite.name, label)].setdefault(r["task"], {})[v.name] = _brief(r)
            if plan.repair:
                chain = by_variant.get("greedy", []) + by_variant.get("repair", [])
                rep = _repair_summary(suite.name, label, plan.repair, chain, wanted[suite.name])
                if rep:
                    repairs.append(rep)
                    for r in by_variant.get("repair", []):
                        per_task[(suite.name, label)].setdefault(r["task"], {})[f"repair {r['sample']}"] = _brief(r)
                if plan.resample:
                    name = next((v.name for v in plan.variants if v.name.startswith("T")), None)
                    res = _resample_summary(suite.name, label, plan.repair + 1,
                                            [r for r in by_variant.get(name, []) if r["sample"] <= plan.repair],
                                            wanted[suite.name])
                    if res:
                        resamples.append(res)
    out = {
        "suites": {s.name: {"description": s.description, "tasks": len(plan.tasks[s.name]),
                            "mode": s.mode, "max_tokens": plan.max_tokens or s.max_tokens} for s in plan.suites},
        "models": labels,
        "variants": [v.__dict__ for v in plan.variants],
        "runs": runs,
        "repair": repairs,
        "resample": resamples,
        "comparison": _compare(repairs, resamples),
        "per_task": {f"{s}|{m}": tasks for (s, m), tasks in per_task.items()},
    }
    if codebleu:
        for run in runs:
            key = f"{run['suite']}|{run['model']}|{run['variant']}"
            if key in codebleu:
                run["codebleu"] = codebleu[key]
    return out


def _brief(r: dict) -> dict:
    return {"status": r.get("status") or ("error" if r.get("error") else "unscored"),
            "detail": (r.get("detail") or r.get("error") or "")[:600], "code": (r.get("code") or "")[:2000]}


def _run_summary(suite: str, model: str, v, rows: list[dict], n_tasks: int) -> dict:
    tasks = defaultdict(list)
    for r in rows:
        tasks[r["task"]].append(r)
    tested = {t: rs for t, rs in tasks.items() if all(r.get("passed") is not None for r in rs)}
    n = min((len(rs) for rs in tasks.values()), default=0)
    ks = [k for k in (1, 2, 5, 10, 20, 50, 100) if k <= n] or ([1] if n else [])
    pass_k = {}
    for k in ks:
        vals = [pass_at_k(len(rs), sum(bool(r["passed"]) for r in rs), k) for rs in tested.values() if len(rs) >= k]
        if vals:
            pass_k[f"pass@{k}"] = round(statistics.fmean(vals), 4)
    statuses = defaultdict(int)
    for r in rows:
        statuses[r.get("status") or ("error" if r.get("error") else "unscored")] += 1
    isolation = sorted({r["isolation"] for r in rows if r.get("isolation")})
    return {
        "suite": suite, "model": model, "variant": v.name, "temperature": v.temperature,
        "how": sorted({r.get("how") or "" for r in rows}),
        "tasks": len(tasks), "tasks_planned": n_tasks, "samples_per_task": n,
        **pass_k,
        "exact_match": _mean([r.get("exact") for r in rows]),
        "edit_similarity": _mean([r.get("edit_sim") for r in rows]),
        "latency_s": _mean([r.get("latency_s") for r in rows]),
        "latency_s_median": _median([r.get("latency_s") for r in rows]),
        "ttft_s": _mean([r.get("ttft_s") for r in rows]),
        "tokens_per_s": _mean([r.get("tokens_per_s") for r in rows]),
        "completion_tokens": _mean([r.get("completion_tokens") for r in rows]),
        "errors": sum(1 for r in rows if r.get("error")),
        "statuses": dict(statuses),
        "isolation": isolation,
    }


def _repair_summary(suite, model, rounds, rows, wanted) -> dict | None:
    """Solved within r rounds, for r = 0..N; r = 0 is the greedy sample alone."""
    chains = defaultdict(dict)
    for r in rows:
        rnd = 0 if r["variant"] == "greedy" else r["sample"]
        if r["variant"] == "greedy" and r["sample"] != 0:
            continue
        chains[r["task"]][rnd] = r
    chains = {t: c for t, c in chains.items() if t in wanted and 0 in c and c[0].get("passed") is not None}
    if not chains:
        return None
    solved_by = []
    samples_used = []
    for c in chains.values():
        first = next((rnd for rnd in sorted(c) if c[rnd].get("passed")), None)
        solved_by.append(first)
        samples_used.append((first if first is not None else max(c)) + 1)
    n = len(chains)
    after = [round(sum(1 for s in solved_by if s is not None and s <= r) / n, 4) for r in range(rounds + 1)]
    return {"suite": suite, "model": model, "rounds": rounds, "tasks": n, "solved_after_round": after,
            "solved": after[-1], "mean_samples_used": round(statistics.fmean(samples_used), 3)}


def _resample_summary(suite, model, samples, rows, wanted) -> dict | None:
    tasks = defaultdict(list)
    for r in rows:
        if r["task"] in wanted and r.get("passed") is not None:
            tasks[r["task"]].append(bool(r["passed"]))
    tasks = {t: p for t, p in tasks.items() if len(p) >= samples}
    if not tasks:
        return None
    n = len(tasks)
    curve = [round(statistics.fmean(pass_at_k(len(p), sum(p), k) for p in tasks.values()), 4)
             for k in range(1, samples + 1)]
    return {"suite": suite, "model": model, "samples": samples, "tasks": n, "pass_at_k_curve": curve,
            "any_pass": round(sum(1 for p in tasks.values() if any(p[:samples])) / n, 4)}


def _compare(repairs, resamples) -> list[dict]:
    out = []
    for rep in repairs:
        res = next((x for x in resamples if x["suite"] == rep["suite"] and x["model"] == rep["model"]), None)
        row = {"suite": rep["suite"], "model": rep["model"], "samples": rep["rounds"] + 1,
               "greedy": rep["solved_after_round"][0], "repair": rep["solved"],
               "repair_tasks": rep["tasks"]}
        if res:
            row.update(resample_any=res["any_pass"], resample_tasks=res["tasks"])
        out.append(row)
    return out


# ---------------------------------------------------------------- text and HTML


def table(summary: dict) -> str:
    """The summary as plain text for the terminal."""
    lines = [f"{'suite':<18} {'model':<22} {'variant':<8} {'n':>4} {'pass@1':>7} {'EM':>6} {'edit':>6} "
             f"{'lat s':>7} {'ttft s':>7} {'tok/s':>7}"]
    for r in summary["runs"]:
        lines.append(f"{r['suite']:<18} {r['model']:<22} {r['variant']:<8} {r['tasks']:>4} "
                     f"{_f(r.get('pass@1'))} {_f(r.get('exact_match'), 6)} {_f(r.get('edit_similarity'), 6)} "
                     f"{_f(r.get('latency_s'), 7, 2)} {_f(r.get('ttft_s'), 7, 2)} {_f(r.get('tokens_per_s'), 7, 1)}")
    for c in summary["comparison"]:
        res = f", resample {c['samples']} at T>0: {c['resample_any']:.3f} (n={c['resample_tasks']})" \
            if "resample_any" in c else ""
        lines.append(f"{c['suite']} {c['model']}: greedy {c['greedy']:.3f}, repair x{c['samples'] - 1}: "
                     f"{c['repair']:.3f} (n={c['repair_tasks']}){res}")
    return "\n".join(lines) + "\n"


def _f(x, width=7, digits=3) -> str:
    return f"{x:>{width}.{digits}f}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a pass rate over n tasks (sound at 0 and 1)."""
    if not n:
        return (0.0, 0.0)
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def select_curves(s: dict, out: Path, methods: tuple) -> str:
    """`limner eval --select`: pass rate against pool size per method, with the
    bootstrap intervals; zeros are labelled so an all-zero chart still reads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(k) for k in s["curves"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, m in enumerate(methods):
        pts = [s["curves"][str(k)][m] for k in ks]
        ys = [p["mean"] for p in pts]
        err = [[max(0.0, y - p["lo"]) for y, p in zip(ys, pts)],
               [max(0.0, p["hi"] - y) for y, p in zip(ys, pts)]]
        xs = [k * (1 + 0.04 * (i - 2)) for k in ks]  # dodged so the intervals do not hide each other
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
        for x, y in zip(xs, ys):
            if y == 0:
                ax.annotate("0", (x, 0), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    top = max([s["curves"][str(k)][m]["hi"] for k in ks for m in methods] + [0.1])
    ax.set_ylim(-0.03, min(1.05, top + 0.1))
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("samples in the pool (N)")
    ax.set_ylabel("held-out pass rate (95 % bootstrap CI)")
    ax.set_title(f"selection by execution: {s['tasks']} tasks, {', '.join(s.get('labels', []))}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "select.png", dpi=110)
    plt.close(fig)
    return "select.png"


def plots(summary: dict, out: Path) -> list[str]:
    """PNG plots next to the report; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    made = []
    runs = [r for r in summary["runs"] if "pass@1" in r]
    if runs:
        suites = list(dict.fromkeys(r["suite"] for r in runs))
        series = list(dict.fromkeys((r["model"], r["variant"]) for r in runs))
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(suites) + 2), 3.6))
        width = 0.8 / max(1, len(series))
        for i, (model, variant) in enumerate(series):
            ys = [next((r["pass@1"] for r in runs if r["suite"] == s and r["model"] == model
                        and r["variant"] == variant), 0) for s in suites]
            ns = [next((r["tasks"] for r in runs if r["suite"] == s and r["model"] == model
                        and r["variant"] == variant), 0) for s in suites]
            xs = [j + i * width for j in range(len(suites))]
            lo_hi = [wilson(y, n) for y, n in zip(ys, ns)]
            err = [[max(0.0, y - lo) for y, (lo, _) in zip(ys, lo_hi)],
                   [max(0.0, hi - y) for y, (_, hi) in zip(ys, lo_hi)]]  # rounding at 0 and 1
            ax.bar(xs, ys, width, yerr=err, capsize=3, label=f"{model} ({variant})")
            for x, y in zip(xs, ys):  # the value on every bar: a zero bar is still read as zero
                ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 2),
                            ha="center", fontsize=7)
        ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(suites))], suites)
        ax.set_ylabel("pass@1 (95 % Wilson interval)")
        top = max([wilson(r["pass@1"], r["tasks"])[1] for r in runs] + [0.04])
        ax.set_ylim(0, min(1.05, top * 1.25))
        ax.set_title("pass@1 by suite")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "pass_at_1.png", dpi=110)
        plt.close(fig)
        made.append("pass_at_1.png")
    if summary["repair"]:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for rep in summary["repair"]:
            xs = list(range(1, rep["rounds"] + 2))
            ax.plot(xs, rep["solved_after_round"], marker="o", label=f"repair {rep['model']} ({rep['suite']})")
        for res in summary["resample"]:
            xs = list(range(1, res["samples"] + 1))
            ax.plot(xs, res["pass_at_k_curve"], marker="s", linestyle="--",
                    label=f"resample {res['model']} ({res['suite']})")
        from matplotlib.ticker import MaxNLocator

        top = max([max(r["solved_after_round"]) for r in summary["repair"]]
                  + [max(r["pass_at_k_curve"]) for r in summary["resample"]] + [0.04])
        ax.set_ylim(0, min(1.0, top * 1.2))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("samples per task")
        ax.set_ylabel("tasks solved (fraction)")
        ax.set_title("repair vs resample at equal samples")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "repair_vs_resample.png", dpi=110)
        plt.close(fig)
        made.append("repair_vs_resample.png")
    speed = [r for r in summary["runs"] if r.get("tokens_per_s")]
    if speed:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        names = [f"{r['model']}\n{r['suite']} {r['variant']}" for r in speed]
        ax.barh(names, [r["tokens_per_s"] for r in speed])
        ax.set_xlabel("tokens/s (mean)")
        ax.set_title("decode speed")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(out / "speed.png", dpi=110)
        plt.close(fig)
        made.append("speed.png")
    return made


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}pre{background:#f6f6f6;padding:6px;overflow:auto;max-height:20em}
.pass{color:#137333}.fail,.timeout,.limit,.no-output,.error{color:#b3261e}img{max-width:100%}"""


def write_html(summary: dict, out_dir: Path | str, title: str = "limner eval") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        images = plots(summary, out)
        plot_note = ""
    except ImportError:
        images, plot_note = [], "<p>matplotlib is not installed, so there are no plots (make setup installs it).</p>"
    e = html.escape
    parts = [f"<!doctype html><meta charset=utf-8><title>{e(title)}</title><style>{_CSS}</style>",
             f"<h1>{e(title)}</h1>"]
    parts.append("<h2>Suites</h2><ul>" + "".join(
        f"<li><b>{e(n)}</b>: {e(s['description'])} ({s['tasks']} tasks run, {e(s['mode'])}, "
        f"max_tokens {s['max_tokens']})</li>" for n, s in summary["suites"].items()) + "</ul>")
    cols = ["suite", "model", "variant", "how", "tasks", "samples_per_task"]
    metric_cols = sorted({k for r in summary["runs"] for k in r if k.startswith("pass@")},
                         key=lambda k: int(k[5:]))
    metric_cols += ["exact_match", "edit_similarity", "codebleu", "latency_s", "ttft_s", "tokens_per_s",
                    "completion_tokens", "errors"]
    metric_cols = [c for c in metric_cols if any(c in r for r in summary["runs"])]
    parts.append("<h2>Results</h2><table><tr>" + "".join(
        f"<th class=l>{c}</th>" for c in cols) + "".join(f"<th>{c}</th>" for c in metric_cols) + "</tr>")
    for r in summary["runs"]:
        parts.append("<tr>" + "".join(f"<td class=l>{e(_cell(r.get(c)))}</td>" for c in cols)
                     + "".join(f"<td>{e(_cell(r.get(c)))}</td>" for c in metric_cols) + "</tr>")
    parts.append("</table>")
    iso = sorted({i for r in summary["runs"] for i in r.get("isolation", [])})
    if iso:
        parts.append("<p>Tests ran in limner's sandbox: " + "; ".join(e(i) for i in iso) + ".</p>")
    from limner.evals.dispatch import describe

    if describe(summary.get("dispatch")):  # retries, 429s, failing endpoints
        parts.append("<p>Servers: " + e(describe(summary["dispatch"])) + ".</p>")
    if summary["comparison"]:
        parts.append("<h2>Repair vs resample at equal samples</h2><p>Repair with N rounds uses up to N+1 "
                     "samples per task (the greedy one, then one per round); the baseline draws N+1 samples "
                     "at temperature &gt; 0 and counts a task solved if any passes.</p><table><tr>"
                     "<th class=l>suite</th><th class=l>model</th><th>samples</th><th>greedy</th>"
                     "<th>repair</th><th>resample</th><th>tasks</th></tr>")
        for c in summary["comparison"]:
            parts.append(f"<tr><td class=l>{e(c['suite'])}</td><td class=l>{e(c['model'])}</td>"
                         f"<td>{c['samples']}</td><td>{c['greedy']:.3f}</td><td>{c['repair']:.3f}</td>"
                         f"<td>{_cell(c.get('resample_any'))}</td><td>{c['repair_tasks']}</td></tr>")
        parts.append("</table>")
    parts.append(plot_note + "".join(f'<p><img src="{e(i)}" alt="{e(i)}"></p>' for i in images))
    parts.append("<h2>Per task</h2>")
    for key, tasks in summary["per_task"].items():
        suite, model = key.split("|", 1)
        parts.append(f"<details><summary>{e(suite)} / {e(model)} ({len(tasks)} tasks)</summary>")
        for tid, variants in tasks.items():
            cells = " ".join(f"<span class='{e(b['status'])}'>{e(v)}: {e(b['status'])}</span>"
                             for v, b in variants.items())
            first = next(iter(variants.values()))
            parts.append(f"<details><summary>{e(tid)}: {cells}</summary><pre>{e(first['code'])}</pre>"
                         + (f"<pre>{e(first['detail'])}</pre>" if first["detail"] else "") + "</details>")
        parts.append("</details>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return "" if v is None else str(v)


def write_json(summary: dict, out_dir: Path | str) -> Path:
    path = Path(out_dir) / "report.json"
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def relpath(p: Path) -> str:
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)
