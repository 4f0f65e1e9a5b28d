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
import collections
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
MODULES = 6           # modules the file qualifies most (`events.X`), by signatures
MODULE_LINES = 60     # signature lines of one module, at most
PAIRS = 12            # `module.name` uses from earlier in the file, resolved exactly
USED = 12             # other names used earlier in the file, resolved, nearest first
SIMILAR = 8           # similar definitions / windows tried, best first
CURSOR_DEF_LINES = 20  # lines of a definition shown for infill

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

    def __init__(self, framer, chars: int = 0):
        self.framer = framer
        self.blocks: list[Block] = []
        # Enough candidates: `chars` of text (0: no limit). Later stages are
        # skipped, so a cursor query costs what its budget needs, not more.
        self.chars = chars
        self.total = 0
        self.spans: dict[str, list[tuple[int, int, bool]]] = {}

    def add(self, path, start, end, text, reason, exclude=None, view: str = "",
            capped: bool = True) -> None:
        """`view` names another way of showing a file (its signatures): it has
        its own spans and cap, so it neither blocks nor is blocked by chunks.
        Definitions asked for by name are not `capped`: the per-file limit is
        for look-alikes, and a popular file may define several names in use."""
        if exclude and exclude(path, start, end):
            return
        spans = self.spans.setdefault(path + view, [])
        if any(s <= end and start <= e for s, e, _ in spans):
            return
        if capped and sum(1 for *_, c in spans if c) >= MAX_PER_FILE:
            return
        spans.append((start, end, capped))
        self.blocks.append(Block(f"{path}:{start}-{end}", self.framer(path, start, end, text),
                                 reason, priority=len(self.blocks)))
        self.total += len(text)

    @property
    def full(self) -> bool:
        return bool(self.chars) and self.total >= self.chars


def _definitions(idx, name: str, path: str | None = None) -> list[tuple]:
    """(path, start, end, text) of `name`'s definitions (in `path` only, if
    given): chunks, else signatures."""
    where, args = ("AND f.path = ? ", (name, path)) if path else ("", (name,))
    rows = idx.conn.execute(
        "SELECT f.path, c.start, c.end, c.text FROM chunks c JOIN files f ON f.id = c.file_id "
        f"WHERE c.name = ? AND c.kind = 'def' {where}ORDER BY f.path, c.start", args).fetchall()
    if not rows:  # constants, prototypes: one line is all there is
        rows = idx.conn.execute(
            "SELECT f.path, d.line, d.line, d.signature FROM defs d JOIN files f ON f.id = d.file_id "
            f"WHERE d.name = ? {where}ORDER BY f.path, d.line", args).fetchall()
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


_LOCAL = re.compile(r"^\s*(?:def|class|function|func|fn|for|async def)\s+(\w+)"
                    r"|^\s*(\w+)\s*(?::[^=]*)?=(?!=)", re.M)
_PARAMS = re.compile(r"\bdef\s+\w+\s*\(([^)]*)\)")
_QUALIFIER = re.compile(r"\b([A-Za-z_]\w*)\.[A-Za-z_]")
_PAIR = re.compile(r"(?<![.\w])([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]+(?:\(([^)]*)\)|([\w \t,]+))", re.M)
_IMPORT = re.compile(r"^\s*import\s+([\w.]+)(?:\s+as\s+(\w+))?", re.M)


def _imported(prefix: str) -> list[str]:
    """Names the file imports (Python): `from . import events` -> events."""
    return list(_imports(prefix))


def _imports(prefix: str) -> dict[str, str]:
    """Local name -> imported name: `from email import _header_value_parser as
    parser` -> {"parser": "_header_value_parser"}; `import os.path` -> {"path": "path"}."""
    out: dict[str, str] = {}
    for m in _IMPORT.finditer(prefix):
        real = m.group(1).rsplit(".", 1)[-1]
        out[m.group(2) or real] = real
    for m in _FROM_IMPORT.finditer(prefix):
        for item in (m.group(1) or m.group(2)).split(","):
            words = item.split()
            if words:
                out[words[-1] if len(words) == 3 and words[1] == "as" else words[0]] = words[0]
    return out


