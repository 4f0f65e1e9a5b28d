"""A line-at-a-time lexer: bracket depth, open strings and comments, per language.

The stop needs to know, at every newline, whether the text so far is inside
a bracket, a string or a comment, and what a line's last code character is.
tree-sitter could answer, but a reparse per token is too dear and a partial
statement parses as an error anyway; this scanner is exact enough, costs
O(new characters), and works for languages we have no grammar for.

Also here: each language's "this line starts a definition" pattern, the
scope rule's trigger.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PYTHON, BRACE, NEUTRAL = "python", "brace", "neutral"

FAMILY = {"python": PYTHON, "javascript": BRACE, "typescript": BRACE, "go": BRACE,
          "rust": BRACE, "java": BRACE, "c": BRACE, "cpp": BRACE}

# Tokens the scanner stops at; everything between them is plain code.
_TOKENS = {
    PYTHON: re.compile(r'[rRbBuUfF]{0,2}("""|\'\'\'|"|\')|#|\\$|[()\[\]{}]'),
    BRACE: re.compile(r'//|/\*|\*/|"|\'|`|\\.|[()\[\]{}]'),
    NEUTRAL: re.compile(r'"|\'|`|\\.|[()\[\]{}]'),
}
_OPEN, _CLOSE = "([{", ")]}"
# A Rust lifetime or label ('a, 'static) is not a character literal.
_RUST_CHAR = re.compile(r"'(\\.[^']*|[^\\'])'")


@dataclass
class State:
    depth: int = 0  # brackets opened minus closed, from where scanning began
    string: str | None = None  # the delimiter of an open string, or None
    comment: bool = False  # inside a block comment


@dataclass
class Line:
    """What one scanned line was."""

    text: str  # without the line break
    indent: int
    code: str  # the line with strings blanked and comments removed, stripped
    depth_before: int
    depth_after: int
    starts_open: bool  # began inside a string or block comment
    ends_open: bool  # ends inside a string or block comment
    blank: bool
    comment_only: bool
    last: str  # the last code character ("" when none)


def indent_of(line: str) -> int:
    n = 0
    for ch in line:
        if ch == " ":
            n += 1
        elif ch == "\t":
            n += 4
        else:
            break
    return n


class Scanner:
    def __init__(self, language: str | None, state: State | None = None):
        self.language = language
        self.family = FAMILY.get(language or "", NEUTRAL)
        self.pattern = _TOKENS[self.family]
        self.state = state or State()

    def line(self, text: str) -> Line:
        """Scan one line (no line break); the state carries to the next."""
        st = self.state
        before, starts_open = st.depth, bool(st.string or st.comment)
        code: list[str] = []
        i, n = 0, len(text)
        fam = self.family
        while i < n:
            if st.comment:  # inside /* ... */
                j = text.find("*/", i)
                if j < 0:
                    i = n
                    break
                st.comment, i = False, j + 2
                continue
            if st.string:
                i = self._in_string(text, i)
                if st.string:
                    break
                code.append('""')
                continue
            m = self.pattern.search(text, i)
            if not m:
                code.append(text[i:])
                break
            code.append(text[i : m.start()])
            tok = m.group(0)
            i = m.end()
            if tok in _OPEN:
                st.depth += 1
                code.append(tok)
            elif tok in _CLOSE:
                st.depth -= 1
                code.append(tok)
            elif tok == "#" or tok == "//":
                break  # a line comment: the rest is not code
            elif tok == "/*":
                st.comment = True
            elif tok == "*/":
                code.append(tok)
            elif tok.startswith("\\"):
                code.append(tok)
            else:  # a string opener, maybe with a Python prefix (r, b, f, ...)
                quote = m.group(1) if fam == PYTHON else tok
                if quote == "'" and self.language == "rust":
                    c = _RUST_CHAR.match(text, m.start())
                    if not c:
                        code.append("'")  # a lifetime
                        continue
                    i = c.end()
                    code.append('""')
                    continue
                st.string = quote
        if st.string in ('"', "'") and fam != PYTHON and not text.endswith("\\"):
            st.string = None  # C-family quotes do not span lines; stay robust to stray ones
        if fam == NEUTRAL:
            st.string = None if st.string != "`" else st.string
        joined = "".join(code).strip()
        stripped = text.strip()
        last = joined[-1] if joined else ""
        return Line(
            text=text, indent=indent_of(text), code=joined, depth_before=before,
            depth_after=st.depth, starts_open=starts_open, ends_open=bool(st.string or st.comment),
            blank=not stripped, comment_only=bool(stripped) and not joined and not starts_open,
            last=last,
        )

    def _in_string(self, text: str, i: int) -> int:
        st, q, n = self.state, self.state.string, len(text)
        while i < n:
            ch = text[i]
            if ch == "\\" and q != "`":
                i += 2
                continue
            if text.startswith(q, i):
                st.string = None
                return i + len(q)
            i += 1
        if self.family == PYTHON and len(q) == 1 and not text.endswith("\\"):
            st.string = None  # an unterminated one-line string ends with its line
        return n

    def feed(self, text: str) -> list[Line]:
        return [self.line(t.rstrip("\r")) for t in text.split("\n")]


