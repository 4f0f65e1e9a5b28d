"""The resident engine through the real `limner` command and its Unix socket.

Each test module run gets its own runtime dir (LIMNER_RUNTIME_DIR), so the
tests start, share, crash and stop their own engine, never the user's.
Buffers pin `!:n_threads` and keep outputs short.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_support import THREADS, collect, shared_data_dir  # noqa: E402

from limner.engine import client  # noqa: E402
from limner.engine.core import Job  # noqa: E402
from limner.events import Stopped  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMNER = str(ROOT / ".venv" / "bin" / "limner")

CHAT = f"!:temperature 0\n!:max_tokens 8\n!:n_threads {THREADS}\n!user\nSay hello.\n"
COMPLETION = f"!completion\n!:temperature 0\n!:max_tokens 8\n!:n_threads {THREADS}\ndef add(a, b):\n"
# Greedy counting goes on for thousands of tokens: a job that only a cancel ends.
ENDLESS = (f"!completion\n!:model smollm2-135m\n!:temperature 0\n!:max_tokens 4000\n"
           f"!:n_threads {THREADS}\n1, 2, 3, 4, 5,")


def _env(tmp_path_factory, rdir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    env.update(LIMNER_RUNTIME_DIR=str(rdir), LIMNER_DATA_DIR=str(shared_data_dir(tmp_path_factory)),
               XDG_CONFIG_HOME=str(rdir.parent / "config"), LIMNER_NO_LOG="1", PYTHONUNBUFFERED="1",
               **extra)
    return env


def _stop_engine(env: dict) -> None:
    subprocess.run([LIMNER, "engine", "stop"], env=env, capture_output=True, timeout=30)
    pid_file = Path(env["LIMNER_RUNTIME_DIR"]) / "engine.pid"
    if pid_file.exists():  # it did not stop: do not leave it running
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    rdir = tmp_path_factory.mktemp("rt") / "limner"
    e = _env(tmp_path_factory, rdir)
    yield e
    _stop_engine(e)


@pytest.fixture
def use_engine(env, monkeypatch):
    """Point this process's client at the test engine."""
    monkeypatch.setenv("LIMNER_RUNTIME_DIR", env["LIMNER_RUNTIME_DIR"])
    monkeypatch.delenv("LIMNER_ENGINE", raising=False)
    return env


