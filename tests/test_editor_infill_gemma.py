"""Infill at the cursor from the Vim plugin with the bundled Gemma, end to end.

The issue's "done when": `:LimnerInfill` in real Vim (in tmux), the default
`local` profile (the embedded engine on Gemma 3 270M, no server), fills the
hole under the cursor and stops where the code is complete, not at max_tokens.

The engine is private to this module (LIMNER_RUNTIME_DIR in a tmp dir,
the shared test data dir so Gemma is assembled once), threads are pinned by
`!:n_threads` in the buffer, and the engine is stopped at teardown.
"""
from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_support import THREADS, shared_data_dir  # noqa: E402
from test_editors import LIMNER, Vim, needs_vim  # noqa: E402
from tmux import Tmux  # noqa: E402

pytestmark = [pytest.mark.editor, pytest.mark.slow]

# Upper bound only: the first request assembles and loads Gemma (~20 s idle).
REPLY_TIMEOUT = 120.0

DIRECTIVES = (
    "!lang python\n"
    "!:temperature 0\n"
    f"!:n_threads {THREADS}\n"
    "!:max_tokens 64\n"
)
SIGNATURE = "def norm(x: float, y: float) -> float:\n"
AFTER = (
    "    return r\n"
    "\n"
    "\n"
    "def main():\n"
    "    print(norm(3, 4))\n"
)
HOLE_LINE = DIRECTIVES.count("\n") + SIGNATURE.count("\n") + 1  # 1-based, the blank line


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """limner's environment: a private engine, no log, no user profiles."""
    base = tmp_path_factory.mktemp("infill-gemma")
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    e.update(
        HOME=str(base / "home"),  # no user vimrc/viminfo
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        LIMNER_RUNTIME_DIR=str(base / "rt" / "limner"),
        LIMNER_DATA_DIR=str(shared_data_dir(tmp_path_factory)),
        XDG_CONFIG_HOME=str(base / "config"),
        XDG_DATA_HOME=str(base / "xdg-data"),
        LIMNER_NO_LOG="1",
        PYTHONUNBUFFERED="1",
        # tmux passes its own environment on; these neutralise any inherited value.
        LIMNER_PROFILE="",
        LIMNER_ENGINE="",
    )
    (base / "home").mkdir()
    yield e
    subprocess.run([str(LIMNER), "engine", "stop"], env=e, capture_output=True, timeout=30)
    pid_file = Path(e["LIMNER_RUNTIME_DIR"]) / "engine.pid"
    if pid_file.exists():  # it did not stop: do not leave it running
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _strip_directives(text: str) -> str:
    return "".join(l for l in text.splitlines(keepends=True) if not l.startswith("!"))


def test_limner_direct_infill_stops_syntax_aware(env):
    """The same hole through `limner` itself: the !note names a fim: stop."""
    buffer = DIRECTIVES + "!stats\n" + SIGNATURE + "!infill\n" + AFTER
    proc = subprocess.run([str(LIMNER)], input=buffer, env=env, capture_output=True,
                          text=True, timeout=REPLY_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [l for l in proc.stdout.splitlines() if l.startswith("!note")]
    assert notes, proc.stdout
    m = re.search(r"\bstop: (\S+)", notes[-1])
    assert m, notes[-1]
    assert m.group(1).startswith("fim:"), f"not a syntax-aware stop: {notes[-1]}"
    middle = proc.stdout[: proc.stdout.index("!note")].strip("\n")
    assert middle.strip()
    assert not re.search(r"^(def|class) ", middle, re.M), middle


@needs_vim
def test_vim_infill_at_cursor_with_gemma(env, tmp_path):
    src = tmp_path / "norm.py"
    original = DIRECTIVES + SIGNATURE + "\n" + AFTER
    src.write_text(original, encoding="utf-8")
    tmux = Tmux()
    try:
        vim = Vim(tmux, tmp_path)
        vim_env = {k: env[k] for k in (
            "HOME", "LANG", "LC_ALL", "PATH", "LIMNER_RUNTIME_DIR", "LIMNER_DATA_DIR",
            "XDG_CONFIG_HOME", "XDG_DATA_HOME", "LIMNER_NO_LOG", "PYTHONUNBUFFERED",
            "LIMNER_PROFILE", "LIMNER_ENGINE")}
        vim.start(src, vim_env, [str(LIMNER)])  # vim -u NONE -N, :source limner.vim
        vim.ex(str(HOLE_LINE))  # the cursor on the empty hole line
        vim.ex("LimnerInfill")
        done = vim.wait_done(REPLY_TIMEOUT)  # written by autocmd User LimnerDone
        vim.ex("write")
        written = vim.dump()
    finally:
        tmux.kill()

    assert done["exit"] == 0 and not done["stopped"], (done, tmux)
    text = done["text"]
    assert written == text
    assert "!infill" not in text
    head = DIRECTIVES + SIGNATURE
    assert text.startswith(head), text
    assert text.endswith(AFTER), f"the code after the hole changed:\n{text}"
    middle = text[len(head): len(text) - len(AFTER)]
    assert middle.strip(), "the model wrote nothing into the hole"
    assert not re.search(r"^(def|class) ", middle, re.M), f"ran past the hole:\n{middle}"
    ast.parse(_strip_directives(text))  # the filled file is valid Python
    assert src.read_text(encoding="utf-8") == text  # :write saved what the buffer shows
