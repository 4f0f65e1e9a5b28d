"""The egress check: what the guard does to a request before it leaves.

    body, report = check(req, url, body)       # raises Blocked; nothing was sent
    client = httpx.Client(event_hooks={"request": [hop_hook(req, url, body, report)]})

backends/base.py calls check() on every attempt, on the fully built body (the
system prompt, every turn, !context and retrieved text, FIM prefix/suffix,
input_extra: every string in it), and hop_hook() re-checks each hop a
redirect leads to. A local destination (the engine, a Unix socket, loopback,
a host in config.toml's [guard] trusted_hosts) gets the body unchanged and no
scan; a remote one gets guard.decide()'s action for the buffer's `!secrets`
mode and `!allow-secrets` list. Without google-re2 a remote send is refused:
the guard is never silently missing.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .policy import DEFAULT_MODE, decide, describe, is_local

ALLOW_HINT = ("Remove the secret, or send it anyway with the !allow-secrets line shown; "
              "`!secrets redact` sends placeholders instead. A host you trust goes in "
              "{config} as [guard] trusted_hosts = [\"HOST\"].")


class Blocked(Exception):
    """The guard refused to send. message/hint/line as for a BufferError."""

    def __init__(self, message: str, hint: str = "", line: int = 0):
        super().__init__(message)
        self.message, self.hint, self.line = message, hint, line

    def failure(self):
        from limner.events import Failure

        return Failure("secret", self.message, self.hint, line=self.line)


@dataclass
class Report:
    """What the guard did to one request: for the log (no values) and `limner check`."""

    mode: str
    url: str
    local: bool
    action: str = "send"  # send | redact | block (| warn: sent, reported)
    # (rule, family, what happened, source, buffer line, fingerprint); never a value
    findings: list[tuple[str, str, str, str, int, str]] = field(default_factory=list)

    def for_log(self, allow: list[str]) -> dict[str, Any]:
        return {"mode": self.mode, "destination": "local" if self.local else "remote",
                "action": self.action, "allow": list(allow),
                "findings": [{"rule": r, "family": fam, "action": act}
                             for r, fam, act, *_ in self.findings]}


def mode_of(req) -> str:
    return getattr(req, "secrets", None) or DEFAULT_MODE


def destination_is_local(url: str) -> bool:
    """is_local() with config.toml's trusted_hosts, unless remote_hosts lists it."""
    from .config import ConfigError, config_path, hosts

    try:
        trusted, remote = hosts()
    except ConfigError as e:
        raise Blocked(e.message, e.hint or f"Fix or remove {config_path()}.") from None
    if not is_local(url, trusted):
        return False
    if remote:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url if "://" in url else "//" + url)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            return False
        if any(r.strip().lower() in (host, f"{host}:{port}") for r in remote):
            return False
        if _in_network(host, remote):
            return False
    return True


def _in_network(host: str, nets) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    for n in nets:
        try:
            if "/" in n and ip in ipaddress.ip_network(n.strip(), strict=False):
                return True
        except ValueError:
            pass
    return False


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _map(obj: Any, fn: Callable[[str], str]) -> Any:
    """obj with fn applied to every string; dict types (the Go encoder's Ordered) kept."""
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map(v, fn)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return [_map(v, fn) for v in obj]
    return obj


def _scan(text: str):
    from .rules import RuleError
    from .scan import scan

    try:
        return scan(text)
    except (RuleError, ImportError) as e:
        raise Blocked(
            f"the secret guard cannot run ({e}), so nothing is sent to a remote host",
            "Install it: pip install 'limner[guard]' (or run scripts/setup). "
            "`!secrets off` sends without the guard.") from None


def source_of(req, f) -> tuple[str, int]:
    """(where the finding's text came from, the buffer line to blame).

    A !context file first (path and line in the file), then the buffer;
    a value in neither came from !outline/!retrieve, a profile or a !: value.
    """
    for cf in getattr(req, "context_files", None) or []:
        i = cf.text.find(f.secret)
        if i >= 0:
            return f"{cf.name}:{cf.text.count(chr(10), 0, i) + 1}", cf.line
    text = getattr(req, "text", "") or ""
    i = text.find(f.secret)
    if i >= 0:
        line = text.count("\n", 0, i) + 1
        return f"buffer:{line}", line
    return "the request (retrieved context, a profile or a !: value)", 0


def _line(f, source: str) -> str:
    """describe() with our source: a Finding's own line is only within one string."""
    where, _, n = source.rpartition(":")
    if where and n.isdigit():
        return describe(dataclasses.replace(f, line=int(n)), where)
    return describe(f).replace(f" at line {f.line}", f" in {source}")


