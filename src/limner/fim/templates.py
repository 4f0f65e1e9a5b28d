"""FIM prompt templates, and what `fim:auto` does for each kind of backend.

A template is Illume's: text with {prefix} and {suffix}, sent as a plain
completion. The same strings are the `fim:NAME` profiles in profiles.py
(tests keep the two in step); this module adds their stop strings and the
model-name hints `fim:auto` uses.

`fim:auto` (a profile that only marks the request) resolves like this:

- embedded models: the engine reads the FIM token ids from the GGUF
  (`limner.engine.gguf.fim_token_ids`) and lays out <pre> prefix <suf>
  suffix <mid>; a model with none falls back to prefix-only completion and
  the syntax-aware stop uses the suffix to end the middle;
- HTTP servers: a template from a `fim:NAME` profile wins; otherwise the
  server's /infill when it has one (llama.cpp: it builds the FIM prompt from
  the model's own metadata); otherwise prefix-only completion.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

AUTO_PROFILE = "fim:auto"
_KEY = re.compile(r"\{(prefix|suffix)\}")


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # with {prefix} and {suffix}
    stop: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # lower-case substrings of model names that use it
    note: str = ""


_QWEN = "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
_STARCODER = "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
_SPM_MISTRAL = "[SUFFIX]{suffix}[PREFIX]{prefix}"

TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("deepseek", "<｜begin▁of▁sentence｜><｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
             models=("deepseek-coder", "deepseek")),
    Template("qwen", _QWEN, stop=("<|endoftext|>", "<|file_sep|>"), models=("qwen2.5-coder", "qwen3-coder", "qwen")),
    Template("qwen2.5-coder", _QWEN, stop=("<|endoftext|>", "<|file_sep|>")),
    Template("starcoder", _STARCODER, stop=("<|endoftext|>", "<file_sep>"),
             models=("starcoder", "granite-3", "granite-8b-code", "granite-20b-code", "granite-code")),
    Template("granite", _STARCODER, stop=("<|endoftext|>",), note="Granite up to 3.3"),
    Template("granite4", _QWEN, stop=("<|end_of_text|>",), models=("granite-4", "granite4")),
    Template("codellama", " <PRE> {prefix} <SUF>{suffix} <MID>", stop=("<EOT>",),
             models=("codellama", "code-llama")),
    Template("mistral", _SPM_MISTRAL, note="Codestral; suffix first, no middle token"),
    Template("codestral", _SPM_MISTRAL, models=("codestral",), note="SPM order, no middle token"),
    Template("codegemma", _QWEN, stop=("<|file_separator|>",), models=("codegemma",)),
)}


def fill(template: str, prefix: str, suffix: str) -> str:
    """{prefix} and {suffix} filled in one pass (text that itself holds "{suffix}" stays)."""
    return _KEY.sub(lambda m: prefix if m.group(1) == "prefix" else suffix, template)


def render(name: str, prefix: str, suffix: str) -> str:
    return fill(TEMPLATES[name].text, prefix, suffix)


def for_model(model: str | None) -> Template | None:
    """The template a model name suggests (qwen2.5-coder-7b -> qwen), or None."""
    m = (model or "").lower()
    best: tuple[int, Template] | None = None
    for t in TEMPLATES.values():
        for hint in t.models:
            if hint in m and (best is None or len(hint) > best[0]):
                best = (len(hint), t)
    return best[1] if best else None


@dataclass
class Plan:
    """How an infill request will be sent."""

    kind: str  # "tokens" | "template" | "infill" | "prefix-only"
    template: str | None = None
    ids: dict = field(default_factory=dict)
    why: str = ""


def embedded_plan(gguf_path: str) -> Plan:
    """FIM token ids from the GGUF, or prefix-only completion."""
    from limner.engine import gguf

    ids = gguf.fim_token_ids(gguf.read_metadata(gguf_path))
    if ids:
        return Plan("tokens", ids=ids, why="the GGUF declares FIM tokens")
    return Plan("prefix-only", why="the model has no FIM tokens: prefix-only completion, "
                "the syntax-aware stop ends the middle")


def http_plan(req, server_has_infill: bool | None) -> Plan:
    if req.fim_template:
        return Plan("template", req.fim_template, why="a fim:NAME profile or !infill TEMPLATE")
    if server_has_infill:
        return Plan("infill", why="the server has /infill")
    t = for_model(req.model)
    if t is not None:
        return Plan("template", t.text, why=f"the model name suggests fim:{t.name}")
    return Plan("prefix-only", "{prefix}", why="no template and no /infill: prefix-only completion")


def props_url(base_url: str) -> str:
    """Where llama.cpp's server describes itself: its root's /props (not under /v1)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    return root + "/props"


def probe_infill(base_url: str, timeout: float = 1.0) -> bool | None:
    """Does the server at base_url offer llama.cpp's /infill? None: could not tell.

    Network I/O: only ever called when sending (backends/fim_auto.py), never
    for `!debug`. Never raises: any failure means "could not tell".
    """
    from limner.backends.base import load_httpx

    httpx = load_httpx()
    try:
        r = httpx.get(props_url(base_url), timeout=timeout)
    except Exception:  # noqa: BLE001 - refused, timed out, a URL httpx rejects: no answer
        return None
    if r.status_code != 200:
        return False
    try:
        props = r.json()
    except ValueError:  # not JSON: not llama.cpp
        return False
    return isinstance(props, dict) and "default_generation_settings" in props


def auto_pending(req) -> bool:
    """fim:auto on an HTTP infill request whose layout only the server can decide."""
    from limner.request import INFILL

    return (AUTO_PROFILE in (req.profiles or []) and req.mode == INFILL
            and req.backend != "embedded" and not req.fim_template)


def resolve_auto(req, server_has_infill: bool | None) -> Plan:
    """Apply the plan for this answer to req in place: /infill stays, else a FIM completion."""
    from limner.request import FIM

    plan = http_plan(req, server_has_infill)
    if plan.kind != "infill":
        req.mode = FIM
        req.fim_template = plan.template or "{prefix}"
        req.prompt = fill(req.fim_template, req.prefix or "", req.suffix or "")
    return plan


def apply_auto(req) -> None:
    """Resolve `fim:auto` on an HTTP request in place, probing the server (network I/O).

    The embedded engine resolves its own; backends.open defers this to send time.
    """
    if not auto_pending(req):
        return
    from limner.backends.base import split_api

    url, _ = split_api(req)
    resolve_auto(req, probe_infill(url))
