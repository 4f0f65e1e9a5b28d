"""`limner serve` decoding concurrent requests together (engine/scheduler.py).

A real uvicorn on loopback, the official `openai` client and the bundled
models, as in test_serve (whose fixtures these are). What is checked is
behaviour, not speed: a request's reply is the same alone or batched with
others (greedy, and seeded sampling), streaming and not, FIM's syntax-aware
stop included; a client that leaves frees its slot; more requests than slots
wait and all finish; `n` still works beside batched requests; a long
prompt joining does not stop the streams already running.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_serve import LiveServer, client, engine, env, server  # noqa: F401 - fixtures

PROMPTS = ["Name three colors.", "What is the capital of France?",
           "Write a haiku about rain.", "Explain recursion in one sentence."]


def chat(srv, prompt: str, *, stream: bool = False, max_tokens: int = 32, **kw) -> str:
    c = client(srv, timeout=300)
    args = dict(model="smollm2-135m", messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens, temperature=kw.pop("temperature", 0), **kw)
    if stream:
        return "".join(ch.choices[0].delta.content or "" for ch in
                       c.chat.completions.create(stream=True, **args) if ch.choices)
    return c.chat.completions.create(**args).choices[0].message.content


def together(*calls) -> list:
    """Run the calls at once (released together by a barrier); their results in order."""
    go = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def one(i, f):
        go.wait()
        try:
            out[i] = f()
        except Exception as e:  # noqa: BLE001 - asserted by the caller
            out[i] = e

    threads = [threading.Thread(target=one, args=(i, f), daemon=True) for i, f in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return out


def scheduler(srv):
    return srv.server.config.app.state.scheduler


def test_concurrent_greedy_requests_equal_their_solo_replies(server):
    alone = [chat(server, p) for p in PROMPTS]
    sched = scheduler(server)
    sched.peak = 0
    # Two stream, two do not: both kinds share the batch.
    got = together(*(lambda p=p, i=i: chat(server, p, stream=i % 2 == 0)
                     for i, p in enumerate(PROMPTS)))
    assert got == alone
    assert sched.peak >= 2, "the requests never shared a decode step"
    assert len(set(alone)) == 4


def test_fim_requests_batched_keep_their_syntax_aware_stop(server):
    """Three fill-in-the-middle requests on Gemma: same middle and stop reason together as alone."""
    holes = [("def area(width, height):\n    return ", "\n\nprint(area(2, 3))\n"),
             ("def greet(name):\n    ", "\n\ngreet('Ada')\n"),
             ("class Point:\n    def __init__(self, x, y):\n        ", "\n\np = Point(1, 2)\n")]

    def fim(prefix, suffix, stream=False):
        body = {"model": "gemma3-270m", "prompt": prefix, "suffix": suffix, "max_tokens": 48,
                "temperature": 0, "stream": stream}
        if not stream:
            c = httpx.post(server.url + "/v1/completions", json=body, timeout=300).json()["choices"][0]
            return c["text"], c["limner_stop_reason"]
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=300) as s:
            chunks = [json.loads(ln[6:]) for ln in s.iter_lines()
                      if ln.startswith("data: ") and ln != "data: [DONE]"]
        return ("".join(c["choices"][0]["text"] for c in chunks),
                chunks[-1]["choices"][0]["limner_stop_reason"])

    alone = [fim(*h) for h in holes]
    assert all(reason.startswith("fim:") for _, reason in alone), alone
    got = together(*(lambda h=h, i=i: fim(*h, stream=i == 1) for i, h in enumerate(holes)))
    assert got == alone


def test_seeded_sampling_is_the_same_alone_and_batched(server):
    hot = {"temperature": 0.9, "seed": 1234}
    alone = chat(server, PROMPTS[2], **hot)
    assert alone == chat(server, PROMPTS[2], **hot)
    got = together(lambda: chat(server, PROMPTS[2], **hot),
                   lambda: chat(server, PROMPTS[0]), lambda: chat(server, PROMPTS[1], **hot))
    assert got[0] == alone and got[1] == chat(server, PROMPTS[0])


def test_n_still_works_beside_batched_requests(server):
    alone = [chat(server, p) for p in PROMPTS[:2]]

    def sampled():
        r = httpx.post(server.url + "/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": PROMPTS[3]}], "n": 3, "seed": 5,
            "max_tokens": 16, "temperature": 0.8})
        assert r.status_code == 200, r.text
        return [c["message"]["content"] for c in r.json()["choices"]]

    first = sampled()
    got = together(sampled, lambda: chat(server, PROMPTS[0]), lambda: chat(server, PROMPTS[1]))
    assert len(first) == 3 and got[0] == first
    assert got[1:] == alone


def test_a_long_prompt_joining_slows_a_running_stream_but_does_not_stop_it(server):
    """B's ~600-token prompt is evaluated a block at a time between A's decode
    steps: A keeps streaming while B waits for its first token."""
    long = "Summarise this: " + "The quick brown fox jumps over the lazy dog. " * 60
    a_times: list[float] = []

    def a():
        stream = client(server, timeout=300).chat.completions.create(
            model="smollm2-135m", max_tokens=200, temperature=0, stream=True,
            messages=[{"role": "user", "content": "Count from 1 to 300, separated by commas."}])
        for ch in stream:
            if ch.choices and ch.choices[0].delta.content:
                a_times.append(time.monotonic())

    a_thread = threading.Thread(target=a, daemon=True)
    a_thread.start()
    deadline = time.monotonic() + 60
    while len(a_times) < 3:
        assert time.monotonic() < deadline and a_thread.is_alive(), "A never streamed"
        time.sleep(0.01)
    sent = time.monotonic()
    first = None
    text = ""
    for ch in client(server, timeout=300).chat.completions.create(
            model="smollm2-135m", max_tokens=4, temperature=0, stream=True,
            messages=[{"role": "user", "content": long}]):
        if ch.choices and ch.choices[0].delta.content:
            first = first or time.monotonic()
            text += ch.choices[0].delta.content
    a_thread.join(300)
    during = [t for t in a_times if sent < t < first]
    assert len(during) >= 10, f"A sent {len(during)} chunks while B's prompt was evaluated"
    assert text == chat(server, long, max_tokens=4)


@pytest.fixture
def two_slots(engine):  # noqa: F811 - test_serve's fixture
    from limner.engine.serve import create_app

    srv = LiveServer(create_app(engine, parallel=2, max_queue=8))
    yield srv
    srv.stop()


def test_more_requests_than_slots_wait_and_all_finish(two_slots):
    alone = [chat(two_slots, p, max_tokens=16) for p in PROMPTS]
    sched = scheduler(two_slots)
    sched.peak = 0
    got = together(*(lambda p=p: chat(two_slots, p, max_tokens=16) for p in PROMPTS + PROMPTS[:1]))
    assert got == alone + alone[:1]
    assert sched.peak == 2  # never more at once than the slots
    health = httpx.get(two_slots.url + "/health", timeout=30).json()
    assert health["running"] == 0 and health["waiting"] == 0 and health["parallel"] == 2


def test_a_client_leaving_mid_stream_frees_its_slot_and_disturbs_no_one(two_slots):
    """Two slots: A counts for a long time, B leaves after 3 chunks; C then gets
    B's slot and finishes while A is still going, and A's reply is unchanged."""
    from limner import log

    count = "Count from 1 to 300, separated by commas."
    a_alone = chat(two_slots, count, max_tokens=200)
    c_alone = chat(two_slots, PROMPTS[0], max_tokens=8)
    sched = scheduler(two_slots)
    a_done: list[float] = []

    def a():
        text = chat(two_slots, count, stream=True, max_tokens=200)
        a_done.append(time.monotonic())
        return text

    a_thread = threading.Thread(target=lambda: a_done.append(a()), daemon=True)
    a_thread.start()
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a windmill."}]}
    with httpx.stream("POST", two_slots.url + "/v1/chat/completions", json=body, timeout=300) as s:
        seen = 0
        for line in s.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 3:
                break  # leave: closing the response drops the connection
    deadline = time.monotonic() + 30
    while sched.live > 1:  # B's slot is let go within a step or two
        assert time.monotonic() < deadline, "the abandoned request kept its slot"
        time.sleep(0.02)
    c = chat(two_slots, PROMPTS[0], max_tokens=8)
    c_done = time.monotonic()
    a_thread.join(300)
    assert c == c_alone
    assert a_done[1] == a_alone
    assert a_done[0] > c_done, "A ended before C ran: the test proved nothing"
    rows = []
    while not rows and time.monotonic() < deadline:
        rows = [x for x in log.list(limit=10) if "windmill" in (x.get("title") or "")]
        time.sleep(0.05)
    assert rows and rows[0]["status"] == "cancelled" and rows[0]["completion_tokens"] < 400


def test_a_client_leaving_the_queue_frees_its_place(engine):  # noqa: F811
    """parallel=2, max_queue=1: two run, one waits; the waiter hangs up and its place is free."""
    import socket

    from limner.engine.serve import create_app

    srv = LiveServer(create_app(engine, parallel=2, max_queue=1))
    health = lambda: httpx.get(srv.url + "/health", timeout=30).json()

    def poll(cond, what):
        deadline = time.monotonic() + 30
        while not cond(health()):
            assert time.monotonic() < deadline, (what, health())
            time.sleep(0.05)

    long = {"model": "smollm2-135m", "stream": True, "max_tokens": 300, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell a long tale about the sea."}]}
    try:
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=long, timeout=300) as a, \
                httpx.stream("POST", srv.url + "/v1/chat/completions", json=long, timeout=300) as b:
            lines = [a.iter_lines(), b.iter_lines()]  # kept: a dropped iterator closes its stream
            for it in lines:
                assert next(ln for ln in it if ln.startswith("data: "))
            body = json.dumps({"model": "smollm2-135m", "max_tokens": 2, "messages": [
                {"role": "user", "content": "Hi"}]})
            waiter = socket.create_connection(("127.0.0.1", srv.port))
            waiter.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                            f"\r\n{body}").encode())
            poll(lambda h: h["waiting"] == 1, "the third request never queued")
            full = httpx.post(srv.url + "/v1/chat/completions", timeout=30, content=body)
            assert full.status_code == 503  # two running, one waiting: full
            waiter.close()  # hang up while still waiting
            poll(lambda h: h["waiting"] == 0 and h["running"] == 2,
                 "the abandoned request kept its place in the queue")
            assert scheduler(srv).waiting() == 0
    finally:
        srv.stop()


def _serve_process(*args):
    """A `limner serve` child on a free loopback port, answering /health."""
    import os
    import subprocess

    from llama_server import free_port
    from test_serve import _limner

    port = free_port()
    proc = subprocess.Popen(_limner() + ["serve", "--port", str(port), "--threads", "1", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LIMNER_NO_LOG": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/health", timeout=5)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("serve did not start: " + proc.communicate()[1][-2000:]) from None
            time.sleep(0.2)


@pytest.mark.parametrize("parallel", [1, 2])
def test_ctrl_c_with_requests_in_flight_exits_cleanly(tmp_path, parallel):
    """Ctrl-C while requests decode (and one waits): the engine was closed
    under a running decode, a segfault (exit -11), before serve.shutdown()."""
    import signal

    proc, url = _serve_process("--ctx", "1024", "--parallel", str(parallel))
    try:
        deadline = time.monotonic() + 60
        body = {"stream": True, "max_tokens": 400, "messages": [
            {"role": "user", "content": "Write a very long story about a river."}]}
        streams = [httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60)
                   for _ in range(parallel + 1)]

        def read(s):
            try:
                with s as r:
                    for _ in r.iter_lines():
                        pass
            except httpx.HTTPError:
                pass  # the server went away: expected

        readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in streams]
        for t in readers:
            t.start()
        while httpx.get(url + "/health", timeout=5).json()["running"] < parallel:
            assert time.monotonic() < deadline, "the requests never started"
            time.sleep(0.1)
        time.sleep(1)  # decoding now
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    # The streams were ended before uvicorn's graceful shutdown could force-cancel them.
    assert "Traceback" not in err and "limner serve: stopped" in err, err[-2000:]


def test_ctrl_c_before_the_first_token_answers_503_without_a_traceback(tmp_path):
    """A request still waiting (the model loads on first use) gets a clear 503."""
    import signal

    proc, url = _serve_process()
    got = {}
    try:
        deadline = time.monotonic() + 60

        def ask():
            body = {"model": "gemma3-270m", "max_tokens": 8, "prompt": "def f():"}
            got["r"] = httpx.post(url + "/v1/completions", json=body, timeout=60)

        t = threading.Thread(target=ask, daemon=True)
        t.start()
        while not httpx.get(url + "/health", timeout=5).json().get("running"):
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    t.join(10)
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    r = got["r"]
    # Either it was still loading (503, "stopping") or its first token beat the signal.
    assert r.status_code == 503 and r.json()["error"]["code"] == "stopping" or r.status_code == 200
