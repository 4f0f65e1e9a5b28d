"""`limner serve` under 4 concurrent clients vs one, with and without batching.

    nice -n 10 .venv/bin/python bench/serve_concurrency.py [--rounds 3] [--tokens 128]

Two real `limner serve` apps (uvicorn in this process, as `limner serve`
runs) over one Engine on SmolLM2-135M: `--parallel 4` (requests decoded
together, engine/scheduler.py) and `--parallel 1` (one at a time, as before
the scheduler). Per round and app: 4 chat requests sent one after another by
one client, then 4 sent at once by 4 clients; different prompts, T = 0.8,
seeded, max_tokens --tokens. Throughput is completion tokens / wall second
(a reply may end early at end-of-sequence, so tokens are counted). Rounds
alternate the apps' order so background load hits both alike; medians are
printed with the 4-client/1-client ratio.

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

ASKS = ["Write a long Python module that parses a CSV file of sales records.",
        "Explain, step by step and at length, how a hash table works.",
        "Write a long story about a lighthouse keeper and a storm.",
        "Describe in detail how to bake bread, from flour to loaf."]


def start(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not srv.started:
        time.sleep(0.02)
    return srv, f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"


def ask(url, i, seed, tokens, nt) -> int:
    import httpx

    r = httpx.post(url, timeout=900, json={
        "model": "smollm2-135m", "messages": [{"role": "user", "content": ASKS[i % 4]}],
        "max_tokens": tokens, "temperature": 0.8, "seed": seed, "n_threads": nt})
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


def one_client(url, seed, tokens, nt) -> tuple[int, float]:
    t = time.perf_counter()
    done = sum(ask(url, i, seed + i, tokens, nt) for i in range(4))
    return done, time.perf_counter() - t


def four_clients(url, seed, tokens, nt) -> tuple[int, float]:
    got: list[int] = []
    ts = [threading.Thread(target=lambda i=i: got.append(ask(url, i, seed + i, tokens, nt)))
          for i in range(4)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return sum(got), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    os.environ["LIMNER_NO_LOG"] = "1"
    from limner.engine.core import Engine
    from limner.engine.serve import create_app

    nt = 2 if os.getloadavg()[0] < 2 else 1
    print(f"load average {os.getloadavg()[0]:.2f} -> n_threads={nt}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    engine = Engine(n_threads=nt, max_models=1)
    apps = {p: create_app(engine, parallel=p, log=False) for p in (4, 1)}
    urls = {p: start(app)[1] for p, app in apps.items()}
    for p in (4, 1):  # warm: model loaded, batch context made, prompts seen
        four_clients(urls[p], 0, 8, nt)
    rates: dict[tuple, list[float]] = {}
    for r in range(a.rounds):
        order = (4, 1) if r % 2 == 0 else (1, 4)
        line = []
        for p in order:
            for name, f in (("1 client", one_client), ("4 clients", four_clients)):
                done, wall = f(urls[p], 100 * r, a.tokens, nt)
                rates.setdefault((p, name), []).append(done / wall)
                line.append(f"p{p} {name}: {done} tok {wall:.2f} s = {done / wall:.1f} tok/s")
        print(f"round {r + 1}: " + "; ".join(line))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for p, what in ((4, "--parallel 4 (batching)"), (1, "--parallel 1 (one at a time)")):
        one, four = med[(p, "1 client")], med[(p, "4 clients")]
        print(f"{what}: 1 client {one:.1f} tok/s, 4 concurrent clients {four:.1f} tok/s total "
              f"({four / one:.2f}x)")
    print(f"1 client, --parallel 4 vs --parallel 1: "
          f"{med[(4, '1 client')] / med[(1, '1 client')]:.2f}x (no regression = about 1.00x)")
    print(f"4 clients, --parallel 4 vs --parallel 1: "
          f"{med[(4, '4 clients')] / med[(1, '4 clients')]:.2f}x")
    for app in apps.values():
        app.state.scheduler.close()
    engine.close()


if __name__ == "__main__":
    main()
