"""llama.vim's requests against `limner serve`'s /infill, on the bundled Gemma.

The request shapes are written here from reading llama.vim (ggml-org/llama.vim,
autoload/llama.vim); none of its code is in this repository. What it sends:

- on a cursor move, a FIM request: the lines above the cursor as
  `input_prefix` (joined, with a final line break), the cursor line up to the
  cursor as `prompt` (nothing on a blank line), the rest of that line, a line
  break and the lines below as `input_suffix`, ring-buffer chunks of other
  code as `input_extra`, `n_indent` (the cursor line's indentation), fixed
  samplers, `t_max_predict_ms` and `response_fields` (it reads the flat
  names back: "timings/prompt_n", ...);
- every second or so, a warm-up with only `input_extra`, `n_predict: 0`.

No request names a language: limner infers it. The server is the one
tests/test_serve.py starts (a real uvicorn on loopback, n_threads=1).
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from test_serve import LiveServer, engine, env, server  # noqa: F401 - fixtures

TIMINGS = ["timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
           "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
           "timings/predicted_per_token_ms", "timings/predicted_per_second"]
VIM_FIELDS = ["content", *TIMINGS, "truncated", "tokens_cached"]
# What the assertions need besides what llama.vim reads.
OURS = ["limner_stop_reason", "limner_language", "stop_type", "tokens_predicted"]


def cursor(lines: list[str], y: int, x: int | None = None) -> tuple[str, str, str, int]:
    """(input_prefix, prompt, input_suffix, n_indent) as llama.vim builds them
    for the cursor at line y (0-based), column x (default: end of line)."""
    line = lines[y]
    x = len(line) if x is None else x
    if not line.strip():  # a blank line counts from its start, with no indentation
        middle, rest, indent = "", "", 0
    else:
        middle, rest, indent = line[:x], line[x:], len(line) - len(line.lstrip())
    prefix = "\n".join(lines[max(0, y - 256):y]) + "\n"
    suffix = rest + "\n" + "\n".join(lines[y + 1:y + 1 + 64]) + "\n"
    return prefix, middle, suffix, indent


def chunk(text: str, filename: str) -> dict:
    return {"text": text, "time": [1718000000, 250000], "filename": filename}


def fim_request(lines, y, x=None, extra=(), t_max_predict_ms=250, **changes) -> dict:
    prefix, middle, suffix, indent = cursor(lines, y, x)
    body = {"id_slot": 0, "input_prefix": prefix, "input_suffix": suffix,
            "input_extra": list(extra), "prompt": middle, "n_predict": 128, "stop": [],
            "n_indent": indent, "top_k": 40, "top_p": 0.90,
            "samplers": ["top_k", "top_p", "infill"], "stream": False, "cache_prompt": True,
            "t_max_prompt_ms": 500, "t_max_predict_ms": t_max_predict_ms,
            "response_fields": list(VIM_FIELDS)}
    body.update(changes)
    return body


def warm_up_request(extra) -> dict:
    return {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": list(extra),
            "prompt": "", "n_predict": 0, "temperature": 0.0, "samplers": [], "stream": False,
            "cache_prompt": True, "t_max_prompt_ms": 1, "t_max_predict_ms": 1,
            "response_fields": [""]}


def greedy(body: dict) -> dict:
    """The same request, greedy (llama.vim's own warm-up sends temperature 0),
    with limner's stop fields among the ones asked for and, unless the test
    sets one, a time budget the shared test machine cannot run out of."""
    budget = body["t_max_predict_ms"] if body["t_max_predict_ms"] != 250 else 20000
    return dict(body, temperature=0, response_fields=body["response_fields"] + OURS,
                t_max_predict_ms=budget)


def post(srv, body: dict) -> dict:
    r = httpx.post(srv.url + "/infill", json=body, timeout=120)
    assert r.status_code == 200, r.text
    # llama.vim checks the raw reply with '"content"\s*:"' before decoding it.
    assert '"content":"' in r.text or "content" not in body.get("response_fields", ["content"])
    return r.json()


def stream(srv, body: dict) -> list[dict]:
    with httpx.stream("POST", srv.url + "/infill", json=dict(body, stream=True),
                      timeout=120) as s:
        assert s.status_code == 200
        return [json.loads(ln[len("data: "):]) for ln in s.iter_lines() if ln.startswith("data: ")]


def idle(srv, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while httpx.get(srv.url + "/health", timeout=30).json()["running"]:
        assert time.monotonic() < deadline, "the server stayed busy"
        time.sleep(0.1)


def parses(language: str, text: str) -> bool:
    from limner.fim import treesitter

    parser = treesitter.parser(language)
    return treesitter.count_errors(parser.parse(text.encode("utf-8"))) == 0


def committed_only(body: dict, middle: str) -> bool:
    """Would a fresh stop keep all of `middle`? (Then no text was sent that the
    cut took back.)"""
    from limner.fim.stream import make_stopper

    stop = make_stopper({"prefix": body["input_prefix"] + body["prompt"],
                         "suffix": body["input_suffix"]})
    keep = stop.feed(middle)
    keep = stop.finish() if keep is None else keep
    return keep is None or keep == len(middle)


GEOMETRY = "def square(side):\n    return side * side\n\n\ndef circle(r):\n    return 3.14159 * r * r\n"


# ---------------------------------------------------------------- the warm-up


def test_warm_up_answers_at_once_with_nothing_and_primes_the_cache(server):
    extra = [chunk(GEOMETRY, "geometry.py"), chunk(GEOMETRY.replace("side", "s"), "shapes.py")]
    t0 = time.monotonic()
    r = httpx.post(server.url + "/infill", json=warm_up_request(extra), timeout=120)
    assert time.monotonic() - t0 < 1.0, "a warm-up must not wait for the engine"
    assert r.status_code == 200 and r.json() == {}  # response_fields [""] asks for nothing
    whole = post(server, dict(warm_up_request(extra), response_fields=None))
    assert whole["content"] == "" and whole["stop"] is True and whole["tokens_predicted"] == 0
    idle(server)
    # The next completion finds the extra chunks already evaluated.
    lines = ["def rectangle(w, h):", "", "", "", "print(rectangle(2, 3))"]
    out = post(server, greedy(fim_request(lines, 1, extra=extra)))
    assert out["tokens_cached"] > 40, out
    assert set(out) == set(VIM_FIELDS + OURS)


# ---------------------------------------------------------------- the stop, no language given

PY = ["import math", "", "", "def area(width, height):", "", "", "", "print(area(2, 3))"]
PY_MIDLINE = ["def area(width, height):", "    return ", "", "", "print(area(2, 3))"]
C = ["#include <stdio.h>", "", "int add(int a, int b) {", "", "}", "", "int main(void) {",
     '    printf("%d\\n", add(1, 2));', "    return 0;", "}"]
JS = ["function add(a, b) {", "", "}", "", "console.log(add(1, 2));"]


@pytest.mark.parametrize("lines, y, x, language", [
    (PY, 4, None, "python"),
    (PY_MIDLINE, 1, 11, "python"),
    (C, 3, None, "c"),
    (JS, 1, None, "javascript"),
], ids=["python", "python-midline", "c", "javascript"])
def test_the_middle_stops_where_the_code_is_complete(server, lines, y, x, language):
    body = fim_request(lines, y, x)
    # Exactly as llama.vim sends it (sampled): accepted, answered in the fields it asked for.
    as_sent = post(server, body)
    assert set(as_sent) <= set(VIM_FIELDS) and isinstance(as_sent["content"], str)
    assert as_sent["truncated"] is False and isinstance(as_sent["timings/predicted_n"], int)

    out = post(server, greedy(body))
    middle = out["content"]
    assert out["limner_language"] == language
    assert out["limner_stop_reason"].startswith("fim:"), out
    assert out["stop_type"] == "word" and out["tokens_predicted"] < 128
    assert middle.strip()
    whole = body["input_prefix"] + body["prompt"] + middle + body["input_suffix"]
    assert parses(language, whole), whole
    assert committed_only(body, middle)

    events = stream(server, greedy(body))
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == middle  # nothing sent, then taken back
    assert events[-1]["limner_stop_reason"] == out["limner_stop_reason"]


def test_a_cut_of_trailing_blank_lines_is_never_sent(server):
    """At the end of a file the model writes `return ...`, a blank line, then
    more definitions; the blank line is cut, so it must never be sent."""
    lines = ["def area(width, height):", ""]
    for n_predict in (6, 48):  # ends on the blank line (fim:end) / runs on (fim:scope)
        body = greedy(fim_request(lines, 1, n_predict=n_predict))
        out = post(server, body)
        events = stream(server, body)
        streamed = "".join(e["content"] for e in events)
        assert out["limner_stop_reason"] in ("fim:end", "fim:scope"), out
        assert streamed == out["content"] and streamed.strip()
        assert not streamed.endswith("\n"), repr(streamed)
        assert committed_only(body, streamed)


def test_t_max_predict_ms_bounds_decoding(server):
    lines = ["PRIMES = [", "    2,", "    3,", "    5,", ""]  # a list the model goes on with
    # 1 ms: always over by the first line break, so the limit (not the model's
    # own stop, which a fast machine reaches within 300 ms) ends the middle.
    out = post(server, greedy(fim_request(lines, 4, t_max_predict_ms=1)))
    assert out["stop_type"] == "limit" and out["tokens_predicted"] < 128, out
    assert out["timings/predicted_ms"] < 5000


def test_a_prompt_too_long_drops_extra_chunks_and_says_truncated(server):
    big = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(40))  # ~500 tokens
    extra = [chunk(big, f"mod{i}.py") for i in range(4)]  # more than n_ctx 1024
    out = post(server, greedy(fim_request(PY, 4, extra=extra)))
    assert out["truncated"] is True and out["content"].strip()


# ---------------------------------------------------------------- /v1/completions with a suffix


def test_openai_completion_with_a_suffix_stops_and_says_why(server):
    prefix, middle, suffix, _ = cursor(JS, 1)
    body = {"model": "gemma3-270m", "prompt": prefix + middle, "suffix": suffix,
            "max_tokens": 64, "temperature": 0}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=120).json()
    choice = r["choices"][0]
    assert choice["limner_stop_reason"].startswith("fim:") and choice["finish_reason"] == "stop"
    assert parses("javascript", prefix + middle + choice["text"] + suffix)
    with httpx.stream("POST", server.url + "/v1/completions", json=dict(body, stream=True),
                      timeout=120) as s:
        chunks = [json.loads(ln[6:]) for ln in s.iter_lines()
                  if ln.startswith("data: ") and ln != "data: [DONE]"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert chunks[-1]["choices"][0]["limner_stop_reason"] == choice["limner_stop_reason"]
