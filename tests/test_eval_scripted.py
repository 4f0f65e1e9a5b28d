"""A scripted OpenAI-compatible server for the eval, repair and replay tests.

The bundled models are too small to fix code on demand, so tests that need
a model which is wrong first and right after feedback (or right for every
HumanEval task) talk to this real HTTP server on loopback, whose replies a
Python function decides from the request body. Everything between limner
and the socket is the real code path (buffer, backends, SSE, renderer).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        server = self.server
        with server.lock:
            server.requests.append((self.path, body))
        chat = self.path.endswith("/chat/completions")
        text = server.respond(body)
        if server.delay:
            import time

            time.sleep(server.delay)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        pieces = [text[i:i + 7] for i in range(0, len(text), 7)] or [""]
        for piece in pieces:
            choice = ({"index": 0, "delta": {"content": piece}, "finish_reason": None} if chat
                      else {"index": 0, "text": piece, "finish_reason": None})
            self._event({"choices": [choice]})
        end = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else \
            {"index": 0, "text": "", "finish_reason": "stop"}
        self._event({"choices": [end], "usage": {"prompt_tokens": 10, "completion_tokens": len(pieces)}})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(self, obj):
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that stops reading (limner's chat stop) is not an error here


class ScriptedModel:
    """`ScriptedModel(respond).start()`; `.url` is the OpenAI base URL (…/v1)."""

    def __init__(self, respond, delay: float = 0.0):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.delay = delay  # seconds before each answer (for interruption tests)
        self.httpd.respond = respond
        self.httpd.requests = []
        self.httpd.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def start(self) -> "ScriptedModel":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def last_user(body: dict) -> str:
    msgs = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    return msgs[-1]["content"] if msgs else ""


def test_scripted_server_streams_what_its_function_says():
    server = ScriptedModel(lambda body: "echo: " + last_user(body)).start()
    try:
        r = httpx.post(server.url + "/chat/completions", json={
            "messages": [{"role": "user", "content": "hi there"}], "stream": True}, timeout=10)
        deltas = [json.loads(line[6:]) for line in r.text.splitlines()
                  if line.startswith("data: {")]
        text = "".join(d["choices"][0]["delta"].get("content", "") for d in deltas)
        assert text == "echo: hi there"
        assert server.requests[0][0] == "/v1/chat/completions"
    finally:
        server.stop()
