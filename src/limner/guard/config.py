"""The guard's part of the user's config: hosts to treat like this machine.

    ~/.config/limner/config.toml   ($LIMNER_CONFIG_DIR or $XDG_CONFIG_HOME/limner)

    [guard]
    trusted_hosts = ["gpu-box", "10.0.0.0/24"]   # remote, but treated as local
    remote_hosts = ["127.0.0.1:8443"]            # local, but forwards elsewhere

Names, addresses and networks, as `is_local(url, trusted)` takes them;
remote_hosts also takes HOST:PORT (an SSH tunnel or a proxy on loopback
sends everything on to another machine, so the guard must treat it as the
remote API it is; the speed bench uses it too). The
file is read once per process; a file that does not parse is an error the
caller reports (never a silent "nothing is trusted" or "everything is").
"""
from __future__ import annotations

import functools
import os
from pathlib import Path


class ConfigError(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def config_path() -> Path:
    """Where config.toml lives: the directory engine/models.py reads models.toml from."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(os.environ.get("LIMNER_CONFIG_DIR") or Path(base) / "limner") / "config.toml"


def hosts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """([guard] trusted_hosts, remote_hosts) from config.toml; empty without the
    file. Raises ConfigError."""
    path = config_path()
    try:
        st = path.stat()
    except OSError:
        return (), ()
    return _read(str(path), st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import tomllib

    fix = f"Fix {path}: [guard] trusted_hosts = [\"host\", \"10.0.0.0/24\"]"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the limner config {path}: {e}", fix) from None
    guard = data.get("guard") or {}
    out = []
    for key in ("trusted_hosts", "remote_hosts"):
        value = guard.get(key, []) if isinstance(guard, dict) else None
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            raise ConfigError(f"{path}: [guard] {key} must be a list of strings", fix)
        out.append(tuple(value))
    return out[0], out[1]
