"""A closed stdout ends limner quietly; a hung-up socket peer never kills it (SIGPIPE stays ignored)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMNER = str(ROOT / ".venv" / "bin" / "limner")

FLOOD = """
import sys
from limner import cli
def flood(argv):
    while True:
        sys.stdout.write("x" * 65536)
        sys.stdout.flush()
cli.SUBCOMMANDS["flood"] = ("__main__:flood", "")
sys.exit(cli.main(["flood"]))
"""


def test_closed_stdout_exits_141_without_a_traceback():
    proc = subprocess.Popen([sys.executable, "-c", FLOOD], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away, as `| head -c 10` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "Exception ignored" not in err, err


def _ignores_sigpipe(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGPIPE - 1)))
    raise AssertionError("no SigIgn line")


def test_serve_ignores_sigpipe(tmp_path):
    """With SIGPIPE at SIG_DFL a client that hung up mid-reply killed `limner serve`."""
    env = dict(os.environ, LIMNER_DATA_DIR=os.environ.get("LIMNER_DATA_DIR", str(tmp_path)))
    proc = subprocess.Popen([LIMNER, "serve", "--host", "127.0.0.1", "--port", "0", "--no-log"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _ignores_sigpipe(proc.pid):
                    break
            except FileNotFoundError:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "serve exited"
        assert _ignores_sigpipe(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
