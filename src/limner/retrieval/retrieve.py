"""The best chunks of a repository for a question, or for the code at a cursor.

For a query: the definitions of the identifiers it names come first (the
user said the name; the definition is the answer), then BM25 hits from FTS5.
For a cursor (infill): definitions of the identifiers nearest the hole, then
windows that look like the code around it (Jaccard over identifier sets),
never from the current file's visible text, at or after the hole.

Both are deduplicated (overlapping chunks of a file count once), at most
MAX_PER_FILE per file, fitted to the budget in priority order, and
deterministic: ties break by path and line, so the same input gives the
same blocks in the same order.
"""
from __future__ import annotations

import builtins
import os
import re
from typing import Callable

from limner.retrieval.budget import Approx, Block, Counter, fit

MAX_PER_FILE = 2      # Tabby's rule: variety beats five views of one file
DEFS_PER_NAME = 3     # an ambiguous name gets a few of its definitions, not all
BM25_CANDIDATES = 40
COMMON = 0.01         # a word in more than this share of chunks is noise to BM25
CURSOR_LINES = 20     # the "code around the cursor" for similarity
NEAR_LINES = (15, 5)  # lines before / after the hole whose identifiers we resolve
TOO_SIMILAR = 0.9     # a window this close to the cursor area makes the model repeat
AMBIGUOUS = 4         # near the cursor, a name defined more often than this is skipped
GENERIC = frozenset(dir(builtins))  # `str`, `len`: the builtin, not a local namesake

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z0-9]+")
# Words that are never worth a definition lookup: English glue and keywords.
STOP = frozenset("""
a an and are as at be by can do does for from has have how i if in into is it its
me my no not of on or so that the their then there these this to was what when where
which who why will with you your def class return self none true false import else
elif while try except finally pass break continue lambda yield async await function
var let const new null undefined void int char float double long struct static public
private protected func package type interface fn mut impl use pub
""".split())


def identifiers(text: str) -> list[str]:
    """Identifier-looking words, first appearance order, no stop words or 1-2 letter ones."""
    seen: dict[str, None] = {}
    for m in _IDENT.finditer(text):
        w = m.group()
        if len(w) >= 3 and w.lower() not in STOP:
            seen.setdefault(w, None)
    return list(seen)


def frame(path: str, start: int, end: int, text: str) -> str:
    """How a chunk reads in the prompt (phase 2 renders it in the buffer's language)."""
    return f"--- {path}:{start}-{end}\n{text}"


def _rel(idx, path: str) -> str:
    full = os.path.realpath(os.path.join(idx.root, path))
    rel = os.path.relpath(full, idx.root)
    return rel.replace(os.sep, "/")


class _Picker:
    """Candidates in priority order → distinct blocks, per-file cap."""

    def __init__(self, framer):
        self.framer = framer
        self.blocks: list[Block] = []
        self.spans: dict[str, list[tuple[int, int]]] = {}

    def add(self, path, start, end, text, reason, exclude=None) -> None:
        if exclude and exclude(path, start, end):
            return
        spans = self.spans.setdefault(path, [])
        if len(spans) >= MAX_PER_FILE or any(s <= end and start <= e for s, e in spans):
            return
        spans.append((start, end))
        self.blocks.append(Block(f"{path}:{start}-{end}", self.framer(path, start, end, text),
                                 reason, priority=len(self.blocks)))


def _definitions(idx, name: str) -> list[tuple]:
    """(path, start, end, text) of `name`'s definitions: chunks, else signatures."""
    rows = idx.conn.execute(
        "SELECT f.path, c.start, c.end, c.text FROM chunks c JOIN files f ON f.id = c.file_id "
        "WHERE c.name = ? AND c.kind = 'def' ORDER BY f.path, c.start", (name,)).fetchall()
    if not rows:  # constants, prototypes: one line is all there is
        rows = idx.conn.execute(
            "SELECT f.path, d.line, d.line, d.signature FROM defs d JOIN files f ON f.id = d.file_id "
            "WHERE d.name = ? ORDER BY f.path, d.line", (name,)).fetchall()
    return rows[:DEFS_PER_NAME]


def _chunk_total(idx) -> int:
    if not hasattr(idx, "_chunk_total"):
        idx._chunk_total = idx.conn.execute("SELECT max(id) FROM chunks").fetchone()[0] or 1
    return idx._chunk_total


def _doc_freq(idx, word: str) -> int:
    cache = idx.__dict__.setdefault("_df", {})
    if word not in cache:
        if not hasattr(idx, "_vocab"):
            idx.conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocab "
                             "USING fts5vocab(main, chunks_fts, 'row')")
            idx._vocab = True
        row = idx.conn.execute("SELECT doc FROM temp.chunks_vocab WHERE term = ?",
                               (word,)).fetchone()
        cache[word] = row[0] if row else 0
    return cache[word]


