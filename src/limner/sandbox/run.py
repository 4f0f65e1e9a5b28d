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
from dataclasses import dataclass

from limner.sandbox import cgroup, command
from limner.sandbox.command import Limits
from limner.sandbox.probe import LEVELS, require

SIGNAL_REASONS = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file-size"}


@dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None  # the first limit that stopped the run, or None
    isolation: str  # "strict" | "basic": the level this run really got
    weaker_than_asked: bool  # kept for callers; always False since require() refuses instead
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
    level asked for; where it is unavailable, SandboxUnavailable is raised
    and nothing runs. expose lists extra host paths to make visible read-only.
    """
    if want not in LEVELS:
        raise ValueError(f"want must be one of {LEVELS}, not {want!r}")
    p = require(want)  # never weaker than asked: SandboxUnavailable instead, nothing run
    level = want
    limits = Limits(
        timeout=timeout,
        memory_mb=memory_mb,
        cpu_s=max(1, int(cpu_s if cpu_s is not None else timeout + 0.999)),
        fsize_mb=fsize_mb,
        max_output=max_output,
        max_procs=max_procs,
        tmpfs_mb=max(64, 4 * fsize_mb),
    )
    files = command.checked_files(files or {})
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
            fds, file_fds = command.memfds(files)
            inner = [p.bwrap, *command.bwrap_argv(p, file_fds, limits.tmpfs_mb, expose)]
            inner += command.inner_argv(p, limits)
            cmd = [command.inside_path(p, cmd[0], expose), *cmd[1:]] if os.sep in cmd[0] else list(cmd)
            cwd, run_env = "/", command.sandbox_env(command.WORKDIR, env, inside=p)
        else:
            hostdir = tempfile.mkdtemp(prefix="limner-sandbox-")
            drop = p.drops_uid and command.reachable_by_others(cmd[0], expose)
            command.write_tree(hostdir, files, chown=drop and p.is_root)
            inner = command.setpriv_argv(p) if drop else []
            if p.is_root and not drop:
                layers = tuple("uid 0" if x.startswith("uid") else x for x in layers)
            cwd, run_env = hostdir, command.sandbox_env(hostdir, env)
        argv = ["/bin/sh", "-c", command.PRELUDE, "sh", os.path.join(cg, "cgroup.procs") if cg else ""]
        # As a normal user RLIMIT_NPROC is set inside bwrap (command.inner_argv).
        argv += command.prlimit_argv(p, limits, nproc=p.is_root or level != "strict") + inner + list(cmd)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=run_env,
            start_new_session=True,  # its own process group, killed as one
            pass_fds=fds,
            preexec_fn=None if p.prlimit else command.rlimits_in_child(limits),
        )
        for fd in fds:
            os.close(fd)
        fds = []
        out, err, truncated = _communicate(proc, stdin, limits, cg)
        rc = proc.returncode
        stderr = err.decode("utf-8", "replace")
        limits.hits.extend(_exit_reasons(rc, stderr, level, killed_by_us=bool(limits.hits)))
        if cg and cgroup.forks_refused(cg):
            limits.hits.append("processes")
    finally:
        for fd in fds:
            os.close(fd)
        if hostdir:
            import shutil

            shutil.rmtree(hostdir, ignore_errors=True)
        if cg:
            cgroup.remove(cg)  # also when Popen itself failed
    return Result(
        returncode=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=stderr,
        timed_out="timeout" in limits.hits,
        killed_reason=limits.hits[0] if limits.hits else None,
        isolation=level,
        weaker_than_asked=False,  # always: a weaker run is refused (require), never made
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


# --- watching the run ----------------------------------------------------------


def _communicate(proc, stdin: str | None, lim: Limits, cg: str | None) -> tuple[bytes, bytes, bool]:
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
