"""How an eval behaves as a client of busy servers: bounded, patient, idempotent.

    d = Dispatcher(concurrency=8)
    gen = d.call(lambda: target.ask(...))   # retried on 429/503/5xx/connection errors
    d.stats.summary()                        # what happened, for the report

- At most `concurrency` requests are in flight (the run's thread pool has
  that many threads; `default_concurrency` asks the endpoints for their slots).
- 429 and 503 honour Retry-After (capped at RETRY_CAP s); without it, and on
  other 5xx or a refused / reset / cut-off connection, jittered exponential
  backoff. At most `attempts` tries; the last failure is what gets stored.
- A retry is the same request again (same seed): the caller stores only the
  final answer, under its (task, sample, seed) key, so nothing is stored twice.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

RETRY_CAP = 30.0  # seconds: a Retry-After longer than this is not waited out in full
BACKOFF_BASE = 0.5
DEFAULT_SLOTS = 4  # per endpoint URL, when it does not say
# Failure kinds that mean "this attempt did not reach a healthy worker": safe to ask again.
RETRY_KINDS = {"refused", "connect", "disconnect", "timeout", "empty", "malformed"}
RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class Stats:
    requests: int = 0  # attempts sent
    retries: int = 0
    gave_up: int = 0  # samples whose last attempt still failed (stored as errors)
    causes: Counter = field(default_factory=Counter)  # "429", "503", "refused", ... per failed attempt
    waited_s: float = 0.0
    endpoint_failures: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "retries": self.retries, "gave_up": self.gave_up,
                    "causes": dict(self.causes), "waited_s": round(self.waited_s, 2),
                    "failed_endpoints": dict(self.endpoint_failures)}


def describe(summary: dict | None) -> str:
    """One line for the report: what the servers did to this run."""
    if not summary or not summary.get("requests"):
        return ""
    causes = ", ".join(f"{n}× {c}" for c, n in sorted(summary.get("causes", {}).items()))
    text = f"requests: {summary['requests']} sent, {summary['retries']} retried"
    if causes:
        text += f" ({causes}; waited {summary.get('waited_s', 0):g} s)"
    if summary.get("gave_up"):
        text += f"; {summary['gave_up']} failed after every retry"
    if summary.get("failed_endpoints"):
        text += "; failing endpoints: " + ", ".join(
            f"{e} ({n}×)" for e, n in summary["failed_endpoints"].items())
    return text


def retryable(gen) -> str | None:
    """The cause to count and retry on, or None when this answer is final."""
    if not gen.error:
        return None
    status = getattr(gen, "status", None)
    if status in RETRY_STATUS:
        return str(status)
    if status is None:
        kind = gen.error.split(":", 1)[0]
        if kind in RETRY_KINDS:
            return kind
    return None


def delay(attempt: int, retry_after: float | None, cap: float = RETRY_CAP) -> float:
    """Retry-After when the server gave one (capped), else jittered backoff."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    return min(cap, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:  # the HTTP-date form
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Dispatcher:
    def __init__(self, concurrency: int = DEFAULT_SLOTS, attempts: int = 5, cap: float = RETRY_CAP,
                 sleep=time.sleep):
        self.concurrency = max(1, concurrency)
        self.attempts = max(1, attempts)
        self.cap = cap
        self.sleep = sleep
        self.stats = Stats()

    def call(self, ask):
        """ask() -> Generation, tried until it is final or attempts run out."""
        for attempt in range(self.attempts):
            gen = ask()
            with self.stats.lock:
                self.stats.requests += 1
            gen.attempts = attempt + 1
            cause = retryable(gen)
            if cause is None:
                return gen
            wait = delay(attempt, getattr(gen, "retry_after", None), self.cap)
            with self.stats.lock:
                self.stats.causes[cause] += 1
                if getattr(gen, "endpoint", None):
                    self.stats.endpoint_failures[gen.endpoint] += 1
                if attempt + 1 == self.attempts:
                    self.stats.gave_up += 1
                    break
                self.stats.retries += 1
                self.stats.waited_s += wait
            self.sleep(wait)
        return gen


def default_concurrency(endpoints: list[str], timeout: float = 2.0) -> int:
    """Requests in flight: the endpoints' slots where they say (llama-server's
    /props total_slots; a /v1/models entry's max_num_seqs / slots), else
    DEFAULT_SLOTS per endpoint URL. A router counts as one URL: raise
    --concurrency to its workers' total."""
    total = 0
    for url in endpoints:
        total += _slots(url, timeout) or DEFAULT_SLOTS
    return max(1, total)


def _slots(url: str, timeout: float) -> int | None:
    # A bare GET (no body, no credentials): nothing for the egress guard to check.
    import httpx

    base = url.rstrip("/")
    root = base[:-3] if base.endswith("/v1") else base
    for path, pick in ((root + "/props", lambda o: o.get("total_slots")),
                       (base + "/models", _model_slots)):
        try:
            r = httpx.get(path, timeout=timeout)
            if r.status_code == 200:
                n = pick(r.json())
                if isinstance(n, int) and n > 0:
                    return n
        except Exception:  # noqa: BLE001 - any failure means "it does not say"
            continue
    return None


def _model_slots(obj) -> int | None:
    for m in (obj or {}).get("data") or []:
        if isinstance(m, dict):
            for k in ("max_num_seqs", "slots", "total_slots", "n_parallel"):
                if isinstance(m.get(k), int):
                    return m[k]
    return None
