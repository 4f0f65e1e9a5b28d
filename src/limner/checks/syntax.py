"""Does the code parse? Python through `ast` (exact, with the message the
interpreter would give); other languages through tree-sitter, loaded lazily
from limner.fim.treesitter when its grammar wheels are installed."""
from __future__ import annotations

import ast
import sys

from limner.checks.report import Finding

MAX_TREE_SITTER_ERRORS = 3  # the first few places are what a reader can act on


def check(code: str, language: str | None) -> tuple[list[Finding], str]:
    """(findings, why the check was skipped or "")."""
    if language == "python":
        return _python(code), ""
    if not language:
        return [], "unknown language (give one with --lang, or tag the code fence)"
    return _tree_sitter(code, language)


def _python(code: str) -> list[Finding]:
    try:
        ast.parse(code)
    except SyntaxError as e:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        line = e.lineno or 0
        text = (e.text or "").rstrip("\n")
        msg = f"{e.msg}" + (f": `{text.strip()}`" if text.strip() else "")
        return [Finding("syntax", "error", msg, line=line, col=e.offset or 0, code="syntax-error",
                        hint=f"parsed with Python {version}'s grammar")]
    except ValueError as e:  # e.g. a NUL byte in the source
        return [Finding("syntax", "error", str(e), code="syntax-error")]
    return []


def _tree_sitter(code: str, language: str) -> tuple[list[Finding], str]:
    try:
        from limner.fim import treesitter
    except ImportError:
        return [], "tree-sitter support (limner.fim) is not available"
    parser = treesitter.parser(language)
    if parser is None:
        return [], f"no tree-sitter grammar for {language} (install the `fim` extra)"
    tree = parser.parse(code.encode("utf-8"))
    if not tree.root_node.has_error:
        return [], ""
    findings = []
    for node in _error_nodes(tree.root_node):
        row, col = node.start_point
        if node.is_missing:
            msg = f"missing `{node.type}`"
        else:
            snippet = node.text.decode("utf-8", "replace").strip().splitlines()
            msg = "syntax error" + (f" at `{snippet[0][:60]}`" if snippet else "")
        findings.append(Finding("syntax", "error", msg, line=row + 1, col=col + 1,
                                code="syntax-error", hint=f"tree-sitter {language} grammar"))
        if len(findings) >= MAX_TREE_SITTER_ERRORS:
            break
    return findings, ""


def _error_nodes(root):
    """ERROR and MISSING nodes in source order, walking only subtrees that hold one."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            yield node
            continue
        stack.extend(reversed([c for c in node.children if c.has_error or c.is_missing]))
