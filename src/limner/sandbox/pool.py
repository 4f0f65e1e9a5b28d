"""Many short Python runs, fast: a few long-lived sandboxes, each with a warm
interpreter (zygote.py) that forks once per run.

    with Pool(workers=2) as pool:
        results = pool.map_python(programs, timeout=3)   # or pool.run_python(code)

Each worker is one strict sandbox (bwrap, uid 65534, its own pids cgroup,
rlimits), built exactly like a `run()`. Inside, each run is a fork of the
zygote: its own session, fresh work dir, own rlimits and environment, no fd
to the channel. Afterwards the zygote kills every other process in the
sandbox and wipes /tmp and /dev/shm, and the host checks the cgroup holds
nothing but the sandbox's own three processes; if anything is left, or the
zygote stops answering, the whole sandbox is thrown away and a fresh one
starts. The host sees exactly what run() gives; what the pool saves is the
~25 ms of bwrap + interpreter start-up per run. The layer "warm-fork" in
each result says how it ran.

Asked for "basic" (an explicit opt-in), there is no private pid namespace
to sweep, so the pool runs each job through plain run() instead. Asked for
"strict" where it is unavailable, the pool refuses to start.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from limner.sandbox import cgroup, command
from limner.sandbox.command import Limits
from limner.sandbox.probe import LEVELS, probe, require
from limner.sandbox.run import Result, run_python

ZYGOTE = os.path.join(os.path.dirname(__file__), "zygote.py")
GRACE = 5.0  # seconds past a job's timeout before the host gives up on the zygote
OWN_PROCESSES = 3  # bwrap's monitor and init, and the zygote


class _Worker:
    def __init__(self, pool: "Pool"):
        self.pool = pool
        p = probe()
        self.cg = cgroup.create(p.pids_cgroup, pool.max_procs) if p.pids_cgroup else None
        limits = Limits(timeout=0, memory_mb=pool.memory_mb, cpu_s=0, fsize_mb=pool.fsize_mb,
                        max_output=0, max_procs=pool.max_procs, tmpfs_mb=max(64, 4 * pool.fsize_mb))
        prlimit = command.prlimit_argv(p, limits, nproc=p.is_root)  # else inside: inner_argv
        # The zygote lives long: no CPU limit on it; each run sets its own.
        prlimit = [a if not a.startswith("--cpu=") else "--cpu=unlimited" for a in prlimit]
        flags = ["-s"] if pool.site else ["-s", "-S"]
        with open(ZYGOTE) as f:
            source = f.read()
        argv = ["/bin/sh", "-c", command.PRELUDE, "sh", os.path.join(self.cg, "cgroup.procs") if self.cg else ""]
        argv += prlimit + [p.bwrap, *command.bwrap_argv(p, {}, limits.tmpfs_mb, pool.expose, die_with_parent=False)]
        python = command.inside_path(p, pool.python, pool.expose)
        argv += command.inner_argv(p, limits) + [python, *flags, "-c", source]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd="/", env=command.sandbox_env(command.WORKDIR, None, inside=p), start_new_session=True,
        )
        self.buf = b""
        self.eof = False
        self.layers = p.layers("strict") + ("warm-fork",)
        if self.cg is None:
            self.layers = tuple(x for x in self.layers if not x.startswith("pids-cgroup"))
        ready = self._read_line(time.monotonic() + 30)
        if ready is None or not json.loads(ready).get("ready"):
            self.kill()
            raise RuntimeError("the pooled sandbox did not start")

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    self.eof = True  # the zygote is gone, not just slow
                    return None
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def job(self, job: dict) -> tuple[dict | None, int]:
        """(the zygote's answer or None when it failed, forks refused meanwhile)."""
        before = cgroup.forks_refused(self.cg) if self.cg else 0
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None, 0
        line = self._read_line(time.monotonic() + job["timeout"] + GRACE)
        refused = (cgroup.forks_refused(self.cg) if self.cg else 0) - before
        return (json.loads(line) if line else None), refused

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            return False
        return self.cg is None or len(cgroup.pids(self.cg)) <= OWN_PROCESSES

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cg:
            cgroup.kill_all(self.cg, patience=0)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if self.cg:
            cgroup.remove(self.cg)


class Pool:
    """Up to `workers` warm sandboxes; run_python is safe to call from threads.

    memory_mb and fsize_mb are ceilings for every run; a run may ask for less.
    """

    def __init__(self, workers: int = 2, *, memory_mb: int = 512, fsize_mb: int = 64, max_procs: int = 64,
                 want: str = "strict", python: str | None = None, site: bool = True, expose: tuple[str, ...] = ()):
        if want not in LEVELS:
            raise ValueError(f"want must be one of {LEVELS}, not {want!r}")
        self.workers, self.memory_mb, self.fsize_mb, self.max_procs = workers, memory_mb, fsize_mb, max_procs
        self.want, self.python, self.site, self.expose = want, python or sys.executable, site, expose
        require(want)  # never weaker than asked: refuse here, before any job
        self.warm = probe().level == "strict" and want == "strict"
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire(self) -> _Worker:
        """An idle worker, or a new one while fewer than `workers` exist."""
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                start = self._started < self.workers
                if start:
                    self._started += 1
            if start:
                try:
                    w = _Worker(self)
                except Exception:
                    with self._lock:
                        self._started -= 1
                    raise
                with self._lock:
                    self._all.add(w)
                return w
            try:
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                continue  # a broken worker may have freed a slot meanwhile

    def _give_back(self, w: _Worker, ok: bool) -> None:
        if ok and w.healthy():
            self._idle.put(w)
            return
        w.kill()  # something outlived its run, or the zygote failed: start afresh
        with self._lock:
            self._all.discard(w)
            self._started -= 1  # the next _acquire starts a fresh one

    def run_python(self, code: str, *, files: dict[str, str | bytes] | None = None, args=(),
                   stdin: str | None = None, timeout: float = 10, cpu_s: int | None = None,
                   memory_mb: int | None = None, fsize_mb: int | None = None, max_output: int = 1_000_000,
                   env: dict[str, str] | None = None) -> Result:
        """Like sandbox.run_python, in a warm sandbox."""
        if not self.warm:
            return run_python(code, files=files, args=args, stdin=stdin, timeout=timeout, cpu_s=cpu_s,
                              memory_mb=memory_mb or self.memory_mb, fsize_mb=fsize_mb or self.fsize_mb,
                              max_output=max_output, max_procs=self.max_procs, want=self.want,
                              python=self.python, site=self.site, env=env, expose=self.expose)
        files = command.checked_files(files or {})
        job = {
            "code": code, "args": list(args), "stdin": stdin, "timeout": timeout,
            "files": {k: base64.b64encode(v).decode() for k, v in files.items() if k != "main.py"},
            "env": command.sandbox_env(command.WORKDIR + "/job", env, inside=probe()),
            "cpu_s": max(1, int(cpu_s if cpu_s is not None else timeout + 0.999)),
            "memory_mb": min(memory_mb or self.memory_mb, self.memory_mb),
            "fsize_mb": min(fsize_mb or self.fsize_mb, self.fsize_mb),
            "max_output": max_output,
        }
        started = time.monotonic()
        w = self._acquire()
        answer, refused = w.job(job)
        ok = answer is not None and answer.get("clean", False)
        self._give_back(w, ok)
        if answer is None:
            died = w.eof
            why = "the sandbox died mid-run" if died else "the sandbox stopped answering"
            answer = {"returncode": None, "stdout": "", "stderr": f"{why}; a fresh one replaces it",
                      "hits": ["sandbox-died" if died else "timeout"], "truncated": False}
        hits = list(answer["hits"]) + (["processes"] if refused > 0 else [])
        return Result(
            returncode=answer["returncode"], stdout=answer["stdout"], stderr=answer["stderr"],
            timed_out="timeout" in hits, killed_reason=hits[0] if hits else None,
            isolation="strict", weaker_than_asked=False, seconds=time.monotonic() - started,
            truncated=answer["truncated"], limits_hit=tuple(dict.fromkeys(hits)), layers=w.layers,
        )

    @property
    def cgroups(self) -> list[str]:
        """The pids cgroups of the live workers (for health checks)."""
        with self._lock:
            return [w.cg for w in self._all if w.cg]

    def map_python(self, codes: list[str], **kwargs) -> list[Result]:
        """run_python over many programs, `workers` at a time, results in order."""
        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(lambda c: self.run_python(c, **kwargs), codes))

    def close(self) -> None:
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            w.kill()

