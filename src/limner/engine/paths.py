"""Where the resident engine lives: a private runtime directory per user."""
from __future__ import annotations

import os
from pathlib import Path


def runtime_dir(create: bool = True) -> Path:
    """$LIMNER_RUNTIME_DIR, else $XDG_RUNTIME_DIR/limner, else /tmp/limner-$UID (mode 0700)."""
    env = os.environ.get("LIMNER_RUNTIME_DIR")
    if env:
        d = Path(env)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(os.environ["XDG_RUNTIME_DIR"]) / "limner"
    else:
        d = Path(f"/tmp/limner-{os.getuid()}")
    if create:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
        if st.st_uid != os.getuid():
            # Someone else's directory in /tmp: never put our socket there.
            raise PermissionError(f"{d} belongs to another user; set LIMNER_RUNTIME_DIR")
        if st.st_mode & 0o077:
            os.chmod(d, 0o700)
    return d


def idle_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("LIMNER_ENGINE_IDLE", "600")))
    except ValueError:
        return 600.0
