"""Adapters: the exact request (URL, Go-encoded body) and the events a real server's reply becomes."""
from __future__ import annotations

import json
import time

import pytest

from limner import backends
from limner.backends.base import Ordered, encode_go_json
from limner.backends.llamacpp import hole_indent
from limner.backends.openai import GptOssChannels
from limner.errors import BufferError, LimnerError
from limner.events import Failure, Stopped, Text, Usage
from limner.request import ContextFile, Message, Request


def chat(api="http://localhost:8080/", **kw) -> Request:
    kw.setdefault("messages", [Message("system", "Be brief."), Message("user", "Hi")])
    return Request(api=api, **kw)


def texts(events) -> str:
    return "".join(e.text for e in events if isinstance(e, Text))


# ---------------------------------------------------------------- Go's JSON bytes

# Expected strings were produced by Go's json.Encoder with SetEscapeHTML(false)
# (go 1.19 on this machine) from the same values; \b and \f follow Go >= 1.22,
# which writes them as short escapes rather than \u0008 / \u000c.
GO_CASES = [
    ({"z": 1, "a": 2, "é": True, "B": None}, '{"B":null,"a":2,"z":1,"é":true}'),
    ({"_": {"y": [], "x": {}}}, '{"_":{"x":{},"y":[]}}'),
    ([1.0, 0.3, 0.95, 1e-6, 1e-7, 1.5e-7, 1e21, 1.234e22, 123456789.0, -0.0],
     "[1,0.3,0.95,0.000001,1e-7,1.5e-7,1e+21,1.234e+22,123456789,-0]"),
    ([2**60, 12345678901234567890123, 2000, 0.1, 1e20, 5e-324, 0.000123],
     "[1152921504606847000,1.2345678901234568e+22,2000,0.1,100000000000000000000,"
     "5e-324,0.000123]"),
    ("héllo <b>&amp; \u2028 \u2029 \x01 \b \f \n \r \t \" \\ \x7f \ud800 😀",
     '"héllo <b>&amp; \\u2028 \\u2029 \\u0001 \\b \\f \\n \\r \\t \\" \\\\ \x7f \ufffd 😀"'),
]


@pytest.mark.parametrize("value,expected", GO_CASES)
def test_encode_go_json_matches_go(value, expected):
    assert encode_go_json(value) == (expected + "\n").encode("utf-8")


def test_ordered_keeps_struct_field_order():
    assert encode_go_json([Ordered(role="user", content="x")]) == b'[{"role":"user","content":"x"}]\n'


def test_chat_body_is_illumes_bytes():
    req = chat(data={"max_tokens": 2000, "temperature": 0.7, "stop": ["<|im_end|>"],
                     "cache_prompt": True})
    call = backends.open(req).describe()
    assert call.url == "http://localhost:8080/chat/completions"
    assert call.headers == {"content-type": "application/json"}
    assert encode_go_json(call.body) == (
        b'{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"system","content":'
        b'"Be brief."},{"role":"user","content":"Hi"}],"stop":["<|im_end|>"],'
        b'"stream":true,"temperature":0.7}\n')


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize("api,mode,url", [
    ("http://h:8080", "chat", "http://h:8080/chat/completions"),
    ("http://h:8080/v1/", "completion", "http://h:8080/v1/completions"),
    ("http://h:8080/v1", "fim", "http://h:8080/v1/completions"),
    ("http://h:8080/", "infill", "http://h:8080/infill"),
    ('"http://h:8080/exact/path"', "chat", "http://h:8080/exact/path"),
    ("https://x.test/models/{model}/v1", "chat", "https://x.test/models/org/m-1/v1/chat/completions"),
    ("http://h/{n}/{flag}", "chat", "http://h/3/true/chat/completions"),
])
def test_url_like_illume(api, mode, url):
    req = chat(api, mode=mode, prompt="p", prefix="a\n", suffix="",
               data={"model": "org/m-1", "n": 3, "flag": True})
    assert backends.open(req).describe().url == url


@pytest.mark.parametrize("api,words", [
    ("http://h/{model}/v1", "{model}"),
    ("http://h/{model/v1", "without its"),
    ("http://invalid./", "no !api"),
    # What httpx would refuse mid-send (once an internal error via fim:auto's probe):
    ("localhost:8080", "http:// or https://"),
    ('"ftp://h/x"', "http:// or https://"),
    ("http:///v1", "no host"),
    ("http://h:99999/", "Port out of range"),
    ("http://h:abc/", "not a valid URL"),
    ("http://[::1/", "not a valid URL"),
    ("http://h\x00/", "control character (U+0000)"),
    ("http://h/v1\r", "control character (U+000D)"),
    ("http://999.1.1.1/", "IPv4"),
    ("http://\u2603.net/", "international domain name"),
    ("http://xn--zz/", "international domain name"),
    ("http://exa mple.com/", "space"),
])
def test_url_problems_are_buffer_errors_at_the_api_line(api, words):
    with pytest.raises(BufferError) as e:
        backends.open(chat(api, api_line=4))
    assert words in e.value.message and e.value.line == 4 and e.value.hint


