"""Fuzz: N random buffers through everything before sending (issue 8, part 5).

Each buffer (tests/fuzz_buffers.py, the generator tests/test_fuzz.py also
uses) goes through buffer.check, buffer.parse, backends.open(...).describe()
and render.debug. Goal: 0 exceptions that are not LimnerError (each would be
"internal error, exit 70" in the CLI) and 0 buffers that touch the network
(sockets are refused and counted; a dry run must not connect or resolve).

    .venv/bin/python bench/fuzz.py [-n 100000] [--seed 8]

To measure other code, put its src first: PYTHONPATH=/other/src.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_buffers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args()
    import limner

    draw = fuzz_buffers.RandomDraw(random.Random(args.seed))
    tally = fuzz_buffers.Tally()
    with tempfile.TemporaryDirectory(prefix="limner-fuzz-") as root:
        cwd, config = fuzz_buffers.make_tree(root)
        started = time.perf_counter()
        for _ in range(args.n):
            text, default_profile = fuzz_buffers.case(draw)
            tally.run(text, default_profile, cwd, config)
        elapsed = time.perf_counter() - started
    bad = sum(count for count, _ in tally.errors.values())
    print(f"limner from {Path(limner.__file__).parent}")
    print(f"buffers: {tally.runs} (seed {args.seed}) in {elapsed:.1f} s "
          f"({elapsed / max(tally.runs, 1) * 1e3:.2f} ms each)")
    print(f"not LimnerError: {bad} ({100 * bad / max(tally.runs, 1):.2f} %)")
    for key, (count, (text, default_profile)) in sorted(tally.errors.items(), key=lambda kv: -kv[1][0]):
        print(f"  {count:6d}  {key}")
        print(f"          first: {text[:160]!r} (default profile {default_profile!r})")
    print(f"network attempts: {tally.network} buffers")
    return 1 if bad or tally.network else 0


if __name__ == "__main__":
    sys.exit(main())
