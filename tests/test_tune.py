"""Profiles in `limner eval`: a profile's own turns (system prompt, demos)
reach the model before each task (they used to be replaced by the task's)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    assert tune.main(["mbpp", "--model", "gemma3-270m", "--out", str(tmp_path / "g.profile")]) != 0
    out = capsys.readouterr().out
    assert "needs a chat model" in out and not (tmp_path / "g.profile").exists()


def test_mbpp_splits_are_the_official_ones_and_demos_stay_out_of_dev_and_test():
    from limner.evals import suites, tune

    sp = tune.splits(suites.load("mbpp"), 0)
    ids = {k: {int(t.id.split("/")[1]) for t in v} for k, v in sp.items()}
    assert len(ids["test"]) == 257 and max(ids["dev"]) <= 600 and min(ids["dev"]) >= 511
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"])


def test_tune_writes_a_profile_whose_demos_reach_eval(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    from limner.sandbox.probe import probe

    if probe().level != "strict":
        pytest.skip("the strict sandbox is unavailable here")
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
