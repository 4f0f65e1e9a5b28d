"""Which isolation layers work on this machine, found once per process.

Layers, strongest first:

- bwrap: fresh mount/pid/net/ipc/uts namespaces, `/` read-only, tmpfs over
  /tmp and the home directories, no network but a private loopback.
- a non-root uid: as root we drop to 65534 with `setpriv` *inside* the
  sandbox. bwrap's own `--uid 65534` needs a user namespace, and one made by
  root maps 65534 back to uid 0 outside: that process still owns root's
  files (it can read a 0600 ~/.ssh key) and RLIMIT_NPROC does not bind it.
  As a normal user bwrap makes a user namespace (uid 65534 inside, the
  user's own uid outside): that needs unprivileged user namespaces.
- a pids cgroup: caps the process count of one run, whoever the user is.
- rlimits (via `prlimit`): address space, CPU seconds, file size, processes.

"strict" needs bwrap plus a real non-root uid or a pids cgroup; anything
less is "basic" (a scrubbed subprocess in a temp dir with rlimits). Model
code runs only at the level its caller asked for: `require()` raises
SandboxUnavailable, with how to get the missing layer, instead of running
anything weaker.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from limner.errors import LimnerError

NOBODY = 65534
LEVELS = ("basic", "strict")  # weakest first; compare with LEVELS.index

# Set LIMNER_SANDBOX_BWRAP to a path to use that bwrap, or to "none" to
# refuse bwrap (a weaker sandbox, reported as such on every result).
BWRAP_ENV = "LIMNER_SANDBOX_BWRAP"


@dataclass(frozen=True)
class Probe:
    is_root: bool
    bwrap: str | None = None  # a bwrap that really ran a sandbox here
    bwrap_error: str = ""  # why bwrap is not used, when it is not
    bwrap_hint: str = ""  # what to do about it
    setpriv: str | None = None
    prlimit: str | None = None
    pids_cgroup: str | None = None  # a cgroup dir we may make one child per run in
    cgroup_version: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def drops_uid(self) -> bool:
        """Whether a run's processes end up under a uid other than root's."""
        return (not self.is_root) or self.setpriv is not None

    @property
    def level(self) -> str:
        fork_cap = self.pids_cgroup is not None or (self.drops_uid and self.prlimit is not None)
        return "strict" if self.bwrap and fork_cap else "basic"

    def layers(self, level: str) -> tuple[str, ...]:
        """The layers a run at `level` gets here, in words a report can show."""
        out = []
        if level == "strict":
            out.append("bwrap")
        if level == "strict" and not self.is_root:
            out.append(f"userns uid {NOBODY} (uid {os.getuid()} outside)")
        elif self.drops_uid:
            out.append(f"uid {NOBODY}" if self.is_root else f"uid {os.getuid()}")
        else:
            out.append("uid 0")
        if self.pids_cgroup:
            out.append(f"pids-cgroup-v{self.cgroup_version}")
        out.append("rlimits" if self.prlimit else "no-rlimits")
        return tuple(out)

    def describe(self) -> str:
        lines = [f"sandbox level available: {self.level}"]
        lines.append(f"  bwrap: {self.bwrap or 'no (' + self.bwrap_error + ')'}")
        if self.bwrap_hint:
            lines.append(f"  to fix: {self.bwrap_hint}")
        lines.append(f"  running as root: {self.is_root}; setpriv: {self.setpriv or 'no'}")
        lines.append(f"  prlimit: {self.prlimit or 'no'}")
        lines.append(f"  pids cgroup: {self.pids_cgroup or 'no'}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def probe() -> Probe:
    """The layers that work here. Cached; a change of $LIMNER_SANDBOX_BWRAP re-probes."""
    return _probe(os.environ.get(BWRAP_ENV, ""))


@functools.lru_cache(maxsize=4)
def _probe(bwrap_setting: str) -> Probe:
    from limner.sandbox import cgroup

    is_root = os.geteuid() == 0
    setpriv = shutil.which("setpriv") if is_root else None
    prlimit = shutil.which("prlimit")
    notes = []
    pids_dir, version, why = cgroup.find_pids_parent()
    if why:
        notes.append(f"pids cgroup unavailable: {why}")
    partial = Probe(is_root, None, "", "", setpriv, prlimit, pids_dir, version, tuple(notes))
    bwrap, error, hint = _try_bwrap(bwrap_setting, partial)
    return Probe(is_root, bwrap, error, hint, setpriv, prlimit, pids_dir, version, tuple(notes))


INSTALL_BWRAP = ("Install bubblewrap: `apt-get install bubblewrap` (Debian/Ubuntu), "
                 "`dnf install bubblewrap` (Fedora), `pacman -S bubblewrap` (Arch).")


def _try_bwrap(setting: str, partial: Probe) -> tuple[str | None, str, str]:
    """(a bwrap that works, why not, what to do about it)."""
    if setting.lower() == "none":
        return None, f"disabled by {BWRAP_ENV}=none", f"Unset {BWRAP_ENV} to use bwrap. " + INSTALL_BWRAP
    path = setting or shutil.which("bwrap")
    if not path or not os.access(path, os.X_OK):
        return None, "bwrap not found", INSTALL_BWRAP
    if partial.is_root and not partial.setpriv:
        return (None, "running as root without setpriv to drop to a non-root uid",
                "Install util-linux (it has setpriv), or run limner as a normal user.")
    # Run exactly the sandbox a real run would get, on `true`: containers often
    # forbid namespaces, and only trying tells.
    from limner.sandbox.command import bwrap_argv

    argv = [path, *bwrap_argv(partial, file_fds={}, tmpfs_mb=1), *_drop_uid(partial), "true"]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=10, env=_plain_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"bwrap failed to start: {e}", INSTALL_BWRAP
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        why = "bwrap cannot make a sandbox here: " + (err[-1] if err else f"exit {p.returncode}")
        hint = _userns_hint() if not partial.is_root else (
            "Namespaces are forbidden here (a container without CAP_SYS_ADMIN?): run limner "
            "where bwrap can make namespaces, e.g. a container started with --privileged or "
            "--security-opt seccomp=unconfined.")
        return None, why, hint
    return path, "", ""


def _sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def _userns_hint() -> str:
    """As a normal user bwrap needs unprivileged user namespaces: say which switch is off."""
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        return ("Unprivileged user namespaces are disabled: "
                "`sudo sysctl -w kernel.unprivileged_userns_clone=1` (persist it in /etc/sysctl.d/).")
    if _sysctl("user.max_user_namespaces") == "0":
        return ("User namespaces are disabled: `sudo sysctl -w user.max_user_namespaces=15000` "
                "(persist it in /etc/sysctl.d/).")
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): give bwrap an "
                "AppArmor profile that allows `userns`, or "
                "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`.")
    return ("Unprivileged user namespaces may be disabled: check "
            "`sysctl kernel.unprivileged_userns_clone` (must be 1) and "
            "`sysctl user.max_user_namespaces` (must be > 0), or install a setuid bwrap.")


class SandboxUnavailable(LimnerError):
    """The isolation asked for is not available here; nothing was run."""


def missing(p: Probe) -> tuple[str, str]:
    """(what keeps this machine from the strict level, how to fix it); ("", "") when nothing does."""
    if p.level == "strict":
        return "", ""
    if not p.bwrap:
        return p.bwrap_error, p.bwrap_hint
    return ("no way to cap forks: no pids cgroup and no prlimit",
            "Install util-linux (it has prlimit), or run limner where it may create a pids cgroup.")


def require(level: str) -> Probe:
    """The probe, when `level` is available here; else SandboxUnavailable saying
    what is missing, how to install it, and how to opt in to the weaker level."""
    if level not in LEVELS:
        raise ValueError(f"the sandbox level must be one of {LEVELS}, not {level!r}")
    p = probe()
    if LEVELS.index(p.level) >= LEVELS.index(level):
        return p
    what, fix = missing(p)
    raise SandboxUnavailable(
        f"refusing to run model-written code: the strict sandbox is unavailable ({what})",
        f"{fix}\nOr accept the weaker sandbox (no network or filesystem isolation; the code runs "
        "as you, or as root if you are root): `--sandbox basic` on the command line, "
        "`!sandbox basic` in a buffer.",
    )


def _drop_uid(p: Probe) -> list[str]:
    from limner.sandbox.command import setpriv_argv

    return setpriv_argv(p)


def _plain_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
