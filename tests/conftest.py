"""Shared fixtures: the real llama.cpp server, the fault server, running `limner`.

`llama_server` (session) yields the OpenAI base URL of a real
`python -m llama_cpp.server` on SmolLM2-135M, e.g. http://127.0.0.1:PORT/v1.
`fault_server` (session) is tests/faultserver.py on loopback.
`run_limner(buffer, ...)` runs the real `limner` command as a subprocess with
a private data and config dir, so tests never touch the user's log or profiles.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultserver import FaultServer  # noqa: E402
from llama_server import LlamaServer, missing_reason  # noqa: E402


def sandbox_or_skip(level: str = "strict") -> None:
    """Skip a test that runs model code when the sandbox level it needs is missing here."""
    from limner.sandbox.probe import probe

    if level == "strict" and probe().level != "strict":
        pytest.skip("the strict sandbox is unavailable here")


def limner_command() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "limner"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "limner.cli"]


@pytest.fixture(scope="session")
def llama_server():
    reason = missing_reason()
    if reason:
        pytest.skip(f"real llama.cpp server unavailable: {reason}")
    server = LlamaServer(n_ctx=2048).start()  # n_threads pinned there
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fault_server():
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def limner_env(tmp_path) -> dict[str, str]:
    """An environment for `limner` that cannot see the user's profiles or log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    env.update(
        LIMNER_DATA_DIR=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        LIMNER_NO_LOG="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def run_limner(limner_env):
    """run_limner(buffer, *args, env=None, timeout=60) -> CompletedProcess (text)."""

    def run(buffer: str, *args: str, env: dict | None = None, timeout: float = 60):
        proc = subprocess.run(
            limner_command() + list(args), input=buffer.encode("utf-8"),
            capture_output=True, env={**limner_env, **(env or {})}, timeout=timeout,
        )
        proc.stdout = proc.stdout.decode("utf-8", errors="replace")
        proc.stderr = proc.stderr.decode("utf-8", errors="replace")
        return proc

    return run
