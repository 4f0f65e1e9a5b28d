"""Backends: one adapter per protocol, picked once per request.

`open(req)` returns an adapter with `name`, `describe() -> HttpCall`,
`stream() -> Iterator[Event]` and `close()`. Adding a protocol is one file
plus one line in REGISTRY; modules are imported only when chosen, so an
HTTP request never loads the embedded engine.
"""
from __future__ import annotations

import importlib

from limner.errors import BufferError, LimnerError
from limner.request import INFILL, Request

REGISTRY: dict[str, str] = {
    "openai": "limner.backends.openai:OpenAIAdapter",
    "llamacpp": "limner.backends.llamacpp:LlamaCppAdapter",
    "anthropic": "limner.backends.anthropic:AnthropicAdapter",
    "embedded": "limner.backends.embedded:EmbeddedAdapter",
}


def choose(req: Request) -> str:
    """The backend's name: `!backend` when given, else inferred like Illume's URLs."""
    if req.backend:
        if req.backend not in REGISTRY:
            raise BufferError(
                f"unknown backend {req.backend!r}",
                f"Use one of: {', '.join(REGISTRY)}.",
            )
        return req.backend
    if req.api.strip('"').startswith("embedded:"):  # the `local` profile
        return "embedded"
    if req.mode == INFILL:
        return "llamacpp"  # /infill is llama.cpp's endpoint
    from limner.backends.anthropic import is_anthropic_url
    from limner.backends.base import split_api

    url, _ = split_api(req)
    return "anthropic" if is_anthropic_url(url) else "openai"


def load(name: str):
    module, _, cls = REGISTRY[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        if e.name and not module.startswith(e.name) and e.name != module:
            raise  # a bug inside the backend, not a missing backend
        raise LimnerError(
            f"the {name} backend is not available in this install ({module} is missing)",
            "Run `make setup` in the limner checkout, or choose another !backend.",
        ) from None


def open(req: Request):  # noqa: A001 - the module's verb: backends.open(req)
    """The one adapter for this request. BufferError for a bad or missing !api.

    Never touches the network: fim:auto's question to the server waits for stream().
    """
    if "fim:auto" in req.profiles and choose(req) != "embedded":
        from limner.fim.templates import auto_pending

        if auto_pending(req):  # /infill or a FIM completion: the server decides
            from limner.backends.fim_auto import AutoFimAdapter

            return AutoFimAdapter(req, lambda r: load(choose(r))(r))
    return load(choose(req))(req)
