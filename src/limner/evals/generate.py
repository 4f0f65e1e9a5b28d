"""Running models over suites: every sample stored as it arrives, resumable.

    plan = Plan(suites, targets, samples=1, repair=2, resample=True)
    run(plan, store)          # generate what the store lacks, score it, run repair chains

Engine targets run one job at a time (the engine serves jobs serially; its
threads are pinned). HTTP targets run `workers` requests at once (the
--concurrency), spread over their endpoints, through a dispatch.Dispatcher
that retries 429/503/5xx and broken connections. The store is keyed by
(suite, task, model, variant, sample) and records the seed: an interrupted
run, started again with the same --out, asks only for what is missing, and
a retried request is stored once.

Variants:
  greedy   temperature 0, one sample: pass@1
  T<t>     --samples k at temperature t: pass@k by the unbiased estimator
  repair   the repair loop from the greedy sample: sample r = round r (1..N)
The resample baseline is T<t> with N+1 samples, so repair (up to N+1
samples) and resampling spend the same number of samples per task.
"""
from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

RESAMPLE_TEMPERATURE = 0.8


@dataclass
class Variant:
    name: str
    samples: int
    temperature: float


@dataclass
class Plan:
    suites: list  # Suite
    tasks: dict  # suite name -> list[Task]
    targets: list  # Target
    samples: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    repair: int = 0
    resample: bool = False
    workers: int = 4
    seed: int = 1234
    timeout: float = 10.0
    sandbox: str = "strict"  # the level tests run at; "basic" only on --sandbox basic
    variants: list[Variant] = field(default_factory=list)
    dispatcher: object = None  # dispatch.Dispatcher for HTTP targets; made on first use

    def __post_init__(self):
        if not self.variants:
            self.variants = plan_variants(self.samples, self.temperature, self.repair, self.resample)


def plan_variants(samples: int, temperature: float | None, repair: int, resample: bool) -> list[Variant]:
    out: list[Variant] = []
    if samples <= 1 and not temperature:
        out.append(Variant("greedy", 1, 0.0))
    else:
        t = temperature if temperature else RESAMPLE_TEMPERATURE
        out.append(Variant(f"T{t:g}", max(1, samples), t))
    if repair and out[0].name != "greedy":
        out.insert(0, Variant("greedy", 1, 0.0))  # repair chains start from the greedy sample
    if repair and resample:
        name = f"T{RESAMPLE_TEMPERATURE:g}"
        same = [v for v in out if v.name == name]
        if same:
            same[0].samples = max(same[0].samples, repair + 1)
        else:
            out.append(Variant(name, repair + 1, RESAMPLE_TEMPERATURE))
    return out


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line every
    10% (or 30 s) otherwise, so a nohup log stays readable."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label, self.done = max(total, 0), label, 0
        self.out = stream or sys.stderr
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.t0 = self.last = time.monotonic()
        self.last_pct = -1
        self.lock = threading.Lock()
        self.note = ""

    def step(self, note: str = "") -> None:
        with self.lock:
            self.done += 1
            if note:
                self.note = note
            self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.total:
            return
        frac = self.done / self.total
        now = time.monotonic()
        elapsed = now - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0
        text = f"{self.label} {self.done}/{self.total} {elapsed:.0f}s elapsed, eta {eta:.0f}s {self.note}"
        if self.tty:
            width = 24
            bar = "#" * int(frac * width) + "." * (width - int(frac * width))
            self.out.write(f"\r[{bar}] {text[:110]:<110}" + ("\n" if final else ""))
            self.out.flush()
        elif final or int(frac * 10) > self.last_pct or now - self.last > 30:
            self.last_pct, self.last = int(frac * 10), now
            self.out.write(text.rstrip() + "\n")
            self.out.flush()

    def close(self) -> None:
        with self.lock:
            if self.tty and self.total:
                self._draw(final=True)


def params_for(plan: Plan, suite, variant: Variant, sample: int, how: str) -> dict:
    p = {"max_tokens": plan.max_tokens or suite.max_tokens, "temperature": variant.temperature}
    if how == "completion" and suite.stop:
        p["stop"] = list(suite.stop)
    if variant.temperature > 0:
        p["seed"] = plan.seed + sample  # reproducible samples, different from each other
    return p


def _note(gen) -> str:
    if gen.error:
        return "error: " + gen.error[:60]
    if gen.tokens_per_s:
        return f"{gen.tokens_per_s:.1f} tok/s"
    return ""


