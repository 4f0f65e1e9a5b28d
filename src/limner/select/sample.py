"""N candidates for one task from one model or several (pooled, interleaved).

On the embedded engine the N samples are one batched job (Job.n, engine/
batch.py) and carry mean log-probs; over HTTP they are N seeded requests
and carry none (ties are then broken by index, and the vote says so). HTTP
requests go through a dispatch.Dispatcher, as `limner eval`'s do: at most
its concurrency in flight, 429/503 retried after Retry-After, other 5xx and
broken connections after a backoff. Sample i is seed + i, kept in slot i, so
a retried request fills its own slot once.
"""
from __future__ import annotations

import threading

from limner.select.vote import Candidate

TEMPERATURE = 0.8


def close_block(text: str) -> str:
    """A chat sample cut by the closing-fence stop has an open block: close it."""
    return text + "\n```\n" if text.count("```") % 2 == 1 else text


def ask(target, dispatcher, *args, **kw):
    """One HTTP request, through the dispatcher when there is one."""
    if dispatcher is None:
        return target.ask(*args, **kw)
    return dispatcher.call(lambda: target.ask(*args, **kw))


def from_target(target, task, how: str, n: int, params: dict, seed: int,
                dispatcher=None) -> list[Candidate]:
    from limner.evals.targets import extract_code

    p = {**params, "temperature": params.get("temperature", TEMPERATURE), "seed": seed}
    if target.engine:
        from limner.backends.embedded import job_for
        from limner.evals.targets import engine
        from limner.events import Failure, Sample

        req = target.request(task, how, p)
        job = job_for(req)
        job.n = n
        if target.n_threads:
            job.params["n_threads"] = target.n_threads
        if how == "chat":
            job.params["stop"] = ["\n```\n"]  # the block is what is scored; prose after it is not
        got, fail = [], None
        for ev in engine(target.n_threads).stream(job, threading.Event()):
            if isinstance(ev, Sample):
                got.append(ev)
            elif isinstance(ev, Failure):
                fail = ev
        if fail and not got:
            raise RuntimeError(f"{fail.kind}: {fail.message}")
        out = []
        for s in got:
            text = close_block(s.text) if how == "chat" else s.text
            out.append(Candidate(s.index, extract_code(text) if how == "chat" else text, text,
                                 target.label, s.logprob_mean if s.tokens else None))
        return out

    def one(i: int) -> Candidate:
        gen = ask(target, dispatcher, task, how, {**p, "seed": seed + i})
        return Candidate(i, gen.code, gen.text, target.label, None)

    workers = min(n, dispatcher.concurrency if dispatcher is not None else 1)
    if workers <= 1:
        return [one(i) for i in range(n)]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers)  # at most `concurrency` requests in flight
    try:
        out = list(pool.map(one, range(n)))  # in index order: sample i is slot i
    except BaseException:  # Ctrl-C: drop the queued requests at once, as generate._run_all does
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return out


def pooled(targets, task, n: int, params: dict, seed: int, dispatcher=None) -> list[Candidate]:
    """n candidates: n from each target, interleaved (A0, B0, A1, ...) and cut to n,
    so a prefix of the list (the N = 1, 2, 4 curves) draws from every model."""
    per = [from_target(t, task, t.how(task), n, params, seed, dispatcher) for t in targets]
    out = []
    for i in range(n):
        for cands in per:
            if i < len(cands):
                out.append(cands[i])
    out = out[:n]
    for i, c in enumerate(out):
        c.index = i
    return out
