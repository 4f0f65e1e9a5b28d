"""One pids cgroup per sandboxed run: a cap on forks that binds root too,
and a list of every process the run made, so none outlives it.

RLIMIT_NPROC counts per user and does not bind root at all; a cgroup counts
per run. Works with cgroup v1 (a `pids` hierarchy) and v2 (when the pids
controller can be enabled below our own cgroup).
"""
from __future__ import annotations

import errno
import itertools
import os
import signal
import time

PARENT_NAME = "limner-sandbox"
_counter = itertools.count()


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount root, mount point, fstype, super options) of every cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                    out.append((fields[3], fields[4], rfields[0], rfields[2]))
    except OSError:
        pass
    return out


def _own_paths() -> dict[str, str]:
    """controller list -> our cgroup path, from /proc/self/cgroup ("" is v2)."""
    out = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                out[controllers] = path
    except OSError:
        pass
    return out


def _join(mount_root: str, mount_point: str, path: str) -> str:
    rel = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path.lstrip("/")
    return os.path.normpath(os.path.join(mount_point, rel))


def find_pids_parent() -> tuple[str | None, int, str]:
    """(dir to create run cgroups in, cgroup version, why not when None)."""
    own = _own_paths()
    reasons = []
    for root, point, fstype, opts in _mounts():
        if fstype == "cgroup" and "pids" in opts.split(","):
            path = next((p for c, p in own.items() if "pids" in c.split(",")), "/")
            parent = os.path.join(_join(root, point, path), PARENT_NAME)
            why = _try_parent(parent, version=1)
            if not why:
                return parent, 1, ""
            reasons.append(why)
    for root, point, fstype, _ in _mounts():
        if fstype == "cgroup2":
            base = _join(root, point, own.get("", "/"))
            parent = os.path.join(base, PARENT_NAME)
            why = _try_parent(parent, version=2, base=base)
            if not why:
                return parent, 2, ""
            reasons.append(why)
    return None, 0, "; ".join(reasons) or "no cgroup filesystem mounted"


def _try_parent(parent: str, version: int, base: str = "") -> str:
    """Make `parent` and one trial child with pids.max; '' when that works."""
    try:
        if version == 2:
            with open(os.path.join(base, "cgroup.controllers")) as f:
                if "pids" not in f.read().split():
                    return f"{base}: no pids controller"
            os.makedirs(parent, exist_ok=True)
            _write(os.path.join(base, "cgroup.subtree_control"), "+pids")
            _write(os.path.join(parent, "cgroup.subtree_control"), "+pids")
        else:
            os.makedirs(parent, exist_ok=True)
        _sweep_stale(parent)
        trial = create(parent, 8)
        remove(trial)
        return ""
    except OSError as e:
        return f"{parent}: {e.strerror or e}"


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _sweep_stale(parent: str) -> None:
    """Remove empty run cgroups left by limner processes that died mid-run."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        owner = name.split("-", 1)[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass


def create(parent: str, max_procs: int) -> str:
    """A fresh run cgroup allowing `max_procs` processes (threads count too)."""
    path = os.path.join(parent, f"{os.getpid()}-{next(_counter)}")
    os.mkdir(path)
    try:
        _write(os.path.join(path, "pids.max"), str(max_procs))
    except OSError:
        os.rmdir(path)
        raise
    return path


def pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def forks_refused(path: str) -> int:
    """How many forks the pids limit refused (the `max` count in pids.events)."""
    try:
        with open(os.path.join(path, "pids.events")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def kill_all(path: str, patience: float = 2.0) -> bool:
    """SIGKILL everything in the cgroup until it is empty; True when it is."""
    kill_file = os.path.join(path, "cgroup.kill")  # v2, Linux 5.14+: atomic
    if os.path.exists(kill_file):
        try:
            _write(kill_file, "1")
        except OSError:
            pass
    deadline = time.monotonic() + patience
    while True:
        left = pids(path)
        if not left:
            return True
        # v1 has no atomic kill; a fork racing this loop is caught next pass,
        # and pids.max bounds how many passes that can take.
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def remove(path: str, patience: float = 2.0) -> bool:
    """rmdir the run cgroup; only succeeds once every process in it is gone."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            kill_all(path, patience=0)
            time.sleep(0.001)
