"""Go's text rules, so Illume's buffers split, trim and decode the same here.

Illume is written in Go; where Go's standard library differs from Python's
(what counts as whitespace, $VAR expansion, which JSON is valid, how
numbers decode), these functions follow Go, because the request must match.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

# unicode.IsSpace: narrower than str.isspace (no \x1c-\x1f).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_GO_FIELDS = re.compile(f"[{_GO_SPACE}]+")


def go_trim_space(s: str) -> str:
    return s.strip(_GO_SPACE)


def go_fields(s: str) -> list[str]:
    return [f for f in _GO_FIELDS.split(s) if f]


_SHELL_SPECIAL = set("*#$@!?-0123456789")
_ENV_NAME = re.compile(r"[A-Za-z0-9_]*")


def go_expand_env(s: str, env: Mapping[str, str]) -> str:
    """os.ExpandEnv: $VAR and ${VAR}; unset is empty; bad ${ syntax is eaten."""
    out, i = [], 0
    while True:
        j = s.find("$", i)
        if j < 0 or j + 1 >= len(s):
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        rest = s[j + 1 :]
        if rest[0] == "{":
            if len(rest) > 2 and rest[1] in _SHELL_SPECIAL and rest[2] == "}":
                name, width = rest[1], 3
            else:
                close = rest.find("}")
                name, width = (rest[1:close], close + 1) if close > 1 else ("", 2 if close == 1 else 1)
        elif rest[0] in _SHELL_SPECIAL:
            name, width = rest[0], 1
        else:
            name = _ENV_NAME.match(rest).group()
            width = len(name)
        if name:
            out.append(env.get(name, ""))
        elif width == 0:
            out.append("$")  # "$" before a non-name stays as it is
        i = j + 1 + width


def env_names(s: str) -> list[str]:
    """The variable names go_expand_env would look up in s."""
    seen: list[str] = []
    go_expand_env(s, _Recorder(seen))
    return seen


class _Recorder(dict):
    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def get(self, key, default=None):  # noqa: D102
        self.seen.append(key)
        return ""


def _go_number(text: str, value: float | int):
    # Go decodes every JSON number as a float64: huge integers lose
    # precision and out-of-range numbers are an error (then Illume sends the
    # raw text as a string).
    f = float(text)
    if f in (float("inf"), float("-inf")):
        raise ValueError("out of range")
    if isinstance(value, int):
        if text == "-0":
            return -0.0
        return value if abs(value) <= 2**53 else f
    return f


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _fix_surrogates(v):
    # Go's decoder turns an unpaired \ud800 escape into U+FFFD.
    if isinstance(v, str):
        return _LONE_SURROGATE.sub("\ufffd", v)
    if isinstance(v, list):
        return [_fix_surrogates(x) for x in v]
    if isinstance(v, dict):
        return {_fix_surrogates(k): _fix_surrogates(x) for k, x in v.items()}
    return v


def go_json(text: str) -> tuple[bool, object]:
    """Decode like Go's json.Unmarshal into interface{}: (ok, value)."""
    try:
        v = json.loads(
            text,
            parse_int=lambda t: _go_number(t, int(t)),
            parse_float=lambda t: _go_number(t, float(t)),
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError):
        return False, None
    return True, _fix_surrogates(v) if "\\u" in text else v


def template_keys(template: str) -> tuple[list[str], bool]:
    """The {key}s in a URL or FIM template, and whether every { is closed."""
    keys, rest = [], template
    while "{" in rest:
        _, _, rest = rest.partition("{")
        key, closed, rest = rest.partition("}")
        if not closed:
            return keys, False
        keys.append(key)
    return keys, True


def interpolate(template: str, values: Mapping[str, object]) -> str:
    """Illume's {key} filling: strings go in raw, other values as JSON."""
    out, rest = [], template
    while True:
        pre, brace, rest = rest.partition("{")
        out.append(pre)
        if not brace:
            return "".join(out)
        key, closed, rest = rest.partition("}")
        if not closed:
            raise KeyError("unmatched '{'")
        if key not in values:
            raise KeyError(f"missing key: {key}")
        v = values[key]
        out.append(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":")))


