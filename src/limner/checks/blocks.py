"""What code a reply holds: its fenced blocks (chat), or the completed text
(completion: prompt + reply; infill: prefix + reply + suffix), with the
language each one is in."""
from __future__ import annotations

import re
from dataclasses import dataclass

# An opening fence: ``` or ~~~ (3 or more), then an info string.
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")


@dataclass
class Block:
    code: str
    language: str | None  # canonical (python, javascript, ...), or None
    line: int  # 1-based line of the code's first line in the reply
    tag: str = ""  # the fence's info string as written
    name: str = ""  # "block 2", or a file name when the fence gives one


def fenced(text: str) -> list[Block]:
    """The fenced code blocks of a markdown reply, in order. An unclosed
    fence runs to the end (a reply cut short still gets checked)."""
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info")
        start, i = i + 1, i + 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            i += 1
        body = "\n".join(lines[start:i])
        tag = info.split()[0] if info.split() else ""
        lang = language_of(tag, body)
        n = len(blocks) + 1
        blocks.append(Block(body + "\n" if body else "", lang, start + 1, info, _name(info, n)))
        i += 1
    return blocks


def _name(info: str, n: int) -> str:
    # ```python title="utils.py"  or  ```python utils.py  -> that file name
    m = re.search(r"""(?:title|file(?:name)?)=["']?([\w./-]+)""", info) or re.search(
        r"\s([\w./-]+\.\w+)\s*$", info)
    return m.group(1) if m else f"block {n}"


def _languages():
    """limner.fim.languages (names, extensions, the guess), when installed."""
    try:
        from limner.fim import languages
    except ImportError:
        return None
    return languages


def canonical(name: str | None) -> str | None:
    lang = _languages()
    if lang is not None:
        return lang.canonical(name)
    n = (name or "").strip().lower()
    return {"py": "python", "python3": "python", "js": "javascript", "ts": "typescript"}.get(n, n) or None


def from_path(path: str) -> str | None:
    lang = _languages()
    if lang is not None:
        return lang.from_path(path)
    return "python" if path.endswith((".py", ".pyi")) else None


def language_of(tag: str, code: str) -> str | None:
    """A fence tag first (```py), else a guess from the code itself."""
    lang = canonical(tag) if tag else None
    if lang in ("text", "txt", "plain", "console", "shell-session", "output"):
        return None
    if lang:
        return {"sh": "bash", "shell": "bash", "zsh": "bash"}.get(lang, lang)
    return guess(code)


def guess(code: str) -> str | None:
    import ast

    languages = _languages()
    lang = languages.guess(code) if languages is not None else None
    if lang is None:
        try:
            ast.parse(code)
            # Prose parses as Python only when it is a single bare word or so;
            # ask for at least one statement that looks like code.
            if any(ch in code for ch in "=():[]") and code.strip():
                return "python"
        except (SyntaxError, ValueError):
            return None
    return lang
