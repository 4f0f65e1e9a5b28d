"""The repository index: files, tags and chunks in SQLite with FTS5.

One database per repository under the user's cache dir
($LIMNER_CACHE_DIR or $XDG_CACHE_HOME/limner, then index/<hash>.sqlite).
It is only a cache: a database from an older schema, for another root, or
corrupt is deleted and rebuilt; one that stays locked is replaced, for this
run, by an in-memory rebuild. Nothing else ever deletes anything.

Freshness is a stat walk: a file whose (mtime, size) matches its row is not
read at all; one that differs is read and hashed, and parsed only when the
hash changed. So touching one file costs one read and one parse.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

from limner.errors import LimnerError
from limner.fim.languages import from_path

# Bump when the tables or what tags.py extracts change: old caches rebuild.
SCHEMA_VERSION = 2
MAX_BYTES = 1_000_000      # bigger files are data or generated, not code to read
SNIFF = 8192               # bytes examined for a NUL (binary)
MAX_AVG_LINE = 300         # minified / generated one-liners
LOCK_WAIT = 10.0           # seconds to wait for another indexer before going in-memory
PARALLEL_MIN = 48          # below this many files to parse, a pool costs more than it saves

SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", "__pycache__",
                       "node_modules", ".venv", "venv", ".tox", ".nox", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".idea", ".vscode"})

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE files(id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mtime_ns INTEGER,
                   size INTEGER, sha TEXT, lang TEXT, status TEXT NOT NULL, nlines INTEGER);
CREATE TABLE defs(file_id INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT, line INTEGER,
                  end_line INTEGER, depth INTEGER, signature TEXT);
CREATE INDEX defs_name ON defs(name);
CREATE INDEX defs_file ON defs(file_id);
CREATE TABLE refs(file_id INTEGER NOT NULL, name TEXT NOT NULL, n INTEGER);
CREATE INDEX refs_file ON refs(file_id);
CREATE TABLE chunks(id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, kind TEXT, name TEXT,
                    start INTEGER, end INTEGER, text TEXT);
CREATE INDEX chunks_file ON chunks(file_id);
CREATE INDEX chunks_name ON chunks(name);
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id');
"""


