"""Scoring: run each generation's tests in limner.sandbox, and the metrics.

    pass_at_k(n, c, k)        the unbiased estimator of Chen et al. (2021)
    edit_similarity(a, b)     1 - Levenshtein(a, b) / max(len)
    token_similarity(a, b)    the same over code tokens (words and symbols)
    test(task, gen_row)       -> a score row: passed, status, the failure, isolation

Tests never run in this process: each program is a fresh interpreter in the
sandbox (bwrap, uid 65534, a pids cgroup and rlimits), and every score
records the isolation it got: "strict", or "basic" when the run asked for
it with --sandbox basic. Without the level asked for, nothing runs.
"""
from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor

from limner.textsim import levenshtein  # noqa: F401 - also imported from here

TEST_TIMEOUT_S = 10.0


# ---------------------------------------------------------------- metrics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c correct) passes.

    1 - C(n-c, k) / C(n, k), computed as a product so large n stays exact enough.
    """
    if k <= 0 or n <= 0 or k > n:
        raise ValueError(f"pass@k needs 0 < k <= n (n={n}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _norm(s: str) -> str:
    """Line ends and trailing spaces do not count; indentation does."""
    return "\n".join(line.rstrip() for line in s.replace("\r\n", "\n").strip("\n").split("\n"))


def edit_similarity(a: str, b: str) -> float:
    a, b = _norm(a), _norm(b)
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(s: str) -> list[str]:
    return _TOKEN.findall(s)


def token_similarity(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return 1.0 - levenshtein(ta, tb) / max(len(ta), len(tb))


def exact_match(a: str, b: str) -> bool:
    return _norm(a) == _norm(b)


# ---------------------------------------------------------------- programs


def fim_join(prefix: str, middle: str, suffix: str) -> str:
    """A middle that fills whole lines gets its line end back when the model
    stopped without one, so the suffix's first line is not glued on."""
    if (middle and prefix.endswith("\n") and suffix and not suffix.startswith(("\n", "\r\n"))
            and not middle.endswith("\n")):
        middle += "\n"
    return prefix + middle + suffix


def program(task, how: str, code: str) -> str:
    """The file the sandbox runs: the task's code with the generation in it, then its test."""
    if how == "fim":
        body = fim_join(task.prompt, code, task.suffix)
    elif how == "chat":
        body = (task.chat_prelude + "\n" if task.chat_prelude else "") + code
    else:
        body = task.prompt + code
    return body + "\n\n" + (task.test or "") + "\n"


def failure_summary(stderr: str, stdout: str = "", limit: int = 1200) -> str:
    """The failing assert and a trimmed traceback: the last two frames, the
    offending line and the exception, never the whole dump. pytest's report
    is cut to its `E` lines and their locations."""
    text = (stderr or "").strip()
    out = (stdout or "").strip()
    if "Traceback (most recent call last):" in text:
        text = _trim_traceback(text.splitlines())
    elif _PYTEST_FAIL.search(out):
        text = _trim_pytest(out.splitlines())
    else:
        text = text or out
        if not text:
            return "the tests failed without a message"
        text = "\n".join(text.splitlines()[-30:])
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


_PYTEST_FAIL = re.compile(r"^(E\s|FAILED |=+ FAILURES =+)", re.M)


def _trim_traceback(lines: list[str]) -> str:
    start = len(lines) - 1 - lines[::-1].index("Traceback (most recent call last):")
    tb = lines[start:]
    frames = [i for i, ln in enumerate(tb) if ln.startswith('  File "')]
    keep_from = frames[-2] if len(frames) >= 2 else (frames[-1] if frames else 1)
    head = ["Traceback (most recent call last):"] + (["  ..."] if keep_from > 1 else [])
    return "\n".join(head + tb[keep_from:])


def _trim_pytest(lines: list[str]) -> str:
    """The first failure's `>` line, its `E` lines and its location, then the summary."""
    keep, seen_e = [], False
    for ln in lines:
        if ln.startswith(">") or ln.startswith("E "):
            keep.append(ln)
            seen_e = seen_e or ln.startswith("E ")
        elif seen_e and re.match(r"^\S+\.py:\d+: ", ln):
            keep.append(ln)
            break
    summary = [ln for ln in lines if ln.startswith("FAILED ") or re.match(r"^=* ?\d+ (failed|passed)", ln)]
    return "\n".join(keep[-20:] + summary[-5:])


