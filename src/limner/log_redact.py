"""The log never holds a secret: what log.record() and `limner logs redact` run.

    scrub(ex)        every text of one exchange row, in place: names that say
                     key/token (secrets.py) masked, then every secret the guard
                     finds replaced by [[SECRET:rule:n]], in every mode and for
                     every destination (a local model may echo a key back)
    rewrite(path)    the same over an existing log, then the FTS index rebuilt,
                     VACUUM and a WAL checkpoint, so no old byte survives in
                     the database, its WAL or its journal

One Redactor per row: a value gets the same placeholder in the buffer, the
body and the reply. Without google-re2 nothing can be checked, so texts are
withheld rather than stored unchecked.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

from limner import secrets

WITHHELD = "[withheld: the secret guard is not installed; pip install 'limner[guard]']"
# Columns that hold no free text (or only our own words): left as they are.
_PLAIN = {"created", "source", "buffer_sha256", "status", "exit_code", "error_kind", "mode",
          "version", "backend", "id"}
_JSON = ("request_headers", "request_body", "profiles", "extra")


class _Scrubber:
    """Redacts texts one by one, then (finish) every value any of them held.

    A text can hold a fragment whose rule needs context it lost: an infill
    title is the prefix's last line, which may be the `password` line of a
    .netrc entry. Values found anywhere in the row are replaced everywhere.
    """

    def __init__(self):
        from limner.guard.scan import Redactor, scan

        self.scan, self.r, self.known = scan, Redactor(), {}

    def __call__(self, text: str) -> str:
        found = self.scan(text)
        for f in found:
            self.known[f.secret] = self.r.placeholder(f)
        return self.r.redact(text, found)

    def finish(self, text: str) -> str:
        for secret in sorted(self.known, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, self.known[secret])
        return text


class _Withheld:
    """Without google-re2 nothing can be checked: texts are not stored at all."""

    def __call__(self, text: str) -> str:
        return WITHHELD if text else text

    def finish(self, text: str) -> str:
        return text


def _redactor():
    try:
        from limner.guard.rules import load

        load().compiled()  # google-re2: raises here when it is missing
    except Exception:  # noqa: BLE001 - re2 missing or rules broken: fail closed
        return _Withheld()
    return _Scrubber()


def _walk(obj: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(obj, str):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _walk(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, fn) for v in obj]
    return obj


def scrub(ex: dict[str, Any]) -> dict[str, Any]:
    """ex (a row about to be written, JSON columns still objects) with no secret left."""
    redact = _redactor()
    if ex.get("buffer") is not None:
        ex["buffer"] = secrets.mask_buffer(ex["buffer"])
    if ex.get("request_url") is not None:
        ex["request_url"] = secrets.mask_url(ex["request_url"])
    if isinstance(ex.get("request_headers"), dict):
        ex["request_headers"] = secrets.mask_headers(ex["request_headers"])
    if isinstance(ex.get("request_body"), dict):
        ex["request_body"] = secrets.mask_body(ex["request_body"])
    for k, v in ex.items():
        if k in _PLAIN or v is None:
            continue
        if isinstance(v, str):
            ex[k] = redact(v)
        elif k in _JSON:
            ex[k] = _walk(v, redact)
    for k, v in ex.items():  # second pass: values found anywhere, replaced everywhere
        if k not in _PLAIN and v is not None and (isinstance(v, str) or k in _JSON):
            ex[k] = _walk(v, redact.finish)
    return ex


def guard_extra(req: Any, adapter: Any) -> dict | None:
    """What the guard did, for the row's extra: mode, allow list, rules hit; no values."""
    report = getattr(getattr(adapter, "inner", adapter), "guard", None)
    allow = list(getattr(req, "allow_secrets", None) or [])
    if report is not None:
        return report.for_log(allow)
    mode = getattr(req, "secrets", None)
    return {"mode": mode, "allow": allow} if mode or allow else None


# ---------------------------------------------------------------- existing logs


def _scrub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row (JSON columns as text) scrubbed; same shape back."""
    ex = dict(row)
    for k in _JSON:
        if isinstance(ex.get(k), str):
            try:
                ex[k] = json.loads(ex[k])
            except ValueError:
                pass  # not JSON: scrubbed as text
    scrub(ex)
    for k in _JSON:
        if ex.get(k) is not None and not isinstance(ex[k], str):
            ex[k] = json.dumps(ex[k], ensure_ascii=False, default=str)
    return ex


def rewrite(path: Path | str | None = None) -> tuple[int, int, str]:
    """Scrub every exchange in the log; (rows changed, rows, checkpoint note).

    Then the FTS index is rebuilt from the scrubbed rows, the file VACUUMed
    with secure_delete on and the WAL checkpointed and truncated.
    """
    from limner import log

    path = Path(path) if path is not None else log.db_path()
    db = log.connect(path, create=False)
    if db is None:
        return 0, 0, "no log yet"
    if isinstance(_redactor(), _Withheld):
        raise log.LogError("cannot redact the log: the secret guard is not installed",
                           "pip install 'limner[guard]' (or run scripts/setup), then retry.")
    try:
        db.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left behind
        changed = total = 0

        def run(db: sqlite3.Connection) -> None:
            nonlocal changed, total
            for r in db.execute("SELECT * FROM exchanges").fetchall():
                total += 1
                old = dict(r)
                new = _scrub_row(old)
                diff = [k for k in old if new.get(k) != old[k]]
                if diff:
                    changed += 1
                    db.execute(f"UPDATE exchanges SET {', '.join(f'{k} = ?' for k in diff)} "
                               "WHERE id = ?", [*(new[k] for k in diff), old["id"]])
            db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('rebuild')")
            db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('optimize')")

        log._retrying(lambda: log._in_transaction(db, run), "redact", path)
        db.execute("VACUUM")
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as e:
        raise log.LogError(f"could not redact the exchange log at {path}: {e}",
                           "Stop other limner processes (serve, editors) and retry.") from None
    note = ("WAL checkpointed and truncated" if not busy else
            "another process holds the WAL open: run again once it has stopped")
    return changed, total, note
