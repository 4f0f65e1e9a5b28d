"""Chat grounding (issue 9, bench 2): questions about renamed stdlib code, with and without `!retrieve`.

The renamed package copies of `limner bench context` (generated here if
missing) give questions whose answers no model can know from pretraining:
"Which file defines NAME?" (scored: the answer names the defining file's
name) and "What arguments does NAME take?" (scored: every parameter name
appears in the answer). Each question is sent as a buffer through the real
path (buffer.parse → assemble.apply → the embedded engine), once as is and
once with `!retrieve` (the package as the working directory, `!budget`
1,024 by default: the default budget of ~3,100 tokens takes a minute a
question on one loaded core). Paired: McNemar's exact test.

    nice -n 10 .venv/bin/python bench/context_grounding.py [--questions 40] [--model smollm2-135m]
"""
from __future__ import annotations

import argparse
import ast
import os
import random
import time

from limner import buffer
from limner.backends.embedded import job_for
from limner.events import Text, Usage
from limner.retrieval import assemble, bench_holes
from limner.stats import mcnemar


def questions(work: str, n: int, seed: int) -> list[dict]:
    holes = bench_holes.generate(work, 400, seed)
    out, seen = [], set()
    for h in holes:
        if h["symbol"] in seen:
            continue
        seen.add(h["symbol"])
        with open(os.path.join(h["root"], h["def_path"]), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        node = next((d for d in tree.body if getattr(d, "name", None) == h["symbol"]), None)
        base = dict(root=h["root"], symbol=h["symbol"], def_path=h["def_path"])
        out.append(dict(base, kind="file", q=f"Which file defines {h['symbol']}? Answer with the file name.",
                        want=[os.path.basename(h["def_path"])]))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                      if a.arg not in ("self", "cls")]
            if params:
                out.append(dict(base, kind="params", q=f"What arguments does {h['symbol']} take?",
                                want=params))
    random.Random(seed).shuffle(out)
    return out[:n]


def ask(engine, q: dict, model: str, retrieve: bool, threads: int, max_tokens: int, budget: int):
    text = (f"!:model {model}\n!:temperature 0\n!:max_tokens {max_tokens}\n!:n_threads {threads}\n"
            f"!backend embedded\n!budget {budget}\n" + ("!retrieve\n" if retrieve else "") + "!user\n" + q["q"] + "\n")
    req = buffer.parse(text, cwd=q["root"], env={})
    assemble.apply(req, env={})
    t = time.perf_counter()
    reply, usage = [], None
    for e in engine.stream(job_for(req)):
        if isinstance(e, Text):
            reply.append(e.text)
        elif isinstance(e, Usage):
            usage = e
    answer = "".join(reply)
    ok = all(w in answer for w in q["want"])
    return ok, (usage.prompt_tokens if usage else 0), time.perf_counter() - t, answer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--budget", type=int, default=1024, help="!budget for !retrieve")
    ap.add_argument("--show", action="store_true", help="print every answer")
    ap.add_argument("--work", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "limner", "bench", "context"))
    a = ap.parse_args()
    from limner.engine.core import Engine

    qs = questions(a.work, a.questions, a.seed)
    engine = Engine(n_threads=a.threads, max_models=1)
    rows = {False: [], True: []}
    try:
        for i, q in enumerate(qs, 1):
            for cond in (False, True):
                rows[cond].append(ask(engine, q, a.model, cond, a.threads, a.max_tokens, a.budget))
            if a.show:
                print(f"    want {q['want']}\n    plain: {rows[False][-1][3]!r}\n    +retrieve: {rows[True][-1][3]!r}")
            print(f"  {i}/{len(qs)} {q['kind']:6s} {q['symbol']}: plain {'ok' if rows[False][-1][0] else '--'}"
                  f"  +retrieve {'ok' if rows[True][-1][0] else '--'}", flush=True)
    finally:
        engine.close()
    n = len(qs)
    print(f"\n{a.model}, {n} questions ({sum(q['kind'] == 'file' for q in qs)} which-file, "
          f"{sum(q['kind'] == 'params' for q in qs)} arguments), greedy, max {a.max_tokens} tokens, "
          f"!budget {a.budget}")
    for cond, name in ((False, "no context"), (True, "!retrieve")):
        r = rows[cond]
        for kind in ("file", "params"):
            sub = [x for x, q in zip(r, qs) if q["kind"] == kind]
            if sub:
                print(f"  {name:10s} {kind:6s} {sum(x[0] for x in sub)}/{len(sub)}")
        secs = sorted(x[2] for x in r)
        print(f"  {name:10s} all    {sum(x[0] for x in r)}/{n} = {sum(x[0] for x in r) / n:.2f}  "
              f"prompt tokens mean {sum(x[1] for x in r) / n:.0f}  latency p50 {secs[n // 2]:.2f}s")
    w, l, p = mcnemar([x[0] for x in rows[False]], [x[0] for x in rows[True]])
    print(f"  paired: !retrieve +{w}/-{l} (McNemar exact p={p:.3f})")


if __name__ == "__main__":
    main()