# -- definitions: the lines that start a new function, class or type --------

_DEFS = {
    "python": r"(async\s+def|def|class)\s|@\w",
    "javascript": r"(export\s+(default\s+)?)?((async\s+)?function\b|class\s|(const|let|var)\s+\w+\s*=\s*"
                  r"(async\s+)?(function\b|\([^)]*\)\s*=>|\w+\s*=>))",
    "typescript": r"(export\s+(default\s+)?)?(declare\s+)?((async\s+)?function\b|(abstract\s+)?class\s|"
                  r"interface\s|type\s+\w+|enum\s|namespace\s|(const|let|var)\s+\w+\s*(:[^=]+)?=\s*"
                  r"(async\s+)?(function\b|\([^)]*\)\s*(:[^=]+)?=>|\w+\s*=>))",
    "go": r"(func|type|var|const|import)\b",
    "rust": r"(#\[|(pub(\([\w:]+\))?\s+)?((async|const|unsafe|extern(\s+\"\w+\")?)\s+)*fn\s|"
            r"(pub(\([\w:]+\))?\s+)?(struct|enum|trait|impl|mod|type|union|static|const|use)\b|impl\b|macro_rules!)",
    "java": r"(@\w+|((public|private|protected|static|final|abstract|synchronized|native|default|sealed)\s+)*"
            r"((class|interface|enum|record)\s|[\w<>\[\],.?\s]+\s+\w+\s*\([^;]*$))",
    "c": r"(#\s*(include|define|if|ifdef|ifndef)\b|typedef\b|(static\s+|extern\s+|inline\s+|const\s+)*"
         r"(struct|union|enum)\s+\w+\s*\{?\s*$|(static\s+|extern\s+|inline\s+|const\s+|unsigned\s+|signed\s+)*"
         r"[A-Za-z_]\w*[\s*]+\**[A-Za-z_]\w*\s*\([^;]*$)",
    "cpp": r"(#\s*(include|define|if|ifdef|ifndef)\b|typedef\b|template\s*<|namespace\b|using\b|"
           r"(class|struct|union|enum)\s+\w+|(static\s+|extern\s+|inline\s+|constexpr\s+|virtual\s+|const\s+|"
           r"unsigned\s+|signed\s+)*[A-Za-z_][\w:<>,]*[\s*&]+[*&]*[A-Za-z_~][\w:]*\s*\([^;]*$)",
}
_DEF_RE = {k: re.compile(v) for k, v in _DEFS.items()}
# Statements that look like `type name(...)` to the patterns above.
_NOT_DEF = re.compile(r"(return|else|if|for|while|switch|case|do|throw|new|delete|goto|await|yield|"
                      r"sizeof|typeof|not|and|or|in|is)\b")


def starts_definition(language: str | None, code_line: str) -> bool:
    """Does this (stripped) line begin a function/class/type definition?"""
    pat = _DEF_RE.get(language or "")
    if pat is None or not code_line:
        return False
    if _NOT_DEF.match(code_line):
        return False
    return bool(pat.match(code_line))


# Lines that belong to the definition below them (cut together with it).
_ATTACHED = {
    "python": re.compile(r"(#|@)"),
    "java": re.compile(r"(//|/\*|\*|@)"),
    "rust": re.compile(r"(//|/\*|\*|#\[)"),
    "cpp": re.compile(r"(//|/\*|\*|template\s*<)"),
}
_ATTACHED_DEFAULT = re.compile(r"(//|/\*|\*(\s|/|$)|#)")


def attaches_below(language: str | None, stripped: str) -> bool:
    """Comments, decorators, annotations: they go with what follows."""
    if not stripped:
        return True
    return bool(_ATTACHED.get(language or "", _ATTACHED_DEFAULT).match(stripped))
