"""Model code runs only in the sandbox it asked for: strict unless the user
opts in to basic, and refused (an `!error`, nothing run) where it is missing.

Through the real commands: `limner eval` and a `!test` buffer, against a
scripted model whose code would leave a canary file on the host if it ran.
"Bubblewrap missing" is simulated with LIMNER_SANDBOX_BWRAP.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import limner_command
from test_eval_scripted import ScriptedModel

from limner import buffer
from limner.sandbox.probe import BWRAP_ENV

NO_BWRAP = {BWRAP_ENV: "/nonexistent/bwrap"}


@pytest.fixture
def canary_dir():
    """A dir any uid may write to (basic runs drop to 65534 where they can)."""
    d = tempfile.mkdtemp(prefix="limner-canary-", dir="/var/tmp")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _limner(args, env, stdin=None, timeout=120):
    return subprocess.run(limner_command() + args, input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _refused(p, canary):
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "!error" in p.stdout and "Traceback" not in out, out
    assert "strict sandbox is unavailable (bwrap not found)" in p.stdout
    assert "apt-get install bubblewrap" in p.stdout and "basic" in p.stdout
    assert not os.path.exists(canary), "the model's code ran"


def test_eval_refuses_without_bwrap_and_runs_basic_only_when_asked(tmp_path, limner_env, canary_dir):
    canary = os.path.join(canary_dir, "eval-ran")
    suite = tmp_path / "tiny.jsonl"
    suite.write_text(json.dumps({"id": "one", "prompt": "def one():\n", "reference": "    return 1\n",
                                 "test": "assert one() == 1"}) + "\n")
    server = ScriptedModel(lambda body: f"    open({canary!r}, 'w').write('ran')\n    return 1\n").start()
    out = tmp_path / "out"
    args = ["eval", str(suite), "--model", "m", "--endpoint", server.url, "--mode", "completion",
            "--out", str(out), "--json", "--no-html"]
    try:
        p = _limner(args, {**limner_env, **NO_BWRAP})
        _refused(p, canary)
        assert server.requests == []  # refused before generating anything
        p = _limner(args + ["--sandbox", "basic"], {**limner_env, **NO_BWRAP})
    finally:
        server.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert open(canary).read() == "ran"  # it ran, as asked, at the weaker level
    assert "--sandbox basic" in p.stderr
    for summary in (json.loads(p.stdout), json.loads((out / "report.json").read_text())):
        assert summary["sandbox"] == "basic"
        run, = summary["runs"]
        assert run["pass@1"] == 1.0
        assert run["isolation"] and all(i.startswith("basic (asked for with --sandbox basic)")
                                         for i in run["isolation"]), run["isolation"]


def test_a_test_buffer_refuses_without_bwrap_and_sandbox_basic_runs_and_is_logged(tmp_path, limner_env,
                                                                                 canary_dir):
    canary = os.path.join(canary_dir, "buffer-ran")
    reply = f"```python\nopen({canary!r}, 'w').write('ran')\n```\n"
    server = ScriptedModel(lambda body: reply).start()
    env = {k: v for k, v in limner_env.items() if k != "LIMNER_NO_LOG"}
    text = f"!api {server.url}\n!test python solution.py\n!user\n\nWrite to the canary.\n"
    try:
        p = _limner([], {**env, **NO_BWRAP}, stdin=text)
        _refused(p, canary)
        assert server.requests == []  # refused before the model was even asked
        p = _limner([], {**env, **NO_BWRAP}, stdin="!sandbox basic\n" + text)
    finally:
        server.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert open(canary).read() == "ran"
    assert "!note tests: passed (exit 0" in p.stdout
    assert "basic (asked for with !sandbox basic: no network or filesystem isolation) sandbox" in p.stdout
    from limner import log

    row, = log.list(path=os.path.join(env["LIMNER_DATA_DIR"], "limner.db"))
    assert row["extra"]["sandbox"] == "basic"
    log.close()


def test_the_sandbox_directive_is_in_the_table_and_checked():
    assert any(line.startswith("!sandbox basic|strict") for line in buffer.directive_table().splitlines())
    assert buffer.parse("!sandbox basic\n!user\n\nhi\n").sandbox == "basic"
    assert buffer.parse("!user\n\nhi\n").sandbox == "strict"
    issues = buffer.check("!sandbox off\n!user\n\nhi\n")
    assert [(i.line, i.severity) for i in issues] == [(1, "error")]
    assert "basic or strict" in issues[0].message
