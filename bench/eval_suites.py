"""Suite results of the bundled models: pass@1 on HumanEval and MBPP, repair vs resample.

    .venv/bin/python bench/eval_suites.py [--humaneval 164] [--mbpp 427] [--subset 20] [--rounds 2]
                                          [--threads 1] [--max-tokens 192] [--out DIR] [--append docs/benchmarks.md]

Runs `limner eval` (resumable: the same --out picks up where a killed run
stopped) for each bundled model:

  1. greedy pass@1 on the first --humaneval HumanEval tasks and the first
     --mbpp MBPP tasks;
  2. on the first --subset tasks of each suite: --rounds repair rounds after
     a failed greedy sample, and the equal-samples baseline, rounds+1
     samples at T=0.8 counted solved if any passes.

The baseline for repair is resampling at the same number of samples; the
script prints the ratio repair / resample (published work finds repair
often no better, so a ratio near or below 1 is a finding, not a bug).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gemma3-270m", "smollm2-135m")


def limner_eval(args: list[str]) -> dict:
    exe = ROOT / ".venv" / "bin" / "limner"
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "limner.cli"]),
           "eval", *args, "--json", "--no-html"]
    print("$ " + " ".join(["limner", "eval", *args]), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # progress goes to our stderr
    if p.returncode != 0:
        raise SystemExit(f"limner eval failed ({p.returncode}):\n{p.stdout}")
    return json.loads(p.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--humaneval", type=int, default=164, help="HumanEval tasks for pass@1 (first N)")
    ap.add_argument("--mbpp", type=int, default=427, help="MBPP tasks for pass@1 (first N)")
    ap.add_argument("--subset", type=int, default=20, help="tasks per suite for repair vs resample")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "eval"))
    ap.add_argument("--skip-repair", action="store_true")
    ap.add_argument("--append", metavar="MD")
    a = ap.parse_args(argv)

    common = ["--threads", str(a.threads), "--max-tokens", str(a.max_tokens), "--out", a.out]
    pass1, comparison = [], []
    for model in a.models:
        for suite, n in (("humaneval", a.humaneval), ("mbpp", a.mbpp)):
            if n:
                s = limner_eval([suite, "--model", model, "--limit", str(n), *common])
                pass1 += [r for r in s["runs"] if r["variant"] == "greedy"]
        if a.subset and not a.skip_repair:
            s = limner_eval(["humaneval", "mbpp", "--model", model, "--limit", str(a.subset), "--repair",
                             str(a.rounds), "--resample-baseline", *common])
            comparison += s["comparison"]

    lines = [f"Bundled models on the embedded engine, {a.threads} thread(s), greedy (temperature 0), "
             f"max_tokens {a.max_tokens}; tests in limner's sandbox.", "",
             "| suite | model | asked as | tasks | pass@1 | exact match | edit sim. | tok/s | mean latency s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in pass1:
        lines.append(f"| {r['suite']} | {r['model']} | {', '.join(r['how'])} | {r['tasks']} | {r['pass@1']:.3f} | "
                     f"{r['exact_match']:.3f} | {r['edit_similarity']:.3f} | {r['tokens_per_s'] or 0:.1f} | "
                     f"{r['latency_s']:.2f} |")
    if comparison:
        lines += ["", f"Repair ({a.rounds} rounds, up to {a.rounds + 1} samples) vs resampling {a.rounds + 1} "
                  "samples at T=0.8 (solved if any passes), first "
                  f"{a.subset} tasks of each suite:", "",
                  "| suite | model | tasks | greedy | repair | resample | repair / resample |", "|---|---|---|---|---|---|---|"]
        for c in comparison:
            res = c.get("resample_any")
            ratio = f"{c['repair'] / res:.2f}" if res else ("= (both 0)" if not c["repair"] else "inf")
            lines.append(f"| {c['suite']} | {c['model']} | {c['repair_tasks']} | {c['greedy']:.3f} | "
                         f"{c['repair']:.3f} | {f'{res:.3f}' if res is not None else '-'} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.append:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "bench/eval_suites.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(a.append, "a", encoding="utf-8") as f:
            f.write(f"\n## Suite results ({stamp})\n\n`{cmd.strip()}` on {platform.machine()}, "
                    f"{os.cpu_count()} CPUs shared with other work.\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
