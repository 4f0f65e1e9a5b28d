"""A llama.cpp build that runs on the machine it is installed on, never AMX.

Why not pip's default: llama-cpp-python compiles llama.cpp with
GGML_NATIVE=ON (-march=native). On CPUs that advertise AMX that compiles
llama.cpp's AMX matmul in, which dies at `ldtilecfg` on the first decode on
some Intel hosts (ggml-org/llama.cpp#20824). pip's wheel cache then serves
that wheel to every later venv on the machine.

The design: GGML_NATIVE=OFF and an explicit instruction-set list, every
option named ON or OFF, derived from what *this* host's CPU advertises and
capped by an allow-list that has no AMX in it. One compile of one CPU
backend (about 5 min on 2 cores); ggml's runtime dispatch over all variants
(GGML_CPU_ALL_VARIANTS) compiles the CPU backend ~13 times and includes a
Sapphire Rapids variant with AMX. The wheel lives in our own wheelhouse keyed
by (llama-cpp-python version, machine, CMake args), so a host with other CPU
features gets its own build, and pip never compiles or caches one itself
(`--only-binary llama-cpp-python`). The venv records the build it holds
(`limner-engine-build.json`); the engine refuses a build whose assumed
features this CPU lacks (a venv or home directory moved to another machine).

Stdlib only: scripts/setup runs this before anything else is installed.

    python -m limner.engine.build ensure --python .venv/bin/python   # build/reuse, install; prints the wheel dir
    python -m limner.engine.build smoke                              # (in the venv) decode 4 tokens
    python -m limner.engine.build info                               # the plan and what is installed
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "0.3.36"
RECORD_NAME = "limner-engine-build.json"
SMOKE_PROMPT = "The capital of France is"

# GGML option -> the /proc/cpuinfo flags it needs; order = x86-64 levels.
# AMX_TILE/AMX_INT8/AMX_BF16 are deliberately absent: they are always OFF.
X86_OPTIONS: dict[str, tuple[str, ...]] = {
    "SSE42": ("sse4_2",),
    "AVX": ("avx",),
    "F16C": ("f16c",),
    "FMA": ("fma",),
    "AVX2": ("avx2",),
    "BMI2": ("bmi2",),
    "AVX_VNNI": ("avx_vnni",),
    # GGML_AVX512 compiles with -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw.
    "AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "AVX512_VBMI": ("avx512vbmi",),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
}
NEVER = ("AMX_TILE", "AMX_INT8", "AMX_BF16")
# The tile instructions that crash; a test asserts none is in libggml-cpu.
AMX_MNEMONICS = ("ldtilecfg", "sttilecfg", "tileloadd", "tilestored", "tilezero",
                 "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tilerelease")
# Options that shorten the build: we use neither the multimodal library nor OpenMP-less paths.
COMMON_ARGS = ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF",
               "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF",
               "-DCMAKE_BUILD_TYPE=Release")


class BuildError(Exception):
    """Setup cannot give this machine a working engine; the message says what to do."""


# ------------------------------------------------------------------ the host


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def host_features(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags the kernel reports (x86 'flags', arm 'Features')."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def ggml_options(features: set[str], arch: str) -> dict[str, bool]:
    """Every GGML ISA option, ON only where the host has all its flags. Never AMX."""
    if arch != "x86_64":
        return {}
    opts = {name: all(f in features for f in need) for name, need in X86_OPTIONS.items()}
    opts.update({name: False for name in NEVER})
    return opts


def assumed_features(options: dict[str, bool]) -> set[str]:
    """The cpuinfo flags a build with these options needs from the CPU it runs on."""
    return {f for name, on in options.items() if on for f in X86_OPTIONS.get(name, ())}


def arm_args(features: set[str]) -> list[str]:
    # Portable armv8 baseline plus dot-product / fp16 only when advertised.
    if "asimddp" in features and "fphp" in features:
        return ["-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"]
    if "asimddp" in features:
        return ["-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod"]
    return ["-DGGML_CPU_ARM_ARCH=armv8-a"]


def plan(features: set[str] | None = None, arch: str | None = None) -> dict:
    """What setup would build here: options, CMake args, the wheelhouse key."""
    arch = arch or machine()
    features = host_features() if features is None else features
    override = os.environ.get("LIMNER_ENGINE_CMAKE_ARGS")
    options = ggml_options(features, arch)
    if override is not None:
        args = override.split()
        if any(a.startswith("-DGGML_NATIVE=ON") or "AMX" in a and a.endswith("=ON") for a in args):
            raise BuildError("LIMNER_ENGINE_CMAKE_ARGS turns on GGML_NATIVE or AMX, which "
                             "crashes on some hosts (llama.cpp #20824); leave both OFF")
        args = list(COMMON_ARGS) + args
    elif arch == "x86_64":
        args = list(COMMON_ARGS) + [f"-DGGML_{k}={'ON' if v else 'OFF'}" for k, v in options.items()]
    else:
        args = list(COMMON_ARGS) + arm_args(features)
    key_src = json.dumps({"version": VERSION, "arch": arch, "args": args,
                          "python": f"{sys.version_info[0]}.{sys.version_info[1]}"})
    return {"version": VERSION, "arch": arch, "cmake_args": args,
            "assumes": sorted(assumed_features(options)) if override is None else [],
            "key": hashlib.sha256(key_src.encode()).hexdigest()[:16]}


def missing_features(record: dict, features: set[str] | None = None) -> list[str]:
    """Features a recorded build assumes that this CPU does not report."""
    features = host_features() if features is None else features
    if not features:  # no /proc/cpuinfo (not Linux): nothing to compare against
        return []
    return sorted(set(record.get("assumes", ())) - features)


# --------------------------------------------------------------- the wheel


def wheelhouse() -> Path:
    env = os.environ.get("LIMNER_WHEELHOUSE")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "limner" / "wheels"


def cached_wheel(p: dict) -> Path | None:
    d = wheelhouse() / p["key"]
    found = sorted(d.glob(f"llama_cpp_python-{p['version']}-*.whl")) if d.is_dir() else []
    return found[0] if found else None


def build_wheel(p: dict, python: str) -> Path:
    """Compile llama-cpp-python with our flags into the wheelhouse (no pip cache)."""
    dest = wheelhouse() / p["key"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=" ".join(p["cmake_args"]), FORCE_CMAKE="1",
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    with tempfile.TemporaryDirectory(prefix="limner-wheel-", dir=dest.parent) as tmp:
        cmd = [python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir",
               "--no-binary", "llama-cpp-python", "-w", tmp, f"llama-cpp-python=={p['version']}"]
        log = Path(tmp) / "build.log"
        with open(log, "w") as out:
            rc = subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise BuildError(f"compiling llama-cpp-python {p['version']} failed (exit {rc}):\n{tail}\n"
                             "It needs a C/C++ compiler and cmake: apt-get install build-essential cmake")
        wheels = list(Path(tmp).glob("llama_cpp_python-*.whl"))
        if not wheels:
            raise BuildError("pip wheel produced no llama_cpp_python wheel")
        (Path(tmp) / "build.json").write_text(json.dumps(p, indent=1) + "\n")
        staged = Path(tmp) / "out"
        staged.mkdir()
        for f in wheels + [Path(tmp) / "build.json"]:
            shutil.move(str(f), staged / f.name)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staged, dest)  # atomic: a half-built wheel never has the key's name
    wheel = cached_wheel(p)
    assert wheel is not None
    return wheel


def amx_instructions(library: str | Path) -> list[str]:
    """The AMX tile mnemonics `objdump -d` finds in a shared library (empty: none)."""
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True,
                         text=True, check=True).stdout
    words = {line.split("\t")[-1].split(" ")[0] for line in asm.splitlines() if "\t" in line}
    return sorted(words & set(AMX_MNEMONICS))


def venv_record_path(python: str) -> Path:
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # setup's case: no second process
        return Path(sys.prefix) / RECORD_NAME
    prefix = subprocess.check_output([python, "-c", "import sys; print(sys.prefix)"], text=True).strip()
    return Path(prefix) / RECORD_NAME


def installed_record(prefix: str | None = None) -> dict | None:
    """The build this venv holds (None: not installed by our setup)."""
    path = Path(prefix or sys.prefix) / RECORD_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------- the smoke


SMOKE = r"""
import os, sys
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_threads=1, verbose=False)
out = llm(sys.argv[2], max_tokens=4, temperature=0.0)
n = out["usage"]["completion_tokens"]
print(n)
sys.exit(0 if n > 0 else 3)
"""


def smoke_model(python: str) -> str:
    """The bundled SmolLM2's file, found the way the engine finds it."""
    code = "from limner.engine.models import resolve; print(resolve('smollm2-135m')[1])"
    return subprocess.check_output([python, "-c", code], text=True).strip()