def _modules(prefix: str, stems: dict[str, str]) -> dict[str, str]:
    """Names that stand for a module of the repo in this file: what it imports
    (aliases resolved); with no Python imports at all, every unique stem."""
    imports = _imports(prefix)
    if not imports:
        return stems
    return {local: stems[real] for local, real in imports.items() if real in stems}


def _module_stems(idx) -> dict[str, str]:
    """Module name -> its one file (`events` -> asyncio/events.py); ambiguous stems dropped."""
    if "_stems" not in idx.__dict__:
        seen: dict[str, list[str]] = {}
        for (path,) in idx.conn.execute("SELECT path FROM files WHERE status='ok' AND lang IS NOT NULL"):
            parts = path.rsplit("/", 2)
            stem = parts[-1].rsplit(".", 1)[0]
            if stem in ("__init__", "index", "mod"):  # a package is named by its folder
                stem = parts[-2] if len(parts) > 1 else os.path.basename(idx.root)
            seen.setdefault(stem, []).append(path)
        idx._stems = {k: v[0] for k, v in seen.items() if len(v) == 1}
    return idx._stems


def _add_module(idx, pick, path: str, exclude, current: str) -> None:
    """A module's top-level signatures as one block (members would crowd out other modules)."""
    if path == current:
        return
    rows = idx.conn.execute(
        "SELECT d.line, d.depth, d.signature FROM defs d JOIN files f ON f.id = d.file_id "
        "WHERE f.path = ? AND d.depth = 0 ORDER BY d.line", (path,)).fetchall()[:MODULE_LINES]
    if rows:
        text = "\n".join(sig for _, _, sig in rows)
        pick.add(path, rows[0][0], rows[-1][0], text, "signatures of the module", exclude,
                 view="#signatures")


_BARE = re.compile(r"(?<![.\w])([A-Za-z_]\w*)")
_TYPING = re.compile(r"[A-Za-z_]\w*\Z")


def _add_definitions(idx, pick, name: str, exclude) -> None:
    many = idx.conn.execute("SELECT count(*) FROM (SELECT 1 FROM defs WHERE name = ? LIMIT ?)",
                            (name, AMBIGUOUS + 1)).fetchone()[0]
    if many > AMBIGUOUS:  # `end`, `get`: which one is meant is a guess
        return
    for p, start, end, text in _definitions(idx, name):
        # For infill the head is enough (signature, docstring): budget for more of them.
        head = text.split("\n")[:CURSOR_DEF_LINES]
        pick.add(p, start, start + len(head) - 1, "\n".join(head), f"definition of {name}",
                 exclude, capped=False)


def _add_similar(idx, pick, text: str, kind: str, reason: str, exclude) -> None:
    """BM25 candidates of `kind`, re-ranked by Jaccard over identifier sets."""
    want = _tokens(text)
    candidates = []
    for p, start, end, body in _bm25(idx, fts_query(idx, text), BM25_CANDIDATES, kind=kind):
        if exclude(p, start, end):
            continue
        sim = jaccard(want, _tokens(body))
        if sim < TOO_SIMILAR:
            candidates.append((-sim, p, start, end, body))
    # The best SIMILAR by score, added in file order: scores move a little with
    # every keystroke, and a reordering would cost the prefix cache everything after it.
    for neg, p, start, end, body in sorted(sorted(candidates)[:SIMILAR], key=lambda c: c[1:3]):
        pick.add(p, start, end, body, f"{reason} ({-neg:.2f})")


