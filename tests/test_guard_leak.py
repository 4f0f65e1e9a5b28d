"""Issue 11's leak test: no canary secret reaches a remote server, the log, stderr or temp files.

The recording server (tests/leakserver.py) listens on a 10.x address inside
a network namespace this module creates, reached over a veth pair from a
second namespace where `limner` runs: the destination really is remote, and
nothing outside the two namespaces is touched. The server also answers 429
with Retry-After, 500, resets, slow streams and a redirect, and can echo the
request back as the reply. Buffers, system prompts, turns, `!context` files
and FIM prefixes/suffixes are seeded with canaries: the rules' own true
examples, filled with random characters (hypothesis draws which and where).

Pass: zero canary bytes in what the server received, in the SQLite files
(raw DB, WAL and journal bytes), in stderr and in TMPDIR; block mode with a
provider token or key exits non-zero with nothing sent.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("re2", reason="the guard extra (google-re2) is not installed")
pytest.importorskip("pathspec", reason="the guard extra (pathspec) is not installed")

from conftest import limner_command  # noqa: E402
from limner import guard  # noqa: E402

HERE = Path(__file__).resolve().parent
RULES = guard.load()


@dataclass
class Net:
    ns: str  # where limner runs
    host: str  # the server's address, seen from ns
    port: int
    record: Path

    def received(self) -> bytes:
        return self.record.read_bytes() if self.record.exists() else b""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the leak test creates network namespaces, which needs root")
    if not shutil.which("ip"):
        pytest.skip("iproute2's `ip` is not installed (apt-get install iproute2)")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b, va, vb = f"lmA{tag}", f"lmB{tag}", f"vlA{tag}", f"vlB{tag}"
    sub = f"10.77.{os.getpid() % 250}"
    record = tmp_path_factory.mktemp("leak") / "received.bin"
    server = None
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", va, "type", "veth", "peer", "name", vb)
        _ip("link", "set", va, "netns", ns_a)
        _ip("link", "set", vb, "netns", ns_b)
        _ip("-n", ns_a, "addr", "add", f"{sub}.1/30", "dev", va)
        _ip("-n", ns_b, "addr", "add", f"{sub}.2/30", "dev", vb)
        for ns, dev in ((ns_a, va), (ns_b, vb)):
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as e:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot create a network namespace: {getattr(e, 'stderr', e)}")
    try:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns_b, sys.executable, str(HERE / "leakserver.py"),
             f"{sub}.2", str(record)], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        yield Net(ns_a, f"{sub}.2", port, record)
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for ns in (ns_a, ns_b):  # deleting a namespace deletes its end of the veth
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --------------------------------------------------------------- canaries


def canary(rule_id: str, which: int, seed: str) -> tuple[str, list[str], bool]:
    """(a line holding the secret, the secret values, any of them high confidence)."""
    rule = RULES.by_id(rule_id)
    text = guard.expand(rule.true[which % len(rule.true)], f"leak:{seed}")
    found = guard.scan(text)
    return text, [f.secret for f in found], any(f.confidence == "high" for f in found)


def pieces(secret: str) -> list[bytes]:
    """What must not appear: the value, its JSON-escaped form, and each long chunk of it."""
    out = {secret, json.dumps(secret)[1:-1]}
    out.update(p for p in re.split(r"[\s\\\"'`]+", secret) if len(p) >= 12 and "-----" not in p)
    return [p.encode() for p in out if p]


def leaks(secrets: list[str], blob: bytes) -> list[str]:
    return [p.decode()[:12] + "…" for s in secrets for p in pieces(s) if p in blob]


def buffer_for(url: str, mode: str, placed: list[tuple[str, str]], tmp: Path) -> str:
    """A buffer with each canary line in its slot; `!context` files written to tmp."""
    by = {slot: [] for slot in ("system", "user", "assistant", "context", "walk", "prefix", "suffix")}
    for slot, line in placed:
        by[slot].append(line)
    head = f"!api {url}\n" + (f"!secrets {mode}\n" if mode != "default" else "")
    if by["prefix"] or by["suffix"]:
        pre = "\n".join(["def f():"] + [f"    # {ln}" for ln in by["prefix"] + by["system"]])
        suf = "\n".join([f"# {ln}" for ln in by["suffix"] + by["user"]] + ["print(f())"])
        return head + "!backend llamacpp\n" + pre + "\n!infill\n" + suf + "\n"
    ctx = ""
    if by["context"]:
        (tmp / "notes").mkdir(exist_ok=True)
        (tmp / "notes" / "deploy.txt").write_text("deploy notes\n" + "\n".join(by["context"]) + "\n")
        ctx += "!context notes/deploy.txt\n"
    if by["walk"]:
        (tmp / "src" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp / "src" / "sub" / "conf.py").write_text("\n".join(f"# {ln}" for ln in by["walk"]) + "\n")
        (tmp / "src" / ".env").write_text("\n".join(by["walk"]) + "\n")  # denied: never read
        ctx += "!context src .py .env\n"
    text = head + "\n".join(by["system"]) + "\n!user\nPlease check this.\n" + ctx
    text += "\n".join(by["user"]) + "\n"
    if by["assistant"]:
        text += "!assistant\n" + "\n".join(by["assistant"]) + "\n!user\nAnd now?\n"
    return text


def run(net: Net, buffer: str, tmp: Path, config: str = "") -> tuple[subprocess.CompletedProcess, bytes]:
    """limner in the client namespace; returns (process, the bytes the server received)."""
    (tmp / "tmp").mkdir(exist_ok=True)
    (tmp / "cfg" / "limner").mkdir(parents=True, exist_ok=True)
    (tmp / "cfg" / "limner" / "config.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    env.update(LIMNER_DATA_DIR=str(tmp / "data"), XDG_CONFIG_HOME=str(tmp / "cfg"),
               XDG_DATA_HOME=str(tmp / "xdg"), TMPDIR=str(tmp / "tmp"), LIMNER_TIMEOUT="10")
    before = len(net.received())
    proc = subprocess.run(["ip", "netns", "exec", net.ns, *limner_command()], input=buffer.encode(),
                          capture_output=True, env=env, cwd=tmp, timeout=60)
    return proc, net.received()[before:]


def stored(tmp: Path) -> bytes:
    """Every byte of the log's files (DB, WAL, journal, shm) and of TMPDIR."""
    blob = b""
    for d in (tmp / "data", tmp / "tmp"):
        for f in sorted(d.rglob("*")) if d.exists() else []:
            if f.is_file():
                blob += f.read_bytes()
    return blob


