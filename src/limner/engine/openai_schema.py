"""Request parsing and response shaping for `limner serve`, in OpenAI's and llama.cpp's shapes.

No HTTP and no engine here: dicts in, dicts (or SSE bytes from a run's
events) out. serve.py turns HTTP into a parsed request, runs it on the
engine and shapes the events with these.
The shapes follow OpenAI's API reference (chat.completion,
chat.completion.chunk, text_completion, the error object) and llama.cpp
server's /infill (content, stop, timings; its parsing and shape are in
serve_infill.py), so unmodified clients work.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from limner.events import Failure, Sample, Stopped, Text, Usage

# OpenAI-style sampling parameters we pass to the engine. Anything about
# threads, context or batch size is the server operator's call, not a
# client's: those would make one request reload a model for everyone.
SAMPLING = {
    "max_tokens": int, "temperature": float, "top_p": float, "top_k": int, "min_p": float,
    "repeat_penalty": float, "frequency_penalty": float, "presence_penalty": float,
    "seed": int, "typical_p": float,
}
# llama.cpp server names for the same things (/infill, /completion clients).
LLAMACPP_ALIASES = {"n_predict": "max_tokens", "temp": "temperature"}


class RequestError(Exception):
    """A request we refuse; becomes an OpenAI error object with this status."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class Parsed:
    """One request, ready to become an engine Job."""

    kind: str  # "chat" | "completion" | "infill"
    model: str  # as the client named it ("" = default for the mode)
    mode: str  # the engine mode: "chat" | "completion" | "fim"
    messages: list[dict] | None = None
    prompt: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    params: dict = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    stop_spec: dict | None = None
    prefixes: list[str] | None = None  # FIM prompts to try, whole first (serve_infill.fitted)
    response_fields: list[str] | None = None  # llama.cpp's projection of the reply
    n: int = 1  # choices: decoded together in one batch (engine/batch.py)


# ---------------------------------------------------------------- parsing


def _obj(body: Any) -> dict:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _flag(body: dict, key: str) -> bool:
    v = body.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise RequestError(f"'{key}' must be true or false", param=key)
    return v


def _model(body: dict) -> str:
    m = body.get("model", "")
    if m is None:
        return ""
    if not isinstance(m, str):
        raise RequestError("'model' must be a string", param="model")
    return m.strip()


def params_of(body: dict) -> dict:
    """The sampling parameters, type-checked, with llama.cpp aliases folded in."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = LLAMACPP_ALIASES.get(key, key)
        if key == "max_completion_tokens":  # the newer OpenAI name
            name = "max_tokens"
        if name in SAMPLING and value is not None:
            cast = SAMPLING[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"'{key}' must be a number, not {value!r}", param=key)
            if cast is int and float(value) != int(value):
                raise RequestError(f"'{key}' must be an integer, not {value!r}", param=key)
            out[name] = cast(value)
    if "max_tokens" in out and out["max_tokens"] < 0 and body.get("n_predict") != -1:
        raise RequestError("'max_tokens' must not be negative", param="max_tokens")
    if "temperature" in out and out["temperature"] < 0:
        raise RequestError("'temperature' must not be negative", param="temperature")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("'stop' must be a string or a list of strings", param="stop")
        if len(stop) > 16:
            raise RequestError("'stop' takes at most 16 strings", param="stop")
        if stop:
            out["stop"] = stop
    return out


MAX_N = 64  # engine/batch.py's limit (not imported: that would load numpy for every request)


def n_of(body: dict) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise RequestError(f"'n' must be an integer from 1 to {MAX_N}, not {n!r}", param="n")
    return n


def _unsupported(body: dict) -> None:
    """Refuse what we cannot honour, rather than silently answering something else."""
    for key in ("tools", "functions"):
        if body.get(key):
            raise RequestError(f"'{key}' is not supported: the engine does not do tool calls",
                               param=key)
    if body.get("logprobs") not in (None, False, 0):
        raise RequestError("'logprobs' is not supported", param="logprobs")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise RequestError(f"response_format {fmt.get('type')!r} is not supported; only text",
                           param="response_format")


def _content(content: Any, i: int) -> str:
    """A message's text; OpenAI's list-of-parts form is joined when all parts are text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise RequestError(f"messages[{i}].content: only text parts are supported",
                                   param=f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"messages[{i}].content must be a string or a list of text parts",
                       param=f"messages[{i}].content")


def _stream_options(body: dict, stream: bool) -> bool:
    opts = body.get("stream_options")
    if opts is None:
        return False
    if not isinstance(opts, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    if not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true",
                           param="stream_options")
    return bool(opts.get("include_usage"))


