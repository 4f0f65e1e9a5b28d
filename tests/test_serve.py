"""`limner serve` on a real uvicorn on loopback, driven by the official `openai` client.

One real Engine (SmolLM2-135M for chat, Gemma 3 270M for completion and
infill) is shared by two servers: an open one with the default queue of 8
and one that requires an API key. Exchanges are logged to a private data
dir, which is how the disconnect test sees that the engine really stopped.

n_threads is pinned to 1: on a shared 2-core machine llama.cpp's spinning
thread barriers make 2 threads several times slower than 1.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-limner-test-0123456789"
CHAT = [{"role": "user", "content": "Name three colors."}]


class LiveServer:
    """create_app() on a real uvicorn, in a thread, on a free loopback port."""

    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private data dir (the log) and config dir (two broken registered models)."""
    from limner.engine import models

    gemma = models.resolve("gemma3-270m")[1]  # assembled where the user keeps it
    base = tmp_path_factory.mktemp("serve")
    data, config = base / "data", base / "config"
    (data / "models").mkdir(parents=True)
    # The log goes to the private dir; the bundled Gemma file is borrowed, not re-assembled.
    os.symlink(gemma, data / "models" / Path(gemma).name)
    config.mkdir()
    (base / "garbage.gguf").write_text("this is not a model\n")
    smol = models.resolve("smollm2-135m")[1]
    with open(smol, "rb") as src, open(base / "truncated.gguf", "wb") as dst:
        dst.write(src.read(2_000_000))  # a real header, most tensors missing
    (config / "models.toml").write_text(
        f'[models]\ngarbage = "{base / "garbage.gguf"}"\ntruncated = "{base / "truncated.gguf"}"\n')
    saved = {k: os.environ.get(k) for k in ("LIMNER_DATA_DIR", "LIMNER_CONFIG_DIR", "LIMNER_NO_LOG")}
    os.environ.update(LIMNER_DATA_DIR=str(data), LIMNER_CONFIG_DIR=str(config))
    os.environ.pop("LIMNER_NO_LOG", None)
    try:
        yield base
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def engine(env):
    from limner.engine.core import Engine

    e = Engine(n_threads=1, n_ctx=1024, max_models=3)
    yield e
    e.close()


@pytest.fixture(scope="module")
def server(engine):
    from limner.engine.serve import create_app

    s = LiveServer(create_app(engine))  # defaults: no key, max_queue 8
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed(engine):
    from limner.engine.serve import create_app

    s = LiveServer(create_app(engine, api_key=KEY))
    yield s
    s.stop()


def client(srv, key="unused", **kw) -> "openai.OpenAI":
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0,
                         timeout=kw.pop("timeout", 120), **kw)


# ---------------------------------------------------------------- the OpenAI routes


def test_models_lists_the_bundled_models_with_their_metadata(server):
    models = {m.id: m for m in client(server).models.list().data}
    assert {"smollm2-135m", "gemma3-270m"} <= set(models)
    assert "garbage" not in models  # not a GGUF: not offered
    smol = models["smollm2-135m"].model_dump()
    assert smol["object"] == "model" and smol["owned_by"] == "limner"
    assert smol["meta"]["architecture"] == "llama" and smol["meta"]["chat_template"] is True
    assert models["gemma3-270m"].model_dump()["meta"]["chat_template"] is False


