"""What the secret guard adds to a request whose buffer is 100 KB.

    nice -n 10 .venv/bin/python bench/guard_speed.py [--iterations 200] [--size 100000]

The guard's per-request work is scan + decide (+ redact when something is
found), all in-process; phase 2 puts it in front of the transport, so this
is the time a request gains over the same request with the guard off.
Buffers of --size bytes:

  code+prose   our own src/ and docs, the ordinary case (a few keywords hit)
  secrets      the same with 10 secrets spread in (generic and high): scan,
               decide and redact all do work
  every-rule   text that holds every rule's keywords but no secret: every
               regex runs, the worst case for keyword prefiltering
  unicode      code+prose with non-ASCII on every line (offsets re-counted)

Also the first scan in a process that already imported limner's request
path (what `limner < buffer` pays once): importing the guard and re2 and
compiling the rules.
Goal (issue 11): <= 5 ms added for 100 KB.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from limner import guard  # noqa: E402


def _fill(parts: list[str], size: int) -> str:
    out, n, i = [], 0, 0
    while n < size:
        p = parts[i % len(parts)]
        out.append(p)
        n += len(p.encode())
        i += 1
    return "".join(out).encode()[:size].decode("utf-8", "ignore")


def buffers(size: int) -> dict[str, str]:
    files = sorted((ROOT / "src" / "limner").rglob("*.py")) + sorted((ROOT / "docs").glob("*.md"))
    ordinary = _fill([p.read_text(encoding="utf-8", errors="replace") for p in files
                      if "guard" not in p.parts], size)
    rules = guard.load().rules
    secrets = [guard.expand(r.true[0], f"speed{i}") for i, r in enumerate(rules)][:10]
    step = len(ordinary) // (len(secrets) + 1)
    with_secrets = ordinary
    for i, s in enumerate(secrets):
        at = with_secrets.find("\n", step * (i + 1)) + 1
        with_secrets = with_secrets[:at] + s + "\n" + with_secrets[at:]
    kws = sorted({k for r in rules for k in r.keywords})
    every = _fill([f"the {k} field of record {i} is documented below.\n"
                   for i, k in enumerate(kws * 3)] + [ordinary[:20000]], size)
    uni = "\n".join(f"{line}  # ✓ größe → {i}" for i, line in enumerate(ordinary.split("\n")))
    uni = uni.encode()[:size].decode("utf-8", "ignore")
    return {"code+prose": ordinary, "secrets": with_secrets, "every-rule": every, "unicode": uni}


def guard_request(text: str, local: bool = False) -> str:
    """What phase 2's egress check does with one request's text."""
    findings = guard.scan(text)
    d = guard.decide(findings, local, "redact")  # redact: the path that does the most work
    return guard.Redactor().redact(text, d.redact) if d.redact else text


def cold_start() -> tuple[float, float]:
    """(ms for the guard's first scan in a process that already runs a request
    path, of which ms compiling the rules). A `limner < buffer` process pays it once."""
    code = ("import sys, time; sys.path.insert(0, 'src'); import limner.run, httpx; "
            "t = time.perf_counter(); from limner import guard; rs = guard.load(); "
            "c = time.perf_counter(); rs.compiled(); c = time.perf_counter() - c; "
            "guard.scan('x = 1'); print((time.perf_counter() - t) * 1000, c * 1000)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    total, comp = out.stdout.split()
    return float(total), float(comp)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--size", type=int, default=100_000)
    args = ap.parse_args()
    colds = [cold_start() for _ in range(7)]
    bufs = buffers(args.size)
    guard_request("warm up")
    print(f"buffer size: {args.size} bytes; iterations: {args.iterations}; "
          f"rules: {len(guard.load().rules)}")
    worst = 0.0
    for name, text in bufs.items():
        nf = len(guard.scan(text))
        ts = []
        for _ in range(args.iterations):
            t = time.perf_counter()
            guard_request(text)
            ts.append((time.perf_counter() - t) * 1000)
        ts.sort()
        med, p90 = statistics.median(ts), ts[int(len(ts) * 0.9)]
        worst = max(worst, med)
        print(f"{name:12s} findings {nf:3d}   median {med:6.2f} ms   p90 {p90:6.2f} ms   "
              f"min {ts[0]:6.2f} ms")
    print(f"first scan in a process already on the request path (import guard + re2, compile "
          f"{len(guard.load().rules)} rules, scan): median {statistics.median(c[0] for c in colds):.1f} ms, "
          f"of which compiling {statistics.median(c[1] for c in colds):.1f} ms")
    print(f"goal <= 5 ms added per 100 KB request: worst median {worst:.2f} ms "
          f"({'met' if worst <= 5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