def fts_query(idx, text: str, max_terms: int = 8) -> str:
    """An OR query of the text's rarer words (common ones make BM25 slow and vague)."""
    words = sorted({w.lower() for w in _WORD.findall(text) if len(w) >= 2 and w.lower() not in STOP})
    # Only large indexes have words common enough to slow BM25 down; the
    # rarest few are kept whatever their frequency, so a query never goes empty.
    limit = max(COMMON * _chunk_total(idx), 500)
    scored = sorted((df, w) for w in words if (df := _doc_freq(idx, w)) > 0)
    kept = [w for df, w in scored[:max_terms] if df <= limit] or [w for _, w in scored[:3]]
    return " OR ".join(f'"{w}"' for w in kept)


def _bm25(idx, query: str, limit: int, kind: str | None = None) -> list[tuple]:
    """(path, start, end, text), best first. The ranking runs on the FTS table
    alone and only the top rows are joined: joining every match first is
    what made a common query slow."""
    if not query:
        return []
    top = idx.conn.execute(
        "SELECT rowid, bm25(chunks_fts) AS s FROM chunks_fts WHERE chunks_fts MATCH ? "
        "ORDER BY s, rowid LIMIT ?", (query, limit * 3 if kind else limit)).fetchall()
    if not top:
        return []
    order = {rowid: i for i, (rowid, _) in enumerate(top)}
    marks = ",".join("?" * len(order))
    rows = idx.conn.execute(
        f"SELECT c.id, f.path, c.start, c.end, c.text, c.kind FROM chunks c "
        f"JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})", list(order)).fetchall()
    rows.sort(key=lambda r: (order[r[0]], r[1], r[2]))
    return [r[1:5] for r in rows if kind is None or r[5] == kind][:limit]


def retrieve(idx, query: str, budget: int = 1024, counter: Counter | None = None,
             framer: Callable = frame) -> list[Block]:
    """Blocks for a chat question: named definitions first, then BM25."""
    counter = counter or Approx()
    pick = _Picker(framer)
    for name in identifiers(query):
        for path, start, end, text in _definitions(idx, name):
            pick.add(path, start, end, text, f"definition of {name}")
    for path, start, end, text in _bm25(idx, fts_query(idx, query), BM25_CANDIDATES):
        pick.add(path, start, end, text, "bm25")
    return fit(pick.blocks, budget, counter)


def _tokens(text: str) -> frozenset[str]:
    return frozenset(_IDENT.findall(text))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def retrieve_for_cursor(idx, path: str, prefix: str, suffix: str, budget: int = 512,
                        counter: Counter | None = None, framer: Callable = frame,
                        visible_from: int = 1) -> list[Block]:
    """Blocks for an infill at the end of `prefix` in `path`.

    `visible_from` is the first line of the current file the prompt shows
    (1: the whole prefix); chunks of the current file from there on are left
    out, which includes everything at or after the hole."""
    counter = counter or Approx()
    current = _rel(idx, path)
    before = prefix.split("\n")
    after = suffix.split("\n")

    def exclude(p, start, end):
        return p == current and end >= visible_from

    pick = _Picker(framer)
    # Nearest first: walk back from the hole, then forward into the suffix.
    near_before = identifiers("\n".join(reversed(before[-NEAR_LINES[0]:])))
    near_after = identifiers("\n".join(after[:NEAR_LINES[1]]))
    local = {r[0] for r in idx.conn.execute(
        "SELECT d.name FROM defs d JOIN files f ON f.id = d.file_id WHERE f.path = ?", (current,))}
    local.update(m.group(1) for m in re.finditer(r"\b(?:def|class|function|func|fn)\s+(\w+)", prefix))
    for name in dict.fromkeys(near_before + near_after):
        if name in local or name in GENERIC:  # seen already, or the builtin is meant
            continue
        many = idx.conn.execute("SELECT count(*) FROM (SELECT 1 FROM defs WHERE name = ? "
                                "LIMIT ?)", (name, AMBIGUOUS + 1)).fetchone()[0]
        if many > AMBIGUOUS:  # `end`, `get`: which one is meant is a guess
            continue
        for p, start, end, text in _definitions(idx, name):
            pick.add(p, start, end, text, f"definition of {name}", exclude)
    area = "\n".join(before[-CURSOR_LINES:])
    want = _tokens(area)
    candidates = []
    for p, start, end, text in _bm25(idx, fts_query(idx, area), BM25_CANDIDATES, kind="window"):
        if exclude(p, start, end):
            continue
        sim = jaccard(want, _tokens(text))
        if sim < TOO_SIMILAR:
            candidates.append((-sim, p, start, end, text))
    for neg, p, start, end, text in sorted(candidates)[:BM25_CANDIDATES]:
        pick.add(p, start, end, text, f"similar window ({-neg:.2f})")
    return fit(pick.blocks, budget, counter)
