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
# The sandbox's root is empty but for these, read-only: the system's programs,
# libraries and configuration. Everything else of the host (homes, /tmp, /var,
# /opt, /srv, checkouts...) is absent unless a run needs it: the interpreter's
# own trees and `expose=` paths are bound in one by one.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# A venv (it usually sits in a checkout) and any interpreter tree under the
# work dir are bound here instead of at their own path, as RUNTIMES/0, /1...:
# names that say nothing of the host, and no checkout dir inside. A base
# installation stays at its own path: venvs point at it by absolute path.
RUNTIMES = "/run/limner"
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
        # A user namespace; the user's uid shows as nobody inside (it is still
        # theirs outside: the absent home is what keeps their files away).
        ns = ["--unshare-all", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        caps = ["--cap-drop", "ALL"]
    argv = [*ns, *(["--die-with-parent"] if die_with_parent else []), "--new-session"]
    for d in SYSTEM:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]  # merged /usr: /bin -> usr/bin
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--dev", "/dev", "--proc", "/proc",
             "--size", str(tmpfs_mb << 20), "--perms", "1777", "--tmpfs", WORKDIR]
    made: set[str] = {"/"}
    for host, inside in runtime_binds(p, expose):
        for d in _parents_between("/", os.path.dirname(inside)):
            if d not in made:
                made.add(d)
                argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", host, inside]
    made = {WORKDIR}
    for rel, fd in file_fds.items():
        dest = os.path.join(WORKDIR, rel)
        for d in _parents_between(WORKDIR, os.path.dirname(dest)):
            if d not in made:
                made.add(d)
                argv += ["--perms", "0777", "--dir", d]
        argv += ["--perms", "0666", "--file", str(fd), dest]
    # The root itself (a tmpfs bwrap made) read-only too: nothing new at /.
    return argv + ["--remount-ro", "/", "--chdir", WORKDIR, *caps, "--"]


def runtime_binds(p: Probe, expose: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(host path, path inside) for each tree a run needs beyond SYSTEM: the
    interpreter's (prefix, base prefix, the real executable's tree), prlimit
    when it runs inside, and `expose`. Venvs and interpreter trees under the
    work dir move to RUNTIMES/N; `expose` paths keep their own path."""
    runtime = _exposed(())
    if not p.is_root and p.prlimit:
        runtime.append(os.path.realpath(p.prlimit))
    wanted = _outermost(runtime + [os.path.realpath(x) for x in expose if x and os.path.exists(x)])
    binds, moved = [], 0
    for host in wanted:
        if _under(host, SYSTEM):
            continue
        inside = host
        venv = os.path.isfile(os.path.join(host, "pyvenv.cfg"))
        if host in runtime and (venv or _under(host, (WORKDIR,))):
            inside, moved = f"{RUNTIMES}/{moved}", moved + 1
        binds.append((host, inside))
    return binds


def inside_path(p: Probe, path: str, expose: tuple[str, ...] = ()) -> str:
    """Where a host path (a program, an interpreter) is seen inside the sandbox."""
    real_dir = os.path.realpath(os.path.dirname(path) or ".")
    for host, inside in runtime_binds(p, expose):
        if host != inside and (real_dir == host or real_dir.startswith(host + "/")):
            return inside + real_dir[len(host):] + "/" + os.path.basename(path)
    return path


def _under(path: str, tops) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops)


def _outermost(paths: list[str]) -> list[str]:
    real = sorted(set(paths))
    return [x for x in real if not any(x.startswith(o + "/") for o in real if o != x)]


def setpriv_argv(p: Probe) -> list[str]:
    """Drop from root to uid 65534 with no capabilities at all, for good."""
    if not (p.is_root and p.setpriv):
        return []
    return [
        p.setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
    ]


def prlimit_argv(p: Probe, lim: Limits, nproc: bool = True) -> list[str]:
    """The rlimits, set before bwrap. nproc=False leaves RLIMIT_NPROC to
    nproc_argv (inside a user namespace)."""
    if not p.prlimit:
        return []
    return [
        p.prlimit,
        f"--as={lim.memory_mb << 20}",
        # soft < hard: SIGXCPU first (reported as "cpu"), SIGKILL a second later.
        f"--cpu={lim.cpu_s}:{lim.cpu_s + 1}",
        f"--fsize={lim.fsize_mb << 20}",
        *([f"--nproc={_nproc(p, lim)}"] if nproc else []),
        "--core=0",
        "--nofile=1024",
        "--",
    ]


def _nproc(p: Probe, lim: Limits) -> int:
    # RLIMIT_NPROC counts every process of the uid, across concurrent runs;
    # with a cgroup (per run) it is only a backstop, so give it room.
    return lim.max_procs * 8 if p.pids_cgroup else lim.max_procs


def inner_argv(p: Probe, lim: Limits) -> list[str]:
    """What runs inside bwrap before the command.

    As root: setpriv, down to uid 65534 for good. As a normal user: prlimit
    for RLIMIT_NPROC alone. Set *outside*, it would count all of the user's
    own processes (a desktop has hundreds: the run could not fork at all) and
    would also cap the user namespace bwrap makes. Set inside, the kernel
    counts the namespace's processes only: a per-run cap, like a cgroup.
    """
    if p.is_root:
        return setpriv_argv(p)
    if not p.prlimit:
        return []
    return [inside_path(p, p.prlimit), f"--nproc={_nproc(p, lim)}", "--"]


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


def _exposed(expose: tuple[str, ...]) -> list[str]:
    """The interpreter's own trees plus `expose`, outermost only, real paths."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    paths.update(expose)
    return _outermost([os.path.realpath(x) for x in paths if x and os.path.exists(x)])


def _parents_between(top: str, path: str) -> list[str]:
    """The dirs from below `top` down to `path`, outermost first ([] for top itself)."""
    rel = os.path.relpath(path, top)
    if rel == ".":
        return []
    parts = rel.split("/")
    return [os.path.join(top, *parts[: i + 1]) for i in range(len(parts))]


def sandbox_env(home: str, extra: dict[str, str] | None, inside: Probe | None = None) -> dict[str, str]:
    """A scrubbed environment: nothing of the parent's leaks in (keys, tokens).
    inside: the probe of a bwrap run (PATH then names the interpreter where the sandbox sees it)."""
    exe = inside_path(inside, sys.executable) if inside else sys.executable
    env = {
        "PATH": f"{os.path.dirname(exe)}:/usr/local/bin:/usr/bin:/bin",
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