def test_embedded_url_needs_the_embedded_backend():
    assert backends.open(chat("embedded://")).name == "embedded"
    with pytest.raises(BufferError, match="http:// or https://"):
        backends.open(chat("embedded://", backend="openai"))


def test_backend_choice():
    assert backends.open(chat()).name == "openai"
    assert backends.open(chat(mode="infill", prefix="x\n", suffix="")).name == "llamacpp"
    assert backends.open(chat('"https://api.anthropic.com/v1/messages"')).name == "anthropic"
    assert backends.open(chat("http://proxy.test/v1/messages")).name == "anthropic"
    assert backends.open(chat(backend="llamacpp")).name == "llamacpp"
    with pytest.raises(BufferError, match="unknown backend"):
        backends.open(chat(backend="carrier-pigeon"))


def test_missing_backend_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "ghost", "limner.backends.ghost:GhostAdapter")
    with pytest.raises(LimnerError) as e:
        backends.open(chat(backend="ghost"))
    assert "ghost backend is not available" in e.value.message and "setup" in e.value.hint


# ---------------------------------------------------------------- bodies per protocol


def test_infill_body_is_illumes_unless_native():
    block = "**`lib.py`**\n```\ndef lib(): pass\n```\n\n"
    files = [ContextFile("lib.py", "def lib(): pass\n", line=1, block=block)]
    prefix = block + "def f(x):\n"
    req = chat(mode="infill", prefix=prefix, suffix="\n    return y\n", context_files=files)
    body = backends.open(req).describe().body
    assert body["prompt"] == "" and body["input_prefix"] == prefix and "input_extra" not in body
    assert "n_indent" not in body  # no !lang: Illume's body exactly

    req.backend, req.language = "llamacpp", "python"
    call = backends.open(req).describe()
    assert call.url == "http://localhost:8080/infill"
    assert call.body["input_extra"] == [{"filename": "lib.py", "text": "def lib(): pass\n"}]
    assert call.body["input_prefix"] == "def f(x):\n"
    assert call.body["n_indent"] == 4


def test_hole_indent():
    assert hole_indent("\n\n\tif x:\n") == 1
    assert hole_indent("\n") == 0 and hole_indent(None) == 0


def test_native_completion_body_and_url():
    req = chat("http://h:8080/v1", mode="completion", prompt="Once", backend="llamacpp",
               data={"max_tokens": 16})
    call = backends.open(req).describe()
    assert call.url == "http://h:8080/completion"
    assert call.body == {"prompt": "Once", "n_predict": 16, "cache_prompt": True, "stream": True}


def test_anthropic_system_is_top_level():
    req = chat('"https://api.anthropic.com/v1/messages"',
               headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
               data={"max_tokens": 100, "model": "claude-sonnet-4-5"})
    call = backends.open(req).describe()
    assert call.url == "https://api.anthropic.com/v1/messages"
    assert call.body["system"] == "Be brief."
    assert call.body["messages"] == [{"role": "user", "content": "Hi"}]
    assert backends.open(chat("https://gw.test/v1", backend="anthropic")).url == \
        "https://gw.test/v1/messages"


def test_gpt_oss_channels_become_think_blocks():
    tokens = ["<|channel|>", "analysis", "<|message|>", "Hmm", "<|end|>", "<|start|>",
              "assistant", "<|channel|>", "final", "<|message|>", "Hi", "!"]
    f = GptOssChannels()
    assert "".join(f.feed(t) for t in tokens) == "<think>\nHmm\n</think>\n\nHi!"


# ---------------------------------------------------------------- streams from servers


def test_stream_with_usage_and_timings(fault_server):
    events = list(backends.open(chat(fault_server.url("ok"))).stream())
    assert texts(events) == "Hello, this is the fault server."
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1 and usage[0].prompt_tokens == 17 and usage[0].predicted_ms == 80.0
    assert usage[0].cached_tokens == 5
    assert events[-1] == Stopped("stop")
    # The bytes on the wire are the Go-encoded body of describe().
    path, headers, body = fault_server.requests[-1]
    assert path == "/ok/v1/chat/completions" and headers["content-type"] == "application/json"
    assert body == encode_go_json(backends.open(chat(fault_server.url("ok"))).describe().body)


def test_non_streaming_server(fault_server):
    for mode in ("chat", "completion"):
        events = list(backends.open(chat(fault_server.url("nostream"), mode=mode, prompt="x"))
                      .stream())
        assert texts(events) == "Hello, this is the fault server."
        assert events[-1] == Stopped("stop")


