"""N samples of one prompt in one llama.cpp batch (Job.n > 1).

The prompt is evaluated once into sequence 0 and its KV copied to sequences
1..N-1 (llama_memory_seq_cp copies the cells, nothing is recomputed). Each step then decodes one token per live sequence in
a single llama_decode, so the weights are read once per step for all N
samples instead of once per sample; that is where the saving comes from on a
memory-bound CPU.

Sequence i samples with its own chain seeded seed+i, so a seed gives the same
N samples every time. Each sample carries the sum and mean of its tokens'
log-probabilities under the model's raw distribution (before temperature and
truncation), which is what a mean-log-prob ranking wants.

Each sequence has its own KV stream (kv_unified off): in one unified cache
the sequences' cells interleave and a greedy sample came out differently in
slot 0 and slot 1 (different summation order over the cells); with a stream
each, every slot reproduces the single-sequence decode exactly.

The batch context is separate from the model's main one (it needs
n_seq_max = N and room for N continuations) and is kept per model, with its
prompt, so a repeated prompt is not evaluated again.
"""
from __future__ import annotations

import math
import random
import time

from limner.events import Failure, Sample, Stopped, Usage

BATCH_TOKENS_CAP = 16384  # KV cells for the batch context: ~400 MB for the bundled models
MAX_N = 64


