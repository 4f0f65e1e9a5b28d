"""Lazy tree-sitter grammars from the per-language wheels.

Each grammar ships as its own small wheel (tree_sitter_python, ...). We load
one only when a hole in that language is first checked, never at start-up,
and never through tree-sitter-language-pack (which downloads at run time).
A missing wheel is not an error: the stop falls back to its
language-neutral rules.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

# language -> (module, function returning the grammar pointer)
GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}


@lru_cache(maxsize=None)
def language(name: str):
    """The tree_sitter.Language for `name`, or None when it cannot be had."""
    spec = GRAMMARS.get(name)
    if spec is None:
        return None
    try:
        import tree_sitter

        module = importlib.import_module(spec[0])
        return tree_sitter.Language(getattr(module, spec[1])())
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def parser(name: str):
    """A fresh tree_sitter.Parser for `name` (parsers are not thread-safe), or None."""
    lang = language(name)
    if lang is None:
        return None
    import tree_sitter

    return tree_sitter.Parser(lang)


def available(name: str) -> bool:
    return language(name) is not None


def count_errors(tree) -> int:
    """ERROR and MISSING nodes in the tree; only subtrees that hold one are walked."""
    root = tree.root_node
    if not root.has_error:
        return 0
    n = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            n += 1
            if node.is_missing:
                continue
        for child in node.children:
            if child.has_error or child.is_missing:
                stack.append(child)
    return n


def _point(text: bytes, pos: int) -> tuple[int, int]:
    row = text.count(b"\n", 0, pos)
    return row, pos - (text.rfind(b"\n", 0, pos) + 1)


def edit(tree, old: bytes, new: bytes):
    """Tell `tree` (parsed from `old`) where `new` differs, for an incremental reparse."""
    n = min(len(old), len(new))
    start = 0
    # Common head, found in big steps first: the texts share a long window prefix.
    step = 4096
    while step:
        while start + step <= n and old[start : start + step] == new[start : start + step]:
            start += step
        step //= 8
    tail = 0
    limit = n - start
    step = 4096
    while step:
        while tail + step <= limit and old[len(old) - tail - step : len(old) - tail] == \
                new[len(new) - tail - step : len(new) - tail]:
            tail += step
        step //= 8
    old_end, new_end = len(old) - tail, len(new) - tail
    tree.edit(start_byte=start, old_end_byte=old_end, new_end_byte=new_end,
              start_point=_point(old, start), old_end_point=_point(old, old_end),
              new_end_point=_point(new, new_end))
    return tree