def test_chat_without_streaming(server):
    r = client(server).chat.completions.create(model="smollm2-135m", messages=CHAT,
                                               max_tokens=8, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert r.model == "smollm2-135m"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8
    assert r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streaming_with_usage(server):
    stream = client(server).chat.completions.create(
        model="smollm2-135m", messages=CHAT, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert 0 < last.usage.completion_tokens <= 8
    # The stream carries exactly the tokens the usage counts (one chunk per token here).
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) <= last.usage.completion_tokens


def test_default_model_is_used_when_the_client_names_none(server):
    r = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                   json={"messages": CHAT, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["model"] == "smollm2-135m"


def test_completion_without_streaming_honours_stop(server):
    r = client(server).completions.create(model="gemma3-270m", prompt="def add(a, b):\n",
                                          max_tokens=24, temperature=0, stop=["\n\n"])
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    text = r.choices[0].text
    assert text and "\n\n" not in text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 24


def test_completion_with_a_suffix_fills_in_the_middle(server):
    r = client(server).completions.create(model="gemma3-270m", prompt="def double(x):\n    return ",
                                          suffix="\n\nprint(double(4))\n", max_tokens=4,
                                          temperature=0)
    assert r.choices[0].text and 0 < r.usage.completion_tokens <= 4
    # The log says it ran as fill-in-the-middle, not as a plain completion.
    from limner import log

    rows = []
    deadline = time.monotonic() + 20
    while not rows and time.monotonic() < deadline:
        rows = [x for x in log.list(limit=5) if x.get("mode") == "fim"]
        time.sleep(0.05)
    assert rows and "double" in rows[0]["request_body"]["prompt"]


def test_completion_streaming(server):
    chunks = list(client(server).completions.create(
        model="gemma3-270m", prompt="The days of the week are Monday,", max_tokens=6,
        temperature=0, stream=True))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


# ---------------------------------------------------------------- /infill


def _sse(lines) -> list[dict]:
    return [json.loads(ln[len("data: "):]) for ln in lines if ln.startswith("data: ")]


def test_infill_like_llama_server(server):
    body = {"input_prefix": "def area(width, height):\n    return ",
            "input_suffix": "\n\nprint(area(2, 3))\n", "n_predict": 6, "temperature": 0}
    r = httpx.post(server.url + "/infill", json=body, timeout=120)
    assert r.status_code == 200
    out = r.json()
    assert isinstance(out["content"], str) and out["stop"] is True
    assert 0 < out["tokens_predicted"] <= 6
    assert out["stop_type"] in ("eos", "limit", "word")
    t = out["timings"]
    assert t["predicted_n"] == out["tokens_predicted"] and t["predicted_ms"] > 0

    # input_extra reaches the model: the same request with a file in it evaluates more tokens.
    extra = dict(body, input_extra=[{"filename": "shapes.py", "text": "SQUARE = 4\n" * 10}])
    with_extra = httpx.post(server.url + "/infill", json=extra, timeout=120).json()
    assert with_extra["tokens_evaluated"] > out["tokens_evaluated"] + 20

    with httpx.stream("POST", server.url + "/infill", json=dict(body, stream=True),
                      timeout=120) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = _sse(s.iter_lines())
    assert events[-1]["stop"] is True and "timings" in events[-1]
    assert all(e["stop"] is False for e in events[:-1])
    assert "".join(e["content"] for e in events).strip()


# ---------------------------------------------------------------- keys and errors


def test_api_key_is_required_and_checked(keyed):
    with pytest.raises(openai.AuthenticationError) as err:
        client(keyed, key="sk-wrong").models.list()
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"
    r = httpx.post(keyed.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(keyed.url + "/health", timeout=30).status_code == 200  # probes need no key
    ok = client(keyed, key=KEY).chat.completions.create(model="smollm2-135m", messages=CHAT,
                                                        max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_unknown_model_is_400_listing_the_available_ones(server):
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=2)
    assert err.value.status_code == 400
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    assert "smollm2-135m" in err.value.message and "gemma3-270m" in err.value.message


@pytest.mark.parametrize("body, param", [
    ("{not json", None),
    ({"model": "smollm2-135m"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": CHAT, "max_tokens": "many"}, "max_tokens"),
    ({"messages": CHAT, "n": 0}, "n"),
    ({"messages": CHAT, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
])
def test_bad_requests_get_400_in_openai_error_shape(server, body, param):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(server.url + "/v1/chat/completions", content=content, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param


def test_a_file_that_is_not_a_gguf_is_400(server):
    with pytest.raises(openai.BadRequestError) as err:
        client(server).completions.create(model="garbage", prompt="x", max_tokens=2)
    assert "not a valid GGUF" in err.value.message


def test_engine_failure_is_500_and_the_server_carries_on(server):
    with pytest.raises(openai.InternalServerError) as err:
        client(server).completions.create(model="truncated", prompt="x", max_tokens=2, stream=True)
    assert err.value.status_code == 500 and "Failed to load model" in err.value.message
    r = client(server).chat.completions.create(model="smollm2-135m", messages=CHAT, max_tokens=2)
    assert r.choices[0].message.content is not None


def test_unknown_route_is_404_in_openai_error_shape(server):
    r = httpx.get(server.url + "/v1/engines", timeout=30)
    assert r.status_code == 404 and "/v1/chat/completions" in r.json()["error"]["message"]


# ---------------------------------------------------------------- load and disconnects


@pytest.mark.timeout(180)
def test_16_concurrent_streams_complete_or_get_503(server):
    """Default queue (8 waiting + 4 running in parallel): the rest are told 503 + Retry-After at once."""
    n = 16
    go = threading.Barrier(n)
    results: list[tuple] = [None] * n  # type: ignore[list-item]

    def one(i: int) -> None:
        c = client(server, timeout=150)
        go.wait()
        t0 = time.monotonic()
        try:
            stream = c.chat.completions.create(model="smollm2-135m", messages=CHAT,
                                               max_tokens=12, temperature=0, stream=True)
            chunks = list(stream)
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices
                      and ch.choices[0].finish_reason]
            results[i] = ("done", finish, time.monotonic() - t0)
        except openai.APIStatusError as e:
            results[i] = (e.status_code, e.response.headers.get("retry-after"),
                          time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - recorded, then asserted below
            results[i] = ("error", repr(e), time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(160)
    assert not any(t.is_alive() for t in threads), "a client hung"
    done = [r for r in results if r[0] == "done"]
    busy = [r for r in results if r[0] == 503]
    assert len(done) + len(busy) == n, results
    assert all(r[1] in (["stop"], ["length"]) for r in done), done
    # 16 arrive together; 4 run (parallel) and 8 wait: 4 cannot even queue.
    assert busy, "the queue never filled"
    assert len(done) >= 12
    for _, retry_after, waited in busy:
        assert retry_after is not None and int(retry_after) >= 1
        assert waited < 10, "a 503 must come at once, not after queueing"
    health = httpx.get(server.url + "/health", timeout=30).json()
    assert health["running"] == 0 and health["waiting"] == 0


def test_a_client_leaving_mid_stream_cancels_and_the_server_stays_healthy(server):
    from limner import log

    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}]}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as s:
        seen = 0
        for line in s.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 3:
                break  # leave: closing the response drops the connection
    assert seen >= 3
    t0 = time.monotonic()
    r = client(server, timeout=60).chat.completions.create(model="smollm2-135m", messages=CHAT,
                                                           max_tokens=3)
    assert r.choices[0].message.content is not None
    # The abandoned generation stopped early: it is logged as cancelled, far short of 400.
    deadline = time.monotonic() + 20
    while True:
        rows = [x for x in log.list(limit=10) if "lighthouse" in (x.get("title") or "")]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rows, "the cancelled exchange was not logged"
    assert rows[0]["status"] == "cancelled" and rows[0]["source"] == "serve"
    assert rows[0]["completion_tokens"] < 400
    assert time.monotonic() - t0 < 60


def test_a_client_leaving_the_queue_frees_its_place(engine):
    """max_queue=1, parallel=1: while one request runs, a waiting client that
    hangs up gives its slot back. (test_serve_batching has the parallel case.)"""
    from limner.engine.serve import create_app

    srv = LiveServer(create_app(engine, max_queue=1, parallel=1))
    health = lambda: httpx.get(srv.url + "/health", timeout=30).json()  # noqa: E731

    def poll(cond, what):
        deadline = time.monotonic() + 20
        while not cond(health()):
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    long = {"model": "smollm2-135m", "stream": True, "max_tokens": 300, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell a long tale about the sea."}]}
    try:
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=long, timeout=120) as a:
            lines = a.iter_lines()
            assert next(ln for ln in lines if ln.startswith("data: "))  # A is generating
            body = json.dumps({"model": "smollm2-135m", "max_tokens": 2, "messages": CHAT})
            waiter = socket.create_connection(("127.0.0.1", srv.port))
            waiter.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                            f"\r\n{body}").encode())
            poll(lambda h: h["waiting"] == 1, "the second request never queued")
            full = httpx.post(srv.url + "/v1/chat/completions", timeout=30,
                              json={"model": "smollm2-135m", "max_tokens": 2, "messages": CHAT})
            assert full.status_code == 503  # one running, one waiting: full
            waiter.close()  # hang up while still waiting
            poll(lambda h: h["waiting"] == 0 and h["running"] == 1,
                 "the abandoned request kept its place in the queue")
    finally:
        srv.stop()


def test_logged_exchanges_carry_the_request_and_mask_the_key(keyed):
    from limner import log

    client(keyed, key=KEY).chat.completions.create(
        model="smollm2-135m", max_tokens=2,
        messages=[{"role": "user", "content": "log me please"}])
    deadline = time.monotonic() + 20
    rows = []
    while not rows and time.monotonic() < deadline:
        rows = [x for x in log.list(limit=10) if x.get("title") == "log me please"]
        time.sleep(0.05)
    assert rows
    row = rows[0]
    assert row["status"] == "ok" and row["model"] == "smollm2-135m"
    assert row["request_url"] == "/v1/chat/completions" and row["mode"] == "chat"
    assert KEY not in json.dumps(row)


# ---------------------------------------------------------------- the command


def _limner() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "limner"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "limner.cli"]


def test_serve_command_starts_on_loopback_and_reports_a_busy_port(tmp_path):
    env = {**os.environ, "LIMNER_NO_LOG": "1", "PYTHONUNBUFFERED": "1"}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run(_limner() + ["serve", "--port", str(port)], capture_output=True,
                           text=True, env=env, timeout=60)
    assert p.returncode == 1 and "!error" in p.stdout and f"{port}" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(_limner() + ["serve", "--port", str(port), "--threads", "2",
                                         "--api-key", KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5,
                              headers={"Authorization": f"Bearer {KEY}"})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "limner serve did not come up"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["object"] == "list"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 401
    finally:
        proc.send_signal(2)  # Ctrl-C
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "127.0.0.1" in err
