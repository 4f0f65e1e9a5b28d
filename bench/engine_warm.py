"""Warm second call: time to first token when a buffer gains one `!user` turn.

    .venv/bin/python bench/engine_warm.py [--threads 2] [--rounds 3]

A ~2,000-token chat buffer (a source file and a question) is sent to the
resident engine (already running, model loaded, but this text never seen:
the "cold" call). Then, as an editor would, the reply limner printed is
appended with one more `!user` turn and the buffer is sent again (the
"warm" call). Both are timed from process start to the first byte of the
reply on stdout, i.e. what the user waits for. Each round uses a fresh
text, so earlier rounds cannot help. Goal: warm <= 0.15x cold.
"""
from __future__ import annotations

import argparse
import inspect
import sys

from engine_util import Timed, header, median, new_runtime_dir, private_env, stats_of, stop_engine


def source_text(chars: int) -> str:
    import textwrap  # any sizeable, stable stdlib module will do

    return inspect.getsource(textwrap)[:chars]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chars", type=int, default=7000, help="source text size (~2,000 tokens)")
    p.add_argument("--model", default="smollm2-135m")
    args = p.parse_args(argv)
    header("Engine warm second call: time to first token", ["bench/engine_warm.py", *argv])
    env = private_env(new_runtime_dir())
    head = (f"!:model {args.model}\n!:temperature 0\n!:max_tokens 24\n!:n_threads {args.threads}\n"
            "!stats\n")
    try:
        Timed(head + "!user\nhello\n", env)  # start the engine and load the model
        colds, warms = [], []
        for r in range(args.rounds):
            text = source_text(args.chars)
            first = f"{head}!user\nRound {r}. What does this module do?\n\n```python\n{text}\n```\n"
            cold = Timed(first, env)
            second = first + cold.out + "\n\n!user\n\nAnd in one word?\n"
            warm = Timed(second, env)
            c, w = stats_of(cold.out), stats_of(warm.out)
            colds.append(cold.ttft)
            warms.append(warm.ttft)
            print(f"round {r}: cold {cold.ttft * 1000:.0f} ms (prompt {c.get('prompt')} tokens, "
                  f"{c.get('cached', 0)} cached); warm {warm.ttft * 1000:.0f} ms "
                  f"(prompt {w.get('prompt')} tokens, {w.get('cached', 0)} cached)")
        ratio = median(warms) / median(colds)
        print(f"\nmedian time to first token: cold {median(colds) * 1000:.0f} ms, "
              f"warm {median(warms) * 1000:.0f} ms, ratio {ratio:.3f}x (goal <= 0.15)")
    finally:
        stop_engine(env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