def smoke(python: str, model: str, timeout: float = 300) -> None:
    """Decode a few tokens in a subprocess; a signal becomes a named BuildError."""
    try:
        proc = subprocess.run([python, "-c", SMOKE, model, SMOKE_PROMPT], capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    except subprocess.TimeoutExpired:
        raise BuildError(f"the smoke decode did not finish in {timeout:.0f} s") from None
    if proc.returncode < 0:
        raise BuildError(crash_advice(-proc.returncode, "the setup smoke decode (SmolLM2, 4 tokens)"))
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise BuildError(f"the smoke decode failed (exit {proc.returncode}):\n{tail}")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def crash_advice(signum: int, what: str) -> str:
    """The message for a llama.cpp build that dies on this CPU: signal, CPU flags, the fix."""
    feats = host_features()
    relevant = sorted(f for f in feats if f.startswith(("avx", "amx", "fma", "f16c", "bmi2", "sse4_2"))
                      or f in ("asimddp", "fphp", "sve"))
    rec = installed_record()
    built = f"built with: {' '.join(rec['cmake_args'])}" if rec else "not built by limner's setup"
    return (f"{what} died with {signal_name(signum)}: the llama.cpp build crashes on this CPU.\n"
            f"CPU flags that matter: {' '.join(relevant) or '(none reported)'}\n"
            f"llama-cpp-python {built}\n"
            "Rebuild it without the feature that crashes, e.g. without AVX-512:\n"
            "  LIMNER_ENGINE_CMAKE_ARGS='-DGGML_AVX512=OFF' scripts/setup --rebuild-engine\n"
            "(scripts/setup --rebuild-engine alone rebuilds with the flags this host reports)")


# ----------------------------------------------------------------- ensure


def ensure(python: str, rebuild: bool = False, log=print) -> dict:
    """Give the venv at `python` our build: reuse or compile the wheel, install, smoke."""
    p = plan()
    record_path = venv_record_path(python)
    have = installed_record(str(record_path.parent))
    if have and have.get("key") == p["key"] and have.get("smoke") == "ok" and not rebuild:
        return have
    wheel = None if rebuild else cached_wheel(p)
    if wheel is None:
        log(f"limner setup: compiling llama.cpp for this CPU ({len(p['assumes'])} ISA features, "
            f"no AMX; about 5 min on 2 cores)")
        wheel = build_wheel(p, python)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    # stdout carries only the wheel dir (scripts/setup captures it): pip talks on stderr.
    rc = subprocess.call([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                          str(wheel)], env=env, stdout=sys.stderr)
    if rc != 0:
        raise BuildError(f"installing {wheel.name} failed (exit {rc})")
    record = dict(p, wheel=str(wheel), smoke="pending")
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def finish(python: str) -> dict:
    """After the rest of the venv is installed: the smoke decode, then record it."""
    record_path = venv_record_path(python)
    record = installed_record(str(record_path.parent)) or {}
    if record.get("smoke") == "ok" and record.get("key") == plan()["key"]:
        return record
    smoke(python, smoke_model(python))
    record["smoke"] = "ok"
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m limner.engine.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["ensure", "smoke", "info"])
    ap.add_argument("--python", default=sys.executable, help="the venv's interpreter")
    ap.add_argument("--rebuild", action="store_true", help="compile again even if the wheel is cached")
    args = ap.parse_args(argv)
    try:
        if args.action == "info":
            print(json.dumps({"plan": plan(), "installed": installed_record(),
                              "wheelhouse": str(wheelhouse())}, indent=1))
        elif args.action == "ensure":
            ensure(args.python, rebuild=args.rebuild, log=lambda m: print(m, file=sys.stderr))
            print(wheelhouse() / plan()["key"])  # for scripts/setup's --find-links
        else:
            finish(args.python)
    except BuildError as e:
        print(f"limner setup: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
