"""The exchange log: every request and reply, in SQLite, searchable.

One row per exchange in `exchanges`, secrets masked before they are written
(secrets.py, then the guard: log_redact.py). An external-content FTS5 table over the request text and
the reply, kept in step by triggers, makes `limner logs search` fast.

The store lives at $LIMNER_DATA_DIR/limner.db, else
$XDG_DATA_HOME/limner/limner.db, else ~/.local/share/limner/limner.db.

Writes happen after the reply is on screen, from many processes at once (an
editor may fire several buffers; the eval harness and `limner serve` log
too), so each write is one short IMMEDIATE transaction in WAL mode with
synchronous=NORMAL, a busy timeout, and a jittered retry on "locked".

The schema grows by appending a plain function to MIGRATIONS; PRAGMA
user_version counts how many have run.
"""
from __future__ import annotations

import builtins
import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from limner import log_redact
from limner.errors import LimnerError

STATUSES = ("ok", "error", "partial", "cancelled")
BUSY_TIMEOUT_S = 10.0  # how long SQLite itself waits on a lock
LOCK_DEADLINE_S = 30.0  # how long we keep retrying on top of that


class LogError(LimnerError):
    """The log could not be opened, read or written."""


class LogQueryError(LogError):
    """A search query SQLite's FTS5 cannot parse: the user's input is wrong."""

    exit_code = 2


# ---------------------------------------------------------------- schema


def _m1_exchanges(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,          -- UTC, fixed width: sorts as text
            source TEXT NOT NULL DEFAULT 'run',  -- run | serve | eval | ...
            buffer_sha256 TEXT,
            buffer TEXT,                    -- the request buffer, secrets masked
            request_url TEXT,
            request_headers TEXT,           -- JSON, masked
            request_body TEXT,              -- JSON, masked
            request_text TEXT,              -- messages / prompt as plain text
            title TEXT,                     -- first line of the last user message
            reply TEXT,
            status TEXT NOT NULL,
            exit_code INTEGER,
            error_kind TEXT,
            error_message TEXT,
            error_hint TEXT,
            http_status INTEGER,
            stop_reason TEXT,
            elapsed_s REAL,
            first_token_s REAL,
            prompt_ms REAL,
            predicted_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            profile TEXT,
            profiles TEXT,                  -- JSON list, in load order
            model TEXT,
            backend TEXT,
            mode TEXT,
            version TEXT,
            extra TEXT                      -- JSON: anything a caller adds
        )"""
    )
    db.execute("CREATE INDEX exchanges_created ON exchanges(created)")
    db.execute("CREATE INDEX exchanges_status ON exchanges(status)")
    db.execute("CREATE INDEX exchanges_model ON exchanges(model)")
    db.execute(
        """CREATE VIRTUAL TABLE exchanges_fts USING fts5(
               request_text, reply, content='exchanges', content_rowid='id')"""
    )
    # External content: the index holds no copy of the text, so these
    # triggers tell it what was added and removed, in the writer's transaction.
    add = ("INSERT INTO exchanges_fts(rowid, request_text, reply) "
           "VALUES (new.id, new.request_text, new.reply);")
    drop = ("INSERT INTO exchanges_fts(exchanges_fts, rowid, request_text, reply) "
            "VALUES ('delete', old.id, old.request_text, old.reply);")
    for name, event, body in (("ai", "INSERT", add), ("ad", "DELETE", drop),
                              ("au", "UPDATE", drop + add)):
        db.execute(f"CREATE TRIGGER exchanges_{name} AFTER {event} ON exchanges "
                   f"BEGIN {body} END")


# Append only; never edit a migration that has shipped.
MIGRATIONS = [_m1_exchanges]
SCHEMA_VERSION = len(MIGRATIONS)

_JSON_COLUMNS = ("request_headers", "request_body", "profiles", "extra")
_COLUMNS = (
    "created source buffer_sha256 buffer request_url request_headers request_body "
    "request_text title reply status exit_code error_kind error_message error_hint "
    "http_status stop_reason elapsed_s first_token_s prompt_ms predicted_ms "
    "prompt_tokens completion_tokens cached_tokens profile profiles model backend "
    "mode version extra"
).split()


# ---------------------------------------------------------------- opening


def db_path() -> Path:
    """Where the log lives, from the environment (see the module docstring)."""
    if os.environ.get("LIMNER_DATA_DIR"):
        return Path(os.environ["LIMNER_DATA_DIR"]).expanduser() / "limner.db"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(base).expanduser() / "limner" / "limner.db"


_conns: dict[tuple[str, int], sqlite3.Connection] = {}
_conns_lock = threading.Lock()
_write_lock = threading.Lock()  # one writer per process; SQLite orders processes


def _locked(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def _retrying(fn, what: str, path: Path):
    """Run fn(), retrying with jitter while another process holds the lock."""
    deadline = time.monotonic() + LOCK_DEADLINE_S
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _locked(e) or time.monotonic() > deadline:
                raise LogError(
                    f"could not {what} the exchange log at {path}: {e}",
                    "Another process may hold it locked; try again, or pass --no-log.",
                ) from None
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.25)


def _in_transaction(db: sqlite3.Connection, fn):
    """fn(db) inside BEGIN IMMEDIATE ... COMMIT: the write lock is taken up
    front, so a busy database shows at BEGIN, where retrying is safe."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")
        return result
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return

    def run(db: sqlite3.Connection) -> None:
        # Re-read under the lock: another process may have just migrated.
        have = db.execute("PRAGMA user_version").fetchone()[0]
        for step in MIGRATIONS[have:]:
            step(db)
        db.execute(f"PRAGMA user_version = {max(have, SCHEMA_VERSION)}")

    _retrying(lambda: _in_transaction(db, run), "set up", path)


