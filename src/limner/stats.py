"""Paired statistics for benchmarks that compare two conditions on the same tasks.

Pure functions, stdlib only: the select, tune and context benches share them.
"""
from __future__ import annotations

import math
import random


def bootstrap_ci(values: list[float], rounds: int = 2000, seed: int = 7) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def mcnemar(a: list[int], b: list[int]) -> tuple[int, int, float]:
    """(b wins, a wins, exact two-sided p) for paired pass/fail lists."""
    bw = sum(1 for x, y in zip(a, b) if y and not x)
    aw = sum(1 for x, y in zip(a, b) if x and not y)
    m = bw + aw
    if m == 0:
        return bw, aw, 1.0
    tail = sum(math.comb(m, i) for i in range(min(bw, aw) + 1)) / 2 ** m
    return bw, aw, min(1.0, 2 * tail)
