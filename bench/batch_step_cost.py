"""Why batched sampling saves less than 8x here: one llama_decode step for 1 vs 8 sequences.

    .venv/bin/python bench/batch_step_cost.py [--threads 1] [--rounds 3]

The bundled SmolLM2 (Q4_1) and two copies requantized into a temporary
directory with llama.cpp's own quantizer (Q8_0, Q4_0), each loaded with a
batch context of 8 sequences (one KV stream each, as engine/batch.py makes
it). Per model, 40 decode steps of 1 token (one sequence) and of 8 tokens
(one per sequence), the median step after 5 warm-up steps, best of
--rounds. A step for 8 costing k times a step for 1 means 8 samples cost at
least k/8 of 8 sequential decodes: 1.0 would be compute-bound, 0.125 purely
memory-bound. Rounds interleave the models, so load hits them alike.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before llama_cpp is imported

from engine_util import header  # noqa: E402

STEPS, WARMUP = 40, 5
FTYPES = {"Q8_0": 7, "Q4_0": 2}  # llama_ftype values


def requantize(src: str, dst: str, ftype: int) -> None:
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.allow_requantize, p.nthread = ftype, True, 1
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) != 0:
        raise SystemExit(f"llama.cpp could not requantize {src}")


def batch_context(path: str, threads: int):
    import llama_cpp

    from limner.engine import quiet

    llm = quiet.load_llama(path, verbose=False, n_ctx=512, n_batch=64, n_threads=threads,
                           n_threads_batch=threads)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = 8 * 256, 8, False
    params.n_batch = params.n_ubatch = 64
    params.n_threads = params.n_threads_batch = threads
    return llm, llama_cpp.llama_init_from_model(llm._model.model, params)


def median_step(ctx, k: int) -> float:
    import llama_cpp

    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    batch = llama_cpp.llama_batch_init(8, 0, 8)
    times = []
    try:
        for pos in range(STEPS):
            for i in range(k):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = 100 + i, pos, 1
                batch.seq_id[i][0], batch.logits[i] = i, 1
            batch.n_tokens = k
            t = time.perf_counter()
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")
            times.append(time.perf_counter() - t)
    finally:
        llama_cpp.llama_batch_free(batch)
    times = sorted(times[WARMUP:])
    return times[len(times) // 2]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    header("Decode step for 1 vs 8 sequences, by quantization", ["bench/batch_step_cost.py", *argv])
    from limner.engine import models

    src = models.resolve("smollm2-135m", "chat")[1]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"Q4_1 (bundled)": src}
        for name, ftype in FTYPES.items():
            paths[name] = os.path.join(tmp, f"smollm2-{name}.gguf")
            requantize(src, paths[name], ftype)
        loaded = {name: batch_context(p, a.threads) for name, p in paths.items()}
        best: dict[tuple[str, int], float] = {}
        for _ in range(a.rounds):
            for name, (_, ctx) in loaded.items():
                for k in (1, 8):
                    t = median_step(ctx, k)
                    best[(name, k)] = min(best.get((name, k), t), t)
        for name in paths:
            one, eight = best[(name, 1)], best[(name, 8)]
            print(f"{name:15s} 1 sequence {one * 1000:5.1f} ms/step   8 sequences {eight * 1000:5.1f} "
                  f"ms/step   {eight / one:.2f}x   -> 8 samples >= {eight / one / 8:.2f} of 8 sequential")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
