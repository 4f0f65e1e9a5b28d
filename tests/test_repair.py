"""The repair loop in a buffer: `!test` + `!repair N`, through the real `limner` command.

A scripted server on loopback plays a model that writes a bug, then fixes
it once the failure comes back as a `!user` turn; the real engine
(SmolLM2) shows the loop runs every round into the buffer.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import limner_command
from test_eval_scripted import ScriptedModel, last_user

from limner import buffer
from limner.evals import repair
from limner.request import Request

BUGGY = "Here you go:\n\n```python\ndef add(a, b):\n    return a - b\n```\n"
FIXED = "Fixed:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"


def fixer(body):
    return FIXED if "failed" in last_user(body) else BUGGY


@pytest.fixture
def model():
    servers = []

    def start(respond=fixer):
        s = ScriptedModel(respond).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def run_buffer(text: str, cwd, env, timeout=120):
    p = subprocess.run(limner_command(), input=text, capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=timeout)
    return p


def test_files_of_a_reply():
    reply = ("```python utils.py\nX = 1\n```\n\n```python\nfrom utils import X\n```\n\n"
             "```bash\necho hi\n```\n\n```python\nprint(2)\n```\n")
    files = repair.files_of(Request(mode="chat"), reply)
    assert files == {"utils.py": "X = 1\n", "solution.py": "from utils import X\n",
                     "block3.sh": "echo hi\n", "block4.py": "print(2)\n"}
    comp = Request(mode="completion", prompt="def f():\n")
    assert repair.files_of(comp, "    return 1\n") == {"solution.py": "def f():\n    return 1\n"}


def test_failure_then_fix_stays_in_the_buffer(model, tmp_path, limner_env):
    server = model()
    (tmp_path / "test_add.py").write_text("from solution import add\nassert add(2, 3) == 5\n")
    buf = f"!api {server.url}\n!test test_add.py\n!repair 2\n!user\n\nWrite add(a, b).\n"
    env = {**limner_env}
    env.pop("LIMNER_NO_LOG")
    p = run_buffer(buf, tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.count("\n!assistant\n") == 2 and out.count("\n!user\n") == 1
    assert "!note tests: failed (exit 1" in out and "repair round 1 of 2" in out
    assert "assert add(2, 3) == 5" in out and "AssertionError" in out
    assert out.rstrip().splitlines()[-1].startswith("!note tests: passed after 1 repair round (exit 0")
    assert out.index(BUGGY.strip()) < out.index("!user") < out.index(FIXED.strip())
    # The second request carried the whole exchange, failure included.
    (_, first), (_, second) = server.requests
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][1]["content"] == BUGGY and "AssertionError" in second["messages"][2]["content"]
    # Buffer + output is a buffer again: the next run sends every round.
    again = buffer.parse(buf + out)
    assert [m.role for m in again.messages] == ["user", "assistant", "user", "assistant"]
    assert again.messages[-1].content.strip() == FIXED.strip()
    # Both exchanges were logged.
    logs = subprocess.run(limner_command() + ["logs", "--json"], capture_output=True, text=True, env=env)
    assert len(json.loads(logs.stdout)) == 2


def test_pytest_file_and_rounds_running_out(model, tmp_path, limner_env):
    server = model(lambda body: BUGGY)  # never learns
    (tmp_path / "test_add.py").write_text("from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    buf = f"!api {server.url}\n!test test_add.py\n!repair 1\n!user\n\nWrite add(a, b).\n"
    p = run_buffer(buf, tmp_path, limner_env)
    assert p.returncode == 0, p.stdout
    out = p.stdout
    assert len(server.requests) == 2 and out.count("\n!assistant\n") == 2
    tail = out[out.rindex("!note tests: failed after 1 repair round"):]
    # pytest's report, cut to its E lines, as !note lines the next run ignores.
    assert "!note E       assert -1 == 5\n" in tail and "!note test_add.py:4: AssertionError\n" in tail
    assert all(line.startswith("!note") for line in tail.strip().splitlines())
    assert len(buffer.parse(buf + out).messages) == 4


def test_test_only_and_repair_without_test(model, tmp_path, limner_env):
    server = model()
    p = run_buffer(f"!api {server.url}\n!test python -c 'from solution import add; assert add(1, 1) == 2'\n"
                   "!user\n\nWrite add.\n", tmp_path, limner_env)
    assert p.returncode == 0
    assert "!note tests: failed (exit 1" in p.stdout and "\n!user\n" not in p.stdout
    assert len(server.requests) == 1
    p = run_buffer(f"!api {server.url}\n!repair 2\n!user\n\nWrite add.\n", tmp_path, limner_env)
    assert "`!repair` needs `!test CMD`" in p.stdout and len(server.requests) == 2
    # A passing reply: one note, nothing more asked.
    ok = model(lambda body: FIXED)
    p = run_buffer(f"!api {ok.url}\n!test python -c 'from solution import add; assert add(1, 1) == 2'\n"
                   "!repair 3\n!user\n\nWrite add.\n", tmp_path, limner_env)
    assert p.stdout.rstrip().endswith("sandbox)") and "!note tests: passed (exit 0" in p.stdout
    assert len(ok.requests) == 1


@pytest.mark.slow
def test_repair_rounds_on_the_real_engine(tmp_path, limner_env, tmp_path_factory):
    from engine_support import shared_data_dir

    env = {**limner_env, "LIMNER_ENGINE": "inproc", "LIMNER_DATA_DIR": str(shared_data_dir(tmp_path_factory))}
    # A test nothing can pass, so every round runs and shows in the buffer.
    buf = ("!:model smollm2-135m\n!:max_tokens 40\n!:temperature 0\n!:n_threads 1\n"
           "!test python -c 'raise SystemExit(\"never passes\")'\n!repair 1\n"
           "!user\n\nWrite a Python function add(a, b) that returns a + b.\n")
    p = run_buffer(buf, tmp_path, env, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.count("\n!assistant\n") == 2 and out.count("\n!user\n") == 1
    assert "never passes" in out and "!note tests: failed after 1 repair round" in out
    assert [m.role for m in buffer.parse(buf + out).messages] == ["user", "assistant", "user", "assistant"]
    assert "strict sandbox" in out or "basic sandbox" in out
    assert not (tmp_path / "solution.py").exists()  # the code went to the sandbox, not the user's dir


def test_failure_lines_starting_with_bang_survive_the_round_trip():
    turn = repair.feedback("!boom: a line that looks like a directive\nAssertionError")
    buf = "!user\n\nfirst\n!assistant\n\nreply\n!user\n\n" + repair._escaped(turn) + "\n"
    assert buffer.parse(buf).messages[-1].content == turn.strip()
