"""`limner serve`: an OpenAI-compatible HTTP server over the in-process engine.

    limner serve [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--parallel 4] [--max-queue 8]

Routes: POST /v1/chat/completions, POST /v1/completions (a `suffix` makes it
fill-in-the-middle), GET /v1/models, llama.cpp-style POST /infill, and an
unauthenticated GET /health. /infill's parsing and reply shape are in
serve_infill.py.

How a request flows: auth, parse (openai_schema), a check that the model
exists, then admission. Up to --parallel requests run at once, decoded
together in one batch (engine/scheduler.py; --parallel 1 runs one at a time
on the engine as before); the server admits those plus at most --max-queue
waiting ones and answers the rest 503 with Retry-After at once: a client can
back off instead of hanging on a queue that only grows. Each admitted request
runs `Scheduler.stream` in its own worker thread, which hands events to the
event loop; when the HTTP client goes away its `cancel` event is set and the
engine stops within a token (or leaves its queue). The first event is
awaited before the response starts, so a bad model file or an overlong
prompt still gets a proper HTTP status, streaming or not.
"""

import argparse
import asyncio
import hmac
import json
import math
import os
import socket
import sys
import threading
import time
import weakref
from typing import Any, AsyncIterator

from limner.engine import openai_schema as oa
from limner.engine.serve_log import recorder
from limner.events import Failure, Sample, Stopped, Text, Usage

DEFAULT_PORT = 8080
DEFAULT_MAX_QUEUE = 8
DEFAULT_PARALLEL = 4  # like llama-server's --parallel
# Engine failure kinds that are the client's fault (HTTP 400); others are ours (500).
CLIENT_FAULTS = {"model", "params", "template", "context"}


class Gate:
    """Admission control: `parallel` running requests and at most `max_queue` waiting."""

    def __init__(self, max_queue: int, parallel: int = 1):
        self.parallel = max(1, parallel)
        self.capacity = max(0, max_queue) + self.parallel
        self.active = 0
        self.avg_s = 2.0  # moving average of how long a request holds the engine
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.capacity:
                return False
            self.active += 1
            return True

    def leave(self, seconds: float) -> None:
        with self._lock:
            self.active -= 1
            self.avg_s = 0.8 * self.avg_s + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: about one request's time."""
        return max(1, min(60, math.ceil(self.avg_s)))


class Run:
    """One request on the engine: a worker thread feeding events to the event loop."""

    def __init__(self, engine, jobs: list, gate: Gate, record):
        """jobs: the job, or for an /infill that may not fit the context, smaller
        and smaller versions of it, tried in turn while the engine says it
        does not fit (`truncated` then says a smaller one ran)."""
        self.cancel = threading.Event()
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.jobs, self.engine, self.gate, self.record = jobs, engine, gate, record
        self.truncated = False
        self.started = time.monotonic()
        self.first_token_s: float | None = None
        self.text: list[str] = []
        self.usage: Usage | None = None
        self.samples: list[Sample] = []  # n > 1
        self.end: Stopped | Failure | None = None
        threading.Thread(target=self._work, name="limner-serve-job", daemon=True).start()

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): stop generating
            self.cancel.set()

    def _work(self) -> None:
        try:
            for i, job in enumerate(self.jobs):
                retry = False
                for ev in self.engine.stream(job, self.cancel):
                    if (isinstance(ev, Failure) and ev.kind == "context"
                            and i + 1 < len(self.jobs)):
                        retry = True  # nothing was generated: try the next smaller prompt
                        break
                    self._note(ev)
                    self._put(ev)
                if not retry:
                    break
                self.truncated = True
        except BaseException as e:  # noqa: BLE001 - the engine promises no exceptions; be sure
            ev = Failure("engine", f"the engine failed: {type(e).__name__}: {e}")
            self._note(ev)
            self._put(ev)
        finally:
            if self.end is None:  # a stream must end in Stopped or Failure
                ev = Failure("engine", "the engine stopped without finishing the reply")
                self._note(ev)
                self._put(ev)
            self._put(None)
            self.gate.leave(time.monotonic() - self.started)
            self.record(self)

    def _note(self, ev) -> None:
        if isinstance(ev, Text):
            if self.first_token_s is None:
                self.first_token_s = time.monotonic() - self.started
            self.text.append(ev.text)
        elif isinstance(ev, Usage):
            self.usage = ev
        elif isinstance(ev, Sample):
            if self.first_token_s is None:
                self.first_token_s = time.monotonic() - self.started
            self.samples.append(ev)
        else:
            self.end = ev

    async def events(self) -> AsyncIterator:
        while True:
            ev = await self.queue.get()
            if ev is None:
                return
            yield ev