def retrieve_for_cursor(idx, path: str, prefix: str, suffix: str, budget: int = 512,
                        counter: Counter | None = None, framer: Callable = frame,
                        visible_from: int = 1) -> list[Block]:
    """Blocks for an infill at the end of `prefix` in `path`.

    `visible_from` is the first line of the current file the prompt shows
    (1: the whole prefix); chunks of the current file from there on are left
    out, which includes everything at or after the hole."""
    counter = counter or Approx()
    current = _rel(idx, path)
    # The word being typed at the cursor is unfinished: resolving `sel` or
    # `ret` finds noise, and each keystroke would change the blocks, so the
    # engine's prefix cache could not keep them (bench/context_ttft.py).
    prefix = _TYPING.sub("", prefix)
    before = prefix.split("\n")
    after = suffix.split("\n")

    def exclude(p, start, end):
        return p == current and end >= visible_from

    # ~3.5 characters a token in code: gather about twice what the budget takes.
    pick = _Picker(framer, chars=budget * 8)
    # Identifiers nearest the hole first: walking back from it, then into the suffix.
    near_before = identifiers("\n".join(reversed(before[-NEAR_LINES[0]:])))
    near_after = identifiers("\n".join(after[:NEAR_LINES[1]]))
    near_names = list(dict.fromkeys(near_before + near_after))
    local = {r[0] for r in idx.conn.execute(
        "SELECT d.name FROM defs d JOIN files f ON f.id = d.file_id WHERE f.path = ?", (current,))}
    local.update(a or b for a, b in _LOCAL.findall(prefix))  # defined or assigned here
    for params in _PARAMS.findall(prefix):
        local.update(_IDENT.findall(params))
    imports = _imports(prefix)
    modules = _modules(prefix, _module_stems(idx))
    uses = collections.Counter(m.group(1) for m in _QUALIFIER.finditer(prefix))
    uses.update(n for n in modules if n in imports)

    def wanted(name):
        return name not in local and name not in GENERIC and name not in modules

    def definitions(names):
        for name in names:
            if pick.full:
                return
            if wanted(name):
                _add_definitions(idx, pick, name, exclude)

    # 1. The API of the modules used near the hole, then of those the file
    #    uses most: in the stdlib bench most holes are `module.name(...)`,
    #    and a module's top-level signatures were the best block per token.
    near_modules = [n for n in near_names if n in modules and n in uses]
    top_modules = [n for n, _ in sorted(uses.items(), key=lambda kv: (-kv[1], kv[0]))
                   if n in modules][:MODULES]
    for name in dict.fromkeys(near_modules + top_modules):
        _add_module(idx, pick, modules[name], exclude, current)
    # 2. Definitions of the bare names near the hole; `x.name` is an attribute
    #    whose class is a guess, so those wait until step 5.
    near = "\n".join(before[-NEAR_LINES[0]:] + after[:NEAR_LINES[1]])
    bare = {m.group(1) for m in _BARE.finditer(near)}
    definitions(n for n in near_names if n in bare)
    # 3. Names the file imports by name, and `module.name` it used before
    #    (nearest first, that exact definition).
    definitions(n for n in imports if n == imports[n])
    pairs = [(m.group(1), m.group(2)) for m in _PAIR.finditer(prefix) if m.group(1) in modules]
    for mod, name in list(dict.fromkeys(reversed(pairs)))[:PAIRS]:
        for p, start, end, text in _definitions(idx, name, modules[mod]):
            pick.add(p, start, end, text, f"definition of {mod}.{name}", exclude, capped=False)
    # 4. Definitions that look like the code on both sides of the hole: the
    #    arguments after a call often name the parameters of what is called.
    around = "\n".join(before[-8:] + after[:8])
    if not pick.full:
        _add_similar(idx, pick, around, "def", "similar definition", exclude)
    # 5. Attributes near the hole, then names used anywhere earlier in the file.
    definitions(n for n in near_names if n not in bare)
    used = [m.group(1) for m in _BARE.finditer(prefix)]
    fresh = [n for n in dict.fromkeys(reversed(used))
             if len(n) >= 3 and n not in near_names and n.lower() not in STOP]
    definitions(fresh[:USED])
    # 6. Windows that look like the code just before the hole.
    if not pick.full:
        _add_similar(idx, pick, "\n".join(before[-CURSOR_LINES:]), "window", "similar window",
                     exclude)
    return fit(pick.blocks, budget, counter)