class BatchContext:
    """A llama_context with n_seq_max sequences over a loaded model's weights."""

    def __init__(self, llm, n_ctx: int, n_seq: int, n_batch: int, n_threads: int):
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        base = llm.context_params
        for name, _ in params._fields_:  # keep the model's own settings (swa_full, flash attn, ...)
            setattr(params, name, getattr(base, name))
        params.n_ctx = n_ctx
        params.n_seq_max = n_seq
        params.kv_unified = False  # a stream per sequence: see the module docstring
        params.n_batch = max(n_batch, n_seq)
        params.n_ubatch = max(n_batch, n_seq)
        params.n_threads = params.n_threads_batch = n_threads
        self.ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not self.ctx:
            raise MemoryError(f"llama.cpp could not make a {n_ctx}-token context for {n_seq} sequences")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx, self.n_seq, self.n_batch = n_ctx, n_seq, max(n_batch, n_seq)
        self.per_seq = n_ctx // n_seq  # llama.cpp splits n_ctx evenly over the streams
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq)
        self.prompt: list[int] = []  # what sequence 0 holds up to its prompt's end

    def close(self) -> None:
        import llama_cpp

        if self.ctx:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def fits(self, per_seq: int, n_seq: int) -> bool:
        return self.ctx is not None and self.per_seq >= per_seq and self.n_seq >= n_seq

    def _fill(self, items) -> None:
        """items: (token, pos, seq, want_logits) for one llama_decode."""
        b = self.batch
        for j, (tok, pos, seq, want) in enumerate(items):
            b.token[j], b.pos[j], b.n_seq_id[j] = tok, pos, 1
            b.seq_id[j][0] = seq
            b.logits[j] = 1 if want else 0
        b.n_tokens = len(items)

    def decode(self, items) -> None:
        import llama_cpp

        self._fill(items)
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def load_prompt(self, tokens: list[int], n: int) -> int:
        """Put `tokens` in sequence 0 (reusing the common prefix), copy it to
        1..n-1; returns how many prompt tokens were reused."""
        import llama_cpp

        common = 0
        for a, b in zip(self.prompt, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # the last token is re-run for its logits
        for s in range(1, self.n_seq):
            llama_cpp.llama_memory_seq_rm(self.mem, s, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self.mem, 0, common, -1):
            llama_cpp.llama_memory_clear(self.mem, True)
            common = 0
        self.prompt = []
        for i in range(common, len(tokens), self.n_batch):
            chunk = tokens[i : i + self.n_batch]
            last = i + len(chunk) == len(tokens)
            self.decode([(t, i + k, 0, last and k == len(chunk) - 1) for k, t in enumerate(chunk)])
        self.prompt = list(tokens)
        for s in range(1, n):
            llama_cpp.llama_memory_seq_cp(self.mem, 0, s, -1, -1)
        return common


def _chain(p: dict, seed: int):
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = lambda s: llama_cpp.llama_sampler_chain_add(chain, s)  # noqa: E731
    if p["repeat_penalty"] != 1.0 or p["frequency_penalty"] or p["presence_penalty"]:
        add(llama_cpp.llama_sampler_init_penalties(64, p["repeat_penalty"],
                                                    p["frequency_penalty"], p["presence_penalty"]))
    if p["temperature"] <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    add(llama_cpp.llama_sampler_init_top_k(p["top_k"]))
    add(llama_cpp.llama_sampler_init_typical(p["typical_p"], 1))
    add(llama_cpp.llama_sampler_init_top_p(p["top_p"], 1))
    add(llama_cpp.llama_sampler_init_min_p(p["min_p"], 1))
    add(llama_cpp.llama_sampler_init_temp(p["temperature"]))
    add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


def _logprob(ctx, idx: int, n_vocab: int, tok: int) -> float:
    import llama_cpp
    import numpy as np

    ptr = llama_cpp.llama_get_logits_ith(ctx, idx)
    x = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    top = float(x.max())
    return float(x[tok]) - top - math.log(float(np.exp(x - top).sum()))


def run(bc: BatchContext, llm, tokens: list[int], n: int, p: dict, limit: int,
        stops: list[str], seed: int | None, cancel, piece) -> tuple[list[Sample], int, float]:
    """Decode n samples; returns (samples, reused prompt tokens, prompt seconds)."""
    import llama_cpp

    t0 = time.perf_counter()
    reused = bc.load_prompt(tokens, n)
    prompt_s = time.perf_counter() - t0
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    chains = [_chain(p, seed + i) for i in range(n)]
    outs = [bytearray() for _ in range(n)]
    lps = [[] for _ in range(n)]
    reason = [None] * n
    cut = [None] * n  # where a stop string starts in the decoded text
    idx = [-1] * n  # row of each live sequence's logits in the last batch
    pos = len(tokens)
    try:
        for step in range(limit + 1):
            live = [i for i in range(n) if reason[i] is None]
            if not live:
                break
            if cancel.is_set():
                for i in live:
                    reason[i] = "cancelled"
                break
            feed = []
            for i in live:
                if step == limit:
                    reason[i] = "length"
                    continue
                tok = llama_cpp.llama_sampler_sample(chains[i], bc.ctx, idx[i])
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    reason[i] = "stop"
                    continue
                lps[i].append(_logprob(bc.ctx, idx[i], n_vocab, tok))
                outs[i] += piece(tok)
                if stops:
                    text = outs[i][-(64 + max(len(s) for s in stops) * 4):].decode("utf-8", "replace")
                    if any(s in text for s in stops):
                        full = outs[i].decode("utf-8", "replace")
                        cut[i] = min(full.find(s) for s in stops if s in full)
                        reason[i] = "stop"
                        continue
                feed.append((tok, pos, i, True))
            if not feed:
                continue
            bc.decode(feed)
            for j, (_, _, i, _) in enumerate(feed):
                idx[i] = j
            pos += 1
    finally:
        for c in chains:
            llama_cpp.llama_sampler_free(c)
    samples = []
    for i in range(n):
        text = outs[i].decode("utf-8", "replace")
        if cut[i] is not None:
            text = text[: cut[i]]
        s = sum(lps[i])
        samples.append(Sample(index=i, text=text, finish_reason=reason[i] or "length",
                              tokens=len(lps[i]), logprob_sum=round(s, 4),
                              logprob_mean=round(s / len(lps[i]), 4) if lps[i] else 0.0,
                              seed=seed + i))
    return samples, reused, prompt_s


def stream(m, p, tokens, n, limit, max_tokens, n_threads, cancel, load_s):
    """Engine._run for n > 1: Sample events, one Usage, then Stopped or Failure."""
    import llama_cpp

    from limner.engine.core import ParamError, _num, _PieceReader, sampling

    if not 1 <= n <= MAX_N:
        raise ParamError(f"n must be between 1 and {MAX_N}, not {n}")
    # Every sequence holds the prompt and its sample: cap the batch context's
    # size (memory) and shorten the samples instead.
    per_cap = BATCH_TOKENS_CAP // n
    if len(tokens) + 2 > per_cap:
        yield Failure("context", f"{n} samples of a {len(tokens)}-token prompt do not fit "
                      f"the {BATCH_TOKENS_CAP}-token batch context", "Lower n.")
        return
    limit = max(1, min(limit, per_cap - len(tokens) - 1))
    need = min(per_cap, -(-(len(tokens) + limit + 1) // 256) * 256)
    if m.batch is None or not m.batch.fits(need, n):
        if m.batch is not None:
            m.batch.close()
            m.batch = None
        m.batch = BatchContext(m.llm, need * n, n, m.n_batch, n_threads)

    llama_cpp.llama_set_n_threads(m.batch.ctx, n_threads, n_threads)
    stops = p.get("stop") or []
    stops = [stops] if isinstance(stops, str) else [s for s in stops if s]
    seed = _num(p, "seed", None, int) if p.get("seed") is not None else None
    sp = sampling(p)
    t0 = time.perf_counter()
    samples, reused, prompt_s = run(m.batch, m.llm, tokens, n, sp, limit, stops, seed,
                                          cancel, _PieceReader(m.llm._model.vocab))
    t2 = time.perf_counter()
    for s in samples:
        yield s
    extra = {"model": m.name, "n_ctx": m.n_ctx, "n_threads": n_threads, "n": n,
             "batch_ctx": m.batch.n_ctx}
    if load_s is not None:
        extra["load_ms"] = round(load_s * 1000, 1)
    if limit < max_tokens and any(s.finish_reason == "length" for s in samples):
        extra["context_full"] = True
    yield Usage(prompt_tokens=len(tokens), completion_tokens=sum(s.tokens for s in samples),
                prompt_ms=prompt_s * 1000, predicted_ms=(t2 - t0 - prompt_s) * 1000,
                cached_tokens=reused, extra=extra)
    if any(s.finish_reason == "cancelled" for s in samples):
        yield Failure("cancelled", "generation was cancelled")
    else:
        yield Stopped("length" if all(s.finish_reason == "length" for s in samples) else "stop")
