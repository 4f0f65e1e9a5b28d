"""Checks on generated code: syntax, hallucinated imports, bandit findings.

    from limner.checks import check_code, reply_notes
    report = check_code(code, language="python")      # -> Report
    text = reply_notes(req, reply)                      # `!note` lines for `!check`

Static only: nothing here runs the code (that is limner.sandbox's job).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from limner.checks.report import Finding, Report, notes, to_json

__all__ = ["Finding", "Piece", "Report", "after_reply", "check_code", "check_pieces", "notes", "reply_notes",
           "to_json"]


@dataclass
class Piece:
    """One piece of code to check, and where it came from."""

    code: str
    language: str | None
    source: str = "<stdin>"
    first_line: int = 1


def check_pieces(pieces: list[Piece], *, root: str | None = None, python: str | None = None,
                 security: bool = True) -> list[Report]:
    """Run every check that fits each piece's language. bandit runs once for all."""
    from limner.checks import imports, syntax

    # A reply's blocks may import each other (`utils.py` and `main.py`).
    siblings = {os.path.splitext(os.path.basename(p.source))[0] for p in pieces if p.source.endswith(".py")}
    reports = []
    for p in pieces:
        r = Report(source=p.source, language=p.language, first_line=p.first_line)
        found, why = syntax.check(p.code, p.language)
        _record(r, "syntax", found, why)
        if p.language != "python":
            r.skipped["imports"] = "Python only"
        elif found:
            r.skipped["imports"] = r.skipped["security"] = "the code does not parse"
        else:
            _record(r, "imports", imports.check(p.code, root=root, local_modules=siblings, python=python), "")
        reports.append(r)
    py = [i for i, p in enumerate(pieces) if p.language == "python" and "security" not in reports[i].skipped]
    if security and py:
        from limner.checks import security as bandit

        found, why = bandit.check_many([pieces[i].code for i in py])
        for i, f in zip(py, found):
            _record(reports[i], "security", f, why)
    for i, r in enumerate(reports):
        if "security" not in r.ran and "security" not in r.skipped:
            r.skipped["security"] = "turned off" if not security else "Python only"
    return reports


def _record(r: Report, check: str, found: list[Finding], why: str) -> None:
    if why:
        r.skipped[check] = why
    else:
        r.ran.append(check)
        r.findings.extend(found)


def check_code(code: str, language: str | None = "python", *, source: str = "<stdin>",
               root: str | None = None, python: str | None = None, security: bool = True) -> Report:
    return check_pieces([Piece(code, language, source)], root=root, python=python, security=security)[0]


def reply_notes(req, reply: str, root: str | None = None) -> str:
    """The `!note` lines `!check` appends under a reply.

    Chat: each fenced block. Completion: the prompt plus the reply (a
    continuation alone rarely parses). Infill: prefix + reply + suffix.
    """
    from limner.checks import blocks
    from limner.request import CHAT, COMPLETION

    root = root or os.getcwd()
    if req.mode == CHAT:
        found = [b for b in blocks.fenced(reply)]
        pieces = [Piece(b.code, b.language, b.name, b.line) for b in found]
        return notes(check_pieces(pieces, root=root), empty="no code blocks in the reply")
    if req.mode == COMPLETION:
        text, what = (req.prompt or "") + reply, "the completed text"
    else:
        text, what = (req.prefix or "") + reply + (req.suffix or ""), "the filled-in text"
    lang = blocks.language_of(req.language or "", text)
    return notes(check_pieces([Piece(text, lang, what)], root=root))


def after_reply(req, outcome, out) -> None:
    """The `!check` hook in limner.run: notes under the rendered reply. A
    failing check never costs the user the reply, nor shows a traceback."""
    try:
        text = reply_notes(req, outcome.text)
    except Exception as e:  # noqa: BLE001
        text = f"\n\n!note check: could not run the checks: {type(e).__name__}: {e}\n"
    out.write(text)
    out.flush()
