"""The resident engine's parent: it waits for the engine and names its death.

The client that starts the engine is not its parent, so it cannot waitpid()
it and cannot tell a segfault from a clean exit. The client therefore starts
this small process (stdlib only, no llama.cpp), which runs the engine
(daemon.py) as its child and waits. If the engine dies by a signal it writes
engine.exit.json (crash.write_exit) for the client that was cut off, then
exits as well: the next call starts a fresh pair.

    python -m limner.engine.supervisor --dir DIR [daemon options]
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from limner.engine import crash, paths


def _log(message: str) -> None:
    sys.stderr.write(time.strftime("%Y-%m-%d %H:%M:%S ") + f"supervisor {os.getpid()}: {message}\n")
    sys.stderr.flush()


def _no_core_files() -> None:
    # The engine's cwd is /, and a core file of a process holding a model is
    # hundreds of MB; the tracebacks and llama.cpp's log are in engine.log.
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dir" in argv[:-1]:
        os.environ["LIMNER_RUNTIME_DIR"] = argv[argv.index("--dir") + 1]
    rdir = paths.runtime_dir()
    _no_core_files()
    # The engine inherits stdout/stderr (engine.log) and this session.
    child = subprocess.Popen([sys.executable, "-m", "limner.engine.daemon", *argv],
                             stdin=subprocess.DEVNULL)
    # `kill <supervisor>` stops the engine the way `kill <engine>` does.
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    rc = child.wait()
    if rc >= 0:
        return rc
    try:
        rec = crash.write_exit(rdir, child.pid, -rc)
        _log(f"the engine (pid {child.pid}) died with {rec['name']}; build {rec['key'] or 'unknown'}")
    except OSError as e:
        _log(f"the engine (pid {child.pid}) died with signal {-rc}; cannot record it: {e}")
    return 128 - rc


if __name__ == "__main__":
    sys.exit(main())
