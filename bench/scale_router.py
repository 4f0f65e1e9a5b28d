"""Throughput behind SGLang's router with 1, 2, 4 fixed-latency workers, and the router's added latency.

    nice -n 10 .venv/bin/python bench/scale_router.py [--delay 0.2] [--slots 4] [--per-worker 100]
                                                      [--append docs/benchmarks.md]

The workers are fake: a tiny asyncio OpenAI-compatible server that answers
each chat request after `--delay` seconds, at most `--slots` at a time (the
rest queue), so the CPU does not cap the numbers and one worker's capacity
is exactly slots / delay requests per second. The client keeps slots × N
requests in flight (what `limner eval --concurrency` would be set to) and
sends per_worker × N requests; throughput is compared with N × one worker
(goal ≥ 0.9× linear). Then the router's added latency: the same zero-delay
request one at a time, direct and through the router (median and p90 over
--latency-n requests).

Everything listens on 127.0.0.1 only. The router is sglang-router
(`python -m sglang_router.launch_router`), policy round_robin.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

REPLY = {"id": "x", "object": "chat.completion", "model": "fake",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


# ---------------------------------------------------------------- the fake worker


async def _handle(reader, writer, delay: float, slots: asyncio.Semaphore):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 2:  # not HTTP/1.1 (a probe): hang up
                break
            method, path = parts[:2]
            length = 0
            for ln in lines[1:]:
                if ln.lower().startswith("content-length:"):
                    length = int(ln.split(":", 1)[1])
            if length:
                await reader.readexactly(length)
            if method == "POST":
                async with slots:  # a worker's batch: the rest wait their turn
                    if delay:
                        await asyncio.sleep(delay)
                body = json.dumps(REPLY).encode()
            elif path.startswith("/v1/models"):
                body = json.dumps({"object": "list", "data": [{"id": "fake"}]}).encode()
            else:  # /health, /get_server_info, ...: alive
                body = b"{}"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve(ports: list[int], delay: float, slots: int):
    servers = []
    for port in ports:
        sem = asyncio.Semaphore(slots)
        servers.append(await asyncio.start_server(
            lambda r, w, sem=sem: _handle(r, w, delay, sem), "127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Workers:
    """N fake workers in one child process (asyncio: sleeping costs no CPU)."""

    def __init__(self, n: int, delay: float, slots: int):
        self.ports = [_port() for _ in range(n)]
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", ",".join(map(str, self.ports)),
                                      "--delay", str(delay), "--slots", str(slots)], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Router:
    def __init__(self, urls: list[str], policy: str = "round_robin"):
        import httpx

        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *urls, "--policy", policy,
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error",
             "--prometheus-host", "127.0.0.1", "--prometheus-port", str(_port())],  # default: 0.0.0.0:29000
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the router did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


# ---------------------------------------------------------------- the client


async def _load(url: str, total: int, inflight: int) -> tuple[float, list[float]]:
    import httpx

    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    lat: list[float] = []
    left = iter(range(total))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=inflight * 2)) as client:
        async def one():
            for _ in left:
                t = time.perf_counter()
                r = await client.post(url + "/v1/chat/completions", json=body)
                r.raise_for_status()
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(inflight)))
        return time.perf_counter() - t0, lat


def throughput(n: int, args) -> dict:
    workers = Workers(n, args.delay, args.slots)
    router = Router(workers.urls)
    try:
        asyncio.run(_load(router.url, 2 * n * args.slots, n * args.slots))  # warm the connections
        wall, lat = asyncio.run(_load(router.url, args.per_worker * n, n * args.slots))
    finally:
        router.stop()
        workers.stop()
    rate = args.per_worker * n / wall
    return {"workers": n, "requests": args.per_worker * n, "wall_s": wall, "req_per_s": rate,
            "ideal": n * args.slots / args.delay, "p50_ms": 1000 * statistics.median(lat)}


def added_latency(args) -> dict:
    workers = Workers(1, 0.0, 64)
    router = Router(workers.urls)
    try:
        out = {}
        for name, url in (("direct", workers.urls[0]), ("router", router.url)):
            asyncio.run(_load(url, 50, 1))
        for _ in range(2):  # interleaved, so load drifts hit both
            for name, url in (("direct", workers.urls[0]), ("router", router.url)):
                _, lat = asyncio.run(_load(url, args.latency_n, 1))
                out.setdefault(name, []).extend(lat)
    finally:
        router.stop()
        workers.stop()
    q = {k: (1000 * statistics.median(v), 1000 * statistics.quantiles(v, n=10)[-1]) for k, v in out.items()}
    return {"direct_p50_ms": q["direct"][0], "direct_p90_ms": q["direct"][1],
            "router_p50_ms": q["router"][0], "router_p90_ms": q["router"][1],
            "added_p50_ms": q["router"][0] - q["direct"][0]}


def section_head(title: str, command: str, details: str) -> str:
    """The docs/benchmarks.md heading and machine line both scale benches append."""
    return (f"\n## {title}\n\nIssue 12. `{command}` on {datetime.date.today()}, {os.cpu_count()} cores "
            f"({cpu_name()}, shared with other work; load average {os.getloadavg()[0]:.1f} at the end), "
            f"Python {platform.python_version()}, {details}\n\n")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--per-worker", type=int, default=100)
    p.add_argument("--latency-n", type=int, default=200)
    p.add_argument("--append", default=None)
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve([int(x) for x in args.serve.split(",")], args.delay, args.slots))
        return 0
    rows = [throughput(n, args) for n in (1, 2, 4)]
    base = rows[0]["req_per_s"]
    lines = ["| workers | requests | in flight | wall | req/s | ideal req/s | vs 1 worker × N | p50 latency |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        r["linear"] = r["req_per_s"] / (base * r["workers"])
        lines.append(f"| {r['workers']} | {r['requests']} | {r['workers'] * args.slots} | {r['wall_s']:.2f} s | "
                     f"{r['req_per_s']:.1f} | {r['ideal']:.0f} | {r['linear']:.2f}× | {r['p50_ms']:.0f} ms |")
    lat = added_latency(args)
    lines += ["", f"Router's added latency, {2 * args.latency_n} sequential zero-delay requests each way "
              f"(interleaved): direct p50 {lat['direct_p50_ms']:.2f} ms / p90 {lat['direct_p90_ms']:.2f} ms; "
              f"through the router p50 {lat['router_p50_ms']:.2f} ms / p90 {lat['router_p90_ms']:.2f} ms: "
              f"**+{lat['added_p50_ms']:.2f} ms** per request at the median."]
    text = "\n".join(lines)
    print(text)
    if args.append:
        import sglang_router

        head = section_head(
            "Scale-out: throughput behind sglang-router (`bench/scale_router.py`)",
            "nice -n 10 .venv/bin/python bench/scale_router.py",
            f"sglang-router {getattr(sglang_router, '__version__', '?')}, policy round_robin. Fake workers: "
            f"{args.delay * 1000:.0f} ms per request, {args.slots} slots each (so one worker serves "
            f"{args.slots / args.delay:.0f} req/s); the client keeps slots × N in flight. Goal ≥ 0.9× linear.")
        with open(args.append, "a") as f:
            f.write(head + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
