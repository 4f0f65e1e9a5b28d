"""A small HTTP server on loopback that answers like an LLM server, or fails on purpose.

The first path segment picks the behaviour, so one server covers every case
and a buffer chooses with its `!api` line:

    !api http://127.0.0.1:PORT/<mode>/v1        -> POST /<mode>/v1/chat/completions

Modes (arguments after a colon, e.g. `status:401`, `disconnect:3`):

    ok            OpenAI SSE, llama-server style: deltas, then usage + timings
    ok-bare       OpenAI SSE with no usage or timings (like llama_cpp.server)
    nostream      a plain application/json answer (a server that ignores "stream")
    native        llama.cpp's own /completion and /infill SSE ({"content", "stop", "timings"})
    anthropic     Anthropic Messages SSE, with thinking deltas before the text
    status:N      HTTP N with an OpenAI-shaped JSON error
    status-text:N HTTP N with a plain-text body
    ctx-llama     HTTP 400, llama.cpp's exceed_context_size_error shape
    ctx-openai    HTTP 400, OpenAI's context_length_exceeded shape
    stream-error  200, then an {"error": ...} event mid-stream (llama-server does this)
    disconnect:N  N text chunks, then the socket closes mid-chunked-body
    malformed     one good chunk, then `data: this is not json`
    notjson       200 text/html that is neither JSON nor SSE
    badutf8       two good chunks, then bytes that are not UTF-8
    badutf8-late  three good events and then bad bytes, all in one write (so one read)
    stall:S       one chunk, then S seconds of silence (past the client's read timeout)
    silent:S      read the request, then send nothing at all (no status line) for S
                  seconds or until the client hangs up
    slow:N        N chunks, one every 0.1 s (for Ctrl-C / SIGTERM tests)
    busy:N:S      the server's first N requests get 429 with `Retry-After: S`, later ones `ok`

FaultServer(default="busy:3:1") also answers at the root (/v1/chat/completions)
with that mode, for a client (a router) that cannot put a mode in the path.

Every request is recorded in `server.requests` as (path, headers, body bytes).
Run it by hand with `python tests/faultserver.py` (prints its base URL).
"""
from __future__ import annotations

import json
import select
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["Hello", ",", " this", " is", " the", " fault", " server", "."]
# Numbers the `ok` mode reports, so tests can check the !stats note uses them.
USAGE = {"prompt_tokens": 17, "completion_tokens": len(WORDS), "total_tokens": 17 + len(WORDS)}
TIMINGS = {"prompt_n": 17, "prompt_ms": 34.0, "predicted_n": len(WORDS),
           "predicted_ms": 80.0, "cache_n": 5}