def cache_root() -> Path:
    base = os.environ.get("LIMNER_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "limner"


def db_path(root: str | os.PathLike, exclude: tuple[str, ...] = ()) -> Path:
    # Different exclusions are different indexes, so they never fight over one file.
    ident = os.path.realpath(root) + "".join("\0" + e for e in sorted(exclude))
    key = hashlib.sha256(ident.encode()).hexdigest()[:20]
    return cache_root() / "index" / f"{key}.sqlite"


def forget(root: str | os.PathLike, exclude: tuple[str, ...] = ()) -> None:
    """Delete the cached index of `root` (`limner index --rebuild`)."""
    path = str(db_path(check_root(root), tuple(sorted(exclude))))
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def check_root(root: str | os.PathLike) -> str:
    path = os.path.realpath(os.path.expanduser(str(root)))
    if not os.path.exists(path):
        raise LimnerError(f"{root}: no such directory", "Give the path of a repository or folder.")
    if not os.path.isdir(path):
        raise LimnerError(f"{root}: not a directory", "Give the folder that holds the file.")
    return path


# ---------------------------------------------------------------- files


def list_files(root: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Relative paths: `git ls-files` (tracked + untracked, not ignored), else a walk.
    `exclude` holds relative folder paths to leave out (e.g. site-packages)."""
    prefixes = tuple(e.strip("/") + "/" for e in exclude)
    try:
        out = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, timeout=60, check=True).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
        # git lists paths relative to root even when root is inside a bigger repo;
        # nothing listed means root is ignored by that repo (~/.pyenv/versions): walk.
        if names:
            return _not_denied(root, sorted(set(n for n in names if not (set(n.split("/")) & SKIP_DIRS)
                                                and not n.startswith(prefixes))))
    except (OSError, subprocess.SubprocessError):
        pass
    found: list[str] = []
    _walk(root, "", frozenset(p[:-1] for p in prefixes), found)
    return _not_denied(root, sorted(found))


def _not_denied(root: str, names: list[str]) -> list[str]:
    # The secrets guard's deny list and .limnerignore apply before a file is read:
    # a credential file is never indexed, so !outline/!retrieve can never show it.
    from limner.guard import allowed

    return allowed(root, names)


def _walk(root: str, rel: str, exclude: frozenset, found: list[str]) -> None:
    # scandir, not os.walk: excluded and VCS folders are never entered, and no relpath.
    try:
        entries = list(os.scandir(os.path.join(root, rel) if rel else root))
    except OSError:
        return
    for e in entries:
        sub = f"{rel}/{e.name}" if rel else e.name
        if e.is_dir(follow_symlinks=False):
            if e.name not in SKIP_DIRS and not e.name.startswith(".") and sub not in exclude:
                _walk(root, sub, exclude, found)
        elif e.is_file():
            found.append(sub)


def _classify(data: bytes) -> str:
    if b"\0" in data[:SNIFF]:
        return "binary"
    if len(data) > 4096 and len(data) / (data.count(b"\n") + 1) > MAX_AVG_LINE:
        return "minified"
    return "ok"


def analyze_file(root: str, rel: str, old_sha: str | None, retries: int = 3) -> dict:
    """Read, classify, hash and (if the content changed) parse one file.

    Runs in worker processes. A file rewritten while we parse it is read
    again; if it keeps changing, mtime -1 makes the next update retry it."""
    from limner.retrieval import tags

    full = os.path.join(root, rel)
    for attempt in range(retries):
        try:
            st = os.stat(full)
            if st.st_size > MAX_BYTES:
                return dict(path=rel, mtime_ns=st.st_mtime_ns, size=st.st_size, sha=None,
                            status="large", lang=None)
            with open(full, "rb") as fh:
                data = fh.read()
        except OSError:
            return dict(path=rel, status="gone")
        sha = hashlib.blake2b(data, digest_size=16).hexdigest()
        rec = dict(path=rel, mtime_ns=st.st_mtime_ns, size=st.st_size, sha=sha,
                   status=_classify(data), lang=from_path(rel), retried=attempt)
        if rec["status"] == "ok" and sha != old_sha:
            rec["defs"], rec["refs"], rec["chunks"] = tags.analyze(data, rec["lang"])
            rec["nlines"] = data.count(b"\n") + 1
        elif rec["status"] == "ok":
            rec["status"] = "same"
        try:
            after = os.stat(full)
        except OSError:
            return dict(path=rel, status="gone")
        if (after.st_mtime_ns, after.st_size) == (st.st_mtime_ns, st.st_size):
            return rec
    rec["mtime_ns"] = -1
    return rec


def _analyze_star(args):
    return analyze_file(*args)


# ---------------------------------------------------------------- database


def _is_lock(e: Exception) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


class Index:
    """An open index for one root. `update()` brings it up to date."""

    def __init__(self, root: str, path: Path | str | None = None, lock_wait: float = LOCK_WAIT,
                 exclude: tuple[str, ...] = ()):
        self.root = check_root(root)
        self.exclude = tuple(sorted(exclude))
        self.path = Path(path) if path else db_path(self.root, self.exclude)
        self.lock_wait = lock_wait
        self.in_memory = False
        self.rebuilt = ""  # why the database was rebuilt on open, if it was
        self.stats: dict = {}
        self.conn = self._open()

    # Opening: every way a cache can be unusable ends in a fresh one.
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect(str(self.path))
            why = self._stale(conn)
            if not why:
                return conn
            conn.close()
        except sqlite3.DatabaseError as e:
            if _is_lock(e):
                return self._memory(f"locked ({e})")
            why = f"unreadable ({e})"
        self.rebuilt = why
        self._delete_files()
        try:
            conn = self._connect(str(self.path))
            self._create(conn)
            return conn
        except sqlite3.DatabaseError as e:
            return self._memory(f"cannot create {self.path} ({e})")

    def _connect(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=self.lock_wait, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _stale(self, conn: sqlite3.Connection) -> str:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables == 0:
                self._create(conn)
                return ""
        if version != SCHEMA_VERSION:
            return f"schema {version}, want {SCHEMA_VERSION}"
        row = conn.execute("SELECT value FROM meta WHERE key='root'").fetchone()
        if not row or row[0] != self.root:
            return "made for another directory"
        conn.execute("SELECT count(*) FROM files").fetchone()
        return ""

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.executescript("BEGIN;" + SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        conn.execute("INSERT INTO meta VALUES ('root', ?)", (self.root,))

    def _delete_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(str(self.path) + suffix)
            except FileNotFoundError:
                pass

    def _memory(self, why: str) -> sqlite3.Connection:
        self.in_memory = True
        self.rebuilt = f"in memory for this run: {why}"
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._create(conn)
        return conn

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------ update

    def update(self, jobs: int | None = None) -> dict:
        """Stat walk, then read/parse only what changed. Returns the counters."""
        try:
            return self._update(jobs)
        except sqlite3.DatabaseError as e:
            # Corrupt pages show up on first write; a lock that outlasted the wait too.
            self.conn.close()
            if _is_lock(e):
                self.conn = self._memory(f"locked ({e})")
            else:
                self.rebuilt = f"corrupt ({e})"
                self._delete_files()
                self.conn = self._connect(str(self.path))
                self._create(self.conn)
            return self._update(jobs)

    def _update(self, jobs: int | None) -> dict:
        t0 = time.perf_counter()
        listed = list_files(self.root, self.exclude)
        known = {r[1]: r for r in self.conn.execute(
            "SELECT id, path, mtime_ns, size, sha FROM files")}
        todo = []
        present = set()
        for rel in listed:
            try:
                st = os.stat(os.path.join(self.root, rel))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            present.add(rel)
            row = known.get(rel)
            if row and row[2] == st.st_mtime_ns and row[3] == st.st_size:
                continue
            todo.append((self.root, rel, row[4] if row else None))
        stats = dict(listed=len(present), unchanged=len(present) - len(todo), read=0,
                     parsed=0, removed=0, skipped=0, retried=0)
        gone = [known[p][0] for p in known.keys() - present]
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for fid in gone:
                self._forget(cur, fid)
                cur.execute("DELETE FROM files WHERE id=?", (fid,))
            stats["removed"] = len(gone)
            next_id = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0]
            for rec in self._analyze_all(todo, jobs):
                stats["read"] += rec["status"] != "large"
                stats["retried"] += rec.get("retried", 0)
                next_id = self._store(cur, rec, known.get(rec["path"]), next_id, stats)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        self.stats = stats
        for memo in ("_df", "_chunk_total"):  # retrieve.py's per-index memos
            self.__dict__.pop(memo, None)
        return stats

    def _analyze_all(self, todo: list, jobs: int | None):
        jobs = jobs or int(os.environ.get("LIMNER_INDEX_JOBS") or 0) or min(os.cpu_count() or 1, 4)
        if jobs <= 1 or len(todo) < PARALLEL_MIN:
            yield from map(_analyze_star, todo)
            return
        import multiprocessing

        # fork: workers start at once with the grammars the parent may hold.
        ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else None)
        with ctx.Pool(jobs) as pool:
            yield from pool.imap(_analyze_star, todo, chunksize=8)

    def _forget(self, cur: sqlite3.Cursor, fid: int) -> None:
        cur.execute("INSERT INTO chunks_fts(chunks_fts, rowid, text) "
                    "SELECT 'delete', id, text FROM chunks WHERE file_id=?", (fid,))
        for table in ("chunks", "defs", "refs"):
            cur.execute(f"DELETE FROM {table} WHERE file_id=?", (fid,))

    def _store(self, cur, rec: dict, row, next_id: int, stats: dict) -> int:
        status = rec["status"]
        if status == "gone":
            if row:
                self._forget(cur, row[0])
                cur.execute("DELETE FROM files WHERE id=?", (row[0],))
            return next_id
        if status == "same":  # touched, not changed: only the stat is new
            cur.execute("UPDATE files SET mtime_ns=?, size=? WHERE id=?",
                        (rec["mtime_ns"], rec["size"], row[0]))
            return next_id
        if row:
            self._forget(cur, row[0])
            fid = row[0]
            cur.execute("UPDATE files SET mtime_ns=?, size=?, sha=?, lang=?, status=?, nlines=? "
                        "WHERE id=?", (rec["mtime_ns"], rec["size"], rec["sha"], rec["lang"],
                                       status, rec.get("nlines"), fid))
        else:
            fid = cur.execute("INSERT INTO files(path, mtime_ns, size, sha, lang, status, nlines) "
                              "VALUES (?,?,?,?,?,?,?)",
                              (rec["path"], rec["mtime_ns"], rec["size"], rec["sha"],
                               rec["lang"], status, rec.get("nlines"))).lastrowid
        if status != "ok":
            stats["skipped"] += 1
            return next_id
        stats["parsed"] += 1
        cur.executemany("INSERT INTO defs VALUES (?,?,?,?,?,?,?)",
                        [(fid, d.name, d.kind, d.line, d.end_line, d.depth, d.signature)
                         for d in rec["defs"]])
        cur.executemany("INSERT INTO refs VALUES (?,?,?)",
                        [(fid, name, n) for name, n in rec["refs"].items()])
        rows = [(next_id + i, fid, c.kind, c.name, c.start, c.end, c.text)
                for i, c in enumerate(rec["chunks"])]
        cur.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?)", rows)
        cur.executemany("INSERT INTO chunks_fts(rowid, text) VALUES (?,?)",
                        [(r[0], r[6]) for r in rows])
        return next_id + len(rows)

    # ------------------------------------------------------------ summary

    def counts(self) -> dict:
        q = self.conn.execute
        by_status = dict(q("SELECT status, count(*) FROM files GROUP BY status").fetchall())
        return dict(files=by_status.get("ok", 0),
                    skipped={k: v for k, v in sorted(by_status.items()) if k != "ok"},
                    defs=q("SELECT count(*) FROM defs").fetchone()[0],
                    chunks=q("SELECT count(*) FROM chunks").fetchone()[0])


def open_index(root: str | os.PathLike, update: bool = True, jobs: int | None = None,
               path: Path | str | None = None, exclude: tuple[str, ...] = ()) -> Index:
    """The index for `root`, fresh. Raises LimnerError when there is nothing to index."""
    idx = Index(str(root), path=path, exclude=exclude)
    if update:
        idx.update(jobs)
    if idx.conn.execute("SELECT 1 FROM files WHERE status='ok' LIMIT 1").fetchone() is None:
        skipped = idx.counts()["skipped"]
        idx.close()
        what = ", ".join(f"{n} {k}" for k, n in skipped.items()) or "no files at all"
        raise LimnerError(f"{root}: no text files to index ({what})",
                          "Point it at a folder with source code; binary, minified and "
                          f"files over {MAX_BYTES // 1000} kB are skipped.")
    return idx
