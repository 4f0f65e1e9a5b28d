"""What every HTTP adapter shares: the body encoding, the URL, the stream loop.

An adapter subclass says three things: the HTTP call it makes (`describe`),
what one streamed JSON object means (`on_chunk`), and what a whole,
non-streamed JSON answer means (`on_whole`). Everything else lives here:
sending exactly Illume's bytes, reading server-sent events with strict
UTF-8, and turning every way a request can fail into a Failure event with a
message and a hint (see errormap.py).
"""
from __future__ import annotations

import codecs
import itertools
import json
import os
import re
import sys
from decimal import Decimal
from typing import Any, Iterator

from limner.errors import BufferError
from limner.events import Event, Failure, Stopped, Text, Usage
from limner.request import INVALID_URL, HttpCall, Request, parse_seconds

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0
ERROR_BODY_LIMIT = 64 * 1024  # enough for any error message; a runaway body is cut


# ---------------------------------------------------------------- Go's JSON


class Ordered(dict):
    """A JSON object whose keys keep their order, like a Go struct.

    Go encodes maps with sorted keys but structs in field order; Illume's
    messages are structs ({"role", "content"}), everything else is a map.
    """


# Go's encoder escapes these besides '"' and '\\': control characters and the
# two JavaScript line separators (SetEscapeHTML(false) leaves <, >, & alone).
_GO_ESCAPE = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029]')
_GO_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\b": "\\b", "\f": "\\f"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def _go_string(s: str) -> str:
    # Go replaces invalid UTF-8 (here: a lone surrogate) with U+FFFD.
    s = _SURROGATE.sub("\ufffd", s)
    return '"' + _GO_ESCAPE.sub(
        lambda m: _GO_SHORT.get(m.group(), "\\u%04x" % ord(m.group())), s
    ) + '"'


def _go_float(f: float) -> str:
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError(f"JSON cannot hold {f!r}")
    a = abs(f)
    if a == 0 or 1e-6 <= a < 1e21:
        # Shortest round-trip digits, written out without an exponent;
        # normalize() drops the ".0" Go never prints.
        return format(Decimal(repr(f)).normalize(), "f")
    text = repr(f)  # "1e-07", "1.5e+22": the same digits Go picks
    return re.sub(r"e-0(\d)$", r"e-\1", text)  # Go writes "1e-7", not "1e-07"