def openai_chunk(text: str, chat: bool, finish: str | None = None) -> dict:
    if chat:
        choice = {"index": 0, "delta": {"content": text} if text else {},
                  "finish_reason": finish}
        return {"object": "chat.completion.chunk", "choices": [choice]}
    return {"object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each event is its own small write; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK adds ~40 ms stalls that no real server has.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # keep test output clean
        pass

    # -- plumbing

    def _start(self, status=200, ctype="text/event-stream", chunked=True, length=None):
        self.send_response(status)
        self.send_header("content-type", ctype)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        if length is not None:
            self.send_header("content-length", str(length))
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, obj) -> None:
        payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        self._chunk(f"data: {payload}\n\n".encode())

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, obj) -> None:
        body = json.dumps(obj).encode()
        self._start(status, "application/json", chunked=False, length=len(body))
        self.wfile.write(body)
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection mid-body: no terminating chunk."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(2)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._json(200, {"object": "list", "data": [{"id": "fault"}]})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        self.server.requests.append((self.path, dict(self.headers), body))
        first = self.path.strip("/").split("/")[0]
        if first == "v1" and self.server.default:
            first = self.server.default
        mode, _, arg = first.partition(":")
        chat = self.path.endswith("chat/completions")
        handler = getattr(self, "mode_" + mode.replace("-", "_"), None)
        if handler is None:
            self._json(404, {"error": {"message": f"no fault mode {mode!r}"}})
            return
        try:
            handler(arg, chat)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up (Ctrl-C tests do this on purpose)

    # -- modes

    def _words(self, chat, words=WORDS, delay=0.0):
        for w in words:
            self._event(openai_chunk(w, chat))
            if delay:
                time.sleep(delay)

    def mode_ok(self, arg, chat):
        self._start()
        self._words(chat)
        final = openai_chunk("", chat, "stop")
        final.update(usage=USAGE, timings=TIMINGS)
        self._event(final)
        self._event("[DONE]")
        self._end()

    def mode_busy(self, arg, chat):
        n, _, wait = arg.partition(":")
        with self.server.lock:
            self.server.busy_seen += 1
            busy = self.server.busy_seen <= int(n or 1)
        if not busy:
            return self.mode_ok("", chat)
        body = json.dumps({"error": {"message": "too many requests", "type": "rate_limit"}}).encode()
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", wait or "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def mode_ok_bare(self, arg, chat):
        self._start()
        self._words(chat)
        self._event(openai_chunk("", chat, "length"))
        self._event("[DONE]")
        self._end()

    def mode_nostream(self, arg, chat):
        text = "".join(WORDS)
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "stop"} if chat else
                  {"index": 0, "text": text, "finish_reason": "stop"})
        self._json(200, {"object": "chat.completion", "choices": [choice], "usage": USAGE})

    def mode_native(self, arg, chat):
        self._start()
        for w in WORDS:
            self._event({"content": w, "stop": False})
        self._event({"content": "", "stop": True, "stopped_limit": arg == "limit",
                     "stopped_eos": arg != "limit", "timings": TIMINGS,
                     "tokens_evaluated": 17, "tokens_predicted": len(WORDS)})
        self._end()

    def mode_anthropic(self, arg, chat):
        self._start()

        def ev(name, obj):
            self._chunk(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode())

        ev("message_start", {"type": "message_start", "message": {
            "usage": {"input_tokens": 21, "output_tokens": 1}}})
        ev("content_block_start", {"type": "content_block_start", "index": 0})
        for t in ["Let me", " think."]:
            ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "thinking_delta", "thinking": t}})
        ev("ping", {"type": "ping"})
        for w in WORDS:
            ev("content_block_delta", {"type": "content_block_delta", "index": 1,
                                       "delta": {"type": "text_delta", "text": w}})
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                             "usage": {"output_tokens": 9}})
        ev("message_stop", {"type": "message_stop"})
        self._end()

    def mode_status(self, arg, chat):
        status = int(arg or 500)
        messages = {401: "Incorrect API key provided: sk-abc***.",
                    403: "You are not allowed to use this model.",
                    404: "The model `nope` does not exist.",
                    429: "Rate limit reached for requests.",
                    500: "The server had an error while processing your request."}
        self._json(status, {"error": {"message": messages.get(status, f"failure {status}"),
                                      "type": "server_error", "code": None}})

    def mode_status_text(self, arg, chat):
        body = f"upstream failed with {arg}\n".encode()
        self._start(int(arg or 502), "text/plain", chunked=False, length=len(body))
        self.wfile.write(body)

    def mode_ctx_llama(self, arg, chat):
        self._json(400, {"error": {
            "code": 400, "message": "the request exceeds the available context size, "
            "try increasing it", "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000, "n_ctx": 4096}})

    def mode_ctx_openai(self, arg, chat):
        self._json(400, {"error": {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"}})

    def mode_stream_error(self, arg, chat):
        self._start()
        self._words(chat, WORDS[:2])
        self._event({"error": {"code": 500, "message": "llama_decode failed: out of memory",
                               "type": "server_error"}})
        self._end()

    def mode_disconnect(self, arg, chat):
        self._start()
        self._words(chat, WORDS[: int(arg or 3)])
        self._cut()

    def mode_malformed(self, arg, chat):
        self._start()
        self._words(chat, WORDS[:1])
        self._event("this is not json")
        self._event("[DONE]")
        self._end()

    def mode_notjson(self, arg, chat):
        body = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
        self._start(200, "text/html", chunked=False, length=len(body))
        self.wfile.write(body)

    def mode_badutf8(self, arg, chat):
        self._start()
        self._words(chat, WORDS[:2])
        self._chunk(b'data: {"choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n')
        self._words(chat, WORDS[2:])
        self._event("[DONE]")
        self._end()

    def mode_badutf8_late(self, arg, chat):
        self._start()
        good = b"".join(b"data: %s\n\n" % json.dumps(openai_chunk(w, chat)).encode()
                        for w in WORDS[:3])
        bad = b'data: {"choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n'
        self._chunk(good + bad)
        self._words(chat, WORDS[3:])
        self._event("[DONE]")
        self._end()

    def mode_silent(self, arg, chat):
        self.close_connection = True
        deadline = time.monotonic() + float(arg or 60)
        while time.monotonic() < deadline:  # until the client gives up and closes
            ready, _, _ = select.select([self.connection], [], [], 0.1)
            if ready and not self.connection.recv(4096):
                return

    def mode_stall(self, arg, chat):
        self._start()
        self._words(chat, WORDS[:1])
        time.sleep(float(arg or 5))
        self._cut()

    def mode_slow(self, arg, chat):
        self._start()
        n = int(arg or 100)
        self._words(chat, [f" w{i}" for i in range(n)], delay=0.1)
        self._event(openai_chunk("", chat, "stop"))
        self._event("[DONE]")
        self._end()


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, default: str | None = None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict, bytes]] = []
        self.default = default  # the mode for /v1/... paths with no mode segment
        self.busy_seen = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def handle_error(self, request, client_address):
        # A client hanging up (Ctrl-C tests, close()) is expected, not news.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, mode: str) -> str:
        """The !api URL for a mode, e.g. url("status:401") -> http://…/status:401/v1."""
        return f"{self.base}/{mode}/v1"

    def start(self) -> "FaultServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


if __name__ == "__main__":
    server = FaultServer()
    print(server.base, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
