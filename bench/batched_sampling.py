"""N samples of one prompt: one batch (Job.n = 8) vs 8 calls in a row, and
`limner serve` under 4 concurrent clients vs one.

    nice -n 10 .venv/bin/python bench/batched_sampling.py [--rounds 3] [--tokens 128]

Part 1, in process on SmolLM2-135M: 8 samples at T = 0.8 of one chat prompt,
max_tokens 128, as one n = 8 job (engine/batch.py) and as 8 single jobs
seeded seed..seed+7 (each reusing the prompt from the prefix cache, as a
client looping would). Rounds alternate so background load hits both alike.
Samples may end early at end-of-sequence, so tokens are counted and the
rate (tokens / wall second) is printed beside the wall time. Goal: batched
wall <= 0.4x sequential.

Part 2, over HTTP: a real `limner serve` app (uvicorn in this process), 4
requests of 128 tokens sent one after the other by one client, then by 4
clients at once; total completion tokens / wall second. The app decodes
concurrent requests together (engine/scheduler.py, --parallel 4);
bench/serve_concurrency.py compares that with --parallel 1, round by round.
An n = 4 request is shown beside them: one prompt, its KV shared.

Threads: 2 when the 1-minute load average is < 2, else 1 (2 spinning threads
on a busy 2-core machine are much slower than 1); printed.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time

PROMPT = [{"role": "user", "content": "Write a long Python module with several functions that "
           "parse, validate and summarise a CSV file of sales records, with docstrings."}]


def threads() -> int:
    return 2 if os.getloadavg()[0] < 2 else 1


def batched(engine, Job, n, tokens, seed, nt):
    from limner.events import Sample

    t = time.perf_counter()
    evs = list(engine.stream(Job(mode="chat", messages=PROMPT, n=n, params={
        "temperature": 0.8, "max_tokens": tokens, "seed": seed, "n_threads": nt})))
    wall = time.perf_counter() - t
    return wall, sum(e.tokens for e in evs if isinstance(e, Sample))


def sequential(engine, Job, n, tokens, seed, nt):
    from limner.events import Usage

    t, done = time.perf_counter(), 0
    for i in range(n):
        for e in engine.stream(Job(mode="chat", messages=PROMPT, params={
                "temperature": 0.8, "max_tokens": tokens, "seed": seed + i, "n_threads": nt})):
            if isinstance(e, Usage):
                done += e.completion_tokens or 0
    return time.perf_counter() - t, done


def serve_part(engine, tokens, nt):
    import httpx
    import uvicorn

    from limner.engine.serve import create_app

    os.environ["LIMNER_NO_LOG"] = "1"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
    srv = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning", lifespan="off"))
    threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not srv.started:
        time.sleep(0.02)

    def one(seed, n=1):
        r = httpx.post(url, timeout=600, json={"messages": PROMPT, "max_tokens": tokens, "n": n,
                                               "temperature": 0.8, "seed": seed, "n_threads": nt})
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    one(0)  # warm: model loaded, prompt cached
    t = time.perf_counter()
    seq = sum(one(s) for s in range(1, 5))
    seq_wall = time.perf_counter() - t
    got = []
    t = time.perf_counter()
    ts = [threading.Thread(target=lambda s=s: got.append(one(s))) for s in range(5, 9)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    conc_wall = time.perf_counter() - t
    t = time.perf_counter()
    nb = one(9, n=4)
    n_wall = time.perf_counter() - t
    srv.should_exit = True
    print(f"serve, 4 requests one after another (1 client): {seq} tokens in {seq_wall:.2f} s "
          f"= {seq / seq_wall:.1f} tok/s")
    print(f"serve, 4 concurrent clients:                    {sum(got)} tokens in {conc_wall:.2f} s "
          f"= {sum(got) / conc_wall:.1f} tok/s ({sum(got) / conc_wall / (seq / seq_wall):.2f}x)")
    print(f"serve, one request with n=4:                    {nb} tokens in {n_wall:.2f} s "
          f"= {nb / n_wall:.1f} tok/s ({nb / n_wall / (seq / seq_wall):.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--no-serve", action="store_true")
    a = ap.parse_args()
    from limner.engine.core import Engine, Job

    nt = threads()
    print(f"load average {os.getloadavg()[0]:.2f} -> n_threads={nt}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    engine = Engine(n_threads=nt, max_models=1)
    batched(engine, Job, 2, 4, 0, nt)  # warm: load, batch context, prompt
    sequential(engine, Job, 1, 4, 0, nt)
    ratios = []
    for r in range(a.rounds):
        order = [batched, sequential] if r % 2 == 0 else [sequential, batched]
        res = {}
        for f in order:
            res[f.__name__] = f(engine, Job, a.n, a.tokens, 100 * r, nt)
        (bw, bt), (sw, st) = res["batched"], res["sequential"]
        ratios.append(bw / sw)
        print(f"round {r + 1}: batched {bw:.2f} s ({bt} tok, {bt / bw:.1f} tok/s); "
              f"sequential {sw:.2f} s ({st} tok, {st / sw:.1f} tok/s); wall ratio {bw / sw:.2f}x, "
              f"per-token ratio {(bw / bt) / (sw / st):.2f}x")
    print(f"median wall ratio batched/sequential: {statistics.median(ratios):.2f}x (goal <= 0.4x)")
    if not a.no_serve:
        serve_part(engine, a.tokens, nt)
    engine.close()


if __name__ == "__main__":
    main()