def assess(req, url: str, body: Any):
    """(Decision or None, findings by string, Report): no side effects, nothing raised
    but Blocked for a missing guard or a bad config. None: nothing to decide (local/off)."""
    mode = mode_of(req)
    if mode == "off":  # no config read either: `off` must send even past a broken file
        return None, [], Report(mode, url, url.startswith("embedded:") or is_local(url))
    report = Report(mode, url, url.startswith("embedded:") or destination_is_local(url))
    if report.local:
        return None, [], report
    per_string = _with_context(req, [(s, _scan(s)) for s in _strings(body)])
    findings = [f for _, fs in per_string for f in fs]
    d = decide(findings, False, mode, getattr(req, "allow_secrets", ()))
    report.action = "warn" if d.warn and d.action == "send" else d.action
    seen = set()
    for group, what in ((d.blocking, "block"), (d.redact, "redact"), (d.warn, "warn"),
                        (d.allowed, "allowed")):
        for f in group:
            if (f.fingerprint, what) not in seen:  # one line per value, not per copy
                seen.add((f.fingerprint, what))
                src, line = source_of(req, f)
                report.findings.append((f.rule, f.family, what, src, line, f.fingerprint))
    return d, per_string, report


def _with_context(req, per_string: list) -> list:
    """per_string plus what only the whole buffer shows.

    A body string can hold a fragment whose rule needs context it lost: a
    FIM prefix that ends inside a .netrc entry, a turn that starts mid-way.
    Each secret found in the buffer text is also a finding wherever its
    value appears in a body string.
    """
    text = getattr(req, "text", "") or ""
    known = {f.secret for _, fs in per_string for f in fs}
    more = [f for f in _scan(text) if f.secret not in known] if text else []
    if not more:
        return per_string
    out = []
    for s, fs in per_string:
        fs = list(fs)
        for f in more:
            i = s.find(f.secret)
            while i >= 0:
                end = i + len(f.secret)
                if all(end <= g.start or i >= g.end for g in fs):
                    fs.append(dataclasses.replace(f, start=i, end=end))
                i = s.find(f.secret, end)
        out.append((s, sorted(fs, key=lambda g: g.start)))
    return out


def check(req, url: str, body: Any) -> tuple[Any, Report]:
    """The body to send to url (maybe redacted), and what was done. Raises Blocked."""
    d, per_string, report = assess(req, url, body)
    if d is None or d.action == "send" and not d.warn:
        return body, report
    if d.action == "block":
        once = {f.fingerprint: f for f in reversed(d.blocking)}.values()
        lines = [_line(f, source_of(req, f)[0]) for f in sorted(once, key=lambda f: f.start)]
        first = next((ln for _, _, act, _, ln, _ in report.findings if act == "block" and ln), 0)
        raise Blocked(
            f"not sent: the request holds {len(lines)} secret(s) and {url} is a remote host\n"
            + "\n".join(lines),
            ALLOW_HINT.format(config=_config_name()), first)
    if d.warn:
        for f in d.warn:
            sys.stderr.write(f"limner: sending a secret (!secrets warn): "
                             f"{_line(f, source_of(req, f)[0])}\n")
        return body, report
    from .scan import Redactor

    redactor, todo = Redactor(), {id(f) for f in d.redact}
    spans = {s: [f for f in fs if id(f) in todo] for s, fs in per_string if fs}
    return _map(body, lambda s: redactor.redact(s, spans[s]) if spans.get(s) else s), report


def _config_name() -> str:
    from .config import config_path

    return str(config_path()).replace(str(__import__("pathlib").Path.home()), "~", 1)


def hop_hook(req, first_url: str, body: Any, report: Report) -> Callable:
    """An httpx request hook: every hop after the first is checked again.

    A body prepared for a remote host already suits any host. One prepared
    for a local host that a redirect sends to a remote one is refused when
    the guard would change it: it cannot be rewritten mid-redirect.
    """
    def on_request(request) -> None:
        url = str(request.url)
        if url == first_url or not report.local or report.mode == "off":
            return
        d, _, hop = assess(req, url, body)
        if d is not None and (d.action != "send" or d.warn):
            rules = ", ".join(sorted({r for r, _, act, *_ in hop.findings if act != "allowed"}))
            raise Blocked(
                f"not sent: {first_url} redirected to {url}, a remote host, and the request "
                f"holds secrets ({rules})",
                "Point !api at the final URL, so the guard can redact or block up front. "
                + ALLOW_HINT.format(config=_config_name()))
    return on_request
