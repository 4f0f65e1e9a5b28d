"""`!check` end to end: the real `limner` command, a real HTTP server on
loopback that streams a chosen reply, and the `!note` lines under it."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from limner import buffer
from limner.checks import reply_notes

REPLY_WITH_CODE = (
    "Here is a script:\n\n```python\nimport os\nimport yamlish_loader_pro\n"
    "os.system(input())\n```\n\nAnd a helper:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
)


class _Scripted(BaseHTTPRequestHandler):
    """OpenAI-style SSE streaming whatever text the server was given."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        text = self.server.reply
        chat = "messages" in body
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        pieces = [text[i:i + 7] for i in range(0, len(text), 7)] + [None]
        for piece in pieces:
            if chat:
                choice = {"index": 0, "delta": {"content": piece} if piece else {},
                          "finish_reason": None if piece else "stop"}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": None if piece else "stop"}
            data = f"data: {json.dumps({'choices': [choice]})}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        self.wfile.flush()


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.reply = ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_check_appends_notes_under_the_chat_reply(run_limner, scripted):
    scripted.reply = REPLY_WITH_CODE
    proc = run_limner(f"!api {_url(scripted)}\n!check\n!user\nWrite me a script.\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head, _, notes = proc.stdout.partition(REPLY_WITH_CODE)
    assert head == "\n\n!assistant\n\n" and notes, proc.stdout
    lines = notes.strip("\n").splitlines()
    assert all(line.startswith("!note ") for line in lines)
    assert lines[0].startswith("!note check block 1 (python): 2 errors")
    assert any("yamlish_loader_pro" in line and "hallucinated" in line and "reply line 5" in line
               for line in lines)
    assert any("B605" in line for line in lines) or any("security skipped" in line for line in lines)
    assert any(line.startswith("!note check block 2 (python): clean") for line in lines)
    # Read back as the next turn, the notes are not sent to the model.
    nxt = buffer.parse(f"!api {_url(scripted)}\n!check\n!user\nWrite me a script.\n" + proc.stdout
                       + "\n!user\nThanks\n")
    sent = "".join(m.content for m in nxt.messages)
    assert "!note" not in sent and "hallucinated" not in sent


def test_without_check_there_are_no_notes(run_limner, scripted):
    scripted.reply = REPLY_WITH_CODE
    proc = run_limner(f"!api {_url(scripted)}\n!user\nWrite me a script.\n")
    assert proc.returncode == 0
    assert "!note" not in proc.stdout


def test_a_reply_without_code_says_so(run_limner, scripted):
    scripted.reply = "No code needed: just use the standard library."
    proc = run_limner(f"!api {_url(scripted)}\n!check\n!user\nHelp?\n")
    assert proc.returncode == 0
    assert proc.stdout.endswith("\n\n!note check: no code blocks in the reply\n")


def test_completion_checks_prompt_plus_reply():
    # Completion mode: a continuation alone would not parse; with its prompt it does.
    req = buffer.parse("!api http://127.0.0.1:9/v1\n!check\n!completion\ndef area(r):\n")
    text = reply_notes(req, "\n    import mathz_fast\n    return 3.14 * r * r\n")
    first = text.strip("\n").splitlines()[0]
    assert first.startswith("!note check the completed text (python): 1 error"), text
    assert "mathz_fast" in text and "line 2" in text
    assert "syntax" not in text.split("[imports")[1].split("\n")[0]  # not a syntax error
