"""The `limner` command: wiring only.

Start-up must stay fast (`limner --help` < 0.3 s), so this module imports
nothing heavy at the top. Each subcommand is named here by "module:function"
and imported only when it runs; the function takes its argv and returns an
exit code.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

# name -> (target, one-line help). The default (no subcommand) is "run".
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("limner.run:main", "read a buffer on stdin, stream the reply (the default)"),
    "check": ("limner.lint:main", "lint a buffer on stdin without sending anything"),
    "logs": ("limner.logcli:main", "list, show and search logged exchanges"),
    "models": ("limner.engine.models:main", "list bundled and registered models"),
    "engine": ("limner.engine.control:main", "status|stop of the resident engine"),
    "serve": ("limner.engine.serve:main", "OpenAI-compatible HTTP server over the engine"),
    "bench": ("limner.benchcli:main", "benchmarks, e.g. `limner bench fim`"),
    "eval": ("limner.evals.cli:main", "measure models on code suites, side by side"),
    "replay": ("limner.evals.replay:main", "re-send logged exchanges to another model"),
    "tune": ("limner.evals.tune:main", "choose few-shot demos for a profile on a suite's dev split"),
    "check-code": ("limner.checks.cli:main", "syntax, import and security checks on code"),
    "index": ("limner.retrieval.cli:index_main", "build or refresh a folder's code index"),
    "outline": ("limner.retrieval.cli:outline_main", "ranked map of a folder's signatures"),
    "retrieve": ("limner.retrieval.cli:retrieve_main", "best chunks of a folder for a query"),
}

USAGE = """\
usage: limner [OPTIONS] < BUFFER
       limner SUBCOMMAND [ARGS...]

Read a text buffer on stdin, turn its !directives into one request, and
stream the model's reply to stdout in the buffer's own format.

options (for the default run):
  --no-log        do not record this exchange
  --profile NAME  default profile when the buffer names none ($LIMNER_PROFILE)
  --verbose       let the engine's own logging through to stderr
  --timeout SECS  how long to wait for a server's first byte and between chunks
                  (default 300; $LIMNER_TIMEOUT; a buffer's !timeout wins)
  -h, --help      show this help
  --version       print the version

subcommands:
{subcommands}

The buffer language: `limner check --directives` lists every directive.
"""


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [f"  {n.ljust(width)}  {h}" for n, (_, h) in SUBCOMMANDS.items()]
    return USAGE.format(subcommands="\n".join(lines))


def _resolve(target: str):
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0
    if argv and argv[0] == "--version":
        from limner import __version__

        print(f"limner {__version__}")
        return 0
    name = "run"
    if argv and argv[0] in SUBCOMMANDS:
        name = argv.pop(0)
    try:
        func = _resolve(SUBCOMMANDS[name][0])
        code = func(argv)
    except BrokenPipeError:
        # Our stdout's reader went away (`limner ... | head`): end quietly, as the
        # shell's 128+SIGPIPE. SIGPIPE itself stays ignored (Python's default):
        # with it at SIG_DFL a socket peer that hung up killed `limner serve`
        # (seen behind sglang-router) and could kill any HTTP client mid-send.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        # Subcommands handle Ctrl-C themselves where output matters; this is
        # the last line of defence so no traceback reaches the user.
        sys.stderr.write("\n!error\n\ninterrupted\n")
        code = 130
    except ModuleNotFoundError as e:
        sys.stdout.write(
            f"\n\n!error\n\n`limner {name}` needs a component that is not installed "
            f"({e.name}).\nRun `make setup` in the limner checkout to install everything.\n"
        )
        code = 1
    except Exception as e:  # noqa: BLE001 - no traceback ever reaches a user
        if os.environ.get("LIMNER_TRACEBACK"):
            raise
        sys.stdout.write(
            f"\n\n!error\n\ninternal error in `limner {name}`: {type(e).__name__}: {e}\n"
            "This is a limner bug. Re-run with LIMNER_TRACEBACK=1 to see where, and report it.\n"
        )
        code = 70
    sys.stdout.flush()
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
