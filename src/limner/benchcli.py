"""`limner bench ...`: benchmarks a user can run from a fresh clone.

    limner bench fim --suite humaneval-single|humaneval-multi|PATH.jsonl
                     [--limit N] [--seed S] [--json] [--model GGUF|NAME|PROFILE]
    limner bench context [--holes N] [--seed S] [--cut line|symbol] [--suite FILE]
                         [--model GGUF|NAME] [--model-holes K] [--budget T]

The table goes to stdout, the progress bar to stderr.
"""
from __future__ import annotations

import argparse
import json
import random
import sys

from limner.errors import LimnerError

USAGE = ("usage: limner bench fim --suite SUITE [--limit N] [--seed S] [--json] [--model M] [--sandbox basic]\n"
         "       limner bench context [--holes N] [--cut line|symbol] [--suite FILE] [--model M] [--model-holes K]\n")


def _subset(text: str, allowed, what: str) -> list[str]:
    """The comma-separated names in `text`; an unknown one is an error listing the others."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise LimnerError(f"unknown {what} {unknown[0]!r}", f"Use some of: {', '.join(allowed)}.")
    return names


def _fim_args(argv: list[str]) -> argparse.Namespace:
    from limner.fim.bench import DEFAULT_CAP, POLICIES

    p = argparse.ArgumentParser(
        prog="limner bench fim",
        description="Compare FIM stop policies on the same generations: pass@1, exact match, "
        "tokens kept, seconds per task.",
    )
    p.add_argument("--suite", required=True,
                   help="humaneval-single (1,033 tasks), humaneval-multi (5,815) or a JSONL file "
                   'of {"id","language","prefix","suffix","middle","test"?}')
    p.add_argument("--limit", type=int, default=None, help="a seeded random subset of N tasks")
    p.add_argument("--seed", type=int, default=0, help="picks the subset (and seeds sampling)")
    p.add_argument("--json", action="store_true", help='print {"policies": [...]} instead of a table')
    p.add_argument("--model", default="",
                   help="a bundled or registered model name, a .gguf path, or a profile "
                   "(built-in, NAME.profile or a file) pointing at an HTTP server "
                   "(default: the bundled Gemma-3-270M base)")
    p.add_argument("--cap", type=int, default=DEFAULT_CAP, help="tokens generated per task (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: physical cores)")
    p.add_argument("--cache", default=None, help="generation cache file (default under ~/.cache/limner)")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help=f"comma-separated subset of {','.join(POLICIES)}")
    p.add_argument("--generate-only", action="store_true",
                   help="fill the generation cache and stop (score later)")
    p.add_argument("--no-generate", action="store_true",
                   help="score only tasks already in the cache")
    p.add_argument("--sandbox", choices=("strict", "basic"), default="strict",
                   help="isolation for the generated code's tests: strict (bwrap, the default) or "
                        "basic (no network or filesystem isolation)")
    return p.parse_args(argv)


def bench_fim(argv: list[str]) -> int:
    from limner.fim import bench, suites

    try:
        args = _fim_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    policies = _subset(args.policies, bench.POLICIES, "policy")
    tasks = suites.sample(suites.load(args.suite), args.limit, args.seed)
    if not args.generate_only and any(t.test for t in tasks):
        from limner.sandbox.probe import require

        require(args.sandbox)  # scoring runs model code: refuse before generating anything
    model = args.model
    cache = args.cache or bench.cache_path(args.suite, model or "default", args.cap, args.temperature)
    gens = bench.read_cache(cache)
    todo = [t for t in tasks if t.id not in gens]
    # Generate in a seeded random order: an interrupted run is still a random sample.
    random.Random(args.seed).shuffle(todo)
    if todo and not args.no_generate:
        try:
            gen = bench.generator(model, args.cap, args.temperature, args.seed, args.threads)
        except Exception as e:  # an unknown model: say which names and files work
            raise LimnerError(f"--model {model!r}: {getattr(e, 'message', e)}",
                              getattr(e, "hint", "") + " A profile (fim:NAME with !api, or a "
                              ".profile file) sends the bench to an HTTP server.") from None
        bar = bench.Progress(f"generating {len(todo)}")
        failed = 0
        for k, task in enumerate(todo):
            try:
                g = gen(task)
            except RuntimeError as e:  # one bad generation must not lose the run
                failed += 1
                sys.stderr.write(f"\n{task.id}: generation failed ({e}); skipped\n")
                if failed > max(3, len(todo) // 10):
                    raise LimnerError(f"{failed} generations failed; the last: {e}",
                                      "See the model's log with LIMNER_VERBOSE=1.") from None
                continue
            bench.append_cache(cache, g)
            gens[task.id] = g
            bar(k + 1, len(todo))
    if args.generate_only:
        sys.stderr.write(f"generations cached in {cache}\n")
        return 0
    tasks = [t for t in tasks if t.id in gens]
    if not tasks:
        raise LimnerError("no generations to score", f"Run without --no-generate to fill {cache}.")
    rows = bench.score(tasks, gens, policies, progress=bench.Progress("scoring"), want=args.sandbox)
    if args.json:
        print(json.dumps({"suite": args.suite, "n": len(tasks), "model": model or "gemma3-270m",
                          "cap": args.cap, "scorer": bench.sandbox_name(args.sandbox),
                          "policies": [r.as_json() for r in rows]}, indent=2))
    else:
        print(f"suite {args.suite}: {len(tasks)} tasks, model {model or 'gemma3-270m (bundled)'}, "
              f"cap {args.cap} tokens, tests via {bench.sandbox_name(args.sandbox)}")
        print(bench.table(rows))
        lim = next((r for r in rows if r.policy == "limner"), None)
        if lim is not None:
            j = lim.as_json()
            print(f"limner stop check: {j['stop_ms_per_line']:.3f} ms per streamed line; "
                  f"stops: {', '.join(f'{k} {v}' for k, v in sorted(lim.reasons.items()))}")
    return 0


def _context_args(argv: list[str]) -> argparse.Namespace:
    from limner.retrieval.bench import CONDITIONS

    p = argparse.ArgumentParser(
        prog="limner bench context",
        description="Cross-file completion: holes cut from renamed copies of stdlib packages (or "
        "your own JSONL suite); retrieval recall@5, then, with --model, exact match, edit "
        "similarity and identifier match in-file / +outline / +retrieve / +definition.")
    p.add_argument("--holes", type=int, default=120, help="holes to generate (default 120)")
    p.add_argument("--seed", type=int, default=11, help="picks targets and holes (default 11)")
    p.add_argument("--cut", choices=("line", "symbol"), default="line",
                   help="blank the whole line, or put the cursor just before the renamed symbol "
                   "(CrossCodeEval's cut)")
    p.add_argument("--suite", help="read holes from this JSONL instead of generating them "
                   "(root, path, prefix, suffix, expected, symbol, def_path, def_line)")
    p.add_argument("--out", help="write the generated holes here (JSONL)")
    p.add_argument("--work", default=None, help="where the renamed package copies go "
                   "(default ~/.cache/limner/bench/context)")
    p.add_argument("--budget", type=int, default=1024, help="context tokens (default 1024)")
    p.add_argument("--model", help="also generate with this model: a bundled name or a .gguf")
    p.add_argument("--model-holes", type=int, default=0,
                   help="generate on this many holes, spread over the list (default: all)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frame", choices=("comment", "code", "repo"), default="comment",
                   help="context as # comments (as !retrieve renders it), as plain code, or as "
                   "files with the model's repo-level FIM tokens (models whose vocabulary has a "
                   "file separator, e.g. the bundled SmolLM2)")
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--json", help="also write the per-hole rows and the summary here")
    p.add_argument("--rows", help="append each hole's model results here (JSONL) as it finishes; "
                   "a run given the same file resumes, skipping holes already in it")
    return p.parse_args(argv)


def bench_context(argv: list[str]) -> int:
    from limner.retrieval import bench, bench_holes

    try:
        a = _context_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    conditions = tuple(_subset(a.conditions, bench.CONDITIONS, "condition"))
    if a.budget <= 0 or a.holes <= 0:
        raise LimnerError("--budget and --holes must be positive", "For example --budget 512.")
    if a.suite:
        try:
            holes = bench_holes.load(a.suite)
        except OSError as e:
            raise LimnerError(f"cannot read {a.suite}: {e.strerror}", "Check the path.") from None
    else:
        holes = bench_holes.generate(a.work or bench_holes.default_work(), a.holes, a.seed, a.cut)
        if a.out:
            bench_holes.save(a.out, holes)
    result = {"part1": bench.measure(holes, a.budget)}
    if a.model:
        k = min(a.model_holes or len(holes), len(holes))
        subset = [holes[i * len(holes) // k] for i in range(k)]  # spread: every package is in
        print(f"\npart 2: {a.model}, {len(subset)} holes, greedy, max {a.max_tokens} tokens, "
              f"context budget {a.budget} (approximate count), {a.threads} thread(s), "
              f"context framed as {a.frame}", flush=True)
        rows = bench.run(subset, a.budget, a.model, a.max_tokens, a.threads, conditions, a.frame,
                         rows_file=a.rows)
        result["part2"] = bench.report(rows)
        result["rows"] = {c: [dict(r, id=h.get("id")) for r, h in zip(rs, subset)]
                          for c, rs in rows.items()}
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE + "\nbenchmarks:\n  fim       FIM stop policies on HumanEval infilling or your own suite\n"
                         "  context   cross-file completion with repository context (issue 9)\n")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    runners = {"fim": bench_fim, "context": bench_context}
    if name not in runners:
        sys.stdout.write(f"\n\n!error\n\nunknown benchmark {name!r}\nAvailable: {', '.join(runners)}.\n")
        return 2
    try:
        return runners[name](rest)
    except LimnerError as e:
        sys.stdout.write(f"\n\n!error\n\n{e.message}\n{e.hint}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted; generations so far are cached\n")
        return 130
