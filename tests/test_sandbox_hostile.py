"""Hostile code: each attack must be contained AND reported, and the machine
must stay healthy (no process outlives its run, no cgroup is left behind).

Every case runs twice: as a fresh sandboxed process (`run_python`) and in a
warm pooled sandbox (`Pool.run_python`), where it must also not disturb the
runs after it. Every case is bounded: timeouts of 1-3 s, small limits.

The suite holds for root and for a normal user (bwrap in a user namespace);
test_sandbox_unprivileged.py runs it again as uid 65534 when we are root.
"""
from __future__ import annotations

import ast
import errno
import os
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from limner.sandbox import cgroup, probe, run_python
from limner.sandbox.pool import OWN_PROCESSES, Pool

pytestmark = pytest.mark.skipif(
    probe().level != "strict", reason="bwrap sandbox unavailable: " + probe().bwrap_error
)
CHECKOUT = str(Path(__file__).resolve().parent.parent)


def _my_cgroups() -> list[str]:
    parent = probe().pids_cgroup
    return [n for n in os.listdir(parent) if n.startswith(f"{os.getpid()}-")] if parent else []


@pytest.fixture(scope="module")
def pool():
    with Pool(workers=1, max_procs=32) as p:
        yield p
    assert _my_cgroups() == [], "closing the pool left a cgroup behind"


@pytest.fixture(autouse=True)
def machine_stays_healthy(pool):
    yield
    parent = probe().pids_cgroup
    if parent:
        pooled = {os.path.basename(c) for c in pool.cgroups}
        assert set(_my_cgroups()) <= pooled, "a run's cgroup outlived it: some process survived"
        for name in pooled:
            # Whatever a job did, a pooled sandbox holds only its own processes.
            assert len(cgroup.pids(os.path.join(parent, name))) <= OWN_PROCESSES
    # And the machine still runs ordinary sandboxed code at once.
    r = run_python("print('alive')", timeout=5)
    assert r.stdout == "alive\n" and r.ok


@pytest.fixture(params=["fresh", "pool"])
def runner(request, pool):
    """run(code, **limits) -> Result, in a fresh sandbox or the warm pool."""
    if request.param == "fresh":
        yield lambda code, **kw: run_python(code, max_procs=32, **kw)
    else:
        def pooled(code, **kw):
            r = pool.run_python(code, **kw)
            assert "warm-fork" in r.layers
            return r

        yield pooled
        after = pool.run_python("import os\nprint(sorted(os.listdir('/tmp')), os.getcwd())", timeout=5)
        assert after.stdout == "['job'] /tmp/job\n", after  # nothing left over from the hostile job


@pytest.fixture
def host_dir():
    """A world-writable host dir outside the sandbox (so only the sandbox stops writes)."""
    d = tempfile.mkdtemp(prefix="limner-hostile-", dir="/var/tmp")
    os.chmod(d, 0o777)
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def test_network_is_unreachable_even_on_loopback(runner):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        r = runner(
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('CONNECTED')\n"
            "except OSError as e:\n"
            "    print('blocked', type(e).__name__)\n"
            "try:\n"
            "    socket.getaddrinfo('pypi.org', 443)\n"
            "    print('RESOLVED')\n"
            "except OSError:\n"
            "    print('no dns')\n",
            timeout=5,
        )
        assert "CONNECTED" not in r.stdout and "blocked" in r.stdout
        assert "RESOLVED" not in r.stdout and "no dns" in r.stdout
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever arrived
    finally:
        listener.close()
    assert r.isolation == "strict" and not r.weaker_than_asked


def test_writes_outside_the_work_dir_do_not_reach_the_host(host_dir):
    target = os.path.join(host_dir, "pwned.txt")
    code = (
        "for path in [%r, '/etc/limner-pwned', '/usr/limner-pwned', %r]:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n" % (target, os.path.join(os.getcwd(), "limner-pwned"))
    )
    # Hidden (host /var/tmp is a tmpfs inside), then visible but read-only.
    for expose in ((), (host_dir,)):
        r = run_python(code, timeout=5, expose=expose)
        assert "wrote" not in r.stdout, r.stdout
        assert r.stdout.count("refused") == 4
        assert f"refused {target} {errno.EROFS if expose else errno.ENOENT}" in r.stdout
    assert not os.path.exists(target)
    assert not os.path.exists("/etc/limner-pwned")
    assert not os.path.exists(os.path.join(os.getcwd(), "limner-pwned"))


