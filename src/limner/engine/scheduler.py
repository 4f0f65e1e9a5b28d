"""Continuous batching: concurrent requests for one model decoded together.

Why: a decode step on a CPU costs about the same for a few tokens as for
one (the weights are read once per step; engine/batch.py measured 8
sequences at 5.4x one), so requests that would queue one at a time in the
engine get most of their decoding for free when they share the steps.
`limner serve --parallel N` uses this; llama-server's --parallel slots are
the same idea.

How: one thread owns a batch context over the model's weights with N
sequence slots, each its own KV stream (kv_unified off: a request's greedy
output is then the same alone or batched; see batch.py). Between steps it
admits waiting requests into free slots, each into the slot that already
holds the longest prefix of its prompt (a per-slot prefix cache; see
PROMPT_BLOCK). Each step is one llama_decode with one token per decoding
request, then one prompt block of each newcomer (its own llama_decode), so a
long prompt slows the others' streams instead of stopping them; at its
prompt's end a newcomer samples its first token and joins the steps. A
request that finishes, is cancelled or whose client left ends at once and
frees its slot for the next one. Each request keeps its own sampler chain
(parameters, seed), stop strings, max_tokens, t_max_predict_ms and FIM
syntax-aware stop (output.Output), and gets its events on its own queue:
`Scheduler.stream` looks like `Engine.stream`.

The thread holds the engine's lock while it has requests, so nothing else
touches llama.cpp meanwhile. What the slots cannot take goes through
`Engine.stream` as before: n > 1 jobs (batch.py), prompts plus max_tokens
longer than a slot, and any request whose setup fails (the engine then says
why, in its usual words). When such a job waits for the lock the loop stops
admitting, drains and lets it in. Requests for another model wait until the
batch is empty.
"""
from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterator

from limner.engine.core import DEFAULT_MAX_TOKENS, _num, _PieceReader, sampling
from limner.engine.statecache import common_prefix
from limner.engine.output import Output
from limner.events import Event, Failure, Stopped, Text, Usage

SLOTS_TOKENS_CAP = 16384  # KV cells for all slots together: ~400 MB for the bundled models
POLL_S = 0.05  # how often a waiting request looks at its cancel event
# Prompts are evaluated in blocks of this many tokens from position 0, and a
# slot's cached prefix is reused only up to a block boundary: llama.cpp's
# kernels round differently for different batch sizes, so reusing an odd
# prefix (and evaluating the rest as one odd-sized chunk) could change a
# greedy reply; with fixed blocks a prompt's logits are the same whatever the
# slot held before. Blocks this small cost nothing measurable on a CPU.
PROMPT_BLOCK = 32


class _Req:
    """A request handed to the scheduler; `events` is read by its own thread."""

    def __init__(self, job, cancel: threading.Event):
        self.job, self.cancel = job, cancel
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.state = "pending"  # pending -> taken (by the loop) | done (left the queue)
        self.fallback = False  # run it on Engine.stream instead
        self.abandoned = False  # the reader stopped reading
        self.key = None

    def gone(self) -> bool:
        return self.cancel.is_set() or self.abandoned


class _Seq:
    """A request in a slot."""

    def __init__(self, req, slot, m, p, tokens, limit, max_tokens, reused, load_s, n_threads):
        self.req, self.slot, self.m, self.p = req, slot, m, p
        self.tokens, self.limit, self.max_tokens = tokens, limit, max_tokens
        self.reused, self.load_s, self.n_threads = reused, load_s, n_threads
        self.out = Output(p, req.job.stop_spec)
        self.t_max = _num(p, "t_max_predict_ms", 0.0) / 1000
        self.n_out, self.next, self.timed_out = 0, None, False
        self.filled = reused  # prompt tokens in the slot's KV so far
        self.chain = None
        self.t0, self.t1 = time.perf_counter(), None  # t1: the prompt is in


