"""Every way an HTTP request can fail, as a Failure that says what to do.

The user reads these as `!error` blocks in their buffer, so each message
names what happened (with the server's own words when it gave any) and each
hint names the next step. Kinds are stable slugs the log can group by.
"""
from __future__ import annotations

import json
import re
import socket
import ssl
from typing import Any

from limner.events import Failure

_SNIPPET = 300


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"


def _causes(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def from_exception(e: Exception, adapter: Any) -> Failure:
    """A Python/httpx exception raised while sending or reading -> a Failure."""
    from limner.backends.base import load_httpx

    httpx = load_httpx()
    url, line = adapter.url, adapter.req.api_line
    connect_s = adapter.connect_s
    chain = list(_causes(e))
    if isinstance(e, httpx.ConnectError):
        if any(isinstance(c, socket.gaierror) for c in chain) or re.search(
            r"name or service not known|nodename nor servname|name resolution|"
            r"no address associated", str(e), re.I):
            host = httpx.URL(url).host
            return Failure(
                "dns", f"cannot find the host {host!r} (DNS lookup failed) for {url}",
                "Check the host name in !api (or the profile's URL) and your network.",
                line=line)
        if any(isinstance(c, ConnectionRefusedError) for c in chain) or "refused" in str(e):
            return Failure(
                "refused", f"no server is listening at {url} (connection refused)",
                "Start the server, or fix !api to point at the one that is running.",
                line=line)
        if any(isinstance(c, ssl.SSLError) for c in chain):
            return Failure("tls", f"TLS handshake with {url} failed: {e}",
                           "Check that the URL's scheme (http/https) matches the server.",
                           line=line)
        return Failure("connect", f"cannot connect to {url}: {e}",
                       "Check that the server is up and that !api is right.", line=line)
    if isinstance(e, httpx.ConnectTimeout):
        return Failure(
            "timeout", f"no answer from {url} within {connect_s:g} s while connecting",
            "Check that the host is reachable; raise LIMNER_CONNECT_TIMEOUT (seconds) "
            "if it is only slow.", line=line)
    if isinstance(e, httpx.TimeoutException):  # read, write or pool
        return timed_out(e, adapter)
    if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
        return cut_short(adapter, detail=str(e))
    if isinstance(e, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return Failure("url", f"cannot send to {url!r}: {e}",
                       "!api needs a full http:// or https:// URL.", line=line)
    if isinstance(e, httpx.LocalProtocolError):
        return Failure("request", f"the request could not be sent: {e}",
                       "Check the !> header lines: names and values must be plain ASCII.")
    if isinstance(e, httpx.TooManyRedirects):
        return Failure("http", f"{url} redirects in a loop",
                       "Point !api at the final URL.", line=line)
    if isinstance(e, (UnicodeEncodeError, ValueError, TypeError)):
        return Failure("request", f"the request could not be built: {e}",
                       "Check the !> header values (ASCII only) and !: values.")
    return Failure("http", f"the request to {url} failed: {type(e).__name__}: {e}",
                   "Check the server and !api; re-run to retry.")


def timed_out(e: Exception, adapter: Any) -> Failure:
    """The read timeout ran out: say what we were waiting for, and how to wait longer."""
    seconds, url = f"{adapter.read_s:g} s", adapter.url
    if type(e).__name__ == "WriteTimeout":
        what = f"the server at {url} took the request no further for {seconds} (timeout while sending)"
    elif adapter._response is None:  # not even a status line
        what = (f"the server at {url} accepted the connection but sent no answer "
                f"for {seconds} (timeout)")
    else:
        what = f"the server at {url} sent nothing more for {seconds} mid-reply (timeout)"
    kept = "The text above, if any, is what arrived. " if adapter._response is not None else ""
    return Failure(
        "timeout", what,
        f"{kept}The timeout is {seconds}, from {adapter.read_from}. If the server is only "
        "slow (a big model, a long prompt), wait longer with `!timeout SECONDS` in the "
        "buffer, `limner --timeout SECONDS` or LIMNER_TIMEOUT=SECONDS; if it is stuck, "
        "check its log.")


def cut_short(adapter: Any, detail: str = "") -> Failure:
    why = f" ({detail})" if detail else ""
    return Failure(
        "disconnect",
        f"the server closed the connection before the reply was complete{why}",
        "The text above is what arrived. Check the server's log (it may have "
        "crashed or been stopped), then re-run.")


def empty_stream(adapter: Any) -> Failure:
    return Failure(
        "empty", f"the server at {adapter.url} accepted the request but sent no reply",
        "Its log says why; a common cause is a prompt longer than the model's "
        "context (n_ctx). Shorten the buffer or give the server a larger context.")


def bad_utf8(position: int, adapter: Any, streamed: bool) -> Failure:
    kept = " The text above arrived intact." if streamed else ""
    return Failure(
        "utf8", f"the server sent bytes that are not valid UTF-8 (at byte {position} "
        "of its answer)",
        f"A server or model bug: re-run, or try another model.{kept}")


def malformed(data: str, adapter: Any) -> Failure:
    return Failure(
        "malformed", f"the server sent a stream event that is not JSON: {_snippet(data)!r}",
        "Check that !api points at an OpenAI-compatible (or the chosen !backend's) "
        "endpoint; the text above, if any, is what arrived before it.")


def not_json(text: str, adapter: Any) -> Failure:
    what = _snippet(text) or "an empty body"
    return Failure(
        "malformed", f"the server's answer is neither JSON nor an event stream: {what!r}",
        f"Check that !api ({adapter.url}) is the API endpoint, not a web page; "
        "an OpenAI-compatible server usually lives under /v1.", line=adapter.req.api_line)


# ---------------------------------------------------------------- server errors


def _server_message(obj: Any) -> tuple[str, dict]:
    """(message, the error object) from the JSON shapes servers use."""
    if not isinstance(obj, dict):
        return (json.dumps(obj, ensure_ascii=False) if obj is not None else ""), {}
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message") or err.get("msg") or err.get("type") or ""
        return str(msg), err
    if isinstance(err, str):
        return err, obj
    for key in ("message", "detail", "msg"):
        v = obj.get(key)
        if isinstance(v, str):
            return v, obj
        if v is not None:  # FastAPI's validation errors are a list
            return json.dumps(v, ensure_ascii=False), obj
    return json.dumps(obj, ensure_ascii=False), obj


_CONTEXT_WORDS = re.compile(
    r"context[ _](length|size|window)|maximum context|exceed_context|"
    r"prompt is too long|too many tokens|context_length_exceeded", re.I)


def _context_numbers(msg: str, err: dict) -> tuple[int | None, int | None]:
    """(prompt tokens, context size) when the server says them."""
    prompt = err.get("n_prompt_tokens")
    ctx = err.get("n_ctx")
    patterns_prompt = (r"\((\d+) in your prompt", r"requested tokens \((\d+)\)",
                       r"resulted in (\d+) tokens", r"prompt is too long: (\d+) tokens",
                       r"(\d+) prompt tokens")
    patterns_ctx = (r"maximum context length is (\d+)", r"context window of (\d+)",
                    r"tokens > (\d+) maximum", r"context size (?:is |of )?(\d+)")
    if not isinstance(prompt, int):
        prompt = next((int(m.group(1)) for p in patterns_prompt
                       if (m := re.search(p, msg, re.I))), None)
    if not isinstance(ctx, int):
        ctx = next((int(m.group(1)) for p in patterns_ctx
                    if (m := re.search(p, msg, re.I))), None)
    return prompt, ctx


def _is_context(msg: str, err: dict) -> bool:
    fields = " ".join(str(err.get(k, "")) for k in ("code", "type"))
    return bool(_CONTEXT_WORDS.search(msg) or _CONTEXT_WORDS.search(fields)
                or "n_ctx" in err)


def from_error_object(obj: Any, status: int | None, adapter: Any) -> Failure:
    """A server's JSON error (from a 4xx/5xx body, or inside a stream) -> Failure."""
    msg, err = _server_message(obj)
    if status is None and isinstance(err.get("code"), int) and 400 <= err["code"] < 600:
        status = err["code"]
    where = f"HTTP {status}" if status else "the server"
    said = f"{where}: {_snippet(msg)}" if msg else where
    if _is_context(msg, err):
        prompt, ctx = _context_numbers(msg, err)
        counts = []
        if prompt is not None:
            counts.append(f"{prompt} prompt tokens")
        if ctx is not None:
            counts.append(f"the context holds {ctx}")
        sizes = f" ({', '.join(counts)})" if counts else ""
        return Failure(
            "context", f"the request does not fit the model's context{sizes}. {said}",
            "Shorten the buffer (start it later with !begin, or drop old messages), "
            "lower !:max_tokens, or give the server a larger context "
            "(llama-server --ctx-size, llama_cpp.server --n_ctx).",
            status=status)
    return Failure("http", said, _status_hint(status, adapter), status=status)


def _status_hint(status: int | None, adapter: Any) -> str:
    if status in (401, 403):
        return ("The server refused the credentials: set the API key header "
                "(e.g. `!>authorization Bearer $OPENAI_API_KEY`, or `!>x-api-key "
                "$ANTHROPIC_API_KEY`) and check the variable is exported.")
    if status == 404:
        return (f"No such endpoint or model at {adapter.url}: check !api "
                "(OpenAI-compatible servers usually live under /v1) and !:model.")
    if status == 429:
        return "Rate limited or out of quota: wait and re-run, or check your plan."
    if status in (400, 422):
        return "The server rejected the request: check the !: parameters named above."
    if status is not None and status >= 500:
        return "The server failed: its log says why. Re-run once it is healthy."
    return "Check the server and the request (`!debug` shows exactly what is sent)."


def from_status(status: int, raw: bytes, adapter: Any, location: str | None = None) -> Failure:
    """A non-2xx answer: quote the server's message, whatever its shape."""
    if 300 <= status < 400:
        to = f" to {location}" if location else ""
        return Failure("http", f"HTTP {status}: {adapter.url} redirects{to}",
                       "Put the final URL in !api.", line=adapter.req.api_line, status=status)
    text = raw.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if obj is not None:
        return from_error_object(obj, status, adapter)
    said = f"HTTP {status}: {_snippet(text)}" if text.strip() else f"HTTP {status}"
    if _is_context(text, {}):
        return from_error_object({"error": text}, status, adapter)
    return Failure("http", said, _status_hint(status, adapter), status=status)
