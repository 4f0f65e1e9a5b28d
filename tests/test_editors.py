"""The Vim and Emacs plugins, driven for real: Vim and Emacs in tmux, the real
`limner` command, the real llama.cpp server on SmolLM2.

Each test types keys into the editor the way a user would. The editor
writes its buffer to a JSON file when a request ends (the plugins' own
LimnerDone / limner-finished-hook), or on demand through a key sequence.

Chat and infill run limner behind a tap (`tee`) that records exactly what
the plugin sent and what limner printed, so the buffer can be checked byte
for byte against that stream, whatever the model said. Stop runs limner
bare, so SIGTERM reaches it directly.
"""
from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest

from tmux import Tmux, missing_tools, wait_for

ROOT = Path(__file__).resolve().parents[1]
LIMNER = ROOT / ".venv" / "bin" / "limner"
VIM_PLUGIN = ROOT / "editors" / "limner.vim"
EMACS_PLUGIN = ROOT / "editors" / "limner.el"

# Upper bounds only: every wait polls and returns as soon as its file appears.
# A 24-token reply takes about a second on an idle machine, but 20 s or more
# when other jobs saturate both cores (measured at load average 10).
REPLY_TIMEOUT = 120.0
EDITOR_START_TIMEOUT = 30.0
# How long limner may take to die after :LimnerStop: the keys, Vim's job_stop()
# and limner's cleanup, on a box where other jobs hold both cores.
STOP_GRACE = 10.0

pytestmark = [pytest.mark.editor, pytest.mark.server]

CHAT = "!user\nName one colour of the sky.\n"
INFILL_BEFORE = 'def add(a, b):\n    """Return the sum of a and b."""\n'
INFILL_AFTER = "\n\nprint(add(2, 3))\n"
# Completion of a counting sequence runs until max_tokens: long enough to stop.
LONG = "!completion\n!:max_tokens 1500\n1, 2, 3, 4, 5, 6, 7, 8, 9, 10,\n"


def _needs(*tools: str):
    """Skip (before the server starts) when the editor or tmux is missing."""
    missing = missing_tools("tmux", *tools)
    return pytest.mark.skipif(
        bool(missing),
        reason=f"needs {', '.join(missing)} installed (scripts/test installs them)",
    )


needs_vim = _needs("vim")
needs_emacs = _needs("emacs")


