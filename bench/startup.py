"""Start-up: `limner --help` vs a bare `python -c pass`, in the same run.

Goal (issue 2): `limner --help` in under 0.3 s. The bare interpreter is the
floor no Python CLI can go under, so the ratio shows what limner itself adds.

    .venv/bin/python bench/startup.py [--runs 30]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMNER = ROOT / ".venv" / "bin" / "limner"


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "limner --help": [str(LIMNER), "--help"],
        "limner check --directives": [str(LIMNER), "check", "--directives"],
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.runs):  # interleaved, so load changes hit every case alike
        for name, cmd in cases.items():
            times[name].append(timed(cmd))
    base = statistics.median(times["python -c pass"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} median {med * 1000:7.1f} ms  p90 {sorted(ts)[int(len(ts) * 0.9) - 1] * 1000:7.1f} ms"
              f"  ratio to bare python {med / base:5.2f}x")
    helped = statistics.median(times["limner --help"])
    print(f"goal: limner --help < 300 ms: {'met' if helped < 0.3 else 'MISSED'} ({helped * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
