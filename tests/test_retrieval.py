"""limner.retrieval: the index (incremental, self-healing), the budgeter (never
over), the outline (signatures only, deterministic) and retrieval, on a small
synthetic repository made in tmp."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from limner import cli
from limner.errors import LimnerError
from limner.retrieval import budget, index, outline, retrieve, tags

SHAPES = '''"""Shapes."""


class Widget:
    """A widget."""

    def __init__(self, size):
        self.size = size

    def frobnicate_widget(self, factor, *, clamp=True):
        scaled = self.size * factor
        return min(scaled, 100) if clamp else scaled


def make_widget(size=1):
    return Widget(size)
'''

USE = '''from pkg.shapes import make_widget


def run():
    w = make_widget(3)
    total = w.frobnicate_widget(2)
    return total
'''

UTIL_C = '''#include "util.h"

int frob_count(int x) {
    return x * 2;
}
'''
UTIL_H = "int frob_count(int x);\n"
APP_JS = '''function renderWidget(node, opts) {
  return node.size * opts.scale;
}

class Panel {
  draw(ctx) { return renderWidget(ctx.node, {scale: 2}); }
}
'''


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMNER_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    write(root, "pkg/__init__.py", "")
    write(root, "pkg/shapes.py", SHAPES)
    write(root, "pkg/use.py", USE)
    write(root, "lib/util.c", UTIL_C)
    write(root, "lib/util.h", UTIL_H)
    write(root, "web/app.js", APP_JS)
    write(root, ".git/config", "not a repo, just a folder to skip\n")
    (root / "logo.png").write_bytes(b"\x89PNG\0\0binary")
    return root


def defs(idx):
    return {r[0] for r in idx.conn.execute("SELECT name FROM defs")}


# ---------------------------------------------------------------- index


def test_index_files_tags_chunks(repo, tmp_path):
    idx = index.open_index(repo)
    assert idx.path.parent == tmp_path / "cache" / "index"
    assert {"Widget", "frobnicate_widget", "make_widget", "frob_count", "renderWidget",
            "Panel", "draw"} <= defs(idx)
    paths = {r[0] for r in idx.conn.execute("SELECT path FROM files")}
    assert not any(p.startswith(".git/") for p in paths)
    assert dict(idx.conn.execute("SELECT path, status FROM files"))["logo.png"] == "binary"
    kinds = {r[0] for r in idx.conn.execute("SELECT kind FROM chunks")}
    assert kinds == {"def", "window"}
    hits = idx.conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'frobnicate'")
    assert hits.fetchone()[0] >= 2


def test_credential_files_are_never_indexed(repo):
    """The guard's deny list and .limnerignore apply before the index reads a file."""
    write(repo, ".env", "API_TOKEN=frobnicate_widget_secret_value\n")
    write(repo, "deploy/id_rsa", "frobnicate_widget private key stand-in\n")
    write(repo, "notes/private.py", "def frobnicate_private(): pass\n")
    write(repo, ".limnerignore", "notes/\n")
    idx = index.open_index(repo)
    paths = {r[0] for r in idx.conn.execute("SELECT path FROM files")}
    assert {".env", "deploy/id_rsa", "notes/private.py"}.isdisjoint(paths)
    assert "pkg/shapes.py" in paths
    assert "frobnicate_private" not in defs(idx)
    # Denied after it was indexed: the next update drops it.
    write(repo, ".limnerignore", "notes/\npkg/use.py\n")
    idx = index.open_index(repo)
    assert "pkg/use.py" not in {r[0] for r in idx.conn.execute("SELECT path FROM files")}


