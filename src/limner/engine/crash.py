"""Naming an engine crash: the exit record, the crash history, the messages.

The resident engine runs under a supervisor (supervisor.py) that waits for
it. When the engine dies by a signal the supervisor writes engine.exit.json
(pid, signal, time, build key). A client cut off in the middle of a reply
reads that record for the pid it was talking to and names the signal in its
`!error`, with the model from its own job.

Two crashes in a row on the same model and llama.cpp build mean the build
crashes on this CPU, and "run again" would loop: the `!error` then says how
to rebuild (build.crash_advice). The history is engine.crashes.json; a
reply that ends normally resets its model's count.

Stdlib only, and cheap: the client imports this, never llama.cpp.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import time
from pathlib import Path

from limner.engine import protocol

# Signals that mean the code itself failed (a bad instruction, a bad address),
# as opposed to something outside killing it (SIGKILL: OOM or a user).
CRASH_SIGNALS = frozenset(int(getattr(signal, n)) for n in
                          ("SIGSEGV", "SIGILL", "SIGBUS", "SIGFPE", "SIGABRT", "SIGSYS", "SIGTRAP")
                          if hasattr(signal, n))
WAIT_S = 2.0  # how long a cut-off client waits for the supervisor's record
IN_A_ROW = 2  # crashes in a row (same model, same build) that stop "run again"
RUN_AGAIN = "Run again: a fresh engine starts by itself."


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ----------------------------------------------------------------- the build


def build_key() -> str:
    """The key of the llama.cpp build in this venv ("" if setup did not build it)."""
    try:
        from limner.engine import build

        return str((build.installed_record() or {}).get("key") or "")
    except Exception:  # noqa: BLE001 - a missing or odd record must not stop anything
        return ""


def refusal() -> tuple[str, str] | None:
    """(message, hint) when this venv's llama.cpp was built for a CPU with
    features this one lacks: it would die on its first instruction of those."""
    try:
        from limner.engine import build

        record = build.installed_record()
        missing = build.missing_features(record) if record else []
    except Exception:  # noqa: BLE001 - no verdict is better than a traceback
        return None
    if not missing:
        return None
    return (f"this venv's llama.cpp was built for another CPU: this one lacks {', '.join(missing)}",
            "Rebuild it for this machine: scripts/setup --rebuild-engine")


# ---------------------------------------------------------- the exit record


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _write_json(path: Path, obj: dict) -> None:
    # Whole or not at all: a reader polling for it never sees half a record.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def write_exit(rdir: Path, pid: int, signum: int) -> dict:
    """The supervisor's record of its engine's death by a signal."""
    rec = {"pid": pid, "signal": signum, "name": signal_name(signum), "time": time.time(),
           "key": build_key()}
    _write_json(rdir / protocol.EXIT_NAME, rec)
    return rec


def read_exit(rdir: Path, pid: int | None, since: float = 0.0) -> dict | None:
    """The record for engine `pid` (None: any), if it died by a signal after
    `since` (a pid can be reused: an old record must not name a new death)."""
    rec = _read_json(rdir / protocol.EXIT_NAME)
    if rec and pid in (None, rec.get("pid")) and float(rec.get("time") or 0) >= since - 1:
        return rec
    return None


def wait_exit(rdir: Path, pid: int, since: float, timeout: float = WAIT_S) -> dict | None:
    """Poll briefly: the socket closes as the engine dies, a moment before its
    supervisor has waited for it and written the record."""
    deadline = time.monotonic() + timeout
    while True:
        rec = read_exit(rdir, pid, since)
        if rec or time.monotonic() >= deadline:
            return rec
        time.sleep(0.02)


def mark_reported(rdir: Path, rec: dict) -> None:
    """A client has told its user: the next call need not say it again."""
    try:
        _write_json(rdir / protocol.EXIT_NAME, dict(rec, reported=True))
    except OSError:
        pass


def start_notice(rdir: Path, stale_pid: int) -> str:
    """What to print on stderr when a call finds the last engine dead."""
    rec = read_exit(rdir, stale_pid)
    if rec and rec.get("reported"):
        return ""  # an !error already said it
    if rec and rec.get("signal") in CRASH_SIGNALS:
        return (f"limner: the engine crashed ({rec.get('name')}) after the last call; started a new one "
                f"(its log: {rdir / protocol.LOG_NAME})\n")
    return "limner: the engine stopped unexpectedly; started a new one\n"


def peer_pid(sock: socket.socket) -> int:
    """The pid at the other end of a Unix socket (Linux), else 0."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0]
    except (OSError, AttributeError):
        return 0


# ------------------------------------------------------------ the history


def _update(rdir: Path, change) -> object:
    """Read-modify-write engine.crashes.json under a lock on the file itself."""
    fd = os.open(rdir / protocol.CRASHES_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            try:
                data = json.loads(f.read() or "{}")
            except ValueError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            result = change(data)
            f.seek(0)
            f.truncate()
            json.dump(data, f)
        return result
    finally:
        os.close(fd)  # and with it the lock


def record_crash(rdir: Path, model: str, key: str, pid: int) -> int:
    """Count this crash for `model`; returns its crashes in a row with this build.

    Clients queued on the same engine all see its death: it counts once."""
    def change(data: dict) -> int:
        models = data.setdefault("models", {})
        seen = data.setdefault("pids", [])
        entry = models.get(model)
        if not entry or entry.get("key") != key:
            entry = models[model] = {"key": key, "count": 0}
        if pid not in seen:
            entry["count"] += 1
            seen.append(pid)
            del seen[:-16]
        entry["time"] = time.time()
        return entry["count"]

    return _update(rdir, change)


def forget(rdir: Path, model: str) -> None:
    """A reply for `model` ended normally: its crashes are no longer in a row."""
    path = rdir / protocol.CRASHES_NAME
    if not path.exists():
        return  # the usual case: no crash ever, no cost but a stat
    _update(rdir, lambda data: data.get("models", {}).pop(model, None))


# ------------------------------------------------------------ the message


def explain(rdir: Path, model: str, rec: dict | None, got_text: bool) -> tuple[str, str]:
    """(message, hint) for a reply cut off because the engine died."""
    log = f"Its log: {rdir / protocol.LOG_NAME}"
    if rec is None:  # no supervisor record: it exited, or died unobserved
        return ("the engine stopped unexpectedly in the middle of the reply", f"{RUN_AGAIN} {log}")
    signum, name = int(rec.get("signal") or 0), str(rec.get("name") or "")
    doing = f"while decoding with {model}" if got_text else f"while loading {model} or reading the prompt"
    if signum not in CRASH_SIGNALS:
        return (f"the engine was killed ({name}) {doing}",
                f"Out of memory, or something killed it. {RUN_AGAIN} {log}")
    message = f"the engine crashed ({name}) {doing}"
    key = str(rec.get("key") or build_key())
    try:
        in_a_row = record_crash(rdir, model, key, int(rec.get("pid") or 0))
    except OSError:
        in_a_row = 1
    if in_a_row < IN_A_ROW:
        return message, f"{RUN_AGAIN} {log}"
    # Running again would crash again: say what to rebuild instead.
    try:
        from limner.engine import build

        advice = build.crash_advice(signum, "the engine")
    except Exception:  # noqa: BLE001
        advice = "The llama.cpp build crashes on this CPU. Rebuild it: scripts/setup --rebuild-engine"
    return (f"{message}: {in_a_row} crashes in a row with this llama.cpp build",
            f"{advice}\n{log}")
