"""`limner replay`: re-send logged exchanges to another model, and say how far the replies moved.

    limner replay --id 12 --id 15 --model gemma3-270m
    limner replay --search "binary search" --profile vllm --model qwen2.5-coder
    limner replay --since 2025-06-01 --until 2025-06-08 --model smollm2-135m --json

Each chosen exchange is rebuilt from the log (its buffer when it parses
again, else its request body) and sent to the target, at temperature 0
unless --temperature says otherwise, so that a difference comes from the
model, not from sampling. Per exchange: edit similarity (characters) and
token similarity (words and symbols) between the logged reply and the new
one; then a summary. Run it after a model update to catch drift.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from limner.errors import LimnerError

# Request keys that shape the reply and carry over to the new target.
_CARRY = ("max_tokens", "max_completion_tokens", "n_predict", "stop", "top_p", "top_k", "min_p",
          "repeat_penalty", "seed", "presence_penalty", "frequency_penalty")


def _args(argv):
    p = argparse.ArgumentParser(prog="limner replay", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    pick = p.add_argument_group("which exchanges (any mix)")
    pick.add_argument("--id", action="append", type=int, default=[], help="an exchange id (repeatable)")
    pick.add_argument("--search", metavar="QUERY", help="exchanges matching a full-text query (FTS5)")
    pick.add_argument("--since", help="ISO date/time or age (2h, 3d)")
    pick.add_argument("--until", help="ISO date/time (exclusive; a date means the end of that day)")
    pick.add_argument("--limit", type=int, default=50, help="at most this many exchanges (default 50)")
    to = p.add_argument_group("where to send them")
    to.add_argument("--model", help="a model on the embedded engine, or the model name for --profile/--endpoint")
    to.add_argument("--profile", help="a profile (built-in or your own)")
    to.add_argument("--endpoint", action="append", default=[], metavar="URL",
                    help="OpenAI-compatible base URL(s)")
    p.add_argument("--temperature", type=float, default=0.0, help="default 0 (greedy): drift, not sampling noise")
    p.add_argument("--max-tokens", type=int, default=None, help="cap each reply (default: the exchange's own)")
    p.add_argument("--threads", type=int, default=None, help="engine threads")
    p.add_argument("--log", action="store_true", help="record the new replies in the log (source 'replay')")
    p.add_argument("--json", action="store_true", help="print per-exchange results and the summary as JSON")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    from limner import render

    return render.run_command(argv, _args, _main, lambda args: ("replay interrupted",))


def choose(args) -> list[dict]:
    """The exchanges asked for, oldest first, without duplicates."""
    from limner import log

    if not (args.id or args.search or args.since or args.until):
        raise LimnerError("choose exchanges to replay: --id N, --search QUERY, or --since/--until",
                          "`limner logs` lists recent exchanges with their ids.")
    rows: dict[int, dict] = {}
    for i in args.id:
        row = log.get(i)
        if row is None:
            raise LimnerError(f"no exchange with id {i} in {log.db_path()}", "`limner logs` lists them.")
        rows[row["id"]] = row
    if args.search:
        for row in log.search(args.search, limit=args.limit):
            rows.setdefault(row["id"], row)
    if args.since or args.until:
        from limner.logcli import parse_time

        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until, end_of_day=True) if args.until else None
        for row in log.iter_range(since=since, until=until):
            rows.setdefault(row["id"], row)
            if len(rows) >= args.limit + len(args.id):
                break
    return [rows[k] for k in sorted(rows)][: args.limit + len(args.id)]


def rebuild(row: dict):
    """(how, messages | None, prompt | None, task, params) of a logged exchange."""
    from limner.evals.suites import Task

    params: dict = {}
    req = None
    if row.get("buffer"):
        from limner import buffer

        try:
            req = buffer.parse(row["buffer"])
        except LimnerError:
            req = None  # a !context file moved, a profile is gone: use the body
    if req is not None:
        params = {k: v for k, v in req.data.items() if k in _CARRY}
        if req.mode == "chat":
            msgs = [{"role": m.role, "content": m.content} for m in req.messages]
            return "chat", msgs, None, Task(id=str(row["id"]), mode="completion", prompt=""), params
        if req.mode == "completion":
            return "completion", None, req.prompt, Task(id=str(row["id"]), mode="completion", prompt=req.prompt), params
        task = Task(id=str(row["id"]), mode="fim", prompt=req.prefix or "", suffix=req.suffix or "",
                    language=req.language or "python")
        return "fim", None, None, task, params
    body = row.get("request_body") or {}
    inner = body.get("params") if isinstance(body.get("params"), dict) else body  # an engine Job
    params = {k: v for k, v in inner.items() if k in _CARRY}
    if body.get("messages"):
        from limner.log import _content_text

        msgs = [{"role": m.get("role", "user"), "content": _content_text(m.get("content"))}
                for m in body["messages"] if isinstance(m, dict)]
        return "chat", msgs, None, Task(id=str(row["id"]), mode="completion", prompt=""), params
    prefix = body.get("input_prefix", body.get("prefix"))
    if prefix is not None:
        task = Task(id=str(row["id"]), mode="fim", prompt=prefix,
                    suffix=body.get("input_suffix", body.get("suffix")) or "")
        return "fim", None, None, task, params
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return "completion", None, prompt, Task(id=str(row["id"]), mode="completion", prompt=prompt), params
    raise LimnerError(f"exchange {row['id']}: cannot tell what was sent (no buffer, messages or prompt)")


def _target(args):
    from limner.evals.targets import Target

    if args.profile:
        return Target.for_profile(args.profile, args.model, args.endpoint, args.threads)
    if args.model:
        return Target.for_model(args.model, args.endpoint, args.threads)
    raise LimnerError("say where to replay: --model M (embedded engine or with --endpoint) or --profile P")


def replay_one(row: dict, target, args) -> dict:
    from limner.evals.score import edit_similarity, exact_match, token_similarity

    out = {"id": row["id"], "title": row.get("title") or "", "old_model": row.get("model") or row.get("profile"),
           "old_status": row.get("status")}
    try:
        how, msgs, prompt, task, params = rebuild(row)
    except LimnerError as e:
        return {**out, "error": e.message}
    params["temperature"] = args.temperature
    if args.max_tokens:
        params["max_tokens"] = args.max_tokens
    gen = target.ask(task, how, params, messages=msgs, prompt=prompt, whole=True)
    old, new = row.get("reply") or "", gen.text
    out.update(how=how, new_reply=new, old_reply=old, error=gen.error,
               edit_similarity=round(edit_similarity(old, new), 4),
               token_similarity=round(token_similarity(old, new), 4),
               exact=exact_match(old, new), latency_s=round(gen.latency_s or 0, 3),
               tokens_per_s=round(gen.tokens_per_s, 2) if gen.tokens_per_s else None)
    if args.log:
        _log(row, target, gen, how, msgs, prompt, task)
    return out


def _log(row, target, gen, how, msgs, prompt, task) -> None:
    from limner import log

    body = {"messages": msgs} if msgs else {"prompt": prompt} if prompt is not None else \
        {"prefix": task.prompt, "suffix": task.suffix}
    try:
        log.record({"source": "replay", "status": "error" if gen.error and not gen.text else "ok",
                    "request_body": body, "reply": gen.text, "model": target.base.model or target.label,
                    "profile": target.label, "mode": how, "elapsed_s": gen.latency_s,
                    "first_token_s": gen.ttft_s, "completion_tokens": gen.completion_tokens,
                    "prompt_tokens": gen.prompt_tokens, "extra": {"replay_of": row["id"]}})
    except LimnerError as e:
        sys.stderr.write(f"limner: could not log the replay: {e.message}\n")


def summarize(results: list[dict], target_label: str) -> dict:
    ok = [r for r in results if "edit_similarity" in r and not (r.get("error") and not r.get("new_reply"))]
    edits = [r["edit_similarity"] for r in ok]
    toks = [r["token_similarity"] for r in ok]
    return {
        "target": target_label, "exchanges": len(results), "compared": len(ok),
        "errors": len(results) - len(ok), "identical": sum(1 for r in ok if r["exact"]),
        "edit_similarity_mean": round(statistics.fmean(edits), 4) if edits else None,
        "edit_similarity_median": round(statistics.median(edits), 4) if edits else None,
        "edit_similarity_min": min(edits) if edits else None,
        "token_similarity_mean": round(statistics.fmean(toks), 4) if toks else None,
        "most_changed": [r["id"] for r in sorted(ok, key=lambda r: r["edit_similarity"])
                         if not r["exact"]][:5],
    }


def _main(args) -> int:
    rows = choose(args)
    if not rows:
        raise LimnerError("no logged exchange matches", "`limner logs` lists what the log holds.")
    target = _target(args)
    results = []
    for i, row in enumerate(rows, 1):
        sys.stderr.write(f"\rreplaying {i}/{len(rows)} (exchange {row['id']}) on {target.label} ")
        sys.stderr.flush()
        results.append(replay_one(row, target, args))
    sys.stderr.write("\n")
    summary = summarize(results, target.label)
    if args.json:
        sys.stdout.write(json.dumps({"summary": summary, "exchanges": results}, indent=1, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_table(results, summary))
    return 0 if summary["compared"] else 1


def _table(results: list[dict], s: dict) -> str:
    lines = [f"{'id':>5}  {'edit':>5}  {'token':>5}  {'old model':<16} title"]
    for r in results:
        if "edit_similarity" not in r or (r.get("error") and not r.get("new_reply")):
            lines.append(f"{r['id']:>5}  error: {r.get('error')}")
            continue
        lines.append(f"{r['id']:>5}  {r['edit_similarity']:5.2f}  {r['token_similarity']:5.2f}  "
                     f"{str(r['old_model'] or '-')[:16]:<16} {r['title'][:50]}")
    if s["compared"]:
        lines.append(f"\n{s['compared']} of {s['exchanges']} exchanges replayed on {s['target']}: "
                     f"edit similarity mean {s['edit_similarity_mean']:.3f} (median "
                     f"{s['edit_similarity_median']:.3f}, min {s['edit_similarity_min']:.3f}), token similarity "
                     f"mean {s['token_similarity_mean']:.3f}, {s['identical']} identical, {s['errors']} errors")
        if s["most_changed"]:
            lines.append("most changed: " + ", ".join(map(str, s["most_changed"]))
                         + "  (limner logs show ID to read the old reply)")
    else:
        lines.append(f"\nnone of the {s['exchanges']} exchanges could be replayed on {s['target']}")
    return "\n".join(lines) + "\n"
