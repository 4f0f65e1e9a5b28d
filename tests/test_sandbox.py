"""The sandbox runs code and tells the truth about how isolated it was.

Real bwrap, real cgroups, real subprocesses; nothing is mocked. The hostile
cases are in test_sandbox_hostile.py.
"""
from __future__ import annotations

import os

import pytest

from limner.sandbox import probe, run, run_python
from limner.sandbox.probe import BWRAP_ENV, LEVELS, SandboxUnavailable

STRICT = probe().level == "strict"
needs_strict = pytest.mark.skipif(not STRICT, reason="bwrap sandbox unavailable: " + probe().bwrap_error)


@pytest.fixture(autouse=True)
def no_leftover_cgroups():
    yield
    parent = probe().pids_cgroup
    if parent:
        mine = [n for n in os.listdir(parent) if n.startswith(f"{os.getpid()}-")]
        assert mine == [], f"run cgroups left behind (processes outlived a run): {mine}"


def test_probe_names_a_level_and_its_layers():
    p = probe()
    assert p.level in LEVELS
    text = p.describe()
    assert f"sandbox level available: {p.level}" in text
    assert "bwrap:" in text and "pids cgroup:" in text


def test_output_exit_code_and_isolation_are_recorded():
    r = run_python("import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nsys.exit(3)")
    assert r.returncode == 3
    assert r.stdout == "to out\n"
    assert r.stderr == "to err\n"
    assert not r.ok and r.killed_reason is None and not r.timed_out
    assert r.isolation == probe().level
    assert not r.weaker_than_asked
    assert r.seconds > 0
    assert "exit 3" in r.describe()


def test_files_subdirectories_and_stdin_reach_the_code():
    code = (
        "import sys\n"
        "from pkg.mod import VALUE\n"
        "print(VALUE, open('data.txt').read().strip(), sys.stdin.read().upper())\n"
    )
    r = run_python(code, files={"pkg/__init__.py": "", "pkg/mod.py": "VALUE = 41 + 1\n",
                                "data.txt": "some data\n"}, stdin="piped in")
    assert r.ok, r.stderr
    assert r.stdout == "42 some data PIPED IN\n"


def test_the_work_dir_is_writable_and_fresh_each_run():
    first = run_python("open('left.txt', 'w').write('x'); import os; print(sorted(os.listdir('.')))")
    assert first.ok, first.stderr
    assert "left.txt" in first.stdout
    second = run_python("import os; print(os.path.exists('left.txt'))")
    assert second.stdout == "False\n"


def test_any_command_runs_not_only_python():
    r = run(["/bin/sh", "-c", "echo hello from sh; exit 4"])
    assert r.returncode == 4
    assert r.stdout == "hello from sh\n"


@needs_strict
def test_strict_runs_as_nobody_without_capabilities():
    r = run_python(
        "import os\n"
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')]\n"
        "print(os.getuid(), os.getgid(), os.getgroups(), set(caps), os.getcwd())\n"
    )
    assert r.ok, r.stderr
    # As root: setpriv's real uid 65534. As a user: 65534 inside a user namespace.
    assert r.stdout.startswith("65534 65534 [] ") or r.stdout.startswith("65534 65534 [65534] ")
    assert "{'0000000000000000'}" in r.stdout  # no capability in any set
    assert r.stdout.rstrip().endswith("/tmp")
    assert r.layers[0] == "bwrap"


def test_a_missing_bwrap_refuses_to_run_and_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv(BWRAP_ENV, "/nonexistent/bwrap")
    assert probe().level == "basic"
    assert "bwrap not found" in probe().bwrap_error
    canary = tmp_path / "canary"
    tmp_path.chmod(0o777)
    code = f"open({str(canary)!r}, 'w').write('ran')\nprint('ran')"
    with pytest.raises(SandboxUnavailable) as e:
        run_python(code)  # want="strict" is the default
    assert "bwrap not found" in e.value.message
    assert "apt-get install bubblewrap" in e.value.hint and "--sandbox basic" in e.value.hint
    assert not canary.exists()  # refused before anything ran
    # Asked for on purpose, the weaker level runs, and says which it was.
    r = run_python(code, want="basic")
    assert r.stdout == "ran\n" and canary.exists()
    assert r.isolation == "basic" and not r.weaker_than_asked
    assert "bwrap" not in r.layers and "basic sandbox" in r.describe()


def test_require_names_what_is_missing_and_the_opt_in(monkeypatch):
    from limner.sandbox.probe import require

    monkeypatch.setenv(BWRAP_ENV, "none")
    assert require("basic").level == "basic"
    with pytest.raises(SandboxUnavailable, match="strict sandbox is unavailable"):
        require("strict")


def test_asking_for_basic_is_not_weaker_than_asked():
    r = run_python("print(1)", want="basic")
    assert r.ok, r.stderr
    assert r.isolation == "basic" and not r.weaker_than_asked


def test_unknown_level_and_escaping_file_names_are_refused():
    with pytest.raises(ValueError):
        run_python("pass", want="paranoid")
    for bad in ("../escape.py", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError):
            run_python("pass", files={bad: "x"})


def test_large_stdin_and_output_pass_through_whole():
    data = "0123456789" * 50_000  # 500 kB each way: more than a pipe holds
    r = run_python("import sys\nd = sys.stdin.read()\nsys.stdout.write(d)\nprint(len(d), file=sys.stderr)\n",
                   stdin=data, timeout=20)
    assert r.ok, r.stderr
    assert r.stdout == data and r.stderr == "500000\n" and not r.truncated