def test_private_keys_and_home_are_out_of_reach(host_dir):
    # A key only its owner (root here) may read, in a dir anyone may enter.
    ssh = os.path.join(host_dir, ".ssh")
    os.mkdir(ssh, 0o755)
    key = os.path.join(ssh, "id_test")
    with open(key, "w") as f:
        f.write("-----BEGIN OPENSSH PRIVATE KEY----- limner-test-key\n")
    os.chmod(key, stat.S_IRUSR | stat.S_IWUSR)
    home = os.path.expanduser("~")
    code = (
        "import os\n"
        f"for path in [{key!r}, os.path.expanduser('~/.ssh/id_rsa'), {home + '/.ssh/id_rsa'!r}]:\n"
        "    try:\n"
        "        print('READ', open(path).read())\n"
        "    except OSError as e:\n"
        "        print('denied', e.errno)\n"
        f"print('home', sorted(os.listdir({home!r})) if os.path.isdir({home!r}) else [])\n"
    )
    hidden = run_python(code, timeout=5)
    checked = [hidden]
    if os.geteuid() == 0:
        # Made visible on purpose, root's key is still guarded by the sandbox's
        # uid. (A normal user's run keeps their uid outside: a key of theirs
        # they expose on purpose is theirs to read.)
        visible = run_python(code, timeout=5, expose=(host_dir,))
        assert visible.stdout.startswith(f"denied {errno.EACCES}\n")
        checked.append(visible)
    for r in checked:
        assert "limner-test-key" not in r.stdout and "READ" not in r.stdout
        assert r.stdout.count("denied") == 3
    assert hidden.stdout.startswith(f"denied {errno.ENOENT}\n")
    # The parent's home is a tmpfs inside: only the re-exposed Python runtime shows.
    runtime = os.path.relpath(os.path.realpath(sys.base_prefix), os.path.realpath(home)).split("/")[0]
    listed = ast.literal_eval(hidden.stdout.splitlines()[-1][len("home "):])
    assert set(listed) <= {runtime}, listed


def test_the_parents_secrets_do_not_leak_through_the_environment(runner, monkeypatch):
    monkeypatch.setenv("LIMNER_TEST_SECRET", "hunter2-limner-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-limner-test-secret")
    r = runner(
        "import os, glob\n"
        "print(dict(os.environ))\n"
        "for f in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        print(open(f, 'rb').read())\n"
        "    except OSError:\n"
        "        pass\n",
        timeout=5,
    )
    assert r.ok, r.stderr
    assert "hunter2" not in r.stdout and "sk-limner" not in r.stdout
    assert "LIMNER_TEST_SECRET" not in r.stdout


def test_a_fork_bomb_is_capped_and_cleaned_up(runner):
    started = time.monotonic()
    r = runner(
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n",
        timeout=2,
    )
    assert time.monotonic() - started < 6
    assert r.timed_out and r.killed_reason == "timeout"
    if probe().pids_cgroup:
        assert "processes" in r.limits_hit  # the pids limit refused forks, and we say so
    # (Without a cgroup, as a normal user, RLIMIT_NPROC inside the user
    # namespace caps the bomb; the kernel keeps no count of refused forks.)
    assert r.isolation == "strict"


def test_a_memory_bomb_hits_the_address_space_limit(runner):
    r = runner("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n",
                   memory_mb=256, timeout=10)
    assert r.returncode not in (0, None)
    assert r.killed_reason == "memory"
    assert "MemoryError" in r.stderr
    assert r.seconds < 10 and not r.timed_out


def test_an_infinite_loop_hits_the_cpu_limit(runner):
    r = runner("while True:\n    pass\n", cpu_s=1, timeout=10)
    assert r.killed_reason == "cpu", r
    assert not r.timed_out and r.seconds < 5


