"""Who answers an eval: a model on the embedded engine, or a profile / endpoint over HTTP.

Every ask builds a limner Request and goes through the same code a buffer
does: `backends.open(req).stream()` for HTTP, and the embedded backend's
own Request -> Job mapping for the engine (run in this process, one job at
a time, threads pinned). Nothing here speaks a protocol itself.

How a task is asked ("how"):
  completion  the model continues the task's prompt (base models)
  chat        the task's instruction as a !user turn; the reply's first code block is scored
  fim         prefix + suffix, the model writes the middle
"""
from __future__ import annotations

import copy
import re
import threading
import time
from dataclasses import dataclass, field

from limner.errors import LimnerError
from limner.events import Failure, Stopped, Text, Usage
from limner.request import CHAT, COMPLETION, FIM, INFILL, Message, Request

# A closed fenced block: in chat mode generation stops here (the code is in).
_CLOSED_BLOCK = re.compile(r"(?:^|\n)[ ]{0,3}(`{3,}|~{3,})[^\n]*\n.*?\n[ ]{0,3}\1[ \t]*(?:\n|$)", re.S)


@dataclass
class Generation:
    text: str = ""
    code: str = ""  # what gets scored
    how: str = "completion"
    request: dict = field(default_factory=dict)
    latency_s: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    stop: str | None = None
    error: str | None = None
    # How the request went, for the dispatcher's retries (not scored):
    status: int | None = None  # the HTTP status of a failed answer
    retry_after: float | None = None  # its Retry-After, in seconds
    endpoint: str | None = None  # the URL it went to
    attempts: int = 1

    def row(self) -> dict:
        return dict(self.__dict__)


def extract_code(text: str) -> str:
    """The code of a chat reply: its first Python block (else its first block,
    else the whole text, for a model that answers with bare code)."""
    from limner.checks.blocks import fenced

    blocks = [b for b in fenced(text) if b.code.strip()]
    if not blocks:
        return text
    py = [b for b in blocks if b.language == "python"]
    return (py or blocks)[0].code


