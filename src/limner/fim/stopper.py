"""The syntax-aware stop: end the middle as soon as it is complete.

A Stopper sees the middle as it streams (`feed`) and, at each newline and at
the end of the stream (`finish`), decides whether to stop and where to cut.
`feed` returns None to go on, or how many characters of the middle to keep.

The rules, in the order they are tried on each new line of the middle:

- scope (fim:scope): the line leaves the hole's scope: a new definition at
  or above the level of the definition that holds the hole (the `norm3`
  runaway), or in Python any code dedented to that level. Decided as soon
  as the line's first word is out, before the line is finished.
- suffix (fim:suffix): the line repeats the first code line of the suffix;
  the model has reached the code that is already there.
- complete (fim:complete): the middle is at a structural end (no open
  bracket, string or block; the statement is finished; the next line of the
  suffix fits the indentation the middle leaves) AND the prefix + middle +
  suffix window parses with no more errors than prefix + suffix alone.
  A parse alone is not enough: `norm` plus a runaway `def norm3` parses.

Only a bounded window around the hole is ever parsed: from the nearest
top-level line above (at most WINDOW_ABOVE lines) to the first top-level item
below (at most WINDOW_BELOW), so a 5,000-line file costs what a 100-line one
does. Languages without a grammar keep the scope and suffix rules (by
indentation) plus a blank-line rule.

`committed` is the length of middle the stop will never cut into: a caller
that streams should hold back what lies past it.
"""
from __future__ import annotations

import re

from limner.fim import lexer, treesitter
from limner.fim.languages import canonical

WINDOW_ABOVE = 80
WINDOW_BELOW = 40
SCOPE_SCAN = 4000  # lines looked at (once) to find the definition holding the hole
# Closers and continuations that never start a new top-level item.
_CONTINUES = ("}", ")", "]", "else", "elif", "except", "finally", "catch", "case", "default")
# C-family statements that need a body on the next line when they lack a brace.
_NEEDS_BODY = ("if", "for", "while", "else", "do", "switch", "try", "catch", "finally")
_CONTINUATION_CHARS = set(",=+-*/%&|<>!?.([\\")


_WORD = re.compile(r"[A-Za-z_@#$][\w$]*")
_CONTINUES_RE = re.compile(r"(else|elif|except|finally|catch|case|default)\b|[})\]]")


def _norm(line: str) -> str:
    return " ".join(line.split())


def _trivial(line: str) -> bool:
    """Lines too common to prove a repetition on their own: `}`, `return`, `end`."""
    return sum(ch.isalnum() for ch in line) < 4 or _norm(line) in ("return", "pass", "break", "continue")


def _unit(lines: list[str]) -> int:
    """The file's indentation step (most common positive increase), default 4."""
    counts: dict[int, int] = {}
    prev = None
    for line in lines:
        if not line.strip():
            continue
        ind = lexer.indent_of(line)
        if prev is not None and ind > prev:
            counts[ind - prev] = counts.get(ind - prev, 0) + 1
        prev = ind
    return max(counts, key=lambda k: (counts[k], -k)) if counts else 4


def _top_level(line: str) -> bool:
    s = line.strip()
    return bool(s) and not line[0].isspace() and not s.startswith(_CONTINUES)


