"""The resident engine process: one per user, models stay loaded between calls.

Started by engine/client.py on first use (detached, its own session), it
listens on a Unix socket in the runtime dir (engine/paths.py) and serves
JSON-line requests (engine/protocol.py), one connection per thread. The
Engine's fair lock queues jobs in arrival order. A client that closes its
socket cancels its job. After LIMNER_ENGINE_IDLE seconds (default 600)
without work it removes its socket and exits.

Its stdout and stderr are engine.log, and everything lands there: llama.cpp's
own log (quiet.keep_log) and, if it crashes, Python's faulthandler dump of
every thread. Its parent is supervisor.py, which records a death by signal.

Run by hand for debugging: python -m limner.engine.daemon --dir DIR
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from limner.engine import paths, protocol

MAX_REQUEST = 64 * 1024 * 1024  # a 64 MiB buffer is already far past any context


class Daemon:
    def __init__(self, rdir: Path, idle: float, verbose: bool):
        from limner.engine.core import Engine

        self.dir = rdir
        self.sock_path = rdir / protocol.SOCKET_NAME
        self.pid_path = rdir / protocol.PID_NAME
        self.idle = idle
        self.engine = Engine(verbose=verbose)
        self.active = 0
        self.last_activity = time.monotonic()
        self.stopping = threading.Event()
        self._mu = threading.Lock()

    # -- lifecycle ----------------------------------------------------------

    def listen(self) -> socket.socket:
        (self.dir / protocol.STAMP_NAME).write_text(protocol.code_stamp())
        try:
            self.sock_path.unlink()  # a stale socket from a crashed engine
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window for others
        try:
            srv.bind(str(self.sock_path))
        finally:
            os.umask(old)
        os.chmod(self.sock_path, 0o600)
        srv.listen(64)
        srv.settimeout(0.5)
        self.pid_path.write_text(f"{os.getpid()}\n")
        return srv

    def run(self) -> int:
        srv = self.listen()
        log(f"engine {os.getpid()} listening on {self.sock_path} (idle exit after {self.idle:.0f}s)")
        # Import llama.cpp while the first client sends its request.
        threading.Thread(target=self._preimport, daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = srv.accept()
                except socket.timeout:
                    if self._idle_expired():
                        log("idle timeout: exiting")
                        break
                    continue
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        finally:
            srv.close()
            self._cleanup()
        return 0

    def _preimport(self):
        from limner.engine import quiet

        quiet.import_llama(self.engine.verbose)
        # Jinja2 (chat templates) loads while the first job's model loads in
        # C code, which releases the GIL: 0.1 s off a cold start.
        import jinja2.sandbox  # noqa: F401

    def _idle_expired(self) -> bool:
        with self._mu:
            return self.active == 0 and time.monotonic() - self.last_activity > self.idle

    def _cleanup(self) -> None:
        # Remove our files only if they are still ours (a new engine may own them).
        try:
            if self.pid_path.read_text().strip() == str(os.getpid()):
                self.sock_path.unlink(missing_ok=True)
                self.pid_path.unlink(missing_ok=True)
        except OSError:
            pass

    # -- one connection -----------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        with self._mu:
            self.active += 1
        try:
            request = _read_line(conn)
            if request is None:
                return
            op = request.get("op")
            if op == "stream":
                self._stream(conn, request)
            elif op == "status":
                _send(conn, {"event": "status", **self._status()})
            elif op == "stop":
                _send(conn, {"event": "status", "stopping": True, **self._status()})
                self.stopping.set()
            else:
                _send(conn, {"event": "failure", "kind": "engine", "message": f"unknown op {op!r}"})
        except OSError:
            pass  # the client went away; nothing to tell it
        finally:
            conn.close()
            with self._mu:
                self.active -= 1
                self.last_activity = time.monotonic()

    def _status(self) -> dict:
        return {"pid": os.getpid(), "protocol": protocol.VERSION, "socket": str(self.sock_path),
                "idle_timeout_s": self.idle, **self.engine.status()}

    def _stream(self, conn: socket.socket, request: dict) -> None:
        job = protocol.job_from_wire(request.get("job") or {})
        cancel = threading.Event()
        # The client sends nothing after its request, so recv() returns only
        # when it closes the socket (Ctrl-C, kill): cancel its job at once.
        threading.Thread(target=_watch_hangup, args=(conn, cancel), daemon=True).start()
        events = self.engine.stream(job, cancel)
        try:
            for ev in events:
                if cancel.is_set():
                    break
                _send(conn, protocol.event_to_wire(ev))
        except OSError:
            cancel.set()
        finally:
            events.close()  # releases the engine's lock if we left early


def _watch_hangup(conn: socket.socket, cancel: threading.Event) -> None:
    try:
        while not cancel.is_set():
            if not conn.recv(4096):
                break
    except OSError:
        pass
    cancel.set()


def _read_line(conn: socket.socket) -> dict | None:
    import json

    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > MAX_REQUEST:
            _send(conn, {"event": "failure", "kind": "engine", "message": "request too large"})
            return None
    try:
        obj = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        _send(conn, {"event": "failure", "kind": "engine", "message": "request is not JSON"})
        return None
    return obj if isinstance(obj, dict) else None


def _send(conn: socket.socket, obj: dict) -> None:
    conn.sendall(protocol.encode(obj))


def log(message: str) -> None:
    sys.stderr.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="limner-engine")
    p.add_argument("--dir", help="runtime directory (default: limner's)")
    p.add_argument("--idle", type=float, help="seconds without work before exiting")
    args = p.parse_args(argv)
    if args.dir:
        os.environ["LIMNER_RUNTIME_DIR"] = args.dir
    rdir = paths.runtime_dir()
    import faulthandler

    from limner.engine import crash, quiet

    faulthandler.enable(file=sys.stderr, all_threads=True)  # a crash leaves its stacks in the log
    quiet.keep_log()
    quiet.calm_openmp()
    refused = crash.refusal()
    if refused:  # the client checks first; this covers an engine started by hand
        log(f"refusing to start: {refused[0]}. {refused[1]}")
        return 78  # EX_CONFIG
    log(f"engine {os.getpid()} starting; llama.cpp build {crash.build_key() or 'not from scripts/setup'}")
    verbose = os.environ.get("LIMNER_VERBOSE") == "1"
    daemon = Daemon(rdir, args.idle or paths.idle_seconds(), verbose)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the client
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
