"""The warm interpreter inside a pooled sandbox (see pool.py). Stdlib only:
it is passed to `python -c` inside bwrap and imports nothing of limner.

Protocol, one JSON line each way per job, on stdin/stdout:
  in:  {"code", "files": {name: base64}, "args", "stdin", "env", "timeout",
        "cpu_s", "memory_mb", "fsize_mb", "max_output"}
  out: {"returncode", "stdout", "stderr", "hits", "truncated", "seconds", "clean"}

Each job is a fork of this process: it gets its own session, a fresh work
dir, its own rlimits, the job's environment only, pipes for 0/1/2 and no
other fd (so it cannot write to the channel). The zygote is not dumpable,
so a job (same uid) can neither ptrace it nor read its memory. After each
job every other process in the sandbox is killed and /tmp and /dev/shm are
wiped; "clean" says whether that worked (if not, the host discards this
sandbox).
"""
import base64
import json
import os
import resource
import select
import shutil
import signal
import sys
import time
import types

WORK = "/tmp/job"
MEMORY_ERRORS = ("MemoryError", "Cannot allocate memory", "bad_alloc")


def _not_dumpable():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _child(job, fds):
    """Runs in the forked job process and ends it: it never returns (a return
    or an exception would carry on in a copy of the zygote's loop)."""
    try:
        rc = _job_main(job, fds)
    except BaseException:  # noqa: BLE001 - the setup itself failed
        rc = 70
    os._exit(rc)


def _job_main(job, fds):
    in_r, out_w, err_w = fds
    os.setsid()
    os.dup2(in_r, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 65536)
    os.chdir(WORK)
    mb = 1 << 20
    resource.setrlimit(resource.RLIMIT_AS, (job["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (job["cpu_s"], job["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ.clear()
    os.environ.update(job["env"])
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    path = os.path.join(WORK, "main.py")
    sys.argv = ["main.py", *job["args"]]  # as `python main.py ARGS` has it
    sys.path[0] = WORK  # as `python main.py` would have it
    main = types.ModuleType("__main__")
    main.__file__ = path
    sys.modules["__main__"] = main
    try:
        exec(compile(job["code"], path, "exec"), main.__dict__)
        rc = 0
    except SystemExit as e:
        rc = _exit_code(e.code)
    except BaseException as e:  # noqa: BLE001 - report it as the interpreter would
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        rc = 1
    return _shutdown(rc)


def _exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _shutdown(rc):
    """What the interpreter does at exit: wait for threads, run atexit, flush."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as e:
        rc = _exit_code(e.code)
    except BaseException:  # noqa: BLE001
        rc = rc or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream
            pass
    return rc


def _sweep():
    """Kill every other process of this sandbox; wipe its writable dirs."""
    me = os.getpid()
    deadline = time.monotonic() + 2
    while True:
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        live = []
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
                live.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if not live:
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    ok = True
    for top in ("/tmp", "/dev/shm"):
        for name in os.listdir(top) if os.path.isdir(top) else []:
            path = os.path.join(top, name)
            _make_removable(path)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                ok = False
    return ok


def _make_removable(path):
    # A job may chmod its dirs to 000; it owned them, so we (same uid) may undo it.
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700)
            except OSError:
                pass
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass


def _run(job):
    os.mkdir(WORK, 0o700)
    with open(os.path.join(WORK, "main.py"), "w", encoding="utf-8") as f:
        f.write(job["code"])  # for tracebacks' source lines; the code runs from the job
    for name, data in job["files"].items():
        path = os.path.join(WORK, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, (in_r, out_w, err_w))
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    hits, truncated, bufs = [], False, {out_r: bytearray(), err_r: bytearray()}
    pending = job["stdin"].encode() if job["stdin"] is not None else b""
    if not pending:
        os.close(in_w)
        in_w = None
    else:
        os.set_blocking(in_w, False)
    deadline = started + job["timeout"]
    open_fds = [out_r, err_r]
    status = None
    while open_fds or status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            hits.append("timeout")
            break
        if not open_fds:  # output closed; wait for the exit a little at a time
            done, status_ = os.waitpid(pid, os.WNOHANG)
            if done:
                status = status_
                break
            time.sleep(min(0.002, left))
            continue
        r, w, _ = select.select(open_fds, [in_w] if in_w is not None else [], [], left)
        if w:
            try:
                n = os.write(in_w, pending[:65536])
                pending = pending[n:]
            except (BrokenPipeError, BlockingIOError):
                pending = b"" if not pending else pending
            if not pending:
                os.close(in_w)
                in_w = None
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                continue
            room = job["max_output"] - len(bufs[fd])
            bufs[fd] += chunk[: max(room, 0)]
            if len(chunk) > room:
                truncated = True
        if truncated:
            hits.append("output")
            break
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if status is None:
        status = os.waitpid(pid, 0)[1]
    for fd in [out_r, err_r] + ([in_w] if in_w is not None else []):
        os.close(fd)
    seconds = time.monotonic() - started
    rc = os.waitstatus_to_exitcode(status)
    stderr = bufs[err_r].decode("utf-8", "replace")
    if not hits:
        if rc == -signal.SIGXCPU:
            hits.append("cpu")
        elif rc == -signal.SIGXFSZ:
            hits.append("file-size")
    if rc != 0:
        tail = stderr[-2000:]
        if any(m in tail for m in MEMORY_ERRORS):
            hits.append("memory")
        if "File too large" in tail:
            hits.append("file-size")
    return {"returncode": rc, "stdout": bufs[out_r].decode("utf-8", "replace"), "stderr": stderr,
            "hits": hits, "truncated": truncated, "seconds": seconds}


def main():
    # Sweeping kills every process it can see: only ever do that as a
    # non-root uid in a private pid namespace (bwrap's init is 1, we are 2).
    if os.getuid() == 0 or os.getpid() != 2:
        sys.exit("zygote: refusing to run outside a private pid namespace as a non-root user")
    _not_dumpable()
    channel_in, channel_out = os.dup(0), os.dup(1)
    # Jobs get fresh pipes on 0/1/2; the channel lives on fds they never see.
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    reader = os.fdopen(channel_in, "rb")
    os.write(channel_out, b'{"ready": true}\n')
    for line in reader:
        job = json.loads(line)
        try:
            result = _run(job)
        finally:
            clean = _sweep()
        result["clean"] = clean
        data = (json.dumps(result) + "\n").encode()
        while data:
            data = data[os.write(channel_out, data):]


if __name__ == "__main__":
    main()
