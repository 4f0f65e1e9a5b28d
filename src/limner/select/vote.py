"""Behaviour clusters and the pick (AlphaCode / MBR-exec style).

Candidates that crash (do not even define), hang on everything, or answer
every probe the same are dropped (when others remain); the rest are grouped
by their behaviour signature (visible test outcomes + probe outputs and
exception types). The pick comes from the largest cluster whose members pass
the visible tests; ties go to the cluster with the higher mean log-prob,
then to the lower index. Within the cluster: the member with the highest
mean log-prob, then the lowest index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from limner.select.execute import Behaviour


@dataclass
class Candidate:
    index: int
    code: str
    text: str = ""
    model: str = ""
    logprob_mean: float | None = None  # None: the backend gave none (HTTP)


@dataclass
class Vote:
    chosen: int | None  # a candidate index; None only when there are no candidates
    why: str
    clusters: list[list[int]] = field(default_factory=list)  # largest first
    dropped: dict[int, str] = field(default_factory=dict)  # index -> reason
    fallback: bool = False  # no candidate passed the visible tests, or all crashed
    ties_by_index: bool = False  # log-probs were missing where a tie had to be broken

    def note(self, n: int) -> str:
        sizes = ", ".join(str(len(c)) for c in self.clusters) or "none"
        k = len(self.clusters)
        out = f"vote: {n} candidates, {k} behaviour cluster{'s' if k != 1 else ''} (sizes {sizes})"
        if self.dropped:
            out += f", {len(self.dropped)} dropped ({_reasons(self.dropped)})"
        out += f"; chose #{self.chosen}: {self.why}"
        if self.ties_by_index:
            out += " (no log-probs from this backend: ties broken by index)"
        return out


def _reasons(dropped: dict[int, str]) -> str:
    counts: dict[str, int] = {}
    for r in dropped.values():
        counts[r] = counts.get(r, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _constant(b: Behaviour) -> bool:
    outs = [p for p in b.probes]
    return len(outs) >= 3 and len(set(outs)) == 1


def _hangs(b: Behaviour) -> bool:
    runs = b.visible + b.probes
    return bool(runs) and all(r == "timeout" for r in runs)


def choose(cands: list[Candidate], behaviours: list[Behaviour]) -> Vote:
    if not cands:
        return Vote(None, "no candidates")
    lp = {c.index: c.logprob_mean for c in cands}
    missing = any(v is None for v in lp.values())
    dropped: dict[int, str] = {}
    for c, b in zip(cands, behaviours):
        if b.crashed:
            dropped[c.index] = "crash"
        elif _hangs(b):
            dropped[c.index] = "timeout"
        elif _constant(b):
            dropped[c.index] = "constant output"
    keep = [(c, b) for c, b in zip(cands, behaviours) if c.index not in dropped]
    if not keep:  # everything was dropped: constant outputs are better than crashes
        keep = [(c, b) for c, b in zip(cands, behaviours) if dropped[c.index] != "crash"]
    if not keep:
        best = _best([c.index for c in cands], lp)
        return Vote(best, "every candidate crashed; fallback to the "
                    + ("highest mean log-prob" if not missing else "first candidate"),
                    dropped=dropped, fallback=True, ties_by_index=missing)
    groups: dict[tuple, list[int]] = {}
    for c, b in keep:
        groups.setdefault(b.signature(), []).append(c.index)
    by_index = {c.index: b for c, b in zip(cands, behaviours)}

    def score(members):
        vals = [lp[i] for i in members if lp[i] is not None]
        return (len(members), sum(vals) / len(vals) if vals else float("-inf"), -min(members))

    clusters = sorted(groups.values(), key=score, reverse=True)
    passing = [g for g in clusters if by_index[g[0]].passes_visible]
    pool, fallback = (passing, False) if passing else (clusters, True)
    top = pool[0]
    tie = [g for g in pool if len(g) == len(top)]
    chosen = _best(top, lp)
    if fallback:
        why = f"no candidate passed the visible tests; fallback to the largest cluster ({len(top)})"
    else:
        why = f"largest cluster passing the visible tests ({len(top)} of {len(cands)})"
    if len(tie) > 1:
        why += f", tied with {len(tie) - 1} other cluster(s): " + (
            "higher mean log-prob" if not missing else "lower index")
    return Vote(chosen, why, clusters=clusters, dropped=dropped, fallback=fallback,
                ties_by_index=missing and (len(tie) > 1 or len(top) > 1))


def _best(members: list[int], lp: dict) -> int:
    return min(members, key=lambda i: (-(lp[i] if lp[i] is not None else float("-inf")), i))


def logprob_pick(cands: list[Candidate]) -> int:
    """The baseline: the candidate with the highest mean log-prob (lowest index on ties)."""
    return _best([c.index for c in cands], {c.index: c.logprob_mean for c in cands})
