"""Finding secrets in text, and replacing them with numbered placeholders.

The matcher runs each rule in four steps, cheapest first:

    keywords   does any of the rule's keywords occur (case-insensitive)?
               one RE2 set pass answers this for all rules; most stop here
    regex      RE2 over the text: one pass for all prefixed tokens, one per
               context rule (they can overlap a token, an alternation cannot)
    entropy    Shannon bits/char of the secret, so "aaaaaaaa" is no key
    allowlist  the rule's and the global regexes and stopwords

A Finding never carries a way back to the secret in anything it prints:
`fingerprint` is a hash of rule id and secret, and `repr` leaves the text out.
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

from .rules import Compiled, Pass, RuleSet, load

PLACEHOLDER = "[[SECRET:{rule}:{n}]]"

@dataclass(frozen=True)
class Finding:
    rule: str
    family: str
    confidence: str  # high | medium
    start: int  # span of the secret in the scanned text (str indices)
    end: int
    line: int  # 1-based line of `start`
    column: int  # 1-based
    fingerprint: str  # hash of rule + secret; the only stable handle on it
    secret: str = field(repr=False, compare=False)

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)

    def label(self) -> str:
        """What may be shown to a user or logged: never the secret."""
        return f"{self.rule} at line {self.line} (fingerprint {self.fingerprint})"


def fingerprint(rule_id: str, secret: str) -> str:
    """A stable handle for one secret under one rule, for !allow-secrets.

    16 hex digits of SHA-256 over a fixed prefix, the rule id and the secret:
    the same secret gives the same fingerprint in every buffer and run, and
    the fingerprint reveals nothing of a high-entropy secret. (A short
    password can be guessed back from any unsalted hash; such values are the
    generic rules' and are redacted, not shown, anyway.)
    """
    h = hashlib.sha256(f"limner-guard/v1\0{rule_id}\0{secret}".encode())
    return h.hexdigest()[:16]


def entropy(s: str) -> float:
    """Shannon entropy of s in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _member(m, members):
    """(rule, its outer group, first own group, group count) for this match."""
    if len(members) == 1:
        return members[0]
    return next(x for x in members if m.group(x[1]) is not None)


def _secret_span(m, rule, outer: int, first: int, count: int) -> tuple[int, int]:
    if rule.group != 0:
        for g in range(first, first + count):
            if m.group(g) is not None:
                return m.span(g)
    return m.span(outer)


def _allowed(secret: str, c: Compiled, gstop) -> bool:
    low = secret.lower()
    if any(w in low for w in c.rule.stopwords) or any(w in low for w in gstop):
        return True
    return c.allow is not None and c.allow.search(secret) is not None


def _unescaped(data: bytes) -> bytes:
    """data with each escaped \\n, \\r, \\t's letter made that control character.

    Text pasted from JSON and logs writes line breaks as a backslash and a
    letter, which glues the next token to a word character ("\\nghp_...")
    so no word boundary precedes it. Same length, so offsets stay valid;
    secrets are still cut from the original bytes.
    """
    if b"\\" not in data:
        return data
    return (data.replace(b"\\n", b"\\\n").replace(b"\\r", b"\\\r")
            .replace(b"\\t", b"\\\t"))


def _scan_pass(p: Pass, view: bytes, data: bytes, gstop, out: list) -> None:
    """Append (start, end, rule, secret) for the pass's matches in `view` (data,
    unescaped); offsets in bytes, secrets cut from `data`."""
    for m in p.pattern.finditer(view):
        c, outer, first, count = _member(m, p.members)
        rule = c.rule
        s, e = _secret_span(m, rule, outer, first, count)
        if s == e:
            continue
        secret = data[s:e].decode("utf-8", "surrogatepass")
        if rule.entropy is not None and entropy(secret) < rule.entropy:
            continue
        if _allowed(secret, c, gstop):
            continue
        out.append((s, e, rule, secret))


def _dedupe(raw: list) -> list:
    """One finding per stretch of text: high confidence, then the longer, wins."""
    raw.sort(key=lambda t: (t[2].confidence != "high", -(t[1] - t[0]), t[0]))
    kept: list = []
    for s, e, rule, secret in raw:
        if all(e <= ks or s >= ke for ks, ke, _, _ in kept):
            kept.append((s, e, rule, secret))
    kept.sort(key=lambda t: t[0])
    return kept


def scan(text: str, rules: RuleSet | None = None) -> list[Finding]:
    """Every secret in text, in order of position, overlaps resolved.

    The text is scanned as UTF-8 bytes: RE2 works on bytes natively (on str
    the binding re-counts characters for every match). One pass of an RE2
    set finds which keywords occur; only their rules run: the prefixed
    tokens in one shared pass, each context rule in its own. Offsets become
    str indices only for findings.
    """
    if not text:
        return []
    rs = rules or load()
    rs.compiled()
    data = text.encode("utf-8", "surrogatepass")
    view = _unescaped(data)
    raw: list = []
    for p in rs.passes(data):
        _scan_pass(p, view, data, rs.global_stopwords, raw)
    ascii_only = len(data) == len(text)
    out = []
    # Byte offset -> str index and line number, counted forward from the
    # previous finding so many findings cost one pass, not one each.
    bpos = cpos = 0
    line = 1
    for s, e, rule, secret in _dedupe(raw):
        cs = s if ascii_only else cpos + len(data[bpos:s].decode("utf-8", "surrogatepass"))
        line += text.count("\n", cpos, cs)
        bpos, cpos = s, cs
        col = cs - (text.rfind("\n", 0, cs) + 1) + 1
        out.append(Finding(rule.id, rule.family, rule.confidence, cs, cs + len(secret), line,
                           col, fingerprint(rule.id, secret), secret))
    return out


class Redactor:
    """Numbered placeholders that stay stable across the texts of one request.

    The same secret gets the same placeholder wherever it appears (system
    prompt, every turn, a !context file), so a model can still tell that two
    mentions are one value; different secrets under one rule count up.
    """

    def __init__(self, rules: RuleSet | None = None):
        self.rules = rules
        self._numbers: dict[tuple[str, str], str] = {}  # (rule, fingerprint) -> placeholder
        self._count: Counter = Counter()

    def placeholder(self, f: Finding) -> str:
        key = (f.rule, f.fingerprint)
        if key not in self._numbers:
            self._count[f.rule] += 1
            self._numbers[key] = PLACEHOLDER.format(rule=f.rule, n=self._count[f.rule])
        return self._numbers[key]

    def redact(self, text: str, findings: list[Finding] | None = None) -> str:
        """text with each finding's span replaced (findings: default, all of scan())."""
        if findings is None:
            findings = scan(text, self.rules)
        parts, pos = [], 0
        for f in sorted(findings, key=lambda f: f.start):
            if f.start < pos:  # overlapping spans: the earlier one already covers it
                continue
            parts.append(text[pos:f.start])
            parts.append(self.placeholder(f))
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)


def redact(text: str, findings: list[Finding] | None = None,
           rules: RuleSet | None = None) -> str:
    """text with every secret replaced by [[SECRET:rule:N]]."""
    return Redactor(rules).redact(text, findings)
