"""Events -> buffer text: the reply as it streams, `!note` stats, `!error` blocks.

Output is in the buffer's own format (Illume's), so the editor appends it
to the buffer and the next run reads it back: a chat reply opens with
"!assistant", an error is an `!error` block the parser skips, and `!stats`
is a `!note` line the parser ignores. Every write is flushed at once: the
user watches the reply arrive.
"""
from __future__ import annotations

import time
from typing import TextIO

from limner.errors import LimnerError
from limner.events import Failure, Outcome, Stopped, Text, Usage
from limner.request import CHAT, HttpCall, Request

EXIT_OK, EXIT_BACKEND, EXIT_BUFFER, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143


def error_block(message: str, hint: str = "", line: int = 0) -> str:
    """An `!error` block: what happened (at which buffer line), then what to do."""
    where = f"line {line}: " if line else ""
    text = f"\n\n!error\n\n{where}{message.rstrip()}\n"
    if hint:
        text += hint.rstrip() + "\n"
    return text


def run_command(argv, parse, body, interrupted) -> int:
    """A subcommand's main: parse argv, run body(args). A LimnerError becomes an
    !error block and its exit code, Ctrl-C an !error from interrupted(args) and 130."""
    import sys

    try:
        args = parse(argv)
    except SystemExit as e:  # argparse: --help, or a usage error it has printed
        return int(e.code or 0)
    try:
        return body(args)
    except LimnerError as e:
        sys.stdout.write(error_block(e.message, e.hint, e.line))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stdout.write(error_block(*interrupted(args)))
        return 130


def _same_shape(original, masked):
    """masked, with the Ordered (struct-like) objects of original restored."""
    from limner.backends.base import Ordered

    if isinstance(original, dict) and isinstance(masked, dict):
        items = [(k, _same_shape(original.get(k), v)) for k, v in masked.items()]
        return Ordered(items) if isinstance(original, Ordered) else dict(items)
    if isinstance(original, list) and isinstance(masked, list):
        return [_same_shape(o, m) for o, m in zip(original, masked)]
    return masked


def debug(call: HttpCall) -> str:
    """Illume's `!debug` output for this call, with secrets masked."""
    from limner import secrets
    from limner.backends.base import encode_go_json

    lines = [f"\n\n{call.method} {secrets.mask_url(call.url)} HTTP/1.1\n"]
    if call.note:  # a !note line: the parser skips it when the buffer is sent again
        note = " ".join(secrets.mask_url(w) if "://" in w else w for w in call.note.split(" "))
        lines.insert(0, f"\n\n!note {note}")
    for key, value in secrets.mask_headers(call.headers).items():
        lines.append(f"{key}: {value}\n")
    masked = _same_shape(call.body, secrets.mask_body(call.body))
    body = encode_go_json(masked).decode("utf-8")
    lines.append(f"\n{body}\n")
    return "".join(lines)


