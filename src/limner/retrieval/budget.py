"""Token counting and the budgeter that never goes over.

A counter is anything with `count(text) -> int`. Phase 1 ships:
- `Approx`: fast, no vocabulary; errs high on code (a token per 6 letters,
  every punctuation mark its own token), so a budget met by it is met by
  the bundled models' tokenizers too, in practice (not guaranteed).
- `Vocab`: greedy longest match over a GGUF's token list (read with
  engine/gguf.py, no llama_cpp), closer to the model's own count.
- `Callable`: wraps any function, e.g. the engine's tokenizer (phase 2).

The budgeter fills blocks in priority order and checks the joined text with
the counter itself at the end, so a counter that is not additive (real BPE
can merge across a join) still cannot push it over.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable as _Fn, Iterable, Protocol


class Counter(Protocol):
    def count(self, text: str) -> int: ...


_LONE_SPACE = re.compile(r"(?<! ) (?! )")
_PIECE = re.compile(r" ?[A-Za-z]{1,6}|[0-9]{1,3}|\n|[ \t]+|[^\sA-Za-z0-9]")
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


class Approx:
    """Pieces of text, without a vocabulary: a word (with the one space before
    it) is a token per 6 letters, digits a token per 3, any other symbol one
    (two beyond the BMP), a run of spaces one, each newline one. Measured on
    stdlib code it is 18-21 % above Gemma 3's and SmolLM2's own counts
    (docs/context.md). One findall: the regex does the per-6 and per-3
    splitting itself, so no Python loop runs per piece."""

    name = "approx"

    def count(self, text: str) -> int:
        n = len(_PIECE.findall(text))
        return n + len(_ASTRAL.findall(text)) if not text.isascii() else n


class Callable:
    """Any `fn(text) -> int`, or a tokenizer `fn(text) -> list` (its length counts)."""

    def __init__(self, fn: _Fn[[str], object], name: str = "callable"):
        self.fn = fn
        self.name = name

    def count(self, text: str) -> int:
        out = self.fn(text)
        return out if isinstance(out, int) else len(out)  # type: ignore[arg-type]


class Vocab:
    """Greedy longest match over a vocabulary (SentencePiece '▁' or GPT-2 'Ġ'
    spaces). Not the model's exact merges, but its pieces and its sizes."""

    def __init__(self, tokens: Iterable[str], name: str = "vocab"):
        self.name = name
        toks = [t for t in tokens if t and not (t.startswith("<") and t.endswith(">"))]
        gpt2 = sum(t.startswith("Ġ") for t in toks) > sum(t.startswith("▁") for t in toks)
        self._space = "Ġ" if gpt2 else "▁"
        self.vocab = frozenset(toks)
        self.longest = min(32, max((len(t) for t in toks), default=1))

    def state(self) -> tuple:
        """What from_state needs, cheap to marshal: one joined string loads ~8x
        faster than a set of 262k strings (a token with a NUL never matches text)."""
        return (self._space, "\0".join(sorted(t for t in self.vocab if "\0" not in t)), self.longest)

    @classmethod
    def from_state(cls, state: tuple, name: str) -> "Vocab":
        v = cls((), name)
        v._space, joined, v.longest = state
        v.vocab = frozenset(joined.split("\0")) if joined else frozenset()
        return v

    @classmethod
    def from_gguf(cls, path: str) -> "Vocab":
        from limner.engine import gguf

        meta = gguf.read_metadata(path)
        return cls(meta.get("tokenizer.ggml.tokens") or [], name=f"vocab:{path}")

    def count(self, text: str) -> int:
        if self._space == "Ġ":  # byte-level BPE: every space and newline is a symbol
            s = text.replace(" ", "Ġ").replace("\n", "Ċ")
        else:  # SentencePiece (Gemma): "▁" glues one space to a word; runs stay spaces
            s = _LONE_SPACE.sub("▁", text)
        vocab, longest = self.vocab, self.longest
        i, n = 0, 0
        while i < len(s):
            for j in range(min(len(s), i + longest), i, -1):
                if s[i:j] in vocab:
                    i = j
                    break
            else:  # not in the vocabulary: byte fallback, a token per UTF-8 byte
                n += len(s[i].encode("utf-8")) - 1
                i += 1
            n += 1
        return n


@dataclass(frozen=True)
class Block:
    """One piece of context: where it came from, why, and its text."""

    source: str           # e.g. "email/parser.py:12-40"
    text: str
    reason: str = ""      # "definition of X", "bm25", "similar window", "outline"
    priority: float = 0.0  # lower goes first
    tokens: int = field(default=0, compare=False)


def fit(blocks: Iterable[Block], budget: int, counter: Counter, sep: str = "\n\n",
        header: str = "") -> list[Block]:
    """The blocks, in priority order, that fit together under `budget`.

    A block that does not fit is skipped and smaller ones later still get
    their chance. `header` and the separators are counted too. Guaranteed:
    counter.count(render(result, sep, header)) <= budget."""
    if budget <= 0:
        return []
    chosen: list[Block] = []
    used = counter.count(header) if header else 0
    sep_cost = counter.count(sep) if sep else 0
    for b in sorted(blocks, key=lambda b: b.priority):  # stable: ties keep their order
        cost = counter.count(b.text) + (sep_cost if chosen or header else 0)
        if used + cost <= budget:
            chosen.append(replace(b, tokens=cost))
            used += cost
    # The sum is an estimate when the counter is not additive: check the real text.
    while chosen and counter.count(render(chosen, sep, header)) > budget:
        chosen.pop()
    return chosen


def render(blocks: list[Block], sep: str = "\n\n", header: str = "") -> str:
    """The prompt text of `blocks`; nothing at all (not even the header) for none."""
    if not blocks:
        return ""
    body = sep.join(b.text for b in blocks)
    return header + sep + body if header else body