def limner(buffer: str, env: dict, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([LIMNER, *args], input=buffer, env=env, capture_output=True,
                          text=True, timeout=timeout)


def engine_pid(env) -> int:
    return int((Path(env["LIMNER_RUNTIME_DIR"]) / "engine.pid").read_text())


def status(env) -> dict:
    return client.request("status")


def wait_until(predicate, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_chat_through_the_engine_is_quiet_and_private(env):
    proc = limner(CHAT, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("\n\n!assistant\n\n") and proc.stdout.strip() != "!assistant"
    assert proc.stderr == ""  # no llama.cpp log on the terminal
    rdir = Path(env["LIMNER_RUNTIME_DIR"])
    assert stat.S_IMODE(rdir.stat().st_mode) == 0o700
    sock = rdir / "engine.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600


def test_completion_through_the_engine(env):
    proc = limner(COMPLETION, env)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip()  # a completion continues the text: no !assistant header
    assert "!assistant" not in proc.stdout


def test_later_calls_reuse_the_engine_and_its_prefix(use_engine):
    pid = engine_pid(use_engine)
    msgs = [{"role": "user", "content": "Tell me about the sea."}]
    params = {"temperature": 0, "max_tokens": 8, "n_threads": THREADS}
    text, u1, _ = collect(client.stream(Job(messages=msgs, params=params)))
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "More."}]
    _, u2, end = collect(client.stream(Job(messages=msgs, params=params)))
    assert isinstance(end, Stopped)
    assert u2.cached_tokens >= u1.prompt_tokens
    assert u2.prompt_tokens - u2.cached_tokens <= u1.completion_tokens + 12
    assert engine_pid(use_engine) == pid  # the same resident process served both


def test_unknown_model_and_non_gguf_are_error_blocks(env, tmp_path):
    proc = limner("!:model nope\n!user\nhi\n", env)
    assert proc.returncode != 0 and "!error" in proc.stdout
    assert "unknown model 'nope'" in proc.stdout and "smollm2-135m, gemma3-270m" in proc.stdout
    junk = tmp_path / "junk.gguf"
    junk.write_text("not a model\n")
    proc = limner(f"!:model {junk}\n!user\nhi\n", env)
    assert proc.returncode != 0 and "!error" in proc.stdout and "not a valid GGUF" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert limner(CHAT, env).returncode == 0  # the engine is unharmed


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_a_client_that_leaves_cancels_its_job_at_once(use_engine, how):
    pid = engine_pid(use_engine)
    done_before = status(use_engine)["jobs_done"]
    proc = subprocess.Popen([LIMNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=use_engine)
    proc.stdin.write(ENDLESS.encode())
    proc.stdin.close()
    assert proc.stdout.read(8)  # tokens are flowing
    assert status(use_engine)["busy"]
    proc.send_signal(how)
    proc.wait(30)
    # The engine drops the job within a token or so (4000 tokens would take a minute).
    assert wait_until(lambda: not status(use_engine)["busy"], timeout=10)
    assert status(use_engine)["jobs_done"] == done_before + 1
    assert engine_pid(use_engine) == pid
    after = limner(CHAT, use_engine)
    assert after.returncode == 0 and after.stderr == ""


def test_two_clients_at_once_both_complete(use_engine):
    procs = [subprocess.Popen([LIMNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=use_engine, text=True) for _ in range(2)]
    outs = [p.communicate(CHAT, timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and err == "" and "!assistant" in out
    assert outs[0][0] == outs[1][0]  # greedy, same buffer: the same reply


def test_killed_engine_is_reported_once_and_replaced(use_engine):
    old = engine_pid(use_engine)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not Path(f"/proc/{old}").exists() or
                      Path(f"/proc/{old}/stat").read_text().split(") ")[1][0] == "Z")
    proc = limner(CHAT, use_engine)
    assert proc.returncode == 0 and "!assistant" in proc.stdout
    assert proc.stderr == "limner: the engine stopped unexpectedly; started a new one\n"
    assert engine_pid(use_engine) != old
    again = limner(CHAT, use_engine)  # ... and only once
    assert again.returncode == 0 and again.stderr == ""


def test_racing_first_calls_start_one_engine(tmp_path_factory):
    rdir = tmp_path_factory.mktemp("race") / "limner"
    env = _env(tmp_path_factory, rdir)
    try:
        procs = [subprocess.Popen([LIMNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, text=True) for _ in range(3)]
        outs = [p.communicate(CHAT, timeout=180) for p in procs]
        assert all(p.returncode == 0 and err == "" for p, (_, err) in zip(procs, outs)), outs
        log = (rdir / "engine.log").read_text()
        assert log.count("listening on") == 1, log
    finally:
        _stop_engine(env)


def test_engine_status_stop_and_idle_exit(tmp_path_factory):
    rdir = tmp_path_factory.mktemp("idle") / "limner"
    env = _env(tmp_path_factory, rdir, LIMNER_ENGINE_IDLE="2")
    try:
        none = subprocess.run([LIMNER, "engine", "status"], env=env, capture_output=True, text=True)
        assert none.returncode == 3 and "no engine running" in none.stdout
        assert limner(CHAT, env).returncode == 0
        st = subprocess.run([LIMNER, "engine", "status"], env=env, capture_output=True, text=True)
        assert st.returncode == 0 and "engine running" in st.stdout and "smollm2-135m" in st.stdout
        # With nothing to do it exits by itself and cleans up after itself.
        assert wait_until(lambda: not (rdir / "engine.sock").exists(), timeout=30)
        assert not (rdir / "engine.pid").exists()
        # The next call starts a fresh one, without a crash notice.
        proc = limner(CHAT, env)
        assert proc.returncode == 0 and proc.stderr == ""
        stop = subprocess.run([LIMNER, "engine", "stop"], env=env, capture_output=True, text=True)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert not (rdir / "engine.sock").exists()
    finally:
        _stop_engine(env)


def test_inproc_mode_and_verbose(tmp_path_factory, tmp_path):
    env = _env(tmp_path_factory, tmp_path / "rt", LIMNER_ENGINE="inproc")
    quiet = limner(CHAT, env)
    assert quiet.returncode == 0 and "!assistant" in quiet.stdout and quiet.stderr == ""
    assert not (tmp_path / "rt" / "engine.sock").exists()  # no resident engine involved
    loud = limner(CHAT, env, "--verbose")
    assert loud.returncode == 0 and "llama" in loud.stderr  # llama.cpp's own log, let through


def test_an_engine_running_older_code_is_replaced_quietly(use_engine):
    rdir = Path(use_engine["LIMNER_RUNTIME_DIR"])
    assert limner(CHAT, use_engine).returncode == 0
    old = engine_pid(use_engine)
    (rdir / "engine.stamp").write_text("limner 0.0.1 from before an upgrade")
    proc = limner(CHAT, use_engine)
    assert proc.returncode == 0 and "!assistant" in proc.stdout
    assert proc.stderr == ""  # an upgrade is not a crash
    assert engine_pid(use_engine) != old
    assert not Path(f"/proc/{old}").exists() or "Z" in Path(f"/proc/{old}/stat").read_text().split(") ")[1][:1]


def test_a_relative_model_path_is_the_callers(use_engine, tmp_path):
    from limner.engine import models

    (tmp_path / "mine.gguf").symlink_to(models.resolve("smollm2-135m")[1])
    proc = subprocess.run([LIMNER], input=f"!:model ./mine.gguf\n{CHAT}", env=use_engine,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "!assistant" in proc.stdout, proc.stdout
