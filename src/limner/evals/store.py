"""The generation store: one SQLite file per eval output dir.

Generations are keyed by (suite, task, model, variant, sample) and written as
soon as each one arrives, so an interrupted run resumes where it stopped. The
key is the primary key: a retried request or a re-asked sample replaces its
row, never adds one; the row's seed says which draw it is.
Scores live in their own table with the same key: `limner eval --rescore`
drops them and scores the stored generations again, offline.

variant names how a sample was drawn: "greedy", "T0.8" (sampled at that
temperature), "repair" (sample = the repair round, 1..N; round 0 is the
greedy sample).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

KEY = ("suite", "task", "model", "variant", "sample")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    suite TEXT NOT NULL, task TEXT NOT NULL, model TEXT NOT NULL,
    variant TEXT NOT NULL, sample INTEGER NOT NULL,
    how TEXT,                 -- completion | chat | fim
    text TEXT,                -- the reply as it arrived
    code TEXT,                -- what is scored: the completion, the middle, or the reply's code block
    request TEXT,             -- JSON: the messages or prompt sent (repair rounds grow)
    latency_s REAL, ttft_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
    tokens_per_s REAL, stop TEXT, error TEXT,
    created REAL,
    PRIMARY KEY (suite, task, model, variant, sample)
);
CREATE TABLE IF NOT EXISTS scores (
    suite TEXT NOT NULL, task TEXT NOT NULL, model TEXT NOT NULL,
    variant TEXT NOT NULL, sample INTEGER NOT NULL,
    passed INTEGER,           -- 1/0; NULL when the task has no test
    status TEXT,              -- pass | fail | timeout | limit | no-test | no-output
    detail TEXT,              -- the failing assert and a trimmed traceback
    exact INTEGER, edit_sim REAL,
    isolation TEXT, seconds REAL,
    PRIMARY KEY (suite, task, model, variant, sample)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

GEN_FIELDS = ("how", "text", "code", "request", "latency_s", "ttft_s", "prompt_tokens",
              "completion_tokens", "tokens_per_s", "stop", "error", "seed", "attempts")
# Columns added after the first release: (name, type), added to old stores on open.
# seed: the sampling seed sent (NULL for greedy); a stored sample drawn with
# another seed is not the one asked for. attempts: tries it took (retries).
_ADDED = (("seed", "INTEGER"), ("attempts", "INTEGER"))
SCORE_FIELDS = ("passed", "status", "detail", "exact", "edit_sim", "isolation", "seconds")


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(_SCHEMA)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(generations)")}
        for name, kind in _ADDED:
            if name not in have:
                try:
                    self.db.execute(f"ALTER TABLE generations ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError:  # another process added it first
                    pass
        self.lock = threading.Lock()  # one connection shared by the worker threads

    def close(self) -> None:
        self.db.close()

    # -- generations

    def get(self, key: tuple) -> dict | None:
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM generations WHERE suite=? AND task=? AND model=? AND variant=? AND sample=?",
                key).fetchone()
        return _decode(row)

    def put(self, key: tuple, gen: dict) -> None:
        cols = KEY + GEN_FIELDS + ("created",)
        values = list(key) + [_encode(f, gen.get(f)) for f in GEN_FIELDS] + [time.time()]
        with self.lock:
            self.db.execute(f"INSERT OR REPLACE INTO generations ({', '.join(cols)}) "
                            f"VALUES ({', '.join('?' * len(cols))})", values)
            # A new generation makes any old score of this key stale.
            self.db.execute("DELETE FROM scores WHERE suite=? AND task=? AND model=? AND variant=? "
                            "AND sample=?", key)

    def generations(self, suite=None, model=None, variant=None) -> list[dict]:
        where, args = _where(suite=suite, model=model, variant=variant)
        with self.lock:
            rows = self.db.execute(f"SELECT * FROM generations{where} ORDER BY suite, model, variant, "
                                   "task, sample", args).fetchall()
        return [_decode(r) for r in rows]

    # -- scores

    def score_of(self, key: tuple) -> dict | None:
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM scores WHERE suite=? AND task=? AND model=? AND variant=? AND sample=?",
                key).fetchone()
        return dict(row) if row else None

    def put_score(self, key: tuple, score: dict) -> None:
        cols = KEY + SCORE_FIELDS
        values = list(key) + [score.get(f) for f in SCORE_FIELDS]
        with self.lock:
            self.db.execute(f"INSERT OR REPLACE INTO scores ({', '.join(cols)}) "
                            f"VALUES ({', '.join('?' * len(cols))})", values)

    def unscored(self) -> list[dict]:
        with self.lock:
            rows = self.db.execute(
                "SELECT g.* FROM generations g LEFT JOIN scores s USING (suite, task, model, variant, sample) "
                "WHERE s.suite IS NULL ORDER BY g.suite, g.model, g.variant, g.task, g.sample").fetchall()
        return [_decode(r) for r in rows]

    def clear_scores(self) -> int:
        with self.lock:
            return self.db.execute("DELETE FROM scores").rowcount

    def joined(self, suite=None, model=None, variant=None) -> list[dict]:
        """Generations with their scores (score fields None where not scored)."""
        where, args = _where(prefix="g.", suite=suite, model=model, variant=variant)
        with self.lock:
            rows = self.db.execute(
                "SELECT g.*, s.passed, s.status, s.detail, s.exact, s.edit_sim, s.isolation, "
                "s.seconds AS test_seconds FROM generations g LEFT JOIN scores s "
                f"USING (suite, task, model, variant, sample){where} "
                "ORDER BY g.suite, g.model, g.variant, g.task, g.sample", args).fetchall()
        return [_decode(r) for r in rows]

    # -- run settings, so a resumed run can say what it was

    def set_meta(self, key: str, value) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict:
        with self.lock:
            return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT * FROM meta")}


def _where(prefix: str = "", **tests) -> tuple[str, list]:
    clauses = [(f"{prefix}{k} = ?", v) for k, v in tests.items() if v is not None]
    if not clauses:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in clauses), [v for _, v in clauses]


def _encode(field: str, value):
    return json.dumps(value, ensure_ascii=False) if field == "request" and value is not None else value


def _decode(row) -> dict | None:
    if row is None:
        return None
    d = dict(row)
    if d.get("request"):
        try:
            d["request"] = json.loads(d["request"])
        except ValueError:
            pass
    return d
