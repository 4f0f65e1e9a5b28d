"""The warm sandbox pool: same results as a fresh run, without the start-up.

Hostile cases run against the pool in test_sandbox_hostile.py.
"""
from __future__ import annotations

import pytest

from limner.sandbox import probe, run_python
from limner.sandbox.pool import Pool
from limner.sandbox.probe import BWRAP_ENV, SandboxUnavailable

pytestmark = pytest.mark.skipif(probe().level != "strict", reason="the warm pool needs the strict sandbox")


@pytest.fixture(scope="module")
def pool():
    with Pool(workers=2) as p:
        yield p


def test_map_keeps_order_and_every_result_says_how_it_ran(pool):
    results = pool.map_python([f"print({i} * {i})" for i in range(12)], timeout=5)
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(12)]
    assert all(r.ok and r.isolation == "strict" and "warm-fork" in r.layers for r in results)


def test_files_args_stdin_and_env_reach_the_job(pool):
    r = pool.run_python(
        "import os, sys\nfrom helper import twice\n"
        "print(twice(int(sys.argv[1])), sys.stdin.read().strip(), os.environ['GREETING'], sys.argv[0])\n",
        files={"helper.py": "def twice(x):\n    return 2 * x\n"}, args=["21"], stdin="piped",
        env={"GREETING": "hi"}, timeout=5)
    assert r.ok, r.stderr
    assert r.stdout == "42 piped hi main.py\n"


def test_the_job_ends_like_an_interpreter_threads_atexit_and_exit_codes(pool):
    r = pool.run_python(
        "import atexit, threading, time, sys\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "def late():\n    time.sleep(0.2)\n    print('thread done')\n"
        "threading.Thread(target=late).start()\n"
        "sys.exit(3)\n", timeout=5)
    assert r.returncode == 3
    assert r.stdout == "thread done\natexit ran\n"
    crash = pool.run_python("def f():\n    raise KeyError('k')\nf()\n", timeout=5)
    assert crash.returncode == 1
    assert crash.stderr.startswith("Traceback (most recent call last):\n  File \"/tmp/job/main.py\", line 3")
    assert "KeyError: 'k'" in crash.stderr


def test_the_same_results_as_a_fresh_sandbox(pool):
    code = "import sys, json\nprint(json.dumps(sorted(sys.modules) != []), 7 // 2)\nsys.exit(5)\n"
    warm, fresh = pool.run_python(code, timeout=5), run_python(code, timeout=5)
    assert (warm.returncode, warm.stdout, warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_without_bwrap_the_pool_refuses_strict_and_runs_basic_when_asked(monkeypatch):
    monkeypatch.setenv(BWRAP_ENV, "none")
    with pytest.raises(SandboxUnavailable, match="LIMNER_SANDBOX_BWRAP=none"):
        Pool(workers=1)
    with Pool(workers=1, want="basic") as weak:
        r = weak.run_python("print('ok')", timeout=5)
    assert r.stdout == "ok\n"
    assert r.isolation == "basic" and not r.weaker_than_asked and "warm-fork" not in r.layers
