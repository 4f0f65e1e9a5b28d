"""The guard wired in (issue 11, phase 2): real `limner` runs against the fault server.

The fault server is on loopback; config.toml's `remote_hosts` makes limner
treat it as the remote API it stands in for (the netns leak test covers a
really remote address). Each test sends to its own path, so the requests it
caused are the ones recorded under that path.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

pytest.importorskip("re2", reason="the guard extra (google-re2) is not installed")
pytest.importorskip("pathspec", reason="the guard extra (pathspec) is not installed")

from conftest import limner_command  # noqa: E402
from limner import buffer, guard  # noqa: E402
from limner.guard import egress  # noqa: E402

GH = guard.expand("ghp_{{alnum:36}}", "egress-gh")
PW = guard.expand("{{alnum:24}}", "egress-pw")


@pytest.fixture
def remote(fault_server, limner_env, tmp_path):
    """(url, requests-to-it) for a fresh path on the fault server, treated as remote."""
    cfg = Path(limner_env["XDG_CONFIG_HOME"]) / "limner"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "config.toml").write_text('[guard]\nremote_hosts = ["127.0.0.1"]\n')
    tag = uuid.uuid4().hex[:8]
    url = fault_server.url(f"ok:{tag}")

    def sent():
        return [body for path, _, body in fault_server.requests if f":{tag}/" in path]

    return url, sent


@pytest.fixture
def limner(limner_env, tmp_path):
    def run(text: str, *args: str, log: bool = False):
        env = dict(limner_env)
        if log:
            env.pop("LIMNER_NO_LOG", None)
        p = subprocess.run(limner_command() + list(args), input=text.encode(), capture_output=True,
                           env=env, cwd=tmp_path, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    return run


def test_a_provider_token_blocks_the_request(remote, limner):
    url, sent = remote
    code, out, err = limner(f"!api {url}\n!user\nhere: {GH}\n")
    fp = guard.fingerprint("github-token", GH)
    assert code == 1 and sent() == []
    assert "!error" in out and "line 3: not sent" in out
    assert "github-token (provider) at buffer:3" in out and f"!allow-secrets {fp}" in out
    assert GH not in out + err and "Traceback" not in err


@pytest.mark.parametrize("allow", ["fingerprint", "github-token"])
def test_allow_secrets_sends_it_as_written(remote, limner, allow):
    url, sent = remote
    entry = guard.fingerprint("github-token", GH) if allow == "fingerprint" else allow
    code, out, _ = limner(f"!api {url}\n!allow-secrets {entry}\n!user\nhere: {GH}\n")
    assert code == 0, out
    assert GH.encode() in sent()[0]


def test_generic_secrets_are_redacted_by_default(remote, limner):
    url, sent = remote
    code, out, _ = limner(f"!api {url}\n!user\ndb_password = \"{PW}\"\n")
    assert code == 0, out
    body = json.loads(sent()[0])
    assert body["messages"][0]["content"] == 'db_password = "[[SECRET:generic-secret:1]]"'


def test_redact_mode_numbers_placeholders_across_turns(remote, limner):
    url, sent = remote
    text = f"!api {url}\n!secrets redact\nsys {GH}\n!user\n{GH} again, password = \"{PW}\"\n"
    code, out, _ = limner(text)
    assert code == 0, out
    body = sent()[0].decode()
    assert GH not in body and PW not in body
    assert body.count("[[SECRET:github-token:1]]") == 2 and "[[SECRET:generic-secret:1]]" in body


def test_warn_sends_and_says_so_without_the_value(remote, limner):
    url, sent = remote
    code, out, err = limner(f"!api {url}\n!secrets warn\n!user\n{GH}\n")
    assert code == 0 and GH.encode() in sent()[0]
    assert "github-token" in err and GH not in err


def test_off_sends_as_written(remote, limner):
    url, sent = remote
    code, _, _ = limner(f"!api {url}\n!secrets off\n!user\n{GH}\n")
    assert code == 0 and GH.encode() in sent()[0]


def test_a_context_file_secret_names_the_file_and_its_line(remote, limner, tmp_path):
    url, sent = remote
    (tmp_path / "notes.txt").write_text(f"deploy\ntoken {GH}\n")
    code, out, _ = limner(f"!api {url}\n!user\nread this\n!context notes.txt\n")
    assert code == 1 and sent() == []
    assert "line 4: " in out and "at notes.txt:2" in out and GH not in out


def test_local_destination_is_sent_unchanged_but_never_logged(fault_server, limner, limner_env):
    tag = uuid.uuid4().hex[:8]
    code, out, _ = limner(f"!api {fault_server.url('ok:' + tag)}\n!user\n{GH} password = \"{PW}\"\n", log=True)
    assert code == 0, out
    assert GH.encode() in [b for p, _, b in fault_server.requests if tag in p][0]
    data = b"".join(f.read_bytes() for f in Path(limner_env["LIMNER_DATA_DIR"]).glob("limner.db*"))
    assert data and GH.encode() not in data and PW.encode() not in data


def test_the_log_records_the_directives_without_values(remote, limner, limner_env):
    url, _ = remote
    fp = guard.fingerprint("github-token", GH)
    code, out, _ = limner(f"!api {url}\n!secrets redact\n!allow-secrets {fp}\n!user\n"
                          f"{GH} password = \"{PW}\"\n", log=True)
    assert code == 0, out
    db = sqlite3.connect(Path(limner_env["LIMNER_DATA_DIR"]) / "limner.db")
    extra = json.loads(db.execute("SELECT extra FROM exchanges").fetchone()[0])
    g = extra["guard"]
    assert (g["mode"], g["destination"], g["allow"]) == ("redact", "remote", [fp])
    assert {(f["rule"], f["action"]) for f in g["findings"]} == {
        ("github-token", "allowed"), ("generic-secret", "redact")}
    assert PW not in json.dumps(extra)


def test_no_re2_refuses_remote_and_off_still_sends(remote, limner, limner_env, tmp_path):
    url, sent = remote
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "re2.py").write_text("raise ImportError('no re2 here')\n")
    limner_env["PYTHONPATH"] = str(fake)
    code, out, _ = limner(f"!api {url}\n!user\nhello\n")
    assert code == 1 and sent() == [] and "pip install 'limner[guard]'" in out
    code, out, _ = limner(f"!api {url}\n!secrets off\n!user\nhello\n")
    assert code == 0 and len(sent()) == 1


def test_denied_context_file_is_an_error_and_limnerignore_can_allow_it(limner, tmp_path):
    (tmp_path / ".env").write_text(f"TOKEN={GH}\n")
    code, out, _ = limner("!api http://127.0.0.1:9/v1\n!user\nx\n!context .env\n")
    assert code == 2 and "line 4: !context will not read .env" in out and ".limnerignore" in out
    assert GH not in out
    (tmp_path / ".limnerignore").write_text("!.env\n")
    assert not buffer.check("!user\nx\n!context .env\n", cwd=str(tmp_path), env={})


def test_walk_skips_denied_files_and_says_so(limner, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "src" / "id_rsa.py").write_text("key\n")
    req = buffer.parse("!user\nx\n!context src .py\n", cwd=str(tmp_path), env={})
    assert [f.name for f in req.context_files] == ["src/a.py"]
    issues = buffer.check("!user\nx\n!context src .py\n", cwd=str(tmp_path), env={})
    assert [(i.line, i.severity) for i in issues] == [(3, "warning")]
    assert "src/id_rsa.py" in issues[0].message


def test_check_reports_what_the_guard_would_do(remote, limner):
    url, sent = remote
    code, out, _ = limner(f"!api {url}\n!user\n{GH}\npassword = \"{PW}\"\n", "check")
    lines = out.splitlines()
    assert code == 1 and lines[0].startswith("3: guard: github-token (provider) in buffer:3 blocks")
    assert lines[1].startswith("4: warning: guard: generic-secret") and "redacted" in lines[1]
    code, out, _ = limner(f"!api {url}\n!secrets redact\n!user\n{GH}\n", "check")
    assert code == 0 and "would be redacted" in out and out.endswith("ok\n")
    assert sent() == [] and GH not in out


def test_logs_redact_rewrites_an_old_log(limner, limner_env):
    from limner import log

    path = Path(limner_env["LIMNER_DATA_DIR"]) / "limner.db"
    db = log.connect(path)  # the schema; then a row as an older limner stored it
    db.execute("INSERT INTO exchanges (created, buffer, request_text, reply, status, request_body) "
               "VALUES ('2026-01-01', ?, ?, ?, 'ok', ?)",
               (f"!user\n{GH}\n", f"{GH} and password = \"{PW}\"", f"echo {GH}",
                json.dumps({"messages": [{"role": "user", "content": GH}]})))
    log.close()
    code, out, err = limner("", "logs", "redact")
    assert code == 0 and "redacted 1 of 1" in out, err
    raw = b"".join(f.read_bytes() for f in path.parent.glob("limner.db*"))
    assert GH.encode() not in raw and PW.encode() not in raw
    code, out, _ = limner("", "logs", "search", "SECRET")
    assert code == 0 and "1" in out


def _client(first_host: str, seen: list, req, report):
    import httpx

    def handler(request):
        seen.append(str(request.url))
        if request.url.host == first_host:
            return httpx.Response(307, headers={"location": "https://203.0.113.7/v1/chat"})
        return httpx.Response(200, json={})

    url = f"https://{first_host}/v1/chat"
    return url, httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=True,
                             event_hooks={"request": [egress.hop_hook(req, url, {"m": GH}, report)]})


def test_a_redirect_to_a_remote_host_is_checked_again():
    req = buffer.parse(f"!api http://127.0.0.1:9/v1\n!user\n{GH}\n", env={})
    seen: list = []
    url, client = _client("127.0.0.1", seen, req, egress.Report("block", "x", local=True))
    with pytest.raises(egress.Blocked) as e:
        client.post(url, json={"m": GH})
    assert "redirected to https://203.0.113.7/v1/chat" in e.value.message
    assert seen == [url]  # the remote hop was never sent
    seen.clear()  # prepared for a remote host already: any hop may have it
    url, client = _client("198.51.100.1", seen, req, egress.Report("block", "x", local=False))
    assert client.post(url, json={}).status_code == 200 and len(seen) == 2


def test_serve_refuses_a_public_address_without_an_api_key(limner_env):
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        p = subprocess.run(limner_command() + ["serve", "--host", host, "--port", "0"],
                           capture_output=True, env=limner_env, timeout=60)
        assert p.returncode == 1, (host, p.stdout)
        assert b"without an API key" in p.stdout and b"--api-key" in p.stdout
        assert b"Traceback" not in p.stderr