def connect(path: Path | str | None = None, create: bool = True) -> sqlite3.Connection | None:
    """An open, migrated connection (cached per process), or None when
    create=False and there is no log yet. Raises LogError with a clear message."""
    path = Path(path) if path is not None else db_path()
    key = (str(path), os.getpid())
    with _conns_lock:
        if key in _conns:
            return _conns[key]
        if not create and not path.exists():
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise LogError(
                f"cannot open the exchange log at {path}: {e}",
                "Set LIMNER_DATA_DIR to a writable directory, or pass --no-log.",
            ) from None
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _retrying(lambda: db.execute("PRAGMA journal_mode = WAL").fetchone(), "open", path)
            db.execute("PRAGMA synchronous = NORMAL")
            _migrate(db, path)
        except LogError:
            db.close()
            raise
        except sqlite3.Error as e:
            db.close()
            raise LogError(
                f"cannot use the exchange log at {path}: {e}",
                "If the file is damaged, move it aside; limner starts a new one.",
            ) from None
        _conns[key] = db
        return db


def close() -> None:
    """Close this process's connections (tests, long-lived servers on reload)."""
    with _conns_lock:
        for key in [k for k in _conns if k[1] == os.getpid()]:
            _conns.pop(key).close()


# ---------------------------------------------------------------- writing


def _now_iso(t: float | str | datetime | None = None) -> str:
    """UTC, fixed width, so that text order is time order (since/until rely on it).
    Takes unix seconds, a datetime or an ISO string (naive means UTC)."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if isinstance(t, datetime):
        t = (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _content_text(content: Any) -> str:
    """Message content as text: a string, or OpenAI-style parts with "text"."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") if isinstance(p, dict) else str(p) for p in content
        )
    return "" if content is None else str(content)