class Stopper:
    def __init__(self, language: str | None, prefix: str, suffix: str, *, whole_file: bool = False):
        """whole_file: parse all of prefix and suffix (the bench's baseline), not a window."""
        self.language = canonical(language)
        self.family = lexer.FAMILY.get(self.language or "", lexer.NEUTRAL)
        self.reason = ""
        self.text = ""
        self.committed = 0
        self.done: int | None = None
        self._lines: list[tuple[lexer.Line, int, int, int]] = []  # line, start, end, end_nl
        self._start = 0  # where the unfinished line begins in self.text

        head_at = prefix.rfind("\n") + 1
        self.head = prefix[head_at:].rstrip("\r")  # the hole line's text before the hole
        self.at_line_start = not self.head
        sfx_lines = suffix.split("\n")
        self.suffix_nl = suffix.startswith(("\n", "\r\n"))
        # A hole at the start of a line, with lines below it and no line break of
        # its own in the suffix, takes whole lines: the kept middle ends with one.
        self.whole_lines = self.at_line_start and bool(suffix) and not self.suffix_nl
        self.tail = "" if self.whole_lines else sfx_lines[0].rstrip("\r")
        below = sfx_lines if self.whole_lines else sfx_lines[1:]
        anchor = next((s.rstrip("\r") for s in below[:WINDOW_BELOW] if s.strip()), None)
        self.anchor = anchor
        self.anchor_indent = lexer.indent_of(anchor) if anchor is not None else None

        pre_lines = prefix[:head_at].split("\n")[:-1] if head_at else []
        self._pre_lines = pre_lines
        self.unit = _unit(pre_lines[-WINDOW_ABOVE:] + sfx_lines[:WINDOW_BELOW])
        # The bounded window: prefix from the nearest top-level line above.
        lo = max(0, len(pre_lines) - WINDOW_ABOVE)
        start = next((i for i in range(len(pre_lines) - 1, lo - 1, -1) if _top_level(pre_lines[i])), lo)
        self.win_prefix = "".join(line + "\n" for line in pre_lines[start:]) + prefix[head_at:]
        end = len(sfx_lines)
        for i in range(1, min(len(sfx_lines), WINDOW_BELOW)):
            if _top_level(sfx_lines[i]) and not (self.whole_lines and i == 0):
                end = i
                break
        else:
            end = min(len(sfx_lines), WINDOW_BELOW)
        self.win_suffix = "\n".join(sfx_lines[:end])
        if whole_file:
            start, self.win_prefix, self.win_suffix = 0, prefix, suffix
        # The scanner starts at the window's top-level line, where nothing is open.
        self.scan = lexer.Scanner(self.language)
        for line in self.win_prefix.split("\n")[:-1]:
            self.scan.line(line.rstrip("\r"))
        self.base_depth = self.scan.state.depth

        self._parser = treesitter.parser(self.language) if self.language else None
        self._baseline: int | None = None
        self._last: tuple[bytes, object] = (b"", None)  # the last parsed text and its tree
        self.incremental = True
        self.hole_indent = None if self.at_line_start else lexer.indent_of(self.head)
        self.scope: int | None = None  # indentation of the definition holding the hole
        self._scope_known = False
        self._defs_seen = 0  # top-level definitions the middle has started (hole at top level)
        self._openers: list[int] = []  # Python: blocks the middle opened, not yet left
        self._started = -1  # the last line whose start (first word) was judged
        self.parses = 0

    # -- public ---------------------------------------------------------------

    def feed(self, chunk: str) -> int | None:
        if self.done is not None:
            return self.done
        self.text += chunk
        while self.done is None:
            nl = self.text.find("\n", self._start)
            if nl < 0:
                break
            self._line_done(nl)
        if self.done is None:
            self._early()
        return self.done

    def finish(self) -> int | None:
        """At the end of the stream: the cut, or None to keep the middle as it is."""
        if self.done is not None:
            return self.done
        if self._start < len(self.text):
            self._line_done(len(self.text), final=True)
            if self.done is not None:
                return self.done
        k = self._last_code_index(len(self._lines))
        if k is None:
            return None
        if not self._complete(self._lines[k][0]):
            # Cut short in an open bracket, string or block: back to the last whole line.
            cut = self._best_earlier(k)
            if cut is not None and self.committed <= cut < len(self.text):
                return self._stop(cut, "fim:incomplete")
            return None
        keep = self._cut_after(k)
        if keep < len(self.text) and not self.text[keep:].strip():
            return self._stop(keep, "fim:end")  # only trailing blank lines
        return None

    def _complete(self, line: lexer.Line) -> bool:
        """Does the middle end well after this line (nothing left dangling)?"""
        if line.ends_open or line.depth_after - self.base_depth > 0:
            return False
        if self.family == lexer.PYTHON:
            return line.last not in (":", "\\", ",")
        return line.last not in _CONTINUATION_CHARS

    # -- per line -----------------------------------------------------------------

    def _line_done(self, nl: int, final: bool = False) -> None:
        start = self._start
        raw = self.text[start:nl]
        end = nl - 1 if raw.endswith("\r") else nl
        body = raw.rstrip("\r")
        k = len(self._lines)
        joined = k == 0 and not self.at_line_start  # the hole line: head + middle
        line = self.scan.line(self.head + body if joined else body)
        if joined:
            line.indent = lexer.indent_of(self.head)
        end_nl = nl + 1 if nl < len(self.text) else nl
        self._lines.append((line, start, end, end_nl))
        self._start = end_nl
        if self._rules(k, line, start, end) or final:
            return
        # Shown lines are never taken back: commit this one unless it dangles
        # (an open string, a trailing comma) or may belong to what follows.
        if not line.blank and not line.ends_open and line.last not in _CONTINUATION_CHARS and \
                not lexer.attaches_below(self.language, line.text.strip()):
            self.committed = end

    def _is_code(self, line: lexer.Line) -> bool:
        return not line.blank and not line.comment_only and not line.starts_open

    def _rules(self, k: int, line: lexer.Line, start: int, end: int) -> bool:
        if k == 0 and not self.at_line_start:
            if self.hole_indent is not None:
                self._find_scope()
            if self._tail_overlap(start, end):
                return True
        elif self._is_code(line) and line.depth_before - self.base_depth <= 0:
            if self.hole_indent is None:  # the middle's first code line sets the hole's level
                self.hole_indent = line.indent
                self._find_scope()
            if self._started < k and self._line_start(line, k, line.code):
                return True
            if self._repeats_suffix(line, k):
                return True
        if self.family == lexer.NEUTRAL:
            return self._neutral(k)
        if self._is_code(line) or (line.starts_open and not line.ends_open):
            if self.family == lexer.PYTHON and line.last == ":" and not line.ends_open and \
                    line.depth_after - self.base_depth <= 0:
                self._openers.append(self._statement_indent(k))
            if self._structural_end(k) and self._parses(self._cut_after(k)):
                self._stop(self._cut_after(k), "fim:complete")
                return True
        return False

    def _early(self) -> None:
        """The unfinished line: decide on its first word, before the rest streams in."""
        k = len(self._lines)
        if self.hole_indent is None or self._started >= k or (k == 0 and not self.at_line_start):
            return
        partial = self.text[self._start:].rstrip("\r")
        stripped = partial.strip()
        st = self.scan.state
        if not stripped or st.string or st.comment or st.depth - self.base_depth > 0:
            return
        m = _WORD.match(stripped)
        if not m or m.end() == len(stripped):
            return  # a closer, a string, or a first word still growing
        if stripped.startswith("async") and len(stripped.split()) < 3:
            return  # `async def` needs its second word
        probe = lexer.Line(text=partial, indent=lexer.indent_of(partial), code=stripped,
                           depth_before=st.depth, depth_after=st.depth, starts_open=False,
                           ends_open=False, blank=False, comment_only=False, last="")
        self._line_start(probe, k, stripped, early=True)

    def _line_start(self, line: lexer.Line, k: int, code: str, early: bool = False) -> bool:
        """Rules that need only a line's indentation and first word(s).

        Python lines are judged once, on their first word. A C-family
        definition may need the whole line (`int f(`), so an early look
        there can only stop, and the line is judged again when it ends.
        """
        if lexer.attaches_below(self.language, code) and not code.startswith("@"):
            return False
        final = not early or self.family == lexer.PYTHON
        if self._leaves_scope(line, code, count=final):
            self._stop(self._cut_before(k), "fim:scope")
            return True
        if not final:
            return False
        self._started = k
        # A block the middle opened is finished when the model dedents out of it.
        closed = False
        while self._openers and line.indent <= self._openers[-1]:
            self._openers.pop()
            closed = True
        # `else:`/`except:` go on with the same statement: nothing is finished yet.
        if closed and not _CONTINUES_RE.match(code):
            prev = self._last_code_index(k)
            if prev is not None and self._structural_end(prev):
                cut = self._cut_before(k)
                if self._parses(cut):
                    self._stop(cut, "fim:complete")
                    return True
        return False

    # -- the rules ------------------------------------------------------------------

    def _find_scope(self) -> None:
        """The indentation of the definition that holds the hole (None: top level)."""
        if self._scope_known or self.hole_indent is None:
            return
        self._scope_known = True
        bound, first_header = self.hole_indent, None
        lines = self._pre_lines
        for i in range(len(lines) - 1, max(-1, len(lines) - 1 - SCOPE_SCAN), -1):
            s = lines[i].strip()
            if not s or lexer.attaches_below(self.language, s) or s.startswith(_CONTINUES):
                continue
            ind = lexer.indent_of(lines[i])
            if ind >= bound:
                continue
            if self._defines(s):
                self.scope = ind
                return
            if first_header is None:
                first_header = ind
            bound = ind
            if ind == 0:
                break
        if self.family != lexer.BRACE:
            # No definition around: the enclosing block (an `if __name__`...) is the scope.
            self.scope = first_header

    def _defines(self, code: str) -> bool:
        if self.family == lexer.PYTHON:
            return code.startswith(("def ", "async def ", "class "))
        return lexer.starts_definition(self.language, code)

    def _leaves_scope(self, line: lexer.Line, code: str, count: bool = True) -> bool:
        if self.hole_indent is None:
            return False
        is_def = self._defines(code) or (self.family == lexer.PYTHON and code.startswith("@"))
        if self.scope is not None:
            if line.indent > self.scope:
                return False
            # Dedented out of the definition: in Python anything there is outside it.
            return is_def or self.family != lexer.BRACE
        # The hole is at top level: the middle may write one definition, not two.
        if line.indent > 0:
            return False
        if is_def:
            if not count:
                return self._defs_seen > 0
            self._defs_seen += 1
            return self._defs_seen > 1
        return self.family == lexer.PYTHON and self._defs_seen > 0 and \
            any(not ln.blank and ln.indent > 0 for ln, *_ in self._lines)

    def _repeats_suffix(self, line: lexer.Line, k: int) -> bool:
        if self.anchor is None or line.indent != self.anchor_indent or \
                _norm(line.text) != _norm(self.anchor):
            return False
        cut = self._cut_before(k)
        if _trivial(self.anchor) and not self._parses(cut):
            return False
        self._stop(cut, "fim:suffix")
        return True

    def _tail_overlap(self, start: int, end: int) -> bool:
        """A mid-line hole whose first line ends with the rest of the hole line."""
        tail = self.tail.strip()
        body = self.text[start:end].rstrip()
        if not tail or not body.endswith(tail):
            return False
        cut = start + len(body) - len(tail)
        if not self._parses(cut):
            return False
        self._stop(cut, "fim:suffix")
        return True

    def _structural_end(self, k: int) -> bool:
        """Could the middle end after line k, with the suffix's next line fitting?"""
        line = self._lines[k][0]
        if line.ends_open or line.depth_after - self.base_depth > 0 or self.anchor is None:
            return False  # with nothing below, the scope rule or the model's own end decides
        stmt = self._statement_indent(k)
        if self.family == lexer.PYTHON:
            if line.last == "\\":
                return False
            if line.last == ":":  # an opener: the suffix must hold its body
                return self.anchor_indent == stmt + self.unit
            # Blocks the middle opened and left open must go on in the suffix.
            if any(self.anchor_indent <= o for o in self._openers):
                return False
        else:
            if line.last in _CONTINUATION_CHARS or line.last == ":":
                return False
            first = line.code.split("(")[0].split()[:1]
            if first and first[0] in _NEEDS_BODY and line.last not in (";", "}"):
                return False
            if self.language in ("c", "cpp", "java") and line.last not in (";", "}") and \
                    not line.code.startswith("#"):
                return False
        return self.anchor_indent <= stmt

    def _statement_indent(self, k: int) -> int:
        """Indentation of the line that began the statement ending at line k."""
        depth = self._lines[k][0].depth_after
        for j in range(k, -1, -1):
            ln = self._lines[j][0]
            if not ln.blank and not ln.starts_open and ln.depth_before <= depth:
                return ln.indent
        return self._lines[k][0].indent

    def _neutral(self, k: int) -> bool:
        """No grammar: a blank line or a dedent below the hole ends the middle."""
        line = self._lines[k][0]
        if line.depth_before - self.base_depth > 0 or line.starts_open:
            return False
        has_code = any(not ln.blank for ln, *_ in self._lines[:k])
        if line.blank and has_code:
            self._stop(self._cut_before(k), "fim:blank")
            return True
        if has_code and not line.blank and self.hole_indent is not None and line.indent < self.hole_indent:
            self._stop(self._cut_before(k), "fim:indent")
            return True
        return False

    # -- cuts and parses ----------------------------------------------------------

    def _cut_after(self, k: int) -> int:
        _, _, end, end_nl = self._lines[k]
        return end_nl if self.whole_lines and end_nl > end else end

    def _cut_before(self, k: int) -> int:
        """Before line k, and before the blank lines, comments and decorators above it."""
        j = k - 1
        while j >= 0 and lexer.attaches_below(self.language, self._lines[j][0].text.strip()) and \
                self._lines[j][1] >= self.committed:
            j -= 1
        if j < 0:
            return max(self.committed, 0) if self.committed else 0
        return max(self._cut_after(j), self.committed)

    def _best_earlier(self, k: int) -> int | None:
        for j in range(k - 1, max(-1, k - 8), -1):
            line = self._lines[j][0]
            if line.blank or not self._complete(line):
                continue
            cut = self._cut_after(j)
            if cut < self.committed:
                return None
            if self._parser is None or self._parses(cut):
                return cut
        return None

    def _last_code_index(self, k: int) -> int | None:
        for j in range(k - 1, -1, -1):
            if self._is_code(self._lines[j][0]) or self._lines[j][0].starts_open:
                return j
        return None

    def _stop(self, cut: int, reason: str) -> int:
        self.done = max(0, min(cut, len(self.text)))
        self.reason = reason
        return self.done

    def errors(self, middle: str) -> int:
        """ERROR/MISSING nodes in window-prefix + middle + window-suffix.

        Successive calls differ only where the middle grew, so the last tree
        is edited and reparsed incrementally: tree-sitter reuses every node
        outside the change, and a line costs about the same at the end of a
        long middle as at its start.
        """
        self.parses += 1
        new = (self.win_prefix + middle + self.win_suffix).replace("\r", "").encode("utf-8")
        old, tree = self._last
        if tree is not None and middle and self.incremental:
            tree = treesitter.edit(tree, old, new)
            tree = self._parser.parse(new, tree)
        else:
            tree = self._parser.parse(new)
        if middle:
            self._last = (new, tree)
        return treesitter.count_errors(tree)

    def _parses(self, cut: int) -> bool:
        """prefix + middle[:cut] + suffix has no more errors than prefix + suffix.

        When prefix + suffix alone already fails to parse (the hole cut into a
        bracket or a block), the middle must repair some of that: a middle
        that only keeps the damage as it was has not reached the suffix yet.
        """
        if self._parser is None:
            return True
        if self._baseline is None:
            self._baseline = self.errors("")
        errors = self.errors(self.text[:cut])
        return errors < self._baseline if self._baseline else errors == 0
