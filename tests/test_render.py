"""The renderer: buffer-format output, !stats notes, !error blocks, outcomes, !debug."""
from __future__ import annotations

import io

from limner import render
from limner.backends.base import Ordered
from limner.events import Failure, Stopped, Text, Usage
from limner.request import HttpCall, Request


class Clock:
    """A clock the test moves by hand, so timings in notes are exact."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def renderer(**kw):
    out, clock = io.StringIO(), Clock()
    return render.Renderer(out, Request(**kw), clock=clock), out, clock


def test_error_block_format():
    assert render.error_block("boom", "fix it", 7) == "\n\n!error\n\nline 7: boom\nfix it\n"
    assert render.error_block("boom", "") == "\n\n!error\n\nboom\n"


def test_chat_reply_has_illumes_header_and_prepend():
    r, out, clock = renderer(prepend="Sure:")
    r.feed(Text("Hel"))
    assert out.getvalue() == "\n\n!assistant\n\nSure:Hel"  # written at once
    r.feed(Text("lo"))
    r.feed(Stopped("stop"))
    assert out.getvalue() == "\n\n!assistant\n\nSure:Hello"
    o = r.finish()
    assert (o.status, o.exit_code, o.text, o.stopped) == ("ok", 0, "Hello", "stop")


def test_completion_is_raw_text():
    r, out, _ = renderer(mode="completion")
    for e in (Text("a"), Text("b"), Stopped("length")):
        r.feed(e)
    assert out.getvalue() == "ab" and r.finish().stopped == "length"


def test_stats_note_uses_server_counts():
    r, out, clock = renderer(stats=True)
    clock.now += 0.25
    r.feed(Text("x"))
    clock.now += 1.0
    r.feed(Usage(prompt_tokens=17, completion_tokens=8, prompt_ms=34.0, predicted_ms=80.0,
                 cached_tokens=5))
    r.feed(Stopped("stop"))
    note = out.getvalue().split("\n\n!note ", 1)[1]
    assert note == ("prompt 17 tokens (5 cached) at 500 tok/s, reply 8 tokens at 100 tok/s, "
                    "first token 0.25 s, total 1.25 s, stop: stop\n")
    o = r.finish()
    assert o.usage.completion_tokens == 8 and o.first_token_s == 0.25 and o.elapsed_s == 1.25


def test_stats_note_estimates_when_the_server_gives_nothing():
    r, out, clock = renderer(mode="completion", stats=True)
    clock.now += 0.5
    r.feed(Text("a"))
    for t in "bcd":
        clock.now += 0.5
        r.feed(Text(t))
    r.feed(Stopped("length"))
    assert out.getvalue().endswith(
        "\n\n!note reply 4 tokens (estimated: chunks received) at 2.67 tok/s, "
        "first token 0.50 s, total 2.00 s, stop: length\n")


def test_failure_before_text_is_an_error_without_header():
    r, out, _ = renderer()
    r.feed(Failure("refused", "no server", "start it", line=3))
    assert out.getvalue() == "\n\n!error\n\nline 3: no server\nstart it\n"
    o = r.finish()
    assert (o.status, o.exit_code, o.failure.kind) == ("error", 1, "refused")


def test_failure_after_text_is_partial_and_keeps_the_text():
    r, out, _ = renderer()
    r.feed(Text("half"))
    r.feed(Failure("disconnect", "cut", "retry"))
    assert out.getvalue() == "\n\n!assistant\n\nhalf\n\n!error\n\ncut\nretry\n"
    o = r.finish()
    assert (o.status, o.exit_code, o.text) == ("partial", 1, "half")


def test_cancel_codes_and_message():
    for sigterm, code, how in ((False, 130, "Ctrl-C"), (True, 143, "SIGTERM")):
        r, out, _ = renderer()
        r.feed(Text("some"))
        r.cancel(sigterm=sigterm)
        assert f"cancelled by {how}: the text above is what arrived" in out.getvalue()
        assert out.getvalue().startswith("\n\n!assistant\n\nsome\n\n!error\n\n")
        o = r.finish()
        assert (o.status, o.exit_code, o.text) == ("cancelled", code, "some")


def test_cancel_after_the_end_changes_nothing():
    r, out, _ = renderer()
    r.feed(Text("done"))
    r.feed(Stopped("stop"))
    before = out.getvalue()
    r.cancel()
    assert out.getvalue() == before and r.finish().status == "ok"


def test_debug_format_masks_secrets_in_order():
    call = HttpCall(
        url="http://h/v1/chat/completions",
        headers={"content-type": "application/json",
                 "authorization": "Bearer sk-abcdef1234567890",
                 "x-api-key": "sk-ant-0123456789", "x-use-cache": "false"},
        body={"model": "m", "api_key": "secret-value-123", "stream": True,
              "messages": [Ordered(role="user", content="hi")]},
    )
    assert render.debug(call) == (
        "\n\nPOST http://h/v1/chat/completions HTTP/1.1\n"
        "content-type: application/json\n"
        "authorization: Bearer sk-a****\n"
        "x-api-key: sk-a****\n"
        "x-use-cache: false\n"
        '\n{"api_key":"secr****","messages":[{"role":"user","content":"hi"}],"model":"m",'
        '"stream":true}\n\n'
    )