def text_of_body(body: Any) -> str:
    """The human text of a request body, whatever the protocol: for search."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    if isinstance(body.get("system"), str):
        parts.append(body["system"])
    for m in body.get("messages") or []:
        if isinstance(m, dict):
            parts.append(_content_text(m.get("content")))
    for k in ("prompt", "input_prefix", "input_suffix"):
        if isinstance(body.get(k), str):
            parts.append(body[k])
    return "\n\n".join(p for p in parts if p)


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _title_of_body(body: Any) -> str:
    if isinstance(body, dict):
        users = [m for m in body.get("messages") or [] if isinstance(m, dict)
                 and m.get("role") == "user"]
        if users:
            return _first_line(_content_text(users[-1].get("content")))
    return _first_line(text_of_body(body))


def record(exchange: dict[str, Any], path: Path | str | None = None) -> int:
    """Store one exchange; return its id.

    Keys are the column names (see _COLUMNS); `status` is required. Missing
    keys are derived where they can be (created, buffer_sha256, request_text,
    title, version); keys that are not columns go into `extra`. Every text is
    masked and redacted here (log_redact.scrub), whoever the caller is.
    """
    from limner import __version__

    ex = dict(exchange)
    status = ex.get("status")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    extra = dict(ex.pop("extra", None) or {})
    for k in [k for k in ex if k not in _COLUMNS]:
        extra[k] = ex.pop(k)
    if extra:
        ex["extra"] = extra
    ex["created"] = _now_iso(ex.get("created"))
    ex.setdefault("source", "run")
    ex.setdefault("version", __version__)
    if ex.get("buffer") is not None and not ex.get("buffer_sha256"):
        ex["buffer_sha256"] = hashlib.sha256(ex["buffer"].encode("utf-8")).hexdigest()
    if ex.get("request_text") is None:
        ex["request_text"] = text_of_body(ex.get("request_body"))
    if ex.get("title") is None:
        ex["title"] = _title_of_body(ex.get("request_body")) or _first_line(ex["request_text"])
    log_redact.scrub(ex)  # every text, every mode: masked names, then the guard's redaction
    for k in _JSON_COLUMNS:
        if ex.get(k) is not None:
            ex[k] = json.dumps(ex[k], ensure_ascii=False, default=str)
    cols = [c for c in _COLUMNS if c in ex]
    sql = (
        f"INSERT INTO exchanges ({', '.join(cols)}) "
        f"VALUES ({', '.join(':' + c for c in cols)})"
    )
    values = {c: ex[c] for c in cols}
    path = Path(path) if path is not None else db_path()
    db = connect(path)

    def write() -> int:
        return int(_in_transaction(db, lambda db: db.execute(sql, values).lastrowid))

    with _write_lock:
        try:
            return _retrying(write, "write", path)
        except sqlite3.Error as e:  # disk full, read-only file, damaged DB
            raise LogError(
                f"could not write the exchange log at {path}: {e}",
                "Check the disk and the file's permissions, or pass --no-log.",
            ) from None


def _request_text(req: Any) -> str:
    parts = [m.content for m in getattr(req, "messages", None) or []]
    for k in ("prompt", "prefix", "suffix"):
        v = getattr(req, k, None)
        if v and v not in parts:
            parts.append(v)
    return "\n\n".join(p for p in parts if p)


def _title(req: Any) -> str:
    msgs = getattr(req, "messages", None) or []
    users = [m for m in msgs if m.role == "user"]
    if users:
        return _first_line(users[-1].content)
    if getattr(req, "mode", None) in ("infill", "fim"):
        before = [ln for ln in (req.prefix or "").splitlines() if ln.strip()]
        return "infill: " + (before[-1].strip() if before else _first_line(req.suffix))
    return _first_line(req.prompt) or (_first_line(msgs[-1].content) if msgs else "")


def exchange_of(req: Any, adapter: Any, outcome: Any, started: float | None = None) -> dict:
    """The row for one `limner` run: Request + adapter + Outcome -> a dict for record()."""
    try:
        call = adapter.describe()
        url, headers, body = call.url, dict(call.headers), dict(call.body)
    except Exception:  # noqa: BLE001 - a broken describe() must not lose the log
        body = dict(getattr(req, "data", None) or {})
        msgs = getattr(req, "messages", None) or []
        if msgs:
            body["messages"] = [{"role": m.role, "content": m.content} for m in msgs]
        url, headers = getattr(req, "api", None), dict(getattr(req, "headers", None) or {})
    ex = {
        "created": _now_iso(started), "source": "run", "buffer": req.text,
        "request_url": url, "request_headers": headers, "request_body": body,
        "request_text": _request_text(req), "title": _title(req),
        "reply": outcome.text, "status": outcome.status, "exit_code": outcome.exit_code,
        "stop_reason": outcome.stopped, "elapsed_s": outcome.elapsed_s,
        "first_token_s": outcome.first_token_s,
        "profile": req.profile, "profiles": [*(req.profiles or [])], "model": req.model,
        "backend": getattr(adapter, "name", None) or req.backend, "mode": req.mode,
    }
    f = outcome.failure
    if f is not None:
        ex.update(error_kind=f.kind, error_message=f.message, error_hint=f.hint or None,
                  http_status=f.status)
    u = outcome.usage
    if u is not None:
        for k in ("prompt_ms", "predicted_ms", "prompt_tokens", "completion_tokens",
                  "cached_tokens"):
            ex[k] = getattr(u, k)
        if u.extra:
            ex["extra"] = {"usage": u.extra}  # server-specific numbers, kept as given
    if getattr(req, "test_cmd", None):
        # `!test` runs the reply's code: the sandbox level it runs under
        # ("basic" only when the buffer opted in with `!sandbox basic`).
        ex["extra"] = {**ex.get("extra", {}), "sandbox": getattr(req, "sandbox", "strict")}
    if guard := log_redact.guard_extra(req, adapter):  # !secrets, !allow-secrets: no values
        ex["extra"] = {**ex.get("extra", {}), "guard": guard}
    return ex


def record_outcome(req: Any, adapter: Any, outcome: Any, started: float | None = None,
                   path: Path | str | None = None) -> int | None:
    """Log one finished `limner` exchange (called by run.py after the reply).

    Returns the new id, or None when LIMNER_NO_LOG is set. Raises LogError.
    """
    if os.environ.get("LIMNER_NO_LOG"):
        return None
    return record(exchange_of(req, adapter, outcome, started), path=path)


# ---------------------------------------------------------------- reading


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    for k in _JSON_COLUMNS:
        if d.get(k) is not None:
            try:
                d[k] = json.loads(d[k])
            except ValueError:
                pass  # keep the raw text rather than hide the row
    return d


def _read(path, fn):
    """Run a read; turn SQLite's errors into LogError."""
    db = connect(path, create=False)
    if db is None:
        return None
    try:
        return fn(db)
    except sqlite3.DatabaseError as e:
        raise LogError(f"could not read the exchange log: {e}") from None


