"""Scoring as Ray tasks: `limner eval --executor ray [--address ADDR]`.

Each (task, sample) is one Ray task that runs `score.test` — the same
strict bubblewrap sandbox (a fresh sandbox.run) — on whichever node takes
it. Only the score row comes back; the driver writes the store. A node that
dies takes its running tasks with it and Ray runs them again elsewhere
(max_retries); the driver takes each key's first answer and drops any
other, so every score is recorded exactly once.

Ray is an optional extra (`pip install 'limner[scale]'`), imported here
only, and this module is imported only when --executor ray is chosen.
"""
from __future__ import annotations

import os

from limner.errors import LimnerError

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps every address on 127.0.0.1
RETRIES = 3  # re-runs of a task whose node (or worker process) died


def _loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _reachable(address: str, seconds: float = 3.0) -> bool:
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=seconds):
            return True
    except (OSError, ValueError):
        return False


def _score_one(task, gen: dict, timeout: float, want: str) -> dict:
    """On the node: the sandboxed test, nothing else (it never sees the store)."""
    from limner.evals.score import test

    return test(task, gen, timeout, want)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, want: str = "strict", workers: int | None = None, **_):
        if address is None or _loopback(address):
            # A local Ray stays on loopback: without this, Ray swaps 127.0.0.1 for
            # the machine's network address and listens and dials there.
            os.environ.setdefault(LOCAL_ONLY, "0")
        try:
            import ray
        except ImportError:
            raise LimnerError("--executor ray needs Ray, which is not installed",
                              "pip install 'limner[scale]' (or plain `pip install ray`).") from None
        if address and address != "auto" and not _reachable(address):  # Ray would retry it forever
            raise LimnerError(f"no Ray cluster answers at {address}",
                              "Start it (`ray start --head --port 6379`) or fix --address "
                              "(HOST:6379, or ray://HOST:10001).")
        self.ray, self.address, self.want = ray, address, want
        self.started_here = False
        if not ray.is_initialized():
            try:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise LimnerError(f"cannot reach the Ray cluster at {address or 'a new local one'}: {e}",
                                  "Check --address (ray://HOST:10001 or HOST:6379), or leave it out for "
                                  "a local Ray.") from None
            self.started_here = True
        self.remote = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_score_one)

    def map(self, jobs: list, timeout: float):
        ray = self.ray
        pending = {self.remote.remote(task, gen, timeout, self.want): key for key, task, gen in jobs}
        done_keys: set = set()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as e:  # retries used up: a score that says so
                    row = {"passed": 0, "status": "error", "detail": f"ray: {type(e).__name__}: "
                                                                    f"{str(e).splitlines()[0][:300]}"}
                if key in done_keys:
                    continue
                done_keys.add(key)
                yield key, row

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
