"""Decode speed through limner vs a raw llama-cpp-python loop.

    .venv/bin/python bench/engine_decode.py [--threads 2] [--tokens 200] [--rounds 5]

Baseline: a worker process loads the model with llama-cpp-python and runs
`Llama.generate` greedily, detokenizing each token (what any streaming
client must do). It is a long-lived process that sleeps between rounds,
in its own session like the resident engine, so the kernel's scheduler
treats both alike (with autogroup scheduling a session is a CPU-share
group: measured in this process instead, the baseline lost 30-70% to the
engine on a busy machine). Against it: the whole limner path, a `limner` process
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


def worker(path: str, threads: int) -> None:
    """The baseline process: one line "N" in, one JSON line {rate, text} out."""
    import json

    from limner.engine import quiet

    llm = quiet.load_llama(path, n_ctx=8192, n_batch=512, n_threads=threads,
                           n_threads_batch=threads)
    for line in sys.stdin:
        rate, text = raw_loop(llm, int(line))
        print(json.dumps({"rate": rate, "text": text}), flush=True)


class Baseline:
    def __init__(self, path: str, threads: int):
        import subprocess

        # Its own session, as the engine has: with autogroup scheduling a new
        # session is its own CPU-share group, which matters on a busy machine.
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", path, str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def run(self, n: int) -> tuple[float, str]:
        import json

        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        return out["rate"], out["text"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def same_process(name: str, n: int, threads: int, rounds: int) -> tuple[float, float]:
    """Median (raw, Engine) decode rates with both loops in this one process."""
    from limner.engine import models, quiet
    from limner.engine.core import Engine, Job
    from limner.events import Text

    llm = quiet.load_llama(models.resolve(name)[1], n_ctx=8192, n_batch=512,
                           n_threads=threads, n_threads_batch=threads)
    engine = Engine(n_threads=threads, max_models=1)

    def ours(k: int) -> float:
        first = last = None
        for ev in engine.stream(Job(mode="completion", model=name, prompt=PROMPT,
                                    params={"max_tokens": k, "temperature": 0})):
            if isinstance(ev, Text):
                last = time.perf_counter()
                first = first or last
        return (k - 1) / (last - first)

    raw_loop(llm, 8)
    ours(8)
    raws, engs = [], []
    for _ in range(rounds):
        raws.append(raw_loop(llm, n)[0])
        engs.append(ours(n))
    llm.close()
    engine.close()
    return median(raws), median(engs)


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

    from limner.engine import models

    env = private_env(new_runtime_dir())
    try:
        for name in args.models.split(","):
            base = Baseline(models.resolve(name)[1], args.threads)
            limner_run(env, name, 8, args.threads)  # start the engine, load the model
            base.run(8)
            raw, ours, same = [], [], True
            for _ in range(args.rounds):
                r, raw_text = base.run(args.tokens)
                o, our_text = limner_run(env, name, args.tokens, args.threads)
                raw.append(r)
                ours.append(o)
                same = same and raw_text == our_text
            base.close()
            inproc = same_process(name, args.tokens, args.threads, args.rounds)
            ratio = median(ours) / median(raw)
            print(f"{name}: raw loop {median(raw):.1f} tok/s, limner {median(ours):.1f} tok/s, "
                  f"ratio {ratio:.3f}x (goal >= 0.97)  [same text: {'yes' if same else 'NO'}]")
            print(f"  raw rounds    {', '.join(f'{x:.1f}' for x in raw)}")
            print(f"  limner rounds {', '.join(f'{x:.1f}' for x in ours)}")
            print(f"  same process, same loop without the daemon, pipe and CLI: raw {inproc[0]:.1f}, "
                  f"Engine {inproc[1]:.1f} tok/s, ratio {inproc[1] / inproc[0]:.3f}x")
    finally:
        stop_engine(env)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
