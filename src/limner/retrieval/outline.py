"""A ranked map of a repository's signatures, fitted to a token budget.

Files are nodes; file A points at file B when A uses a name B defines,
weighted by how often, how specific the name is (defined in few places,
not private) and whether the user mentioned it. Personalized PageRank over
that graph ranks files; each file's rank flows to the definitions that
earned it; the best definitions that fit the budget are shown, signatures
only. The largest prefix of the ranking that fits is found by binary search
over the *rendered* text, so the budget holds for any counter.

Deterministic: ties break by path and line, and the files are printed in
path order, so the same index gives the same text (the engine's prefix cache
can reuse it) and a small change in ranks moves little of it.
"""
from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

from limner.retrieval.budget import Approx, Counter

DAMPING = 0.85
MAX_DEFINERS = 10  # a name defined in more files than this says nothing (run, get, __init__)
# Enclosing kinds whose members belong in a map; a def inside a function does not.
CONTAINERS = frozenset({"class", "struct", "interface", "trait", "namespace", "enum"})
# Python's builtins: a local `str` or `property` must not collect every use of the real one.
GENERIC = frozenset(dir(builtins))


@dataclass(frozen=True)
class Entry:
    path: str
    name: str
    kind: str
    line: int
    depth: int
    signature: str
    score: float


@dataclass
class Outline:
    text: str
    entries: list[Entry]   # the definitions shown, best first
    tokens: int
    total: int             # definitions that could have been shown


def pagerank(edges: dict[int, dict[int, float]], nodes: list[int],
             personal: dict[int, float] | None = None, iterations: int = 100,
             tol: float = 1e-6) -> dict[int, float]:
    """Power iteration. Dangling nodes and the teleport go to `personal`
    (uniform when empty); the result sums to 1. Stops when the L1 change is
    under tol per node (networkx's rule): ranks, not digits, are what we need."""
    if not nodes:
        return {}
    pos = {n: i for i, n in enumerate(nodes)}
    size = len(nodes)
    if personal and sum(personal.values()) > 0:
        total = sum(personal.values())
        tele = [personal.get(n, 0.0) / total for n in nodes]
    else:
        tele = [1.0 / size] * size
    # Out-lists with weights normalized once, as index lists: the loop is the cost.
    adj = []
    for a, bs in edges.items():
        w = sum(bs.values())
        if a in pos and w > 0:
            adj.append((pos[a], [(pos[b], x / w) for b, x in sorted(bs.items()) if b in pos]))
    has_out = [False] * size
    for i, _ in adj:
        has_out[i] = True
    rank = list(tele)
    for _ in range(iterations):
        dangling = sum(r for r, h in zip(rank, has_out) if not h)
        base = 1 - DAMPING + DAMPING * dangling
        new = [base * t for t in tele]
        for i, outs in adj:
            share = DAMPING * rank[i]
            if share:
                for j, w in outs:
                    new[j] += share * w
        diff = sum(abs(x - y) for x, y in zip(new, rank))
        rank = new
        if diff < tol * size:
            break
    return {n: rank[i] for i, n in enumerate(nodes)}


def _name_weight(name: str, definers: int, mentioned: bool) -> float:
    w = 1.0 / definers
    if mentioned:
        w *= 10.0
    elif name in GENERIC:
        w *= 0.01
    if name.startswith("__") and name.endswith("__"):
        w *= 0.01
    elif name.startswith("_"):
        w *= 0.1
    if len(name) < 3:
        w *= 0.1
    return w


def _norm_suffixes(suffixes) -> tuple[str, ...]:
    return tuple(s if s.startswith(".") or "/" in s else "." + s for s in suffixes or ())


