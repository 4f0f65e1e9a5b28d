"""A recording LLM server for the guard's leak test: every byte it receives is kept.

    python tests/leakserver.py HOST RECORD_FILE      prints its port, then serves

The test runs it inside a network namespace on a non-loopback address, so to
limner it is a remote host. Every request's raw bytes (request line, headers,
body) are appended to RECORD_FILE before it answers. The first path segment
picks the answer, as in faultserver.py:

    ok        a streamed reply (OpenAI chat/completion or llama.cpp native SSE)
    echo      streams back the request body it received (a model that repeats a key)
    retry     429 with Retry-After
    error     500
    reset     the connection reset (RST) without an answer
    slow      a reply in chunks 0.05 s apart
    redirect  307 to /ok/ on the same server
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _record(self, body: bytes) -> None:
        head = f"{self.requestline}\r\n{self.headers}".encode("utf-8", "replace")
        with _lock, open(self.server.record_file, "ab") as f:
            f.write(head + body + b"\n\x00\n")

    def do_GET(self):  # noqa: N802
        self._record(b"")
        self._json(200, {"object": "list", "data": [{"id": "leak"}]})

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._record(body)
        mode = self.path.strip("/").split("/")[0]
        native = self.path.endswith(("/infill", "/completion"))
        chat = self.path.endswith("chat/completions")
        try:
            getattr(self, "mode_" + mode, self.mode_ok)(body, native, chat)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, words, native, chat, delay=0.0):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = f"data: {json.dumps(obj)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        for w in words:
            if native:
                event({"content": w, "stop": False})
            elif chat:
                event({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
            else:
                event({"choices": [{"index": 0, "text": w, "finish_reason": None}]})
            if delay:
                time.sleep(delay)
        if native:
            event({"content": "", "stop": True, "stopped_eos": True})
        else:
            key = "delta" if chat else "text"
            event({"choices": [{"index": 0, key: {} if chat else "", "finish_reason": "stop"}]})
            self.wfile.write(b"d\r\ndata: [DONE]\n\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def mode_ok(self, body, native, chat):
        self._stream(["Noted", "."], native, chat)

    def mode_echo(self, body, native, chat):
        text = body.decode("utf-8", "replace")
        self._stream([text[i:i + 50] for i in range(0, len(text), 50)], native, chat)

    def mode_slow(self, body, native, chat):
        self._stream(["a", "b", "c", "d"], native, chat, delay=0.05)

    def mode_retry(self, body, native, chat):
        self._json(429, {"error": {"message": "Rate limit reached.", "type": "rate_limit"}},
                   [("Retry-After", "1")])

    def mode_error(self, body, native, chat):
        self._json(500, {"error": {"message": "The server had an error.", "type": "server_error"}})

    def mode_reset(self, body, native, chat):
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def mode_redirect(self, body, native, chat):
        rest = self.path.strip("/").split("/", 1)[1] if "/" in self.path.strip("/") else ""
        self.send_response(307)
        self.send_header("location", f"/ok/{rest}")
        self.send_header("content-length", "0")
        self.end_headers()


class LeakServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, record_file: str):
        super().__init__((host, 0), Handler)
        self.record_file = record_file

    def handle_error(self, request, client_address):
        pass  # resets and hang-ups are the point


if __name__ == "__main__":
    server = LeakServer(sys.argv[1], sys.argv[2])
    print(server.server_address[1], flush=True)
    server.serve_forever()
