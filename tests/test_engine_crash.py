"""An engine crash is named, not looped (issue 8).

The real engine on the bundled SmolLM2, each test in its own runtime dir
(LIMNER_RUNTIME_DIR), threads pinned. A "crash" is a SIGSEGV sent to the
resident engine in the middle of a reply: the same death a llama.cpp build
that cannot run on this CPU dies, as the supervisor and the client see it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_support import THREADS, shared_data_dir  # noqa: E402

from limner.engine import client, crash  # noqa: E402
from limner.engine.core import Job  # noqa: E402
from limner.events import Failure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMNER = str(ROOT / ".venv" / "bin" / "limner")
MODEL = "smollm2-135m"
CHAT = f"!:temperature 0\n!:max_tokens 8\n!:n_threads {THREADS}\n!user\nSay hello.\n"
# Greedy counting goes on for thousands of tokens: still decoding when it is killed.
ENDLESS = (f"!completion\n!:model {MODEL}\n!:temperature 0\n!:max_tokens 4000\n"
           f"!:n_threads {THREADS}\n1, 2, 3, 4, 5,")

DECODE = """
import os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_threads=1, n_threads_batch=1,
                      verbose=False)
out = llm("The capital of France is", max_tokens=4, temperature=0.0)
print(out["usage"]["completion_tokens"], repr(out["choices"][0]["text"]))
"""


@pytest.fixture
def env(tmp_path_factory, tmp_path):
    rdir = tmp_path / "rt"
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    e.update(LIMNER_RUNTIME_DIR=str(rdir), LIMNER_DATA_DIR=str(shared_data_dir(tmp_path_factory)),
             XDG_CONFIG_HOME=str(tmp_path / "config"), LIMNER_NO_LOG="1", PYTHONUNBUFFERED="1")
    yield e
    subprocess.run([LIMNER, "engine", "stop"], env=e, capture_output=True, timeout=30)
    pid_file = rdir / "engine.pid"
    if pid_file.exists():  # it did not stop: do not leave it running
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def limner(buffer: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([LIMNER], input=buffer, env=env, capture_output=True, text=True,
                          timeout=120)


def segfault_mid_reply(env: dict) -> tuple[str, str, int, str]:
    """Start a long reply, SIGSEGV the engine once text flows: (arrived, stdout, rc, stderr)."""
    proc = subprocess.Popen([LIMNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdin.write(ENDLESS.encode())
    proc.stdin.close()
    arrived = proc.stdout.read(6).decode()  # tokens are flowing
    pid = int((Path(env["LIMNER_RUNTIME_DIR"]) / "engine.pid").read_text())
    os.kill(pid, signal.SIGSEGV)
    out, err = proc.stdout.read(), proc.stderr.read()  # both small; EOF once it has exited
    return arrived, arrived + out.decode(), proc.wait(60), err.decode()


def test_the_llama_cpp_build_decodes_on_this_cpu():
    """A plain llama_cpp decode in a subprocess: a build that crashes here dies by a signal."""
    from limner.engine import models

    path = models.resolve(MODEL)[1]
    proc = subprocess.run([sys.executable, "-c", DECODE, path], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    died = f" (died with {crash.signal_name(-proc.returncode)})" if proc.returncode < 0 else ""
    assert proc.returncode == 0, f"exit {proc.returncode}{died}: {proc.stderr[-2000:]}"
    assert int(proc.stdout.split()[0]) > 0


def test_a_segfault_mid_reply_is_named_with_the_model_and_the_log(env):
    rdir = Path(env["LIMNER_RUNTIME_DIR"])
    arrived, out, rc, err = segfault_mid_reply(env)
    assert rc == 1, out + err
    text, _, error = out.partition("\n\n!error\n\n")
    assert text.startswith(arrived) and arrived.strip()  # what arrived is kept
    assert error.startswith(f"the engine crashed (SIGSEGV) while decoding with {MODEL}\n"), error
    assert "Run again" in error and f"Its log: {rdir / 'engine.log'}" in error
    assert "Traceback" not in out + err and err == ""
    log = (rdir / "engine.log").read_text()
    assert "llama_model_loader" in log  # llama.cpp's own log lines reach the log file
    assert "Fatal Python error: Segmentation fault" in log  # faulthandler's stacks
    assert "died with SIGSEGV" in log  # the supervisor's line


def test_a_second_segfault_names_the_build_and_the_next_run_works(env):
    rdir = Path(env["LIMNER_RUNTIME_DIR"])
    _, first, rc, _ = segfault_mid_reply(env)
    assert rc == 1 and "Run again" in first
    _, second, rc, err = segfault_mid_reply(env)
    dead = int((rdir / "engine.pid").read_text())
    assert rc == 1 and err == "", second + err  # no "started a new one": the !error said it
    error = second.partition("\n\n!error\n\n")[2]
    assert error.startswith(f"the engine crashed (SIGSEGV) while decoding with {MODEL}: "
                            "2 crashes in a row"), error
    assert "Run again" not in error
    assert "the llama.cpp build crashes on this CPU" in error  # build.crash_advice's text
    assert "scripts/setup --rebuild-engine" in error and str(rdir / "engine.log") in error
    # No crash loop: the next call starts a fresh engine, which answers.
    after = limner(CHAT, env)
    assert after.returncode == 0 and "!assistant" in after.stdout and after.stderr == ""
    assert int((rdir / "engine.pid").read_text()) != dead
    history = json.loads((rdir / "engine.crashes.json").read_text())
    assert MODEL not in history["models"]  # a good reply ends the run of crashes


def test_a_build_for_another_cpu_is_refused_before_it_starts(tmp_path, monkeypatch):
    from limner.engine import build

    monkeypatch.setenv("LIMNER_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.delenv("LIMNER_ENGINE", raising=False)
    monkeypatch.setattr(client, "_engine", None)
    monkeypatch.setattr(build, "installed_record",
                        lambda prefix=None: {"key": "k", "assumes": ["sse4_2", "avx512_made_up"]})
    monkeypatch.setattr(build, "host_features", lambda cpuinfo=None: {"sse4_2", "avx2"})
    job = Job(messages=[{"role": "user", "content": "hi"}], params={"max_tokens": 4})
    for events in (client.Connection(job).events(), client.inproc_stream(job)):
        (ev,) = list(events)
        assert isinstance(ev, Failure) and "lacks avx512_made_up" in ev.message, ev
        assert "scripts/setup --rebuild-engine" in ev.hint
    assert not (tmp_path / "rt" / "engine.pid").exists()  # nothing was started
