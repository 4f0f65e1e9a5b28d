"""`limner eval` through SGLang's router (sglang-router) on loopback.

Three `limner serve` workers on the bundled SmolLM2 (one thread each) behind
the real router; one worker is killed in the middle of a run. Then fault
server workers, one answering 429 with Retry-After. In both, every sample
is stored exactly once and the report says what the servers did.

The router runs with --disable-retries so that failures reach limner (its
own retries would hide them); its health check drops a dead worker.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import limner_command, sandbox_or_skip
from faultserver import FaultServer
from llama_server import free_port

pytest.importorskip("sglang_router", reason="the router is in the scale extra: pip install 'limner[scale]'")

TASKS, SAMPLES = 6, 2


def _wait(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[:4]} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def _router(workers: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *workers,
         "--policy", "round_robin", "--host", "127.0.0.1", "--port", str(port),
         "--disable-retries", "--health-check-interval-secs", "1", "--health-failure-threshold", "1",
         "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),  # default: 0.0.0.0:29000
         "--log-level", "warn"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/health", proc)
    return proc, url


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rows(out: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{out / 'generations.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM generations ORDER BY task, sample")]
    db.close()
    return rows


def _assert_each_sample_once(out: Path) -> None:
    rows = _rows(out)
    keys = [(r["task"], r["sample"]) for r in rows]
    assert len(rows) == TASKS * SAMPLES and len(set(keys)) == len(keys), keys
    assert sorted({r["sample"] for r in rows}) == list(range(SAMPLES))
    assert all(r["error"] is None and r["text"] for r in rows), [r["error"] for r in rows if r["error"]]
    assert all(r["seed"] == 1234 + r["sample"] for r in rows)  # the seed each draw was asked with


def _eval_args(url: str, out: Path) -> list[str]:
    return ["eval", "humaneval", "--limit", str(TASKS), "--samples", str(SAMPLES), "--model", "smollm2-135m",
            "--endpoint", url + "/v1", "--mode", "chat", "--max-tokens", "48", "--concurrency", "3",
            "--out", str(out), "--no-html", "--json"]


@pytest.fixture
def serve_workers(limner_env, tmp_path):
    pytest.importorskip("llama_cpp")
    procs, urls = [], []
    env = {**limner_env, "LIMNER_DATA_DIR": os.environ.get("LIMNER_DATA_DIR", limner_env["LIMNER_DATA_DIR"])}
    try:
        for i in range(3):
            port = free_port()
            procs.append(subprocess.Popen(
                limner_command() + ["serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
                                    "--preload", "smollm2-135m", "--no-log", "--ctx", "2048"],
                env=env, stdout=open(tmp_path / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(procs, urls):
            _wait(url + "/health", proc, 120)
        yield procs, urls
    finally:
        for proc in procs:
            _stop(proc)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(serve_workers, limner_env, tmp_path):
    procs, urls = serve_workers
    router, url = _router(urls, tmp_path / "router.log")
    out = tmp_path / "out"
    try:
        run = subprocess.Popen(limner_command() + _eval_args(url, out), env=limner_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:
            try:
                if len(_rows(out)) >= 3:
                    break
            except sqlite3.OperationalError:  # not made yet
                pass
            time.sleep(0.2)
        # Kill it while it holds a request: killed between two requests it
        # left nothing to retry (retries 0, 1 run in 5 under load).
        while time.monotonic() < deadline and run.poll() is None:
            if httpx.get(urls[0] + "/health", timeout=5).json().get("running"):
                break
            time.sleep(0.01)
        procs[0].send_signal(signal.SIGKILL)  # mid-run: its in-flight request dies with it
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stdout + stderr
        _assert_each_sample_once(out)
        dispatch = json.loads(stdout)["dispatch"]
        print("dispatch after the kill:", dispatch)
        assert dispatch["requests"] == TASKS * SAMPLES + dispatch["retries"]
        assert dispatch["gave_up"] == 0 and dispatch["retries"] >= 1  # its in-flight request died
        report = json.loads((out / "report.json").read_text())
        assert report["dispatch"] == dispatch  # the report says what happened
        # Resumed: nothing is missing, so nothing is asked.
        again = subprocess.run(limner_command() + _eval_args(url, out), env=limner_env, capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert not (json.loads(again.stdout)["dispatch"] or {}).get("requests")
        _assert_each_sample_once(out)
    finally:
        _stop(router)


def test_429_with_retry_after_through_the_router(limner_env, tmp_path):
    busy, ok = FaultServer(default="busy:3:1").start(), FaultServer(default="ok").start()
    router, url = _router([busy.base, ok.base], tmp_path / "router.log")
    out = tmp_path / "out"
    try:
        args = [a for a in _eval_args(url, out) if a != "--no-html"]
        p = subprocess.run(limner_command() + args, env=limner_env, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stdout + p.stderr
        _assert_each_sample_once(out)
        dispatch = json.loads(p.stdout)["dispatch"]
        assert dispatch["causes"] == {"429": 3} and dispatch["retries"] == 3
        assert dispatch["waited_s"] >= 3.0  # Retry-After: 1, honoured each time
        chats = [r for r in busy.requests + ok.requests if r[0].endswith("chat/completions")]
        assert len(chats) == TASKS * SAMPLES + 3
        from limner.evals.dispatch import describe

        assert "3× 429" in describe(dispatch)
        assert "Servers: requests: 15 sent, 3 retried (3× 429" in (out / "report.html").read_text()
    finally:
        _stop(router)
        busy.stop()
        ok.stop()


def test_dispatcher_honours_retry_after_and_caps_it():
    from limner.evals.dispatch import Dispatcher, delay, parse_retry_after
    from limner.evals.targets import Generation

    answers = [Generation(error="http: busy", status=429, retry_after=120.0),
               Generation(error="refused: no server"), Generation(error="http: 503", status=503),
               Generation(text="done")]
    slept = []
    d = Dispatcher(attempts=5, cap=30.0, sleep=slept.append)
    gen = d.call(lambda: answers.pop(0))
    assert gen.text == "done" and gen.attempts == 4
    assert slept[0] == 30.0 and 0 < slept[1] <= 1.0  # capped; jittered backoff when absent
    s = d.stats.summary()
    assert s["causes"] == {"429": 1, "refused": 1, "503": 1} and s["retries"] == 3 and s["gave_up"] == 0
    # A 4xx that is not 429 is final: asking again would get the same answer.
    d2 = Dispatcher(sleep=slept.append)
    assert d2.call(lambda: Generation(error="http: bad", status=400)).attempts == 1
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None
    assert 0.5 * 2 ** 3 * 0.5 <= delay(3, None) <= 4.0


def test_default_concurrency_asks_for_slots(monkeypatch):
    from limner.evals import dispatch

    srv = FaultServer().start()  # answers GET /v1/models with no slot count
    try:
        assert dispatch.default_concurrency([srv.url("ok"), srv.url("ok")]) == 8  # 4 per URL
        monkeypatch.setattr(dispatch, "_slots", lambda url, timeout: 6)
        assert dispatch.default_concurrency([srv.url("ok")]) == 6
    finally:
        srv.stop()


def test_a_dead_endpoint_among_several_is_rested_and_named_in_the_report(limner_env, tmp_path):
    """--endpoint given twice, one dead: every sample still lands, once, and the
    report names the failing endpoint. A dead replica answers fastest, so
    without resting it, it would draw every retry."""
    ok = FaultServer(default="ok").start()
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out = tmp_path / "out"
    args = ["eval", "humaneval", "--limit", str(TASKS), "--samples", str(SAMPLES), "--model", "m",
            "--endpoint", ok.base + "/v1", "--endpoint", dead, "--mode", "chat", "--concurrency", "2",
            "--out", str(out), "--no-html", "--json"]
    try:
        p = subprocess.run(limner_command() + args, env=limner_env, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stdout + p.stderr
        _assert_each_sample_once(out)
        dispatch = json.loads(p.stdout)["dispatch"]
        assert dispatch["gave_up"] == 0 and set(dispatch["failed_endpoints"]) == {dead}
        assert dispatch["causes"] == {"refused": dispatch["retries"]} and dispatch["retries"] <= 4
        # Another --seed on the same --out: the sampled draws are other samples, asked again.
        p2 = subprocess.run(limner_command() + args + ["--seed", "7"], env=limner_env, capture_output=True,
                            text=True, timeout=240)
        assert p2.returncode == 0, p2.stdout + p2.stderr
        rows = _rows(out)
        assert len(rows) == TASKS * SAMPLES and all(r["seed"] == 7 + r["sample"] for r in rows)
    finally:
        ok.stop()


def _add_suite(path: Path, n: int) -> Path:
    """n tiny tasks, each with one visible and one held-out assert (MBPP-style)."""
    lines = [json.dumps({"id": f"add/{i}", "prompt": "def add(a, b):\n", "instruction": "Write add(a, b).",
                         "test": f"assert add({i}, 2) == {i + 2}\nassert add(2, {i}) == {i + 2}\n"})
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_select_over_http_retries_429_with_retry_after(limner_env, tmp_path):
    """`limner eval --select 2 --endpoint URL`: the greedy answer and the two
    samples go through the same dispatcher as the plain eval; the first two
    requests get 429 with Retry-After: 1, are retried, and the output counts them."""
    sandbox_or_skip()
    busy = FaultServer(default="busy:2:1").start()
    out = tmp_path / "sel"
    try:
        p = subprocess.run(limner_command() + [
            "eval", str(_add_suite(tmp_path / "add.jsonl", 1)), "--model", "m", "--endpoint", busy.base + "/v1",
            "--mode", "chat", "--select", "2", "--concurrency", "2", "--out", str(out), "--json"],
            env=limner_env, capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        dispatch = json.loads(p.stdout)["dispatch"]
        assert dispatch["causes"] == {"429": 2} and dispatch["retries"] == 2 and dispatch["gave_up"] == 0
        assert dispatch["requests"] == 3 + 2 and dispatch["waited_s"] >= 2.0  # Retry-After honoured
        chats = [r for r in busy.requests if r[0].endswith("chat/completions")]
        assert len(chats) == 5
        # The greedy request came first and drew both 429s: retried as the same request, three
        # times; then each sample once, with its own seed. A retry never adds a sample.
        assert chats[0][2] == chats[1][2] == chats[2][2] and "seed" not in json.loads(chats[0][2])
        assert sorted(json.loads(r[2])["seed"] for r in chats[3:]) == [1234, 1235]
        row = json.loads((out / "select.json").read_text())["per_task"][0]
        assert row["n"] == 2 and len(row["held"]) == 2
        assert json.loads((out / "select.json").read_text())["dispatch"] == dispatch
    finally:
        busy.stop()


def test_tune_over_http_retries_429_and_reports_it(limner_env, tmp_path):
    """`limner tune` with a profile naming an HTTP endpoint: one request in
    flight, the 429s retried after Retry-After, the summary in NAME.tune.json."""
    sandbox_or_skip()
    busy = FaultServer(default="busy:2:1").start()
    lines = [json.dumps({"id": f"add/{i}", "prompt": f"def add{i}(a, b):\n", "instruction": f"Write add{i}(a, b).",
                         "reference": f"def add{i}(a, b):\n    return a + b\n",
                         "test": f"assert add{i}({i}, 2) == {i + 2}\n"}) for i in range(20)]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "h.profile").write_text(f"!api {busy.base}/v1\n!:model m\n", encoding="utf-8")
    try:
        p = subprocess.run(limner_command() + [
            "tune", str(tmp_path / "s.jsonl"), "--profile", str(tmp_path / "h.profile"), "--model", "m",
            "--out", str(tmp_path / "t.profile"), "--k", "1", "--shuffles", "1", "--train", "3", "--dev", "3",
            "--test", "3"], env=limner_env, capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "2 retried (2× 429" in p.stdout
        dispatch = json.loads((tmp_path / "t.tune.json").read_text())["dispatch"]
        assert dispatch["causes"] == {"429": 2} and dispatch["gave_up"] == 0 and dispatch["waited_s"] >= 2.0
        chats = [r for r in busy.requests if r[0].endswith("chat/completions")]
        report = json.loads((tmp_path / "t.tune.json").read_text())
        n_cands = len(report["candidates"])
        assert n_cands >= 2 and report.get("test") is None  # nothing beats zero-shot: no test run
        # train, dev × every candidate (demos and instruction variants), 2 retries
        assert dispatch["requests"] == len(chats) == 3 + n_cands * 3 + 2
    finally:
        busy.stop()