def _dispatcher(plan: Plan):
    if plan.dispatcher is None:
        from limner.evals.dispatch import Dispatcher

        plan.dispatcher = Dispatcher(plan.workers)
    return plan.dispatcher


def _ask(plan: Plan, target, *args, **kw):
    """One sample: the engine answers directly; HTTP goes through the dispatcher."""
    if target.engine:
        return target.ask(*args, **kw)
    return _dispatcher(plan).call(lambda: target.ask(*args, **kw))


def _missing(have: dict | None, seed) -> bool:
    if have is None:
        return True
    if have.get("error") and not (have.get("text") or "").strip():
        return True  # a failed request: ask again
    # Drawn with another seed (a changed --seed on the same --out): not this sample.
    return have.get("seed") is not None and have.get("seed") != seed


def generate(plan: Plan, store, stream=None) -> int:
    """Ask every target for every missing sample; returns how many were asked."""
    try:
        return _generate(plan, store, stream)
    finally:
        if plan.dispatcher is not None:
            store.set_meta("dispatch", plan.dispatcher.stats.summary())


def _generate(plan: Plan, store, stream=None) -> int:
    if any(not t.engine for t in plan.targets):
        _dispatcher(plan)  # made here, before the threads, so all of them count in one
    asked = 0
    for target in plan.targets:
        for suite in plan.suites:
            jobs = []
            for variant in plan.variants:
                for task in plan.tasks[suite.name]:
                    for s in range(variant.samples):
                        key = (suite.name, task.id, target.label, variant.name, s)
                        seed = params_for(plan, suite, variant, s, "chat").get("seed")
                        if _missing(store.get(key), seed):
                            jobs.append((key, task, variant, s))
            if not jobs:
                continue
            bar = Progress(len(jobs), f"{suite.name} {target.label}", stream)

            def one(job):
                key, task, variant, s = job
                how = target.how(task)
                params = params_for(plan, suite, variant, s, how)
                gen = _ask(plan, target, task, how, params)
                store.put(key, {**gen.row(), "seed": params.get("seed")})  # the final answer, once
                bar.step(_note(gen))

            try:
                _run_all(one, jobs, 1 if target.engine else plan.workers)
            finally:
                bar.close()
            asked += len(jobs)
    return asked


def repair_chains(plan: Plan, store, stream=None) -> int:
    """For each task whose greedy sample failed: up to N repair rounds, each
    scored at once (the next round needs the failure). Returns rounds asked."""
    from limner.evals import repair

    if not plan.repair:
        return 0
    if any(not t.engine for t in plan.targets):
        _dispatcher(plan)
    asked = 0
    for target in plan.targets:
        for suite in plan.suites:
            tasks = [t for t in plan.tasks[suite.name] if t.mode != "fim" and t.test]
            bar = Progress(len(tasks), f"repair {suite.name} {target.label}", stream)

            def chain(task):
                nonlocal asked
                base = (suite.name, task.id, target.label, "greedy", 0)
                history = [(store.get(base), _scored(store, base, task, plan.timeout, plan.sandbox))]
                for r in range(1, plan.repair + 1):
                    gen, sc = history[-1]
                    if gen is None or sc.get("passed"):
                        break
                    key = (suite.name, task.id, target.label, "repair", r)
                    have = store.get(key)
                    if have is None:
                        how = gen.get("how") or target.how(task)
                        p = params_for(plan, suite, Variant("repair", 1, 0.0), r, how)
                        msgs, prompt = repair.next_request(task, how, history)
                        new = _ask(plan, target, task, how, p, messages=msgs, prompt=prompt)
                        store.put(key, {**new.row(), "seed": p.get("seed")})
                        have = store.get(key)
                        asked += 1
                    history.append((have, _scored(store, key, task, plan.timeout, plan.sandbox)))
                bar.step()

            try:
                _run_all(chain, tasks, 1 if target.engine else plan.workers)
            finally:
                bar.close()
    return asked


def _run_all(fn, items: list, workers: int) -> None:
    """fn over items, serially or on a thread pool. On Ctrl-C, queued items
    are dropped at once (only requests already in flight finish)."""
    if workers <= 1:
        for item in items:
            fn(item)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        for f in [pool.submit(fn, item) for item in items]:
            f.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _scored(store, key, task, timeout, sandbox: str = "strict") -> dict:
    from limner.evals import score

    sc = store.score_of(key)
    if sc is None:
        gen = store.get(key)
        if gen is None:
            return {"passed": 0, "status": "missing"}
        sc = score.test(task, gen, timeout, want=sandbox)
        store.put_score(key, sc)
    return sc
