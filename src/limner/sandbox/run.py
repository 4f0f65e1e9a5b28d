"""Run untrusted code in a fresh, limited, isolated subprocess.

    result = run(["python3", "main.py"], files={"main.py": code}, timeout=5)
    result = run_python(code, timeout=5)

The chain for one run (each step execs the next, so no extra process stays):

    sh (joins the run's pids cgroup) -> prlimit (rlimits) -> bwrap (namespaces,
    read-only /, tmpfs /tmp as the work dir) -> setpriv (uid 65534, no caps)
    -> the command

The parent never uses `preexec_fn` (unsafe with threads, and the eval
harness runs threads). Every result records the isolation it really got.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from limner.sandbox import cgroup
from limner.sandbox.probe import LEVELS, NOBODY, Probe, probe

WORKDIR = "/tmp"  # inside bwrap: a fresh tmpfs, also $HOME and $TMPDIR
# Host directories a sandbox must not see (tmpfs over them): homes hold keys
# and tokens, /tmp and /run hold other programs' sockets and secrets.
HIDDEN = ("/tmp", "/var/tmp", "/root", "/home", "/run", "/mnt", "/media")
# Joins the cgroup named by $1 (if any) before anything can fork, then execs.
PRELUDE = 'if [ -n "$1" ]; then echo $$ > "$1" || exit 125; fi; shift; exec "$@"'
SIGNAL_REASONS = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file-size"}


@dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None  # the first limit that stopped the run, or None
    isolation: str  # "strict" | "basic": the level this run really got
    weaker_than_asked: bool
    seconds: float
    truncated: bool = False  # output went past max_output and was cut
    limits_hit: tuple[str, ...] = ()  # every limit that bit: timeout, output, cpu, ...
    layers: tuple[str, ...] = ()  # e.g. ("bwrap", "uid 65534", "pids-cgroup-v1", "rlimits")

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.limits_hit

    def describe(self) -> str:
        """One line for a report: what happened and under which isolation."""
        if self.killed_reason:
            what = f"stopped by the {self.killed_reason} limit"
        else:
            what = f"exit {self.returncode}"
        iso = f"{self.isolation} sandbox ({', '.join(self.layers)})"
        if self.weaker_than_asked:
            iso += ", weaker than asked"
        return f"{what} after {self.seconds:.2f}s; {iso}"


@dataclass
class _Limits:
    timeout: float
    memory_mb: int
    cpu_s: int
    fsize_mb: int
    max_output: int
    max_procs: int
    tmpfs_mb: int
    hits: list[str] = field(default_factory=list)


def run(
    cmd: list[str],
    *,
    files: dict[str, str | bytes] | None = None,
    timeout: float = 10,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    fsize_mb: int = 64,
    max_output: int = 1_000_000,
    max_procs: int = 64,
    want: str = "strict",
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    expose: tuple[str, ...] = (),
) -> Result:
    """Run `cmd` in the work dir holding `files` (relative path -> content).

    timeout is wall-clock seconds; cpu_s defaults to it. max_output caps each
    of stdout and stderr in bytes; past it the run is killed. want is the
    level asked for; a weaker one is used (and said so) if that is all there
    is. expose lists extra host paths to make visible read-only.
    """
    if want not in LEVELS:
        raise ValueError(f"want must be one of {LEVELS}, not {want!r}")
    p = probe()
    level = want if LEVELS.index(p.level) >= LEVELS.index(want) else p.level
    limits = _Limits(
        timeout=timeout,
        memory_mb=memory_mb,
        cpu_s=max(1, int(cpu_s if cpu_s is not None else timeout + 0.999)),
        fsize_mb=fsize_mb,
        max_output=max_output,
        max_procs=max_procs,
        tmpfs_mb=max(64, 4 * fsize_mb),
    )
    files = _checked(files or {})
    started = time.monotonic()
    cg = None
    if p.pids_cgroup:
        try:
            cg = cgroup.create(p.pids_cgroup, max_procs)
        except OSError:
            cg = None  # reported: the layers below will not list the cgroup
    layers = p.layers(level)
    if cg is None:
        layers = tuple(x for x in layers if not x.startswith("pids-cgroup"))
    hostdir = None
    fds: list[int] = []
    try:
        if level == "strict":
            fds, file_fds = _memfds(files)
            inner = [p.bwrap, *bwrap_argv(p, file_fds, limits.tmpfs_mb, expose)]
            inner += setpriv_argv(p)
            cwd, run_env = "/", _sandbox_env(WORKDIR, env)
        else:
            hostdir = tempfile.mkdtemp(prefix="limner-sandbox-")
            drop = p.drops_uid and _reachable_by_others(cmd[0], expose)
            _write_tree(hostdir, files, chown=drop and p.is_root)
            inner = setpriv_argv(p) if drop else []
            if p.is_root and not drop:
                layers = tuple("uid 0" if x.startswith("uid") else x for x in layers)
            cwd, run_env = hostdir, _sandbox_env(hostdir, env)
        argv = ["/bin/sh", "-c", PRELUDE, "sh", os.path.join(cg, "cgroup.procs") if cg else ""]
        argv += _prlimit_argv(p, limits) + inner + list(cmd)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=run_env,
            start_new_session=True,  # its own process group, killed as one
            pass_fds=fds,
            preexec_fn=None if p.prlimit else _rlimits_in_child(limits),
        )
        for fd in fds:
            os.close(fd)
        fds = []
        out, err, truncated = _communicate(proc, stdin, limits, cg)
    finally:
        for fd in fds:
            os.close(fd)
        if hostdir:
            import shutil

            shutil.rmtree(hostdir, ignore_errors=True)
    rc = proc.returncode
    stderr = err.decode("utf-8", "replace")
    limits.hits.extend(_exit_reasons(rc, stderr, level, killed_by_us=bool(limits.hits)))
    if cg:
        if cgroup.forks_refused(cg):
            limits.hits.append("processes")
        cgroup.remove(cg)
    return Result(
        returncode=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        timed_out="timeout" in limits.hits,
        killed_reason=limits.hits[0] if limits.hits else None,
        isolation=level,
        weaker_than_asked=LEVELS.index(level) < LEVELS.index(want),
        seconds=time.monotonic() - started,
        truncated=truncated,
        limits_hit=tuple(dict.fromkeys(limits.hits)),
        layers=layers,
    )


def run_python(
    code: str,
    *,
    args: list[str] | tuple[str, ...] = (),
    files: dict[str, str | bytes] | None = None,
    python: str | None = None,
    site: bool = True,
    **kwargs,
) -> Result:
    """Run `code` as main.py with this interpreter (or `python`) in the sandbox.

    site=False skips site-packages: faster start, stdlib only.
    """
    exe = python or sys.executable
    flags = ["-s"] if site else ["-s", "-S"]
    return run([exe, *flags, "main.py", *args], files={**(files or {}), "main.py": code}, **kwargs)


# --- building the command ----------------------------------------------------


def bwrap_argv(
    p: Probe, file_fds: dict[str, int], tmpfs_mb: int, expose: tuple[str, ...] = ()
) -> list[str]:
    """bwrap's options (without the binary), ending in `--`."""
    if p.is_root:
        # No user namespace: one made by root maps the sandbox uid back to 0.
        # setpriv drops to 65534 inside, so keep only the caps it needs.
        ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        caps = ["--cap-drop", "ALL"] + [a for c in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP") for a in ("--cap-add", c)]
    else:
        ns, caps = ["--unshare-all"], ["--cap-drop", "ALL"]
    argv = [*ns, "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
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


def _prlimit_argv(p: Probe, lim: _Limits) -> list[str]:
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


def _rlimits_in_child(lim: _Limits):
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


def _sandbox_env(home: str, extra: dict[str, str] | None) -> dict[str, str]:
    """A scrubbed environment: nothing of the parent's leaks in (keys, tokens)."""
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


def _checked(files: dict[str, str | bytes]) -> dict[str, bytes]:
    out = {}
    for rel, content in files.items():
        norm = os.path.normpath(rel)
        if os.path.isabs(rel) or norm.startswith("..") or norm in (".", ""):
            raise ValueError(f"sandbox file names must be relative and inside the work dir: {rel!r}")
        out[norm] = content.encode() if isinstance(content, str) else bytes(content)
    return out


def _memfds(files: dict[str, bytes]) -> tuple[list[int], dict[str, int]]:
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


def _write_tree(root: str, files: dict[str, bytes], chown: bool) -> None:
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


def _reachable_by_others(exe: str, expose: tuple[str, ...]) -> bool:
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


# --- watching the run ----------------------------------------------------------


def _communicate(proc, stdin: str | None, lim: _Limits, cg: str | None) -> tuple[bytes, bytes, bool]:
    """Collect output until the command exits, a limit bites or time runs out."""
    deadline = time.monotonic() + lim.timeout
    sel = selectors.DefaultSelector()
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ, "out")
    pending = memoryview(stdin.encode()) if stdin is not None else None
    if pending is not None:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
    truncated = stopped = False
    try:
        while len(sel.get_map()) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not stopped:
                lim.hits.append("timeout")
                stopped = _stop(proc, cg)
                deadline = time.monotonic() + 2  # to drain what is left
                continue
            if remaining <= 0:
                break  # something outside the group and cgroup holds the pipes
            for key, _ in sel.select(remaining):
                if key.data == "exit":
                    sel.unregister(pidfd)
                    # The command is done; whatever it left behind goes too.
                    stopped = stopped or _stop(proc, cg)
                    deadline = min(deadline, time.monotonic() + 2)
                elif key.data == "in":
                    try:
                        pending = pending[os.write(key.fileobj.fileno(), pending):]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                else:
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = bufs[key.fileobj]
                    room = lim.max_output - len(buf)
                    buf += chunk[: max(room, 0)]
                    if len(chunk) > room and not truncated:
                        truncated = True
                        lim.hits.append("output")
                        stopped = stopped or _stop(proc, cg)
                        deadline = min(deadline, time.monotonic() + 2)
    finally:
        sel.close()
        os.close(pidfd)
        _stop(proc, cg)
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None and not f.closed:
                f.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), truncated


def _stop(proc, cg: str | None) -> bool:
    """SIGKILL the run's process group and everything in its cgroup.

    Called before the leader is reaped, so its pgid cannot have been reused.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cg:
        cgroup.kill_all(cg, patience=0)  # one pass; cgroup.remove waits for the rest
    return True


def _exit_reasons(rc: int | None, stderr: str, level: str, killed_by_us: bool) -> list[str]:
    """Limits read off the exit: a signal from an rlimit, or the program's own
    report of a refused allocation or write."""
    out = []
    if rc is not None and not killed_by_us:
        # bwrap passes a child's death by signal N on as exit 128+N.
        sig = -rc if rc < 0 else (rc - 128 if level == "strict" and rc > 128 else 0)
        if sig in SIGNAL_REASONS:
            out.append(SIGNAL_REASONS[sig])
    if rc not in (0, None):
        tail = stderr[-2000:]
        if "MemoryError" in tail or "Cannot allocate memory" in tail or "bad_alloc" in tail:
            out.append("memory")
        if "File too large" in tail:
            out.append("file-size")
    return out
