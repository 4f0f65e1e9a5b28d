"""Keep llama.cpp's C logging off the user's terminal.

llama.cpp logs through a callback (which llama-cpp-python routes to stderr
even with verbose=False) and, during backend and model load, some messages go
straight to fd 2. We install a no-op callback and point fd 2 at /dev/null
around the import and the load. `--verbose` / LIMNER_VERBOSE=1 lets it all through,
and so does the resident engine (keep_log): its fd 2 is engine.log, where
llama.cpp's lines are the record of what went wrong.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

_callback = None  # keep a reference: ctypes callbacks must outlive their use
_fd_lock = threading.Lock()
_to_log = False  # fd 2 is a log file (the resident engine), not a terminal


def keep_log() -> None:
    """The resident engine: its fd 2 is engine.log, so llama.cpp's own log
    (and a GGML_ASSERT's last words) must go there, never to /dev/null."""
    global _to_log
    _to_log = True


@contextlib.contextmanager
def stderr_silenced(enabled: bool = True):
    """Point fd 2 at /dev/null for the block (C code writes there directly)."""
    if not enabled:
        yield
        return
    with _fd_lock:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def calm_openmp() -> None:
    """Idle OpenMP workers sleep instead of spinning (unless the user chose).

    llama.cpp is built with OpenMP; by default its idle threads spin for a
    while between graph runs. On a machine with other work that spinning
    takes the CPU the decoding thread needs: measured here with 2 threads on
    2 busy cores, decode fell from 47 to 1 token/s. libgomp reads this once,
    when it loads, so it must be set before llama_cpp is first imported.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def import_llama(verbose: bool = False):
    """Import llama_cpp with its log callback replaced: a no-op, or in the
    resident engine one that writes to the log (unless verbose: all of it)."""
    global _callback
    calm_openmp()
    with stderr_silenced(not (verbose or _to_log)):
        import llama_cpp
    if not verbose and _callback is None:
        _callback = _to_fd2(llama_cpp) if _to_log else _dropper(llama_cpp)
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    return llama_cpp


def _dropper(llama_cpp):
    @llama_cpp.llama_log_callback
    def _drop(level, text, user_data):  # noqa: ARG001
        return None

    return _drop


GGML_LOG_DEBUG, GGML_LOG_CONT = 1, 5  # ggml.h's ggml_log_level


def _to_fd2(llama_cpp):
    # Everything but DEBUG: that level logs every graph build, hundreds of
    # lines per token, and would bury the lines that say what went wrong.
    last = [0]

    @llama_cpp.llama_log_callback
    def _write(level, text, user_data):  # noqa: ARG001
        if level != GGML_LOG_CONT:
            last[0] = level
        if last[0] != GGML_LOG_DEBUG and text:
            try:
                os.write(2, text)
            except OSError:
                pass

    return _write


def load_llama(path: str, *, verbose: bool = False, **kwargs):
    llama_cpp = import_llama(verbose)
    # In the resident engine fd 2 stays on the log through the load, where a
    # failing load writes straight to it (llama-cpp-python would null it).
    loud = verbose or _to_log
    with stderr_silenced(not loud):
        llm = llama_cpp.Llama(
            model_path=path, verbose=loud,
            # Full-size sliding-window cache: without it llama.cpp cannot trim a
            # SWA model's (Gemma 3's) KV to a common prefix and re-reads everything.
            swa_full=True,
            **kwargs,
        )
    if not verbose:
        # Llama() may re-install llama-cpp-python's own logger; put ours back.
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    return llm
