"""Profiles: named bundles of buffer lines, loaded by `!profile NAME`.

A profile is nothing but buffer text: the parser reads its lines exactly as
if they were in the buffer, only one level deeper (so `!:` keys the buffer
set itself win, and `!api` only fills an unset URL). The built-ins carry the
same names and the same lines as Illume's, so a buffer that works with Illume
builds the same request here. To add a profile, add one entry to BUILTIN.

Lookup order for `!profile NAME`:
  1. a built-in below;
  2. NAME holds a slash: a file at that path (relative to the buffer's cwd);
  3. otherwise `NAME.profile` in the config dir ($XDG_CONFIG_HOME/limner or
     ~/.config/limner). Illume looked next to its executable instead.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from limner.context import check_path
from limner.errors import BufferError

# Used when the buffer loads no profile. Illume's is "llama.cpp" (a server on
# :8080); limner's is the embedded engine, so a fresh install needs no server.
DEFAULT = "local"
MAX_DEPTH = 16  # profiles loading profiles: deeper than this is surely a cycle

# FIM templates shared by more than one name.
_FIM_QWEN = ("!infill <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",)
_FIM_SPM_MISTRAL = ("!infill [SUFFIX]{suffix}[PREFIX]{prefix}",)

# name -> lines. Illume's set first (identical lines), then limner's additions.
BUILTIN: dict[str, tuple[str, ...]] = {
    # -- Illume's built-ins ------------------------------------------------
    "llama.cpp": (
        "!api http://localhost:8080/",
        "!:cache_prompt true",
        '!:stop ["<|im_end|>"]',
    ),
    "huggingface.co": (
        "!api https://api-inference.huggingface.co/models/{model}/v1",
        "!>authorization Bearer $HF_TOKEN",
        "!>x-use-cache false",
        "!:model meta-llama/Llama-3.3-70B-Instruct",
    ),
    # Sampling settings recommended by the model makers (via Unsloth's docs).
    "gpt-oss": (
        "!:temperature 0.6",
        "!:top_k 0",
        "!:top_p 1.0",
        "!:max_tokens 16384",
        "!gpt-oss",
        "!exclude think",
    ),
    "qwen3": (
        "/no_think",  # a text line: Qwen3's soft switch to skip thinking
        "!:temperature 0.7",
        "!:min_p 0.0",
        "!:top_p 0.8",
        "!:top_k 20",
        "!exclude think",
    ),
    "qwen3-think": (
        "!:temperature 0.6",
        "!:min_p 0.0",
        "!:top_p 0.95",
        "!:top_k 20",
        "!:max_tokens 16384",
        "!exclude think",
    ),
    "qwen3-instruct": (
        "!:temperature 0.7",
        "!:min_p 0.0",
        "!:top_p 0.8",
        "!:top_k 20",
        "!:max_tokens 16384",
    ),
    "gemma-3": (
        "!:temperature 1.0",
        "!:top_k 64",
        "!:top_p 0.95",
        "!:min_p 0.01",
        "!:repeat_penalty 1.0",
    ),
    "gemini": (
        "!api https://generativelanguage.googleapis.com/v1beta",
        "!>authorization Bearer $GEMINI_API_KEY",
        "!:model gemini-2.5-pro",
        "!:max_tokens 10000",
    ),
    "claude": (
        '!api "https://api.anthropic.com/v1/messages"',
        "!>anthropic-version 2023-06-01",
        "!>x-api-key $ANTHROPIC_API_KEY",
        "!:model claude-sonnet-4-5",
        "!:max_tokens 10000",
        "!backend anthropic",  # limner: Illume guesses the protocol from the reply
    ),
    "claude-extended": (
        "!profile claude",
        "!:model claude-opus-4-1",
        "!:max_tokens 20000",
        '!:thinking {"type": "enabled", "budget_tokens": 10000}',
        "!exclude think",
    ),
    "openai": (
        "!api https://api.openai.com/v1",
        "!>authorization Bearer $OPENAI_API_KEY",
        "!:model gpt-5-nano",
        "!:max_tokens",  # newer OpenAI models refuse max_tokens
        "!:max_completion_tokens 10000",
    ),
    # Fill-in-the-middle templates: `!infill TEMPLATE` only stores the
    # template; a bare `!infill` in the buffer marks the hole.
    "fim:deepseek": (
        "!infill <｜begin▁of▁sentence｜><｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
    ),
    "fim:qwen": _FIM_QWEN,
    "fim:granite": ("!infill <fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",),
    "fim:granite4": _FIM_QWEN,
    "fim:mistral": _FIM_SPM_MISTRAL,
    # The leading space after "!infill " is part of CodeLlama's template.
    "fim:codellama": ("!infill  <PRE> {prefix} <SUF>{suffix} <MID>", '!:stop ["<EOT>"]'),
    # -- limner's additions ------------------------------------------------
    # OpenAI-compatible local servers on their default ports.
    "vllm": ("!api http://localhost:8000/v1",),
    "sglang": ("!api http://localhost:30000/v1",),
    "ollama": ("!api http://localhost:11434/v1",),
    # The embedded engine (bundled models, no server). An !api URL, not
    # !backend, so that a buffer's own !api still wins over this default.
    "local": ("!api embedded://",),
    # llama-server's own endpoints (/completion, /infill) rather than /v1.
    "llama.cpp-native": (
        "!api http://localhost:8080/",
        "!backend llamacpp",
        "!:cache_prompt true",
        '!:stop ["<|im_end|>"]',
    ),
    "fim:starcoder": ("!infill <fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",),
    "fim:codestral": _FIM_SPM_MISTRAL,
    "fim:codegemma": ("!infill <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",),
    "fim:qwen2.5-coder": _FIM_QWEN,
    # No lines: the name itself asks for automatic FIM (limner/fim/templates.py):
    # GGUF FIM tokens in the engine, else a fim:NAME template, else the server's
    # /infill, else prefix-only completion ended by the syntax-aware stop.
    "fim:auto": (),
}


def config_dir(env: Mapping[str, str] | None = None) -> str:
    """Where `NAME.profile` files live: $XDG_CONFIG_HOME/limner or ~/.config/limner."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".config"
    )
    return os.path.join(base, "limner")


def resolve(name: str, *, cwd: str, config: str) -> tuple[str, str]:
    """Find profile NAME: returns (its text, where it came from).

    Raises BufferError (line 0: the caller knows the line) when not found.
    """
    if name in BUILTIN:
        return "".join(line + "\n" for line in BUILTIN[name]), "built-in"
    if not name:
        raise BufferError(
            "!profile needs a name",
            f"Built-in profiles: {', '.join(BUILTIN)}.",
        )
    check_path(name, "profile name")  # a NUL would reach open() as ValueError
    if "/" in name or "\\" in name:
        path = os.path.join(cwd, name)
        missing = f"cannot read profile file {name}"
    else:
        path = os.path.join(config, name + ".profile")
        missing = f"unknown profile {name!r}: not a built-in, and no file {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BufferError(
            f"{missing} ({e.strerror})",
            f"Built-in profiles: {', '.join(BUILTIN)}. A name with a slash is a "
            f"file path; any other name is looked up as NAME.profile in {config}.",
        ) from None
    try:
        return raw.decode("utf-8"), path
    except UnicodeDecodeError as e:
        raise BufferError(
            f"profile file {path} is not valid UTF-8 (byte {e.start})",
            "Save the profile as UTF-8.",
        ) from None
