"""Suites, scoring and `limner bench fim` end to end on the bundled Gemma."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from limner.fim import bench, suites

LIMNER = os.path.join(os.path.dirname(sys.executable), "limner")


def test_humaneval_infilling_counts_match_the_official_benchmarks():
    single = suites.load("humaneval-single")
    multi = suites.load("humaneval-multi")
    assert len(single) == 1033
    assert len(multi) == 5815
    assert len({t.id for t in multi}) == 5815
    t = next(t for t in single if t.id == "SingleLineInfilling/HumanEval/0/L3")
    assert t.middle == "                distance = abs(elem - elem2)\n"
    assert t.prefix.endswith("            if idx != idx2:\n")
    assert t.suffix.startswith("                if distance < threshold:\n")
    # Every span starts and ends on a code line.
    assert all(t.middle.strip() and t.middle.splitlines()[0].strip() and t.middle.splitlines()[-1].strip()
               for t in multi[:400])


def test_reference_middles_pass_their_tests():
    picked = suites.sample(suites.load("humaneval-multi"), 4, seed=3)
    for t in picked:
        assert bench.run_test(t.prefix + t.middle + t.suffix + "\n\n" + t.test), t.id
    broken = picked[0]
    assert not bench.run_test(broken.prefix + "    return None\n" + broken.suffix + "\n\n" + broken.test)


def test_seeded_sample_is_stable_and_spread():
    tasks = suites.load("humaneval-single")
    a = suites.sample(tasks, 50, seed=1)
    assert [t.id for t in a] == [t.id for t in suites.sample(tasks, 50, seed=1)]
    assert len({t.id.split("/")[2] for t in a}) > 30  # many problems, not the first few


def test_a_user_jsonl_suite(tmp_path):
    path = tmp_path / "suite.jsonl"
    rows = [
        {"id": "py-norm", "language": "python", "prefix": "def norm(x, y):\n",
         "suffix": "\n\nassert norm(3, 4) == 5\n", "middle": "    return (x * x + y * y) ** 0.5",
         "test": "assert norm(6, 8) == 10\n"},
        {"id": "go-add", "language": "go", "prefix": "package m\n\nfunc add(a, b int) int {\n\treturn ",
         "suffix": "\n}\n", "middle": "a + b"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = suites.load(str(path))
    assert [t.id for t in tasks] == ["py-norm", "go-add"]
    assert tasks[1].test is None and tasks[1].language == "go"
    # Scoring without a model: a recorded stream, replayed through every policy.
    stream = ["a", " +", " b", "\n", "}", "\n\n", "func", " sub", "(a", ", b", " int", ")", " int", " {", "\n"]
    gens = {"go-add": bench.Generation("go-add", stream, [0.01 * (i + 1) for i in range(len(stream))], 0.2, "length")}
    rows_out = {r.policy: r.as_json() for r in bench.score(tasks[1:], gens)}
    assert rows_out["limner"]["exact_match"] == 1.0 and rows_out["limner"]["tokens"] == 3
    assert rows_out["max-tokens"]["exact_match"] == 0.0 and rows_out["max-tokens"]["tokens"] == len(stream)
    assert rows_out["limner"]["pass@1"] is None  # no test: exact match and edit similarity only
    assert rows_out["limner"]["seconds"] < rows_out["max-tokens"]["seconds"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "prefix": "a"}\n')
    with pytest.raises(Exception, match="bad.jsonl:1"):
        suites.load(str(bad))


@pytest.mark.slow
def test_limner_bench_fim_runs_on_the_bundled_gemma(tmp_path):
    path = tmp_path / "suite.jsonl"
    path.write_text(json.dumps({
        "id": "norm", "language": "python", "prefix": "def norm(x, y):\n",
        "suffix": "\n\nprint(norm(3, 4))\n", "middle": "    return (x * x + y * y) ** 0.5",
        "test": "assert norm(6, 8) == 10\n"}) + "\n")
    cache = tmp_path / "gen.jsonl"
    cmd = [LIMNER, "bench", "fim", "--suite", str(path), "--json", "--cap", "32", "--threads", "1",
           "--cache", str(cache)]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    report = json.loads(r.stdout)
    assert [p["policy"] for p in report["policies"]] == list(bench.POLICIES)
    for p in report["policies"]:
        assert set(p) >= {"policy", "pass@1", "exact_match", "tokens", "seconds"}
        assert p["pass@1"] in (0.0, 1.0)
    by = {p["policy"]: p for p in report["policies"]}
    assert by["limner"]["tokens"] <= by["max-tokens"]["tokens"]
    assert "scoring" in r.stderr.decode()  # the progress bar
    # The generation is cached: a second run re-scores without the model.
    gen = json.loads(cache.read_text().splitlines()[0])
    assert gen["id"] == "norm" and 0 < len(gen["chunks"]) <= 32
    r2 = subprocess.run(cmd + ["--no-generate"], capture_output=True, timeout=120)
    again = json.loads(r2.stdout)["policies"]
    keys = ("policy", "pass@1", "exact_match", "tokens")
    assert [{k: p[k] for k in keys} for p in again] == [{k: p[k] for k in keys} for p in report["policies"]]
    table = subprocess.run(cmd[:5] + ["--cache", str(cache), "--no-generate"], capture_output=True, timeout=120)
    assert b"limner stop check" in table.stdout and b"pass@1" in table.stdout


@pytest.mark.slow
def test_infill_at_the_cursor_on_the_bundled_gemma_stops_where_the_code_is_complete(tmp_path):
    """The engine path end to end: a non-FIM model, prefix-only, the stop decides."""
    buf = ("!backend embedded\n!:temperature 0\n!:n_threads 1\n!:max_tokens 96\n!stats\n!lang python\n"
           "def norm(x, y):\n!infill\n    return r\n")
    env = dict(os.environ, LIMNER_ENGINE="inproc", HOME=str(tmp_path))
    r = subprocess.run([LIMNER, "--no-log"], input=buf.encode(), capture_output=True, timeout=300, env=env)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    reply, _, note = out.partition("\n!note")
    assert "stop: fim:" in note
    assert "def " not in reply  # no runaway into norm3...
    ast.parse("def norm(x, y):\n" + reply + "\n    return r\n")
    completion = next((n for n in note.split(",") if "reply" in n), "")
    assert int(completion.split("reply")[1].split()[0]) < 96  # stopped well before the cap


def test_an_unknown_policy_is_an_error_naming_the_known_ones(capsys):
    from limner import benchcli

    assert benchcli.main(["fim", "--suite", "humaneval-single", "--policies", "limner,magic"]) != 0
    out = capsys.readouterr().out
    assert out.startswith("\n\n!error\n\nunknown policy 'magic'") and "Use some of: " in out
