"""`limner tune SUITE --model M --out NAME.profile`: demos that help, chosen on
dev, reported on held-out test.

Candidates, all at the same k (default 3): zero-shot; k labeled demos (train
tasks with their reference code); k bootstrapped demos (the model's own
greedy answers on train tasks that pass their tests, as DSPy's
BootstrapFewShot does), in a few shuffles; a few fixed instructions alone,
and the best of them with the best demos when it beats zero-shot. Each is
scored greedily on the dev split; the best is reported against zero-shot on the test split, with counts,
a paired bootstrap 95 % interval and McNemar's exact p, dev scores beside.
Demo tasks never appear in dev or test, by id or by function name. A
candidate that does not beat zero-shot on dev is not written (unless
--force): a tuned profile must never score below zero-shot on dev.

MBPP suites use MBPP's official splits (train / validation / test); other
suites a seeded 60/20/20 split. Over HTTP (a profile naming an endpoint)
every request goes through a dispatch.Dispatcher, one in flight, retried on
429/503 (after Retry-After), other 5xx and broken connections; the summary
is the report's "dispatch". Chat models get the instruction as a system
prompt and the demos as turns; completion models one text block before the
task's prompt (tune_prompts.py).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from limner.errors import LimnerError


def _args(argv):
    p = argparse.ArgumentParser(prog="limner tune", description=__doc__.splitlines()[0])
    p.add_argument("suite")
    p.add_argument("--model", required=True)
    p.add_argument("--profile", default=None, help="a base profile the demos are added to")
    p.add_argument("--out", required=True, metavar="NAME.profile")
    p.add_argument("--k", type=int, default=3, help="demos per candidate (default 3)")
    p.add_argument("--shuffles", type=int, default=2, help="bootstrapped-demo shuffles (default 2)")
    p.add_argument("--dev", type=int, default=30, metavar="N", help="dev tasks (seeded subset)")
    p.add_argument("--test", type=int, default=60, metavar="N", help="test tasks (seeded subset)")
    p.add_argument("--train", type=int, default=40, metavar="N", help="train tasks tried for bootstrapping")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sandbox", choices=("strict", "basic"), default="strict")
    p.add_argument("--instructions", type=int, default=2, metavar="N",
                   help="fixed instruction variants to try (default 2, all; 0: none)")
    p.add_argument("--max-tokens", type=int, default=None, help="override the suite's max_tokens")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--force", action="store_true",
                   help="write the best other candidate even if it does not beat zero-shot")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    from limner import render

    return render.run_command(argv, _args, _main, lambda args: ("interrupted: nothing was written",))


def fname(task) -> str | None:
    m = re.search(r"\b([A-Za-z_]\w*)\s*\(", (task.test or "").split("assert", 1)[-1])
    return m.group(1) if m else None


def splits(suite, seed: int) -> dict[str, list]:
    from limner.evals import suites as registry

    if suite.loader.split(":")[0] == "mbpp":
        out = {}
        for name, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
            s = registry.Suite(**{**suite.__dict__, "loader": f"mbpp:{split}"})
            out[name] = s.tasks()
        return out
    tasks = list(suite.tasks())
    random.Random(seed).shuffle(tasks)
    a, b = int(len(tasks) * 0.6), int(len(tasks) * 0.8)
    return {"train": tasks[:a], "dev": tasks[a:b], "test": tasks[b:]}


def _ask(target, dispatcher, task, how, params):
    """One greedy answer: the engine directly, HTTP through the dispatcher."""
    if dispatcher is None or target.engine:
        return target.ask(task, how, params)
    return dispatcher.call(lambda: target.ask(task, how, params))


def _passes(target, dispatcher, task, how, params, pool, want) -> tuple[bool, str]:
    from limner.evals import score

    gen = _ask(target, dispatcher, task, how, params)
    row = score.test(task, {"code": gen.code, "how": how, "error": gen.error}, 10.0, want,
                     lambda text, timeout: pool.run_python(text, timeout=timeout))
    return bool(row.get("passed")), gen.code


def _score(target, how, tasks, cand, params, pool, want, dispatcher=None) -> list[int]:
    """Pass/fail per task with the candidate before each (the scored program
    is the task's own, without the demos)."""
    from limner.evals import tune_prompts as tp

    saved = target.preamble, target.prefix
    if how == "completion":
        target.prefix = saved[1] + tp.completion_block(cand)
    else:
        target.preamble = [*saved[0], *tp.chat_preamble(cand)]
    try:
        return [int(_passes(target, dispatcher, t, how, params, pool, want)[0]) for t in tasks]
    finally:
        target.preamble, target.prefix = saved


def _check_sizes(sp: dict, k: int, suite: str) -> None:
    """Refuse before any model runs: a split this small cannot tell candidates apart."""
    n = {name: len(v) for name, v in sp.items()}
    if n["train"] < k or n["dev"] < 3 or n["test"] < 3:
        raise LimnerError(f"suite {suite} is too small to tune: train {n['train']}, dev {n['dev']}, "
                          f"test {n['test']} tasks (needs k = {k} train, 3 dev, 3 test)",
                          "Use a bigger suite (a seeded 60/20/20 split needs at least 15 tasks) or a smaller --k.")


def _main(args) -> int:
    from limner.evals import suites as registry
    from limner.evals import tune_prompts as tp
    from limner.evals.targets import Target

    if args.k < 1 or args.dev < 3 or args.test < 3 or args.instructions < 0:
        raise LimnerError("--k must be at least 1, --dev and --test at least 3, --instructions at least 0")
    out = Path(args.out)
    if out.suffix != ".profile":
        raise LimnerError(f"--out must name a .profile file, not {out.name!r}")
    suite = registry.load(args.suite)
    sp = splits(suite, args.seed)
    _check_sizes(sp, args.k, args.suite)
    target = (Target.for_profile(args.profile, args.model, n_threads=args.threads) if args.profile
              else Target.for_model(args.model, n_threads=args.threads))
    how = target.how(sp["train"][0])
    if how not in ("chat", "completion"):
        raise LimnerError(f"limner tune asks chat or completion tasks; suite {args.suite} is {how}")
    from limner.sandbox.pool import Pool
    from limner.sandbox.probe import require
    from limner.select.evalsel import bootstrap_ci, mcnemar

    require(args.sandbox)
    rng = random.Random(args.seed)
    train = rng.sample(sp["train"], min(args.train, len(sp["train"])))
    params = {"temperature": 0, "max_tokens": args.max_tokens or suite.max_tokens}
    if how == "completion" and suite.stop:
        params["stop"] = list(suite.stop)
    from limner.evals.dispatch import Dispatcher, describe

    disp = None if target.engine else Dispatcher(1)  # tune asks one task at a time
    t0 = time.monotonic()
    log = sys.stderr
    with Pool(2, want=args.sandbox, python=sys.executable, site=False) as pool:
        # bootstrapped demos: the model's own passing answers on train tasks
        boot, tried = [], 0
        for t in train:
            tried += 1
            ok, code = _passes(target, disp, t, how, params, pool, args.sandbox)
            if ok:
                boot.append((t, code))
            if len(boot) >= args.k * args.shuffles:
                break
        log.write(f"tune: {how} model; {len(boot)} bootstrapped demos from {tried} train tasks "
                  f"({time.monotonic() - t0:.0f} s)\n")
        cands = [tp.Candidate("zero-shot"), tp.Candidate(f"labeled k={args.k}", "",
                                                         [(t, t.reference) for t in train[: args.k]])]
        for s in range(args.shuffles):
            if len(boot) >= args.k:
                pick = random.Random(args.seed + s).sample(boot, args.k)
                cands.append(tp.Candidate(f"bootstrapped k={args.k} shuffle {s + 1}", "", pick))
        for i, text in enumerate(tp.INSTRUCTIONS[how][: args.instructions]):
            cands.append(tp.Candidate(f"instruction {i + 1}", text))
        used = [t for c in cands for t, _ in c.demos]
        names = {fname(t) for t in used} - {None}
        ids = {t.id for t in used}

        def clean(tasks, n):  # no demo task, by id or function name
            keep = [t for t in tasks if t.id not in ids and fname(t) not in names]
            return random.Random(args.seed).sample(keep, min(n, len(keep)))

        dev, test = clean(sp["dev"], args.dev), clean(sp["test"], args.test)
        if len(dev) < 3 or len(test) < 3:
            raise LimnerError(f"the splits are too small to tune once the demo tasks are left out "
                              f"(dev {len(dev)}, test {len(test)} tasks)")
        dev_scores: dict[str, list[int]] = {}

        def run_dev(c):
            dev_scores[c.name] = _score(target, how, dev, c, params, pool, args.sandbox, disp)
            log.write(f"tune: dev {c.name}: {sum(dev_scores[c.name])}/{len(dev)} ({time.monotonic() - t0:.0f} s)\n")

        for c in cands:
            run_dev(c)
        zero = sum(dev_scores["zero-shot"])
        # The best instruction with the best demos: one more dev pass, only when
        # the instruction alone beat zero-shot (else it cannot be the reason to gain).
        instr = [c for c in cands if c.instruction]
        demos = [c for c in cands if c.demos]
        if instr and demos:
            bi = max(instr, key=lambda c: sum(dev_scores[c.name]))
            bd = max(demos, key=lambda c: sum(dev_scores[c.name]))
            if sum(dev_scores[bi.name]) > zero:
                combo = tp.Candidate(f"{bi.name} + {bd.name}", bi.instruction, bd.demos)
                cands.append(combo)
                run_dev(combo)
        by_name = {c.name: c for c in cands}
        best = max(cands, key=lambda c: (sum(dev_scores[c.name]), c.name == "zero-shot")).name
        # Strictly above zero-shot on the same dev tasks: a tie or a loss writes nothing.
        beats = sum(dev_scores[best]) > zero
        if not beats and args.force:  # forced: the best of the rest (a zero-shot profile adds nothing)
            best = max(cands[1:], key=lambda c: sum(dev_scores[c.name])).name
        report = {"suite": args.suite, "model": args.model, "how": how, "k": args.k, "seed": args.seed,
                  "params": params,
                  "splits": {"train_tried": tried, "bootstrapped": len(boot), "dev": len(dev), "test": len(test),
                             "dev_ids": [t.id for t in dev], "test_ids": [t.id for t in test]},
                  "dev": {n: {"passed": sum(v), "of": len(v)} for n, v in dev_scores.items()},
                  "candidates": [{**c.record(), "dev_passed": sum(dev_scores[c.name]),
                                  "dev_per_task": dev_scores[c.name]} for c in cands],
                  "chosen": best if beats else None, "forced": best if args.force and not beats else None}
        report["dispatch"] = disp.stats.summary() if disp is not None else None
        if beats or args.force:
            base = _score(target, how, test, by_name["zero-shot"], params, pool, args.sandbox, disp)
            chosen = _score(target, how, test, by_name[best], params, pool, args.sandbox, disp)
            diffs = [c - b for c, b in zip(chosen, base)]
            lo, hi = bootstrap_ci(diffs)
            w, l, p = mcnemar(base, chosen)
            report["test"] = {"zero-shot": sum(base), "chosen": sum(chosen), "of": len(test),
                              "diff": sum(diffs) / len(diffs), "ci95": [lo, hi], "chosen_wins": w,
                              "chosen_losses": l, "mcnemar_p": p}
            if disp is not None:
                report["dispatch"] = disp.stats.summary()  # the test split's requests too
    report["seconds"] = round(time.monotonic() - t0)
    Path(str(out)[: -len(".profile")] + ".tune.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    zs = report["dev"]["zero-shot"]
    print(f"dev ({len(dev)} tasks): " + ", ".join(f"{n} {v['passed']}" for n, v in report["dev"].items()))
    if describe(report["dispatch"]):
        print(describe(report["dispatch"]))
    if not beats and not args.force:
        print(f"no candidate beats zero-shot on dev ({zs['passed']}/{zs['of']}): no profile written "
              "(--force writes the best other candidate anyway)")
        return 0
    t = report["test"]
    if not beats:
        print(f"--force: {best} does not beat zero-shot on dev ({zs['passed']}/{zs['of']}); written anyway")
    print(f"test ({t['of']} tasks): zero-shot {t['zero-shot']}, {best} {t['chosen']}; "
          f"{t['diff'] * 100:+.1f} points (95 % CI {t['ci95'][0] * 100:+.1f} .. {t['ci95'][1] * 100:+.1f}), "
          f"McNemar p = {t['mcnemar_p']:.3g}")
    head = [f"!note limner tune {args.suite} --model {args.model} --k {args.k} --seed {args.seed}: {best}",
            (f"!note dev {report['dev'][best]['passed']}/{report['dev'][best]['of']} vs zero-shot "
             f"{zs['passed']}{'' if beats else ' (--force)'}; test {t['chosen']}/{t['of']} vs {t['zero-shot']} "
             f"(see {out.stem}.tune.json)")]
    out.write_text(tp.profile_text(how, head, args.profile, args.model, by_name[best]), encoding="utf-8")
    print(f"wrote {out} and {out.stem}.tune.json")
    return 0
