"""Files that are never read into a request: a built-in deny list + .limnerignore.

    denied(path, root) -> "reason" | None

Checked before a file is opened (phase 2: !context, !outline/!retrieve and
the index), so a credential file never reaches the secret scanner, the model
or the log at all. Patterns use gitignore syntax (`pathspec`); the built-in
list comes first and the project's `.limnerignore` after it, so a project
can add patterns, or re-allow one with `!pattern` when it really means to.
Both the path as given and the file it resolves to (through symlinks) are
checked: `notes.txt -> ~/.ssh/id_rsa` is denied too.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

IGNORE_FILE = ".limnerignore"

# Files whose whole purpose is holding credentials. `**/` so they match at
# any depth, also for paths outside the project (~/.aws/credentials).
BUILTIN_DENY = (
    # environment files, but not the templates projects commit on purpose
    ".env", ".env.*", "*.env", "!.env.example", "!.env.sample", "!.env.template", "!.env.dist",
    # keys and keystores
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "!*.pub",
    "**/.ssh/*", "!**/.ssh/*.pub", "!**/.ssh/known_hosts", "!**/.ssh/config",
    "**/.gnupg/**",
    # tool credential files
    ".netrc", "_netrc", ".npmrc", ".pypirc", ".pgpass", ".my.cnf", ".git-credentials",
    ".htpasswd", ".vault-token", ".s3cfg", ".boto", ".terraformrc", "terraform.tfstate*",
    "**/.aws/credentials", "**/.docker/config.json",
    "**/.config/gcloud/**", "**/.azure/**", "**/.config/gh/hosts.yml",
    "**/.cargo/credentials*", "**/.gem/credentials",
    "application_default_credentials.json", "*service-account*.json",
    "client_secret*.json",
    # kubeconfigs
    "**/.kube/config", "kubeconfig", "*.kubeconfig", "kubeconfig.y*ml",
    # password stores
    "*.kdbx", "**/.password-store/**",
)


@functools.lru_cache(maxsize=1)
def _builtin():
    import pathspec  # the `guard` extra; only loaded when a file is checked

    return pathspec.GitIgnoreSpec.from_lines(BUILTIN_DENY)


@functools.lru_cache(maxsize=32)
def _project(ignore_file: str, mtime_ns: int):
    import pathspec

    lines = Path(ignore_file).read_text(encoding="utf-8", errors="replace").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(BUILTIN_DENY + tuple(lines)), tuple(lines)


def _spec(root: Path):
    """(spec, lines of .limnerignore) for root; rebuilt when the file changes."""
    f = root / IGNORE_FILE
    try:
        st = f.stat()
    except OSError:
        return _builtin(), ()
    return _project(str(f), st.st_mtime_ns)


def _rel(path: Path, root: Path) -> str:
    """path relative to root in '/' form; outside root, the absolute path without '/'."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


def denied(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str | None:
    """Why `path` must not be read (the pattern that denies it), or None.

    `root` is the project directory whose .limnerignore applies (default:
    the current directory). Relative paths are taken from root.
    """
    root_p = Path(root) if root is not None else Path.cwd()
    root_abs = Path(os.path.abspath(root_p))
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = root_p / p
    candidates = [Path(os.path.abspath(p))]
    try:
        real = p.resolve()
        if real != candidates[0]:
            candidates.append(real)
    except OSError:
        pass
    spec, lines = _spec(root_abs)
    patterns = BUILTIN_DENY + lines
    for c in candidates:
        res = spec.check_file(_rel(c, root_abs))
        if res.include:
            pat = patterns[res.index] if res.index is not None else "?"
            origin = "built-in deny list" if res.index < len(BUILTIN_DENY) else IGNORE_FILE
            shown = _rel(c, root_abs) if c == candidates[0] else f"{path} -> {c}"
            return f"{shown}: matches {pat!r} ({origin})"
    return None


def allowed(root: str | os.PathLike, names: list[str]) -> list[str]:
    """The relative paths of `names` under `root` that denied() lets through.

    The same verdicts as denied(), fast enough for a whole repository: the
    patterns are matched on each name once, and only symlinks (which may
    point at a denied file elsewhere) pay for denied()'s resolve.
    """
    root_abs = Path(os.path.abspath(root))
    spec, _ = _spec(root_abs)
    out = []
    for n in names:
        if spec.check_file(n).include:
            continue
        if os.path.islink(root_abs / n) and denied(n, root_abs):
            continue
        out.append(n)
    return out
