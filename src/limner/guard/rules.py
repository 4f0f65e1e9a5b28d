"""Loading and compiling the guard's rules (rules.toml beside this file).

Rules are data: adding one is an entry in the TOML with its true and false
examples, no code. Parsing the TOML is cheap and needs nothing outside the
standard library; compiling the regexes needs google-re2 (the `guard` extra),
imported only when a rule set is compiled, so importing limner, or this
module, never loads it.

Examples may hold `{{set:N}}`: N random characters from a named set, from a
seeded generator (expand()). That keeps real-looking tokens out of our own
files while still testing every rule on the provider's token shape.
"""
from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RULES_FILE = Path(__file__).with_name("rules.toml")

FAMILIES = ("provider", "private-key", "generic")
CONFIDENCES = ("high", "medium")


class RuleError(ValueError):
    """A rule file that cannot be used: bad field, bad regex, missing re2."""


@dataclass(frozen=True)
class Rule:
    id: str
    family: str
    confidence: str
    regex: str
    keywords: tuple[str, ...] = ()
    entropy: float | None = None
    allow: tuple[str, ...] = ()
    stopwords: tuple[str, ...] = ()
    group: int | None = None  # None: the first capture group that took part
    prefixed: bool = False  # a token with its own prefix: shares one RE2 pass
    description: str = ""
    true: tuple[str, ...] = ()
    false: tuple[str, ...] = ()