class Target:
    """One column of the report: a model name, a profile, or a model on endpoints."""

    def __init__(self, label: str, base: Request, *, engine: bool, endpoints: list[str] | None = None,
                 n_threads: int | None = None, mode: str = "auto"):
        self.label = label
        self.base = base
        self.engine = engine
        self.endpoints = list(endpoints or [])
        self.n_threads = n_threads
        self.mode = mode
        self._busy = {e: 0 for e in self.endpoints}
        self._down: dict[str, tuple[float, int]] = {}  # endpoint -> (skip until, failures in a row)
        self._busy_lock = threading.Lock()
        self._chat: bool | None = None
        # A profile's own turns (system prompt, demos) go before each task's
        # message; without this a profile's demos never reached the model.
        self.preamble = [Message(m.role, m.content) for m in (base.messages or [])]
        # A completion profile's text (e.g. tune's few-shot block) goes before
        # each completion prompt, as it would before a buffer's own text.
        self.prefix = ""

    # -- building

    @classmethod
    def for_model(cls, model: str, endpoints=None, n_threads=None, mode="auto") -> "Target":
        if endpoints:
            base = Request(api=endpoints[0], data={"model": model})
            return cls(model, base, engine=False, endpoints=endpoints, mode=mode)
        base = Request(api="embedded://", data={"model": model}, backend="embedded")
        return cls(model, base, engine=True, n_threads=n_threads, mode=mode)

    @classmethod
    def for_profile(cls, profile: str, model: str | None = None, endpoints=None, n_threads=None,
                    mode="auto") -> "Target":
        from limner import backends, buffer

        base = buffer.parse(f"!profile {profile}\n!user\n.\n")  # BufferError names a bad profile
        base.messages = base.messages[:-1]  # the placeholder turn; the profile's own turns stay
        if model:
            base.data["model"] = model
        if endpoints:
            base.api, base.backend = endpoints[0], None
        engine = backends.choose(base) == "embedded"
        label = f"{profile}:{model}" if model else profile
        target = cls(label, base, engine=engine, endpoints=endpoints, n_threads=n_threads, mode=mode)
        if base.mode == COMPLETION:
            target.prefix = _completion_prefix(profile)
        return target

    def how(self, task) -> str:
        if task.mode == "fim":
            return "fim"
        if self.mode != "auto":
            return self.mode
        if self._chat is None:
            self._chat = self._is_chat_model()
        return "chat" if self._chat else "completion"

    def _is_chat_model(self) -> bool:
        """Engine: the GGUF has a chat template (instruct) or not (base). HTTP: chat."""
        if not self.engine:
            return True
        from limner.engine import models

        try:
            name, path = models.resolve(self.base.model or "", "completion")
            return bool(models.info(name, path, "path").chat_template)
        except models.ModelError as e:
            raise LimnerError(e.message, e.hint) from None

    # -- asking

    def request(self, task, how: str, params: dict, messages: list[dict] | None = None,
                prompt: str | None = None) -> Request:
        req = copy.deepcopy(self.base)
        req.data = {**req.data, **params}
        req.text = ""
        if how == "chat":
            req.mode = CHAT
            msgs = messages or [{"role": "user", "content": chat_instruction(task)}]
            req.messages = self.preamble + [Message(m["role"], m["content"]) for m in msgs]
            req.data.pop("stop", None)  # the closing fence ends a chat reply (see _consume)
        elif how == "completion":
            text = self.prefix + (prompt if prompt is not None else task.prompt)
            req.mode, req.prompt, req.messages = COMPLETION, text, [Message("user", text)]
        else:
            req.prefix, req.suffix, req.language = task.prompt, task.suffix, task.language
            req.data.pop("stop", None)
            if req.fim_template:
                from limner.gotext import interpolate

                req.mode = FIM
                req.prompt = interpolate(req.fim_template, {"prefix": req.prefix, "suffix": req.suffix})
            else:
                req.mode = INFILL
        return req

    def ask(self, task, how: str, params: dict, messages: list[dict] | None = None,
            prompt: str | None = None, whole: bool = False) -> Generation:
        """One request. In chat mode generation ends at the first closed code
        block (that is what gets scored) unless whole=True (replay)."""
        req = self.request(task, how, params, messages, prompt)
        sent = ({"messages": [{"role": m.role, "content": m.content} for m in req.messages]}
                if how == "chat" else {"prompt": req.prompt} if how == "completion"
                else {"prefix": req.prefix, "suffix": req.suffix})
        if self.engine:
            gen = self._ask_engine(req, how == "chat" and not whole)
        else:
            gen = self._ask_http(req, how == "chat" and not whole)
        gen.how, gen.request = how, sent
        gen.code = extract_code(gen.text) if how == "chat" else gen.text
        return gen

    def _ask_engine(self, req: Request, block_stop: bool) -> Generation:
        from limner.backends.embedded import job_for

        job = job_for(req)
        if self.n_threads:
            job.params["n_threads"] = self.n_threads
        cancel = threading.Event()
        return _consume(engine(self.n_threads).stream(job, cancel), cancel.set, block_stop)

    def _ask_http(self, req: Request, block_stop: bool) -> Generation:
        from limner import backends

        endpoint = self._take_endpoint()
        try:
            if endpoint:
                req.api = endpoint
            try:
                adapter = backends.open(req)
            except LimnerError as e:
                return Generation(error=f"{e.message} {e.hint}".strip())
            events = adapter.stream()
            if req.mode in (INFILL, FIM):
                try:
                    from limner.fim.stream import guard
                except ImportError:
                    guard = None
                if guard is not None:
                    events = guard(events, req, adapter)
            gen = _consume(events, adapter.close, block_stop)
            gen.endpoint = endpoint or req.api
            if endpoint and len(self.endpoints) > 1:
                self._health(endpoint, gen)
            resp = getattr(adapter, "_response", None)  # the headers of a refused answer
            if gen.error and resp is not None and resp.status_code >= 400:
                from limner.evals.dispatch import parse_retry_after

                gen.status = gen.status or resp.status_code
                gen.retry_after = parse_retry_after(resp.headers.get("retry-after"))
            return gen
        finally:
            self._give_endpoint(endpoint)

    def _health(self, endpoint: str, gen: Generation) -> None:
        """A dead or failing replica answers fastest, so it would draw every
        retry: after a connection failure or 5xx, skip it for a while (1, 2,
        4 ... 30 s), until it answers again."""
        kind = (gen.error or "").split(":", 1)[0]
        failed = gen.error and ((gen.status or 0) >= 500 or kind in ("refused", "connect", "disconnect"))
        with self._busy_lock:
            if not failed:
                self._down.pop(endpoint, None)
                return
            n = self._down.get(endpoint, (0.0, 0))[1] + 1
            self._down[endpoint] = (time.monotonic() + min(30.0, 2.0 ** (n - 1)), n)

    def _take_endpoint(self) -> str | None:
        """The endpoint with the fewest requests in flight (replicas share the
        load), among those not resting after a failure (all, if none is up)."""
        if not self.endpoints:
            return None
        with self._busy_lock:
            now = time.monotonic()
            up = [e for e in self.endpoints if self._down.get(e, (0.0, 0))[0] <= now] or self.endpoints
            endpoint = min(up, key=lambda e: self._busy[e])
            self._busy[endpoint] += 1
            return endpoint

    def _give_endpoint(self, endpoint: str | None) -> None:
        if endpoint:
            with self._busy_lock:
                self._busy[endpoint] -= 1