def test(task, gen: dict, timeout: float = TEST_TIMEOUT_S, want: str = "strict", runner=None) -> dict:
    """One score row for one stored generation. want: the sandbox level
    (SandboxUnavailable where it is missing; "basic" only when asked for).
    runner(program, timeout) -> sandbox Result: a warm pool's run_python;
    by default a fresh sandbox.run per program."""
    from limner.sandbox import run_python

    code = gen.get("code") or ""
    row = {"exact": int(exact_match(code, task.reference)) if task.reference else None,
           "edit_sim": edit_similarity(code, task.reference) if task.reference else None}
    if not task.test:
        return {**row, "passed": None, "status": "no-test"}
    if gen.get("error") and not code.strip():
        return {**row, "passed": 0, "status": "no-output", "detail": gen["error"]}
    # site=False: the suites need the stdlib only, and a bare interpreter starts faster.
    text = program(task, gen.get("how") or "completion", code)
    if runner is not None:
        r = runner(text, timeout)
    else:
        r = run_python(text, timeout=timeout, python=sys.executable, site=False, want=want)
    iso = r.isolation + (" (asked for with --sandbox basic)" if r.isolation == "basic" else "")
    row.update(isolation=f"{iso}: {', '.join(r.layers)}", seconds=round(r.seconds, 3))
    if r.ok:
        return {**row, "passed": 1, "status": "pass"}
    if r.killed_reason:
        status = "timeout" if r.killed_reason == "timeout" else "limit"
        detail = f"stopped by the {r.killed_reason} limit after {r.seconds:.1f}s"
        tail = failure_summary(r.stderr, "")
        return {**row, "passed": 0, "status": status, "detail": detail + ("\n" + tail if r.stderr else "")}
    return {**row, "passed": 0, "status": "fail", "detail": failure_summary(r.stderr, r.stdout)}


# ---------------------------------------------------------------- executors
#
# Where the sandboxed runs happen. An executor takes jobs (key, task, gen row)
# and yields (key, score row) as each finishes; the caller (the driver) is the
# only writer of the store. One registry line per executor; each is imported
# only when chosen (ray is an optional extra).

EXECUTORS = {
    "local": "limner.evals.score:LocalPool",  # warm sandboxes on this machine (the default)
    "ray": "limner.evals.ray_exec:RayExecutor",  # Ray tasks, on whichever node takes each
}


def executor(name: str = "local", **kw):
    import importlib

    if name not in EXECUTORS:
        from limner.errors import LimnerError

        raise LimnerError(f"unknown executor {name!r}", f"one of: {', '.join(EXECUTORS)}")
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**kw)


class LocalPool:
    """`workers` warm strict sandboxes (sandbox.pool.Pool): a fork per program."""

    name = "local"

    def __init__(self, workers: int = 2, want: str = "strict", **_):
        self.workers, self.want = max(1, workers), want

    def map(self, jobs: list, timeout: float):
        from concurrent.futures import as_completed

        from limner.sandbox.pool import Pool

        with Pool(self.workers, want=self.want, python=sys.executable, site=False) as pool, \
                ThreadPoolExecutor(self.workers) as threads:
            def runner(text, t):
                return pool.run_python(text, timeout=t)

            futures = {threads.submit(test, task, gen, timeout, self.want, runner): key
                       for key, task, gen in jobs}
            for f in as_completed(futures):
                yield futures[f], f.result()

    def close(self) -> None:
        pass


def score_all(store, tasks_by_suite: dict, workers: int = 2, timeout: float = TEST_TIMEOUT_S,
              progress=None, models: set | None = None, want: str = "strict", run_on=None) -> int:
    """Score every stored generation of these tasks (and models) that has no
    score yet, on the executor run_on (default: the local warm pool); returns how many."""
    todo = [g for g in store.unscored() if g["task"] in tasks_by_suite.get(g["suite"], {})
            and (models is None or g["model"] in models)]
    if not todo:
        return 0

    jobs = [((g["suite"], g["task"], g["model"], g["variant"], g["sample"]),
             tasks_by_suite[g["suite"]][g["task"]], g) for g in todo]
    ex = run_on or LocalPool(workers, want)
    for key, row in ex.map(jobs, timeout):
        store.put_score(key, row)  # here only: the driver is the one writer
        if progress:
            progress.step()
    return len(todo)
