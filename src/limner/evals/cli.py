"""`limner eval`: measure models on code suites, side by side.

    limner eval humaneval --model gemma3-270m
    limner eval humaneval mbpp --model smollm2-135m --model gemma3-270m --limit 20 --repair 2 --resample-baseline
    limner eval humaneval --model qwen2.5-coder --endpoint http://a:8000/v1 --endpoint http://b:8000/v1 --workers 8
    limner eval --list

Generations go to OUT/generations.sqlite as they arrive; the same command
again resumes. Then every unscored generation is tested in the sandbox, and
OUT/report.html (with PNG plots) and OUT/report.json are written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from limner.errors import LimnerError

DEFAULT_OUT = "limner-eval"


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="limner eval", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Suites: humaneval, mbpp, humaneval-single, humaneval-multi, your own "
                                       "TOML in ~/.config/limner/suites/, or a .jsonl path. See docs/eval.md.")
    p.add_argument("suites", nargs="*", metavar="SUITE")
    p.add_argument("--model", action="append", default=[], metavar="M",
                   help="a model: bundled/registered name or .gguf on the embedded engine, "
                        "or the model name sent to --endpoint (repeat to compare)")
    p.add_argument("--profile", action="append", default=[], metavar="P",
                   help="a profile (built-in or your own) as one more column")
    p.add_argument("--endpoint", action="append", default=[], metavar="URL",
                   help="OpenAI-compatible base URL(s); requests are spread over all of them")
    p.add_argument("--samples", type=int, default=1, metavar="K", help="samples per task (pass@k); default 1 (greedy)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default 0 for one sample, 0.8 for several)")
    p.add_argument("--max-tokens", type=int, default=None, help="override the suite's max_tokens")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only N tasks of each suite")
    p.add_argument("--repair", type=int, default=0, metavar="N", help="repair rounds after a failed greedy sample")
    p.add_argument("--resample-baseline", action="store_true",
                   help="with --repair N: also draw N+1 samples at T=0.8 (equal-samples baseline)")
    p.add_argument("--mode", choices=("auto", "completion", "chat"), default="auto",
                   help="how to ask: auto = chat for models with a chat template, else completion")
    p.add_argument("--concurrency", "--workers", dest="concurrency", type=int, default=None, metavar="N",
                   help="HTTP requests in flight (default: the endpoints' slots where they say, else 4 per "
                        "URL; behind a router, its workers' total). The engine runs one at a time")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: physical cores)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per test run in the sandbox")
    p.add_argument("--sandbox", choices=("strict", "basic"), default="strict",
                   help="isolation for the generated code: strict (bwrap; the default, required unless "
                        "you ask otherwise) or basic (no network or filesystem isolation; recorded in the results)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--select", type=int, default=0, metavar="N",
                   help="selection by execution: N samples per task, then greedy, random, mean log-prob, "
                        "the vote and pass@N on that one pool, scored on held-out tests (docs/eval.md)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"results dir (default ./{DEFAULT_OUT})")
    p.add_argument("--rescore", action="store_true", help="drop stored scores and test every generation again")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the sandboxed tests run: local warm sandboxes (default) or Ray tasks on a "
                        "cluster (pip install 'limner[scale]'); the results are written here either way")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --executor ray: the cluster (HOST:6379 or ray://HOST:10001); default a local Ray")
    p.add_argument("--codebleu", action="store_true",
                   help="also compute CodeBLEU (in its own venv, made on first use; see docs/eval.md)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML report")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    from limner import render

    return render.run_command(argv, _args, _main, lambda args: (
        "interrupted: the samples so far are stored",
        f"Run the same command again to resume (results in {args.out}).",
    ))


def _main(args) -> int:
    from limner.evals import suites as registry

    if args.list:
        for name, path in registry.available().items():
            s = registry.from_toml(path)
            print(f"{name:<18} {s.description}  [{path}]")
        return 0
    if not args.suites:
        raise LimnerError("name at least one suite", "e.g. `limner eval humaneval --model gemma3-270m`; "
                                                     "`limner eval --list` shows them all.")
    if args.samples < 1 or args.repair < 0 or (args.limit is not None and args.limit < 1):
        raise LimnerError("--samples and --limit must be at least 1, --repair at least 0")
    if args.resample_baseline and not args.repair:
        raise LimnerError("--resample-baseline compares against --repair N: give both",
                          "e.g. --repair 2 --resample-baseline")
    targets = _targets(args)
    suites = [registry.load(name) for name in dict.fromkeys(args.suites)]
    from limner.sandbox.probe import require

    require(args.sandbox)  # the tests run model code: refuse now, before generating anything
    if args.sandbox == "basic":
        sys.stderr.write("limner eval: --sandbox basic: the generated code runs without network or "
                         "filesystem isolation\n")
    tasks = {s.name: s.pick(args.limit, args.seed) for s in suites}
    if args.select:
        return _select(args, targets, suites, tasks)

    from limner.evals import generate, report, score
    from limner.evals.store import Store

    out = Path(args.out)
    store = Store(out / "generations.sqlite")
    plan = generate.Plan(suites=suites, tasks=tasks, targets=targets, samples=args.samples,
                         temperature=args.temperature, max_tokens=args.max_tokens, repair=args.repair,
                         resample=args.resample_baseline, workers=_concurrency(args), seed=args.seed,
                         timeout=args.timeout, sandbox=args.sandbox)
    store.set_meta("last_command", ["limner", "eval", *sys.argv[2:]] if sys.argv[1:2] == ["eval"] else sys.argv)
    store.set_meta("sandbox", args.sandbox)
    if args.rescore:
        store.clear_scores()
    generate.generate(plan, store)
    by_suite = {name: {t.id: t for t in ts} for name, ts in tasks.items()}
    labels = {t.label for t in targets}
    todo = sum(1 for g in store.unscored() if g["model"] in labels and g["task"] in by_suite.get(g["suite"], {}))
    if todo:
        bar = generate.Progress(todo, "scoring in the sandbox")
        ex = score.executor(args.executor, workers=2, want=args.sandbox, address=args.address)
        try:
            score.score_all(store, by_suite, workers=2, timeout=args.timeout, progress=bar, models=labels,
                            want=args.sandbox, run_on=ex)
        finally:
            ex.close()
        bar.close()
    generate.repair_chains(plan, store)
    cb = None
    if args.codebleu:
        from limner.evals import codebleu

        cb = codebleu.for_plan(store, plan)
    summary = report.summarize(store, plan, codebleu=cb)
    summary["out"] = str(out)
    summary["sandbox"] = args.sandbox  # the level asked for; each run's "isolation" says what it got
    summary["dispatch"] = plan.dispatcher.stats.summary() if plan.dispatcher else None  # retries, 429s
    report.write_json(summary, out)
    html_path = None if args.no_html else report.write_html(summary, out)
    if args.json:
        slim = {k: v for k, v in summary.items() if k != "per_task"}
        sys.stdout.write(json.dumps(slim, indent=1) + "\n")
    else:
        sys.stdout.write(report.table(summary))
        from limner.evals.dispatch import describe

        if describe(summary["dispatch"]):
            sys.stdout.write(describe(summary["dispatch"]) + "\n")
        where = report.relpath(html_path) if html_path else report.relpath(out / "report.json")
        sys.stdout.write(f"report: {where}\n")
    store.close()
    return 0


def _select(args, targets, suites, tasks) -> int:
    from limner.select import evalsel

    if not 1 <= args.select <= 64:
        raise LimnerError("--select N takes 1 to 64 samples per task")
    params = {}
    for s in suites:
        params[s.name] = {"max_tokens": args.max_tokens or s.max_tokens,
                          "temperature": args.temperature if args.temperature is not None else 0.8}
        if s.stop:
            params[s.name]["stop"] = list(s.stop)
    dispatcher = None
    if any(not t.engine for t in targets):  # HTTP: bounded and retried, as the plain eval is
        from limner.evals.dispatch import Dispatcher

        dispatcher = Dispatcher(_concurrency(args))
    summary = evalsel.run(targets, tasks, args.select, params, args.seed, args.sandbox, Path(args.out),
                          dispatcher=dispatcher)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    else:
        from limner.evals import report

        sys.stdout.write(evalsel.table(summary) + f"report: {report.relpath(Path(summary['html']))}\n")
    return 0


def _concurrency(args) -> int:
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise LimnerError("--concurrency must be at least 1")
        return args.concurrency
    if not args.endpoint:
        return 4  # profiles over HTTP: their own URL, 4 in flight
    from limner.evals.dispatch import default_concurrency

    return default_concurrency(args.endpoint)


def _targets(args) -> list:
    from limner.evals.targets import Target

    if not args.model and not args.profile:
        raise LimnerError("name a model or a profile to evaluate",
                          "e.g. --model gemma3-270m (bundled), --model path/to/x.gguf, or --profile NAME.")
    targets = []
    # One profile with models: each model through that profile. Otherwise each
    # flag is its own column.
    if len(args.profile) == 1 and args.model:
        for m in args.model:
            targets.append(Target.for_profile(args.profile[0], m, args.endpoint, args.threads, args.mode))
    else:
        for p in args.profile:
            targets.append(Target.for_profile(p, None, args.endpoint, args.threads, args.mode))
        for m in args.model:
            targets.append(Target.for_model(m, args.endpoint, args.threads, args.mode))
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise LimnerError(f"the same target is named twice: {', '.join(labels)}")
    return targets
