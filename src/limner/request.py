"""The Request: everything a buffer asks for, before any I/O.

`buffer.parse(text)` produces one of these; a backend adapter turns it into
an HTTP call (or an engine call). Nothing here touches the network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Illume's sentinel for "no !api given yet": a profile may still set it.
INVALID_URL = "http://invalid./"

# Modes, named after Illume's TypeChat/TypeCompletion/TypeInfill/TypeFim.
CHAT = "chat"
COMPLETION = "completion"
INFILL = "infill"  # llama.cpp /infill with input_prefix / input_suffix
FIM = "fim"  # a template filled with {prefix}/{suffix}, sent as a completion


def parse_seconds(text: str) -> float | None:
    """A timeout as written (`!timeout`, --timeout, $LIMNER_TIMEOUT): finite and > 0, else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant" | "infill"
    content: str
    line: int = 0  # buffer line where this message's text begins (1-based)


@dataclass
class ContextFile:
    """One file pulled in by !context, kept so /infill can send it as input_extra."""

    name: str  # the relative name shown to the model
    text: str
    line: int  # the !context line that brought it in
    block: str = ""  # the exact fenced text inlined into the buffer (Illume's format)


@dataclass
class Request:
    mode: str = CHAT
    api: str = INVALID_URL  # as written: may be "quoted" (literal) or hold {keys}
    api_line: int = 0
    data: dict[str, Any] = field(default_factory=lambda: {"max_tokens": 2000})
    headers: dict[str, str] = field(
        default_factory=lambda: {"content-type": "application/json"}
    )
    # Chat: every message. Completion: one message holding the prompt.
    # Infill/FIM: the text before (and after) the !infill line.
    messages: list[Message] = field(default_factory=list)
    prompt: str | None = None  # completion and fim: the final prompt text
    prefix: str | None = None  # infill/fim: text before the hole (Illume adds "\n")
    suffix: str | None = None  # infill/fim: text after the hole
    infill_line: int = 0  # where the !infill hole is
    fim_template: str | None = None
    context_files: list[ContextFile] = field(default_factory=list)
    profile: str | None = None  # the last profile loaded (Illume's State.Profile)
    profiles: list[str] = field(default_factory=list)  # every profile loaded, in order
    backend: str | None = None  # explicit !backend; None = infer from mode and URL
    prepend: str = ""
    exclude: str = ""
    debug: bool = False
    stats: bool = False
    nolog: bool = False
    gpt_oss: bool = False
    user_set: set[str] = field(default_factory=set)  # !: keys the buffer itself set
    language: str | None = None  # infill: source language for the syntax-aware stop
    checks: bool = False  # !check: run code checks on the reply
    test_cmd: str | None = None  # !test CMD (verify issue)
    repair_rounds: int = 0  # !repair N
    vote_n: int = 0  # !vote N: candidates to sample and vote on (limner.select)
    sandbox: str = "strict"  # !sandbox basic: the opt-in to run !test at the weaker level
    # !timeout (or --timeout): seconds to wait for the server's first byte and
    # between chunks; None = $LIMNER_TIMEOUT or the default (backends/base.py).
    timeout: float | None = None
    timeout_from: str = ""  # "!timeout at line 3", "--timeout": named in the error
    # The secret guard (guard/egress.py): None = the default (block); the
    # rule ids and fingerprints `!allow-secrets` lets through as written.
    secrets: str | None = None
    allow_secrets: list[str] = field(default_factory=list)
    # Repository context (issue 9, retrieval/assemble.py): !budget N [outline],
    # each !outline (DIR as written, its absolute path, suffixes, line) and
    # !retrieve (query, line), the file an infill is in (!file or $LIMNER_FILE),
    # and, once assembled, every block put in the prompt (for !debug/!stats).
    budget: int | None = None
    budget_line: int = 0
    budget_outline: bool = False  # `!budget N outline`: shrink overflowing !context files
    outlines: list[tuple[str, str, tuple[str, ...], int]] = field(default_factory=list)
    retrieves: list[tuple[str, int]] = field(default_factory=list)
    file_path: str | None = None
    cwd: str = ""
    placed: list[Any] = field(default_factory=list)  # assemble.Placed
    # Retrieved blocks as (file name, text) when they go apart from the prefix:
    # llama.cpp's input_extra, or the embedded model's repo-level FIM tokens.
    extra_files: list[tuple[str, str]] = field(default_factory=list)
    context_used: int = 0  # tokens of all of it, of context_budget, by context_counter
    context_budget: int = 0
    context_counter: str = ""
    text: str = ""  # the raw buffer, for hashing and logging

    @property
    def model(self) -> str | None:
        m = self.data.get("model")
        return m if isinstance(m, str) else None


@dataclass
class HttpCall:
    """A fully built HTTP request. `!debug` prints exactly this."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    method: str = "POST"
    stream: bool = True
    # For `!debug`: what the call depends on that only sending can tell
    # (fim:auto's /props probe). One line; never sent.
    note: str = ""
