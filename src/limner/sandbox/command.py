"""How a sandboxed run is put together: the bwrap, setpriv and prlimit
argument lists, the scrubbed environment, and the files of the work dir.

Pure list-building (plus writing the files), so the probe can build exactly
the command a real run would use and try it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from limner.sandbox.probe import NOBODY, Probe

WORKDIR = "/tmp"  # inside bwrap: a fresh tmpfs, also $HOME and $TMPDIR
# Host directories a sandbox must not see (tmpfs over them): homes hold keys
# and tokens, /tmp and /run hold other programs' sockets and secrets.
HIDDEN = ("/tmp", "/var/tmp", "/root", "/home", "/run", "/mnt", "/media")
# Joins the cgroup named by $1 (if any) before anything can fork, then execs.
PRELUDE = 'if [ -n "$1" ]; then echo $$ > "$1" || exit 125; fi; shift; exec "$@"'


@dataclass
class Limits:
    """The limits of one run, and (hits) which of them bit."""

    timeout: float
    memory_mb: int
    cpu_s: int
    fsize_mb: int
    max_output: int
    max_procs: int
    tmpfs_mb: int
    hits: list[str] = field(default_factory=list)


def bwrap_argv(
    p: Probe, file_fds: dict[str, int], tmpfs_mb: int, expose: tuple[str, ...] = (),
    die_with_parent: bool = True,
) -> list[str]:
    """bwrap's options (without the binary), ending in `--`.

    die_with_parent uses PR_SET_PDEATHSIG, which fires when the *thread*
    that started bwrap ends: right for one run, wrong for a pooled sandbox
    started from a short-lived worker thread (that one ends when its
    channel closes instead).
    """
    if p.is_root:
        # No user namespace: one made by root maps the sandbox uid back to 0.
        # setpriv drops to 65534 inside, so keep only the caps it needs.
        ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        caps = ["--cap-drop", "ALL"] + [a for c in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP") for a in ("--cap-add", c)]
    else:
        ns, caps = ["--unshare-all"], ["--cap-drop", "ALL"]
    argv = [*ns, *(["--die-with-parent"] if die_with_parent else []), "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    hidden = [d for d in _hidden_dirs() if os.path.isdir(d)]
    for d in hidden:
        if d == WORKDIR:
            argv += ["--size", str(tmpfs_mb << 20), "--perms", "1777", "--tmpfs", d]
        else:
            argv += ["--size", str(1 << 20), "--perms", "0755", "--tmpfs", d]
    made: set[str] = set()
    for path in _exposed(expose):
        under = next((h for h in hidden if path == h or path.startswith(h + "/")), None)
        if under is None or path == under:
            continue
        parts = os.path.relpath(path, under).split("/")[:-1]
        for i in range(len(parts)):
            d = os.path.join(under, *parts[: i + 1])
            if d not in made:
                made.add(d)
                argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", path, path]
    for rel, fd in file_fds.items():
        dest = os.path.join(WORKDIR, rel)
        parent = os.path.dirname(dest)
        if parent != WORKDIR and parent not in made:
            for d in _parents_between(WORKDIR, parent):
                if d not in made:
                    made.add(d)
                    argv += ["--perms", "0777", "--dir", d]
        argv += ["--perms", "0666", "--file", str(fd), dest]
    return argv + ["--chdir", WORKDIR, *caps, "--"]


def setpriv_argv(p: Probe) -> list[str]:
    """Drop from root to uid 65534 with no capabilities at all, for good."""
    if not (p.is_root and p.setpriv):
        return []
    return [
        p.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
    ]


def prlimit_argv(p: Probe, lim: Limits) -> list[str]:
    if not p.prlimit:
        return []
    # RLIMIT_NPROC counts every process of the uid, across concurrent runs;
    # with a cgroup (per run) it is only a backstop, so give it room.
    nproc = lim.max_procs * 8 if p.pids_cgroup else lim.max_procs
    return [
        p.prlimit,
        f"--as={lim.memory_mb << 20}",
        # soft < hard: SIGXCPU first (reported as "cpu"), SIGKILL a second later.
        f"--cpu={lim.cpu_s}:{lim.cpu_s + 1}",
        f"--fsize={lim.fsize_mb << 20}",
        f"--nproc={nproc}",
        "--core=0",
        "--nofile=1024",
        "--",
    ]


def rlimits_in_child(lim: Limits):
    """Fallback when prlimit is missing: set the same limits in preexec_fn."""
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb << 20,) * 2)
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_s, lim.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.fsize_mb << 20,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (lim.max_procs,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _hidden_dirs() -> list[str]:
    home = os.path.realpath(os.path.expanduser("~"))
    extra = [home] if home != "/" and not any(home.startswith(h + "/") for h in HIDDEN) else []
    return list(HIDDEN) + extra


def _exposed(expose: tuple[str, ...]) -> list[str]:
    """The interpreter's own trees plus `expose`, outermost only, real paths."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    paths.update(expose)
    real = sorted({os.path.realpath(x) for x in paths if x and os.path.exists(x)})
    return [x for x in real if not any(x.startswith(o + "/") for o in real if o != x)]


def _parents_between(top: str, path: str) -> list[str]:
    parts = os.path.relpath(path, top).split("/")
    return [os.path.join(top, *parts[: i + 1]) for i in range(len(parts))]


def sandbox_env(home: str, extra: dict[str, str] | None) -> dict[str, str]:
    """A scrubbed environment: nothing of the parent's leaks in (keys, tokens)."""
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # setuptools' .pth would import its distutils shim at every start-up
        # (~1 ms of each run); sandboxed code gets the stdlib's distutils.
        "SETUPTOOLS_USE_DISTUTILS": "stdlib",
    }
    env.update(extra or {})
    return env


def checked_files(files: dict[str, str | bytes]) -> dict[str, bytes]:
    out = {}
    for rel, content in files.items():
        norm = os.path.normpath(rel)
        if os.path.isabs(rel) or norm.startswith("..") or norm in (".", ""):
            raise ValueError(f"sandbox file names must be relative and inside the work dir: {rel!r}")
        out[norm] = content.encode() if isinstance(content, str) else bytes(content)
    return out


def memfds(files: dict[str, bytes]) -> tuple[list[int], dict[str, int]]:
    """Each file as an in-memory fd that bwrap copies into the tmpfs."""
    fds, by_name = [], {}
    for rel, data in files.items():
        fd = os.memfd_create("limner-sandbox-file")
        fds.append(fd)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        by_name[rel] = fd
    return fds, by_name


def write_tree(root: str, files: dict[str, bytes], chown: bool) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    if chown:
        for dirpath, _, names in os.walk(root):
            os.chown(dirpath, NOBODY, NOBODY)
            for n in names:
                os.chown(os.path.join(dirpath, n), NOBODY, NOBODY)


def reachable_by_others(exe: str, expose: tuple[str, ...]) -> bool:
    """Can uid 65534 reach the program (and the interpreter's trees)? Without
    bwrap nothing re-exposes a runtime that sits under root's 0700 home."""
    import shutil

    found = exe if os.sep in exe else shutil.which(exe)
    if not found:
        return True  # let the run report "not found" itself
    for path in [os.path.realpath(found), *_exposed(expose)]:
        cur = path
        while True:
            parent = os.path.dirname(cur)
            try:
                if not os.stat(parent).st_mode & 0o001:
                    return False
            except OSError:
                return False
            if parent == cur:
                break
            cur = parent
    return True