def test_reindex_touches_only_the_changed_file(repo):
    first = index.open_index(repo).stats
    assert first["parsed"] == 6 and first["skipped"] == 1
    idx = index.Index(str(repo))
    assert idx.update() == {**idx.stats, "read": 0, "parsed": 0, "removed": 0}
    write(repo, "pkg/use.py", USE + "\n\ndef extra_helper():\n    return 1\n")
    st = idx.update()
    assert (st["read"], st["parsed"], st["unchanged"]) == (1, 1, st["listed"] - 1)
    assert "extra_helper" in defs(idx)
    os.utime(repo / "lib/util.c")  # touched, same bytes: read and hashed, not parsed
    st = idx.update()
    assert (st["read"], st["parsed"]) == (1, 0)
    (repo / "web/app.js").unlink()
    st = idx.update()
    assert (st["removed"], st["read"]) == (1, 0)
    assert "renderWidget" not in defs(idx)
    assert idx.conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH "
                            "'renderWidget'").fetchone()[0] == 0


def test_older_schema_rebuilds(repo, monkeypatch):
    index.open_index(repo).close()
    monkeypatch.setattr(index, "SCHEMA_VERSION", index.SCHEMA_VERSION + 1)
    idx = index.open_index(repo)
    assert idx.rebuilt.startswith("schema")
    assert idx.stats["parsed"] == 6
    assert idx.conn.execute("PRAGMA user_version").fetchone()[0] == index.SCHEMA_VERSION


def test_corrupt_db_rebuilds(repo):
    path = index.db_path(repo)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 500)
    idx = index.open_index(repo)
    assert "unreadable" in idx.rebuilt
    assert "Widget" in defs(idx) and not idx.in_memory


