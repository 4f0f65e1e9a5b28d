"""Cold start: process start to first token with no engine running; model load times.

    .venv/bin/python bench/engine_cold.py [--threads 2] [--rounds 3]

For each bundled model (chat on SmolLM2, completion on Gemma 3):
  limner cold   `limner < buffer` with no engine running: spawn the engine,
                import llama.cpp, load the model, evaluate, first byte out;
  raw cold      the baseline: a fresh `python -c` that imports llama_cpp,
                loads the same model with the same settings and prints the
                first generated token (what any one-shot script pays);
  limner warm   the same buffer again, engine resident (what later calls pay).
And the engine's own load time per model (Engine.load in a fresh process,
llama_cpp already imported) next to a bare `Llama(...)` constructor. Model files are in the page cache
(read once before timing), as they are on any machine that used them lately.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

from engine_util import (PYTHON, Timed, header, median, new_runtime_dir, private_env,
                         stop_engine)

BUFFERS = {
    "smollm2-135m": "!:temperature 0\n!:max_tokens 4\n!:n_threads {t}\n!user\nSay hello.\n",
    "gemma3-270m": "!completion\n!:temperature 0\n!:max_tokens 4\n!:n_threads {t}\ndef add(a, b):\n",
}

RAW = """
import sys, time, os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as limner's engine runs llama.cpp
devnull = os.open(os.devnull, os.O_WRONLY); saved = os.dup(2); os.dup2(devnull, 2)
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=8192, n_batch=512, n_threads={t},
                      n_threads_batch={t}, verbose=False, swa_full=True)
os.dup2(saved, 2)
prompt = sys.argv[2].encode()
toks = llm.tokenize(prompt, add_bos=llm._model.add_bos_token(), special=True)
for tok in llm.generate(toks, temp=0.0):
    sys.stdout.write(llm.detokenize([tok]).decode("utf-8", "replace") or "."); sys.stdout.flush()
    break
"""

LOAD = """
import sys, time
from limner.engine import quiet
from limner.engine.core import Engine
quiet.import_llama()  # timed apart: both load timings exclude the import
e = Engine(n_threads={t})
print(e.load(sys.argv[1], sys.argv[2]))
"""

BARE_LOAD = """
import sys, time
from limner.engine import quiet
llama_cpp = quiet.import_llama()
t = time.perf_counter()
with quiet.stderr_silenced():
    llama_cpp.Llama(model_path=sys.argv[1], n_ctx=8192, n_batch=512, n_threads={t},
                    verbose=False, swa_full=True)
print(time.perf_counter() - t)
"""


def first_byte(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    proc.stdout.read()
    proc.wait()
    return elapsed


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    header("Engine cold start and model load", ["bench/engine_cold.py", *argv])
    from limner.engine import models

    for name, template in BUFFERS.items():
        path = models.resolve(name)[1]
        with open(path, "rb") as f:  # into the page cache, as after any earlier use
            while f.read(1 << 24):
                pass
        buf = template.format(t=args.threads)
        prompt = "Say hello." if name == "smollm2-135m" else "def add(a, b):\n"
        cold, raw, warm, loads, bare = [], [], [], [], []
        for _ in range(args.rounds):
            env = private_env(new_runtime_dir())
            try:
                cold.append(Timed(buf, env).ttft)
                warm.append(Timed(buf, env).ttft)
            finally:
                stop_engine(env)
            raw.append(first_byte([PYTHON, "-c", RAW.format(t=args.threads), path, prompt]))
            mode = "chat" if name == "smollm2-135m" else "completion"
            out = subprocess.run([PYTHON, "-c", LOAD.format(t=args.threads), name, mode],
                                 capture_output=True, text=True, check=True).stdout
            loads.append(float(out.strip().splitlines()[-1]))
            out = subprocess.run([PYTHON, "-c", BARE_LOAD.format(t=args.threads), path],
                                 capture_output=True, text=True, check=True).stdout
            bare.append(float(out.strip().splitlines()[-1]))
        print(f"{name}:")
        print(f"  limner cold (no engine) to first token  {median(cold) * 1000:6.0f} ms  "
              f"[{', '.join(f'{x * 1000:.0f}' for x in cold)}]")
        print(f"  raw llama-cpp-python script, cold        {median(raw) * 1000:6.0f} ms  "
              f"-> limner cold / raw cold = {median(cold) / median(raw):.2f}x")
        print(f"  limner warm (engine resident)            {median(warm) * 1000:6.0f} ms  "
              f"-> warm / cold = {median(warm) / median(cold):.2f}x")
        print(f"  engine load time (Engine.load)           {median(loads) * 1000:6.0f} ms  "
              f"(bare Llama() {median(bare) * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