@pytest.fixture(scope="module")
def profile(llama_server, tmp_path_factory) -> Path:
    """A profile pointing limner at the test server, deterministic and short."""
    url = getattr(llama_server, "url", llama_server)
    path = tmp_path_factory.mktemp("profile") / "test.profile"
    # SmolLM2 has no FIM tokens: infill is a plain completion from the prefix.
    path.write_text(
        f"!api {url}\n!:temperature 0\n!:max_tokens 24\n!infill {{prefix}}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def work(tmp_path, profile):
    """A scratch dir, the editors' environment, and the tmux server to clean up."""
    env = {
        "HOME": str(tmp_path),  # no user vimrc/viminfo/emacs.d is read or written
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LIMNER_PROFILE": str(profile),
        "LIMNER_NO_LOG": "1",
        "LIMNER_DATA_DIR": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "PYTHONUNBUFFERED": "1",
    }
    tmux = Tmux()
    yield tmp_path, env, tmux
    tmux.kill()


def tapped_limner(prefix: Path) -> list[str]:
    """limner with its stdin and stdout copied to PREFIX.in / PREFIX.out."""
    script = (
        "set -o pipefail; "
        f"printf %s \"$LIMNER_FILE\" > {shlex.quote(str(prefix))}.file; "
        f"tee {shlex.quote(str(prefix))}.in | {shlex.quote(str(LIMNER))} "
        f"| tee {shlex.quote(str(prefix))}.out"
    )
    return ["bash", "-c", script]


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class Editor:
    """One editor in tmux; `dump()` asks it for its buffer through keystrokes."""

    def __init__(self, tmux: Tmux, workdir: Path):
        self.tmux = tmux
        self.workdir = workdir
        self.done = workdir / "done.json"
        self.n = 0

    def _ask(self, call: str) -> Path:  # implemented per editor
        raise NotImplementedError

    def dump(self, timeout: float = 10.0) -> str:
        self.n += 1
        path = self.workdir / f"dump{self.n}.json"
        self._ask(self.dump_call(path))
        return self._read(path, timeout)["text"]

    def pid(self) -> int:
        self.n += 1
        path = self.workdir / f"pid{self.n}.json"
        self._ask(self.pid_call(path))
        return int(self._read(path, 10.0)["pid"])

    def wait_done(self, timeout: float = REPLY_TIMEOUT) -> dict:
        return self._read(self.done, timeout)

    def _read(self, path: Path, timeout: float) -> dict:
        wait_for(
            path.exists, timeout,
            what=lambda: f"{path.name}; screen was:\n{self.tmux.capture()}",
        )
        return json.loads(path.read_text(encoding="utf-8"))


class Vim(Editor):
    HARNESS = r"""
function! LimnerTestWrite(path, obj) abort
  call writefile([json_encode(a:obj)], a:path . '.tmp')
  call rename(a:path . '.tmp', a:path)
endfunction
function! LimnerTestText() abort
  return join(getline(1, '$'), "\n") . "\n"
endfunction
autocmd User LimnerDone call LimnerTestWrite(g:limner_test_done,
      \ {'text': LimnerTestText(), 'exit': b:limner_exit, 'stopped': b:limner_stopped})
"""

    def start(self, file: Path, env: dict, command, vimrc: str | None = None,
              infill_profile: Path | None = None):
        harness = self.workdir / "harness.vim"
        setup = f"let g:limner_test_done = {json.dumps(str(self.done))}\n"
        setup += f"let g:limner_command = {json.dumps(command)}\n"
        if infill_profile:
            setup += f"let g:limner_infill_profile = {json.dumps(str(infill_profile))}\n"
        harness.write_text(
            setup + self.HARNESS,
            encoding="utf-8",
        )
        if vimrc is None:  # the bare case: no vimrc at all, plugin sourced by hand
            argv = ["vim", "-u", "NONE", "-N", "-i", "NONE", "-n",
                    "-c", f"source {VIM_PLUGIN}"]
        else:
            rc = self.workdir / "vimrc"
            rc.write_text(vimrc, encoding="utf-8")
            argv = ["vim", "-u", str(rc), "-i", "NONE", "-n"]
        argv += ["-S", str(harness), str(file)]
        self.tmux.start(argv, env=env, cwd=str(self.workdir))
        self.tmux.wait_screen(file.name, EDITOR_START_TIMEOUT)

    def ex(self, command: str) -> None:
        self.tmux.keys("Escape")
        self.tmux.type(":" + command)
        self.tmux.keys("Enter")

    def _ask(self, call: str) -> None:
        self.ex("call " + call)

    def dump_call(self, path: Path) -> str:
        return f"LimnerTestWrite('{path}', {{'text': LimnerTestText()}})"

    def pid_call(self, path: Path) -> str:
        return f"LimnerTestWrite('{path}', LimnerStatus())"


class Emacs(Editor):
    HARNESS = r"""
(require 'json)
(defun limner-test-write (path object)
  (let ((tmp (concat path ".tmp")) (coding-system-for-write 'utf-8-unix))
    (with-temp-file tmp (insert (json-encode object)))
    (rename-file tmp path t)))
(defun limner-test-dump (path)
  (limner-test-write path `((text . ,(buffer-string)))))
(defun limner-test-pid (path)
  (limner-test-write path `((pid . ,(process-id limner--process)))))
(add-hook 'limner-finished-hook
          (lambda ()
            (limner-test-write limner-test-done
                               `((text . ,(buffer-string)) (exit . ,limner-last-exit)
                                 (stopped . ,(if limner-last-stopped t :json-false))))))
"""

    def start(self, file: Path, env: dict, command, infill_profile: Path | None = None):
        harness = self.workdir / "harness.el"
        setup = f"(defvar limner-test-done {json.dumps(str(self.done))})\n"
        setup += f"(setq limner-command {self._lisp(command)})\n"
        if infill_profile:
            setup += f"(setq limner-infill-profile {json.dumps(str(infill_profile))})\n"
        harness.write_text(
            setup + self.HARNESS,
            encoding="utf-8",
        )
        argv = ["emacs", "-nw", "-Q", "-l", str(EMACS_PLUGIN), "-l", str(harness), str(file)]
        self.tmux.start(argv, env=env, cwd=str(self.workdir))
        self.tmux.wait_screen(file.name, EDITOR_START_TIMEOUT)

    @staticmethod
    def _lisp(command) -> str:
        if isinstance(command, str):
            return json.dumps(command)
        return "'(" + " ".join(json.dumps(a) for a in command) + ")"

    def mx(self, command: str) -> None:
        self.tmux.keys("M-x")
        self.tmux.type(command)
        self.tmux.keys("Enter")

    def _ask(self, call: str) -> None:
        self.tmux.keys("M-:")
        self.tmux.type(call)
        self.tmux.keys("Enter")

    def dump_call(self, path: Path) -> str:
        return f'(limner-test-dump "{path}")'

    def pid_call(self, path: Path) -> str:
        return f'(limner-test-pid "{path}")'

    def goto_line(self, n: int) -> None:
        self._ask(f"(progn (goto-char (point-min)) (forward-line {n - 1}))")


def _expected_chat(original: str, out: str) -> str:
    # The reply goes after the last line's text; the final newline stays last.
    return original[:-1] + out + "\n"


def _check_chat(done: dict, original: str, tap: Path) -> None:
    sent = tap.with_suffix(".in").read_text(encoding="utf-8")
    out = tap.with_suffix(".out").read_text(encoding="utf-8")
    assert sent == original, "the plugin must send the whole buffer as it is"
    assert out.startswith("\n\n!assistant\n\n") and len(out) > len("\n\n!assistant\n\n")
    assert done["exit"] == 0 and not done["stopped"]
    assert done["text"] == _expected_chat(original, out)


# ---------------------------------------------------------------- Vim


@needs_vim
def test_vim_bare_chat_appends_reply(work):
    tmp, env, tmux = work
    chat = tmp / "chat.md"
    chat.write_text(CHAT, encoding="utf-8")
    vim = Vim(tmux, tmp)
    vim.start(chat, env, tapped_limner(tmp / "tap"))
    tmux.type("\\a")  # the default <leader>a
    _check_chat(vim.wait_done(), CHAT, tmp / "tap")


@needs_vim
def test_vim_with_vimrc_and_mapleader(work):
    tmp, env, tmux = work
    chat = tmp / "chat.md"
    chat.write_text(CHAT, encoding="utf-8")
    vimrc = (
        "set nocompatible\nlet mapleader = ','\nfiletype plugin indent on\nsyntax on\n"
        "set hidden\n"
        f"source {VIM_PLUGIN}\n"
    )
    vim = Vim(tmux, tmp)
    vim.start(chat, env, tapped_limner(tmp / "tap"), vimrc=vimrc)
    tmux.type(",a")  # the map follows the user's mapleader
    _check_chat(vim.wait_done(), CHAT, tmp / "tap")


@needs_vim
def test_vim_infill_at_cursor(work, profile):
    tmp, env, tmux = work
    src = tmp / "add.py"
    src.write_text(INFILL_BEFORE + INFILL_AFTER, encoding="utf-8")
    vim = Vim(tmux, tmp)
    vim.start(src, env, tapped_limner(tmp / "tap"), infill_profile=profile)
    vim.ex("3")  # the blank line under the docstring is the hole
    tmux.type("\\f")
    done = vim.wait_done()
    _check_infill(done, tmp / "tap", profile)


def _check_infill(done: dict, tap: Path, profile: Path) -> None:
    sent = tap.with_suffix(".in").read_text(encoding="utf-8")
    out = tap.with_suffix(".out").read_text(encoding="utf-8")
    after = INFILL_AFTER[1:]  # the blank hole line itself is replaced
    # The FIM template must come before the hole, so the profile is loaded there.
    hole = f"!profile {profile}\n!infill\n"
    assert sent == INFILL_BEFORE + hole + after, "limner sees !infill at the hole"
    # The plugin names the file, so !retrieve can leave it out.
    assert tap.with_suffix(".file").read_text() == str(tap.parent / "add.py")
    assert out.strip(), "the model wrote something into the hole"
    assert done["exit"] == 0 and not done["stopped"]
    text = done["text"]
    assert "!infill" not in text
    middle = out[:-1] if out.endswith("\n") else out
    assert text == INFILL_BEFORE + middle + "\n" + after
    assert text.startswith(INFILL_BEFORE) and text.endswith(after)


def _check_stop(editor: Editor, tmux: Tmux, stop, to_top) -> None:
    """Shared by both editors: stream, move around, stop, and check the remains."""
    def longer_than(n: int):
        def grown() -> str:
            text = editor.dump()
            return text if len(text) > n else ""
        return grown

    first = wait_for(
        longer_than(len(LONG) + 4), REPLY_TIMEOUT, interval=0.1,
        what=lambda: f"the reply to start streaming; screen:\n{tmux.capture()}",
    )
    assert first.startswith(LONG[:-1])
    pid = editor.pid()
    assert pid > 0 and not pid_gone(pid)
    to_top()  # the user moves away; the reply keeps landing at the end
    second = wait_for(
        longer_than(len(first)), REPLY_TIMEOUT, interval=0.1, what="more of the reply"
    )
    assert second.startswith(first[:-1])
    # Vim's job_stop() sends SIGTERM twice (group, then pid); under load the
    # second lands mid-cleanup, and limner must still exit 143, never die by it.
    stop()
    wait_for(lambda: pid_gone(pid), STOP_GRACE, what=f"limner (pid {pid}) to exit")
    done = editor.wait_done(STOP_GRACE + 5)
    assert done["stopped"] and done["exit"] == 143, done
    kept = done["text"]
    assert kept.startswith(second[:-1]), "what arrived before the stop stays"
    assert "!error" not in kept and "!infill" not in kept
    # Nothing more arrives once stopped. Absence needs a moment to show.
    time.sleep(0.3)
    assert editor.dump() == kept


@needs_vim
def test_vim_stop(work):
    tmp, env, tmux = work
    f = tmp / "count.txt"
    f.write_text(LONG, encoding="utf-8")
    vim = Vim(tmux, tmp)
    vim.start(f, env, str(LIMNER))  # the string form of g:limner_command
    tmux.type("\\a")
    _check_stop(vim, tmux, stop=lambda: tmux.type("\\s"), to_top=lambda: tmux.type("gg"))


# ---------------------------------------------------------------- Emacs


@needs_emacs
def test_emacs_chat_appends_reply(work):
    tmp, env, tmux = work
    chat = tmp / "chat.md"
    chat.write_text(CHAT, encoding="utf-8")
    emacs = Emacs(tmux, tmp)
    emacs.start(chat, env, tapped_limner(tmp / "tap"))
    emacs.mx("limner")
    _check_chat(emacs.wait_done(), CHAT, tmp / "tap")


@needs_emacs
def test_emacs_infill_at_point(work, profile):
    tmp, env, tmux = work
    src = tmp / "add.py"
    src.write_text(INFILL_BEFORE + INFILL_AFTER, encoding="utf-8")
    emacs = Emacs(tmux, tmp)
    emacs.start(src, env, tapped_limner(tmp / "tap"), infill_profile=profile)
    emacs.goto_line(3)
    emacs.mx("limner-infill")
    _check_infill(emacs.wait_done(), tmp / "tap", profile)


@needs_emacs
def test_emacs_stop(work):
    tmp, env, tmux = work
    f = tmp / "count.txt"
    f.write_text(LONG, encoding="utf-8")
    emacs = Emacs(tmux, tmp)
    emacs.start(f, env, str(LIMNER))  # the string form of limner-command
    emacs.mx("limner")
    _check_stop(
        emacs, tmux,
        stop=lambda: emacs.mx("limner-stop"),
        to_top=lambda: tmux.keys("M-<"),
    )
