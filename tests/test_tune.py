"""Profiles in `limner eval`: a profile's own turns (system prompt, demos)
reach the model before each task (they used to be replaced by the task's)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import sandbox_or_skip  # noqa: E402
from engine_support import THREADS  # noqa: E402


@pytest.fixture
def demo_profile(tmp_path):
    p = tmp_path / "demo.profile"
    p.write_text("!backend embedded\n!:model smollm2-135m\n!user\nWrite a function that doubles x.\n"
                 "!assistant\n```python\ndef double(x):\n    return 2 * x\n```\n", encoding="utf-8")
    return p


def test_a_profiles_turns_come_before_the_task(demo_profile):
    from limner.evals import suites
    from limner.evals.targets import Target

    task = suites.load("mbpp").tasks()[0]
    t = Target.for_profile(str(demo_profile), n_threads=THREADS)
    req = t.request(task, "chat", {})
    roles = [m.role for m in req.messages]
    assert roles == ["user", "assistant", "user"]
    assert "doubles x" in req.messages[0].content and "def double" in req.messages[1].content
    assert req.messages[2].content == task.instruction


def test_a_profiles_demos_reach_the_engine(demo_profile, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    from limner.evals import suites
    from limner.evals.targets import Target

    task = suites.load("mbpp").tasks()[0]
    params = {"temperature": 0, "max_tokens": 8}
    plain = Target.for_model("smollm2-135m", n_threads=THREADS).ask(task, "chat", params)
    tuned = Target.for_profile(str(demo_profile), n_threads=THREADS).ask(task, "chat", params)
    assert not plain.error and not tuned.error, (plain.error, tuned.error)
    assert [m["role"] for m in tuned.request["messages"]] == ["user", "assistant", "user"]
    # the engine counted the demo's tokens: the turns were in the prompt it evaluated
    assert tuned.prompt_tokens >= plain.prompt_tokens + 20


def test_tune_bad_input_is_a_clear_error(tmp_path, capsys):
    from limner.evals import tune

    assert tune.main(["mbpp", "--model", "smollm2-135m", "--out", str(tmp_path / "x.txt")]) != 0
    assert "!error" in capsys.readouterr().out
    assert tune.main(["mbpp", "--model", "smollm2-135m", "--out", str(tmp_path / "x.profile"), "--dev", "2"]) != 0
    assert "--dev and --test at least 3" in capsys.readouterr().out


def test_a_split_too_small_to_tune_is_refused_before_any_model_runs(tmp_path, capsys):
    from limner.evals import tune

    suite = tmp_path / "tiny.jsonl"  # 7 tasks: a 60/20/20 split leaves dev 1, test 2
    suite.write_text("".join(f'{{"id": "t{i}", "prompt": "def f{i}():\\n", "test": "assert f{i}() == {i}"}}\n'
                             for i in range(7)), encoding="utf-8")
    out = tmp_path / "t.profile"
    assert tune.main([str(suite), "--model", "no-such-model", "--out", str(out)]) != 0
    text = capsys.readouterr().out
    assert "too small to tune" in text and "dev 1, test 2" in text, text
    assert not out.exists() and not (tmp_path / "t.tune.json").exists()


def _fake_run(monkeypatch, dev_passed: dict):
    """tune's loop without a model or sandbox: every train answer passes; each
    candidate passes the first dev_passed[name] tasks (default 1)."""
    import contextlib
    import importlib

    from limner.evals import tune

    pool, probe = (importlib.import_module(f"limner.sandbox.{m}") for m in ("pool", "probe"))

    monkeypatch.setattr(pool, "Pool", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(probe, "require", lambda want: None)
    monkeypatch.setattr(tune, "_passes", lambda target, d, task, how, params, p, want: (True, "pass\n"))
    seen = []

    def score(target, how, tasks, cand, *a):
        seen.append((how, cand))
        n = dev_passed.get(cand.name, 1)
        return [int(i < n) for i in range(len(tasks))]

    monkeypatch.setattr(tune, "_score", score)
    return seen


def test_no_gain_on_dev_writes_nothing(tmp_path, monkeypatch, capsys):
    from limner.evals import tune

    seen = _fake_run(monkeypatch, {"labeled k=1": 0})  # ties and one loss
    out = tmp_path / "g.profile"
    assert tune.main(["mbpp", "--model", "gemma3-270m", "--out", str(out), "--k", "1", "--dev", "5",
                      "--test", "5", "--train", "3"]) == 0
    assert "no candidate beats zero-shot on dev (1/5): no profile written" in capsys.readouterr().out
    assert not out.exists()
    report = __import__("json").loads((tmp_path / "g.tune.json").read_text())
    assert report["chosen"] is None and report["how"] == "completion" and "test" not in report
    names = [c["name"] for c in report["candidates"]]
    assert names == ["zero-shot", "labeled k=1", "bootstrapped k=1 shuffle 1", "bootstrapped k=1 shuffle 2",
                     "instruction 1", "instruction 2"]
    assert report["candidates"][4]["instruction"].startswith("# Python 3")
    assert {h for h, _ in seen} == {"completion"}


def test_an_instruction_that_beats_zero_shot_is_combined_with_demos_and_chosen(tmp_path, monkeypatch, capsys):
    from limner.evals import tune

    _fake_run(monkeypatch, {"instruction 2": 3, "bootstrapped k=1 shuffle 1": 2,
                            "instruction 2 + bootstrapped k=1 shuffle 1": 4})
    out = tmp_path / "s.profile"
    assert tune.main(["mbpp", "--model", "smollm2-135m", "--out", str(out), "--k", "1", "--dev", "5",
                      "--test", "5", "--train", "3"]) == 0
    text = capsys.readouterr().out
    assert "instruction 2 + bootstrapped k=1 shuffle 1 4" in text and "wrote" in text
    report = __import__("json").loads((tmp_path / "s.tune.json").read_text())
    assert report["chosen"] == "instruction 2 + bootstrapped k=1 shuffle 1"
    assert report["dev"][report["chosen"]]["passed"] > report["dev"]["zero-shot"]["passed"]
    prof = out.read_text()
    assert "Answer with Python code only" in prof and prof.count("\n!user\n") == 1


def test_a_completion_profile_round_trips_to_the_same_block(tmp_path):
    from limner.evals import suites
    from limner.evals import tune_prompts as tp
    from limner.evals.targets import Target

    ts = suites.load("mbpp").tasks()
    cand = tp.Candidate("c", tp.INSTRUCTIONS["completion"][0],
                        [(ts[0], ts[0].reference), (ts[1], "!odd line\ndef f():\n\n\n    return 1\n")])
    out = tmp_path / "c.profile"
    out.write_text(tp.profile_text("completion", ["!note t"], None, "gemma3-270m", cand), encoding="utf-8")
    t = Target.for_profile(str(out))
    assert t.prefix == tp.completion_block(cand) and t.preamble == []
    req = t.request(ts[5], "completion", {})
    assert req.prompt == tp.completion_block(cand) + ts[5].prompt


def test_mbpp_splits_are_the_official_ones_and_demos_stay_out_of_dev_and_test():
    from limner.evals import suites, tune

    sp = tune.splits(suites.load("mbpp"), 0)
    ids = {k: {int(t.id.split("/")[1]) for t in v} for k, v in sp.items()}
    assert len(ids["test"]) == 257 and max(ids["dev"]) <= 600 and min(ids["dev"]) >= 511
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"])


def test_tune_writes_a_profile_whose_demos_reach_eval(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    sandbox_or_skip()
    from limner.evals import tune

    out = tmp_path / "t.profile"
    rc = tune.main(["mbpp", "--model", "smollm2-135m", "--out", str(out), "--k", "1", "--shuffles", "1",
                    "--train", "4", "--dev", "3", "--test", "3", "--threads", str(THREADS), "--force"])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = __import__("json").loads((tmp_path / "t.tune.json").read_text())
    assert report["splits"]["dev"] == 3 and "zero-shot" in report["dev"] and "test" in report
    prof = out.read_text()
    assert prof.startswith("!note limner tune mbpp") and "\n!user\n" in prof and "\n!assistant\n" in prof
    from limner.evals.targets import Target

    t = Target.for_profile(str(out), "smollm2-135m", n_threads=THREADS)
    assert [m.role for m in t.preamble] == ["user", "assistant"]


def test_tune_on_a_completion_model_writes_a_block_that_reaches_the_engine(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    sandbox_or_skip()
    from limner.evals import suites, tune
    from limner.evals.targets import Target

    out = tmp_path / "g.profile"
    rc = tune.main(["mbpp", "--model", "gemma3-270m", "--out", str(out), "--k", "1", "--shuffles", "1",
                    "--train", "2", "--dev", "3", "--test", "3", "--instructions", "1", "--max-tokens", "24",
                    "--threads", str(THREADS), "--force"])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = __import__("json").loads((tmp_path / "g.tune.json").read_text())
    assert report["how"] == "completion" and "instruction 1" in report["dev"] and "test" in report
    prof = out.read_text()
    assert prof.startswith("!note limner tune mbpp") and "\n!completion\n" in prof and "!user" not in prof
    task = suites.load("mbpp").tasks()[0]
    params = {"temperature": 0, "max_tokens": 4}
    tuned = Target.for_profile(str(out), n_threads=THREADS)
    assert tuned.how(task) == "completion" and tuned.prefix.strip()  # --force writes a non-zero-shot candidate
    got = tuned.ask(task, "completion", params)
    plain = Target.for_model("gemma3-270m", n_threads=THREADS).ask(task, "completion", params)
    assert not plain.error and not got.error, (plain.error, got.error)
    assert got.request["prompt"] == tuned.prefix + task.prompt
    # the engine counted the block's tokens: it was in the prompt it evaluated
    assert got.prompt_tokens >= plain.prompt_tokens + 10
