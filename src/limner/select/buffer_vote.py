"""`!vote N` in a buffer: N candidates, a vote by execution, the winner as the reply.

The visible tests are the buffer's `!test` lines that Python can read: an
assert written on the line (`!test assert add(1, 2) == 3`) or a .py file of
asserts (`!test tests.py`). A `!test` that is a shell command says nothing
about inputs and outputs, so it cannot drive a vote: that is an !error.
The chosen candidate is appended as the `!assistant` reply with a `!note`
of the vote; every candidate goes to the log's extra field.
"""
from __future__ import annotations

import copy
import os
import time

from limner.errors import LimnerError
from limner.request import CHAT, COMPLETION
from limner.select import execute, tests, vote

MAX_N = 64


def visible_tests(text: str, cwd: str) -> tuple[list[str], str]:
    """(assert statements, setup code) from the buffer's `!test` lines."""
    asserts, setup = [], []
    for line in (text or "").splitlines():
        if not line.startswith("!test ") and line.strip() != "!test":
            continue
        arg = line[len("!test"):].strip()
        if arg.startswith("assert "):
            asserts.append(arg)
            continue
        path = arg if os.path.isabs(arg) else os.path.join(cwd, arg)
        if arg.endswith(".py") and " " not in arg and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                split = tests.split_asserts(f.read())
            asserts += split.visible + split.held_out  # all of a user's tests are visible
            if split.setup:
                setup.append(split.setup)
    return asserts, "\n".join(setup)


def _samples(req, adapter, n: int) -> list[vote.Candidate]:
    """n replies: one batched engine job, or n seeded HTTP requests (no log-probs)."""
    from limner import backends
    from limner.events import Failure, Sample, Text

    if getattr(adapter, "name", "") == "embedded":
        adapter.job.n = n
        adapter.job.params.setdefault("temperature", 0.8)
        got, fail = [], None
        for ev in adapter.stream():
            if isinstance(ev, Sample):
                got.append(ev)
            elif isinstance(ev, Failure):
                fail = ev
        if fail and not got:
            raise LimnerError(f"!vote: the engine failed: {fail.message}", fail.hint)
        return [vote.Candidate(s.index, "", s.text, logprob_mean=s.logprob_mean if s.tokens else None)
                for s in got]
    out = []
    seed = int(req.data.get("seed", 1234)) if str(req.data.get("seed", "")).lstrip("-").isdigit() else 1234
    for i in range(n):
        r = copy.deepcopy(req)
        r.data = {"temperature": 0.8, **r.data, "seed": seed + i}
        a = backends.open(r)
        parts = []
        for ev in a.stream():
            if isinstance(ev, Text):
                parts.append(ev.text)
            elif isinstance(ev, Failure):
                raise LimnerError(f"!vote: candidate {i} failed: {ev.message}", ev.hint)
        out.append(vote.Candidate(i, "", "".join(parts), logprob_mean=None))
    return out


def run_vote(req, adapter, out, *, log: bool = True) -> int:
    from limner import render
    from limner.evals.targets import extract_code
    from limner.sandbox.probe import require

    started = time.time()
    try:
        n = req.vote_n
        visible, setup = visible_tests(req.text, os.getcwd())
        if not visible:
            raise LimnerError("!vote needs tests it can run on each candidate",
                              "Add `!test assert f(1) == 2` lines, or `!test FILE.py` with asserts.")
        require(req.sandbox)  # candidates are model code: the sandbox asked for, or nothing runs
        cands = _samples(req, adapter, n)
        for c in cands:
            if req.mode == CHAT:
                c.code = extract_code(c.text)
            elif req.mode == COMPLETION:
                c.code = (req.prompt or "") + c.text
            else:
                c.code = (req.prefix or "") + c.text + (req.suffix or "")
        probes = tests.probes(visible)
        codes = [(setup + "\n" if setup else "") + c.code for c in cands]
        beh = execute.run_all(codes, visible, probes, want=req.sandbox)
    except LimnerError as e:
        out.write(render.error_block(e.message, e.hint, e.line))
        out.flush()
        return e.exit_code
    v = vote.choose(cands, beh)
    chosen = cands[v.chosen]
    note = v.note(len(cands))
    if req.mode == CHAT:
        out.write(f"\n\n!assistant\n\n{req.prepend}{chosen.text}\n\n!note {note}\n")
    else:
        out.write(f"{chosen.text}\n\n!note {note}\n")
    out.flush()
    if log:
        _log(req, cands, beh, v, note, started)
    return 0


def _log(req, cands, beh, v, note, started) -> None:
    import sys

    try:
        from limner import log as exchange_log

        exchange_log.record({
            "source": "vote", "status": "ok", "buffer": req.text, "reply": cands[v.chosen].text,
            "model": req.model or "", "elapsed_s": round(time.time() - started, 3),
            "vote": {"note": note, "chosen": v.chosen, "clusters": v.clusters,
                     "dropped": {str(k): r for k, r in v.dropped.items()}, "fallback": v.fallback},
            "candidates": [{"index": c.index, "text": c.text, "logprob_mean": c.logprob_mean,
                            "passes_visible": b.passes_visible, "load": b.load, "probes": b.probes}
                           for c, b in zip(cands, beh)],
        })
    except Exception as e:  # noqa: BLE001 - the reply matters more than the log
        sys.stderr.write(f"limner: could not log this vote: {e}\n")
