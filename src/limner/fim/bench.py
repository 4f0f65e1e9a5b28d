"""`limner bench fim`: every stop policy on the same generations.

Each task is generated ONCE up to the token cap, and the streamed chunks (one
per decoded token, with arrival times) are stored in a cache file. Every
policy then replays that same stream chunk by chunk, exactly as it would see
it live, so the comparison is fair and re-running with a new policy costs no
generation. A policy's cost is what a live run would have paid: the time to
the chunk where it decided to stop, plus its own compute.

Scoring: prefix + middle + suffix + the task's test, run by
`limner.sandbox.run_python` at the level asked for (strict unless
`--sandbox basic`; never a plain subprocess). Without a test a task is
scored by exact match and edit similarity.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

from limner.fim.suites import Task

DEFAULT_CAP = 128
TEST_TIMEOUT_S = 10.0
POLICIES = ("max-tokens", "tabby", "continue", "indent", "limner")


# -------------------------------------------------------------- generation


@dataclass
class Generation:
    id: str
    chunks: list[str]
    times: list[float]  # seconds from request start to each chunk
    total_s: float  # request start to end of stream
    reason: str  # the engine's own Stopped reason ("length", "stop")


def cache_path(suite: str, model: str, cap: int, temperature: float) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha256(f"{suite}|{model}|{cap}|{temperature}".encode()).hexdigest()[:12]
    name = os.path.basename(suite).replace(".jsonl", "")
    return os.path.join(base, "limner", "bench-fim", f"{name}-{tag}.jsonl")


def read_cache(path: str) -> dict[str, Generation]:
    out: dict[str, Generation] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    o = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interrupted run
                out[o["id"]] = Generation(o["id"], o["chunks"], o["times"], o["total_s"], o["reason"])
    except FileNotFoundError:
        pass
    return out


def append_cache(path: str, g: Generation) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(g.__dict__) + "\n")


class Generator:
    """Prefix/suffix -> streamed chunks, through the in-process engine."""

    def __init__(self, model: str, cap: int, temperature: float, seed: int, n_threads: int | None):
        from limner.engine.core import Engine

        # No KV snapshot cache: one model, one stream of prompts; llama.cpp's own
        # prefix reuse with the current context is all the bench needs.
        self.engine = Engine(n_threads=n_threads, max_models=1, cache_bytes=0)
        self.model, self.cap, self.temperature, self.seed = model, cap, temperature, seed

    def __call__(self, task: Task) -> Generation:
        from limner.engine.core import Job
        job = Job(model=self.model, mode="fim", prefix=task.prefix, suffix=task.suffix,
                  params={"max_tokens": self.cap, "temperature": self.temperature,
                          "seed": self.seed, "n_threads": self.engine.n_threads})
        return _collect(task.id, self.engine.stream(job))


class HttpGenerator:
    """The same, through a profile that points at an HTTP server (its template or /infill)."""

    def __init__(self, profile: str, cap: int, temperature: float, seed: int):
        self.profile, self.cap, self.temperature, self.seed = profile, cap, temperature, seed

    def request(self, task: Task):
        from limner import buffer
        from limner.fim.templates import apply_auto, fill
        from limner.request import FIM

        cwd = os.getcwd()
        name = os.path.abspath(self.profile) if os.path.exists(self.profile) else self.profile
        req = buffer.parse(f"!profile {name}\nx\n!infill\n", cwd=cwd)
        req.prefix, req.suffix = task.prefix, task.suffix
        req.data.update({"max_tokens": self.cap, "temperature": self.temperature, "seed": self.seed})
        if "fim:auto" in req.profiles:
            apply_auto(req)
        if req.mode == FIM:
            req.prompt = fill(req.fim_template or "{prefix}", task.prefix, task.suffix)
        return req

    def __call__(self, task: Task) -> Generation:
        from limner import backends
        adapter = backends.open(self.request(task))
        return _collect(task.id, adapter.stream())


def generator(model: str, cap: int, temperature: float, seed: int, n_threads: int | None):
    """A profile goes over HTTP; a GGUF path or a model name runs in the engine."""
    from limner import profiles
    from limner.engine import models

    if _is_profile(model, profiles):
        return HttpGenerator(model, cap, temperature, seed)
    models.resolve(model, "fim")  # ModelError names what exists
    return Generator(model, cap, temperature, seed, n_threads)


def _is_profile(model: str, profiles) -> bool:
    if not model:
        return False
    if model in profiles.BUILTIN or model.endswith(".profile"):
        return True
    if os.path.isfile(model):
        with open(model, "rb") as f:
            return f.read(4) != b"GGUF"
    return os.path.exists(os.path.join(profiles.config_dir(), model + ".profile"))


# ---------------------------------------------------------------- policies


def make_policy(name: str, task: Task):
    if name == "limner":
        from limner.fim.stopper import Stopper

        return Stopper(task.language, task.prefix, task.suffix)
    from limner.fim import heuristics

    return heuristics.make(name, task.language, task.prefix, task.suffix)


@dataclass
class Applied:
    text: str  # the middle the policy kept
    tokens: int  # chunks (tokens) that produced the kept text
    generated: int  # chunks a live run would have generated before stopping
    seconds: float  # generation up to the stop + the policy's own compute
    compute_s: float  # the policy's own compute
    lines: int  # newlines the policy saw (for the per-line overhead)
    reason: str


def apply(name: str, task: Task, g: Generation) -> Applied:
    policy = make_policy(name, task)
    text, keep, fed = "", None, 0
    t0 = time.perf_counter()
    for chunk in g.chunks:
        text += chunk
        fed += 1
        keep = policy.feed(chunk)
        if keep is not None:
            break
    if keep is None:
        keep = policy.finish()
    compute = time.perf_counter() - t0
    if keep is None:
        keep = len(text)
    stopped_early = fed < len(g.chunks)
    gen_s = g.times[fed - 1] if (stopped_early and fed) else g.total_s
    kept, tokens, pos = text[:keep], 0, 0
    for chunk in g.chunks[:fed]:
        if pos >= keep:
            break
        tokens += 1
        pos += len(chunk)
    return Applied(kept, tokens, fed, gen_s + compute, compute, text.count("\n"),
                   getattr(policy, "reason", "") or ("length" if not stopped_early else name))


def joined(task: Task, middle: str) -> str:
    """The middle as inserted. The same rule for every policy: a hole at the
    start of a line before more lines takes whole lines, so a kept middle
    gets its final newline back."""
    at_line_start = task.prefix == "" or task.prefix.endswith("\n")
    if (at_line_start and middle and task.suffix and not task.suffix.startswith(("\n", "\r\n"))
            and not middle.endswith("\n")):
        middle += "\r\n" if "\r\n" in task.prefix + task.suffix else "\n"
    return middle


# ----------------------------------------------------------------- scoring


def _norm(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.replace("\r\n", "\n").strip("\n").split("\n"))


def exact(task: Task, middle: str) -> bool:
    return _norm(middle) == _norm(task.middle)


def similarity(task: Task, middle: str) -> float:
    return difflib.SequenceMatcher(None, _norm(middle), _norm(task.middle)).ratio()


def sandbox_name(want: str = "strict") -> str:
    return f"limner.sandbox.run_python ({want})"


def run_test(program: str, timeout: float = TEST_TIMEOUT_S, want: str = "strict") -> bool:
    from limner.sandbox import run_python

    return run_python(program, timeout=timeout, want=want).ok


@dataclass
class Row:
    policy: str
    passed: int = 0
    tested: int = 0
    exact: int = 0
    similarity: float = 0.0
    tokens: int = 0
    generated: int = 0
    seconds: float = 0.0
    compute_s: float = 0.0
    lines: int = 0
    n: int = 0
    reasons: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        n = max(1, self.n)
        out = {
            "policy": self.policy,
            "pass@1": round(self.passed / self.tested, 4) if self.tested else None,
            "exact_match": round(self.exact / n, 4),
            "tokens": round(self.tokens / n, 2),
            "seconds": round(self.seconds / n, 4),
            "edit_similarity": round(self.similarity / n, 4),
            "tokens_generated": round(self.generated / n, 2),
            "stop_ms_per_line": round(1000 * self.compute_s / max(1, self.lines), 4),
            "n": self.n,
        }
        return out


def score(tasks: list[Task], gens: dict[str, Generation], policies=POLICIES,
          progress=None, want: str = "strict") -> list[Row]:
    rows = {p: Row(p) for p in policies}
    verdicts: dict[tuple[str, str], bool] = {}  # the same program is run once
    for k, task in enumerate(tasks):
        g = gens[task.id]
        for p in policies:
            a = apply(p, task, g)
            row = rows[p]
            middle = joined(task, a.text)
            row.n += 1
            row.tokens += a.tokens
            row.generated += a.generated
            row.seconds += a.seconds
            row.compute_s += a.compute_s
            row.lines += a.lines
            row.reasons[a.reason] = row.reasons.get(a.reason, 0) + 1
            row.exact += exact(task, middle)
            row.similarity += similarity(task, middle)
            if task.test:
                key = (task.id, middle)
                if key not in verdicts:
                    program = task.prefix + middle + task.suffix + "\n\n" + task.test
                    verdicts[key] = run_test(program, want=want)
                row.tested += 1
                row.passed += verdicts[key]
        if progress:
            progress(k + 1, len(tasks))
    return [rows[p] for p in policies]


def table(rows: list[Row]) -> str:
    head = f"{'policy':<11} {'pass@1':>7} {'exact':>7} {'edit-sim':>8} {'tokens':>7} {'gen-tok':>7} {'s/task':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        j = r.as_json()
        p1 = f"{j['pass@1']:.3f}" if j["pass@1"] is not None else "-"
        lines.append(f"{r.policy:<11} {p1:>7} {j['exact_match']:>7.3f} {j['edit_similarity']:>8.3f} "
                     f"{j['tokens']:>7.1f} {j['tokens_generated']:>7.1f} {j['seconds']:>7.3f}")
    return "\n".join(lines)


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or forced)."""

    def __init__(self, label: str, stream=None, force: bool = False):
        self.label, self.stream = label, stream or sys.stderr
        self.live = force or self.stream.isatty()
        self.t0 = time.time()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.time()
        if done < total and now - self.last < 0.5 and self.live:
            return
        self.last = now
        width = 30
        fill = int(width * done / max(1, total))
        eta = (now - self.t0) / max(1, done) * (total - done)
        line = f"{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} eta {eta:.0f}s"
        if self.live:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif done == total or done % max(1, total // 20) == 0:
            self.stream.write(line + "\n")
        self.stream.flush()


def _collect(task_id, events) -> "Generation":
    """Record one generation's chunks with their arrival times, whatever produced them."""
    from limner.events import Failure, Stopped, Text

    chunks, times, reason = [], [], "length"
    t0 = time.perf_counter()
    for ev in events:
        if isinstance(ev, Text):
            chunks.append(ev.text)
            times.append(time.perf_counter() - t0)
        elif isinstance(ev, Stopped):
            reason = ev.reason
        elif isinstance(ev, Failure):
            raise RuntimeError(f"{ev.kind}: {ev.message} {ev.hint}".strip())
    return Generation(task_id, chunks, times, time.perf_counter() - t0, reason)
