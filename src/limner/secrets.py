"""Masking secrets before a request is stored or shown.

The log keeps requests so they can be read and replayed, but an API key in
a log file is a leak waiting to happen. Everything that leaves the process
for storage or display (`!debug` too) goes through these functions:

    mask_value("Bearer sk-abcdef123456")  -> "Bearer sk-a****"
    mask_headers({"Authorization": ...})  -> a new dict, secret values masked
    mask_body({"api_key": ...})           -> a deep copy, secret fields masked
    mask_url("https://h/v1?key=abc12345") -> "https://h/v1?key=abc1****"
    mask_buffer(text)                     -> !>header / !:key / !api lines masked

Names decide what is secret, not values: a header or field is masked when
its name says key/token/secret/password/auth/cookie. Values that are only an
environment reference (`$OPENAI_API_KEY`) are left alone: they hold no secret.
"""
from __future__ import annotations

import re
from typing import Any

MASK = "****"
_KEEP = 4  # characters of a secret kept visible, enough to tell two keys apart
_SHORT = 8  # secrets up to this long are hidden entirely: 4 chars would be half

# Words that mark a name as secret when it is one of a name's parts
# ("x-api-key", "access_token", "apiKey" all split into parts first).
_SECRET_PARTS = {
    "key", "apikey", "token", "secret", "password", "passwd", "pass", "pwd",
    "auth", "authorization", "credential", "credentials", "cookie",
    "session", "sig", "signature", "bearer",
}
# Whole names that are secret though no single part is ("set-cookie" is
# covered by "cookie"; these are the stragglers).
_SECRET_NAMES = {"apikey", "xapikey", "accesskey", "privatekey", "clientsecret"}
# Scheme words kept in clear ahead of the secret ("Bearer", "Basic", ...).
_SCHEMES = {"bearer", "basic", "token", "digest", "apikey", "key"}


def is_secret_name(name: str) -> bool:
    """True when a header, JSON field or query parameter name holds a secret."""
    # Split camelCase, then on anything that is not a letter or digit.
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if p]
    if not parts:
        return False
    if "".join(parts) in _SECRET_NAMES:
        return True
    return any(p in _SECRET_PARTS for p in parts)


def _mask_token(token: str) -> str:
    if not token or token.endswith(MASK) or token.startswith("$"):
        return token  # empty, already masked, or only an environment reference
    if len(token) <= _SHORT:
        return MASK
    return token[:_KEEP] + MASK


def mask_value(value: str) -> str:
    """Mask one secret value, keeping a leading scheme word and 4 characters.

    "Bearer sk-abcdef123456" -> "Bearer sk-a****"; "sk-abcdef123456" -> "sk-a****".
    Short secrets (8 characters or fewer) become "****". Masking twice is harmless.
    """
    if not isinstance(value, str):
        return value
    lead = len(value) - len(value.lstrip())
    head, body = value[:lead], value[lead:]
    word, sep, rest = body.partition(" ")
    if sep and word.lower() in _SCHEMES and rest.strip():
        return f"{head}{word} {_mask_token(rest.strip())}"
    return head + _mask_token(body.strip())


def mask_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of headers with every secret-named header's value masked."""
    if not headers:
        return {}
    return {
        k: mask_value(v) if is_secret_name(str(k)) and isinstance(v, str) else v
        for k, v in headers.items()
    }


def mask_body(obj: Any) -> Any:
    """A deep copy of a JSON-like value with secret-named string fields masked.

    Message content is never touched: only values under secret-looking keys.
    dict subclasses keep their type (the backends' key-ordered `Ordered`).
    """
    if isinstance(obj, dict):
        out = {
            k: mask_value(v) if isinstance(v, str) and is_secret_name(str(k)) else mask_body(v)
            for k, v in obj.items()
        }
        return out if type(obj) is dict else type(obj)(out)
    if isinstance(obj, list):
        return [mask_body(v) for v in obj]
    return obj


_QUERY_PARAM = re.compile(r"([?&;])([^=&;#]+)=([^&;#]*)")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@:]*):([^/@]*)@")


def mask_url(url: str | None) -> str | None:
    """The URL with secret query parameters (?key=, &token=) and a password masked.

    Works on the text as written, so nothing else in the URL is re-encoded.
    """
    if not url:
        return url

    def param(m: re.Match) -> str:
        sep, name, value = m.groups()
        if is_secret_name(name) and value:
            return f"{sep}{name}={_mask_token(value)}"
        return m.group(0)

    url = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", url)
    return _QUERY_PARAM.sub(param, url)


_HEADER_LINE = re.compile(r"^(!>)(\S+)([ \t]+)(.*)$")
_DATA_LINE = re.compile(r"^(!:)(\S+)([ \t]+)(.*)$")
_API_LINE = re.compile(r"^(!api)([ \t]+)(.*)$")


def mask_buffer(text: str | None) -> str | None:
    """A buffer with literal secrets in its directive lines masked.

    `!>Authorization Bearer sk-...`, `!:api_key sk-...` and `!api https://...?key=...`
    are the places a buffer writes a secret; message text is left as written.
    """
    if not text:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.startswith("!"):
            continue
        m = _HEADER_LINE.match(line) or _DATA_LINE.match(line)
        if m and is_secret_name(m.group(2)):
            value = m.group(4)
            # A JSON-quoted value keeps its quotes around the masked text.
            if len(value) >= 2 and value[0] == value[-1] == '"':
                masked = '"' + mask_value(value[1:-1]) + '"'
            else:
                masked = mask_value(value)
            lines[i] = m.group(1) + m.group(2) + m.group(3) + masked
            continue
        m = _API_LINE.match(line)
        if m:
            lines[i] = m.group(1) + m.group(2) + (mask_url(m.group(3)) or "")
    return "\n".join(lines)
