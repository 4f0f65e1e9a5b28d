"""The in-process engine: llama-cpp-python models, a prefix cache, one job at a time.

`Engine.stream(job)` yields limner Events. The daemon (engine/daemon.py),
`limner serve` and `LIMNER_ENGINE=inproc` all drive this one class.

Why our own decode loop instead of `Llama.create_completion`: it lets us
(1) render chat templates ourselves so chat and completion reuse the KV
prefix the same way, (2) build FIM prompts from the model's real FIM ids
(llama-cpp-python's `suffix=` path uses id 0), (3) cancel between tokens,
and (4) never fall into its max_tokens=16 default.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterator

from limner.engine import models as registry
from limner.engine import prompts, quiet
from limner.engine.output import Output
from limner.engine.statecache import StateCache
from limner.events import Event, Failure, Stopped, Text, Usage

CTX_CAP = 8192  # memory-safe default: the bundled models' KV at 8k is < 200 MB
DEFAULT_MAX_TOKENS = 2000  # Illume's default data; never llama-cpp-python's 16


@dataclass
class Job:
    model: str = ""  # bundled name, registered name or .gguf path; "" = default for the mode
    mode: str = "chat"  # "chat" | "completion" | "fim"
    messages: list[dict] | None = None
    prompt: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    params: dict = field(default_factory=dict)  # OpenAI-style names
    stop_spec: dict | None = None  # FIM syntax stop: {"language", "prefix", "suffix"}
    n: int = 1  # samples of this prompt; n > 1 decodes them in one batch (engine/batch.py)
    # Repo-level FIM: other files as (path, text), the edited file's path, the repo's name.
    extra: list | None = None
    filename: str = ""
    repo: str = ""


def physical_cores() -> int:
    """Physical cores, not hyperthreads: llama.cpp decode is memory-bound and
    oversubscribing hurts. Falls back to the usable CPU count."""
    try:
        pairs = set()
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    pairs.add((phys, core))
                    phys = core = None
            if core is not None:
                pairs.add((phys, core))
        usable = len(os.sched_getaffinity(0))
        if pairs:
            return max(1, min(len(pairs), usable))
        return max(1, usable)
    except (OSError, AttributeError):
        return max(1, os.cpu_count() or 1)


class _FairLock:
    """A FIFO lock: jobs run in arrival order, whichever thread or client sent them."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def acquire(self, cancel: threading.Event | None) -> bool:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._queue[0] is not ticket:
                self._cond.wait(0.05)
                if cancel is not None and cancel.is_set():
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    return False
        return True

    def release(self) -> None:
        with self._cond:
            self._queue.popleft()
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return max(0, len(self._queue) - 1)

    def busy(self) -> bool:
        with self._cond:
            return bool(self._queue)


@dataclass
class _Loaded:
    name: str
    path: str
    llm: object  # llama_cpp.Llama
    n_ctx: int
    n_batch: int
    template: str | None
    bos_text: str
    eos_text: str
    fim: dict | None
    load_s: float
    last_prompt: int = 0  # prompt length of the last job: the part worth a snapshot
    repo: dict | None = None  # {"repo", "sep"} token ids for repo-level FIM
    batch: object = None  # batch.BatchContext for n > 1, made on first use
    slots: list = field(default_factory=list)  # scheduler.py's contexts over these weights


