"""`limner engine status|stop`: look at or stop this user's resident engine."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from limner.engine import client, paths, protocol


def _human_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="limner engine", description="The resident engine process.")
    p.add_argument("action", choices=["status", "stop"])
    p.add_argument("--json", action="store_true", help="status as JSON")
    args = p.parse_args(argv)
    rdir = paths.runtime_dir()
    if os.environ.get("LIMNER_ENGINE", "").lower() == "inproc":
        print("LIMNER_ENGINE=inproc: limner runs the engine inside each call; there is no resident engine.")
        return 0
    try:
        reply = client.request(args.action)
    except (OSError, ValueError) as e:
        reply = None
        sys.stderr.write(f"limner: the engine did not answer: {e}\n")
    if reply is None:
        if args.json:
            print(json.dumps({"running": False, "dir": str(rdir)}))
        else:
            print(f"no engine running (runtime dir {rdir})")
        return 0 if args.action == "stop" else 3
    if args.action == "stop":
        pid = reply.get("pid")
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline and (rdir / protocol.PID_NAME).exists():
            time.sleep(0.05)
        print(f"engine {pid} stopped")
        return 0
    if args.json:
        print(json.dumps({"running": True, "dir": str(rdir), **reply}, indent=2))
        return 0
    print(f"engine running: pid {reply.get('pid')}, up {reply.get('uptime_s')}s, "
          f"{reply.get('jobs_done')} jobs done, {reply.get('queued')} queued")
    print(f"  socket   {reply.get('socket')}")
    print(f"  log      {rdir / protocol.LOG_NAME}")
    print(f"  threads  {reply.get('n_threads')}   idle exit after {reply.get('idle_timeout_s'):.0f}s")
    print(f"  cache    {reply.get('cache_entries')} saved contexts, "
          f"{_human_bytes(reply.get('cache_bytes', 0))} of {_human_bytes(reply.get('cache_cap_bytes', 0))}")
    for m in reply.get("loaded", []):
        print(f"  model    {m['name']}  n_ctx {m['n_ctx']}  loaded in {m['load_s']}s  ({m['path']})")
    if not reply.get("loaded"):
        print("  model    (none loaded yet)")
    return 0
