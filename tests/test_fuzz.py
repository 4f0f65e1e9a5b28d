"""Bad buffers never reach "internal error" (issue 8), and nothing before sending touches the network.

Hypothesis draws buffers from the generator in fuzz_buffers.py (the real
directive names, paths with NUL or missing or directories, odd URLs for
`!api`, fim:auto, CR/LF, NUL, odd Unicode) and runs each through
buffer.check, buffer.parse, backends.open(...).describe() and render.debug.
Only a LimnerError may escape, and no socket may connect or resolve a name:
`!debug` is a dry run. bench/fuzz.py runs the same generator 100,000 times.
"""
from __future__ import annotations

import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fuzz_buffers  # noqa: E402


class HypothesisDraw:
    """The generator's choices as Hypothesis draws, so a failing buffer shrinks."""

    def __init__(self, data):
        self.data = data

    def pick(self, seq):
        return self.data.draw(st.sampled_from(seq))

    def upto(self, n: int) -> int:
        return self.data.draw(st.integers(0, n))

    def chance(self, percent: int) -> bool:
        return self.data.draw(st.integers(0, 99)) >= 100 - percent  # shrinks to False


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fuzz_buffers.make_tree(str(tmp_path_factory.mktemp("fuzz")))


# No shrinking by default: on broken code every fim:auto probe costs an httpx
# client (~0.1 s) and shrinking took minutes; the note shows the whole buffer.
# LIMNER_FUZZ_SHRINK=1 shrinks, which also lists every distinct bug, not the first.
_PHASES = (Phase.explicit, Phase.generate) + ((Phase.shrink,) if os.environ.get("LIMNER_FUZZ_SHRINK") else ())


@settings(max_examples=400, deadline=None, derandomize=True, database=None, phases=_PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_bad_buffers_raise_only_limner_errors_and_send_nothing(tree, data):
    text, default_profile = fuzz_buffers.case(HypothesisDraw(data))
    note(f"buffer: {text!r}, default profile: {default_profile!r}")
    attempts: list = []
    with fuzz_buffers.no_network(attempts):
        fuzz_buffers.exercise(text, default_profile, *tree)
    assert not attempts, f"network touched before sending: {attempts}"


def test_the_generator_reaches_the_risky_paths():
    """The shared generator really produces what the property needs (seeded, cheap)."""
    import random

    d = fuzz_buffers.RandomDraw(random.Random(8))
    texts = [fuzz_buffers.case(d)[0] for _ in range(2000)]
    assert sum("!profile fim:auto" in t and "!infill" in t for t in texts) > 100
    assert sum("\x00" in t and ("!context" in t or "!profile" in t) for t in texts) > 100
    assert {n for n in fuzz_buffers.NAMES if any(n in t for t in texts)} == set(fuzz_buffers.NAMES)
