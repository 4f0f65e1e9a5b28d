"""Visible tests and derived probe inputs.

A visible test is one Python statement (an assert) the selection may look
at. Probes are calls of the function under test on inputs derived from the
visible tests' literal arguments (ints +-1, empty and one-element lists,
empty strings, two same-typed arguments swapped): they have no expected
answer, they only tell candidates apart by what they return.
"""
from __future__ import annotations

import ast
import doctest
from dataclasses import dataclass, field

MAX_PROBES = 12


@dataclass
class Split:
    visible: list[str] = field(default_factory=list)  # statements used to select
    held_out: list[str] = field(default_factory=list)  # statements used only to score
    setup: str = ""  # imports the tests need


def split_asserts(test: str) -> Split:
    """MBPP-style: a block of top-level asserts; the first is visible, the rest held out."""
    try:
        tree = ast.parse(test or "")
    except SyntaxError:
        return Split(held_out=[test] if test else [])
    lines = (test or "").splitlines()
    asserts, setup = [], []
    for node in tree.body:
        src = "\n".join(lines[node.lineno - 1: node.end_lineno])
        (asserts if isinstance(node, ast.Assert) else setup).append(src)
    return Split(visible=asserts[:1], held_out=asserts[1:], setup="\n".join(setup))


def doc_examples(prompt: str) -> list[str]:
    """HumanEval-style: `>>> f(x)` / result pairs in the prompt's docstring, as asserts."""
    out = []
    try:
        examples = doctest.DocTestParser().get_examples(prompt or "")
    except ValueError:
        return out
    for ex in examples:
        src, want = ex.source.strip(), ex.want
        # The docstring's closing quotes follow the last example's output
        # with no blank line between, so doctest counts them as output.
        want = "\n".join(ln for ln in want.splitlines() if ln.strip() not in ('"""', "'''")).strip()
        if not want or "\n" in src:
            continue
        try:
            ast.parse(src, mode="eval")
            ast.literal_eval(want)
        except (SyntaxError, ValueError):
            continue
        out.append(f"assert ({src}) == ({want})")
    return out


def for_task(task) -> Split:
    """The visible / held-out split of an eval task: HumanEval's docstring
    examples are visible and its `check` is held out; otherwise the first assert."""
    examples = doc_examples(task.prompt) if "def check" in (task.test or "") else []
    if examples:
        return Split(visible=examples, held_out=[task.test])
    return split_asserts(task.test or "")


def _calls(stmt: str) -> list[ast.Call]:
    try:
        tree = ast.parse(stmt)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id not in dir(__builtins__) and n.func.id not in ("set", "list", "tuple", "sorted")]


def _mutations(value) -> list:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1]
    if isinstance(value, float):
        return [value + 1.0]
    if isinstance(value, str):
        return ["", value[:1]] if value else ["a"]
    if isinstance(value, list):
        return [[], value[:1]] if value else []
    if isinstance(value, tuple):
        return [(), value[:1]] if value else []
    return []


def probes(visible: list[str], limit: int = MAX_PROBES) -> list[str]:
    """Call expressions on the visible tests' calls and derived inputs, deduplicated."""
    out: list[str] = []

    def add(name, args):
        expr = f"{name}({', '.join(repr(a) for a in args)})"
        if expr not in out:
            out.append(expr)

    for stmt in visible:
        for call in _calls(stmt):
            if call.keywords:
                continue
            try:
                args = [ast.literal_eval(a) for a in call.args]
            except (ValueError, SyntaxError, TypeError):
                continue
            name = call.func.id
            add(name, args)
            for i, a in enumerate(args):
                for m in _mutations(a):
                    add(name, args[:i] + [m] + args[i + 1:])
            if len(args) == 2 and type(args[0]) is type(args[1]):
                add(name, [args[1], args[0]])
    return out[:limit]
