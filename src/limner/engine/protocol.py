"""The resident engine's wire format: JSON lines over a Unix socket.

A client sends one request line and reads event lines until a terminal one:

    -> {"op": "stream", "job": {...Job fields...}}
    <- {"event": "text", "text": "..."}          (any number)
    <- {"event": "sample", ...Sample fields...}  (n of them when job.n > 1)
    <- {"event": "usage", ...Usage fields...}
    <- {"event": "stopped", "reason": "stop"}    or {"event": "failure", ...}

    -> {"op": "status"}   <- {"event": "status", ...}
    -> {"op": "stop"}     <- {"event": "status", "stopping": true}

Closing the socket cancels the client's job (that is how Ctrl-C reaches the engine).
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields

from limner.events import Event, Failure, Sample, Stopped, Text, Usage

VERSION = 1
SOCKET_NAME = "engine.sock"
LOCK_NAME = "engine.lock"
PID_NAME = "engine.pid"
LOG_NAME = "engine.log"
STAMP_NAME = "engine.stamp"
EXIT_NAME = "engine.exit.json"  # written by the supervisor when the engine dies by a signal
CRASHES_NAME = "engine.crashes.json"  # crashes in a row, per model (crash.py)


def code_stamp() -> str:
    """Identifies the code an engine runs, so a client replaces an engine left
    running from before an upgrade (or an edit, in a checkout)."""
    import sys
    from pathlib import Path

    from limner import __version__

    here = Path(__file__).resolve().parent
    files = list(here.glob("*.py")) + [here.parent / "events.py"]
    newest = max((f.stat().st_mtime_ns for f in files if f.exists()), default=0)
    return f"{__version__} {sys.executable} {newest}"


def encode(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def event_to_wire(ev: Event) -> dict:
    if isinstance(ev, Text):
        return {"event": "text", "text": ev.text}
    if isinstance(ev, Usage):
        return {"event": "usage", **asdict(ev)}
    if isinstance(ev, Stopped):
        return {"event": "stopped", "reason": ev.reason}
    if isinstance(ev, Sample):
        return {"event": "sample", **asdict(ev)}
    return {"event": "failure", **asdict(ev)}


def event_from_wire(obj: dict) -> Event | None:
    kind = obj.get("event")
    if kind == "text":
        return Text(str(obj.get("text", "")))
    if kind == "usage":
        names = {f.name for f in fields(Usage)}
        return Usage(**{k: v for k, v in obj.items() if k in names})
    if kind == "stopped":
        return Stopped(str(obj.get("reason", "stop")))
    if kind == "sample":
        names = {f.name for f in fields(Sample)}
        return Sample(**{k: v for k, v in obj.items() if k in names})
    if kind == "failure":
        names = {f.name for f in fields(Failure)}
        return Failure(**{k: v for k, v in obj.items() if k in names})
    return None


def job_to_wire(job) -> dict:
    return asdict(job)


def job_from_wire(obj: dict):
    from limner.engine.core import Job

    names = {f.name for f in fields(Job)}
    return Job(**{k: v for k, v in (obj or {}).items() if k in names})