def _go_value(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(_go_string(v))
    elif isinstance(v, int):
        # A number from parsed JSON is a float64 in Go; past 2**53 it shows.
        out.append(str(v) if abs(v) < 2**53 else _go_float(float(v)))
    elif isinstance(v, float):
        out.append(_go_float(v))
    elif isinstance(v, dict):
        keys = list(v) if isinstance(v, Ordered) else sorted(v)
        out.append("{")
        for i, k in enumerate(keys):
            if i:
                out.append(",")
            out.append(_go_string(str(k)))
            out.append(":")
            _go_value(v[k], out)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _go_value(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def encode_go_json(obj: Any) -> bytes:
    """The bytes Go's json.Encoder (SetEscapeHTML(false)) writes for obj.

    Sorted map keys, compact, non-ASCII raw, integral floats without ".0",
    exponents only below 1e-6 or from 1e21, and the trailing newline.
    """
    out: list[str] = []
    _go_value(obj, out)
    out.append("\n")
    return "".join(out).encode("utf-8")


def go_json_text(obj: Any) -> str:
    """encode_go_json without the newline, as text (for URL interpolation)."""
    return encode_go_json(obj).decode("utf-8")[:-1]


# ---------------------------------------------------------------- the URL


def interpolate_api(req: Request) -> str:
    """!api with every {key} replaced from the !: data, as Illume does.

    Strings go in raw, anything else JSON-encoded. A '{' without its '}' or a
    key no !: line sets is a mistake in the buffer, reported at the !api line.
    """
    template, out, rest = req.api, [], req.api
    while True:
        before, brace, rest = rest.partition("{")
        out.append(before)
        if not brace:
            break
        key, close, rest = rest.partition("}")
        if not close:
            raise BufferError(
                f"!api: a '{{' without its '}}' in {template}",
                "Close the brace around the key name, or remove the '{'.",
                line=req.api_line,
            )
        if key not in req.data:
            raise BufferError(
                f"!api: the URL needs {{{key}}} but nothing sets it",
                f"Add `!:{key} VALUE` to the buffer, or take {{{key}}} out of !api.",
                line=req.api_line,
            )
        value = req.data[key]
        out.append(value if isinstance(value, str) else go_json_text(value))
    return "".join(out)


def split_api(req: Request) -> tuple[str, bool]:
    """(URL, literal): the interpolated !api, unquoted; literal when it was quoted."""
    api = interpolate_api(req)
    literal = len(api) > 2 and api[0] == '"' and api[-1] == '"'
    if literal:
        api = api[1:-1]
    if api == INVALID_URL:
        raise BufferError(
            "no server to send to: the buffer sets no !api URL",
            "Add `!api http://HOST:PORT/v1` (an OpenAI-compatible server) or "
            "`!profile NAME` (e.g. llama.cpp, openai, claude).",
            line=req.api_line,
        )
    from limner.backends import urls

    urls.check(api, req.api_line)  # what httpx would refuse mid-send: an error at !api's line
    return api, literal


def endpoint_url(req: Request, endpoint: str) -> str:
    """Illume's rule: a quoted URL is used as written, else "/" + endpoint is added."""
    api, literal = split_api(req)
    if literal:
        return api
    if not api.endswith("/"):
        api += "/"
    return api + endpoint


def _env_seconds(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    value = parse_seconds(raw)
    if value is None:
        raise BufferError(f"${name} must be a number of seconds greater than 0, not {raw!r}",
                          f"Fix it (e.g. {name}=60) or unset it.")
    return value


def timeouts(req: Request | None = None) -> tuple[float, float, str]:
    """(connect, read, where the read timeout came from).

    The read timeout covers the wait for the first byte and each wait between
    chunks: `!timeout` > `--timeout` > $LIMNER_TIMEOUT > 300 s. Connecting
    keeps its own short limit. A bad variable is a BufferError (exit 2).
    """
    connect = _env_seconds("LIMNER_CONNECT_TIMEOUT") or CONNECT_TIMEOUT_S
    if req is not None and req.timeout is not None:
        return connect, req.timeout, req.timeout_from or "!timeout"
    for name in ("LIMNER_TIMEOUT", "LIMNER_READ_TIMEOUT"):  # the second: its old name
        value = _env_seconds(name)
        if value is not None:
            return connect, value, f"${name}"
    return connect, READ_TIMEOUT_S, "the default"


def load_httpx():
    """httpx, imported without its command-line tool.

    httpx's __init__ imports httpx._main (rich, click, pygments) whenever
    those happen to be installed: about 0.25 s on every `limner` start. A
    None in sys.modules makes that optional import fail at once, exactly as
    when they are absent; httpx then goes without its CLI, which we never use.
    """
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)
    import httpx

    return httpx


# ---------------------------------------------------------------- usage


def _num(v: Any) -> Any:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def merge_usage(usage: Usage | None, obj: dict) -> Usage | None:
    """Fold a chunk's `usage` (OpenAI, Anthropic) and `timings` (llama.cpp) in."""
    u, t = obj.get("usage"), obj.get("timings")
    if not isinstance(u, dict) and not isinstance(t, dict):
        return usage
    usage = usage or Usage()
    if isinstance(u, dict):
        for field, names in (
            ("prompt_tokens", ("prompt_tokens", "input_tokens")),
            ("completion_tokens", ("completion_tokens", "output_tokens")),
        ):
            for name in names:
                if _num(u.get(name)) is not None:
                    setattr(usage, field, int(u[name]))
        details = u.get("prompt_tokens_details")
        cached = _num(details.get("cached_tokens")) if isinstance(details, dict) else None
        cached = cached if cached is not None else _num(u.get("cache_read_input_tokens"))
        if cached is not None:
            usage.cached_tokens = int(cached)
    if isinstance(t, dict):
        for field, name in (("prompt_tokens", "prompt_n"), ("completion_tokens", "predicted_n"),
                            ("prompt_ms", "prompt_ms"), ("predicted_ms", "predicted_ms"),
                            ("cached_tokens", "cache_n")):
            if _num(t.get(name)) is not None:
                setattr(usage, field, t[name])
    return usage


def clean_text(s: Any) -> str:
    """Text from parsed JSON, safe to write: lone surrogates become U+FFFD."""
    if not isinstance(s, str):
        return ""
    return _SURROGATE.sub("\ufffd", s) if _SURROGATE.search(s) else s


# ---------------------------------------------------------------- the adapter


class HttpAdapter:
    """One streamed HTTP request. Subclasses fill in the protocol."""

    name = "http"

    def __init__(self, req: Request):
        self.req = req
        self.url = self.build_url()  # raises BufferError before anything is sent
        self.connect_s, self.read_s, self.read_from = timeouts(req)  # so does a bad timeout
        self._client = None
        self._response = None
        self._closed = False
        self.guard = None  # the secret guard's Report once sending began (for the log)
        # Filled in by on_chunk / on_whole as the answer arrives:
        self.usage: Usage | None = None
        self.finish: str | None = None  # a stop reason: the stream ended properly
        self.done = False  # the protocol's end marker ([DONE], message_stop) seen

    # -- what subclasses provide

    def build_url(self) -> str:
        raise NotImplementedError

    def body(self) -> dict:
        raise NotImplementedError

    def on_chunk(self, obj: Any) -> Iterator[Event]:
        """One streamed JSON object -> Text (or Failure) events; set finish/usage."""
        raise NotImplementedError

    def on_whole(self, obj: Any) -> Iterator[Event]:
        """A non-streamed JSON answer -> Text events; set finish/usage."""
        raise NotImplementedError

    def on_event_name(self, name: str) -> None:
        """An SSE `event:` line (Anthropic names its events); most ignore it."""

    # -- the contract

    def describe(self) -> HttpCall:
        return HttpCall(url=self.url, headers=dict(self.req.headers), body=self.body())

    def close(self) -> None:
        """Abort the request now (Ctrl-C, or the FIM stop has seen enough)."""
        self._closed = True
        for thing in (self._response, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a broken socket may fail
                    pass

    def stream(self) -> Iterator[Event]:
        from limner.backends import errormap

        from limner.guard.egress import Blocked

        try:
            yield from self._stream()
        except Blocked as e:  # the secret guard: nothing was sent (or re-sent)
            yield e.failure()
        except Exception as e:  # noqa: BLE001 - every failure becomes an event
            if not self._closed:
                yield errormap.from_exception(e, self)
        finally:
            self.close()

    # -- the loop

    def _stream(self) -> Iterator[Event]:
        from limner.backends import errormap

        from limner.guard import egress

        httpx = load_httpx()
        call = self.describe()
        # The one egress check, on each attempt: the assembled body as it will
        # leave, and (the hook) every hop a redirect leads to.
        body, self.guard = egress.check(self.req, call.url, call.body)
        payload = encode_go_json(body)
        # Loading the CA bundle costs 50-90 ms per client; plain http:// needs
        # none. Redirects are then not followed: one could lead to https
        # without verification (a 3xx becomes an !error naming the target).
        plain = call.url.lower().startswith("http://")
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.read_s, connect=self.connect_s),
            verify=not plain, follow_redirects=not plain,
            event_hooks={"request": [egress.hop_hook(self.req, call.url, call.body, self.guard)]},
        )
        request = self._client.build_request(
            call.method, call.url, content=payload, headers=call.headers
        )
        self._response = resp = self._client.send(request, stream=True)
        if not 200 <= resp.status_code < 300:
            raw = b""
            for piece in resp.iter_bytes():
                raw += piece
                if len(raw) >= ERROR_BODY_LIMIT:
                    break
            yield errormap.from_status(resp.status_code, raw, self, resp.headers.get("location"))
            return
        ctype = resp.headers.get("content-type", "").lower()
        chunks = resp.iter_bytes()
        if "event-stream" not in ctype:
            # Not announced as SSE: sniff. JSON arrives whole; "data:" lines
            # mean a server that streams under the wrong content type.
            head = b""
            for piece in chunks:
                head += piece
                if head.strip():
                    break
            if not head.lstrip().startswith((b"data:", b":", b"event:")):
                yield from self._whole(head, chunks)
                return
            chunks = _prepend(head, chunks)
        yield from self._sse(chunks)

    def _whole(self, head: bytes, rest: Iterator[bytes]) -> Iterator[Event]:
        from limner.backends import errormap

        raw = head + b"".join(rest)
        if not raw.strip():
            yield errormap.empty_stream(self)
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield errormap.bad_utf8(e.start, self, streamed=False)
            return
        try:
            obj = json.loads(text)
        except ValueError:
            yield errormap.not_json(text, self)
            return
        if isinstance(obj, dict) and (obj.get("error") or obj.get("type") == "error"):
            yield errormap.from_error_object(obj, None, self)
            return
        self.usage = merge_usage(self.usage, obj) if isinstance(obj, dict) else self.usage
        events = list(self.on_whole(obj))
        yield from events
        if any(isinstance(e, Failure) for e in events):
            return
        if self.usage:
            yield self.usage
        yield Stopped(self.finish or "stop")

    def _sse(self, chunks: Iterator[bytes]) -> Iterator[Event]:
        from limner.backends import errormap

        pending, data_lines, seen, done_marker = "", [], 0, False
        bad_at: list[int] = []  # where invalid UTF-8 began, once it has
        for text in _utf8_text(chunks, bad_at):
            pending += text
            *lines, pending = pending.split("\n")
            for line in lines:
                line = line.rstrip("\r")
                if line.startswith("data:"):
                    payload = line[5:].removeprefix(" ")
                    if payload == "[DONE]":
                        done_marker = True
                        break
                    data_lines.append(payload)
                    joined = "\n".join(data_lines)
                    try:
                        obj = json.loads(joined)
                    except ValueError:
                        continue  # maybe a multi-line event: wait for its blank line
                    data_lines = []
                    seen += 1
                    failed = False
                    for event in self._chunk_events(obj):
                        failed = failed or isinstance(event, Failure)
                        yield event
                    if failed:
                        return
                elif line.startswith("event:"):
                    self.on_event_name(line[6:].strip())
                elif not line and data_lines:
                    yield errormap.malformed("\n".join(data_lines), self)
                    return
            if done_marker or self.done:
                break
        if bad_at:  # the events before the bad bytes are out; the rest is lost
            yield errormap.bad_utf8(bad_at[0], self, streamed=seen > 0)
            return
        if data_lines:
            yield errormap.malformed("\n".join(data_lines), self)
            return
        if self.usage:
            yield self.usage
        if self.finish or done_marker or self.done:
            yield Stopped(self.finish or "stop")
        elif seen == 0:
            yield errormap.empty_stream(self)
        else:
            yield errormap.cut_short(self)

    def _chunk_events(self, obj: Any) -> Iterator[Event]:
        from limner.backends import errormap

        if isinstance(obj, dict):
            if obj.get("error") or obj.get("type") == "error":
                # llama.cpp and Anthropic report errors inside a 200 stream.
                yield errormap.from_error_object(obj, None, self)
                return
            self.usage = merge_usage(self.usage, obj)
        yield from self.on_chunk(obj)


def _utf8_text(chunks: Iterator[bytes], bad_at: list[int]) -> Iterator[str]:
    """The stream decoded as it arrives, strictly. At the first invalid byte it
    yields the valid text before it (one read often holds several events, and
    they are kept), records the byte's offset in bad_at, and stops."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0  # bytes fed to the decoder so far
    for piece in itertools.chain(chunks, [None]):  # None: the end, flush the decoder
        piece, final = piece or b"", piece is None
        try:
            yield decoder.decode(piece, final=final)
        except UnicodeDecodeError as e:
            # e.object is the bytes the decoder held back, then this piece.
            yield e.object[: e.start].decode("utf-8")
            bad_at.append(consumed + len(piece) - len(e.object) + e.start)
            return
        consumed += len(piece)


def _prepend(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


def text_event(s: Any) -> Iterator[Text]:
    """A Text event for a non-empty string, cleaned; nothing otherwise."""
    s = clean_text(s)
    if s:
        yield Text(s)