def _secs(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def _rate(n: int | float | None, seconds: float | None) -> str | None:
    if not n or not seconds or seconds <= 0:
        return None
    rate = n / seconds
    return f"{rate:.0f} tok/s" if rate >= 100 else f"{rate:.3g} tok/s"


def stats_note(usage: Usage | None, chunks: int, first_token_s: float | None,
               elapsed_s: float, stopped: str) -> str:
    """The `!stats` line: real counts and rates when the server gave them."""
    parts = []
    if usage and usage.prompt_tokens is not None:
        prompt = f"prompt {usage.prompt_tokens} tokens"
        if usage.cached_tokens:
            prompt += f" ({usage.cached_tokens} cached)"
        rate = _rate(usage.prompt_tokens, (usage.prompt_ms or 0) / 1000)
        parts.append(f"{prompt} at {rate}" if rate else prompt)
    decode_s = None
    if usage and usage.predicted_ms:
        decode_s = usage.predicted_ms / 1000
    elif first_token_s is not None and elapsed_s > first_token_s:
        decode_s = elapsed_s - first_token_s
    if usage and usage.completion_tokens is not None:
        reply, n = f"reply {usage.completion_tokens} tokens", usage.completion_tokens
    else:
        reply, n = f"reply {chunks} tokens (estimated: chunks received)", chunks
    rate = _rate(n, decode_s)
    parts.append(f"{reply} at {rate}" if rate else reply)
    if first_token_s is not None:
        parts.append(f"first token {_secs(first_token_s)}")
    parts.append(f"total {_secs(elapsed_s)}")
    parts.append(f"stop: {stopped}")
    return "\n\n!note " + ", ".join(parts) + "\n"


def context_note(req: Request) -> str:
    """`!note` lines naming every block of repository context in the prompt."""
    if not req.context_budget and not req.placed:
        return ""
    lines = [f"\n\n!note context {req.context_used} of {req.context_budget} tokens "
             f"(!budget, counted with {req.context_counter})"]
    for p in req.placed:
        lines.append(f"\n!note context {p.tokens} tokens: {p.source} ({p.reason})")
    return "".join(lines) + "\n"


class Renderer:
    """Writes one reply as its events arrive, and sums it up as an Outcome."""

    def __init__(self, out: TextIO, req: Request, clock=time.monotonic):
        self.out, self.req, self.clock = out, req, clock
        self.started = clock()
        self.header_written = False
        self.parts: list[str] = []
        self.chunks = 0
        self.usage: Usage | None = None
        self.stopped: str | None = None
        self.failure: Failure | None = None
        self.cancelled: int | None = None  # the exit code a cancel asks for
        self.first_token_s: float | None = None
        self.elapsed_s: float | None = None

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _header(self) -> None:
        # Illume writes "!assistant" once the server has answered 200, even
        # if no text follows; a failure before any text gets no header.
        if not self.header_written:
            self.header_written = True
            if self.req.mode == CHAT:
                self._write("\n\n!assistant\n\n" + self.req.prepend)

    @property
    def ended(self) -> bool:
        return self.stopped is not None or self.failure is not None or self.cancelled is not None

    def feed(self, event) -> None:
        if isinstance(event, Text):
            if not event.text:
                return
            if self.first_token_s is None:
                self.first_token_s = self.clock() - self.started
            self._header()
            self.parts.append(event.text)
            self.chunks += 1
            self._write(event.text)
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Stopped):
            self._header()
            self.stopped = event.reason
            self.elapsed_s = self.clock() - self.started
            if self.req.stats:
                self._write(stats_note(self.usage, self.chunks, self.first_token_s,
                                       self.elapsed_s, event.reason))
                self._write(context_note(self.req))
        elif isinstance(event, Failure):
            self.failure = event
            self.elapsed_s = self.clock() - self.started
            self._write(error_block(event.message, event.hint, event.line))

    def cancel(self, sigterm: bool = False) -> None:
        """Ctrl-C (exit 130) or SIGTERM (143): keep what arrived, say so."""
        if self.stopped is not None or self.failure is not None:
            return  # the reply was already complete; nothing was lost
        self.cancelled = EXIT_SIGTERM if sigterm else EXIT_SIGINT
        self.elapsed_s = self.clock() - self.started
        how = "SIGTERM" if sigterm else "Ctrl-C"
        what = ("the text above is what arrived before it" if self.parts
                else "nothing had arrived yet")
        self._write(error_block(
            f"cancelled by {how}: {what}",
            "Re-run the buffer to ask again; this !error block is skipped when you do.",
        ))

    def finish(self) -> Outcome:
        text = "".join(self.parts)
        elapsed = self.elapsed_s if self.elapsed_s is not None else self.clock() - self.started
        common = dict(text=text, usage=self.usage, first_token_s=self.first_token_s,
                      elapsed_s=elapsed)
        if self.cancelled is not None:
            return Outcome("cancelled", self.cancelled, **common)
        if self.failure is not None:
            status = "partial" if text else "error"
            return Outcome(status, EXIT_BACKEND, failure=self.failure, **common)
        # No terminal event means whoever consumed the stream ended it (the
        # FIM stop emits its own Stopped); what arrived is the answer.
        return Outcome("ok", EXIT_OK, stopped=self.stopped, **common)
