"""Job.n > 1: N samples of one prompt decoded in one batch (engine/batch.py), on
the real bundled models, and `n` on `limner serve`'s two endpoints."""
from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_support import THREADS, module_engine  # noqa: E402

from limner.engine.core import Job  # noqa: E402
from limner.events import Failure, Sample, Stopped, Text, Usage  # noqa: E402

ASK = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
HOT = {"temperature": 0.8, "max_tokens": 24, "n_threads": THREADS}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    yield from module_engine(tmp_path_factory, max_models=2)


def samples(engine, n, **params):
    evs = list(engine.stream(Job(mode="chat", messages=ASK, params={**HOT, **params}, n=n)))
    assert isinstance(evs[-1], (Stopped, Failure)) and isinstance(evs[-2], Usage), evs
    assert not any(isinstance(e, Text) for e in evs)
    return [e for e in evs if isinstance(e, Sample)], evs[-2], evs[-1]


def test_n_samples_are_seeded_and_reproducible(engine):
    a, usage, end = samples(engine, 4, seed=7)
    assert isinstance(end, Stopped)
    assert [s.index for s in a] == [0, 1, 2, 3]
    assert [s.seed for s in a] == [7, 8, 9, 10]
    assert usage.completion_tokens == sum(s.tokens for s in a) and usage.extra["n"] == 4
    b, usage2, _ = samples(engine, 4, seed=7)
    assert [s.text for s in a] == [s.text for s in b]
    assert usage2.cached_tokens == usage2.prompt_tokens - 1  # the batch context kept the prompt
    c, _, _ = samples(engine, 4, seed=8)
    assert [s.text for s in c[:3]] == [s.text for s in a[1:]]  # sequence i samples with seed+i
    assert len({s.text for s in a}) > 1  # temperature 0.8: not all the same


def test_log_probs_are_sums_and_means_of_real_probabilities(engine):
    got, _, _ = samples(engine, 3, seed=1)
    for s in got:
        assert s.tokens > 0 and s.logprob_sum < 0
        assert s.logprob_mean == pytest.approx(s.logprob_sum / s.tokens, abs=1e-3)
    greedy, _, _ = samples(engine, 2, temperature=0, seed=1)
    assert greedy[0].text == greedy[1].text and greedy[0].logprob_sum == greedy[1].logprob_sum


def test_greedy_batch_equals_the_single_sequence_decode(engine):
    from engine_support import collect

    text, _, _ = collect(engine.stream(Job(mode="chat", messages=ASK,
                                           params={**HOT, "temperature": 0})))
    got, _, _ = samples(engine, 2, temperature=0)
    assert got[0].text == text


def test_stop_strings_end_each_sample(engine):
    got, _, _ = samples(engine, 3, seed=3, stop=["\n"], max_tokens=40)
    for s in got:
        assert "\n" not in s.text
        assert s.finish_reason in ("stop", "length")


def test_completion_mode_on_gemma(engine):
    evs = list(engine.stream(Job(mode="completion", prompt="def add(a, b):\n",
                                 params={**HOT, "seed": 5, "max_tokens": 12}, n=2)))
    got = [e for e in evs if isinstance(e, Sample)]
    assert len(got) == 2 and isinstance(evs[-1], Stopped)
    assert evs[-2].extra["model"] == "gemma3-270m"


def test_bad_n_is_a_failure_not_an_exception(engine):
    for n in (0, 65, "x"):
        evs = list(engine.stream(Job(mode="chat", messages=ASK, params=HOT, n=n)))
        assert len(evs) == 1 and isinstance(evs[0], Failure) and evs[0].kind == "params", evs


def test_cancel_ends_the_batch(engine):
    cancel = threading.Event()
    cancel.set()
    evs = list(engine.stream(Job(mode="chat", messages=ASK, params=HOT, n=2), cancel))
    assert isinstance(evs[-1], Failure) and evs[-1].kind == "cancelled"


# -- limner serve -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(engine):
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    from limner.engine.serve import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning", lifespan="off"))
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    t.join(15)


def test_serve_n_on_both_endpoints(server, monkeypatch):
    import httpx

    monkeypatch.setenv("LIMNER_NO_LOG", "1")
    body = {"messages": ASK, "n": 3, "seed": 4, "max_tokens": 16, "temperature": 0.8}
    r = httpx.post(server + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert all(c["message"]["role"] == "assistant" for c in choices)
    assert all(c["limner_logprob"]["sum"] < 0 for c in choices)
    again = httpx.post(server + "/v1/chat/completions", json=body, timeout=120).json()["choices"]
    assert [c["message"]["content"] for c in again] == [c["message"]["content"] for c in choices]

    r = httpx.post(server + "/v1/completions", timeout=120,
                   json={"prompt": "def add(a, b):\n", "n": 2, "max_tokens": 8, "seed": 1})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]

    with httpx.stream("POST", server + "/v1/completions", timeout=120,
                      json={"prompt": "x = ", "n": 2, "max_tokens": 4, "stream": True}) as s:
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: {")]
    import json

    finished = {json.loads(ln[6:])["choices"][0]["index"] for ln in lines
                if json.loads(ln[6:])["choices"][0]["finish_reason"]}
    assert finished == {0, 1}


def test_serve_refuses_bad_n(server):
    import httpx

    for n in (0, 65, 1.5, "2"):
        r = httpx.post(server + "/v1/chat/completions", json={"messages": ASK, "n": n}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
    r = httpx.post(server + "/v1/completions", json={"prompt": "a", "suffix": "b", "n": 2}, timeout=30)
    assert r.status_code == 400 and "suffix" in r.json()["error"]["message"]