def test_locked_db_is_rebuilt_in_memory(repo):
    index.open_index(repo).close()
    holder = sqlite3.connect(index.db_path(repo), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        idx = index.Index(str(repo), lock_wait=0.1)
        idx.update()
        assert idx.in_memory and "locked" in idx.rebuilt
        assert "Widget" in defs(idx)
    finally:
        holder.execute("ROLLBACK")


def test_file_changing_while_indexed_is_read_again(repo, monkeypatch):
    real = tags.analyze
    calls = []

    def racing(data, lang):
        out = real(data, lang)
        if not calls and b"make_widget" in data and b"def run" not in data:
            calls.append(1)  # the editor saves while we parse
            write(repo, "pkg/shapes.py", SHAPES.replace("make_widget", "build_widget"))
            st = os.stat(repo / "pkg/shapes.py")
            os.utime(repo / "pkg/shapes.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        return out

    monkeypatch.setattr(tags, "analyze", racing)
    idx = index.open_index(repo, jobs=1)
    assert calls and idx.stats["retried"] == 1
    names = {r[0] for r in idx.conn.execute(
        "SELECT d.name FROM defs d JOIN files f ON f.id = d.file_id WHERE f.path='pkg/shapes.py'")}
    assert "build_widget" in names and "make_widget" not in names


def test_missing_dir_and_binary_only_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMNER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(LimnerError, match="no such directory"):
        index.open_index(tmp_path / "nope")
    bins = tmp_path / "bins"
    bins.mkdir()
    for i in range(3):
        (bins / f"blob{i}.bin").write_bytes(b"\0\1\2" * 100)
    with pytest.raises(LimnerError, match=r"no text files to index \(3 binary\)"):
        index.open_index(bins)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LimnerError, match="no files at all"):
        index.open_index(tmp_path / "empty")


def test_minified_and_huge_files_are_skipped(repo):
    write(repo, "web/min.js", "var a=1;" * 2000)
    (repo / "big.txt").write_text("x\n" * (index.MAX_BYTES // 2 + 10))
    idx = index.open_index(repo)
    status = dict(idx.conn.execute("SELECT path, status FROM files"))
    assert (status["web/min.js"], status["big.txt"]) == ("minified", "large")


def test_every_language_query_compiles():
    for lang in tags.DEF_QUERIES:
        assert tags.supported(lang), lang


# ---------------------------------------------------------------- budget


class Lumpy:
    """Not additive: a join can cost more than its parts (some tokenizers do)."""

    def count(self, text):
        return len(text.split()) + 2 * text.count("\n\n") + (len(text) % 3)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(max_size=80), max_size=12),
       prios=st.lists(st.floats(-5, 5, allow_nan=False), min_size=12, max_size=12),
       limit=st.integers(-3, 200), lumpy=st.booleans(), header=st.sampled_from(["", "# ctx"]))
def test_budget_is_never_exceeded(texts, prios, limit, lumpy, header):
    counter = Lumpy() if lumpy else budget.Approx()
    blocks = [budget.Block(f"b{i}", t, priority=prios[i]) for i, t in enumerate(texts)]
    chosen = budget.fit(blocks, limit, counter, header=header)
    text = budget.render(chosen, header=header)
    assert counter.count(text) <= max(limit, 0) or not chosen
    assert not chosen or counter.count(text) <= limit
    order = [b.priority for b in chosen]
    assert order == sorted(order)
    assert {b.source for b in chosen} <= {b.source for b in blocks}


def test_fit_skips_a_big_block_and_keeps_smaller_later_ones():
    c = budget.Approx()
    blocks = [budget.Block("a", "alpha " * 5, priority=0), budget.Block("b", "word " * 500, priority=1),
              budget.Block("c", "gamma", priority=2)]
    assert [b.source for b in budget.fit(blocks, 20, c)] == ["a", "c"]


def test_counters():
    assert budget.Approx().count("") == 0
    assert budget.Callable(lambda t: t.split()).count("a b c") == 3
    assert budget.Callable(len).count("abcd") == 4
    v = budget.Vocab(["▁def", "def", "(", ")", ":", "    ", "\n", "▁foo", "foo", "<bos>"])
    assert v.count("def foo():\n") == 6  # def ▁foo ( ) : \n
    assert v.count("é") == 2  # unknown: one per UTF-8 byte


# ---------------------------------------------------------------- outline


def test_pagerank_sums_to_one_and_favours_the_hub():
    edges = {1: {3: 1.0}, 2: {3: 1.0}, 3: {1: 1.0}}
    r = outline.pagerank(edges, [1, 2, 3])
    assert abs(sum(r.values()) - 1) < 1e-6
    assert r[3] > r[1] > r[2]
    p = outline.pagerank(edges, [1, 2, 3], personal={2: 1.0})
    assert p[2] > r[2]


def test_outline_is_signatures_only_deterministic_and_in_budget(repo):
    idx = index.open_index(repo)
    o = outline.outline(idx, budget=400)
    assert o.text == outline.outline(idx, budget=400).text
    assert "pkg/shapes.py:" in o.text
    assert "def frobnicate_widget(self, factor, *, clamp=True):" in o.text
    assert "int frob_count(int x)" in o.text
    for body in ("return", "scaled =", "self.size = size"):
        assert body not in o.text
    assert budget.Approx().count(o.text) <= 400
    small = outline.outline(idx, budget=25)
    assert 0 < len(small.entries) < len(o.entries) and small.tokens <= 25
    # Among the Python files, the one the others use ranks first.
    assert outline.outline(idx, [".py"], budget=25).entries[0].path == "pkg/shapes.py"
    py = outline.outline(idx, ["py"], budget=400).text
    assert "frob_count" not in py and "Widget" in py


# ---------------------------------------------------------------- retrieve


def test_retrieve_finds_the_defining_file_of_a_renamed_symbol(repo):
    for rel in ("pkg/shapes.py", "pkg/use.py"):
        path = repo / rel
        path.write_text(path.read_text().replace("frobnicate_widget", "zq_scale_gadget"))
    idx = index.open_index(repo)
    blocks = retrieve.retrieve(idx, "What does zq_scale_gadget return when clamp is off?", 300)
    assert blocks[0].source.startswith("pkg/shapes.py:") and "definition" in blocks[0].reason
    assert "def zq_scale_gadget" in blocks[0].text
    assert sum(b.tokens for b in blocks) <= 300
    per_file = {}
    for b in blocks:
        per_file[b.source.split(":")[0]] = per_file.get(b.source.split(":")[0], 0) + 1
    assert max(per_file.values()) <= retrieve.MAX_PER_FILE
    assert [b.source for b in blocks] == [
        b.source for b in retrieve.retrieve(idx, "What does zq_scale_gadget return when clamp is off?", 300)]


def test_retrieve_bm25_without_identifiers(repo):
    idx = index.open_index(repo)
    blocks = retrieve.retrieve(idx, "scale opts node", 200)
    assert blocks and blocks[0].source.startswith("web/app.js")


def test_retrieve_for_cursor_definitions_near_the_hole_and_nothing_after_it(repo):
    idx = index.open_index(repo)
    text = (repo / "pkg/use.py").read_text()
    cut = text.index("    return total")
    blocks = retrieve.retrieve_for_cursor(idx, str(repo / "pkg/use.py"), text[:cut], text[cut:], 300)
    assert blocks[0].source.startswith("pkg/shapes.py")
    assert not any(b.source.startswith("pkg/use.py") for b in blocks)
    assert budget.Approx().count(budget.render(blocks)) <= 300


def test_jaccard():
    a, b = frozenset("abc"), frozenset("bcd")
    assert retrieve.jaccard(a, b) == 0.5 and retrieve.jaccard(frozenset(), frozenset()) == 0


# ---------------------------------------------------------------- CLI


def test_cli_index_outline_retrieve(repo, capsys):
    assert cli.main(["index", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "6 files" in out and "6 parsed" in out
    assert cli.main(["outline", str(repo), ".py", "--budget", "200"]) == 0
    out = capsys.readouterr()
    assert "class Widget:" in out.out and "/200 tokens" in out.err
    assert cli.main(["retrieve", str(repo), "make_widget", "--json"]) == 0
    assert '"source": "pkg/shapes.py:' in capsys.readouterr().out
    assert cli.main(["retrieve", str(repo), "--cursor", "pkg/use.py:7"]) == 0
    assert "definition of" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIMNER_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["index", str(tmp_path / "missing")]) == 1
    assert "!error" in capsys.readouterr().err
    assert cli.main(["outline", str(tmp_path), "--budget", "0"]) == 1
    assert "positive" in capsys.readouterr().err


def test_cli_import_is_light():
    code = ("import sys; import limner.cli, limner.retrieval.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('tree_sitter')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rebuild_starts_from_an_empty_index(repo, capsys):
    assert cli.main(["index", str(repo)]) == 0
    capsys.readouterr()
    assert cli.main(["index", str(repo), "--rebuild", "--json"]) == 0
    assert '"parsed": 6' in capsys.readouterr().out


def test_imports_and_aliases():
    got = retrieve._imports("from . import a, b as c\nfrom x.y import (\n  d,\n  e as f)\n"
                            "import os.path\nimport numpy as np\n    pass\n")
    assert got == {"a": "a", "c": "b", "d": "d", "f": "e", "path": "path", "np": "numpy"}


def test_cursor_offers_the_api_of_an_imported_module(repo):
    write(repo, "pkg/tools.py", "def zq_alpha(a):\n    return a\n\n\ndef zq_beta(b, c=2):\n"
                                "    return b * c\n")
    text = "from pkg import tools as t\n\n\ndef go(x):\n    y = t.zq_alpha(x)\n"
    idx = index.open_index(repo)
    blocks = retrieve.retrieve_for_cursor(idx, str(repo / "pkg/new.py"), text + "    return ",
                                          "\n", 300)
    first = blocks[0]
    assert first.source.startswith("pkg/tools.py") and "signatures" in first.reason
    assert "def zq_beta(b, c=2):" in first.text and "return b * c" not in first.text


def test_the_word_being_typed_does_not_change_the_blocks(repo):
    """Each keystroke must keep the same context, or the prefix cache cannot reuse it."""
    idx = index.open_index(repo)
    text = (repo / "pkg/use.py").read_text()
    cut = text.index("    return total")
    path = str(repo / "pkg/use.py")
    before = retrieve.retrieve_for_cursor(idx, path, text[:cut] + "    ", text[cut:], 300)
    # `renderWidget` is defined in web/app.js: typed out in full at the cursor it
    # would pull that definition in until the next character is typed.
    for typed in ("r", "ret", "rend", "renderWidget"):
        after = retrieve.retrieve_for_cursor(idx, path, text[:cut] + "    " + typed, text[cut:], 300)
        assert [b.source for b in after] == [b.source for b in before], typed
