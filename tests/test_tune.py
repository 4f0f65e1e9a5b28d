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
