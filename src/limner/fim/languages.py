"""Which language a hole is written in: `!lang`, a file name, or a cheap guess.

Names are canonical: python, javascript, typescript, go, rust, java, c, cpp.
Anything else is kept as given (lower-cased) and gets the language-neutral
fallback rules of the stop.
"""
from __future__ import annotations

import os
import re

SUPPORTED = ("python", "javascript", "typescript", "go", "rust", "java", "c", "cpp")

ALIASES = {
    "py": "python", "python3": "python", "py3": "python",
    "js": "javascript", "node": "javascript", "jsx": "javascript", "mjs": "javascript",
    "ts": "typescript", "tsx": "typescript",
    "golang": "go",
    "rs": "rust",
    "c++": "cpp", "cxx": "cpp", "cc": "cpp", "hpp": "cpp", "h++": "cpp",
    "h": "c",
}

EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
}


def canonical(name: str | None) -> str | None:
    if not name:
        return None
    n = name.strip().lower()
    return ALIASES.get(n, n) or None


def from_path(path: str) -> str | None:
    return EXTENSIONS.get(os.path.splitext(path)[1].lower())


# Evidence for the guess: (language, pattern, weight). Cheap regexes over the
# text around the hole; the best total wins, ties and zero mean "unknown".
_EVIDENCE = [
    ("python", r"^\s*def \w+\(.*\)\s*(->.*)?:\s*$", 3),
    ("python", r"^\s*(from [\w.]+ )?import \w+", 1),
    ("python", r"^\s*(elif|except|with) .*:\s*$|^\s*(else|try|finally):\s*$", 2),
    ("python", r"\bself\.\w+|\bNone\b|\bTrue\b|\bFalse\b", 1),
    ("go", r"^package \w+|^func (\(\w+ \*?\w+\) )?\w+\(", 4),
    ("go", r":= |\bfmt\.\w+\(", 2),
    ("rust", r"^\s*(pub )?fn \w+|\blet mut\b|^\s*impl\b|^\s*use \w+::", 4),
    ("rust", r"&mut |->\s*[A-Z]\w*(<|\s*\{)|\bprintln!\(", 2),
    ("java", r"^\s*(public|private|protected)\s+(static\s+)?(final\s+)?[\w<>\[\]]+\s+\w+\s*\(", 3),
    ("java", r"\bSystem\.out\.|^\s*(public\s+)?class \w+|^import java\.", 3),
    ("cpp", r"#include\s*<(iostream|vector|string|map|memory|algorithm)>|\bstd::|\btemplate\s*<", 4),
    ("cpp", r"\bnamespace \w+|\bauto \w+ =|::\w+\(", 2),
    ("c", r"#include\s*<(stdio|stdlib|string|stdint|stddef|math)\.h>|\bprintf\(|\bmalloc\(", 3),
    ("c", r"^\s*(static\s+)?(unsigned |const )?(int|char|void|double|float|long|size_t)\s+\*?\w+\s*\(", 2),
    ("typescript", r":\s*(string|number|boolean|void|any)\b|^\s*(export )?interface \w+|\bas const\b", 4),
    ("typescript", r"^\s*(export )?type \w+ =", 2),
    ("javascript", r"\bfunction\s*\w*\(|=>|\bconst \w+ =|\blet \w+ =|\bconsole\.log\(", 2),
    ("javascript", r"\brequire\(|module\.exports|document\.", 2),
]
_COMPILED = [(lang, re.compile(pat, re.M), w) for lang, pat, w in _EVIDENCE]


def guess(prefix: str, suffix: str = "", window: int = 4000) -> str | None:
    text = prefix[-window:] + "\n" + suffix[:window]
    scores: dict[str, int] = {}
    for lang, pat, w in _COMPILED:
        n = len(pat.findall(text))
        if n:
            scores[lang] = scores.get(lang, 0) + w * min(n, 5)
    # TypeScript is JavaScript plus types: its evidence includes JS's.
    if "typescript" in scores:
        scores["typescript"] += scores.get("javascript", 0)
    if "cpp" in scores:
        scores["cpp"] += scores.get("c", 0)
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def detect(language: str | None = None, prefix: str = "", suffix: str = "",
           paths: list[str] | tuple[str, ...] = ()) -> str | None:
    """`!lang` first, then a file-name hint (e.g. a !context file), then a guess."""
    lang = canonical(language)
    if lang:
        return lang
    for p in paths:
        lang = from_path(p)
        if lang:
            return lang
    return guess(prefix, suffix)


def infer(language: str | None = None, prefix: str = "", suffix: str = "",
          filename: str | None = None, other_paths: list[str] | tuple[str, ...] = ()) -> str | None:
    """For a request from an editor that may say nothing (llama.vim's /infill):
    a language field, the file's name, the text, then the names of the other
    files the client sent (llama.vim's ring chunks), by majority, then a trial
    parse. None means the stop's language-neutral indentation rules."""
    lang = canonical(language) or (from_path(filename) if filename else None)
    lang = lang or guess(prefix, suffix)
    if lang:
        return lang
    votes: dict[str, int] = {}
    for p in other_paths:
        hit = from_path(p or "")
        if hit:
            votes[hit] = votes.get(hit, 0) + 1
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        return ranked[0][0]
    return by_parse(prefix, suffix)


# Grammars a trial parse tries: one per family of syntax (a tie means "unknown").
_TRIAL = ("python", "javascript", "c")


def by_parse(prefix: str, suffix: str, lines: int = 30) -> str | None:
    """The one grammar that parses the text around the hole with the fewest
    errors, when it is strictly the fewest; None on a tie or no text. Only a
    few dozen lines are parsed, so it costs a few milliseconds."""
    head = "\n".join(prefix.split("\n")[-lines:])
    text = head + "\n" + "\n".join(suffix.split("\n")[:lines])
    if sum(ch.isalpha() for ch in text) < 8:
        return None
    from limner.fim import treesitter

    scores = []
    for name in _TRIAL:
        parser = treesitter.parser(name)
        if parser is not None:
            scores.append((treesitter.count_errors(parser.parse(text.encode("utf-8"))), name))
    scores.sort(key=lambda s: s[0])
    if not scores or (len(scores) > 1 and scores[0][0] == scores[1][0]):
        return None
    return scores[0][1]