@dataclass(frozen=True)
class Compiled:
    """A rule with its regexes compiled (re2 objects)."""

    rule: Rule
    pattern: Any  # matched against UTF-8 bytes (see scan.scan)
    allow: Any  # rule + global allowlist in one regex, searched in the secret (str)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    global_allow: tuple[str, ...] = ()
    global_stopwords: tuple[str, ...] = ()
    source: str = ""
    _compiled: list = field(default_factory=list, compare=False, repr=False)

    def by_id(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def compiled(self) -> tuple[tuple[Compiled, ...], tuple[Any, ...]]:
        """(compiled rules, compiled global allowlist), built once per RuleSet."""
        return self._build()[:2]

    def passes(self, data: bytes) -> list[Pass]:
        """The RE2 passes data needs: only rules whose keywords occur in it."""
        _, _, kwset, by_kw, always, union, single = self._build()
        hit = set(always)
        for i in (kwset.Match(data) if kwset is not None else None) or ():
            hit.update(by_kw[i])
        out = [union] if union is not None and hit & union.indexes else []
        out += [single[i] for i in sorted(hit) if i in single]
        return out

    def _build(self):
        if not self._compiled:
            re2 = _re2()
            gallow = tuple(_compile(re2, a, "global allow") for a in self.global_allow)
            for r in self.rules:  # each alone first, so an error names its rule
                for a in r.allow:
                    _compile(re2, a, r.id + " allow")
            # A rule's allowlist and the global one as one alternation: one
            # search per candidate secret instead of one per pattern.
            crules = tuple(
                Compiled(r, _compile(re2, r.regex, r.id),
                         _compile(re2, "|".join(f"(?:{a})" for a in r.allow + self.global_allow),
                                  r.id + " allow") if r.allow or self.global_allow else None)
                for r in self.rules
            )
            # All keywords in one case-insensitive RE2 set: a single pass over
            # the text tells which rules can match at all.
            kws = sorted({k for r in self.rules for k in r.keywords})
            by_kw = [[i for i, r in enumerate(self.rules) if k in r.keywords] for k in kws]
            always = [i for i, r in enumerate(self.rules) if not r.keywords]
            kwset = None
            if kws:
                opts = re2.Options()
                opts.case_sensitive = False
                kwset = re2.Set.SearchSet(opts)
                for k in kws:
                    kwset.Add(re2.escape(k))
                kwset.Compile()
            # Prefixed tokens cannot overlap one another, so one alternation
            # finds them all in a single pass (~0.15 ms per 100 KB instead of
            # that per rule); each alternative is wrapped in a group that says
            # which rule matched. Rules matched by context (a name, a header)
            # can overlap a token and keep a pass of their own.
            members, parts, base, idx = [], [], 1, set()
            for i, c in enumerate(crules):
                if c.rule.prefixed:
                    members.append((c, base, base + 1, c.pattern.groups))
                    parts.append(f"({c.rule.regex})")
                    base += 1 + c.pattern.groups
                    idx.add(i)
            union = (Pass(_compile(re2, "|".join(parts), "prefixed rules"), tuple(members),
                          frozenset(idx)) if parts else None)
            single = {i: Pass(c.pattern, ((c, 0, 1, c.pattern.groups),), frozenset({i}))
                      for i, c in enumerate(crules) if not c.rule.prefixed}
            self._compiled.append((crules, gallow, kwset, by_kw, always, union, single))
        return self._compiled[0]


@dataclass(frozen=True)
class Pass:
    """One RE2 pass over the text and the rules it serves.

    members: (rule, group that says this rule matched (0: the whole match),
    the rule's first own group, how many it has).
    """

    pattern: Any
    members: tuple[tuple[Compiled, int, int, int], ...]
    indexes: frozenset


def _re2():
    try:
        import re2  # google-re2: linear time, so no buffer can stall the guard
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuleError(
            "the secret guard needs google-re2: pip install 'limner[guard]'"
        ) from e
    return re2


def _compile(re2, pattern: str, where: str):
    opts = re2.Options()  # the default 8 MiB budget: a larger one makes compiling ~20x slower
    opts.log_errors = False  # RuleError says it; RE2 would also print to stderr
    try:
        return re2.compile(pattern, opts)
    except re2.error as e:
        raise RuleError(f"{where}: regex does not compile in RE2: {e}") from e


def _strs(d: dict, key: str, where: str) -> tuple[str, ...]:
    v = d.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise RuleError(f"{where}: {key} must be a list of strings")
    return tuple(v)


def _rule(d: dict) -> Rule:
    rid = d.get("id")
    if not isinstance(rid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", rid):
        raise RuleError(f"rule id {rid!r}: lowercase letters, digits and '-' only")
    family, conf = d.get("family"), d.get("confidence")
    if family not in FAMILIES:
        raise RuleError(f"{rid}: family must be one of {', '.join(FAMILIES)}")
    if conf not in CONFIDENCES:
        raise RuleError(f"{rid}: confidence must be one of {', '.join(CONFIDENCES)}")
    if not isinstance(d.get("regex"), str):
        raise RuleError(f"{rid}: regex is required")
    unknown = set(d) - {"id", "family", "confidence", "regex", "keywords", "entropy",
                        "allow", "stopwords", "group", "prefixed", "description", "true",
                        "false"}
    if unknown:
        raise RuleError(f"{rid}: unknown field(s) {', '.join(sorted(unknown))}")
    keywords = tuple(k.lower() for k in _strs(d, "keywords", rid))
    if not all(keywords):
        raise RuleError(f"{rid}: empty keyword")
    return Rule(
        id=rid, family=family, confidence=conf, regex=d["regex"], keywords=keywords,
        entropy=float(d["entropy"]) if "entropy" in d else None,
        allow=_strs(d, "allow", rid),
        stopwords=tuple(s.lower() for s in _strs(d, "stopwords", rid)),
        group=int(d["group"]) if "group" in d else None,
        prefixed=bool(d.get("prefixed", False)),
        description=str(d.get("description", "")),
        true=_strs(d, "true", rid), false=_strs(d, "false", rid),
    )


def parse(text: str, source: str = "<string>") -> RuleSet:
    """A RuleSet from rule-file text; RuleError names the first bad rule."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuleError(f"{source}: {e}") from e
    rules = tuple(_rule(d) for d in data.get("rule", []))
    ids = [r.id for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RuleError(f"{source}: duplicate rule id(s) {', '.join(sorted(dup))}")
    g = data.get("global", {})
    return RuleSet(rules, _strs(g, "allow", "global"),
                   tuple(s.lower() for s in _strs(g, "stopwords", "global")), source)


@functools.lru_cache(maxsize=8)
def load(path: str | None = None) -> RuleSet:
    """The rule set from `path` (default: the bundled rules.toml), cached."""
    p = Path(path) if path else RULES_FILE
    return parse(p.read_text(encoding="utf-8"), str(p))


# --- example templates -------------------------------------------------------

CHARSETS = {
    "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "lower": "abcdefghijklmnopqrstuvwxyz",
    "digit": "0123456789",
    "hex": "0123456789abcdef",
    "b32": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
}
CHARSETS["alpha"] = CHARSETS["upper"] + CHARSETS["lower"]
CHARSETS["alnum"] = CHARSETS["alpha"] + CHARSETS["digit"]
CHARSETS["word"] = CHARSETS["alnum"] + "_"
CHARSETS["url"] = CHARSETS["alnum"] + "_-"
CHARSETS["b64"] = CHARSETS["alnum"] + "+/"

_SLOT = re.compile(r"\{\{([a-z0-9]+):([0-9]+)\}\}")


def expand(template: str, seed: int | str = 0) -> str:
    """Fill every {{set:N}} in an example with N seeded random characters."""
    import random  # examples are for tests and benches: keep it off the request path

    rng = random.Random(f"limner-guard:{seed}")

    def fill(m: re.Match) -> str:
        chars = CHARSETS.get(m.group(1))
        if chars is None:
            raise RuleError(f"unknown example character set {m.group(1)!r}")
        return "".join(rng.choice(chars) for _ in range(int(m.group(2))))

    return _SLOT.sub(fill, template)
