"""`limner bench context`: the suite format, bad input, and a real run on a small repo."""
from __future__ import annotations

import json
import os
import random

import pytest

from limner import benchcli
from limner.retrieval import bench, bench_holes

DEFS = "def vorbex_quillan(text, width=8):\n    return text.center(width)\n"
USE = ("from pkg.fmt import vorbex_quillan\n\n\ndef show(items):\n    for item in items:\n"
       "        line = vorbex_quillan(item, 12)\n        print(line)\n")


@pytest.fixture
def suite(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMNER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "fmt.py").write_text(DEFS)
    (root / "pkg" / "show.py").write_text(USE)
    cut = USE.index("vorbex_quillan(item")
    hole = {"root": str(root) + "/", "path": "pkg/show.py", "prefix": USE[:cut],
            "suffix": USE[USE.index("\n", cut):], "expected": "vorbex_quillan(item, 12)",
            "symbol": "vorbex_quillan", "def_path": "pkg/fmt.py", "def_line": 1}
    path = tmp_path / "suite.jsonl"
    path.write_text(json.dumps(hole) + "\n")
    return path


def test_a_small_suite_runs_part_one(suite, capsys):
    assert benchcli.main(["context", "--suite", str(suite), "--budget", "256",
                          "--json", str(suite) + ".out"]) == 0
    out = capsys.readouterr().out
    assert "retrieve recall@5 (a top-5 block from the defining file covers or names it): 1/1" in out
    result = json.loads(open(str(suite) + ".out").read())
    assert result["part1"]["recall@5"] == 1.0
    # The hole's file is back as it was (it is rewritten without the hole while measured).
    assert open(os.path.join(json.loads(suite.read_text())["root"], "pkg/show.py")).read() == USE


@pytest.mark.parametrize("argv, words", [
    (["--conditions", "in-file,+magic"], "unknown condition '+magic'"),
    (["--budget", "0"], "must be positive"),
])
def test_bad_options_are_errors(suite, capsys, argv, words):
    assert benchcli.main(["context", "--suite", str(suite), *argv]) != 0
    out = capsys.readouterr().out
    assert out.startswith("\n\n!error\n\n") and words in out


def test_a_suite_line_without_a_field_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"root": "/tmp", "path": "a.py"}\n')
    assert benchcli.main(["context", "--suite", str(bad)]) != 0
    out = capsys.readouterr().out
    assert f"{bad}:1: the hole has no prefix" in out
    assert benchcli.main(["context", "--suite", str(tmp_path / "missing.jsonl")]) != 0
    assert "cannot read" in capsys.readouterr().out


def test_the_symbol_cut_keeps_the_line_before_the_symbol(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "a.py").write_text("\n" * 7 + "def f(x):\n    value = helper.vorbex_quillan(x, 3)\n")
    target = [("vorbex_quillan", "b.py", 1)]
    mapping = {"vorbex_quillan": "vorbex_quillan"}
    line, = bench_holes.holes_for(str(pkg), "p", target, mapping, random.Random(1))
    sym, = bench_holes.holes_for(str(pkg), "p", target, mapping, random.Random(1), cut="symbol")
    assert line["prefix"].endswith("\n    ") and line["expected"] == "value = helper.vorbex_quillan(x, 3)"
    assert sym["prefix"].endswith("\n    value = helper.") and sym["expected"] == "vorbex_quillan(x, 3)"


def test_renaming_is_consistent_and_made_up():
    names = bench_holes.new_names(["parse_header", "HeaderParser", "_quote"])
    assert names["parse_header"].count("_") == 1 and names["HeaderParser"][0].isupper()
    assert names["_quote"].startswith("_") and len(set(names.values())) == 3
    assert bench_holes.made_up("parse_header") == bench_holes.made_up("parse_header")


def test_scores():
    h = {"expected": "vorbex_quillan(item, 12)", "symbol": "vorbex_quillan"}
    assert bench.score("vorbex_quillan(item, 12)\n", h) == {"em": True, "es": 1.0, "ident": True}
    s = bench.score("\n  vorbex_quillan(item)\n", h)
    assert not s["em"] and s["ident"] and 0.5 < s["es"] < 1


@pytest.mark.slow
@pytest.mark.parametrize("frame", ["comment", "repo"])
def test_part_two_with_the_bundled_model(suite, capsys, tmp_path_factory, monkeypatch, frame):
    from engine_support import shared_data_dir

    monkeypatch.setenv("LIMNER_DATA_DIR", str(shared_data_dir(tmp_path_factory)))
    assert benchcli.main(["context", "--suite", str(suite), "--budget", "256", "--model",
                          "smollm2-135m", "--max-tokens", "12", "--frame", frame,
                          "--json", str(suite) + ".out"]) == 0
    out = capsys.readouterr().out
    for cond in bench.CONDITIONS:
        assert f"\n{cond:12s} " in out
    rows = json.loads(open(str(suite) + ".out").read())["rows"]
    assert set(rows) == set(bench.CONDITIONS) and all(len(r) == 1 for r in rows.values())
    assert rows["in-file"][0]["ctx_tokens"] == 0 < rows["+definition"][0]["ctx_tokens"]
    # The definition reached the prompt: more prompt tokens than the window alone.
    assert rows["+definition"][0]["prompt"] > rows["in-file"][0]["prompt"] + 10


def test_model_rows_resume_from_the_rows_file(suite, tmp_path):
    """Holes already in --rows are read back, not generated (no model is loaded)."""
    rows_file = tmp_path / "rows.jsonl"
    holes = bench_holes.load(str(suite))
    row = {"em": True, "es": 1.0, "ident": True, "secs": 0.1, "reply": "x", "prompt": 9, "ctx_tokens": 0}
    rows_file.write_text(json.dumps({"id": holes[0]["id"], "rows": {c: row for c in bench.CONDITIONS}})
                         + "\n" + '{"id": "cut sh')
    got = bench.run(holes, 256, "no-such-model-is-needed", rows_file=str(rows_file))
    assert got == {c: [row] for c in bench.CONDITIONS}


def test_repo_frame_gives_files_not_comments(suite):
    from limner.retrieval.budget import Approx

    h = bench_holes.load(str(suite))[0]
    ix = bench.Indexes()
    try:
        with ix.without_hole(h) as idx:
            ctx = bench.contexts(idx, h, 256, Approx(), frame="repo")
    finally:
        ix.close()
    text, files = ctx["+retrieve"]
    assert text == "" and files and files[0][0] == "pkg/fmt.py" and "def vorbex_quillan" in files[0][1]
    assert ctx["+definition"] == ("", [("pkg/fmt.py", bench.definition_text(h) + "\n")])
    assert ctx["+outline"].startswith("# ")  # the outline is no file: it stays comments