def test_native_stream_and_infill_extra(fault_server):
    req = chat(fault_server.url("native:limit"), mode="completion", prompt="x",
               backend="llamacpp")
    events = list(backends.open(req).stream())
    assert texts(events) == "Hello, this is the fault server."
    assert events[-1] == Stopped("length")
    assert fault_server.requests[-1][0] == "/native:limit/completion"


def test_anthropic_stream(fault_server):
    events = list(backends.open(chat(fault_server.url("anthropic"), backend="anthropic"))
                  .stream())
    assert texts(events) == "<think>\nLet me think.\n</think>\n\nHello, this is the fault server."
    usage = next(e for e in events if isinstance(e, Usage))
    assert (usage.prompt_tokens, usage.completion_tokens) == (21, 9)
    assert events[-1] == Stopped("length")
    sent = json.loads(fault_server.requests[-1][2])
    assert sent["system"] == "Be brief." and all(m["role"] != "system" for m in sent["messages"])


def test_close_aborts_a_stream_at_once(fault_server):
    adapter = backends.open(chat(fault_server.url("slow:100")))
    stream = adapter.stream()
    first = next(stream)
    assert isinstance(first, Text)
    started = time.monotonic()
    adapter.close()
    rest = list(stream)  # ends without a terminal event: the closer decides
    assert time.monotonic() - started < 2
    assert not any(isinstance(e, (Stopped, Failure)) for e in rest)


def test_fim_auto_asks_the_server_only_when_sending(fault_server):
    import fuzz_buffers  # tests/: the fuzz test's socket guard

    from limner import buffer, render

    text = f"!profile fim:auto\n!api {fault_server.url('ok')}\ndef f():\n!infill\n    pass\n"
    req = buffer.parse(text)
    attempts: list = []
    with fuzz_buffers.no_network(attempts):  # !debug is a dry run: no /props probe
        adapter = backends.open(req)
        shown = render.debug(adapter.describe())
    assert attempts == [] and req.mode == "infill"
    props = fault_server.url("ok")[: -len("/v1")] + "/props"
    assert shown.startswith(f"\n\n!note fim:auto: decided at send time by asking {props} ")
    assert f"POST {fault_server.url('ok')}/completions with the prefix only" in shown
    assert f"\n\nPOST {fault_server.url('ok')}/infill HTTP/1.1\n" in shown
    note = shown.split("\n\nPOST")[0]  # one !note line, skipped when the buffer is sent again
    assert note.count("\n") == 2 and buffer.parse(text + note + "\n").messages == req.messages
    # Sending asks: the fault server's /props is not llama.cpp's, so prefix-only completion.
    events = list(adapter.stream())
    assert isinstance(events[-1], Stopped) and texts(events)
    assert fault_server.requests[-1][0] == "/ok/v1/completions"
    assert req.mode == "fim" and req.prompt == req.prefix
    call = adapter.describe()
    assert call.note == "" and call.url == f"{fault_server.url('ok')}/completions"
    assert json.loads(fault_server.requests[-1][2])["prompt"] == "def f():\n"


def test_fim_auto_probe_never_raises():
    from limner.fim import templates

    for url in ("http://h\x00/", "http://\u2603/", "ftp://x/", "http://127.0.0.1:9/v1"):
        assert templates.probe_infill(url, timeout=0.5) is None


@pytest.mark.server
def test_real_llama_server_completion(llama_server):
    req = chat(llama_server, mode="completion", prompt="The capital of France is",
               data={"max_tokens": 3, "temperature": 0})
    events = list(backends.open(req).stream())
    chunks = [e for e in events if isinstance(e, Text)]
    assert 1 <= len(chunks) <= 3 and texts(events).strip()
    assert events[-1] == Stopped("length")


def test_native_infill_moves_parsed_context_files_to_input_extra(tmp_path):
    from limner import buffer

    (tmp_path / "util.py").write_text("def helper():\n    return 42\n")
    text = ("!api http://h:8080/\n!context util.py\ndef f(x):\n!infill\n    return x\n")
    illume = backends.open(buffer.parse(text, cwd=str(tmp_path), env={})).describe()
    assert "def helper()" in illume.body["input_prefix"]  # inlined, as Illume does
    assert "input_extra" not in illume.body

    native = backends.open(buffer.parse("!backend llamacpp\n" + text, cwd=str(tmp_path),
                                        env={})).describe()
    assert native.body["input_extra"] == [
        {"filename": "util.py", "text": "def helper():\n    return 42\n"}]
    assert "helper" not in native.body["input_prefix"]
    assert native.body["input_prefix"].endswith("def f(x):\n")
