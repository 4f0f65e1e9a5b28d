"""The default command: buffer on stdin -> request -> streamed reply on stdout.

This is the one data path of docs/ARCHITECTURE.md, wired end to end:

    buffer.parse -> backends.open -> adapter.stream -> [fim stop] -> render -> log
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from limner import render
from limner.errors import LimnerError


class _Cancelled(BaseException):
    """Raised from the SIGTERM handler so an editor's "stop" ends like Ctrl-C."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    # Vim's job_stop() signals twice: the process group, then the pid. The
    # second must neither raise again in the middle of the cleanup nor meet
    # the default action, which kills us by the signal (the editor then sees
    # exit -1, not 143). Ignored, unlike a Python handler, it stays ignored
    # through the interpreter's shutdown.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Cancelled()


def _drop_stdout() -> None:
    """Point fd 1 at /dev/null so the exit-time flush of a dead pipe is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="limner", add_help=False)
    p.add_argument("--no-log", action="store_true")
    p.add_argument("--profile")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS")
    return p.parse_args(argv)


def _seconds(text: str) -> float:
    from limner.request import parse_seconds

    value = parse_seconds(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"needs a number of seconds greater than 0, not {text!r}")
    return value


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise LimnerError(
            f"the buffer is not valid UTF-8 (byte {e.start}, line {line})",
            "Save the file as UTF-8, or remove the stray bytes on that line.",
            line=line,
        ) from None


def main(argv: list[str]) -> int:
    try:
        args = _args(argv)
    except SystemExit as e:  # argparse already printed the problem
        return int(e.code or 2)
    if args.verbose:
        os.environ["LIMNER_VERBOSE"] = "1"
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args, sys.stdout)
    except _Cancelled:
        # Stopped before the reply began, or after it was complete (logging,
        # checks, !test): nothing to keep, but the exit still says SIGTERM.
        return render.EXIT_SIGTERM


def _run(args: argparse.Namespace, out) -> int:
    from limner import buffer

    started = time.time()
    req = None
    try:
        text = _decode(sys.stdin.buffer.read())
        req = buffer.parse(text, default_profile=args.profile)
        if req.timeout is None and args.timeout is not None:  # the buffer's !timeout wins
            req.timeout, req.timeout_from = args.timeout, "--timeout"
        if req.outlines or req.retrieves or req.budget is not None:
            from limner.retrieval.assemble import apply  # lazy: only these buffers index

            try:
                apply(req)
            except LimnerError:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in retrieval must not cost the buffer a traceback
                raise LimnerError(f"building the repository context failed: {type(e).__name__}: {e}",
                                  "Remove the !outline/!retrieve lines to send without it, "
                                  "or run `limner index --rebuild DIR`.") from None
        from limner import backends

        adapter = backends.open(req)
        if req.debug:
            out.write(render.debug(adapter.describe()) + render.context_note(req))
            out.flush()
            return 0
        if req.test_cmd:
            # !test runs model code: without the sandbox it asked for, stop
            # here, before even asking the model.
            from limner.sandbox.probe import require

            require(req.sandbox)
        if req.vote_n:
            from limner.select.buffer_vote import run_vote  # lazy: only !vote buffers

            return run_vote(req, adapter, out,
                            log=not (args.no_log or req.nolog or os.environ.get("LIMNER_NO_LOG")))
    except LimnerError as e:
        out.write(render.error_block(e.message, e.hint, e.line))
        out.flush()
        return e.exit_code

    events = adapter.stream()
    if req.mode in ("infill", "fim"):
        # The syntax-aware stop sits between the adapter and the renderer; it
        # asks the adapter to abort once the middle is complete.
        try:
            from limner.fim.stream import guard
        except ImportError:  # the fim package has not landed yet
            guard = None
        if guard is not None:
            events = guard(events, req, adapter)

    renderer = render.Renderer(out, req)
    try:
        for event in events:
            renderer.feed(event)
    except (KeyboardInterrupt, _Cancelled) as e:
        adapter.close()
        # An editor that stops us may already have closed our stdout. The
        # cancel note is then undeliverable, and that must not kill us with
        # SIGPIPE before the partial reply is logged and we exit 130/143.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            renderer.cancel(sigterm=isinstance(e, _Cancelled))
        except OSError:
            _drop_stdout()
    outcome = renderer.finish()
    if req.checks and outcome.text and outcome.status != "cancelled":
        from limner.checks import after_reply  # lazy: only `!check` buffers pay for it

        after_reply(req, outcome, out)

    if not (args.no_log or req.nolog or os.environ.get("LIMNER_NO_LOG")):
        try:
            from limner import log

            log.record_outcome(req, adapter, outcome, started=started)
        except Exception as e:  # noqa: BLE001 - the reply matters more than the log
            sys.stderr.write(f"limner: could not log this exchange: {e}\n")
    if (req.test_cmd or req.repair_rounds) and outcome.status == "ok":
        from limner.evals.repair import after_reply as test_and_repair  # lazy: only !test buffers

        log_rounds = not (args.no_log or req.nolog or os.environ.get("LIMNER_NO_LOG"))
        return test_and_repair(req, outcome, out, log=log_rounds)
    return outcome.exit_code