def get(id: int, path: Path | str | None = None) -> dict[str, Any] | None:
    """One exchange by id, or None."""
    r = _read(path, lambda db: db.execute("SELECT * FROM exchanges WHERE id = ?",
                                          (int(id),)).fetchone())
    return _row(r) if r is not None else None


def _where(status=None, since=None, until=None, model=None, after_id=None,
           start_id=None, end_id=None) -> tuple[str, builtins.list]:
    tests = [
        (status, "status = ?"), (since, "created >= ?"), (until, "created < ?"),
        (model, "(model = ? OR profile = ?)"), (after_id, "id > ?"),
        (start_id, "id >= ?"), (end_id, "id <= ?"),
    ]
    clauses = [(sql, value) for value, sql in tests if value is not None and value != ""]
    args = [value for sql, value in clauses for _ in range(sql.count("?"))]
    where = " AND ".join(sql for sql, _ in clauses)
    return (f" WHERE {where}" if where else ""), args


def list(limit: int = 20, status: str | None = None, since: str | None = None,
         until: str | None = None, model: str | None = None,
         path: Path | str | None = None) -> builtins.list[dict[str, Any]]:
    """The newest exchanges first. since/until are UTC ISO strings
    (until is exclusive); model matches the model or the profile."""
    where, args = _where(status, since, until, model)
    rows = _read(path, lambda db: db.execute(
        f"SELECT * FROM exchanges{where} ORDER BY id DESC LIMIT ?", [*args, int(limit)]
    ).fetchall())
    return [_row(r) for r in rows or []]


def iter_range(since: str | None = None, until: str | None = None,
               status: str | None = None, model: str | None = None,
               start_id: int | None = None, end_id: int | None = None,
               batch: int = 500, path: Path | str | None = None) -> Iterator[dict[str, Any]]:
    """Every matching exchange, oldest first, read in batches (for replay and evals)."""
    last = None
    while True:
        where, args = _where(status, since, until, model, last, start_id, end_id)
        rows = _read(path, lambda db: db.execute(
            f"SELECT * FROM exchanges{where} ORDER BY id LIMIT ?", [*args, int(batch)]
        ).fetchall())
        if not rows:
            return
        for r in rows:
            yield _row(r)
        last = rows[-1]["id"]


def search(query: str, limit: int = 20,
           path: Path | str | None = None) -> builtins.list[dict[str, Any]]:
    """Exchanges whose request text or reply match an FTS5 query, best first.

    Each row gains "snippet": the matching text with [brackets] round the hits.
    A query FTS5 cannot parse raises LogQueryError.
    """
    sql = (
        "SELECT e.*, snippet(exchanges_fts, -1, '[', ']', '…', 12) AS snippet "
        "FROM exchanges_fts JOIN exchanges e ON e.id = exchanges_fts.rowid "
        "WHERE exchanges_fts MATCH ? ORDER BY bm25(exchanges_fts), e.id DESC LIMIT ?"
    )
    db = connect(path, create=False)
    if db is None:
        return []
    try:
        rows = db.execute(sql, (query, int(limit))).fetchall()
    except sqlite3.OperationalError as e:
        if _locked(e):
            raise LogError(f"could not read the exchange log: {e}") from None
        # FTS5 reports syntax errors, unknown "column:" filters and bad
        # tokens as OperationalError: the query text is at fault.
        raise LogQueryError(
            f"cannot search for {query!r}: {e}",
            'The query uses SQLite FTS5 syntax: words, "exact phrases", '
            "AND / OR / NOT, prefix*. Quote words holding punctuation.",
        ) from None
    except sqlite3.DatabaseError as e:
        raise LogError(f"could not read the exchange log: {e}") from None
    return [_row(r) for r in rows or []]


def count(path: Path | str | None = None) -> int:
    n = _read(path, lambda db: db.execute("SELECT count(*) FROM exchanges").fetchone()[0])
    return int(n or 0)
