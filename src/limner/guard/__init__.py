"""limner guard: no secret leaves the machine by accident.

    findings = scan(text)                       # rules.toml, matched with RE2
    d = decide(findings, is_local(url), mode, allow)
    if d.action == "block": ...                 # describe(f) for the !error
    text = Redactor().redact(text, d.redact)    # [[SECRET:rule:1]]
    denied(path, root)                          # before a file is read

Phase 1 is this package alone; see docs/guard.md for what the transport,
the log, !context and `limner serve` will call. Importing it loads neither
google-re2 nor pathspec: those come in on the first scan / file check.
"""
from .files import BUILTIN_DENY, allowed, denied
from .policy import DEFAULT_MODE, MODES, Decision, decide, describe, is_local
from .rules import Rule, RuleError, RuleSet, expand, load
from .scan import PLACEHOLDER, Finding, Redactor, entropy, fingerprint, redact, scan

__all__ = [
    "BUILTIN_DENY", "DEFAULT_MODE", "MODES", "PLACEHOLDER", "Decision", "Finding",
    "Redactor", "Rule", "RuleError", "RuleSet", "allowed", "decide", "denied", "describe",
    "entropy", "expand", "fingerprint", "is_local", "load", "redact", "scan",
]
