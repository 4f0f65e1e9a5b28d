"""`limner serve`'s /infill in llama.cpp server's shape, for editors such as llama.vim.

What llama.vim sends (learned from reading it; nothing copied): the lines
above the cursor as `input_prefix`, the cursor line up to the cursor as
`prompt`, the rest of that line and the lines below as `input_suffix`,
chunks of other code as `input_extra` ({text, filename, time}), and
n_predict, n_indent, top_k, top_p, samplers, stop, cache_prompt, id_slot,
t_max_prompt_ms, t_max_predict_ms and response_fields. A background
warm-up sends only the extra chunks with n_predict 0 to fill the prompt
cache. It reads `content`, `tokens_cached`, `truncated` and the flat
`timings/...` names its response_fields ask for.

What limner does with them:
- the syntax-aware stop is always on; with no `language` field the language
  comes from a `filename` field, the text, or the extra chunks' file names
  (fim.languages.infer), else the stop's indentation rules apply;
- the engine sends only text the stop has committed, so a cut is never seen;
- t_max_predict_ms bounds decoding once a line is out (engine); n_predict 0
  evaluates the prompt and answers "" (the warm-up primes the prefix cache);
- samplers, n_indent, id_slot, cache_prompt and t_max_prompt_ms are accepted
  and ignored: one fixed sampler chain, the stop does n_indent's job, the
  slot is the one holding the longest prefix (scheduler.py), the prefix
  cache is always on;
- a prompt too long for the context drops the oldest extra chunks, then the
  top of the prefix, and answers `truncated: true`, as llama.cpp does.
"""
from __future__ import annotations

from typing import Any

from limner.engine.openai_schema import (Parsed, RequestError, _flag, _model, _obj, _text, after,
                                         error_body, model_name, params_of, sse, timings)
from limner.events import Failure, Stopped, Text, Usage

# Engine keys a client may set on /infill beyond the sampling ones.
ENGINE_KEYS = {"t_max_predict_ms": float}
PREFIX_TRIMS = 3  # halvings of the prefix tried after all extra chunks are dropped