def parse_chat(body: Any) -> Parsed:
    body = _obj(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]")
        role = "system" if m["role"] == "developer" else m["role"]
        if role not in ("system", "user", "assistant", "tool"):
            raise RequestError(f"messages[{i}].role {m['role']!r} is not one of "
                               "system, developer, user, assistant, tool", param=f"messages[{i}].role")
        messages.append({"role": role, "content": _content(m.get("content"), i)})
    _unsupported(body)
    stream = _flag(body, "stream")
    return Parsed("chat", _model(body), "chat", messages=messages, params=params_of(body),
                  stream=stream, include_usage=_stream_options(body, stream), n=n_of(body))


def _text(body: dict, key: str, *, required: bool) -> str | None:
    v = body.get(key)
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
        v = v[0]  # OpenAI allows a batch of prompts; one is what we serve
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise RequestError(f"'{key}' must be a string (token arrays and batches are not supported)",
                           param=key)
    return v


def parse_completion(body: Any) -> Parsed:
    """A legacy completion; with a `suffix` it is fill-in-the-middle."""
    body = _obj(body)
    prompt = _text(body, "prompt", required=True)
    suffix = _text(body, "suffix", required=False)
    _unsupported(body)
    stream = _flag(body, "stream")
    p = Parsed("completion", _model(body), "completion", params=params_of(body), stream=stream,
               include_usage=_stream_options(body, stream), echo=_flag(body, "echo"), n=n_of(body))
    if suffix is not None:
        if p.n > 1:
            raise RequestError("n > 1 is not supported with a suffix (fill-in-the-middle)", param="n")
        from limner.fim.stream import spec_for

        p.mode, p.prefix, p.suffix = "fim", prompt, suffix
        for key in ("language", "filename"):  # limner's additions: hints for the stop
            if body.get(key) is not None and not isinstance(body[key], str):
                raise RequestError(f"'{key}' must be a string", param=key)
        p.stop_spec = spec_for(prompt, suffix, body.get("language"), body.get("filename"))
    else:
        p.prompt = prompt
    return p


# ---------------------------------------------------------------- shaping


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def now() -> int:
    return int(time.time())


def finish_reason(stopped: str | None) -> str:
    """Engine stop reasons -> OpenAI's: only "length" is not a plain stop."""
    return "length" if stopped == "length" else "stop"


def usage_dict(u: Usage | None) -> dict:
    u = u or Usage()
    prompt, completion = u.prompt_tokens or 0, u.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens or 0}}


def chat_chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def completion_chunk(cid: str, created: int, model: str, text: str, finish: str | None = None) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(kind: str, cid: str, created: int, model: str, u: Usage | None) -> dict:
    """The last chunk when stream_options.include_usage is set: no choices, the usage."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {"id": cid, "object": obj, "created": created, "model": model,
            "system_fingerprint": None, "choices": [], "usage": usage_dict(u)}


def chat_response(cid: str, created: int, model: str, text: str, finish: str, u: Usage | None) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage_dict(u)}


def completion_response(cid: str, created: int, model: str, text: str, finish: str,
                        u: Usage | None) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            "usage": usage_dict(u)}


def timings(u: Usage | None) -> dict:
    """llama.cpp server's timings object."""
    u = u or Usage()
    pn, pms = u.prompt_tokens or 0, u.prompt_ms or 0.0
    dn, dms = u.completion_tokens or 0, u.predicted_ms or 0.0
    evaluated = max(0, pn - (u.cached_tokens or 0))
    return {"cache_n": u.cached_tokens or 0,
            "prompt_n": evaluated, "prompt_ms": round(pms, 3),
            "prompt_per_token_ms": round(pms / evaluated, 3) if evaluated else 0.0,
            "prompt_per_second": round(evaluated * 1000 / pms, 2) if pms else 0.0,
            "predicted_n": dn, "predicted_ms": round(dms, 3),
            "predicted_per_token_ms": round(dms / dn, 3) if dn else 0.0,
            "predicted_per_second": round(dn * 1000 / dms, 2) if dms else 0.0}


def models_list(infos: list, created: int) -> dict:
    data = []
    for m in infos:
        if getattr(m, "error", ""):
            continue
        data.append({
            "id": m.name, "object": "model", "created": created, "owned_by": "limner",
            "meta": {"source": m.source, "architecture": m.architecture,
                     "parameters": m.parameters, "quantization": m.quantization,
                     "file_size": m.file_size, "context_length": m.context_length,
                     "chat_template": m.chat_template, "fim_tokens": m.fim_tokens},
        })
    return {"object": "list", "data": data}


