"""`limner tune SUITE --model M --out NAME.profile`: demos that help, chosen on
dev, reported on held-out test.

Candidates, all at the same k (default 3): zero-shot; k labeled demos (train
tasks with their reference code); k bootstrapped demos (the model's own
greedy answers on train tasks that pass their tests, as DSPy's
BootstrapFewShot does), in a few shuffles. Each is scored greedily on the dev
split; the best is reported against zero-shot on the test split, with counts,
a paired bootstrap 95 % interval and McNemar's exact p, dev scores beside.
Demo tasks never appear in dev or test, by id or by function name. A
candidate that does not beat zero-shot on dev is not written (unless
--force): a tuned profile must never score below zero-shot on dev.

MBPP suites use MBPP's official splits (train / validation / test); other
suites a seeded 60/20/20 split. Over HTTP (a profile naming an endpoint)
every request goes through a dispatch.Dispatcher, one in flight, retried on
429/503 (after Retry-After), other 5xx and broken connections; the summary
is the report's "dispatch". Chat models only for now: a completion
model's demos would be one text block, which `limner eval` does not yet put
before a completion prompt.
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
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--force", action="store_true", help="write the profile even if it does not beat zero-shot")
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


def _ask(target, dispatcher, task, params):
    """One greedy chat answer: the engine directly, HTTP through the dispatcher."""
    if dispatcher is None or target.engine:
        return target.ask(task, "chat", params)
    return dispatcher.call(lambda: target.ask(task, "chat", params))


def _score(target, tasks, demos, params, pool, want, dispatcher=None) -> list[int]:
    from limner.evals import score
    from limner.request import Message

    saved = target.preamble
    target.preamble = saved + [Message(r, c) for d in demos for r, c in (("user", d[0]), ("assistant", d[1]))]
    try:
        out = []
        for t in tasks:
            gen = _ask(target, dispatcher, t, params)
            row = score.test(t, {"code": gen.code, "how": "chat", "error": gen.error}, 10.0, want,
                             lambda text, timeout: pool.run_python(text, timeout=timeout))
            out.append(int(bool(row.get("passed"))))
        return out
    finally:
        target.preamble = saved


def _demo(task, code: str) -> tuple[str, str]:
    from limner.evals.targets import chat_instruction

    return chat_instruction(task), f"```python\n{code.strip()}\n```"


def _main(args) -> int:
    from limner.evals import suites as registry
    from limner.evals.targets import Target
    from limner.sandbox.pool import Pool
    from limner.sandbox.probe import require
    from limner.select.evalsel import bootstrap_ci, mcnemar

    if args.k < 1 or args.dev < 1 or args.test < 1:
        raise LimnerError("--k, --dev and --test must be at least 1")
    out = Path(args.out)
    if out.suffix != ".profile":
        raise LimnerError(f"--out must name a .profile file, not {out.name!r}")
    target = (Target.for_profile(args.profile, args.model, n_threads=args.threads) if args.profile
              else Target.for_model(args.model, n_threads=args.threads))
    suite = registry.load(args.suite)
    sp = splits(suite, args.seed)
    if target.how(sp["train"][0] if sp["train"] else sp["dev"][0]) != "chat":
        raise LimnerError(f"limner tune needs a chat model for now; {args.model} continues text",
                          "Use smollm2-135m or another model with a chat template.")
    require(args.sandbox)
    rng = random.Random(args.seed)
    train = rng.sample(sp["train"], min(args.train, len(sp["train"])))
    if len(train) < args.k:
        raise LimnerError(f"the train split has {len(sp['train'])} tasks: too few for k = {args.k} demos")
    params = {"temperature": 0, "max_tokens": suite.max_tokens}
    from limner.evals.dispatch import Dispatcher, describe

    disp = None if target.engine else Dispatcher(1)  # tune asks one task at a time
    t0 = time.monotonic()
    log = sys.stderr
    with Pool(2, want=args.sandbox, python=sys.executable, site=False) as pool:
        # bootstrapped demos: the model's own passing answers on train tasks
        boot = []
        for t in train:
            gen = _ask(target, disp, t, params)
            from limner.evals import score

            row = score.test(t, {"code": gen.code, "how": "chat", "error": gen.error}, 10.0, args.sandbox,
                             lambda text, timeout: pool.run_python(text, timeout=timeout))
            if row.get("passed"):
                boot.append((t, gen.code))
            if len(boot) >= args.k * args.shuffles:
                break
        log.write(f"tune: {len(boot)} bootstrapped demos from {len(train)} train tasks ({time.monotonic() - t0:.0f} s)\n")
        labeled = [(t, t.reference) for t in train[: args.k]]
        cands = {"zero-shot": []}
        cands[f"labeled k={args.k}"] = labeled
        for s in range(args.shuffles):
            if len(boot) >= args.k:
                pick = random.Random(args.seed + s).sample(boot, args.k)
                cands[f"bootstrapped k={args.k} shuffle {s + 1}"] = pick
        used = [t for demos in cands.values() for t, _ in demos]
        names = {fname(t) for t in used} - {None}
        ids = {t.id for t in used}

        def clean(tasks, n):  # no demo task, by id or function name
            keep = [t for t in tasks if t.id not in ids and fname(t) not in names]
            return random.Random(args.seed).sample(keep, min(n, len(keep)))

        dev, test = clean(sp["dev"], args.dev), clean(sp["test"], args.test)
        if len(dev) < 3 or len(test) < 3:
            raise LimnerError(f"the splits are too small to tune (dev {len(dev)}, test {len(test)} tasks)")
        dev_scores = {}
        for name, demos in cands.items():
            dev_scores[name] = _score(target, dev, [_demo(t, c) for t, c in demos], params, pool,
                                      args.sandbox, disp)
            log.write(f"tune: dev {name}: {sum(dev_scores[name])}/{len(dev)} ({time.monotonic() - t0:.0f} s)\n")
        best = max(cands, key=lambda n: (sum(dev_scores[n]), n == "zero-shot"))
        beats = sum(dev_scores[best]) > sum(dev_scores["zero-shot"])
        report = {"suite": args.suite, "model": args.model, "k": args.k, "seed": args.seed,
                  "splits": {"train_tried": len(train), "dev": len(dev), "test": len(test)},
                  "dev": {n: {"passed": sum(v), "of": len(v)} for n, v in dev_scores.items()},
                  "chosen": best if beats else None}
        report["dispatch"] = disp.stats.summary() if disp is not None else None
        if beats or args.force:
            base = _score(target, test, [], params, pool, args.sandbox, disp)
            chosen = _score(target, test, [_demo(t, c) for t, c in cands[best]], params, pool,
                            args.sandbox, disp)
            diffs = [c - b for c, b in zip(chosen, base)]
            lo, hi = bootstrap_ci(diffs)
            w, l, p = mcnemar(base, chosen)
            report["test"] = {"zero-shot": sum(base), "chosen": sum(chosen), "of": len(test),
                              "diff": sum(diffs) / len(diffs), "ci95": [lo, hi], "chosen_wins": w,
                              "chosen_losses": l, "mcnemar_p": p}
            if disp is not None:
                report["dispatch"] = disp.stats.summary()  # the test split's requests too
    Path(str(out)[: -len(".profile")] + ".tune.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    zs = report["dev"]["zero-shot"]
    print(f"dev ({len(dev)} tasks): " + ", ".join(f"{n} {v['passed']}" for n, v in report["dev"].items()))
    if describe(report["dispatch"]):
        print(describe(report["dispatch"]))
    if not beats and not args.force:
        print(f"no candidate beats zero-shot on dev ({zs['passed']}/{zs['of']}): no profile written "
              "(--force writes the best anyway)")
        return 0
    t = report["test"]
    print(f"test ({t['of']} tasks): zero-shot {t['zero-shot']}, {best} {t['chosen']}; "
          f"{t['diff'] * 100:+.1f} points (95 % CI {t['ci95'][0] * 100:+.1f} .. {t['ci95'][1] * 100:+.1f}), "
          f"McNemar p = {t['mcnemar_p']:.3g}")
    _write_profile(out, args, best, cands[best], report)
    print(f"wrote {out} and {out.stem}.tune.json")
    return 0


def _write_profile(out: Path, args, best, demos, report) -> None:
    lines = [f"!note limner tune {args.suite} --model {args.model} --k {args.k} --seed {args.seed}: {best}",
             f"!note dev {report['dev'][best]['passed']}/{report['dev'][best]['of']} vs zero-shot "
             f"{report['dev']['zero-shot']['passed']}; test {report['test']['chosen']}/{report['test']['of']} "
             f"vs {report['test']['zero-shot']} (see {out.stem}.tune.json)"]
    if args.profile:
        lines.append(f"!profile {args.profile}")
    else:  # the model tuned on, on the embedded engine (a buffer may still set !:model)
        lines += ["!backend embedded", f"!:model {args.model}"]
    for user, assistant in (_demo(t, c) for t, c in demos):
        lines += ["!user", "", "\n".join("!" + ln if ln.startswith("!") else ln for ln in user.splitlines()),
                  "", "!assistant", "", assistant, ""]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
