"""`limner logs` through the real command line, in subprocesses, on a real log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from limner import log

KEY = "sk-live-0123456789abcdef"
BUFFER = f"!>Authorization Bearer {KEY}\n!user\nName a rodent.\nJust one.\n"


def limner(data_dir, *args, stdin: str | None = None):
    env = dict(os.environ, LIMNER_DATA_DIR=str(data_dir), COLUMNS="120")
    env.pop("LIMNER_NO_LOG", None)
    return subprocess.run([sys.executable, "-m", "limner.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=60)


def logs(data_dir, *args):
    return limner(data_dir, "logs", *args)


def no_traceback(p):
    assert "Traceback" not in p.stdout + p.stderr


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """A log with three exchanges, written the way other callers write it."""
    monkeypatch.setenv("LIMNER_DATA_DIR", str(tmp_path))
    old = (datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ids = [
        log.record({"status": "ok", "created": old, "model": "qwen", "mode": "chat",
                    "reply": "An old answer about walruses.",
                    "request_body": {"messages": [{"role": "user", "content": "walrus facts"}]}}),
        log.record({"status": "error", "model": "qwen", "error_kind": "refused",
                    "error_message": "connection refused", "reply": "",
                    "request_url": "http://127.0.0.1:9/v1/chat/completions",
                    "request_body": {"messages": [{"role": "user", "content": "hello?"}]}}),
        log.record({"status": "ok", "model": "smollm2", "profile": "local", "mode": "chat",
                    "buffer": BUFFER, "reply": "The capybara.", "stop_reason": "stop",
                    "prompt_tokens": 17, "completion_tokens": 4, "elapsed_s": 0.31,
                    "request_url": "http://127.0.0.1:8080/v1/chat/completions?api_key=" + KEY,
                    "request_headers": {"Authorization": f"Bearer {KEY}"},
                    "request_body": {"model": "smollm2", "messages": [
                        {"role": "user", "content": "Name a rodent.\nJust one."}]}}),
    ]
    log.close()
    return tmp_path, ids


def test_list_text_and_json(filled):
    d, (old, err, new) = filled
    p = logs(d)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert [int(ln.split()[0]) for ln in lines] == [new, err, old]  # newest first
    assert "smollm2" in lines[0] and "17+4" in lines[0] and "Name a rodent." in lines[0]
    assert "error" in lines[1] and "hello?" in lines[1]
    rows = json.loads(logs(d, "--json").stdout)
    assert [r["id"] for r in rows] == [new, err, old]
    assert rows[0]["completion_tokens"] == 4 and rows[0]["title"] == "Name a rodent."
    assert [r["id"] for r in json.loads(logs(d, "--limit", "1", "--json").stdout)] == [new]
    assert [r["id"] for r in json.loads(logs(d, "list", "--status", "error", "--json").stdout)] == [err]
    assert [r["id"] for r in json.loads(logs(d, "--since", "1d", "--json").stdout)] == [new, err]
    assert [r["id"] for r in json.loads(logs(d, "--until", "2d", "--json").stdout)] == [old]
    created = datetime.fromisoformat(rows[1]["created"].replace("Z", "+00:00"))
    today = created.astimezone().strftime("%Y-%m-%d")  # a bare date: that whole local day
    assert [r["id"] for r in json.loads(logs(d, "--since", today, "--until", today,
                                             "--json").stdout)] == [new, err]
    assert [r["id"] for r in json.loads(logs(d, "--model", "local", "--json").stdout)] == [new]


def test_show_text_json_and_buffer(filled):
    d, (_, err, new) = filled
    p = logs(d, "show", str(new))
    assert p.returncode == 0, p.stderr
    assert "status:   ok (stop: stop)" in p.stdout
    assert "prompt 17" in p.stdout and "completion 4" in p.stdout
    assert "Authorization: Bearer sk-l****" in p.stdout
    assert "api_key=sk-l****" in p.stdout
    assert p.stdout.rstrip().endswith("== reply ==\nThe capybara.")
    assert KEY not in p.stdout
    e = logs(d, "show", str(err))
    assert "error:    refused: connection refused" in e.stdout
    row = json.loads(logs(d, "show", str(new), "--json").stdout)
    assert row["id"] == new and row["reply"] == "The capybara."
    assert row["request_headers"] == {"Authorization": "Bearer sk-l****"}
    buf = logs(d, "show", str(new), "--buffer").stdout
    masked = BUFFER.replace(KEY, "sk-l****")
    assert buf == masked.rstrip("\n") + "\n\n!assistant\n\nThe capybara.\n"
    # No buffer stored (another caller logged it): one is rebuilt from the messages.
    assert logs(d, "show", str(err), "--buffer").stdout == "!user\n\nhello?\n\n!assistant\n\n\n"


def test_search_text_json_and_bad_query(filled):
    d, (old, _, new) = filled
    p = logs(d, "search", "walruses")  # a reply word
    assert p.returncode == 0 and p.stdout.split()[0] == str(old)
    assert "[walruses]" in p.stdout
    hits = json.loads(logs(d, "search", "rodent", "--json").stdout)  # a prompt word
    assert [h["id"] for h in hits] == [new] and "[rodent]" in hits[0]["snippet"]
    none = logs(d, "search", "zebra")
    assert none.returncode == 0 and none.stdout == "" and "no exchange matches" in none.stderr
    bad = logs(d, "search", '"unclosed AND')
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("!error\n\ncannot search for") and "FTS5" in bad.stderr
    no_traceback(bad)


def test_errors_are_clear(filled, tmp_path_factory):
    d, _ = filled
    for args, code, words in [
        (("show", "999"), 1, "no exchange with id 999"),
        (("show", "abc"), 2, "is not an exchange id"),
        (("--since", "last tuesday"), 2, "cannot read the time"),
    ]:
        p = logs(d, *args)
        assert p.returncode == code and p.stderr.startswith("!error") and words in p.stderr
        no_traceback(p)
    assert logs(d, "--status", "bogus").returncode == 2
    broken = tmp_path_factory.mktemp("broken")
    (broken / "limner.db").write_bytes(b"garbage, not a database" * 200)
    p = logs(broken)
    assert p.returncode == 1 and "file is not a database" in p.stderr
    no_traceback(p)


def test_path_and_empty_log(tmp_path):
    assert logs(tmp_path, "path").stdout == f"{tmp_path / 'limner.db'}\n"
    p = logs(tmp_path)
    assert p.returncode == 0 and p.stdout == "" and "no exchanges logged yet" in p.stderr
    assert json.loads(logs(tmp_path, "--json").stdout) == []
    assert not (tmp_path / "limner.db").exists()


def test_default_path_follows_xdg(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LIMNER_DATA_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-m", "limner.cli", "logs", "path"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.stdout == f"{tmp_path / 'limner' / 'limner.db'}\n"


# ------------------------------------------------ end to end: `limner < buffer`
# These use conftest's fault server (real HTTP on loopback, OpenAI SSE) and
# run_limner (the real command). conftest turns logging off by default;
# LIMNER_NO_LOG="" turns it back on.

LOGGING = {"LIMNER_NO_LOG": ""}


def _chat(api: str, *lines: str) -> str:
    return "".join(f"{x}\n" for x in (f"!api {api}", *lines, "!user", "Name a colour."))


def test_a_real_exchange_is_logged_ok(run_limner, fault_server, limner_env):
    import hashlib

    data = limner_env["LIMNER_DATA_DIR"]
    buf = _chat(fault_server.url("ok"), f"!>Authorization Bearer {KEY}", "!:model tiny")
    proc = run_limner(buf, env=LOGGING)
    assert proc.returncode == 0 and "could not log" not in proc.stderr
    rows = json.loads(logs(data, "--json").stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["exit_code"] == 0 and row["stop_reason"] == "stop"
    assert row["reply"] == "Hello, this is the fault server."
    assert (row["prompt_tokens"], row["completion_tokens"]) == (17, 8)  # the server's usage
    assert row["model"] == "tiny" and row["backend"] == "openai" and row["mode"] == "chat"
    assert row["request_url"] == fault_server.url("ok") + "/chat/completions"
    assert row["request_headers"]["Authorization"] == "Bearer sk-l****"
    assert row["request_body"]["messages"] == [{"role": "user", "content": "Name a colour."}]
    assert row["buffer_sha256"] == hashlib.sha256(buf.encode()).hexdigest()
    assert row["elapsed_s"] > 0 and row["first_token_s"] is not None
    # The key went over the wire but never into the log.
    sent = fault_server.requests[-1][1]
    assert any(v == f"Bearer {KEY}" for v in sent.values())
    assert KEY not in logs(data, "show", str(row["id"]), "--json").stdout
    # --buffer gives back what the editor held after the reply (key masked).
    again = logs(data, "show", str(row["id"]), "--buffer").stdout
    assert again == buf.replace(KEY, "sk-l****").rstrip("\n") + proc.stdout + "\n"
    assert [r["id"] for r in json.loads(logs(data, "search", "fault", "--json").stdout)] == [row["id"]]


def test_failures_are_logged_with_their_status(run_limner, fault_server, limner_env):
    data = limner_env["LIMNER_DATA_DIR"]
    assert run_limner(_chat(fault_server.url("status:401")), env=LOGGING).returncode != 0
    assert run_limner(_chat(fault_server.url("disconnect:3")), env=LOGGING).returncode != 0
    partial, error = json.loads(logs(data, "--json").stdout)
    assert error["status"] == "error" and error["http_status"] == 401 and error["error_kind"]
    assert partial["status"] == "partial" and partial["reply"] and partial["error_kind"]
    assert [r["id"] for r in json.loads(logs(data, "--status", "error", "--json").stdout)] == [
        error["id"]]


def test_nolog_and_no_log_are_not_logged(run_limner, fault_server, limner_env):
    data = limner_env["LIMNER_DATA_DIR"]
    assert run_limner(_chat(fault_server.url("ok"), "!nolog"), env=LOGGING).returncode == 0
    assert run_limner(_chat(fault_server.url("ok")), "--no-log", env=LOGGING).returncode == 0
    assert run_limner(_chat(fault_server.url("ok")), env={"LIMNER_NO_LOG": "1"}).returncode == 0
    assert json.loads(logs(data, "--json").stdout) == []
    assert run_limner(_chat(fault_server.url("ok")), env=LOGGING).returncode == 0
    assert len(json.loads(logs(data, "--json").stdout)) == 1


def test_unwritable_log_keeps_the_reply(run_limner, fault_server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_limner(_chat(fault_server.url("ok")),
                      env={**LOGGING, "LIMNER_DATA_DIR": str(blocker / "data")})
    assert proc.returncode == 0
    assert proc.stdout == "\n\n!assistant\n\nHello, this is the fault server."
    assert "could not log" in proc.stderr and str(blocker / "data") in proc.stderr
    no_traceback(proc)
