"""`limner check`: find a buffer's problems without sending anything.

    limner check < buffer          one `LINE: message` per problem, or `ok`
    limner check --json < buffer   [{"line", "severity", "message", "hint"}, ...]
    limner check --directives      the directive table (the language's spec)

The secret guard's verdict comes last (guard/preview.py): a secret that would
block the request is an error, one it would redact a warning, one sent to a
local destination a note.

Exit status: 1 if any error, else 0 (warnings alone still print, then `ok`).
Line 0 means the problem belongs to no buffer line (e.g. the default profile).
"""
from __future__ import annotations

import argparse
import json
import sys

from limner import buffer


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="limner check",
        description="Lint a buffer on stdin without sending anything.",
    )
    p.add_argument("--json", action="store_true", help="print the problems as a JSON list")
    p.add_argument("--directives", action="store_true", help="list every directive and exit")
    p.add_argument("--profile", help="default profile when the buffer names none")
    return p.parse_args(argv)


def _read_stdin() -> tuple[str, list[buffer.Issue]]:
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        issue = buffer.Issue(line, f"the buffer is not valid UTF-8 (byte {e.start})",
                             hint="Save the file as UTF-8.")
        return raw.decode("utf-8", "replace"), [issue]


def _guard(text: str, profile: str | None) -> list[buffer.Issue]:
    """What the secret guard would do to this request (guard/preview.py), unsent."""
    from limner.errors import LimnerError
    from limner.guard.preview import preview

    try:
        req = buffer.parse(text, default_profile=profile)
    except LimnerError:
        return []
    return [buffer.Issue(line, msg, sev, hint) for line, sev, msg, hint in preview(req)]


def main(argv: list[str]) -> int:
    try:
        args = _args(argv)
    except SystemExit as e:  # --help, or argparse already printed the problem
        return int(e.code or 0)
    out = sys.stdout
    if args.directives:
        out.write(buffer.directive_table())
        return 0
    text, issues = _read_stdin()
    issues += buffer.check(text, default_profile=args.profile)
    if not any(i.severity == "error" for i in issues):
        issues = sorted(issues + _guard(text, args.profile), key=lambda i: i.line)
    errors = [i for i in issues if i.severity == "error"]
    if args.json:
        rows = [{"line": i.line, "severity": i.severity, "message": i.message, "hint": i.hint} for i in issues]
        out.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    else:
        for i in issues:
            label = "" if i.severity == "error" else f"{i.severity}: "
            out.write(f"{i.line}: {label}{i.message}\n")
        if not errors:
            out.write("ok\n")
    return 1 if errors else 0
