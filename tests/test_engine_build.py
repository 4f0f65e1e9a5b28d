"""The llama.cpp build setup installs: no AMX, no -march=native, only what this CPU has."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from limner.engine import build

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
SAPPHIRE_RAPIDS = ("fpu sse4_2 avx f16c fma avx2 bmi2 avx512f avx512cd avx512vl avx512dq avx512bw "
                   "avx512vbmi avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16")


def _record() -> dict:
    rec = build.installed_record(str(ROOT / ".venv"))
    assert rec is not None, "scripts/setup records the build it installs in .venv"
    return rec


def _lib_dir() -> Path:
    out = subprocess.check_output([str(VENV_PY), "-c", "import importlib.util, os; "
                                   "print(os.path.dirname(importlib.util.find_spec('llama_cpp').origin))"],
                                  text=True).strip()
    return Path(out) / "lib"


# ------------------------------------------------------------- the plan


def test_amx_host_gets_no_amx_and_no_native():
    feats = build.host_features(f"processor\t: 0\nflags\t\t: {SAPPHIRE_RAPIDS}\n")
    p = build.plan(feats, "x86_64")
    args = p["cmake_args"]
    assert "-DGGML_NATIVE=OFF" in args and not any("NATIVE=ON" in a for a in args)
    for amx in ("AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{amx}=OFF" in args
    assert "-DGGML_AVX512_BF16=ON" in args and "-DGGML_AVX2=ON" in args
    assert not any(f.startswith("amx") for f in p["assumes"])


def test_options_follow_the_host():
    old = build.plan(build.host_features("flags : sse4_2 avx f16c fma avx2 bmi2"), "x86_64")
    assert "-DGGML_AVX512=OFF" in old["cmake_args"] and "-DGGML_AVX2=ON" in old["cmake_args"]
    # AVX-512 needs all five of its subsets; one missing turns it off.
    partial = build.plan(build.host_features("flags : avx2 avx512f avx512cd avx512vl avx512dq"), "x86_64")
    assert "-DGGML_AVX512=OFF" in partial["cmake_args"]
    bare = build.plan(set(), "x86_64")
    assert bare["assumes"] == [] and "-DGGML_SSE42=OFF" in bare["cmake_args"]
    assert len({old["key"], partial["key"], bare["key"]}) == 3, "each feature set has its own wheel"


def test_arm_is_portable_too():
    p = build.plan(build.host_features("Features\t: fp asimd asimddp fphp"), "aarch64")
    assert "-DGGML_NATIVE=OFF" in p["cmake_args"]
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in p["cmake_args"]


def test_override_cannot_turn_native_or_amx_on(monkeypatch):
    monkeypatch.setenv("LIMNER_ENGINE_CMAKE_ARGS", "-DGGML_NATIVE=ON")
    with pytest.raises(build.BuildError, match="NATIVE"):
        build.plan(set(), "x86_64")
    monkeypatch.setenv("LIMNER_ENGINE_CMAKE_ARGS", "-DGGML_AMX_INT8=ON")
    with pytest.raises(build.BuildError, match="AMX"):
        build.plan(set(), "x86_64")
    monkeypatch.setenv("LIMNER_ENGINE_CMAKE_ARGS", "-DGGML_AVX512=OFF")
    assert "-DGGML_AVX512=OFF" in build.plan(set(), "x86_64")["cmake_args"]


def test_missing_features_names_what_this_cpu_lacks():
    rec = {"assumes": ["avx2", "avx512f"]}
    assert build.missing_features(rec, {"avx2", "avx512f", "sse4_2"}) == []
    assert build.missing_features(rec, {"avx2"}) == ["avx512f"]


# ---------------------------------------------------- the installed build


def test_installed_build_is_ours_and_fits_this_cpu():
    rec = _record()
    assert rec["key"] == build.plan()["key"], "the venv holds the build planned for this host"
    assert rec["smoke"] == "ok"
    assert "-DGGML_NATIVE=OFF" in rec["cmake_args"]
    host = build.host_features()
    assert set(rec["assumes"]) <= host, f"the build assumes {set(rec['assumes']) - host}"
    wheel = Path(rec["wheel"])
    assert wheel.is_file() and wheel.parent.name == rec["key"], "kept in our own keyed wheelhouse"


needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) not installed")


@needs_objdump
def test_no_amx_tile_instructions_in_libggml_cpu():
    libs = sorted(_lib_dir().glob("libggml-cpu*.so*"))
    assert libs, f"no libggml-cpu in {_lib_dir()}"
    for lib in libs:
        assert build.amx_instructions(lib) == [], f"{lib.name} contains AMX tile instructions"


@needs_objdump
@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_the_amx_scan_finds_amx_when_it_is_there(tmp_path):
    """A positive control: the same scan on a library compiled with AMX intrinsics."""
    src = tmp_path / "amx.c"
    src.write_text("#include <immintrin.h>\nvoid f(const void *cfg) { _tile_loadconfig(cfg); "
                   "_tile_dpbssd(0, 1, 2); _tile_release(); }\n")
    lib = tmp_path / "libamx.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-mamx-tile", "-mamx-int8", "-o", str(lib), str(src)],
                   check=True)
    assert {"ldtilecfg", "tdpbssd", "tilerelease"} <= set(build.amx_instructions(lib))


def test_real_smoke_decode_completes():
    build.smoke(str(VENV_PY), subprocess.check_output(
        [str(VENV_PY), "-c", "from limner.engine.models import resolve; print(resolve('smollm2-135m')[1])"],
        text=True).strip())


def _fake_python(tmp_path: Path, sig: signal.Signals) -> Path:
    """An interpreter stand-in whose decode dies by `sig`, as a bad build does on the first decode."""
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\ncase \"$*\" in *resolve*) echo /models/smollm2.gguf;; "
                   f"*sys.prefix*) echo {tmp_path};; *) kill -{sig.name[3:]} $$;; esac\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGILL])
def test_setup_names_the_signal_and_how_to_rebuild(tmp_path, sig):
    fake = _fake_python(tmp_path, sig)
    proc = subprocess.run([sys.executable, "-m", "limner.engine.build", "smoke", "--python", str(fake)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert proc.returncode == 1
    err = proc.stderr
    assert sig.name in err and "crashes on this CPU" in err
    assert "CPU flags that matter:" in err and "scripts/setup --rebuild-engine" in err
    assert "Traceback" not in err
