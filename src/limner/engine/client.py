"""Talking to the resident engine: connect, or start one, then stream events.

`stream(job)` is what the embedded backend calls. It connects to this
user's engine socket; if nothing answers, it starts the engine (a detached
process, see daemon.py) under a lock file so racing clients start only
one. If an engine was there before and died (kill -9, OOM), it says so in
one line on stderr and starts a fresh one. The engine runs under a
supervisor (supervisor.py) that records a death by signal, so a reply cut
off by a crash ends in an `!error` that names the signal and the model
(crash.py), and a build that keeps crashing is named as such, not retried.

LIMNER_ENGINE=inproc skips all this and runs the Engine inside the calling
process (tests, benchmarks, debugging).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from limner.engine import crash, paths, protocol
from limner.events import Event, Failure, Stopped, Text

START_TIMEOUT_S = float(os.environ.get("LIMNER_ENGINE_START_TIMEOUT", "60"))


class EngineUnavailable(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def inproc() -> bool:
    """Run the engine in this process: LIMNER_ENGINE=inproc, or --verbose
    (so llama.cpp's log reaches the terminal that asked for it)."""
    return (os.environ.get("LIMNER_ENGINE", "").lower() == "inproc"
            or os.environ.get("LIMNER_VERBOSE") == "1")


# ---------------------------------------------------------------- in-process

_engine = None
_engine_lock = threading.Lock()


def local_engine():
    """The process-wide Engine for LIMNER_ENGINE=inproc."""
    global _engine
    with _engine_lock:
        if _engine is None:
            refused = crash.refusal()
            if refused:
                raise EngineUnavailable(*refused)
            from limner.engine.core import Engine

            _engine = Engine(verbose=os.environ.get("LIMNER_VERBOSE") == "1")
        return _engine


def inproc_stream(job, cancel: threading.Event | None = None) -> Iterator[Event]:
    """local_engine().stream(job), with a refused build as a Failure."""
    try:
        engine = local_engine()
    except EngineUnavailable as e:
        yield Failure("engine", e.message, e.hint)
        return
    yield from engine.stream(job, cancel)


# ---------------------------------------------------------------- the daemon


def _files(rdir: Path) -> tuple[Path, Path, Path, Path]:
    return (rdir / protocol.SOCKET_NAME, rdir / protocol.LOCK_NAME,
            rdir / protocol.PID_NAME, rdir / protocol.LOG_NAME)


def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        raise
    return s


@contextmanager
def _flock(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (we spawned it in this process) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_engine(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"limner.engine.daemon" in f.read()
    except OSError:
        return False


def connect(spawn: bool = True) -> socket.socket | None:
    """A connected socket to this user's engine; starts one if needed (and spawn)."""
    rdir = paths.runtime_dir()
    sock_path, lock_path, pid_path, log_path = _files(rdir)
    if not spawn or _same_code(rdir):
        try:
            return _connect(sock_path)
        except OSError:
            if not spawn:
                return None
    with _flock(lock_path):
        if not _same_code(rdir):
            _retire(sock_path, pid_path)
        try:
            return _connect(sock_path)  # another client started it meanwhile
        except OSError:
            pass
        refused = crash.refusal()
        if refused:  # a llama.cpp built for another CPU would die on its first decode
            raise EngineUnavailable(*refused)
        notice = ""
        try:
            pid = int(pid_path.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid:
            # A clean exit removes the pid file; finding it means the engine died,
            # or hangs without answering (then it is ours to replace).
            notice = crash.start_notice(rdir, pid)
            if _pid_alive(pid) and _is_engine(pid):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        for stale in (sock_path, pid_path):
            stale.unlink(missing_ok=True)
        started = time.time()
        proc = _spawn(rdir, log_path)
        if notice:
            sys.stderr.write(notice)
            sys.stderr.flush()
        if os.environ.get("LIMNER_VERBOSE") == "1":
            sys.stderr.write(f"limner: started the engine (pid {proc.pid}); its log: {log_path}\n")
        return _wait_ready(proc, sock_path, log_path, started)


def _same_code(rdir: Path) -> bool:
    try:
        return (rdir / protocol.STAMP_NAME).read_text() == protocol.code_stamp()
    except FileNotFoundError:
        return True  # no engine has run here yet
    except OSError:
        return False


def _retire(sock_path: Path, pid_path: Path) -> None:
    """Stop an engine that runs older code; its successor starts right after."""
    try:
        s = _connect(sock_path)
    except OSError:
        return  # not running: the caller's crash check takes it from here
    with s:
        try:
            s.sendall(protocol.encode({"op": "stop"}))
            s.makefile("rb").readline()
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while pid_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _spawn(rdir: Path, log_path: Path) -> subprocess.Popen:
    try:
        if log_path.stat().st_size > 4 * 1024 * 1024:
            log_path.replace(log_path.with_suffix(".log.1"))
    except OSError:
        pass
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        return subprocess.Popen(
            # The supervisor runs the engine as its child and records how it dies.
            [sys.executable, "-m", "limner.engine.supervisor", "--dir", str(rdir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
            start_new_session=True,  # Ctrl-C in the user's terminal must not reach it
            cwd="/",
        )


def _wait_ready(proc: subprocess.Popen, sock_path: Path, log_path: Path,
                started: float) -> socket.socket:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return _connect(sock_path)
        except OSError:
            pass
        if proc.poll() is not None:
            rec = crash.read_exit(sock_path.parent, None, started)
            how = f"crashed ({rec.get('name')})" if rec else f"exited (status {proc.returncode})"
            raise EngineUnavailable(f"the engine {how} while starting", f"See its log: {log_path}")
        time.sleep(0.01)
    raise EngineUnavailable(f"the engine did not start within {START_TIMEOUT_S:.0f}s",
                            f"See its log: {log_path}")


def request(op: str, spawn: bool = False) -> dict | None:
    """One control request (status, stop); None when no engine is running."""
    s = connect(spawn=spawn)
    if s is None:
        return None
    with s:
        s.sendall(protocol.encode({"op": op}))
        f = s.makefile("rb")
        line = f.readline()
    return json.loads(line) if line else None


class Connection:
    """One streamed job on the resident engine. close() cancels it."""

    def __init__(self, job):
        self.sock = None
        self.job = job
        self._closed = False

    def close(self) -> None:
        self._closed = True
        s = self.sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)  # the engine sees EOF and cancels
            except OSError:
                pass

    def events(self) -> Iterator[Event]:
        try:
            self.sock = connect(spawn=True)
        except EngineUnavailable as e:
            yield Failure("engine", e.message, e.hint)
            return
        except OSError as e:
            yield Failure("engine", f"cannot reach the engine: {e}",
                          "Check the runtime dir (LIMNER_RUNTIME_DIR), or use LIMNER_ENGINE=inproc.")
            return
        since = time.time()
        rdir = paths.runtime_dir()
        log_path = rdir / protocol.LOG_NAME
        engine_pid = crash.peer_pid(self.sock) or _pid_in(rdir)
        if self._closed:  # cancelled while we connected
            self.sock.close()
            return
        got_text = False
        try:
            self.sock.sendall(protocol.encode({"op": "stream", "job": protocol.job_to_wire(self.job)}))
            reader = self.sock.makefile("rb")
            for raw in reader:
                try:
                    ev = protocol.event_from_wire(json.loads(raw))
                except ValueError:
                    ev = Failure("engine", "the engine sent a line that is not JSON",
                                 f"This is a limner bug; see {log_path}")
                if ev is None:
                    continue
                got_text = got_text or isinstance(ev, Text)
                if isinstance(ev, Stopped):
                    self._forget_crashes(rdir)  # before yielding: the caller may stop reading here
                yield ev
                if isinstance(ev, (Stopped, Failure)):
                    return
        except OSError:
            pass
        finally:
            self.sock.close()
        if not self._closed:
            yield self._died(rdir, engine_pid, since, got_text)

    def _model(self) -> str:
        from limner.engine import models

        return self.job.model or models.default_for(self.job.mode)

    def _forget_crashes(self, rdir: Path) -> None:
        try:
            crash.forget(rdir, self._model())
        except OSError:
            pass

    def _died(self, rdir: Path, pid: int, since: float, got_text: bool) -> Failure:
        """The engine went away mid-job: name how, from its supervisor's record."""
        try:
            rec = crash.wait_exit(rdir, pid, since) if pid else None
            message, hint = crash.explain(rdir, self._model(), rec, got_text)
            if rec:
                crash.mark_reported(rdir, rec)
        except Exception:  # noqa: BLE001 - the report of a crash must not crash
            message, hint = ("the engine stopped unexpectedly in the middle of the reply",
                             f"{crash.RUN_AGAIN} Its log: {rdir / protocol.LOG_NAME}")
        return Failure("engine", message, hint)


def _pid_in(rdir: Path) -> int:
    try:
        return int((rdir / protocol.PID_NAME).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def stream(job, cancel: threading.Event | None = None) -> Iterator[Event]:
    """Events for one job, from the resident engine or (LIMNER_ENGINE=inproc) in-process.

    Setting `cancel` stops the job; for the resident engine that closes the
    socket (checked every 50 ms by a helper thread that ends with the stream).
    """
    if inproc():
        yield from inproc_stream(job, cancel)
        return
    conn = Connection(job)
    finished = threading.Event()
    if cancel is not None:
        def watch():
            while not finished.is_set():
                if cancel.wait(0.05):
                    conn.close()
                    return

        threading.Thread(target=watch, daemon=True).start()
    try:
        yield from conn.events()
    finally:
        finished.set()
