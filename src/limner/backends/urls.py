"""Is the final `!api` URL one an HTTP client can send to?

Checked where the URL is built (base.split_api), so a bad one is a
BufferError at its `!api` line, from `limner`, `!debug` and `limner check`
alike, instead of an exception from httpx in the middle of sending. The rules
are the ones httpx (and Go's net/url, for Illume) enforce: an http(s)
scheme, a host, a numeric port, no control characters, a valid IDNA name.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from limner.errors import BufferError

_IPV4_LIKE = re.compile(r"[0-9.]+")


def check(url: str, line: int = 0) -> None:
    """Raise BufferError (at `line`, the !api line) if url cannot be sent to."""
    problem = _problem(url)
    if problem:
        raise BufferError(
            f"!api: {problem}: {url!r}",
            "Write the server's base URL, e.g. !api http://localhost:8080/v1 "
            "(the embedded engine is !api embedded:// without a !backend).",
            line=line,
        )


def _problem(url: str) -> str:
    if len(url) > 65536:
        return "the URL is longer than 65536 characters"
    for ch in url:
        if ch.isascii() and not ch.isprintable():  # \0-\x1f and \x7f; httpx refuses them
            return f"the URL holds a control character (U+{ord(ch):04X})"
        if "\ud800" <= ch <= "\udfff":  # a lone surrogate: no bytes to send
            return "the URL holds a lone surrogate, which is not text"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as e:
        return f"not a valid URL ({e})"
    if parts.scheme.lower() not in ("http", "https"):
        return "the URL must start with http:// or https://"
    host = parts.hostname or ""
    if not host:
        return "the URL names no host"
    if any(ch.isspace() for ch in host):
        return "the host name holds a space"
    if _IPV4_LIKE.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not a valid IPv4 address"
    elif (not host.isascii() or "xn--" in host) and not _idna_ok(host):
        return f"{host} is not a valid international domain name"
    return ""


def _idna_ok(host: str) -> bool:
    # httpx encodes a non-ASCII host, and decodes an "xn--" one, with the idna
    # package (IDNA 2008); httpx depends on it, so without it nothing is sent.
    try:
        import idna
    except ImportError:
        return True
    try:
        idna.decode(host) if host.isascii() else idna.encode(host)
    except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
        return False
    return True
