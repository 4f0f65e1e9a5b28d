"""The in-process Engine on the real bundled models (n_threads pinned, see engine_support.THREADS).

Outputs are kept short (max_tokens 4-32); temperature 0 makes them
deterministic, which lets us check that a warm (prefix-cached) call
produces exactly what a cold one does.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_support import THREADS, collect, module_engine  # noqa: E402

from limner.engine import prompts  # noqa: E402
from limner.engine.core import Engine, Job  # noqa: E402
from limner.events import Failure, Stopped, Text  # noqa: E402

GREEDY = {"temperature": 0, "n_threads": THREADS}
CODE = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    yield from module_engine(tmp_path_factory, max_models=2)


def chat(*turns):
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


def test_chat_streams_text_usage_and_stop(engine):
    text, usage, end = collect(engine.stream(Job(messages=chat("Name three primary colours."),
                                                 params={**GREEDY, "max_tokens": 24})))
    assert text.strip()
    assert isinstance(end, Stopped) and end.reason in ("stop", "length")
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 24
    assert usage.prompt_ms > 0 and usage.predicted_ms > 0
    assert usage.extra["model"] == "smollm2-135m" and usage.extra["n_threads"] == THREADS
    assert usage.extra["n_ctx"] == 8192  # the model's trained context, not llama-cpp-python's 512


def test_max_tokens_is_honoured_not_16(engine):
    _, usage, end = collect(engine.stream(Job(mode="completion", prompt="1, 2, 3, 4, 5,",
                                              params={**GREEDY, "max_tokens": 20})))
    assert usage.completion_tokens == 20 and end.reason == "length"


def test_second_call_evaluates_only_the_new_turn(engine):
    first = chat("Tell me a fact about the moon.")
    text1, u1, _ = collect(engine.stream(Job(messages=first, params={**GREEDY, "max_tokens": 16})))
    second = first + [{"role": "assistant", "content": text1}, {"role": "user", "content": "Another one?"}]
    _, u2, _ = collect(engine.stream(Job(messages=second, params={**GREEDY, "max_tokens": 4})))
    # The whole first prompt is reused; only the reply and the new turn are evaluated.
    assert u2.cached_tokens >= u1.prompt_tokens
    new_tokens = u2.prompt_tokens - u2.cached_tokens
    assert new_tokens <= u1.completion_tokens + 16, (u1, u2)


def test_warm_output_equals_cold_output(engine):
    job = Job(mode="completion", prompt=CODE, params={**GREEDY, "max_tokens": 12})
    cold_engine = Engine(n_threads=THREADS, max_models=1)
    try:
        cold, _, _ = collect(cold_engine.stream(job))
    finally:
        cold_engine.close()
    collect(engine.stream(job))
    warm, usage, _ = collect(engine.stream(job))
    assert usage.cached_tokens == usage.prompt_tokens - 1  # all but the token that gives logits
    assert warm == cold and warm.strip()


def test_switching_buffers_keeps_both_warm(engine):
    a = "The quick brown fox jumps over the lazy dog. " * 12
    b = "Pack my box with five dozen liquor jugs. " * 12
    run = lambda p: collect(engine.stream(Job(mode="completion", model="smollm2-135m", prompt=p,  # noqa: E731
                                              params={**GREEDY, "max_tokens": 2})))[1]
    ua = run(a)
    run(b)  # evicts a from the live context; the engine snapshots it
    again = run(a + "Again.")
    assert again.cached_tokens >= ua.prompt_tokens - 1
    assert engine.cache.size <= engine.cache.capacity and len(engine.cache) >= 1


def test_completion_uses_gemma_and_stop_strings(engine):
    text, usage, end = collect(engine.stream(Job(mode="completion", prompt=CODE,
                                                 params={**GREEDY, "max_tokens": 32, "stop": ["\n"]})))
    assert usage.extra["model"] == "gemma3-270m"
    assert "\n" not in text and end.reason == "stop"


def test_fim_without_fim_tokens_is_prefix_only(engine):
    prefix, suffix = "def add(a, b):\n    return", "\n\nprint(add(1, 2))\n"
    _, usage, end = collect(engine.stream(Job(mode="fim", prefix=prefix, suffix=suffix,
                                              params={**GREEDY, "max_tokens": 4})))
    assert isinstance(end, Stopped)
    model = engine._models[next(iter(k for k in engine._models if "gemma" in k[0]))]
    assert model.fim is None
    expected = 1 + len(model.llm.tokenize(prefix.encode(), add_bos=False))  # <bos> + prefix, no suffix
    assert usage.prompt_tokens == expected


def test_fim_layout_uses_the_models_own_ids():
    ids = {"prefix": 100, "suffix": 101, "middle": 102}
    assert prompts.fim_tokens(ids, 1, [5, 6], [7]) == [1, 100, 5, 6, 101, 7, 102]
    assert prompts.fim_tokens(None, None, [5, 6], [7]) == [5, 6]


def test_chat_template_is_rendered_from_the_gguf(engine):
    collect(engine.stream(Job(messages=chat("hi"), params={**GREEDY, "max_tokens": 1})))
    m = next(v for v in engine._models.values() if v.name == "smollm2-135m")
    text = prompts.render_chat(m.template, chat("hi"), bos=m.bos_text, eos=m.eos_text)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>system" in text  # SmolLM2's template adds its default system turn


def test_cancel_stops_within_a_token(engine):
    cancel = threading.Event()
    seen = []
    for ev in engine.stream(Job(mode="completion", model="smollm2-135m", prompt="1, 2, 3,",
                                params={**GREEDY, "max_tokens": 500}), cancel):
        seen.append(ev)
        if isinstance(ev, Text) and len(seen) == 3:
            cancel.set()
    assert isinstance(seen[-1], Failure) and seen[-1].kind == "cancelled"
    assert sum(isinstance(e, Text) for e in seen) <= 4
    # ... and the engine is fine afterwards.
    _, _, end = collect(engine.stream(Job(messages=chat("hi"), params={**GREEDY, "max_tokens": 2})))
    assert isinstance(end, Stopped)


def test_bad_models_and_params_are_failures_not_exceptions(engine, tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 100)
    cases = [
        (Job(model="nope"), "model", "unknown model 'nope'"),
        (Job(model=str(junk)), "model", "not a valid GGUF"),
        (Job(params={"temperature": "hot"}), "params", "temperature must be a number"),
        (Job(mode="completion", model="smollm2-135m", prompt="word " * 100,
             params={"n_ctx": 64}), "context", "the context holds 64"),
    ]
    for job, kind, message in cases:
        _, _, end = collect(engine.stream(job))
        assert isinstance(end, Failure) and end.kind == kind and message in end.message, end


def test_jobs_from_threads_run_one_at_a_time_in_order(engine):
    order, lock = [], threading.Lock()

    def worker(i):
        for ev in engine.stream(Job(mode="completion", model="smollm2-135m", prompt=f"{i}.",
                                    params={**GREEDY, "max_tokens": 3})):
            with lock:
                order.append((i, type(ev).__name__))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Each job's events are contiguous: no interleaving between jobs.
    runs = [i for n, (i, _) in enumerate(order) if n == 0 or order[n - 1][0] != i]
    assert sorted(runs) == [0, 1, 2]


def test_stop_scanner_holds_back_partial_matches():
    s = prompts.StopScanner(["<END>"])
    assert s.feed("abc<E") == ("abc", False)
    assert s.feed("N") == ("", False)
    assert s.feed("D>tail") == ("", True)
    s = prompts.StopScanner(["\n\n"])
    assert s.feed("x\n") == ("x", False)
    assert s.feed("y") == ("\ny", False)
    assert s.flush() == ""


def test_a_full_snapshot_cache_evicts_without_losing_the_restore():
    # Room for about one snapshot: saving the live context before restoring
    # another evicts the one being restored (a KeyError once killed a run).
    a = "The quick brown fox jumps over the lazy dog. " * 12
    b = "Pack my box with five dozen liquor jugs. " * 12
    eng = Engine(n_threads=THREADS, max_models=1, cache_bytes=6 * 1024 * 1024)
    try:
        run = lambda p: collect(eng.stream(Job(mode="completion", model="smollm2-135m", prompt=p,  # noqa: E731
                                               params={**GREEDY, "max_tokens": 2})))
        for prompt in (a, b, a + "x", b + "y", a + "z"):
            _, usage, end = run(prompt)
            assert isinstance(end, Stopped), end
        assert eng.cache.size <= eng.cache.capacity
        assert usage.cached_tokens > 100  # a's context came back
    finally:
        eng.close()
