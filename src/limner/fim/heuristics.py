"""Baseline stop policies for `limner bench fim`, each written from what its
project documents (none of their code is used):

- max-tokens: no stop; generation runs to the token cap (or the model's end).
- tabby: Tabby's stop words. Its docs configure a language by `line_comment`
  and `top_level_keywords` (docs: Administration > Code Completion,
  "Additional Language"); the stop words are "\\n" + each top-level keyword,
  "\\n" + the line comment, and a blank line "\\n\\n". Cut before the first hit.
- continue: Continue's autocomplete stops at a blank line ("\\n\\n", and
  "\\r\\n\\r\\n" since continuedev/continue#1057) and at a generated line that is
  similar to the line below the cursor ("stop at similar line"), cut before it.
- indent: llama.vim / llama.cpp's `n_indent` ("the minimum line indentation
  for the generated text"): stop at the first new line indented less than
  the hole's line. When the hole sits on an empty line, the first generated
  line's indentation stands for it (llama.vim's handling of suggestions that
  start on empty lines, ggml-org/llama.vim#51).

All share the Stopper's interface: feed(text) -> keep|None, finish(), reason.
"""
from __future__ import annotations

from limner.textsim import levenshtein

# Top-level keywords per language, in the spirit of Tabby's language table.
TOP_LEVEL = {
    "python": (["def", "from", "class", "import"], "#"),
    "javascript": (["function", "class", "import", "export", "const", "let", "var"], "//"),
    "typescript": (["function", "class", "import", "export", "const", "let", "var",
                    "interface", "type", "declare"], "//"),
    "go": (["func", "type", "var", "const", "import", "package"], "//"),
    "rust": (["fn", "trait", "impl", "enum", "pub", "extern", "static", "struct", "use", "mod"], "//"),
    "java": (["public", "private", "protected", "class", "import", "package", "interface"], "//"),
    "c": (["#include", "#define", "struct", "typedef", "static", "extern"], "//"),
    "cpp": (["#include", "#define", "struct", "class", "namespace", "template", "typedef",
             "static", "extern"], "//"),
}


class _Policy:
    name = ""

    def __init__(self, language: str | None, prefix: str, suffix: str):
        self.language, self.prefix, self.suffix = language, prefix, suffix
        self.text = ""
        self.reason = ""
        self.done: int | None = None

    def feed(self, chunk: str) -> int | None:
        if self.done is None:
            self.text += chunk
            self.check(len(self.text) - len(chunk))
        return self.done

    def finish(self) -> int | None:
        return self.done

    def check(self, new_from: int) -> None:  # pragma: no cover - overridden
        pass

    def stop(self, keep: int) -> None:
        self.done = max(0, keep)
        self.reason = self.name


class MaxTokens(_Policy):
    name = "max-tokens"


class Tabby(_Policy):
    name = "tabby"

    def __init__(self, language, prefix, suffix):
        super().__init__(language, prefix, suffix)
        words, comment = TOP_LEVEL.get(language or "", ([], ""))
        self.words = ["\n\n", "\r\n\r\n"] + ["\n" + w for w in words] + (["\n" + comment] if comment else [])
        self.longest = max(len(w) for w in self.words)

    def check(self, new_from: int) -> None:
        lo = max(0, new_from - self.longest)
        hits = [i for i in (self.text.find(w, lo) for w in self.words) if i >= 0]
        if hits:
            self.stop(min(hits))


def _below_cursor(prefix: str, suffix: str) -> str:
    """The first non-blank line below the cursor."""
    lines = suffix.split("\n")
    at_line_start = prefix == "" or prefix.endswith("\n")
    candidates = lines if (at_line_start and not suffix.startswith(("\n", "\r\n"))) else lines[1:]
    return next((s.strip() for s in candidates if s.strip()), "")


class Continue(_Policy):
    name = "continue"
    SIMILAR = 0.1  # at most this share of characters edited counts as "similar"

    def __init__(self, language, prefix, suffix):
        super().__init__(language, prefix, suffix)
        self.below = _below_cursor(prefix, suffix)
        self.line_start = 0

    def check(self, new_from: int) -> None:
        for stop in ("\n\n", "\r\n\r\n"):
            i = self.text.find(stop, max(0, new_from - len(stop)))
            if i >= 0:
                self.stop(i)
                return
        while True:
            nl = self.text.find("\n", self.line_start)
            if nl < 0:
                return
            line = self.text[self.line_start:nl].strip()
            if self._similar(line):
                self.stop(self.line_start)
                return
            self.line_start = nl + 1

    def finish(self) -> int | None:
        if self.done is None and self._similar(self.text[self.line_start:].strip()):
            self.stop(self.line_start)
        return self.done

    def _similar(self, line: str) -> bool:
        if not line or not self.below:
            return False
        longest = max(len(line), len(self.below))
        return levenshtein(line, self.below) <= self.SIMILAR * longest


class Indent(_Policy):
    name = "indent"

    def __init__(self, language, prefix, suffix):
        super().__init__(language, prefix, suffix)
        head = prefix[prefix.rfind("\n") + 1:]
        self.n_indent = _indent(head) if head.strip() else None
        self.line_start = 0
        self.lines = 0

    def check(self, new_from: int) -> None:
        while self.done is None:
            nl = self.text.find("\n", self.line_start)
            if nl < 0:
                # A new line's indentation is known once its first non-blank character is out.
                self._judge(self.text[self.line_start:], partial=True)
                return
            self._judge(self.text[self.line_start:nl], partial=False)
            self.line_start = nl + 1

    def _judge(self, line: str, partial: bool) -> None:
        if not line.strip():
            return
        ind = _indent(line)
        if self.lines == 0 and self.n_indent is None:
            if not partial:
                self.n_indent, self.lines = ind, 1
            return
        if self.lines > 0 or self.line_start > 0:
            if ind < self.n_indent:
                # Cut before this line and the line break (and blank lines) above it.
                self.stop(len(self.text[: self.line_start].rstrip()))
                return
        if not partial:
            self.lines += 1


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


POLICIES = {"max-tokens": MaxTokens, "tabby": Tabby, "continue": Continue, "indent": Indent}


def make(name: str, language: str | None, prefix: str, suffix: str):
    return POLICIES[name](language, prefix, suffix)
