"""How much time limner itself adds to one request, against a bare httpx request.

Both sides talk to the same local server (tests/faultserver.py's canned
`ok` stream: 8 chunks, usage, [DONE], no model), in the same process,
interleaved iteration by iteration so machine noise hits both alike:

  baseline  a fresh httpx.Client(verify=False).stream("POST", url, content=body),
            reading every line.
  limner    buffer.parse -> backends.open -> describe + Go-encode -> stream
            -> Renderer (to a null sink) -> log.record_outcome (SQLite, temp dir).

Prints the median of each, the milliseconds limner adds, the ratio, and
where the added time goes. Also the whole `limner < buffer` process
(interpreter start-up included), which is what an editor waits for.

    .venv/bin/python bench/overhead.py [--iterations 300] [--no-log]
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from faultserver import FaultServer  # noqa: E402

from limner import backends, buffer, render  # noqa: E402
from limner.backends.base import encode_go_json  # noqa: E402


BARE_PROCESS = """
import sys, httpx
with httpx.Client(verify=False) as c:
    with c.stream("POST", sys.argv[1], content=sys.argv[2].encode(),
                  headers={"content-type": "application/json"}) as r:
        for line in r.iter_lines():
            pass
"""


def bare(url: str, body: bytes) -> None:
    # A fresh client per request, as limner makes; no CA bundle for http://.
    with httpx.Client(verify=False) as client:
        with client.stream("POST", url, content=body,
                           headers={"content-type": "application/json"}) as r:
            for _ in r.iter_lines():
                pass


def through_limner(text: str, log_path: Path | None, parts: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    req = buffer.parse(text)
    t1 = time.perf_counter()
    adapter = backends.open(req)
    encode_go_json(adapter.describe().body)  # what stream() sends; counted as build
    t2 = time.perf_counter()
    r = render.Renderer(io.StringIO(), req)
    for event in adapter.stream():
        r.feed(event)
    outcome = r.finish()
    assert outcome.status == "ok", outcome
    t3 = time.perf_counter()
    if log_path is not None:
        from limner import log

        log.record_outcome(req, adapter, outcome, started=time.time(), path=log_path)
    t4 = time.perf_counter()
    for name, dt in (("parse", t1 - t0), ("build", t2 - t1), ("stream+render", t3 - t2),
                     ("log", t4 - t3)):
        parts[name].append(dt)


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--no-log", action="store_true", help="leave the SQLite write out")
    ap.add_argument("--processes", type=int, default=20,
                    help="whole `limner` runs to time (start-up included)")
    args = ap.parse_args()
    os.environ.pop("LIMNER_NO_LOG", None)

    server = FaultServer().start()
    api = server.url("ok")
    text = f"!api {api}\n!:max_tokens 8\n!user\nSay hello.\n"
    url = api + "/chat/completions"
    tmp = Path(tempfile.mkdtemp(prefix="limner-bench-"))
    log_path = None if args.no_log else tmp / "limner.db"
    body = encode_go_json(backends.open(buffer.parse(text)).describe().body)

    base_times: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in ("parse", "build", "stream+render", "log")}
    totals: list[float] = []
    for _ in range(10):  # warm both paths: imports, first SQLite open
        bare(url, body)
        through_limner(text, log_path, {k: [] for k in parts})
    for _ in range(args.iterations):
        t = time.perf_counter()
        bare(url, body)
        base_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        through_limner(text, log_path, parts)
        totals.append(time.perf_counter() - t)

    base, mine = ms(base_times), ms(totals)
    print(f"iterations: {args.iterations} (interleaved), server: faultserver `ok` on loopback")
    print(f"bare httpx request:     median {base:7.2f} ms")
    print(f"limner request (in-process, {'no log' if log_path is None else 'with log'}): "
          f"median {mine:7.2f} ms")
    paired = ms([m - b for m, b in zip(totals, base_times)])
    print(f"added by limner:        {mine - base:7.2f} ms   (ratio {mine / base:.2f}x); "
          f"median of paired differences {paired:.2f} ms")
    print("  where (medians): " + ", ".join(f"{k} {ms(v):.2f} ms" for k, v in parts.items()))

    if args.processes:
        exe = ROOT / ".venv" / "bin" / "limner"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "limner.cli"]
        env = {**os.environ, "LIMNER_DATA_DIR": str(tmp / "proc")}
        if log_path is None:
            env["LIMNER_NO_LOG"] = "1"
        # The process baseline: a Python that imports httpx and makes the
        # same request, nothing else.
        bare_cmd = [sys.executable, "-c", BARE_PROCESS, url, body.decode()]
        runs, bare_runs = [], []
        for _ in range(args.processes):
            t = time.perf_counter()
            p = subprocess.run(bare_cmd, capture_output=True)
            bare_runs.append(time.perf_counter() - t)
            assert p.returncode == 0, p.stderr
            t = time.perf_counter()
            p = subprocess.run(cmd, input=text.encode(), capture_output=True, env=env)
            runs.append(time.perf_counter() - t)
            assert p.returncode == 0, p.stdout + p.stderr
        print(f"whole processes ({args.processes} runs each, interpreter start-up included):")
        print(f"  python + httpx, one request:  median {ms(bare_runs):7.1f} ms")
        print(f"  limner < buffer:              median {ms(runs):7.1f} ms   "
              f"(added {ms(runs) - ms(bare_runs):.1f} ms, ratio {ms(runs) / ms(bare_runs):.2f}x)")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
