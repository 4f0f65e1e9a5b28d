"""Warm second infill with the same retrieved context: time to first token (issue 9, bench 3).

    .venv/bin/python bench/context_ttft.py [--rounds 5] [--threads 2] [--model gemma3-270m]

A copy of the stdlib `email` package is the repository (indexed before the
first round, so index time is not in either number). Each round cuts a hole
in another of its files and sends an `!infill` buffer with `!file` and
`!retrieve` (default budget: 1,024 tokens for infill) to the resident
engine, model already loaded: the "cold" call, its retrieved context never
seen. Then, as an editor would after the user typed the first characters
of the line, the buffer is sent again with them at the end of the prefix:
the "warm" call. Retrieval gives the same blocks in the same order, so the
engine's prefix cache holds the context and the prefix up to the cursor.
Both are timed from process start to the first byte of the reply (what the
user waits for). Goal: warm <= 0.2x cold.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from engine_util import LIMNER, Timed, header, median, new_runtime_dir, private_env, stats_of, stop_engine

FILES = ("feedparser.py", "_header_value_parser.py", "message.py", "utils.py", "generator.py",
         "header.py", "contentmanager.py", "policy.py")


def hole(root: str, name: str) -> tuple[str, str, str]:
    """(prefix, suffix, the line's first characters) around a statement line at ~60 % of the file: the 80 lines
    before it and 40 after, the window an editor plugin sends."""
    with open(os.path.join(root, "email", name), encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    i = int(len(lines) * 0.6)
    while not lines[i].strip() or lines[i].strip().startswith(("#", '"', "'")):
        i += 1
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    return "\n".join(lines[max(0, i - 80):i]) + "\n" + indent, "\n".join(lines[i + 1:i + 40]), lines[i].strip()[:3]


def context_notes(out: str) -> list[str]:
    """The retrieved blocks' sources, in prompt order, from the !stats lines."""
    return [ln.split(" tokens: ", 1)[1].split(" (", 1)[0] for ln in out.split("\n")
            if ln.startswith("!note context") and " tokens: " in ln]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--model", default="gemma3-270m")
    args = p.parse_args(argv)
    header("Warm second infill with the same retrieved context: time to first token",
           ["bench/context_ttft.py", *argv])
    work = tempfile.mkdtemp(prefix="limner-ttft-")
    root = os.path.join(work, "repo")
    shutil.copytree(os.path.join(sysconfig.get_paths()["stdlib"], "email"),
                    os.path.join(root, "email"), ignore=shutil.ignore_patterns("__pycache__"))
    env = private_env(new_runtime_dir(), LIMNER_CACHE_DIR=os.path.join(work, "cache"))
    subprocess.run([LIMNER, "index", root], env=env, check=True, capture_output=True, cwd=root)
    head = (f"!:model {args.model}\n!:temperature 0\n!:max_tokens 16\n!:n_threads {args.threads}\n"
            "!stats\n")
    try:
        Timed(head + "!completion\nx = 1\n", env)  # start the engine and load the model
        colds, warms = [], []
        for r in range(args.rounds):
            name = FILES[r % len(FILES)]
            prefix, suffix, typed = hole(root, name)
            buf = f"{head}!file email/{name}\n!retrieve\n\0\n!infill\n{suffix}\n"
            cold = Timed(buf.replace("\0", prefix), env, cwd=root)
            warm = Timed(buf.replace("\0", prefix + typed), env, cwd=root)
            a, b = context_notes(cold.out), context_notes(warm.out)
            if a != b:
                print(f"round {r}: the typed characters changed the retrieved blocks or their "
                      f"order: {a} -> {b}")
            c, w = stats_of(cold.out), stats_of(warm.out)
            colds.append(cold.ttft)
            warms.append(warm.ttft)
            print(f"round {r} ({name}): cold {cold.ttft * 1000:.0f} ms (prompt {c.get('prompt')} "
                  f"tokens, {c.get('cached', 0)} cached); warm {warm.ttft * 1000:.0f} ms "
                  f"(prompt {w.get('prompt')} tokens, {w.get('cached', 0)} cached)", flush=True)
        ratio = median(warms) / median(colds)
        print(f"\nmedian time to first token: cold {median(colds) * 1000:.0f} ms, "
              f"warm {median(warms) * 1000:.0f} ms, ratio {ratio:.3f}x (goal <= 0.2)")
    finally:
        stop_engine(env)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
