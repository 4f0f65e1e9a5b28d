"""The sandbox for a normal user: bwrap in a user namespace, no setpriv, and
(here) no pids cgroup it may write to.

Most users are not root. Run as root, these tests run the sandbox suites
again as uid 65534 (hostile cases fresh and pooled, the pool, the basics) and
require every case to pass, none skipped. Run as a normal user, the suites
themselves already are that run, and this file skips. Where uid 65534 cannot
make a user namespace (disabled by sysctl or AppArmor), it skips and says why.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from limner.sandbox import command, probe
from limner.sandbox.probe import NOBODY

ROOT = str(Path(__file__).resolve().parent.parent)
SUITES = ["tests/test_sandbox_hostile.py", "tests/test_sandbox_pool.py", "tests/test_sandbox.py"]


def _why_not() -> str:
    """'' when uid 65534 can make a bwrap sandbox in a user namespace here."""
    if os.geteuid() != 0:
        return f"already unprivileged (uid {os.geteuid()}): the sandbox suites themselves ran as this user"
    if probe().level != "strict":
        return "bwrap sandbox unavailable: " + probe().bwrap_error
    setpriv, bwrap = shutil.which("setpriv"), shutil.which("bwrap")
    if not setpriv:
        return "setpriv (util-linux) not found"
    p = subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        bwrap, "--unshare-user", "--ro-bind", "/", "/", "true"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        from limner.sandbox.probe import _userns_hint

        return f"uid {NOBODY} cannot make a user namespace: {p.stderr.strip()} ({_userns_hint()})"
    return ""


pytestmark = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "-")


def _traversable(path: str) -> bool:
    parts = path.split("/")
    return all(os.stat("/".join(parts[:i]) or "/").st_mode & 0o001 for i in range(1, len(parts)))


def _reachable_view() -> list[str]:
    """An outer bwrap (root, no user namespace) showing the host as it is,
    except that our interpreter's trees and the checkout, where they sit
    under a dir only root may enter (/root/.pyenv here), are reachable by
    uid 65534: as for a user whose Python lives in their own home."""
    argv, made = [], set()
    for path in command._exposed(()) + [ROOT]:
        if _traversable(path):
            continue
        parts = path.split("/")
        top = next("/".join(parts[:i]) for i in range(2, len(parts) + 1)
                   if not os.stat("/".join(parts[:i])).st_mode & 0o001)
        if top not in made:
            made.add(top)
            argv += ["--perms", "0755", "--tmpfs", top]
        for d in command._parents_between(top, os.path.dirname(path)):
            if d not in made:
                made.add(d)
                argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", path, path]
    return argv


def as_nobody(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run this interpreter with `args` as uid 65534 (no capabilities), in the checkout."""
    home = tempfile.mkdtemp(prefix="limner-nobody-", dir="/tmp")
    os.chown(home, NOBODY, NOBODY)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    if os.environ.get("PYTHONPATH"):  # a checkout run without installing it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    argv = [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", sys.executable, *args]
    view = _reachable_view()
    if view:
        argv = [shutil.which("bwrap"), "--dev-bind", "/", "/", *view, "--die-with-parent", "--", *argv]
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_uid_65534_gets_the_strict_sandbox_through_a_user_namespace():
    p = as_nobody(["-c", (
        "import os\n"
        "from limner.sandbox import probe, run_python\n"
        "from limner.sandbox.pool import Pool\n"
        "p = probe()\n"
        "print(os.geteuid(), p.is_root, p.level, p.pids_cgroup)\n"
        "code = 'import os; print(os.getuid(), sorted(os.listdir(\"/tmp\")))'\n"
        "r = run_python(code, timeout=10)\n"
        "print(r.stdout.strip(), r.layers)\n"
        "with Pool(workers=1) as pool:\n"
        "    w = pool.run_python(code, timeout=10)\n"
        "print(w.stdout.strip(), w.layers)\n"
    )], timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    me, fresh, pooled = p.stdout.splitlines()
    assert me == f"{NOBODY} False strict None", me  # not root, strict, and no cgroup to lean on
    assert fresh.startswith(f"{NOBODY} ['main.py'] ") and "'bwrap'" in fresh and "userns" in fresh
    assert pooled.startswith(f"{NOBODY} ['job'] ") and "warm-fork" in pooled and "userns" in pooled


def test_the_sandbox_suites_pass_as_uid_65534_fresh_and_pooled():
    p = as_nobody(["-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", ROOT, *SUITES])
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    results = re.findall(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", out, re.M)
    assert results, out[-3000:]
    # The one case that needs a pids cgroup (basic level, a child in its own
    # session) skips: uid 65534 may create none here.
    allowed = {("tests/test_sandbox_hostile.py::test_the_weaker_sandbox_still_kills_escaped_children", "SKIPPED")}
    assert {r for r in results if r[1] != "PASSED"} <= allowed, [r for r in results if r[1] != "PASSED"]
    hostile = [name for name, _ in results if name.startswith("tests/test_sandbox_hostile.py")]
    # Every hostile case that runs both ways ran both ways, as uid 65534.
    assert len([n for n in hostile if n.endswith("[pool]")]) >= 9
    assert len([n for n in hostile if n.endswith("[fresh]")]) >= 9
