"""Decode speed through limner vs a raw llama-cpp-python loop.

    .venv/bin/python bench/engine_decode.py [--threads 2] [--tokens 200] [--rounds 5]

Baseline: this process loads the model with llama-cpp-python and runs
`Llama.generate` greedily, detokenizing each token (what any streaming
client must do). Against it: the whole limner path, a `limner` process
reading a completion buffer, talking to the resident engine over its
socket and writing the reply to stdout, timed by the bytes it prints.

Both use the same model, threads, n_ctx (8192), prompt and greedy
sampling, so they generate the same tokens; rounds alternate between the
two so background load hits both alike. Decode rate = (N - 1) / (time of
the N-th token - time of the first), prompt evaluation excluded.
Goal: limner >= 0.97x the raw loop.
"""
from __future__ import annotations

import argparse
import sys
import time

from engine_util import Timed, header, median, new_runtime_dir, private_env, stop_engine

PROMPT = "1, 2, 3, 4, 5,"  # greedy counting: no early end of sequence


def raw_loop(llm, n: int) -> tuple[float, str]:
    tokens = llm.tokenize(PROMPT.encode(), add_bos=llm._model.add_bos_token(), special=True)
    llm.reset()
    first = last = None
    pieces = []
    for i, tok in enumerate(llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05,
                                         repeat_penalty=1.0, reset=True)):
        pieces.append(llm.detokenize([tok]))
        now = time.perf_counter()
        first = first or now
        if i + 1 == n:
            last = now
            break
    return (n - 1) / (last - first), b"".join(pieces).decode("utf-8", "replace")


def limner_run(env: dict, model: str, n: int, threads: int) -> tuple[float, str]:
    buf = (f"!completion\n!:model {model}\n!:temperature 0\n!:max_tokens {n}\n"
           f"!:n_threads {threads}\n{PROMPT}")
    t = Timed(buf, env)
    return (n - 1) / (t.last - t.first), t.out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default="smollm2-135m,gemma3-270m")
    args = p.parse_args(argv)
    header("Engine decode speed: limner vs raw llama-cpp-python", ["bench/engine_decode.py", *argv])
    print(f"settings: {args.tokens} tokens greedy, n_threads {args.threads}, n_ctx 8192, "
          f"{args.rounds} alternating rounds, median\n")

    from limner.engine import models, quiet

    env = private_env(new_runtime_dir())
    try:
        for name in args.models.split(","):
            path = models.resolve(name)[1]
            llm = quiet.load_llama(path, n_ctx=8192, n_batch=512, n_threads=args.threads,
                                   n_threads_batch=args.threads)
            limner_run(env, name, 8, args.threads)  # start the engine, load the model
            raw_loop(llm, 8)
            raw, ours, same = [], [], True
            for _ in range(args.rounds):
                r, raw_text = raw_loop(llm, args.tokens)
                o, our_text = limner_run(env, name, args.tokens, args.threads)
                raw.append(r)
                ours.append(o)
                same = same and raw_text == our_text
            llm.close()
            ratio = median(ours) / median(raw)
            print(f"{name}: raw loop {median(raw):.1f} tok/s, limner {median(ours):.1f} tok/s, "
                  f"ratio {ratio:.3f}x (goal >= 0.97)  [same text: {'yes' if same else 'NO'}]")
            print(f"  raw rounds    {', '.join(f'{x:.1f}' for x in raw)}")
            print(f"  limner rounds {', '.join(f'{x:.1f}' for x in ours)}")
    finally:
        stop_engine(env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
