"""`limner check-code FILE|- [--json] [--lang L]`: syntax, import and
security checks on one file (or stdin). A Markdown file has each fenced
block checked.

Exit codes: 0 clean, 1 findings (an error or a warning), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="limner check-code",
        description="Syntax, import (hallucinated packages) and security (bandit) checks on one file, "
                    "or on each fenced block of a Markdown file. Nothing is run or installed.",
        epilog="exit status: 0 clean, 1 findings (an error or a warning), 2 bad input")
    p.add_argument("file", help="the file to check, or - for stdin")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--lang", help="the language (default: from the file name, else a guess)")
    p.add_argument("--root", help="the project dir local imports resolve against (default: the file's dir)")
    p.add_argument("--python", help="resolve installed packages in this interpreter instead of limner's")
    p.add_argument("--no-security", action="store_true", help="skip bandit")
    return p.parse_args(argv)


def _error(message: str, hint: str = "") -> int:
    from limner.render import error_block

    sys.stdout.write(error_block(message, hint).lstrip("\n"))
    return 2


def main(argv: list[str]) -> int:
    try:
        args = _args(argv)
    except SystemExit as e:  # argparse has printed the problem (or --help)
        return 0 if e.code == 0 else 2
    from limner.checks import Piece, check_pieces, notes, to_json
    from limner.checks import blocks

    if args.file == "-":
        name, raw = "<stdin>", sys.stdin.buffer.read()
    else:
        name = args.file
        try:
            with open(args.file, "rb") as f:
                raw = f.read()
        except OSError as e:
            return _error(f"cannot read {args.file}: {e.strerror or e}", "Check the path, or pass - and pipe the code in.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return _error(f"{name} is not valid UTF-8 (byte {e.start}, line {line})", "Save it as UTF-8.")
    if args.python and not os.access(args.python, os.X_OK):
        return _error(f"--python {args.python} is not an executable", "Give the path of a Python interpreter.")

    lang = blocks.canonical(args.lang) if args.lang else None
    is_markdown = name.endswith((".md", ".markdown")) and lang in (None, "markdown")
    if is_markdown:
        pieces = [Piece(b.code, b.language, b.name, b.line) for b in blocks.fenced(text)]
    else:
        lang = lang or (blocks.from_path(name) if name != "<stdin>" else None) or blocks.guess(text)
        if lang is None and name == "<stdin>":
            lang = "python"  # the common case; say so with --lang otherwise
        pieces = [Piece(text, lang, name)]
    root = args.root or (os.path.dirname(os.path.abspath(name)) if name != "<stdin>" else os.getcwd())
    try:
        reports = check_pieces(pieces, root=root, python=args.python, security=not args.no_security)
    except RuntimeError as e:  # --python could not answer
        return _error(str(e), "Check that the interpreter runs.")
    if args.json:
        json.dump(to_json(reports), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        out = notes(reports, empty=f"no code blocks in {name}").lstrip("\n")
        sys.stdout.write(out)
    return 1 if any(r.failed for r in reports) else 0
