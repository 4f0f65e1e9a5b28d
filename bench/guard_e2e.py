"""The guard's end-to-end cost: the same 100 KB-buffer request with the guard on and off.

    nice -n 10 .venv/bin/python bench/guard_e2e.py [--iterations 60] [--runs 15]

The server is tests/faultserver.py on loopback, in its own process;
config.toml's `remote_hosts = ["127.0.0.1"]` makes limner treat it as the
remote API it stands in for, so "on" is the default `!secrets block` path
(scan every body string and the buffer, decide, redact the generic secrets
seeded in) and "off" is the same buffer with `!secrets off`.

  warm   in one process: backends.open + stream() to the end, alternating
         on/off, medians; what each request pays once the rules are compiled
  cold   whole `limner --no-log` processes: adds importing re2 and compiling
         the rules, which a one-shot `limner < buffer` pays once
  log    log_redact.scrub of that exchange's row: paid on every logged
         exchange, guard on or off (the log is redacted in every mode)

Goal (issue 11): <= 5 ms added for a 100 KB buffer.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from guard_speed import buffers  # noqa: E402
from limner import guard  # noqa: E402


def start_server() -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "faultserver.py")],
                         stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip()


def make_buffer(base: str, size: int, off: bool) -> str:
    text = buffers(size)["code+prose"]
    seeded = [f'db_password = "{guard.expand("{{alnum:24}}", f"e2e{i}")}"' for i in range(3)]
    step = len(text) // 4
    for i, s in enumerate(seeded):
        at = text.find("\n", step * (i + 1)) + 1
        text = text[:at] + s + "\n" + text[at:]
    head = f"!api {base}/ok/v1\n" + ("!secrets off\n" if off else "")
    return head + "!user\n" + text.replace("\n!", "\n !") + "\n"


def warm(bufs: dict[str, str], iterations: int) -> dict[str, list[float]]:
    from limner import backends, buffer
    from limner.events import Failure

    times: dict[str, list[float]] = {k: [] for k in bufs}
    for i in range(iterations + 3):
        for name, text in bufs.items():
            t = time.perf_counter()
            req = buffer.parse(text)
            adapter = backends.open(req)
            events = list(adapter.stream())
            dt = (time.perf_counter() - t) * 1000
            bad = [e for e in events if isinstance(e, Failure)]
            assert not bad, bad[0].message
            if i >= 3:  # the first rounds warm up connections, caches and the rules
                times[name].append(dt)
    return times


def cold(bufs: dict[str, str], runs: int, env: dict) -> dict[str, list[float]]:
    exe = ROOT / ".venv" / "bin" / "limner"
    times: dict[str, list[float]] = {k: [] for k in bufs}
    for _ in range(runs):
        for name, text in bufs.items():
            t = time.perf_counter()
            p = subprocess.run([str(exe), "--no-log"], input=text.encode(), env=env,
                               capture_output=True)
            times[name].append((time.perf_counter() - t) * 1000)
            assert p.returncode == 0, p.stdout.decode()[-500:]
    return times


def log_scrub(text: str, iterations: int) -> list[float]:
    from limner import backends, buffer, log, log_redact
    from limner.events import Outcome

    req = buffer.parse(text)
    adapter = backends.open(req)
    out = []
    for _ in range(iterations):
        ex = log.exchange_of(req, adapter, Outcome("ok", 0, text="a short reply"))
        t = time.perf_counter()
        log_redact.scrub(ex)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--size", type=int, default=100_000)
    args = ap.parse_args()
    cfg = tempfile.mkdtemp(prefix="limner-guard-e2e-")
    Path(cfg, "config.toml").write_text('[guard]\nremote_hosts = ["127.0.0.1"]\n')
    os.environ["LIMNER_CONFIG_DIR"] = cfg
    os.environ["LIMNER_NO_LOG"] = "1"
    server, base = start_server()
    try:
        bufs = {"on": make_buffer(base, args.size, False), "off": make_buffer(base, args.size, True)}
        print(f"buffer: {len(bufs['on'].encode())} bytes, 3 generic secrets (redacted when on); "
              f"server: faultserver on loopback, treated as remote (config remote_hosts)")
        w = warm(bufs, args.iterations)
        c = cold(bufs, args.runs, dict(os.environ))
        s = log_scrub(bufs["on"], 20)
    finally:
        server.kill()
    med = {k: statistics.median(v) for k, v in w.items()}
    print(f"warm  ({args.iterations} requests each): on {med['on']:.2f} ms, off {med['off']:.2f} ms, "
          f"added {med['on'] - med['off']:.2f} ms (median of per-round differences "
          f"{statistics.median(a - b for a, b in zip(w['on'], w['off'])):.2f} ms)")
    cm = {k: statistics.median(v) for k, v in c.items()}
    print(f"cold  ({args.runs} processes each): on {cm['on']:.1f} ms, off {cm['off']:.1f} ms, "
          f"added {cm['on'] - cm['off']:.1f} ms (importing re2 and compiling the rules included)")
    print(f"log   scrub of this exchange's row (every logged exchange, any mode): "
          f"median {statistics.median(s):.2f} ms")
    added = med["on"] - med["off"]
    print(f"goal <= 5 ms added per 100 KB request (warm): {added:.2f} ms "
          f"({'met' if added <= 5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