class Scheduler:
    def __init__(self, engine, slots: int = 4):
        self.engine = engine
        self.n_slots = max(1, int(slots))
        self._cond = threading.Condition()
        self._pending: deque[_Req] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._bc = None  # (the _Loaded it is for, BatchContext)
        self._held: list[list[int]] = []  # tokens in each slot's KV stream
        self.live = 0
        self.peak = 0  # the most requests ever decoded together (tests, /health)

    # -- the caller's side --------------------------------------------------

    def stream(self, job, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Engine.stream's contract: text, one Usage, then one Stopped or Failure."""
        cancel = cancel or threading.Event()
        if job.n != 1 or self.n_slots < 2 or self._closed:
            yield from self.engine.stream(job, cancel)
            return
        req = _Req(job, cancel)
        with self._cond:
            self._pending.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="limner-scheduler",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        try:
            while True:
                try:
                    ev = req.events.get(timeout=POLL_S)
                except queue.Empty:
                    if req.cancel.is_set() and self._leave(req):
                        yield Failure("cancelled",
                                      "the request was cancelled while it waited in the queue")
                        return
                    continue
                if ev is None:
                    break
                yield ev
        finally:
            req.abandoned = True  # a reader that stops early lets its slot go
        if req.fallback:
            yield from self.engine.stream(job, cancel)

    def _leave(self, req: _Req) -> bool:
        with self._cond:
            if req.state != "pending":
                return False
            self._pending.remove(req)
            req.state = "done"
            return True

    def waiting(self) -> int:
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Stop the loop (live requests end cancelled) before the engine closes."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            t = self._thread
        if t is not None:
            t.join(10)

    # -- the loop -----------------------------------------------------------

    def _loop(self) -> None:
        lock = self.engine._lock
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for req in self._pending:
                        req.state, req.fallback = "taken", True
                        req.events.put(None)
                    self._pending.clear()
                    return
            lock.acquire(None)
            try:
                self._batch()
            finally:
                lock.release()

    def _next(self, key) -> _Req | None:
        """The head of the queue if it may join a batch of model `key` (None: any)."""
        from limner.engine import models as registry

        with self._cond:
            while self._pending:
                req = self._pending[0]
                if req.key is None:
                    try:
                        p = req.job.params or {}
                        path = registry.resolve(req.job.model, req.job.mode)[1]
                        req.key = (os.path.realpath(path), p.get("n_ctx"), p.get("n_batch"))
                    except Exception:  # noqa: BLE001 - Engine.stream will say what is wrong
                        req.key = ("unresolved",)
                if key is not None and req.key != key:
                    return None
                self._pending.popleft()
                req.state = "taken"
                if req.gone():
                    req.events.put(Failure("cancelled", "the request was cancelled while it "
                                           "waited in the queue"))
                    req.events.put(None)
                    continue
                return req
            return None

    def _batch(self) -> None:
        """Admit, step, repeat, while there is work and nobody else waits for the engine."""
        live: list[_Seq] = []
        key = None
        try:
            while True:
                if self._closed:
                    for s in live[:]:  # _finish removes s from live
                        self._finish(live, s, "cancelled")
                    return
                yielding = self.engine._lock.waiting() > 0
                while not yielding and len(live) < self.n_slots:
                    req = self._next(key if live else None)
                    if req is None:
                        break
                    if self._admit(req, live) is not None:
                        key = req.key
                self.live = len(live)
                self.peak = max(self.peak, self.live)
                if not live:
                    with self._cond:
                        if yielding or not self._pending:
                            return
                    continue
                self._step(live)
        except BaseException as e:  # noqa: BLE001 - a request must always get an end
            for s in live[:]:  # _finish removes s from live
                s.out = Output({}, None)
                self._finish(live, s, "error", Failure(
                    "engine", f"the engine failed: {type(e).__name__}: {e}",
                    "Re-run with --verbose to see llama.cpp's log."))
            self._drop_context()
        finally:
            self.live = 0

    def _context(self, m, n_threads: int):
        """The slots' batch context for model m, made (or remade) as needed."""
        from limner.engine.batch import BatchContext

        if self._bc is not None and (self._bc[0] is not m or self._bc[1].ctx is None):
            self._drop_context()
        if self._bc is None:
            per = min(m.n_ctx, SLOTS_TOKENS_CAP // self.n_slots) // 256 * 256 or m.n_ctx
            bc = BatchContext(m.llm, per * self.n_slots, self.n_slots, m.n_batch, n_threads)
            m.slots.append(bc)  # the engine closes it before it unloads the weights
            self._bc = (m, bc)
            self._held = [[] for _ in range(self.n_slots)]
            self._piece = _PieceReader(m.llm._model.vocab)
        return self._bc[1]

    def _drop_context(self) -> None:
        if self._bc is not None:
            m, bc = self._bc
            bc.close()
            if bc in m.slots:
                m.slots.remove(bc)
            self._bc = None
            self._held = []

    def _admit(self, req: _Req, live: list[_Seq]) -> _Seq | None:
        """Evaluate the request's prompt into a free slot; None when it ended or
        went to Engine.stream instead."""
        import llama_cpp

        from limner.engine.batch import _chain

        eng, job = self.engine, req.job
        p = dict(job.params or {})
        try:
            m, fresh = eng._get(job.model, job.mode, p)
            tokens = eng._prompt_tokens(m, job)
            n_threads = _num(p, "n_threads", eng.n_threads, int) or eng.n_threads
            max_tokens = _num(p, "max_tokens", _num(p, "n_predict", DEFAULT_MAX_TOKENS, int), int)
            _num(p, "t_max_predict_ms", 0.0)
            sp = sampling(p)
            seed = (_num(p, "seed", 0, int) if p.get("seed") is not None
                    else random.SystemRandom().randrange(1 << 31))
            ok = bool(tokens) and len(tokens) < m.n_ctx and max_tokens >= 0
            limit = min(max_tokens, m.n_ctx - len(tokens))
            bc = self._context(m, n_threads) if ok else None
            ok = ok and len(tokens) + limit + 1 <= bc.per_seq
        except Exception:  # noqa: BLE001 - Engine.stream reports it in its own words
            ok = False
        if not ok:
            req.fallback = True
            req.events.put(None)
            return None

        used = {s.slot for s in live}
        slot = max((i for i in range(self.n_slots) if i not in used),
                   key=lambda i: common_prefix(self._held[i], tokens))
        reused = min(common_prefix(self._held[slot], tokens), len(tokens) - 1)
        reused -= reused % PROMPT_BLOCK
        if not llama_cpp.llama_memory_seq_rm(bc.mem, slot, reused, -1):
            llama_cpp.llama_memory_seq_rm(bc.mem, slot, -1, -1)
            reused = 0
        self._held[slot] = tokens[:reused]
        s = _Seq(req, slot, m, p, tokens, limit, max_tokens, reused,
                 m.load_s if fresh else None, n_threads)
        s.chain = _chain(sp, seed)
        live.append(s)
        self._threads(bc, live)
        return s

    def _prefill(self, live: list[_Seq], s: _Seq) -> None:
        """One block of s's prompt, as its own llama_decode (so its logits are
        the same as when s runs alone); at the prompt's end, s's first token."""
        if s.req.gone():
            return self._finish(live, s, "cancelled")
        i = s.filled
        chunk = s.tokens[i : i + PROMPT_BLOCK]
        last = i + len(chunk) == len(s.tokens)
        self._bc[1].decode([(t, i + k, s.slot, last and k == len(chunk) - 1)
                            for k, t in enumerate(chunk)])
        s.filled = i + len(chunk)
        self._held[s.slot] = s.tokens[: s.filled]
        if last:
            s.t1 = time.perf_counter()
            self._sample(live, s, len(chunk) - 1)
        return None

    def _threads(self, bc, live: list[_Seq]) -> None:
        import llama_cpp

        n = max(s.n_threads for s in live)
        if n != getattr(bc, "threads", None):
            llama_cpp.llama_set_n_threads(bc.ctx, n, n)
            bc.threads = n

    def _step(self, live: list[_Seq]) -> None:
        """One llama_decode with the pending token of every decoding request,
        then one prompt block of each request still being evaluated: a long
        newcomer slows the others' streams instead of stopping them."""
        bc = self._bc[1]
        for s in live[:]:  # _finish removes s from live
            if s.req.gone():
                self._finish(live, s, "cancelled")
        if live:
            self._threads(bc, live)
        decoding = [s for s in live if s.next is not None]
        if decoding:
            bc.decode([(s.next, len(self._held[s.slot]), s.slot, True) for s in decoding])
            for s in decoding:
                self._held[s.slot].append(s.next)
            for j, s in enumerate(decoding):
                s.next = None
                self._sample(live, s, j)
        for s in [s for s in live if s.t1 is None]:
            self._prefill(live, s)

    def _sample(self, live: list[_Seq], s: _Seq, idx: int) -> None:
        """Pick s's next token from row idx of the last decode, as Engine._decode does."""
        import llama_cpp

        if s.n_out >= s.limit:
            return self._finish(live, s, "length")
        if s.req.gone():
            return self._finish(live, s, "cancelled")
        if s.t_max and s.out.newline and time.perf_counter() - s.t1 > s.t_max:
            s.timed_out = True
            return self._finish(live, s, "length")
        bc = self._bc[1]
        tok = llama_cpp.llama_sampler_sample(s.chain, bc.ctx, idx)
        if llama_cpp.llama_vocab_is_eog(s.m.llm._model.vocab, tok):
            return self._finish(live, s, "stop")
        s.n_out += 1
        text, why = s.out.feed(self._piece(tok))
        if text:
            s.req.events.put(Text(text))
        if why:
            return self._finish(live, s, why)
        s.next = tok
        return None

    def _finish(self, live: list[_Seq], s: _Seq, reason: str, failure: Failure | None = None):
        import llama_cpp

        live.remove(s)
        text, reason = s.out.finish(reason)
        if text:
            s.req.events.put(Text(text))
        t2 = time.perf_counter()
        extra = {"model": s.m.name, "n_ctx": s.m.n_ctx, "n_threads": s.n_threads,
                 "slot": s.slot}
        if s.load_s is not None:
            extra["load_ms"] = round(s.load_s * 1000, 1)
        if reason == "length" and s.limit < s.max_tokens and not s.timed_out:
            extra["context_full"] = True
        if s.timed_out:
            extra["time_limit"] = True
        if s.out.scanner_hit:
            extra["stopping_word"] = s.out.scanner.hit
        s.req.events.put(Usage(prompt_tokens=len(s.tokens), completion_tokens=s.n_out,
                               prompt_ms=((s.t1 or t2) - s.t0) * 1000,
                               predicted_ms=(t2 - (s.t1 or t2)) * 1000,
                               cached_tokens=s.reused, extra=extra))
        if failure is not None:
            s.req.events.put(failure)
        elif reason == "cancelled":
            s.req.events.put(Failure("cancelled", "generation was cancelled"))
        else:
            s.req.events.put(Stopped(reason))
        s.req.events.put(None)
        if s.chain is not None:
            llama_cpp.llama_sampler_free(s.chain)
            s.chain = None
        self.engine.jobs_done += 1

