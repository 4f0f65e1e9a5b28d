"""Drive a real terminal program inside a detached tmux server.

Each Tmux gets its own server socket (`tmux -L NAME`), so tests never touch
the user's tmux or each other, and `kill()` ends everything it started.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path


def missing_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def wait_for(predicate, timeout: float, interval: float = 0.05, what="condition"):
    """Poll predicate() until it returns something truthy; return that value.

    what names the wait in the error; a callable is asked only on timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if callable(what):
                what = what()
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class Tmux:
    def __init__(self, name: str | None = None, width: int = 120, height: int = 40):
        self.socket = name or f"limner-test-{uuid.uuid4().hex[:10]}"
        self.width, self.height = width, height
        self.started = False

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None):
        """Run argv in a fresh session; env is set for that program only."""
        # `env` in front keeps the variables off the tmux server's global
        # environment and works the same on every tmux version.
        prefix = ["env", "TERM=tmux-256color"] + [f"{k}={v}" for k, v in (env or {}).items()]
        command = shlex.join(prefix + list(argv))
        self._tmux(
            "new-session", "-d", "-s", "t", "-x", str(self.width), "-y", str(self.height),
            "-c", cwd or os.getcwd(), command,
        )
        self.started = True
        self.socket_path = self._tmux("display-message", "-p", "#{socket_path}", check=False).stdout.strip()
        # Keep the pane after the program exits, so a crash shows in capture().
        self._tmux("set-option", "-t", "t", "remain-on-exit", "on", check=False)

    def keys(self, *keys: str) -> None:
        """Send tmux key names, e.g. "Escape", "C-c", "M-x", "Enter"."""
        self._tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        """Send text literally (no key-name lookup)."""
        self._tmux("send-keys", "-t", "t", "-l", text)

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t", check=False).stdout

    def wait_screen(self, needle: str, timeout: float = 10.0) -> str:
        def seen() -> str:
            screen = self.capture()
            return screen if needle in screen else ""

        return wait_for(
            seen,
            timeout,
            what=lambda: f"{needle!r} on screen; screen was:\n{self.capture()}",
        )

    def kill(self) -> None:
        if self.started:
            self._tmux("kill-server", check=False)
            self.started = False
            # tmux may leave its socket file behind; it is ours to remove.
            if self.socket_path:
                Path(self.socket_path).unlink(missing_ok=True)


def read_when_present(path: Path, timeout: float) -> str:
    """Wait until the editor has (atomically) written path, then read it."""
    wait_for(path.exists, timeout, what=f"{path} to be written")
    return path.read_text(encoding="utf-8")