def assert_no_leak(secrets, proc, received, tmp):
    assert not leaks(secrets, received), "the server received a canary"
    assert not leaks(secrets, proc.stderr), "stderr holds a canary"
    assert not leaks(secrets, stored(tmp)), "the log or a temp file holds a canary"
    assert b"Traceback" not in proc.stderr


# --------------------------------------------------------------- fixed cases

SERVER_MODES = ["ok", "echo", "retry", "error", "reset", "slow", "redirect"]


@pytest.mark.parametrize("server_mode", SERVER_MODES)
def test_block_mode_sends_nothing_and_exits_non_zero(net, tmp_path, server_mode):
    line, secrets, high = canary("github-token", 0, f"block-{server_mode}")
    gline, gsecrets, _ = canary("generic-secret", 0, f"block-{server_mode}")
    assert high and secrets and gsecrets
    buf = buffer_for(f"http://{net.host}:{net.port}/{server_mode}/v1", "default",
                     [("user", line), ("context", gline)], tmp_path)
    proc, received = run(net, buf, tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert received == b"", "a blocked request reached the server"
    out = proc.stdout.decode()
    assert "!error" in out and "github-token" in out and "buffer:" in out and "!allow-secrets" in out
    assert_no_leak(secrets + gsecrets, proc, received, tmp_path)


@pytest.mark.parametrize("server_mode", SERVER_MODES)
def test_redact_mode_sends_placeholders_only(net, tmp_path, server_mode):
    placed, secrets = [], []
    for slot, rule in (("system", "aws-access-key-id"), ("user", "github-token"),
                       ("assistant", "slack-token"), ("context", "private-key"),
                       ("walk", "generic-secret")):
        line, found, _ = canary(rule, 0, f"redact-{server_mode}-{slot}")
        assert found, rule
        placed.append((slot, line))
        secrets += found
    buf = buffer_for(f"http://{net.host}:{net.port}/{server_mode}/v1", "redact", placed, tmp_path)
    proc, received = run(net, buf, tmp_path)
    assert received, f"nothing reached the server: {proc.stdout}"
    assert b"[[SECRET:" in received
    assert proc.returncode == (0 if server_mode in ("ok", "echo", "slow") else 1), proc.stdout
    assert b"src/.env" in proc.stderr  # the walk left the credential file out, and said so
    assert_no_leak(secrets, proc, received, tmp_path)


def test_fim_prefix_and_suffix_are_redacted(net, tmp_path):
    a, sa, _ = canary("openai-api-key", 0, "fim-a")
    b, sb, _ = canary("generic-secret", 1, "fim-b")
    buf = buffer_for(f"http://{net.host}:{net.port}/echo/v1", "redact",
                     [("prefix", a), ("suffix", b)], tmp_path)
    proc, received = run(net, buf, tmp_path)
    assert b"input_prefix" in received and b"[[SECRET:" in received, proc.stdout
    assert_no_leak(sa + sb, proc, received, tmp_path)


def test_a_trusted_host_gets_the_text_but_the_log_does_not(net, tmp_path):
    line, secrets, _ = canary("github-token", 1, "trusted")
    buf = buffer_for(f"http://{net.host}:{net.port}/echo/v1", "default", [("user", line)], tmp_path)
    proc, received = run(net, buf, tmp_path, f'[guard]\ntrusted_hosts = ["{net.host}"]\n')
    assert proc.returncode == 0, proc.stdout
    assert leaks(secrets, received), "a trusted host gets the request as written"
    assert not leaks(secrets, stored(tmp_path)) and not leaks(secrets, proc.stderr)


def test_no_re2_refuses_the_remote_send(net, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "re2.py").write_text("raise ImportError('no re2 in this test')\n")
    line, secrets, _ = canary("generic-secret", 2, "nore2")
    buf = buffer_for(f"http://{net.host}:{net.port}/ok/v1", "redact", [("user", line)], tmp_path)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{fake}:{env_path}" if env_path else str(fake)
    try:
        proc, received = run(net, buf, tmp_path)
    finally:
        os.environ["PYTHONPATH"] = env_path
        if not env_path:
            del os.environ["PYTHONPATH"]
    assert proc.returncode == 1 and received == b""
    assert "pip install 'limner[guard]'" in proc.stdout.decode()
    assert_no_leak(secrets, proc, received, tmp_path)


# --------------------------------------------------------------- property-based

try:
    from hypothesis import HealthCheck, assume, given, settings, strategies as st
except ImportError:  # pragma: no cover - the dev extra brings it
    given = None

SLOTS = ["system", "user", "assistant", "context", "walk"]
RULE_IDS = [r.id for r in RULES.rules]

if given is not None:
    @settings(max_examples=int(os.environ.get("LIMNER_LEAK_EXAMPLES", "20")), deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=st.data())
    def test_property_no_canary_leaves(net, data):
        mode = data.draw(st.sampled_from(["default", "block", "redact"]), "mode")
        server_mode = data.draw(st.sampled_from(SERVER_MODES), "server")
        n = data.draw(st.integers(1, 3), "canaries")
        fim = data.draw(st.booleans(), "fim")
        placed, secrets, high = [], [], False
        for i in range(n):
            rule = data.draw(st.sampled_from(RULE_IDS), f"rule{i}")
            which = data.draw(st.integers(0, 5), f"example{i}")
            seed = data.draw(st.text("abcdefghij0123456789", min_size=4, max_size=8), f"seed{i}")
            line, found, is_high = canary(rule, which, seed)
            assume(found)
            slot = data.draw(st.sampled_from(["prefix", "suffix"] if fim else SLOTS), f"slot{i}")
            placed.append((slot, line))
            secrets += found
            high = high or is_high
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            buf = buffer_for(f"http://{net.host}:{net.port}/{server_mode}/v1", mode, placed, tmp)
            proc, received = run(net, buf, tmp)
            if mode != "redact" and high:
                assert proc.returncode != 0 and received == b""
            assert_no_leak(secrets, proc, received, tmp)
