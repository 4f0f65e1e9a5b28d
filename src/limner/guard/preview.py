"""`limner check`'s view of the guard: what it would do to this buffer, unsent.

    preview(req) -> [(line, severity, message, hint)]

The same body and destination the transport would check (backends.open, then
describe()), the same decision (egress.assess). A finding that blocks is an
error (sending would fail); redact and warn are warnings; a local
destination or an allowed secret is a note. Nothing found: nothing said.
"""
from __future__ import annotations

from .egress import Blocked, _strings, assess, source_of

_SEVERITY = {"block": "error", "redact": "warning", "warn": "warning", "allowed": "note",
             "send": "note"}
_WHAT = {"block": "blocks the request", "redact": "would be redacted",
         "warn": "would be sent (!secrets warn)", "allowed": "allowed (!allow-secrets)",
         "send": "sent unchanged"}


def preview(req) -> list[tuple[int, str, str, str]]:
    from limner.errors import LimnerError

    try:
        from limner import backends

        adapter = backends.open(req)
        call = adapter.describe()
    except LimnerError:
        return []  # the buffer's own errors are reported already
    url = "embedded://" if getattr(adapter, "name", "") == "embedded" else call.url
    try:
        d, _, report = assess(req, url, call.body)
    except Blocked as e:
        return [(0, "error", f"guard: {e.message}", e.hint)]
    out = []
    if d is None:  # local or `!secrets off`: sent as written; say what is in it
        why = "`!secrets off`" if report.mode == "off" else f"{url} is local"
        try:
            from .scan import scan

            seen = [f for _, fs in ((s, scan(s)) for s in _strings(call.body)) for f in fs]
        except Exception:  # noqa: BLE001 - no re2: nothing to show for a local send
            seen = []
        for f in seen:
            src, line = source_of(req, f)
            out.append((line, "note", f"guard: {f.rule} ({f.family}) in {src}: sent "
                        f"unchanged ({why})", ""))
        return out
    for rule, family, action, src, line, fp in report.findings:
        hint = (f"If it is meant to be sent: !allow-secrets {fp} (or the whole rule: "
                f"!allow-secrets {rule})" if action == "block" else "")
        out.append((line, _SEVERITY[action],
                    f"guard: {rule} ({family}) in {src} {_WHAT[action]}: {url} is remote", hint))
    return out