_MARK = "limner-eval-task-goes-here"


def _completion_prefix(profile: str) -> str:
    """The text a completion profile puts before a buffer's own text, with the
    same separator: parsed with a marker line where the task's prompt goes."""
    from limner import buffer

    text = buffer.parse(f"!profile {profile}\n{_MARK}\n").prompt or ""
    return text[: -len(_MARK)] if text.endswith(_MARK) else ""


def chat_instruction(task) -> str:
    if task.instruction:
        return task.instruction
    return ("Complete the following code. Reply with the whole code in one fenced block.\n\n"
            f"```{task.language}\n{task.prompt}```")


def _consume(events, cancel, chat: bool) -> Generation:
    """Read one event stream into a Generation, timing it. In chat mode, stop
    once a code block has closed: the rest is prose nobody scores."""
    t0 = time.perf_counter()
    parts: list[str] = []
    gen = Generation()
    ours = False  # we cancelled it: the Failure("cancelled") that follows is a normal end
    for ev in events:
        if isinstance(ev, Text) and ev.text:
            if gen.ttft_s is None:
                gen.ttft_s = time.perf_counter() - t0
            parts.append(ev.text)
            if chat and not ours and _CLOSED_BLOCK.search("".join(parts)):
                ours = True
                cancel()
        elif isinstance(ev, Usage):
            gen.prompt_tokens, gen.completion_tokens = ev.prompt_tokens, ev.completion_tokens
            if ev.completion_tokens and ev.predicted_ms:
                gen.tokens_per_s = ev.completion_tokens / (ev.predicted_ms / 1000)
        elif isinstance(ev, Stopped):
            gen.stop = "block" if ours else ev.reason
        elif isinstance(ev, Failure):
            if ours and ev.kind == "cancelled":
                gen.stop = "block"
            else:
                gen.error = f"{ev.kind}: {ev.message}"
                gen.status = ev.status
    gen.latency_s = time.perf_counter() - t0
    gen.text = "".join(parts)
    if gen.tokens_per_s is None and gen.ttft_s is not None and gen.latency_s > gen.ttft_s:
        n = gen.completion_tokens or len(parts)  # chunks, when the server gave no count
        gen.tokens_per_s = n / (gen.latency_s - gen.ttft_s) if n > 1 else None
    return gen


# ---------------------------------------------------------------- the in-process engine

_engine = None
_engine_lock = threading.Lock()


def engine(n_threads: int | None = None):
    """One Engine for this process: the eval runs engine jobs serially anyway."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from limner.engine.core import Engine

            _engine = Engine(n_threads=n_threads, max_models=2)
        return _engine