def rank_definitions(idx, suffixes=(), focus=(), mentions=()) -> list[Entry]:
    """Every definition in the (suffix-filtered) index, best first."""
    q = idx.conn.execute
    sfx = _norm_suffixes(suffixes)
    files = {fid: path for fid, path in q("SELECT id, path FROM files WHERE status='ok'")
             if not sfx or path.endswith(sfx)}
    rows = [r for r in q("SELECT file_id, name, kind, line, depth, signature FROM defs "
                         "ORDER BY file_id, line") if r[0] in files]
    # Only what a reader of the map can use: top level and members of classes,
    # not helpers nested inside functions.
    flat = [Entry(files[r[0]], r[1], r[2], r[3], r[4], r[5], 0.0) for r in rows]
    parents = _parents(flat)
    defs = [r for r, e in zip(rows, flat)
            if all(p.kind in CONTAINERS for p in parents.get((e.path, e.line), ()))]
    definers: dict[str, set[int]] = {}
    for fid, name, *_ in defs:
        definers.setdefault(name, set()).add(fid)
    mentioned = set(mentions)
    edges: dict[int, dict[int, float]] = {}
    earned: dict[tuple[int, int, str], float] = {}  # (from, to, name) -> weight
    refs = [r for r in q("SELECT file_id, name, n FROM refs")
            if r[0] in files and 0 < len(definers.get(r[1], ())) <= MAX_DEFINERS]
    # idf: a name half the files use (args, key, data) is a variable name, not a link.
    df: dict[str, int] = {}
    for _, name, _ in refs:
        df[name] = df.get(name, 0) + 1
    for fid, name, n in refs:
        where = definers[name]
        w = (math.sqrt(n) * math.log(1 + len(files) / df[name])
             * _name_weight(name, len(where), name in mentioned))
        for b in where:
            if b != fid:
                edges.setdefault(fid, {})
                edges[fid][b] = edges[fid].get(b, 0.0) + w
                earned[(fid, b, name)] = earned.get((fid, b, name), 0.0) + w
    personal = {}
    focus_paths = set(focus)
    for fid, path in files.items():
        if path in focus_paths:
            personal[fid] = 1.0
    for name in mentioned:
        for fid in definers.get(name, ()):
            personal[fid] = personal.get(fid, 0.0) + 1.0
    nodes = sorted(files)
    rank = pagerank(edges, nodes, personal)
    out_w = {a: sum(bs.values()) for a, bs in edges.items()}
    score: dict[tuple[int, str], float] = {}
    for (a, b, name), w in earned.items():
        score[(b, name)] = score.get((b, name), 0.0) + rank[a] * w / out_w[a]
    # Unreferenced definitions still get a little of their file's rank, so a
    # repo with no cross-file uses still has an outline (top level first).
    # A name defined n times in one file (a `value` property per class) shares
    # its score; members and private names rank below the public surface.
    same: dict[tuple[int, str], int] = {}
    for fid, name, *_ in defs:
        same[(fid, name)] = same.get((fid, name), 0) + 1
    entries = []
    for fid, name, kind, line, depth, sig in defs:
        s = score.get((fid, name), 0.0) / same[(fid, name)] + rank[fid] * 1e-3 / (1 + depth)
        s *= _name_weight(name, 1, False) / (1 + depth)
        if name in mentioned:
            s += 1.0
        entries.append(Entry(files[fid], name, kind, line, depth, sig, s))
    entries.sort(key=lambda e: (-e.score, e.path, e.line))
    return entries


def render(entries: list[Entry], parents: dict[tuple[str, int], list[Entry]]) -> str:
    """Files in path order, definitions in line order, with the enclosing
    definitions of nested ones (a method's class) for context."""
    by_file: dict[str, dict[int, Entry]] = {}
    for e in entries:
        shown = by_file.setdefault(e.path, {})
        shown[e.line] = e
        for p in parents.get((e.path, e.line), ()):
            shown.setdefault(p.line, p)
    lines = []
    for path in sorted(by_file):
        lines.append(f"{path}:")
        for _, e in sorted(by_file[path].items()):
            lines.append("  " * (e.depth + 1) + e.signature)
    return "\n".join(lines) + ("\n" if lines else "")


def _parents(entries: list[Entry]) -> dict[tuple[str, int], list[Entry]]:
    """For each nested definition, its enclosing ones (by depth, same file)."""
    out: dict[tuple[str, int], list[Entry]] = {}
    by_file: dict[str, list[Entry]] = {}
    for e in entries:
        by_file.setdefault(e.path, []).append(e)
    for path, es in by_file.items():
        stack: list[Entry] = []
        for e in sorted(es, key=lambda e: (e.line, e.depth)):
            while stack and stack[-1].depth >= e.depth:
                stack.pop()
            if e.depth:
                out[(path, e.line)] = list(stack)
            stack.append(e)
    return out


def outline(idx, suffixes=(), budget: int = 1024, counter: Counter | None = None,
            focus=(), mentions=()) -> Outline:
    """The best-ranked signatures whose rendering fits `budget` tokens."""
    counter = counter or Approx()
    ranked = rank_definitions(idx, suffixes, focus, mentions)
    parents = _parents(ranked)
    # Gallop to the first size over budget, then bisect: every text counted
    # stays near the budget's size, never the whole repository's map.
    best, lo, hi = "", 0, len(ranked)  # invariant: the top `lo` fit
    step = 16
    while lo < hi:
        mid = min(hi, lo + step)
        text = render(ranked[:mid], parents)
        if counter.count(text) <= budget:
            lo, best, step = mid, text, step * 2
        else:
            hi = mid - 1
            break
    while lo < hi:
        mid = (lo + hi + 1) // 2
        text = render(ranked[:mid], parents)
        if counter.count(text) <= budget:
            lo, best = mid, text
        else:
            hi = mid - 1
    return Outline(best, ranked[:lo], counter.count(best) if best else 0, len(ranked))
