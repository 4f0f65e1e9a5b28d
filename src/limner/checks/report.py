"""Check results, and the two ways out: `!note` lines for a buffer, JSON for programs.

Severity decides the exit code of `limner check-code`: an "error" or a
"warning" is a finding (exit 1); "info" is shown but passes (bandit's
low-severity hits, imports guarded by `try/except ImportError`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("error", "warning", "info")
FAILING = ("error", "warning")


@dataclass
class Finding:
    check: str  # "syntax" | "imports" | "security"
    severity: str  # "error" | "warning" | "info"
    message: str
    line: int = 0  # 1-based, within the checked code; 0 when unknown
    col: int = 0
    code: str = ""  # a stable id: "syntax-error", "unresolved-import", "B602", ...
    hint: str = ""  # what to do about it


@dataclass
class Report:
    """Every check run on one piece of code."""

    source: str  # "FILE", "<stdin>", "block 2", ...
    language: str | None
    findings: list[Finding] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # checks that ran
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why not
    first_line: int = 1  # where the code starts in its container (a reply's line)

    @property
    def failed(self) -> bool:
        return any(f.severity in FAILING for f in self.findings)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SEVERITIES}
        for f in self.findings:
            out[f.severity] = out.get(f.severity, 0) + 1
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = self.failed
        d["counts"] = self.counts()
        return d


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _summary(r: Report) -> str:
    what = f"{r.source} ({r.language or 'unknown language'})"
    c = r.counts()
    if not r.findings:
        verdict = "clean" if r.ran else "not checked"
    else:
        verdict = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in c.items() if n)
    ran = f" [{', '.join(r.ran)}]" if r.ran else ""
    return f"check {what}: {verdict}{ran}"


def _finding_line(r: Report, f: Finding) -> str:
    where = f"line {f.line}" if f.line else "-"
    if f.line and r.first_line > 1:
        where += f" (reply line {r.first_line + f.line - 1})"
    code = f" {f.code}" if f.code else ""
    text = f"{where}: {f.severity} [{f.check}{code}] {_one_line(f.message)}"
    if f.hint:
        text += f" -- {_one_line(f.hint)}"
    return text


def notes(reports: list[Report], empty: str = "") -> str:
    """`!note` lines for the buffer (the parser never sends them to a model).

    Starts with a blank line so it never runs into the reply's last line.
    """
    lines = []
    if not reports and empty:
        lines.append(f"check: {empty}")
    for r in reports:
        lines.append(_summary(r))
        for f in sorted(r.findings, key=lambda f: (SEVERITIES.index(f.severity), f.line)):
            lines.append("  " + _finding_line(r, f))
        for check, why in r.skipped.items():
            lines.append(f"  {check} skipped: {_one_line(why)}")
    if not lines:
        return ""
    return "\n\n" + "".join(f"!note {line}\n" for line in lines)


def to_json(reports: list[Report]) -> dict:
    """The stable shape programs read: {"failed": bool, "reports": [...]}."""
    return {
        "failed": any(r.failed for r in reports),
        "reports": [r.to_dict() for r in reports],
    }
