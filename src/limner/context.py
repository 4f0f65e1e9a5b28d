"""Files pulled into the buffer: `!context`, `!reddit`, `!reddit!`, `!github`.

Each function returns the exact text to splice into the current message, in
Illume's formats, so a model sees the same prompt from either tool. These
are the only reads the parser does besides profile files. Errors are
BufferErrors without a line; the parser adds the directive's line.
"""
from __future__ import annotations

import json
import os
from typing import Any

from limner.errors import BufferError
from limner.request import ContextFile

# Version-control bookkeeping is never what the user meant to send.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS"})
_SNIFF = 8192  # bytes examined for a NUL when deciding a file is binary


def fence(text: str) -> str:
    """The fence for one file: one backtick longer than the longest run of
    backticks opening any line of the file (at least three), as Illume
    measures it, so the file cannot close its own fence."""
    longest = 2
    for line in text.split("\n"):
        longest = max(longest, len(line) - len(line.lstrip("`")))
    return "`" * (longest + 1)


def block(name: str, text: str) -> str:
    """Illume's inlined file: a bold name, then the fenced text.

    The closing fence follows the text directly, as in Illume: a file
    without a final newline gets the fence on its last line."""
    f = fence(text)
    return f"**`{name}`**\n{f}\n{text}{f}\n\n"


def check_path(shown: str, what: str = "the path") -> None:
    """Refuse, as a BufferError, a name no system call can take.

    open() raises ValueError for these, which the parser would not catch: a
    NUL byte, or a lone surrogate (which text decoded from UTF-8 never holds).
    """
    if "\0" in shown:
        raise BufferError(
            f"{what} {shown.replace(chr(0), '<NUL>')!r} holds a NUL byte",
            "File names cannot contain NUL; remove it from the line.",
        )
    try:
        # strict UTF-8, not os.fsencode: its surrogateescape lets "\udcff" through,
        # and the guard's re2 matcher then raises on it
        shown.encode("utf-8")
    except UnicodeEncodeError:
        raise BufferError(f"{what} {shown!r} is not a valid file name") from None


def _read(path: str, shown: str) -> bytes:
    check_path(shown)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise BufferError(
            f"no such file: {shown}",
            "Fix the path; relative paths start from the directory limner runs in.",
        ) from None
    except IsADirectoryError:
        raise BufferError(
            f"{shown} is a directory",
            f"To include the files under it, name their suffixes: !context {shown} .py .md",
        ) from None
    except OSError as e:
        raise BufferError(f"cannot read {shown}: {e.strerror}") from None


DENIED_HINT = ("Credential files are never sent. If this one really is meant to be, re-allow "
               "it in .limnerignore with a `!PATTERN` line (e.g. `!config/.env`).")


def denied(path: str, shown: str, cwd: str) -> str | None:
    """Why the secret guard refuses to read `path` ("name: matches '.env' (...)"),
    or None. Checked before a file is opened; the guard's .limnerignore is cwd's.
    Without the guard's pathspec nothing is read: the guard fails closed."""
    check_path(shown)
    try:
        from limner.guard.files import denied as guard_denied

        return guard_denied(path, cwd)
    except ImportError as e:
        raise BufferError(
            f"cannot check {shown} against the secret guard's deny list: {e.name} is not installed",
            "Install the guard: pip install 'limner[guard]' (or run scripts/setup).",
        ) from None


def _refuse(reason: str) -> BufferError:
    return BufferError(f"!context will not read {reason}: it is a credential file", DENIED_HINT)


def _is_binary(raw: bytes) -> bool:
    if b"\0" in raw[:_SNIFF]:
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def include(fields: list[str], cwd: str, line: int,
            skipped: list[str] | None = None) -> list[ContextFile]:
    """`!context FILE` or `!context DIR SUFFIX...`: the files, in Illume's order.

    fields are the directive's arguments, split as Go's strings.Fields does.
    A credential file (guard.denied) named on its own is a BufferError; one a
    directory walk meets is left out and its reason appended to `skipped`.
    """
    if not fields:
        raise BufferError(
            "!context needs a file, or a directory and suffixes",
            "Write `!context FILE` or `!context DIR .py .md`.",
        )
    if len(fields) == 1:
        shown = fields[0]
        reason = denied(os.path.join(cwd, shown), shown, cwd)
        if reason:
            raise _refuse(reason)
        raw = _read(os.path.join(cwd, shown), shown)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BufferError(
                f"{shown} is not UTF-8 text (byte {e.start})",
                "Only text files can be sent; convert it or leave it out.",
            ) from None
        return [ContextFile(shown, text, line, block(shown, text))]
    return list(_walk(fields[0], fields[1:], cwd, line, [] if skipped is None else skipped))


def _walk(root: str, suffixes: list[str], cwd: str, line: int, skipped: list[str]):
    check_path(root)
    real_root = os.path.join(cwd, root)
    if not os.path.lexists(real_root):
        raise BufferError(
            f"no such file or directory: {root}",
            "Fix the path; relative paths start from the directory limner runs in.",
        )

    def accept(path: str, shown: str, walked: str, cut: int) -> ContextFile | None:
        if not any(walked.endswith(s) for s in suffixes):
            return None
        reason = denied(path, shown, cwd)
        if reason:
            skipped.append(reason)
            return None
        raw = _read(path, shown)
        if _is_binary(raw):
            return None  # a walk sweeps in images and builds; skip them quietly
        text = raw.decode("utf-8")
        name = walked[cut:]
        return ContextFile(name, text, line, block(name, text))

    if not os.path.isdir(real_root):  # DIR may be one file, as with Go's Walk
        hit = accept(real_root, root, root, root.rfind("/") + 1)
        return iter([hit] if hit else [])
    return _visit(root, real_root, "", suffixes, accept)


