"""The exchange store: recording, masking, reading, search, migrations, and
many writer processes at once, all against real SQLite files in tmp dirs."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from datetime import datetime, timezone

import pytest

from limner import log, secrets
from limner.events import Failure, Outcome, Usage
from limner.request import HttpCall, Message, Request

KEY = "sk-live-0123456789abcdef"
GKEY = "AIzaSyD-abcdefghijklmnop"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMNER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LIMNER_NO_LOG", raising=False)
    yield tmp_path
    log.close()


class StandInAdapter:
    """The two things the log asks of an adapter (the real ones live in backends/)."""

    def __init__(self, req: Request, name: str = "openai", broken: bool = False):
        self.req, self.name, self.broken = req, name, broken

    def describe(self) -> HttpCall:
        if self.broken:
            raise RuntimeError("describe exploded")
        body = dict(self.req.data)
        body["messages"] = [{"role": m.role, "content": m.content} for m in self.req.messages]
        return HttpCall(url=self.req.api.replace("{key}", GKEY),
                        headers=dict(self.req.headers), body=body)


def chat_request() -> Request:
    text = (
        f"!profile local\n!>Authorization Bearer {KEY}\n!:api_key {KEY}\n"
        "You are terse.\n!user\nWhat is a marmoset?\nAnswer briefly.\n"
    )
    return Request(
        api="http://127.0.0.1:9/v1/chat/completions?key={key}",
        data={"model": "smollm2", "max_tokens": 64, "api_key": KEY},
        headers={"content-type": "application/json", "Authorization": f"Bearer {KEY}",
                 "x-api-key": KEY},
        messages=[Message("system", "You are terse.", 4),
                  Message("user", "What is a marmoset?\nAnswer briefly.", 6)],
        profile="local", profiles=["base", "local"], text=text,
    )


def ok_outcome(text="A small monkey with a striped tail.") -> Outcome:
    return Outcome(
        status="ok", exit_code=0, text=text, stopped="stop",
        usage=Usage(prompt_tokens=21, completion_tokens=9, prompt_ms=12.5,
                    predicted_ms=80.25, cached_tokens=4),
        first_token_s=0.05, elapsed_s=0.4,
    )


# ---------------------------------------------------------------- secrets


def test_mask_value_keeps_scheme_and_four_chars():
    assert secrets.mask_value(f"Bearer {KEY}") == "Bearer sk-l****"
    assert secrets.mask_value(KEY) == "sk-l****"
    assert secrets.mask_value("abc123") == "****"  # too short to show any of it
    assert secrets.mask_value(secrets.mask_value(f"Bearer {KEY}")) == "Bearer sk-l****"
    assert secrets.mask_value("$OPENAI_API_KEY") == "$OPENAI_API_KEY"


def test_mask_headers_body_url_buffer():
    h = secrets.mask_headers({"Authorization": f"Bearer {KEY}", "X-Api-Key": KEY,
                              "content-type": "application/json"})
    assert h == {"Authorization": "Bearer sk-l****", "X-Api-Key": "sk-l****",
                 "content-type": "application/json"}
    b = secrets.mask_body({"api_key": KEY, "max_tokens": 5, "n_keep": 3,
                           "messages": [{"role": "user", "content": f"my key is {KEY}"}],
                           "auth": {"accessToken": KEY}})
    assert b["api_key"] == "sk-l****" and b["auth"]["accessToken"] == "sk-l****"
    assert b["max_tokens"] == 5 and b["n_keep"] == 3
    assert KEY in b["messages"][0]["content"]  # message text is the user's, untouched

    class Ordered(dict):
        pass

    kept = secrets.mask_body([Ordered(role="user", api_key=KEY)])[0]
    assert type(kept) is Ordered and kept == {"role": "user", "api_key": "sk-l****"}
    assert (secrets.mask_url(f"https://u:pw@h/v1?alt=sse&key={GKEY}#x")
            == "https://u:****@h/v1?alt=sse&key=AIza****#x")
    buf = secrets.mask_buffer(f'!>Authorization Bearer {KEY}\n!:api_key "{KEY}"\n'
                              f"!api https://h/v1?key={GKEY}\n!:max_tokens 9\nhi {KEY}")
    assert buf.splitlines() == ["!>Authorization Bearer sk-l****", '!:api_key "sk-l****"',
                                "!api https://h/v1?key=AIza****", "!:max_tokens 9",
                                f"hi {KEY}"]


# ---------------------------------------------------------------- recording


def test_record_outcome_stores_everything_masked(data_dir):
    req = chat_request()
    started = time.time() - 1
    ident = log.record_outcome(req, StandInAdapter(req), ok_outcome(), started=started)
    row = log.get(ident)
    assert row["status"] == "ok" and row["exit_code"] == 0 and row["stop_reason"] == "stop"
    assert row["reply"] == "A small monkey with a striped tail."
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (21, 9, 4)
    assert (row["prompt_ms"], row["predicted_ms"]) == (12.5, 80.25)
    assert (row["first_token_s"], row["elapsed_s"]) == (0.05, 0.4)
    assert (row["model"], row["profile"], row["backend"], row["mode"]) == (
        "smollm2", "local", "openai", "chat")
    assert row["profiles"] == ["base", "local"]
    assert row["title"] == "What is a marmoset?"
    import hashlib

    assert row["buffer_sha256"] == hashlib.sha256(req.text.encode()).hexdigest()
    created = datetime.fromisoformat(row["created"].replace("Z", "+00:00"))
    assert abs(created.timestamp() - started) < 0.01 and created.tzinfo == timezone.utc
    from limner import __version__

    assert row["version"] == __version__
    # Secrets: header, x-api-key, body api_key, ?key= in the URL, the buffer's lines.
    assert row["request_headers"]["Authorization"] == "Bearer sk-l****"
    assert row["request_headers"]["x-api-key"] == "sk-l****"
    assert row["request_body"]["api_key"] == "sk-l****"
    assert row["request_url"].endswith("?key=AIza****")
    assert row["request_body"]["messages"][1]["content"] == "What is a marmoset?\nAnswer briefly."
    raw = (data_dir / "limner.db").read_bytes() + (
        (data_dir / "limner.db-wal").read_bytes() if (data_dir / "limner.db-wal").exists() else b"")
    assert KEY.encode() not in raw and GKEY.encode() not in raw


def test_failure_and_broken_describe_still_logged(data_dir):
    req = chat_request()
    out = Outcome(status="partial", exit_code=1, text="A small",
                  failure=Failure("disconnect", "the server closed the stream", "retry", status=None),
                  elapsed_s=0.2)
    ident = log.record_outcome(req, StandInAdapter(req, broken=True), out, started=time.time())
    row = log.get(ident)
    assert row["status"] == "partial" and row["error_kind"] == "disconnect"
    assert row["error_message"] == "the server closed the stream" and row["error_hint"] == "retry"
    # describe() failed, so the request comes from the Request itself, still masked.
    assert row["request_url"].startswith("http://127.0.0.1:9/")
    assert row["request_headers"]["Authorization"] == "Bearer sk-l****"
    assert row["request_body"]["api_key"] == "sk-l****"
    assert row["request_body"]["messages"][0]["role"] == "system"


def test_no_log_env_skips(data_dir, monkeypatch):
    monkeypatch.setenv("LIMNER_NO_LOG", "1")
    req = chat_request()
    assert log.record_outcome(req, StandInAdapter(req), ok_outcome()) is None
    assert not (data_dir / "limner.db").exists()


def test_record_dict_for_other_callers(data_dir):
    ident = log.record({"status": "error", "source": "eval",
                        "request_body": {"prompt": "def add(a, b):", "token": KEY},
                        "reply": "", "error_kind": "http", "http_status": 500,
                        "suite": "humaneval", "task": 7})
    row = log.get(ident)
    assert row["source"] == "eval" and row["http_status"] == 500
    assert row["request_text"] == "def add(a, b):" and row["title"] == "def add(a, b):"
    assert row["request_body"]["token"] == "sk-l****"
    assert row["extra"] == {"suite": "humaneval", "task": 7}  # unknown keys kept, not lost
    # created in any common form is stored as fixed-width UTC, so it sorts as text.
    for given in ("2025-03-04 05:06:07", "2025-03-04T06:06:07+01:00", 1741064767.0):
        assert log.get(log.record({"status": "ok", "created": given}))["created"] == (
            "2025-03-04T05:06:07.000000Z")
    with pytest.raises(ValueError):
        log.record({"status": "fine"})


def test_list_filters_and_iter_range(data_dir):
    days = ["2025-01-01", "2025-01-02", "2025-01-03"]
    for i in range(9):
        log.record({"status": "ok" if i % 3 else "error", "model": f"m{i % 2}",
                    "created": f"{days[i // 3]}T10:00:0{i}.000000Z",
                    "request_body": {"messages": [{"role": "user", "content": f"q{i}"}]},
                    "reply": f"r{i}"})
    newest = log.list(limit=4)
    assert [r["title"] for r in newest] == ["q8", "q7", "q6", "q5"]
    assert {r["title"] for r in log.list(status="error")} == {"q0", "q3", "q6"}
    assert {r["title"] for r in log.list(model="m1")} == {"q1", "q3", "q5", "q7"}
    day2 = log.list(since="2025-01-02T00:00:00.000000Z", until="2025-01-03T00:00:00.000000Z")
    assert [r["title"] for r in day2] == ["q5", "q4", "q3"]
    every = [r["title"] for r in log.iter_range(batch=2)]
    assert every == [f"q{i}" for i in range(9)]  # oldest first, across batches
    ids = [r["id"] for r in log.list(limit=100)]
    part = [r["title"] for r in log.iter_range(start_id=min(ids) + 2, end_id=min(ids) + 4,
                                               status="ok", batch=1)]
    assert part == ["q2", "q4"]


def test_search_prompt_and_reply_words(data_dir):
    a = log.record({"status": "ok", "reply": "Capybaras are the largest rodents.",
                    "request_body": {"messages": [{"role": "user", "content": "big rodent?"}]}})
    b = log.record({"status": "ok", "reply": "Use a dict.",
                    "request_body": {"messages": [{"role": "user",
                                                   "content": "How do I memoize in Python?"}]}})
    assert [r["id"] for r in log.search("capybaras")] == [a]  # a word of a reply
    assert [r["id"] for r in log.search("memoize")] == [b]  # a word of a prompt
    assert [r["id"] for r in log.search("rodent*")] == [a]
    hit = log.search("capybaras")[0]
    assert "[Capybaras]" in hit["snippet"]
    assert log.search("zebra") == []
    # The index follows edits and deletions made later (a rating tool, a purge).
    db = sqlite3.connect(data_dir / "limner.db")
    with db:
        db.execute("UPDATE exchanges SET reply = 'Use functools.cache.' WHERE id = ?", (b,))
        db.execute("DELETE FROM exchanges WHERE id = ?", (a,))
    db.close()
    assert [r["id"] for r in log.search("functools")] == [b]
    assert log.search("dict") == [] and log.search("capybaras") == []
    for bad in ['"unclosed', "foo AND", "nosuchcolumn: x"]:
        with pytest.raises(log.LogQueryError) as e:
            log.search(bad)
        assert "FTS5" in e.value.hint and e.value.exit_code == 2


def test_unwritable_location_raises_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LIMNER_DATA_DIR", str(blocker / "data"))
    req = chat_request()
    with pytest.raises(log.LogError) as e:
        log.record_outcome(req, StandInAdapter(req), ok_outcome())
    assert str(blocker / "data" / "limner.db") in e.value.message
    assert "--no-log" in e.value.hint


def test_damaged_file_raises_clear_error(data_dir):
    (data_dir / "limner.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(log.LogError) as e:
        log.record({"status": "ok"})
    assert "not a database" in e.value.message


def test_reading_before_anything_is_logged(data_dir):
    assert log.list() == [] and log.search("x") == [] and log.get(1) is None
    assert not (data_dir / "limner.db").exists()  # reading creates nothing


def test_schema_version_and_a_later_migration(data_dir, monkeypatch):
    first = log.record({"status": "ok", "reply": "before"})
    db = sqlite3.connect(data_dir / "limner.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == log.SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    log.close()

    def m_add_rating(conn):
        conn.execute("ALTER TABLE exchanges ADD COLUMN rating INTEGER")

    monkeypatch.setattr(log, "MIGRATIONS", [*log.MIGRATIONS, m_add_rating])
    monkeypatch.setattr(log, "SCHEMA_VERSION", len(log.MIGRATIONS))
    assert log.get(first)["rating"] is None and log.get(first)["reply"] == "before"
    db = sqlite3.connect(data_dir / "limner.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(log.MIGRATIONS)
    db.close()


# ---------------------------------------------------------------- many writers

WRITERS, EACH = 8, 200


def _writer(data_dir: str, n: int, go) -> None:
    os.environ["LIMNER_DATA_DIR"] = data_dir
    from limner import log as store

    go.wait()
    for i in range(EACH):
        store.record({"status": "ok", "reply": f"writer {n} row {i}", "model": f"w{n}"})


def test_parallel_writer_processes_lose_nothing(data_dir, capsys):
    ctx = multiprocessing.get_context("spawn")  # real, separate interpreters
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(data_dir), n, go)) for n in range(WRITERS)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the interpreters start, so the writes really overlap
    t0 = time.monotonic()
    go.set()
    for p in procs:
        p.join(timeout=120)
    wall = time.monotonic() - t0
    assert [p.exitcode for p in procs] == [0] * WRITERS
    rows = list(log.iter_range())
    assert len(rows) == WRITERS * EACH
    assert len({r["id"] for r in rows}) == WRITERS * EACH
    for n in range(WRITERS):
        mine = [r["reply"] for r in rows if r["model"] == f"w{n}"]
        assert mine == [f"writer {n} row {i}" for i in range(EACH)]  # in order, none lost
    assert len(log.search('"row 199"', limit=50)) == WRITERS  # the index kept up too
    with capsys.disabled():
        print(f"\n[log] {WRITERS} processes x {EACH} records: {wall:.2f} s wall")
