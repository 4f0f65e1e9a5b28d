"""`limner logs`: list, show and search the exchange log.

    limner logs [--limit N] [--status S] [--since T] [--until T] [--model M] [--json]
    limner logs show ID [--buffer] [--json]
    limner logs search QUERY [--limit N] [--json]
    limner logs path
    limner logs redact       remove every secret from the stored log (the guard's rules)

Times are ISO dates/datetimes (local time unless they carry a zone) or
relative ages: 30m, 2h, 3d, 1w. Errors are `!error` blocks on stderr with a
non-zero exit, so stdout stays clean for pipes and --json.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from datetime import date, datetime, time, timedelta, timezone

from limner import log
from limner.errors import LimnerError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class _Usage(LimnerError):
    exit_code = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="limner logs", description="The exchange log.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="cmd")
    # `limner logs` alone lists, so the list options sit on the top parser too.
    _list_options(p)
    _list_options(sub.add_parser("list", help="recent exchanges (the default)"), sub=True)
    s = sub.add_parser("show", help="one exchange in full")
    s.add_argument("id")
    s.add_argument("--buffer", action="store_true",
                   help="print it back as a limner buffer (request + !assistant + reply)")
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    f = sub.add_parser("search", help="full-text search (SQLite FTS5 syntax)")
    f.add_argument("query")
    f.add_argument("--limit", type=int, default=20)
    f.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub.add_parser("path", help="print where the log lives")
    sub.add_parser("redact", help="remove every secret from the existing log (then VACUUM)")
    return p


def _list_options(q: argparse.ArgumentParser, sub: bool = False) -> None:
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--status", choices=log.STATUSES)
    q.add_argument("--since", help="ISO date/time or age (2h, 3d)")
    q.add_argument("--until", help="ISO date/time or age; a bare date includes that day")
    q.add_argument("--model", help="only this model or profile")
    if sub:
        q.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


# ---------------------------------------------------------------- times


def parse_time(text: str, end_of_day: bool = False, now: datetime | None = None) -> str:
    """A user's time (ISO or age like 2h) -> the log's UTC ISO form."""
    now = now or datetime.now(timezone.utc)
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if m:
        t = now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    else:
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                d = date.fromisoformat(text) + timedelta(days=1 if end_of_day else 0)
                t = datetime.combine(d, time()).astimezone()  # local midnight
            else:
                t = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if t.tzinfo is None:
                    t = t.astimezone()  # a naive time is the user's local time
        except ValueError:
            raise _Usage(
                f"cannot read the time {text!r}",
                "Give an ISO date or time (2025-01-31, 2025-01-31T14:00) "
                "or an age: 30m, 2h, 3d, 1w.",
            ) from None
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _local(created: str | None) -> str:
    if not created:
        return "?"
    try:
        t = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- output


def _who(row: dict) -> str:
    return row.get("model") or row.get("profile") or row.get("backend") or "-"


def _tokens(row: dict) -> str:
    p, c = row.get("prompt_tokens"), row.get("completion_tokens")
    if p is None and c is None:
        return "-"
    return f"{p if p is not None else '?'}+{c if c is not None else '?'}"


def _cut(text: str, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _table(rows: list[dict], snippets: bool = False) -> str:
    width = shutil.get_terminal_size((100, 24)).columns
    out = []
    for r in rows:
        head = (f"{r['id']:>6}  {_local(r.get('created'))}  {r.get('status', ''):<9}  "
                f"{_cut(_who(r), 24):<24}  {_tokens(r):>9}  ")
        out.append(head + _cut(r.get("title") or "", max(width - len(head), 20)))
        if snippets and r.get("snippet"):
            out.append(" " * 8 + _cut(r["snippet"], max(width - 8, 20)))
    return "\n".join(out) + ("\n" if out else "")


def _num(v, fmt: str, unit: str) -> str | None:
    return None if v is None else f"{format(v, fmt)}{unit}"


def _show(r: dict) -> str:
    """One exchange for a human: stats, then the masked request, then the reply."""
    lines = [f"exchange {r['id']}  {_local(r.get('created'))}  ({r.get('created')})"]
    status = r.get("status", "")
    if r.get("stop_reason"):
        status += f" (stop: {r['stop_reason']})"
    if r.get("exit_code") is not None:
        status += f", exit {r['exit_code']}"
    lines.append(f"status:   {status}")
    if r.get("error_kind") or r.get("error_message"):
        http = f" HTTP {r['http_status']}" if r.get("http_status") else ""
        lines.append(f"error:    {r.get('error_kind') or '?'}{http}: {r.get('error_message') or ''}")
        if r.get("error_hint"):
            lines.append(f"hint:     {r['error_hint']}")
    profiles = ", ".join(r.get("profiles") or []) or r.get("profile") or "-"
    lines.append(f"model:    {r.get('model') or '-'}   profile: {profiles}   "
                 f"backend: {r.get('backend') or '-'}   mode: {r.get('mode') or '-'}")
    toks = [("prompt", r.get("prompt_tokens")), ("cached", r.get("cached_tokens")),
            ("completion", r.get("completion_tokens"))]
    toks_s = ", ".join(f"{k} {v}" for k, v in toks if v is not None)
    lines.append(f"tokens:   {toks_s or '-'}")
    times = [
        ("first token", _num(r.get("first_token_s"), ".3f", " s")),
        ("total", _num(r.get("elapsed_s"), ".3f", " s")),
        ("prompt eval", _num(r.get("prompt_ms"), ".1f", " ms")),
        ("decode", _num(r.get("predicted_ms"), ".1f", " ms")),
    ]
    lines.append("time:     " + (", ".join(f"{k} {v}" for k, v in times if v) or "-"))
    lines.append(f"source:   {r.get('source') or '-'}   limner {r.get('version') or '?'}   "
                 f"buffer sha256 {(r.get('buffer_sha256') or '-')[:16]}")
    lines += ["", "== request (secrets masked) ==", f"POST {r.get('request_url') or '-'}"]
    for k, v in (r.get("request_headers") or {}).items():
        lines.append(f"{k}: {v}")
    body = r.get("request_body")
    if body is not None:
        lines += ["", json.dumps(body, indent=2, ensure_ascii=False)]
    lines += ["", "== reply ==", r.get("reply") or ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def as_buffer(r: dict) -> str:
    """The exchange as a buffer to re-open: the request text, then the reply.

    A chat reply goes under `!assistant`, as limner writes it; a completion
    continues the prompt text directly.
    """
    buf = r.get("buffer")
    if not buf:  # logged by a caller with no buffer (serve, evals): rebuild one
        parts = []
        for m in (r.get("request_body") or {}).get("messages") or []:
            content = log._content_text(m.get("content"))
            parts.append(content if m.get("role") == "system" else f"!{m.get('role')}\n\n{content}")
        buf = "\n\n".join(parts) or (r.get("request_text") or "")
    reply = r.get("reply") or ""
    if r.get("mode") == "completion":
        return buf + reply + ("" if reply.endswith("\n") else "\n")
    return buf.rstrip("\n") + "\n\n!assistant\n\n" + reply.rstrip("\n") + "\n"


def _error_block(message: str, hint: str = "") -> str:
    return "!error\n\n" + message + "\n" + (hint + "\n" if hint else "")


def _dump(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


# ---------------------------------------------------------------- main


def _run(a: argparse.Namespace) -> int:
    out = sys.stdout
    cmd = a.cmd or "list"
    if cmd == "path":
        out.write(f"{log.db_path()}\n")
        return 0
    if cmd == "redact":
        from limner import log_redact

        changed, total, note = log_redact.rewrite()
        out.write(f"redacted {changed} of {total} exchanges in {log.db_path()}; "
                  f"vacuumed, {note}\n")
        return 0
    if cmd == "show":
        try:
            ident = int(a.id)
        except ValueError:
            raise _Usage(f"{a.id!r} is not an exchange id",
                         "Ids are the numbers in the first column of `limner logs`.") from None
        row = log.get(ident)
        if row is None:
            raise LimnerError(f"no exchange with id {ident} in {log.db_path()}",
                              "`limner logs` lists the recent ones.")
        if a.buffer:
            out.write(as_buffer(row))
        else:
            out.write(_dump(row) if a.json else _show(row))
        return 0
    if cmd == "search":
        rows = log.search(a.query, limit=a.limit)
        out.write(_dump(rows) if a.json else _table(rows, snippets=True))
        if not rows and not a.json:
            sys.stderr.write(f"no exchange matches {a.query!r}\n")
        return 0
    since = parse_time(a.since) if a.since else None
    until = parse_time(a.until, end_of_day=True) if a.until else None
    rows = log.list(limit=a.limit, status=a.status, since=since, until=until, model=a.model)
    out.write(_dump(rows) if a.json else _table(rows))
    if not rows and not a.json and log.count() == 0:
        sys.stderr.write(f"no exchanges logged yet ({log.db_path()})\n")
    return 0


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage problem
        return int(e.code or 0) if e.code in (0, None) else 2
    try:
        return _run(args)
    except LimnerError as e:
        sys.stderr.write(_error_block(e.message, e.hint))
        return e.exit_code