class Engine:
    def __init__(self, *, n_threads=None, n_ctx=None, n_batch=None, verbose=False,
                 max_models=2, cache_bytes=None):
        self.n_threads = n_threads or physical_cores()
        self.n_ctx = n_ctx  # None = the model's trained context, capped at CTX_CAP
        self.n_batch = n_batch or 512
        self.verbose = verbose or os.environ.get("LIMNER_VERBOSE") == "1"
        self.max_models = max(1, max_models)
        if cache_bytes is None:
            cache_bytes = int(float(os.environ.get("LIMNER_CACHE_MB", "512")) * 1024 * 1024)
        self.cache = StateCache(cache_bytes)
        self._models: OrderedDict[tuple, _Loaded] = OrderedDict()
        self._headers: dict[tuple, dict] = {}
        self._lock = _FairLock()
        self.jobs_done = 0
        self.started = time.time()

    # -- public -------------------------------------------------------------

    def models(self) -> list[registry.ModelInfo]:
        return registry.list_models()

    def loaded(self) -> list[dict]:
        return [{"name": m.name, "path": m.path, "n_ctx": m.n_ctx, "n_batch": m.n_batch,
                 "load_s": round(m.load_s, 3)} for m in self._models.values()]

    def status(self) -> dict:
        return {"loaded": self.loaded(), "cache_entries": len(self.cache),
                "cache_bytes": self.cache.size, "cache_cap_bytes": self.cache.capacity,
                "jobs_done": self.jobs_done, "busy": self._lock.busy(), "queued": self._lock.waiting(),
                "n_threads": self.n_threads, "uptime_s": round(time.time() - self.started, 1)}

    def load(self, model: str = "", mode: str = "chat", params: dict | None = None) -> float:
        """Load a model ahead of use; returns its load time in seconds (0 if already loaded)."""
        if not self._lock.acquire(None):
            return 0.0
        try:
            loaded, fresh = self._get(model, mode, params or {})
            return loaded.load_s if fresh else 0.0
        finally:
            self._lock.release()

    def stream(self, job: Job, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Text chunks, one Usage, then exactly one Stopped or Failure. Never raises.

        Jobs hold the engine from their first `next()` to their end; a caller
        that stops reading early must close() the generator to let the next
        job in (a `for` loop that breaks, or garbage collection, does that).
        """
        cancel = cancel or threading.Event()
        if not self._lock.acquire(cancel):
            yield Failure("cancelled", "the request was cancelled while it waited in the queue")
            return
        try:
            yield from self._run(job, cancel)
        except registry.ModelError as e:
            yield Failure("model", e.message, e.hint)
        except ParamError as e:
            yield Failure("params", str(e), "Fix the `!:` line: it takes a number.")
        except prompts.TemplateError as e:
            yield Failure("template", str(e), "Use a completion buffer, or a model with a working chat template.")
        except Exception as e:  # noqa: BLE001 - a bad job must not take the engine down
            yield Failure("engine", f"the engine failed: {type(e).__name__}: {e}",
                          "Re-run with --verbose to see llama.cpp's log.")
        finally:
            self.jobs_done += 1
            self._lock.release()

    def close(self) -> None:
        for m in self._models.values():
            _close_loaded(m)
        self._models.clear()
        self.cache.clear()

    # -- models -------------------------------------------------------------

    def _get(self, model: str, mode: str, params: dict) -> tuple[_Loaded, bool]:
        name, path = registry.resolve(model, mode)
        meta = self._header(path)
        from limner.engine import gguf

        trained = gguf.context_length(meta) or CTX_CAP
        n_ctx = _num(params, "n_ctx", 0, int) or self.n_ctx or min(trained, CTX_CAP)
        n_batch = _num(params, "n_batch", 0, int) or self.n_batch
        if n_ctx < 16 or n_batch < 1:
            raise ParamError(f"n_ctx {n_ctx} / n_batch {n_batch} is too small")
        key = (os.path.realpath(path), n_ctx, n_batch)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key], False
        while len(self._models) >= self.max_models:
            _, old = self._models.popitem(last=False)
            self.cache.drop(old.path)
            _close_loaded(old)
        t0 = time.perf_counter()
        llm = quiet.load_llama(path, verbose=self.verbose, n_ctx=n_ctx, n_batch=n_batch,
                               n_ubatch=n_batch, n_threads=self.n_threads,
                               n_threads_batch=self.n_threads)
        loaded = _Loaded(
            name=name, path=key[0], llm=llm, n_ctx=n_ctx, n_batch=n_batch,
            template=gguf.chat_template(meta),
            bos_text=self._token_text(llm, llm.token_bos()),
            eos_text=self._token_text(llm, llm.token_eos()),
            fim=gguf.fim_token_ids(meta) or _vocab_fim(llm), load_s=time.perf_counter() - t0,
            repo=gguf.repo_token_ids(meta) or _vocab_repo(llm),
        )
        self._models[key] = loaded
        return loaded, True

    def _header(self, path: str) -> dict:
        """GGUF header facts, read once per file version (not on every job)."""
        try:
            st = os.stat(path)
        except OSError as e:
            raise registry.ModelError(f"cannot read model file {path}: {e.strerror}",
                                      "Check the path given to !:model.") from None
        key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
        meta = self._headers.get(key)
        if meta is None:
            meta = registry.check_gguf(path, vocab=False)  # llama.cpp reads the vocab itself
            self._headers[key] = meta
        return meta

    @staticmethod
    def _token_text(llm, token: int) -> str:
        if token is None or token < 0:
            return ""
        return llm._model.token_get_text(token)

    # -- one job ------------------------------------------------------------

    def _prompt_tokens(self, m: _Loaded, job: Job) -> list[int]:
        llm = m.llm
        add_bos = llm._model.add_bos_token() and llm.token_bos() >= 0
        if job.mode == "chat":
            text = prompts.render_chat(m.template, job.messages or [], bos=m.bos_text, eos=m.eos_text)
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if add_bos and (not tokens or tokens[0] != llm.token_bos()):
                tokens.insert(0, llm.token_bos())
            return tokens
        if job.mode == "fim":
            pre = llm.tokenize((job.prefix or "").encode("utf-8"), add_bos=False, special=False)
            suf = llm.tokenize((job.suffix or "").encode("utf-8"), add_bos=False, special=False)
            tokens = prompts.fim_tokens(m.fim, llm.token_bos() if add_bos else None, pre, suf)
            if job.extra and m.repo:  # after the BOS, before the FIM layout (llama.cpp's order)
                def tok(t: str) -> list[int]:
                    return llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)

                head = 1 if add_bos else 0
                ctx = prompts.repo_tokens(m.repo, tok, job.repo or "repo", job.extra,
                                          job.filename or "filename")
                tokens = tokens[:head] + ctx + tokens[head:]
            return tokens
        text = job.prompt if job.prompt is not None else (job.prefix or "")
        return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _run(self, job: Job, cancel: threading.Event) -> Iterator[Event]:
        import llama_cpp

        p = dict(job.params or {})
        m, fresh = self._get(job.model, job.mode, p)
        llm = m.llm
        n_threads = _num(p, "n_threads", self.n_threads, int) or self.n_threads
        llama_cpp.llama_set_n_threads(llm.ctx, n_threads, n_threads)

        tokens = self._prompt_tokens(m, job)
        if not tokens:
            tokens = [llm.token_bos()] if llm.token_bos() >= 0 else []
        if len(tokens) >= m.n_ctx:
            yield Failure("context", f"the prompt is {len(tokens)} tokens; the context holds {m.n_ctx}",
                          "Shorten the buffer, or raise the context with `!:n_ctx N`.")
            return
        max_tokens = _num(p, "max_tokens", _num(p, "n_predict", DEFAULT_MAX_TOKENS, int), int)
        if max_tokens < 0:  # llama.cpp's n_predict -1: "until the context is full"
            max_tokens = m.n_ctx
        room = m.n_ctx - len(tokens)
        limit = min(max_tokens, room)
        n = _num({"n": job.n}, "n", 1, int)
        if n != 1:
            from limner.engine import batch

            yield from batch.stream(m, p, tokens, n, limit, max_tokens, n_threads, cancel,
                                    m.load_s if fresh else None)
            return

        # Prompt evaluation, reusing the longest cached prefix.
        t0 = time.perf_counter()
        reused = self.cache.prepare(m.path, llm, tokens, m.last_prompt)
        m.last_prompt = len(tokens)
        for i in range(reused, len(tokens), m.n_batch):
            if cancel.is_set():
                yield Usage(prompt_tokens=len(tokens), completion_tokens=0, cached_tokens=reused)
                yield Failure("cancelled", "generation was cancelled")
                return
            llm.eval(tokens[i : i + m.n_batch])
        t1 = time.perf_counter()

        yield from self._decode(m, job, p, tokens, reused, limit, max_tokens, cancel, t0, t1,
                                m.load_s if fresh else None)

    def _decode(self, m, job, p, tokens, reused, limit, max_tokens, cancel, t0, t1, load_s):
        import llama_cpp

        llm = m.llm
        if p.get("seed") is not None:
            llm.set_seed(_num(p, "seed", 0, int) & 0xFFFFFFFF)
        sp = sampling(p)
        sampler = llm._init_sampler(temp=sp.pop("temperature"), **sp)
        out = Output(p, job.stop_spec)
        # llama.cpp's t_max_predict_ms: a decode-time budget, checked only once a
        # line break is out, so an editor gets at least one whole line.
        t_max = _num(p, "t_max_predict_ms", 0.0) / 1000
        vocab = llm._model.vocab
        n_out, reason, timed_out = 0, None, False
        piece = _PieceReader(vocab)

        while reason is None:
            if n_out >= limit:
                reason = "length"
                break
            if cancel.is_set():
                reason = "cancelled"
                break
            if t_max and out.newline and time.perf_counter() - t1 > t_max:
                reason, timed_out = "length", True
                break
            tok = sampler.sample(llm._ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                reason = "stop"
                break
            n_out += 1
            llm.eval([tok])
            text, reason = out.feed(piece(tok))
            if text:
                yield Text(text)
        text, reason = out.finish(reason)
        if text:
            yield Text(text)
        t2 = time.perf_counter()
        self.cache.remember(m.path, llm)
        extra = {"model": m.name, "n_ctx": m.n_ctx, "n_threads": _num(p, "n_threads", self.n_threads, int) or self.n_threads}
        if load_s is not None:
            extra["load_ms"] = round(load_s * 1000, 1)
        if reason == "length" and limit < max_tokens and not timed_out:
            extra["context_full"] = True
        if timed_out:
            extra["time_limit"] = True
        if out.scanner_hit:
            extra["stopping_word"] = out.scanner.hit
        yield Usage(prompt_tokens=len(tokens), completion_tokens=n_out,
                    prompt_ms=(t1 - t0) * 1000, predicted_ms=(t2 - t1) * 1000,
                    cached_tokens=reused, extra=extra)
        if reason == "cancelled":
            yield Failure("cancelled", "generation was cancelled")
        else:
            yield Stopped(reason)


def _close_loaded(m: _Loaded) -> None:
    for c in [m.batch, *m.slots]:  # contexts before the weights they use
        if c is not None:
            c.close()
    m.llm.close()


def _vocab_repo(llm) -> dict | None:
    """Repo-level ids by spelling, when the GGUF header (read without its vocab) had none."""
    found = {}
    for rep, sep in (("<|repo_name|>", "<|file_sep|>"), ("<repo_name>", "<file_sep>")):
        ids = [llm.tokenize(t.encode(), add_bos=False, special=True) for t in (rep, sep)]
        if len(ids[1]) == 1:
            found = {"repo": ids[0][0] if len(ids[0]) == 1 else None, "sep": ids[1][0]}
            break
    return found or None


def _vocab_fim(llm) -> dict | None:
    """FIM ids llama.cpp found by token text (it knows the common spellings)."""
    ids = (llm._model.token_prefix(), llm._model.token_suffix(), llm._model.token_middle())
    if all(i is not None and i >= 0 for i in ids):
        return dict(zip(("prefix", "suffix", "middle"), ids))
    return None


class ParamError(ValueError):
    pass


def sampling(p: dict) -> dict:
    """The sampler settings of a request, llama.cpp server's defaults where absent.
    One place for the single decode, batch.py and the serve scheduler."""
    return {"top_k": _num(p, "top_k", 40, int), "top_p": _num(p, "top_p", 0.95),
            "min_p": _num(p, "min_p", 0.05), "typical_p": _num(p, "typical_p", 1.0),
            "temperature": _num(p, "temperature", _num(p, "temp", 0.8)),
            "repeat_penalty": _num(p, "repeat_penalty", 1.0),
            "frequency_penalty": _num(p, "frequency_penalty", 0.0),
            "presence_penalty": _num(p, "presence_penalty", 0.0)}


def _num(params: dict, key: str, default, cast=float):
    """params[key] as a number, or default when absent; ParamError when it is not one."""
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ParamError(f"{key} must be a number, not {value!r}")
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        raise ParamError(f"{key} must be a number, not {value!r}") from None


class _PieceReader:
    """Token -> bytes with a reusable buffer (llama-cpp-python's caps pieces at 32 bytes)."""

    def __init__(self, vocab):
        import ctypes

        self.vocab, self.ctypes = vocab, ctypes
        self.size = 64
        self.buf = ctypes.create_string_buffer(self.size)

    def __call__(self, token: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self.vocab, token, self.buf, self.size, 0, False)
        if n < 0:
            self.size = -n + 16
            self.buf = self.ctypes.create_string_buffer(self.size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self.buf, self.size, 0, False)
        return self.buf.raw[: max(0, n)]

