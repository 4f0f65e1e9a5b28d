"""The stop on a live HTTP stream: a loopback llama.cpp-style /infill server
streams a runaway middle; limner must cut it, abort the request, and say why.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from limner import buffer
from limner.events import Stopped, Text, Usage
from limner.fim import templates
from limner.fim.stream import guard, make_stopper

LIMNER = os.path.join(os.path.dirname(sys.executable), "limner")

LINE = "    r = (x * x + y * y) ** 0.5"
RUNAWAY = LINE + "\n\n\ndef norm3(x: float, y: float, z: float) -> float:\n" + "".join(
    f"    return (x * x + y * y + z * z) ** 0.{i}\n\n\ndef norm{i + 4}(x):\n" for i in range(60))


def tokens(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class RunawayServer(ThreadingHTTPServer):
    """Streams RUNAWAY as llama.cpp /infill SSE, one chunk every `delay` seconds."""

    daemon_threads = True

    def __init__(self, delay: float = 0.01):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay = delay
        self.bodies: list[dict] = []
        self.sent = 0
        self.total = len(tokens(RUNAWAY))
        self.aborted = threading.Event()
        self.finished = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - /props: this is a llama.cpp server
        body = json.dumps({"default_generation_settings": {}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        srv: RunawayServer = self.server
        n = int(self.headers.get("content-length") or 0)
        srv.bodies.append(json.loads(self.rfile.read(n) or b"{}"))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            for tok in tokens(RUNAWAY):
                self.wfile.write(b"data: " + json.dumps({"content": tok, "stop": False}).encode() + b"\n\n")
                self.wfile.flush()
                srv.sent += 1
                time.sleep(srv.delay)
            self.wfile.write(b'data: {"content": "", "stop": true}\n\n')
            self.wfile.flush()
            srv.finished.set()
        except (BrokenPipeError, ConnectionResetError):
            srv.aborted.set()


@pytest.fixture
def server():
    srv = RunawayServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def norm_buffer(api: str, extra: str = "") -> str:
    return (f"!api {api}\n!lang python\n!stats\n{extra}"
            "def norm(x: float, y: float) -> float:\n!infill\n    return r\n")


def test_limner_cuts_the_runaway_aborts_the_request_and_says_why(server, tmp_path):
    env = dict(os.environ, LIMNER_NO_LOG="1", HOME=str(tmp_path))
    t0 = time.monotonic()
    r = subprocess.run([LIMNER, "--no-log"], input=norm_buffer(server.base).encode(),
                       capture_output=True, timeout=60, env=env)
    elapsed = time.monotonic() - t0
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    reply, _, note = out.partition("!note")
    assert reply.strip("\n") == LINE
    assert "norm3" not in out
    assert "stop: fim:complete" in note
    # The server saw the client go away long before the runaway was done.
    assert server.aborted.wait(5)
    assert not server.finished.is_set()
    assert server.sent < server.total // 4
    assert elapsed < server.total * server.delay
    # llama.cpp's n_indent hint went out with the /infill request.
    assert server.bodies[0]["input_prefix"].startswith("def norm")
    assert server.bodies[0].get("n_indent") == 4


class _Adapter:
    """Only records close(); the events come from a real HTTP adapter below."""

    def __init__(self, inner):
        self.inner, self.closed = inner, 0

    def close(self):
        self.closed += 1
        self.inner.close()


def test_guard_on_a_real_adapter_stream(server):
    from limner import backends

    req = buffer.parse(norm_buffer(server.base))
    adapter = _Adapter(backends.open(req))
    events = list(guard(adapter.inner.stream(), req, adapter))
    texts = "".join(e.text for e in events if isinstance(e, Text))
    assert texts == LINE
    assert isinstance(events[-1], Stopped) and events[-1].reason == "fim:complete"
    assert adapter.closed == 1
    assert server.aborted.wait(5)


def test_guard_holds_back_uncommitted_text_and_passes_usage():
    """Lines are shown once the stop knows they stay; a trailing blank line never is."""
    req = buffer.parse("!lang python\ndef f(x):\n!infill\n")

    class Quiet:
        closed = 0

        def close(self):
            self.closed += 1

    def events():
        for tok in tokens("    return x + 1\n\n"):
            yield Text(tok)
        yield Usage(completion_tokens=5)
        yield Stopped("stop")

    out = list(guard(events(), req, Quiet()))
    texts = [e.text for e in out if isinstance(e, Text)]
    assert "".join(texts) == "    return x + 1"
    assert any(isinstance(e, Usage) for e in out)
    assert out[-1] == Stopped("fim:end")


def test_make_stopper_is_the_engine_hook():
    st = make_stopper({"language": None, "prefix": "def f(x):\n", "suffix": "\n    return y\n"})
    assert st.language == "python"  # guessed from the text
    keep = None
    for tok in tokens("    y = x * 2\n    return y\n"):
        keep = st.feed(tok)
        if keep is not None:
            break
    assert keep == len("    y = x * 2") and st.reason == "fim:complete"


def test_fim_auto_resolves_per_backend(server):
    from limner.engine import models

    _, gemma = models.resolve("gemma3-270m", "fim")
    assert templates.embedded_plan(gemma).kind == "prefix-only"
    # A llama.cpp server (it has /props): the request stays on /infill.
    req = buffer.parse(f"!profile fim:auto\n!api {server.base}\ndef f():\n!infill\n")
    templates.apply_auto(req)
    assert req.mode == "infill"
    # No /infill there and no template: prefix-only completion.
    req = buffer.parse("!profile fim:auto\n!api http://127.0.0.1:9/v1\ndef f():\n!infill\n")
    templates.apply_auto(req)
    assert req.mode == "fim" and req.prompt == req.prefix
    # A model name that implies a template uses it.
    req = buffer.parse("!profile fim:auto\n!api http://127.0.0.1:9/v1\n!:model qwen2.5-coder-1.5b\n"
                       "def f():\n!infill\n    pass\n")
    templates.apply_auto(req)
    assert req.prompt == templates.render("qwen", req.prefix, req.suffix)


def test_templates_match_the_fim_profiles():
    from limner import profiles

    for name, lines in profiles.BUILTIN.items():
        if not name.startswith("fim:") or name == "fim:auto":
            continue
        t = templates.TEMPLATES[name[4:]]
        assert lines[0] == "!infill " + t.text
    assert '!:stop ["<EOT>"]' in profiles.BUILTIN["fim:codellama"]
    assert templates.TEMPLATES["codellama"].stop == ("<EOT>",)
    assert templates.render("codestral", "P", "S") == "[SUFFIX]S[PREFIX]P"
    assert templates.fill("{prefix}|{suffix}", "a{suffix}", "b") == "a{suffix}|b"


def test_bench_fim_through_a_profile_that_points_at_an_http_server(server, tmp_path, capsys):
    from limner import benchcli

    server.delay = 0.0
    profile = tmp_path / "runaway.profile"
    profile.write_text(f"!api {server.base}\n")
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"id": "norm", "language": "python",
                                 "prefix": "def norm(x: float, y: float) -> float:\n",
                                 "suffix": "    return r\n", "middle": LINE + "\n",
                                 "test": "assert norm(3, 4) == 5\n"}) + "\n")
    code = benchcli.main(["fim", "--suite", str(suite), "--model", str(profile), "--json",
                          "--cache", str(tmp_path / "gen.jsonl")])
    out = capsys.readouterr().out
    assert code == 0, out
    by = {p["policy"]: p for p in json.loads(out)["policies"]}
    assert by["limner"]["pass@1"] == 1.0 and by["limner"]["exact_match"] == 1.0
    assert by["max-tokens"]["pass@1"] == 0.0
    assert server.bodies[-1]["input_prefix"].startswith("def norm")  # it went to /infill
