"""Shared by the engine benchmarks: run `limner` with timestamps, a private engine."""
from __future__ import annotations

import os
import platform
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMNER = str(ROOT / ".venv" / "bin" / "limner")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
sys.path.insert(0, str(ROOT / "src"))


def private_env(rdir: str, **extra) -> dict:
    """An environment whose engine lives in rdir (never the user's engine or log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    env.update(LIMNER_RUNTIME_DIR=rdir, LIMNER_NO_LOG="1", PYTHONUNBUFFERED="1", **extra)
    if "LIMNER_DATA_DIR" in os.environ:
        env["LIMNER_DATA_DIR"] = os.environ["LIMNER_DATA_DIR"]
    return env


def new_runtime_dir() -> str:
    return tempfile.mkdtemp(prefix="limner-bench-") + "/rt"


class Timed:
    """One `limner` run: start, first stdout byte, last stdout byte, output."""

    def __init__(self, buffer: str, env: dict, args=(), cwd=None):
        self.start = time.perf_counter()
        proc = subprocess.Popen([LIMNER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd)
        proc.stdin.write(buffer.encode())
        proc.stdin.close()
        self.first = self.last = None
        chunks = []
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            sel.select()
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            chunks.append(data)
        self.stderr = proc.stderr.read().decode()
        self.returncode = proc.wait()
        self.out = b"".join(chunks).decode("utf-8", "replace")
        if self.returncode != 0:
            raise RuntimeError(f"limner failed ({self.returncode}): {self.out}{self.stderr}")

    @property
    def ttft(self) -> float:
        return self.first - self.start


def stats_of(text: str) -> dict:
    """Numbers from a `!stats` note: prompt/cached/reply tokens."""
    out = {}
    for key, pat in (("prompt", r"prompt (\d+) tokens"), ("cached", r"\((\d+) cached\)"),
                     ("reply", r"reply (\d+) tokens")):
        m = re.search(pat, text)
        if m:
            out[key] = int(m.group(1))
    return out


def stop_engine(env: dict) -> None:
    subprocess.run([LIMNER, "engine", "stop"], env=env, capture_output=True, timeout=60)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} CPUs ({cpu}), no GPU, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average at start {load:.2f}")


def median(xs) -> float:
    return statistics.median(xs)


def header(title: str, argv: list[str]) -> None:
    print(f"## {title}")
    print(f"command: .venv/bin/python {' '.join(argv)}")
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
