"""Decode speed of limner's portable llama.cpp build vs pip's -march=native build.

    .venv/bin/python bench/engine_build.py [--rounds 5] [--tokens 128] [--threads 2]

Our build (scripts/setup, src/limner/engine/build.py) is GGML_NATIVE=OFF with
an explicit, AMX-free instruction-set list. The baseline is what a plain
`pip install llama-cpp-python` compiles: GGML_NATIVE=ON (-march=native). It
is built once into bench/out/native/ (a wheel and its own venv; about 5 min
on 2 cores), then both builds decode the same greedy tokens of the same
models in separate worker processes, rounds alternating so background load
hits both alike. Decode rate = generated tokens / time after the first
token (prompt evaluation excluded). On a CPU where the native build dies
(AMX hosts, llama.cpp #20824) the baseline reports the signal instead.
Goal: portable >= 0.9x native.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from limner.engine import build  # noqa: E402

OUT = ROOT / "bench" / "out" / "native"
PORTABLE_PY = str(ROOT / ".venv" / "bin" / "python")

WORKER = r"""
import json, os, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import llama_cpp
path, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_threads=threads, verbose=False)
toks = llm.tokenize(b"1, 2, 3, 4, 5,", add_bos=True)
first = None; count = 0; t0 = time.perf_counter()
for tok in llm.generate(toks, temp=0.0, reset=True):
    count += 1
    if first is None:
        first = time.perf_counter()
    if count >= n:
        break
end = time.perf_counter()
print(json.dumps({"tok_s": (count - 1) / (end - first), "tokens": count}))
"""


def native_python() -> str:
    """A venv holding pip's default (native) build, made once."""
    py = OUT / "venv" / "bin" / "python"
    if py.exists():
        return str(py)
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.check_call([sys.executable, "-m", "venv", str(OUT / "venv")])
    wheels = OUT / "wheel"
    if not list(wheels.glob("*.whl")):
        print("bench: compiling pip's default (-march=native) llama-cpp-python ...", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "FORCE_CMAKE")}
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 2)
        subprocess.check_call([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir",
                               "--no-binary", "llama-cpp-python", "-w", str(wheels),
                               f"llama-cpp-python=={build.VERSION}"], env=env)
    subprocess.check_call([str(py), "-m", "pip", "install", "-q", *map(str, wheels.glob("*.whl"))])
    return str(py)


def decode(python: str, model: str, tokens: int, threads: int) -> dict:
    proc = subprocess.run([python, "-c", WORKER, model, str(tokens), str(threads)],
                          capture_output=True, text=True, start_new_session=True)
    if proc.returncode < 0:
        return {"crashed": build.signal_name(-proc.returncode)}
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from limner.engine.models import resolve

    models = {m: resolve(m)[1] for m in ("smollm2-135m", "gemma3-270m")}
    native = native_python()
    rec = build.installed_record(str(ROOT / ".venv"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; threads={args.threads} tokens={args.tokens} rounds={args.rounds}")
    print(f"# portable: {' '.join(a for a in rec['cmake_args'] if 'ON' in a) if rec else '?'}")
    print("# native:   GGML_NATIVE=ON (pip's default)")
    for name, path in models.items():
        res: dict[str, list] = {"portable": [], "native": []}
        crashed = None
        for _ in range(args.rounds):
            for label, py in (("portable", PORTABLE_PY), ("native", native)):
                r = decode(py, path, args.tokens, args.threads)
                if "tok_s" in r:
                    res[label].append(r["tok_s"])
                else:
                    crashed = crashed or f"{label}: {r}"
        med = {k: statistics.median(v) if v else float("nan") for k, v in res.items()}
        ratio = med["portable"] / med["native"] if res["native"] else float("nan")
        print(f"{name:14} portable {med['portable']:7.1f} tok/s  native {med['native']:7.1f} tok/s  "
              f"ratio {ratio:.3f}  (runs: {' '.join(f'{x:.0f}' for x in res['portable'])} | "
              f"{' '.join(f'{x:.0f}' for x in res['native'])})" + (f"  {crashed}" if crashed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