# ---------------------------------------------------------------- streams and whole replies
# `run` is serve.Run: the events so far (text, usage, end) of one engine job.


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def after(first, events):
    """The event serve peeked at (to pick the status and headers), then the rest."""
    yield first
    async for ev in events:
        yield ev


def model_name(run, fallback: str) -> str:
    return (run.usage.extra.get("model") if run.usage else None) or fallback


class OpenAIShape:
    """Chat and completion replies in OpenAI's shapes, streamed or whole."""

    def __init__(self, kind: str):
        self.kind = kind
        self.id = new_id(kind)
        self.created = now()

    def _chunk(self, model: str, text: str | None, finish: str | None = None, role=False) -> dict:
        if self.kind == "chat":
            delta: dict = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return chat_chunk(self.id, self.created, model, delta, finish)
        return completion_chunk(self.id, self.created, model, text or "", finish)

    async def stream(self, parsed, run, first, events, model: str):
        try:
            if self.kind == "chat":
                yield sse(self._chunk(model, "", role=True))
            elif parsed.echo and parsed.prompt:
                yield sse(self._chunk(model, parsed.prompt))
            async for ev in after(first, events):
                if isinstance(ev, Text):
                    yield sse(self._chunk(model, ev.text))
                elif isinstance(ev, Sample):  # n > 1: each choice whole, then its finish
                    text = (parsed.prompt or "") + ev.text if parsed.echo else ev.text
                    yield sse(_indexed(self._chunk(model, text, role=self.kind == "chat"), ev))
                    yield sse(_indexed(self._chunk(model, None if self.kind == "chat" else "",
                                                   finish_reason(ev.finish_reason)), ev))
                elif isinstance(ev, Usage):
                    model = ev.extra.get("model") or model
                elif isinstance(ev, Stopped) and run.samples:
                    if parsed.include_usage:
                        yield sse(usage_chunk(self.kind, self.id, self.created, model, run.usage))
                elif isinstance(ev, Stopped):
                    yield sse(_why(self._chunk(model, None if self.kind == "chat" else "",
                                               finish_reason(ev.reason)), ev.reason))
                    if parsed.include_usage:
                        yield sse(usage_chunk(self.kind, self.id, self.created, model, run.usage))
                elif isinstance(ev, Failure):
                    # Headers are sent: the error travels in the stream, where
                    # OpenAI's clients look for it.
                    yield sse(error_body(f"{ev.message} {ev.hint}".strip(),
                                         type="server_error", code=ev.kind))
            yield b"data: [DONE]\n\n"
        finally:
            if run.end is None:  # the client left mid-stream: stop the engine
                run.cancel.set()

    def _choices(self, parsed, run, model: str) -> dict:
        """A whole n > 1 reply: one choice per sample, with limner's log-probs."""
        make = chat_response if self.kind == "chat" else completion_response
        out = None
        for s in sorted(run.samples, key=lambda s: s.index):
            text = (parsed.prompt or "") + s.text if parsed.echo and self.kind != "chat" else s.text
            one = make(self.id, self.created, model, text, finish_reason(s.finish_reason), run.usage)
            choice = one["choices"][0]
            choice["index"] = s.index
            choice["limner_stop_reason"] = s.finish_reason
            choice["limner_logprob"] = {"sum": s.logprob_sum, "mean": s.logprob_mean,
                                        "tokens": s.tokens, "seed": s.seed}
            if out is None:
                out = one
            else:
                out["choices"].append(choice)
        return out

    def whole(self, parsed, run):
        text = "".join(run.text)
        model = model_name(run, parsed.model)
        finish = finish_reason(run.end.reason if run.end else None)
        reason = run.end.reason if isinstance(run.end, Stopped) else None
        if run.samples:
            return self._choices(parsed, run, model)
        if self.kind == "chat":
            return _why(chat_response(self.id, self.created, model, text, finish, run.usage), reason)
        if parsed.echo and parsed.prompt:
            text = parsed.prompt + text
        return _why(completion_response(self.id, self.created, model, text, finish, run.usage),
                    reason)


def _indexed(chunk: dict, s: Sample) -> dict:
    chunk["choices"][0]["index"] = s.index
    return chunk


def _why(reply: dict, reason: str | None) -> dict:
    """limner's own reason on the choice: which FIM rule (fim:complete, ...)
    or "stop" / "length"; OpenAI's finish_reason can only say "stop"."""
    reply["choices"][0]["limner_stop_reason"] = reason
    return reply
