"""Shared helpers for the engine tests: one data dir per session, event helpers."""
from __future__ import annotations

import contextlib

from limner.events import Failure, Stopped, Text, Usage

THREADS = 1  # always pinned; 1, because with other work on the 2 cores, 2 threads spin-wait (10x slower)


def shared_data_dir(tmp_path_factory):
    """The same data dir for every engine test module, so Gemma is assembled once."""
    d = tmp_path_factory.getbasetemp() / "limner-shared-data"
    d.mkdir(exist_ok=True)
    return d


def collect(events):
    """(text, usage, end) of a finished event stream, checking its shape."""
    events = list(events)
    texts = [e for e in events if isinstance(e, Text)]
    usages = [e for e in events if isinstance(e, Usage)]
    ends = [e for e in events if isinstance(e, (Stopped, Failure))]
    assert len(ends) == 1 and events[-1] is ends[0], events
    assert len(usages) <= 1
    return "".join(t.text for t in texts), (usages[0] if usages else None), ends[0]


def module_engine(tmp_path_factory, **options):
    """A module fixture's Engine on the shared data dir (use with `yield from`)."""
    import pytest

    from limner.engine.core import Engine

    mp = pytest.MonkeyPatch()
    mp.setenv("LIMNER_DATA_DIR", str(shared_data_dir(tmp_path_factory)))
    eng = Engine(n_threads=THREADS, **options)
    try:
        yield eng
    finally:
        eng.close()
        mp.undo()


# The same, as `with engine_session(tmp_path_factory, max_models=1) as eng:` in one test.
engine_session = contextlib.contextmanager(module_engine)