def parse_infill(body: Any) -> Parsed:
    """llama.cpp server's /infill request, plus limner's `language` and `filename`."""
    from limner.context import block
    from limner.fim.stream import spec_for

    body = _obj(body)
    prefix = _text(body, "input_prefix", required=False) or ""
    suffix = _text(body, "input_suffix", required=False) or ""
    prompt = _text(body, "prompt", required=False) or ""  # llama.cpp: the middle so far
    extra = body.get("input_extra") or []
    if not isinstance(extra, list):
        raise RequestError("'input_extra' must be a list of {filename, text}", param="input_extra")
    blocks, names = [], []
    for i, chunk in enumerate(extra):
        if not (isinstance(chunk, dict) and isinstance(chunk.get("text"), str)):
            raise RequestError(f"input_extra[{i}] must be an object with a 'text' string",
                               param=f"input_extra[{i}]")
        name = chunk.get("filename")
        names.append(name if isinstance(name, str) else "")
        # Laid out as limner's `!context` inlines files: the model sees the same text.
        blocks.append(block(names[-1] or f"extra{i}", chunk["text"]))
    for key in ("language", "filename"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise RequestError(f"'{key}' must be a string", param=key)
    fields = body.get("response_fields")
    if fields is not None and not (isinstance(fields, list)
                                   and all(isinstance(f, str) for f in fields)):
        raise RequestError("'response_fields' must be a list of strings", param="response_fields")
    params = params_of(body)
    params.update(_engine_keys(body))
    p = Parsed("infill", _model(body), "fim", prefix="".join(blocks) + prefix + prompt,
               suffix=suffix, params=params, stream=_flag(body, "stream"))
    p.prefixes = fitted(blocks, prefix + prompt)
    p.response_fields = fields or None
    p.stop_spec = spec_for(prefix + prompt, suffix, body.get("language"), body.get("filename"),
                           names)
    return p


def _engine_keys(body: dict) -> dict:
    out = {}
    for key, cast in ENGINE_KEYS.items():
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise RequestError(f"'{key}' must be a non-negative number, not {v!r}", param=key)
        out[key] = cast(v)
    return out


def fitted(blocks: list[str], prefix: str) -> list[str]:
    """Model prompts from the whole one down: oldest extra chunks dropped first
    (by halves), then the top of the prefix. Tried in order while the engine
    says the prompt does not fit its context."""
    out = ["".join(blocks) + prefix]
    kept = list(blocks)
    while kept:
        kept = kept[len(kept) // 2 or 1:] if len(kept) > 1 else []
        out.append("".join(kept) + prefix)
    lines = prefix.split("\n")
    for _ in range(PREFIX_TRIMS):
        if len(lines) < 2:
            break
        lines = lines[len(lines) // 2:]
        out.append("\n".join(lines))
    return out


# ---------------------------------------------------------------- shaping


def stop_type(stopped: str | None) -> str:
    """llama.cpp's stop_type: "limit" (n_predict, time), "word" (a stop string) or "eos"."""
    if stopped == "length":
        return "limit"
    if stopped and stopped != "stop":
        return "word"  # a FIM stop rule cut the middle, as a stop word would
    return "eos"


def infill_chunk(model: str, text: str) -> dict:
    return {"content": text, "stop": False, "model": model}


def infill_final(model: str, text: str, stopped: str | None, u: Usage | None, *,
                 truncated: bool = False, language: str | None = None) -> dict:
    """The last /infill message (or the whole non-streamed reply, with all the text).
    `limner_stop_reason` says which rule ended the middle (fim:complete, ...)."""
    u = u or Usage()
    word = u.extra.get("stopping_word", "") if stopped == "stop" else ""
    return {"content": text, "stop": True, "model": model,
            "tokens_predicted": u.completion_tokens or 0, "tokens_evaluated": u.prompt_tokens or 0,
            "tokens_cached": u.cached_tokens or 0,
            "stop_type": stop_type(stopped) if not word else "word", "stopping_word": word,
            "truncated": truncated, "limner_stop_reason": stopped,
            "limner_language": language, "timings": timings(u)}


def project(obj: dict, fields: list[str]) -> dict:
    """llama.cpp's response_fields: only the named values, a nested one under
    its path as a flat key ("timings/prompt_n"); names not found are left out."""
    out = {}
    for path in fields:
        node: Any = obj
        for part in path.split("/"):
            if not (isinstance(node, dict) and part in node):
                break
            node = node[part]
        else:
            out[path] = node
    return out


class InfillShape:
    """llama.cpp server's /infill reply: {content, stop, timings}, streamed as SSE or whole."""

    def _final(self, parsed, run, model: str, text: str) -> dict:
        spec = parsed.stop_spec or {}
        return infill_final(model, text, run.end.reason if isinstance(run.end, Stopped) else None,
                            run.usage, truncated=getattr(run, "truncated", False),
                            language=spec.get("language"))

    async def stream(self, parsed, run, first, events, model: str):
        try:
            async for ev in after(first, events):
                if isinstance(ev, Text):
                    yield sse(infill_chunk(model, ev.text))
                elif isinstance(ev, Usage):
                    model = ev.extra.get("model") or model
                elif isinstance(ev, Stopped):
                    yield sse(self._final(parsed, run, model, ""))
                elif isinstance(ev, Failure):
                    yield sse(error_body(f"{ev.message} {ev.hint}".strip(),
                                         type="server_error", code=ev.kind))
        finally:
            if run.end is None:
                run.cancel.set()

    def warm(self, parsed, model: str) -> dict:
        """The immediate answer to a warm-up (n_predict 0): no text, nothing counted yet."""
        spec = parsed.stop_spec or {}
        out = infill_final(model, "", "length", None, language=spec.get("language"))
        return project(out, parsed.response_fields) if parsed.response_fields else out

    def whole(self, parsed, run):
        out = self._final(parsed, run, model_name(run, parsed.model), "".join(run.text))
        return project(out, parsed.response_fields) if parsed.response_fields else out
