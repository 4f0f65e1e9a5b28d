"""How fast the exchange log takes writes, alone and from many processes.

    .venv/bin/python bench/log_writers.py [--writers 8] [--each 200]

Baseline: one process writing all N*M records in a row. Against it: N
processes writing M each at the same moment (what an editor firing buffers,
the eval harness and `limner serve` do together). Also the cost `limner`
itself pays after a reply: opening the log and writing one record from a
fresh process. Prints wall times and the ratio; checks no row was lost.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

REPLY = "A fairly ordinary reply of a few sentences. " * 8


def _write(data_dir: str, n: int, each: int, go) -> None:
    os.environ["LIMNER_DATA_DIR"] = data_dir
    from limner import log

    go.wait()
    for i in range(each):
        log.record({"status": "ok", "reply": f"{n}:{i} {REPLY}", "model": f"w{n}",
                    "request_body": {"messages": [{"role": "user", "content": f"q {n} {i}"}]}})


def _run(writers: int, each: int) -> tuple[float, int]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        go = ctx.Event()
        procs = [ctx.Process(target=_write, args=(d, n, each, go)) for n in range(writers)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # interpreters up before the clock starts
        t0 = time.perf_counter()
        go.set()
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        import sqlite3

        rows = sqlite3.connect(Path(d) / "limner.db").execute(
            "SELECT count(DISTINCT id) FROM exchanges").fetchone()[0]
    return wall, rows


def _first_write(samples: int) -> list[tuple[float, float]]:
    """Open + migrate-check + one record, in a fresh process each time (as `limner` does)."""
    import subprocess

    code = (
        "import time;t=time.perf_counter();from limner import log;u=time.perf_counter();"
        "log.record({'status':'ok','reply':'x'});print(u-t,time.perf_counter()-u)"
    )
    out = []
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, LIMNER_DATA_DIR=d,
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
        for _ in range(samples):
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True)
            imp, write = p.stdout.split()
            out.append((float(imp), float(write)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--each", type=int, default=200)
    a = ap.parse_args()
    total = a.writers * a.each
    base, base_rows = _run(1, total)
    par, par_rows = _run(a.writers, a.each)
    first = _first_write(10)
    print(f"baseline: 1 process x {total} records   {base:.2f} s  "
          f"({total / base:.0f} rec/s), rows {base_rows}")
    print(f"parallel: {a.writers} processes x {a.each}     {par:.2f} s  "
          f"({total / par:.0f} rec/s), rows {par_rows}")
    print(f"ratio parallel/baseline wall time: {par / base:.2f}")
    imports = [i for i, _ in first]
    writes = [w for _, w in first]
    print(f"one record from a fresh process: import limner.log (stdlib included) median "
          f"{statistics.median(imports) * 1000:.1f} ms; open + write median "
          f"{statistics.median(writes) * 1000:.1f} ms, max {max(writes) * 1000:.1f} ms")
    if base_rows != total or par_rows != total:
        sys.exit("rows were lost")


if __name__ == "__main__":
    main()
