"""Cross-file completion with repository context (issue 9, bench 1): `limner bench context`.

The bench lives in the package (src/limner/retrieval/bench.py and
bench_holes.py) so users run it on their own suites and models; this script
keeps the commands in docs/benchmarks.md working.

    nice -n 10 .venv/bin/python bench/context_completion.py [--holes 120] [--seed 11] [--out FILE]
    nice -n 10 .venv/bin/python bench/context_completion.py --cut symbol --model gemma3-270m --budget 512
"""
from __future__ import annotations

import sys

from limner.benchcli import main

if __name__ == "__main__":
    sys.exit(main(["context", *sys.argv[1:]]))
