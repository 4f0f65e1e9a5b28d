"""What to do with findings: by destination, mode and the buffer's allow list.

    decide(findings, destination_is_local, mode, allow) -> Decision

| destination | mode   | high confidence | medium (generic) |
|-------------|--------|-----------------|------------------|
| local       | any    | send            | send             |
| remote      | block  | BLOCK           | redact           |
| remote      | redact | redact          | redact           |
| remote      | warn   | send, warn      | send, warn       |
| any         | off    | send            | send             |

`allow` holds rule ids and fingerprints (`!allow-secrets`): an allowed
finding is sent as written, in every mode. Local means the embedded engine,
a Unix socket, loopback (127.0.0.0/8, ::1, localhost) or a host the user
listed as trusted; a LAN address is remote, since "private" networks are
often shared ones.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import urlsplit

from .scan import Finding

MODES = ("block", "redact", "warn", "off")
DEFAULT_MODE = "block"

# Schemes that never leave the process or the machine.
_LOCAL_SCHEMES = {"embedded", "unix", "http+unix", "https+unix", "file"}


@dataclass
class Decision:
    action: str  # send | redact | block
    blocking: list[Finding] = field(default_factory=list)  # why action == block
    redact: list[Finding] = field(default_factory=list)  # replace before sending
    warn: list[Finding] = field(default_factory=list)  # sent as is, reported
    allowed: list[Finding] = field(default_factory=list)  # matched !allow-secrets

    @property
    def sends(self) -> bool:
        return self.action != "block"


def decide(findings: Iterable[Finding], destination_is_local: bool,
           mode: str = DEFAULT_MODE, allow: Iterable[str] = ()) -> Decision:
    """The action for one request's findings (see the table above)."""
    if mode not in MODES:
        raise ValueError(f"secrets mode {mode!r}: one of {', '.join(MODES)}")
    allow_set = {a.strip().lower() for a in allow if a and a.strip()}
    d = Decision("send")
    live = []
    for f in findings:
        (d.allowed if f.rule in allow_set or f.fingerprint in allow_set else live).append(f)
    if mode == "off" or destination_is_local or not live:
        return d
    if mode == "warn":
        d.warn = live
        return d
    if mode == "redact":
        d.redact, d.action = live, "redact"
        return d
    d.blocking = [f for f in live if f.confidence == "high"]
    d.redact = [f for f in live if f.confidence != "high"]
    d.action = "block" if d.blocking else "redact" if d.redact else "send"
    return d


def describe(f: Finding, source: str | None = None) -> str:
    """One line for an !error or !note: rule, where, and how to allow it.

    `source` names where the text came from ("buffer", "src/app.py");
    the line is the finding's line within that text. Never the secret.
    """
    where = f"{source}:{f.line}" if source else f"line {f.line}"
    return (f"{f.rule} ({f.family}) at {where}; if it is meant to be sent: "
            f"!allow-secrets {f.fingerprint}  (or the whole rule: !allow-secrets {f.rule})")


def _host(url: str) -> str | None:
    if "://" not in url:
        url = "//" + url  # "localhost:8080" or "10.0.0.5" written without a scheme
    try:
        parts = urlsplit(url)
        return parts.hostname  # lowercased, brackets of [::1] removed
    except ValueError:
        return None


def is_local(url: str | None, trusted: Iterable[str] = ()) -> bool:
    """True when a request to `url` stays on this machine (or a trusted host).

    Anything unparseable is remote: the guard fails closed.
    """
    if not url:
        return False
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _LOCAL_SCHEMES:
        return True
    host = _host(url)
    if not host:
        return False
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        ip = None  # a name: only localhost or a trusted entry makes it local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip is not None and ip.is_loopback:
        return True
    return _trusted(host, ip, trusted)


def _trusted(host: str, ip, trusted: Iterable[str]) -> bool:
    """Entries are host names, addresses or networks ("gpu-box", "10.0.0.0/24")."""
    for t in trusted:
        t = (t or "").strip().lower().rstrip(".")
        if not t:
            continue
        if t == host:
            return True
        if ip is not None and "/" in t:
            try:
                if ip in ipaddress.ip_network(t, strict=False):
                    return True
            except ValueError:
                pass
    return False