def _error(status: int, message: str, *, type: str = "invalid_request_error", param=None,
           code=None, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(oa.error_body(message, type=type, param=param, code=code),
                        status_code=status, headers=headers)


def _failure_response(f: Failure):
    if f.kind == "stopping":
        return _error(503, f"{f.message}. {f.hint}", type="server_error", code=f.kind)
    if f.kind in CLIENT_FAULTS:
        code = "model_not_found" if f.kind == "model" else (
            "context_length_exceeded" if f.kind == "context" else None)
        return _error(400, f"{f.message} {f.hint}".strip(), code=code)
    return _error(500, f"{f.message} {f.hint}".strip(), type="server_error", code=f.kind)


def create_app(engine, *, api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               parallel: int = DEFAULT_PARALLEL, log: bool = True):
    """The FastAPI app over `engine`. Tests run it on a real uvicorn on loopback.
    Call `shutdown(app)` before `engine.close()`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from limner.engine.core import Job
    from limner.engine.models import default_for
    from limner.engine.scheduler import Scheduler

    app = FastAPI(title="limner serve", docs_url=None, redoc_url=None, openapi_url=None)
    if api_key:
        app.add_middleware(_BearerAuth, api_key=api_key)
    gate = Gate(max_queue, parallel)
    sched = Scheduler(engine, parallel)  # with 1 slot it hands every job to the engine
    app.state.engine, app.state.gate, app.state.scheduler = engine, gate, sched
    runs = weakref.WeakSet()  # in flight, for shutdown(); a finished Run drops out by itself
    app.state.runs = runs
    app.state.stopping = stopping = asyncio.Event()  # set on Ctrl-C (main's handle_exit)
    record = recorder(log)
    names: dict[str, frozenset] = {"known": frozenset()}
    priming: set = set()  # /infill warm-ups evaluating in the background

    def refresh_models() -> list:
        infos = engine.models()
        # Models whose file is broken stay known: the engine then says what is
        # wrong with the file, which helps more than "unknown model".
        names["known"] = frozenset(m.name for m in infos if m.path)  # swapped whole: no torn reads
        return infos

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no route {request.method} {request.url.path}; try /v1/chat/completions, "
                    "/v1/completions, /v1/models or /infill",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                  str(exc.detail))
        return _error(exc.status_code, msg, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")

    @app.get("/health")
    async def health():
        running = min(gate.active, gate.parallel)
        return {"status": "ok", "running": running, "waiting": gate.active - running,
                "max_queue": gate.capacity - gate.parallel, "parallel": gate.parallel}

    @app.get("/v1/models")
    async def list_models():
        infos = await asyncio.to_thread(refresh_models)
        return oa.models_list(infos, int(app.state.started))

    async def admit(request: Request, parse) -> tuple[Any, Any]:
        """(parsed, body) or an error response as the first item."""
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return _error(400, f"the request body is not valid JSON: {e}"), None
        try:
            parsed = parse(body)
        except oa.RequestError as e:
            return _error(e.status, e.message, param=e.param, code=e.code, type=e.type), None
        if parsed.model and parsed.model not in names["known"]:
            await asyncio.to_thread(refresh_models)  # models.toml may have changed
            if parsed.model not in names["known"]:
                return _error(400, f"unknown model {parsed.model!r}; available: "
                              f"{', '.join(sorted(names['known']))}", param="model",
                              code="model_not_found"), None
        if not gate.enter():
            return _error(503, f"the server is busy: {gate.capacity - gate.parallel} requests are already "
                          "waiting. Retry later.", type="server_error", code="queue_full",
                          headers={"Retry-After": str(gate.retry_after())}), None
        for warm in list(priming):  # a cache warm-up gives way to whatever comes next
            warm.cancel.set()
            if warm.end is not None:  # ended before it was added: `done` missed it
                priming.discard(warm)
        return parsed, body

    def start(request: Request, parsed: oa.Parsed, body: dict, done=None) -> Run:
        jobs = [Job(model=parsed.model, mode=parsed.mode, messages=parsed.messages,
                    prompt=parsed.prompt, prefix=prefix, suffix=parsed.suffix,
                    params=parsed.params, stop_spec=parsed.stop_spec, n=parsed.n)
                for prefix in (parsed.prefixes or [parsed.prefix])]
        run = Run(sched, jobs, gate, done or record)
        runs.add(run)
        run.meta = {"path": request.url.path, "headers": dict(request.headers), "body": body,
                    "parsed": parsed}
        return run

    async def first_event(request: Request, run: Run):
        """The first event, or None when the client left while we waited for the engine."""
        events = run.events()
        watcher = asyncio.create_task(_watch_disconnect(request, run.cancel))
        stop = asyncio.create_task(stopping.wait())
        try:
            nxt = asyncio.create_task(events.__anext__())
            done, _ = await asyncio.wait({nxt, watcher, stop}, return_when=asyncio.FIRST_COMPLETED)
            if nxt in done:
                return nxt.result(), events
            nxt.cancel()
            if stop in done:  # still loading or queued: answer now, not after the load
                run.cancel.set()
                return Failure("stopping", "limner serve is stopping",
                               "Send the request again when it is back."), events
            return None, events
        finally:
            watcher.cancel()
            stop.cancel()

    async def respond(request: Request, parse, shape):
        parsed, body = await admit(request, parse)
        if not isinstance(parsed, oa.Parsed):
            return parsed
        if parsed.kind == "infill" and parsed.params.get("max_tokens") == 0:
            # llama.vim's warm-up (n_predict 0): it wants no text, only a primed
            # prefix cache. Answer at once and evaluate the prompt in the
            # background; the next request admitted cancels it, keeping what
            # was evaluated so far.
            def done(r: Run) -> None:
                priming.discard(r)
                record(r)

            priming.add(start(request, parsed, body, done))
            return JSONResponse(shape.warm(parsed, parsed.model or default_for(parsed.mode)))
        run = start(request, parsed, body)
        try:
            first, events = await first_event(request, run)
        except BaseException:
            run.cancel.set()
            raise
        if first is None:  # the client is gone; nobody to answer
            return JSONResponse({}, status_code=499)
        if isinstance(first, Failure):
            return _failure_response(first)
        model = parsed.model or default_for(parsed.mode)
        if parsed.stream:
            return StreamingResponse(shape.stream(parsed, run, first, events, model),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watcher = asyncio.create_task(_watch_disconnect(request, run.cancel))
        try:
            async for _ in events:
                pass
        finally:
            watcher.cancel()
            if run.end is None:  # cancelled under us (server shutdown): stop the engine
                run.cancel.set()
        if isinstance(run.end, Failure):
            return _failure_response(run.end)
        return shape.whole(parsed, run)

    app.state.started = time.time()
    app.state.refresh_models = refresh_models

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await respond(request, oa.parse_chat, oa.OpenAIShape("chat"))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await respond(request, oa.parse_completion, oa.OpenAIShape("completion"))

    @app.post("/infill")
    async def infill(request: Request):
        from limner.engine import serve_infill

        return await respond(request, serve_infill.parse_infill, serve_infill.InfillShape())

    return app


class _BearerAuth:
    """Pure ASGI (not BaseHTTPMiddleware, which gets in the way of streaming and
    disconnect detection): every route but /health needs `Authorization: Bearer KEY`."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") == "/health":
            return await self.app(scope, receive, send)
        got = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                got = value
        scheme, _, token = got.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        response = _error(401, "Incorrect or missing API key: send `Authorization: Bearer KEY` "
                          "with the key `limner serve` was started with.",
                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


async def _watch_disconnect(request, cancel: threading.Event) -> None:
    """Set `cancel` when the HTTP client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="limner serve",
        description="An OpenAI-compatible HTTP server over limner's embedded engine.")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ap.add_argument("--api-key", default=os.environ.get("LIMNER_API_KEY") or None,
                    help="require `Authorization: Bearer KEY` (default $LIMNER_API_KEY)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for the engine")
    ap.add_argument("--ctx", type=int, default=None,
                    help="context size (default: the model's, capped at 8192)")
    ap.add_argument("--batch", type=int, default=None, help="prompt batch size (default 512)")
    ap.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL,
                    help="requests decoded together in one batch; more wait "
                         f"(default {DEFAULT_PARALLEL}; 1 = one at a time)")
    ap.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                    help=f"requests allowed to wait; more get 503 (default {DEFAULT_MAX_QUEUE})")
    ap.add_argument("--preload", action="append", default=[], metavar="MODEL",
                    help="load this model before accepting requests (repeatable)")
    ap.add_argument("--no-log", action="store_true", help="do not record exchanges")
    ap.add_argument("--verbose", action="store_true", help="let llama.cpp's logging through")
    return ap


def _fail(message: str, hint: str) -> int:
    sys.stdout.write(f"\n\n!error\n\n{message}\n{hint}\n")
    sys.stdout.flush()
    return 1


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    from limner.guard import is_local

    shown_host = f"[{a.host}]" if ":" in a.host else a.host
    if not a.api_key and not is_local(f"http://{shown_host}"):
        # Anyone who can reach the port could use the engine and read what
        # others send it: a non-loopback address needs a key (guard, issue 11).
        return _fail(f"refusing to listen on {a.host} without an API key: "
                     "any machine that can reach it could use the engine",
                     "Pass --api-key KEY (or set $LIMNER_API_KEY), or listen on 127.0.0.1.")
    try:
        import uvicorn
        from limner.engine.core import Engine
    except ImportError as e:
        return _fail(f"`limner serve` needs {e.name}, which is not installed.",
                     "Run `make setup` (it installs the `engine` extra).")
    try:
        family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((a.host, a.port))
    except OSError as e:
        return _fail(f"cannot listen on {a.host}:{a.port}: {e.strerror or e}",
                     "Pick another --port, or stop whatever holds this one.")
    engine = Engine(n_threads=a.threads, n_ctx=a.ctx, n_batch=a.batch, verbose=a.verbose)
    for name in a.preload:
        failure = _preload(engine, name)
        if failure:
            sock.close()
            return _fail(failure.message, failure.hint)
    app = create_app(engine, api_key=a.api_key, max_queue=a.max_queue, parallel=a.parallel,
                     log=not a.no_log)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(f"limner serve: http://{shown}:{port}/v1 (OpenAI API), /infill; "
                     f"{'API key required' if a.api_key else 'no API key'}; "
                     f"{a.parallel} in parallel, up to {a.max_queue} waiting. Ctrl-C stops.\n")
    config = uvicorn.Config(app, log_level="info" if a.verbose else "warning",
                            access_log=a.verbose, timeout_graceful_shutdown=3)
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # Ctrl-C ends the generations first, so their streams close and
            # uvicorn's graceful shutdown has nothing to force-cancel (which
            # printed an ASGI traceback per open stream).
            for run in list(app.state.runs):
                run.cancel.set()
            app.state.stopping.set()  # requests still waiting for a first token
            super().handle_exit(sig, frame)

    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it shut down on; that is a normal stop
    finally:
        shutdown(app)
        engine.close()
    sys.stderr.write("limner serve: stopped\n")
    return 0


def shutdown(app) -> None:
    """Stop every generation and wait for the engine to be idle: closing it
    under a decode still running reads freed weights (a segfault on Ctrl-C
    with requests in flight)."""
    for run in list(app.state.runs):
        run.cancel.set()
    app.state.scheduler.close()
    app.state.engine._lock.acquire(None)  # cancelled jobs end within a token; kept until exit


def _preload(engine, name: str) -> Failure | None:
    from limner.engine import models as registry

    try:
        engine.load(name)
    except registry.ModelError as e:
        return Failure("model", e.message, e.hint)
    except Exception as e:  # noqa: BLE001 - a file llama.cpp rejects
        return Failure("model", f"cannot load {name}: {type(e).__name__}: {e}",
                       "Check the file with `limner models`.")
    return None