def test_a_sleep_past_the_timeout_is_killed_with_all_its_children(runner):
    code = (
        "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '300'])\n"  # same process group
        "subprocess.Popen(['sleep', '301'], start_new_session=True)\n"  # escapes the group
        "if os.fork() == 0:\n"
        "    os.setsid(); time.sleep(302)\n"
        "print('started', flush=True)\n"
        "time.sleep(300)\n"
    )
    r = runner(code, timeout=1, cpu_s=30)
    assert r.timed_out and r.killed_reason == "timeout"
    assert r.stdout == "started\n"  # output before the kill is kept
    assert r.seconds < 4


def test_output_flooding_is_cut_and_reported(runner):
    r = runner("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)\n",
                   max_output=64 * 1024, timeout=10)
    assert r.killed_reason == "output" and r.truncated
    assert len(r.stdout) == 64 * 1024
    assert r.seconds < 5


def test_a_huge_file_hits_the_file_size_limit(runner):
    r = runner("open('big', 'wb').write(b'x' * (8 << 20))\n", fsize_mb=1, timeout=5)
    assert r.killed_reason == "file-size"
    assert "File too large" in r.stderr


def test_the_weaker_sandbox_still_kills_escaped_children(monkeypatch):
    # Without bwrap only the process group and the pids cgroup stop a child
    # that starts its own session; the cgroup must catch it.
    if not probe().pids_cgroup:
        pytest.skip("no pids cgroup here")
    monkeypatch.setenv("LIMNER_SANDBOX_BWRAP", "none")
    marker = f"limner-escape-{os.getpid()}"
    r = run_python(
        "import subprocess\n"
        f"subprocess.Popen(['sh', '-c', 'sleep 300; : {marker}'], start_new_session=True)\n"
        "print('spawned')\n",
        timeout=3, want="basic",
    )
    assert r.isolation == "basic" and not r.weaker_than_asked
    assert r.stdout == "spawned\n"
    time.sleep(0.1)
    survivors = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        survivors.append(name)
            except OSError:
                pass
    assert survivors == []


def test_the_sandbox_sees_its_work_dir_and_runtime_not_the_checkout(runner):
    # Wherever the checkout (or its venv) lives, even under /tmp: /tmp holds
    # the run's own files only, and no path of the checkout exists inside.
    r = runner(
        "import os, sys\n"
        "print(sorted(os.listdir('/tmp')))\n"
        f"print([p for p in [{CHECKOUT!r}, {CHECKOUT + '/src'!r}, {CHECKOUT + '/tests'!r}] if os.path.exists(p)])\n"
        "print(sorted(os.listdir('/')))\n",
        timeout=5,
    )
    assert r.ok, r.stderr
    tmp, seen, root = r.stdout.splitlines()
    assert tmp in ("['job']", "['main.py']"), tmp  # the pool's job dir, or a fresh run's files
    assert seen == "[]", seen
    # Nothing of the host's top level but the system's trees and the runtime's.
    extra = set(ast.literal_eval(root)) - {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc",
                                           "dev", "proc", "tmp", "run"}
    runtime_tops = {os.path.realpath(x).split("/")[1] for x in (sys.prefix, sys.base_prefix)}
    assert extra <= runtime_tops, extra


def test_a_pooled_job_cannot_touch_the_zygote_and_killing_it_is_survived(pool):
    r = pool.run_python(
        "import os\n"
        "for path in ['/proc/2/mem', '/proc/2/environ', '/proc/2/fd/0']:\n"
        "    try:\n"
        "        open(path, 'rb').read(1)\n"
        "        print('OPENED', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path, e.errno)\n",
        timeout=5,
    )
    assert "OPENED" not in r.stdout and r.stdout.count("denied") == 3, r
    killed = pool.run_python("import os, signal\nos.kill(2, signal.SIGKILL)\nimport time\ntime.sleep(5)\n",
                             timeout=3)
    assert killed.killed_reason == "sandbox-died" and "died" in killed.stderr
    again = pool.run_python("print('fresh sandbox')", timeout=5)
    assert again.ok and again.stdout == "fresh sandbox\n"