def _visit(root, real_root, rel, suffixes, accept):
    # Illume's names: the walked path minus DIR's parent, so DIR's last
    # element is shown unless DIR ends in a slash. Illume cut the raw text
    # of DIR, which mangles names when DIR starts with "./" ("./src" gave
    # "c/a.py"); limner cuts the cleaned DIR, identical in every other case.
    clean = os.path.normpath(root)
    if root.endswith("/") and clean not in (".", "/"):
        clean += "/"
    cut = clean.rfind("/") + 1
    here = os.path.join(real_root, rel)
    try:
        # Go's filepath.Walk order: depth first, each directory's entries
        # sorted bytewise (for UTF-8 names that equals code point order).
        entries = sorted(os.listdir(here))
    except OSError as e:
        raise BufferError(f"cannot list {os.path.join(root, rel)}: {e.strerror}") from None
    for entry in entries:
        sub = os.path.join(rel, entry)
        full = os.path.join(here, entry)
        if os.path.isdir(full):
            # Links to directories are not followed: they can loop.
            if entry not in SKIP_DIRS and not os.path.islink(full):
                yield from _visit(root, real_root, sub, suffixes, accept)
            continue
        walked = os.path.normpath(os.path.join(clean, sub))
        hit = accept(full, os.path.join(root, sub), walked, cut)
        if hit:
            yield hit


# -- !reddit and !github: a thread saved as JSON, flattened to text ----------


def _load_json(path: str, shown: str, cwd: str) -> Any:
    reason = denied(path, shown, cwd)
    if reason:
        raise _refuse(reason)
    raw = _read(path, shown)
    try:
        return json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None  # Illume ignores the decode error and sees empty fields


def _field(obj: Any, name: str, kind: type) -> Any:
    """Read a field as Go's encoding/json fills a struct: keys match
    case-insensitively, the last matching key of the right type wins, and
    a mistyped value leaves the field empty."""
    hit = None
    if isinstance(obj, dict):
        lowered = name.lower()
        for k, v in obj.items():
            if k.lower() == lowered and isinstance(v, kind):
                hit = v
    return hit


def _str(obj: Any, name: str) -> str:
    return _field(obj, name, str) or ""


def _children(listing: Any) -> list:
    return _field(_field(listing, "data", dict), "children", list) or []


def scan_lines(s: str) -> list[str]:
    """Go's bufio.ScanLines: no empty last line, one trailing CR dropped."""
    if not s:
        return []
    lines = s.split("\n")
    if s.endswith("\n"):
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _quote_prefix(depth: int) -> str:
    return ">" * depth + (" " if depth > 0 else "")


def _comments(out: list[str], depth: int, children: list) -> None:
    for child in children:
        data = _field(child, "data", dict)
        out.append("\n" + _quote_prefix(depth - 1) + f"u/{_str(data, 'author')}:\n")
        for ln in scan_lines(_str(data, "body")):
            out.append(_quote_prefix(depth) + ln + "\n")
        replies = _field(data, "replies", dict)  # reddit sends "" when none
        if replies is not None:
            _comments(out, depth + 1, _children(replies))


def reddit(shown: str, cwd: str, with_comments: bool) -> str:
    """`!reddit FILE` (post and threaded comments) / `!reddit! FILE` (post only)."""
    doc = _load_json(os.path.join(cwd, shown), shown, cwd)
    posts = _children(doc[0]) if isinstance(doc, list) and doc else []
    if not posts:
        raise BufferError(
            f"{shown} is not a reddit thread in JSON",
            "Save the thread's URL with .json appended, e.g. "
            "https://www.reddit.com/r/SUB/comments/ID/.json",
        )
    post = _field(posts[0], "data", dict)
    out = [
        "# Reddit Post\n\n",
        _str(post, "title") + "\n",
        f"by u/{_str(post, 'author')} in r/{_str(post, 'subreddit')}\n",
        f"---\n{_str(post, 'selftext')}\n---\n",
    ]
    if with_comments and len(doc) > 1:
        _comments(out, 1, _children(doc[1]))
        out.append("---\n")
    return "".join(out)


def github(paths: list[str], cwd: str) -> str:
    """`!github ISSUE.json [COMMENTS.json...]`: an issue and its comments."""
    if not paths:
        raise BufferError(
            "!github needs an issue file",
            "Write `!github issue.json [comments.json]` with files saved from "
            "https://api.github.com/repos/USER/REPO/issues/ID[/comments].",
        )
    issue = _load_json(os.path.join(cwd, paths[0]), paths[0], cwd)
    user = _field(issue, "user", dict)
    out = [
        "---\n",
        _str(issue, "html_url") + "\n",
        _str(issue, "title") + "\n",
        f"by @{_str(user, 'login')}\n\n",
        _str(issue, "body") + "\n",
    ]
    for path in paths[1:]:
        comments = _load_json(os.path.join(cwd, path), path, cwd)
        for c in comments if isinstance(comments, list) else []:
            out.append(f"\n@{_str(_field(c, 'user', dict), 'login')}:\n")
            out.extend(f"> {ln}\n" for ln in scan_lines(_str(c, "body")))
    out.append("---\n")
    return "".join(out)
