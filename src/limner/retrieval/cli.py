"""`limner index`, `limner outline`, `limner retrieve`: for people and debugging.

    limner index [DIR] [--exclude SUBDIR]... [--rebuild] [--jobs N] [--json]
    limner outline DIR [SUFFIX...] [--budget N] [--focus FILE]... [--mention NAME]...
    limner retrieve DIR QUERY [--budget N] [--json]
    limner retrieve DIR --cursor FILE:LINE [--budget N] [--json]

Errors are `!error` blocks on stderr with a non-zero exit, so stdout stays
clean for pipes. Token counts use the approximate counter unless --gguf
names a model file, whose vocabulary then counts.
"""
from __future__ import annotations

import argparse
import json
import sys

from limner.errors import LimnerError


def _error(e: LimnerError) -> int:
    sys.stderr.write(f"!error\n\n{e.message}\n" + (f"{e.hint}\n" if e.hint else ""))
    return e.exit_code


def _parse(p: argparse.ArgumentParser, argv: list[str]):
    try:
        return p.parse_args(argv), None
    except SystemExit as e:  # argparse printed the problem or the help
        return None, (0 if e.code in (0, None) else 2)


def _counter(args):
    from limner.retrieval import budget

    if getattr(args, "gguf", None):
        return budget.Vocab.from_gguf(args.gguf)
    return budget.Approx()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", action="append", default=[], metavar="SUBDIR",
                   help="leave out a folder (relative to DIR); repeatable")
    p.add_argument("--gguf", help="count tokens with this model's vocabulary")


def index_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="limner index",
                                description="Build or refresh the index of a folder.")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--rebuild", action="store_true", help="start from an empty index")
    p.add_argument("--jobs", type=int, default=0, help="parser processes (default: cores, ≤ 4)")
    p.add_argument("--json", action="store_true")
    _common(p)
    args, code = _parse(p, argv)
    if args is None:
        return code
    from limner.retrieval import index

    try:
        if args.rebuild:
            index.forget(args.dir, tuple(args.exclude))
        idx = index.open_index(args.dir, jobs=args.jobs or None, exclude=tuple(args.exclude))
    except LimnerError as e:
        return _error(e)
    counts = idx.counts()
    out = dict(root=idx.root, db=":memory:" if idx.in_memory else str(idx.path), **idx.stats,
               files=counts["files"], defs=counts["defs"], chunks=counts["chunks"],
               skipped_files=counts["skipped"])
    if idx.rebuilt:
        out["rebuilt"] = idx.rebuilt
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        skipped = ", ".join(f"{n} {k}" for k, n in counts["skipped"].items())
        print(f"{out['root']}: {out['files']} files, {out['defs']} definitions, "
              f"{out['chunks']} chunks" + (f" (not indexed: {skipped})" if skipped else ""))
        print(f"  this run: {out['parsed']} parsed, {out['unchanged']} unchanged, "
              f"{out['removed']} removed, {out['skipped']} skipped, {out['seconds']} s")
        if idx.rebuilt:
            print(f"  rebuilt: {idx.rebuilt}")
        print(f"  index: {out['db']}")
    return 0


def outline_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="limner outline",
                                description="A ranked map of signatures under a token budget.")
    p.add_argument("dir")
    p.add_argument("suffix", nargs="*", help="only files ending so, e.g. .py .c")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--focus", action="append", default=[], metavar="FILE",
                   help="rank around this file (relative to DIR); repeatable")
    p.add_argument("--mention", action="append", default=[], metavar="NAME",
                   help="an identifier the user cares about; repeatable")
    _common(p)
    args, code = _parse(p, argv)
    if args is None:
        return code
    if args.budget <= 0:
        return _error(LimnerError(f"--budget {args.budget}: must be a positive number of tokens"))
    from limner.retrieval import index, outline

    try:
        idx = index.open_index(args.dir, exclude=tuple(args.exclude))
    except LimnerError as e:
        return _error(e)
    o = outline.outline(idx, args.suffix, args.budget, _counter(args), args.focus, args.mention)
    sys.stdout.write(o.text)
    sys.stderr.write(f"{len(o.entries)} of {o.total} definitions, {o.tokens}/{args.budget} tokens\n")
    return 0


def retrieve_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="limner retrieve",
                                description="The best chunks of DIR for a query, under a budget.")
    p.add_argument("dir")
    p.add_argument("query", nargs="?", default="")
    p.add_argument("--cursor", metavar="FILE:LINE",
                   help="retrieve for an infill before LINE of FILE instead of a query")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    _common(p)
    args, code = _parse(p, argv)
    if args is None:
        return code
    if args.budget <= 0:
        return _error(LimnerError(f"--budget {args.budget}: must be a positive number of tokens"))
    if not args.query and not args.cursor:
        return _error(LimnerError("give a QUERY or --cursor FILE:LINE"))
    from limner.retrieval import index, retrieve

    try:
        idx = index.open_index(args.dir, exclude=tuple(args.exclude))
        counter = _counter(args)
        if args.cursor:
            blocks = _for_cursor(idx, args.cursor, args.budget, counter)
        else:
            blocks = retrieve.retrieve(idx, args.query, args.budget, counter)
    except LimnerError as e:
        return _error(e)
    if args.json:
        print(json.dumps([dict(source=b.source, reason=b.reason, tokens=b.tokens, text=b.text)
                          for b in blocks], indent=1))
        return 0
    from limner.retrieval.budget import render

    text = render(blocks)
    sys.stdout.write(text + ("\n" if text else ""))
    total = counter.count(text) if text else 0
    for b in blocks:
        sys.stderr.write(f"  {b.source}  {b.tokens} tokens  ({b.reason})\n")
    sys.stderr.write(f"{len(blocks)} blocks, {total}/{args.budget} tokens\n")
    return 0


def _for_cursor(idx, spec: str, budget: int, counter):
    import os

    from limner.retrieval import retrieve

    path, _, line = spec.rpartition(":")
    if not path or not line.isdigit() or int(line) < 1:
        raise LimnerError(f"--cursor {spec!r}: want FILE:LINE, e.g. src/app.py:42",
                          "The line is 1-based; the hole is at the start of that line.")
    full = path if os.path.isabs(path) else os.path.join(idx.root, path)
    try:
        with open(full, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().split("\n")
    except OSError as e:
        raise LimnerError(f"--cursor {path}: {e.strerror}") from None
    n = int(line) - 1
    prefix = "\n".join(lines[:n]) + "\n"
    suffix = "\n".join(lines[n:])
    return retrieve.retrieve_for_cursor(idx, full, prefix, suffix, budget, counter)

