"""What the syntax-aware FIM stop costs per streamed line, on a 5,000-line file.

The stop parses a bounded window around the hole (from the nearest
top-level line above, at most stopper.WINDOW_ABOVE lines, to the first
top-level item below, at most WINDOW_BELOW), not the file, and reparses it
incrementally. This runs the same Stopper on the same stream as shipped and
with `whole_file=True` and no incremental reparse (the whole-file reparse a
naive stop would do), and prints the median cost per streamed line of each
and their ratio. Times are this thread's CPU time, so other processes on a
busy machine do not count against the stop; wall time is shown too.
Goal: <= 1 ms median per line.

The middle is built so that every line is a candidate the stop must parse
(each line is a complete statement, but an early syntax error keeps the
parse from ever passing): the worst case, one parse per line.

    .venv/bin/python bench/fim_stop_overhead.py [--lines 5000] [--middle 200] [--language python]
"""
from __future__ import annotations

import argparse
import statistics
import time

from limner.fim import stopper as stopper_mod

FILES = {
    "python": ("def f{i}(x):\n    y = x * {i}\n    return y + 1\n\n\n", "def norm(x, y):\n",
               "    v{i} = x * {i} + y\n", "    x = = 1\n", "    return r\n"),
    "c": ("int f{i}(int x) {{\n    int y = x * {i};\n    return y + 1;\n}}\n\n", "int norm(int x, int y) {{\n",
          "    int v{i} = x * {i} + y;\n", "    int x = = 1;\n", "    return r;\n}}\n"),
}


def build(language: str, lines: int, middle_lines: int):
    func, head, mid, bad, tail = FILES[language]
    per = func.count("\n")
    n = lines // per // 2
    above = "".join(func.format(i=i) for i in range(n)) + head.format()
    below = tail.format() + "\n\n" + "".join(func.format(i=i) for i in range(n, 2 * n))
    middle = bad + "".join(mid.format(i=i) for i in range(middle_lines))
    return above, below, middle


def per_line_ms(language, prefix, suffix, middle, chunk=4, whole_file=False, incremental=True):
    """Per streamed line: (CPU ms of this thread, wall ms), and the number of parses."""
    st = stopper_mod.Stopper(language, prefix, suffix, whole_file=whole_file)
    st.incremental = incremental
    cpu, wall, c_now, w_now = [], [], 0.0, 0.0
    for i in range(0, len(middle), chunk):
        piece = middle[i : i + chunk]
        c0, w0 = time.thread_time(), time.perf_counter()
        keep = st.feed(piece)
        c_now += time.thread_time() - c0
        w_now += time.perf_counter() - w0
        if "\n" in piece:
            cpu.append(c_now * 1000)
            wall.append(w_now * 1000)
            c_now = w_now = 0.0
        assert keep is None, f"the stop fired ({st.reason}); the bench needs a middle that never completes"
    return cpu, wall, st.parses


def describe(label, cpu, wall):
    p90 = statistics.quantiles(cpu, n=10)[-1]
    return (f"{label}: median {statistics.median(cpu):.3f} ms/line CPU (p90 {p90:.3f}), "
            f"median {statistics.median(wall):.3f} ms/line wall")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=5000)
    ap.add_argument("--middle", type=int, default=200, help="streamed lines")
    ap.add_argument("--language", default="python", choices=sorted(FILES))
    args = ap.parse_args()
    prefix, suffix, middle = build(args.language, args.lines, args.middle)
    total = (prefix + suffix).count("\n")
    per_line_ms(args.language, prefix, suffix, middle[:200])  # load the grammar, warm caches

    t0 = time.perf_counter()
    stopper_mod.Stopper(args.language, prefix, suffix)
    setup_ms = (time.perf_counter() - t0) * 1000
    cpu, wall, parses = per_line_ms(args.language, prefix, suffix, middle)
    full_cpu, full_wall, _ = per_line_ms(args.language, prefix, suffix, middle,
                                         whole_file=True, incremental=False)
    inc_cpu, inc_wall, _ = per_line_ms(args.language, prefix, suffix, middle, whole_file=True)

    mw, mf = statistics.median(cpu), statistics.median(full_cpu)
    print(f"file: {total} lines of {args.language}, hole in the middle; {len(cpu)} streamed lines, "
          f"{parses} parses each (one per line: the worst case)")
    print(describe("limner (bounded window, incremental)", cpu, wall)
          + f"; set-up {setup_ms:.1f} ms once per request")
    print(describe("baseline: whole-file reparse        ", full_cpu, full_wall))
    print(describe("for reference: whole file, incremental", inc_cpu, inc_wall))
    print(f"ratio: {mf / mw:.1f}x cheaper per line than the whole-file reparse; "
          f"goal <= 1 ms median per line: {'met' if mw <= 1.0 else 'MISSED'} ({mw:.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
