"""The GGUF reader, the model registry and `limner models`, on real files.

The bundled SmolLM2 GGUF is read as shipped; FIM and malformed cases use
small GGUF files written by tests/gguf_writer.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_support import shared_data_dir as _shared  # noqa: E402
from gguf_writer import write_gguf  # noqa: E402

from limner.engine import gguf, models  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMNER = ROOT / ".venv" / "bin" / "limner"


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory):
    """One data dir for the session, so Gemma is assembled only once."""
    return _shared(tmp_path_factory)


@pytest.fixture
def env(shared_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LIMNER_DATA_DIR", str(shared_data_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LIMNER_CONFIG_DIR", raising=False)
    return {**os.environ}


def smollm2_path() -> str:
    return models.resolve("smollm2-135m")[1]


def test_reads_the_bundled_smollm2_header():
    meta = gguf.read_metadata(smollm2_path())
    assert gguf.architecture(meta) == "llama"
    assert gguf.context_length(meta) == 8192
    assert meta["limner.quantization"] == "Q4_1"
    assert 130e6 < meta["limner.n_params"] < 140e6  # "135M"
    assert "<|im_start|>" in gguf.chat_template(meta)
    assert meta["tokenizer.ggml.tokens"][1] == "<|im_start|>"
    assert gguf.fim_token_ids(meta) is None


def test_fim_ids_from_explicit_keys(tmp_path):
    p = tmp_path / "m.gguf"
    write_gguf(p, {"general.architecture": "qwen2", "qwen2.context_length": 32768,
                   "tokenizer.ggml.fim_pre_token_id": 151659,
                   "tokenizer.ggml.fim_suf_token_id": 151661,
                   "tokenizer.ggml.fim_mid_token_id": 151660},
               tensors=[("a", [4, 8]), ("b", [16])])
    meta = gguf.read_metadata(p)
    assert gguf.fim_token_ids(meta) == {"prefix": 151659, "suffix": 151661, "middle": 151660}
    assert meta["limner.n_params"] == 4 * 8 + 16
    assert gguf.context_length(meta) == 32768


def test_fim_ids_from_older_keys(tmp_path):
    p = tmp_path / "m.gguf"
    write_gguf(p, {"general.architecture": "llama", "tokenizer.ggml.prefix_token_id": 32007,
                   "tokenizer.ggml.suffix_token_id": 32008, "tokenizer.ggml.middle_token_id": 32009})
    assert gguf.fim_token_ids(gguf.read_metadata(p)) == {"prefix": 32007, "suffix": 32008, "middle": 32009}


def test_fim_ids_found_in_the_vocabulary(tmp_path):
    vocab = ["<unk>", "a", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "b"]
    p = tmp_path / "m.gguf"
    write_gguf(p, {"general.architecture": "starcoder2", "tokenizer.ggml.tokens": vocab,
                   "tokenizer.ggml.scores": [0.0] * len(vocab)})
    meta = gguf.read_metadata(p)
    assert gguf.fim_token_ids(meta) == {"prefix": 2, "suffix": 4, "middle": 3}
    assert meta["tokenizer.ggml.scores"] == {"skipped_array": len(vocab)}


@pytest.mark.parametrize("content", [
    b"", b"not a model at all\n" * 10, b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 16,
])
def test_not_a_gguf_is_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    with pytest.raises(gguf.GGUFError):
        gguf.read_metadata(p)
    with pytest.raises(models.ModelError, match="not a valid GGUF"):
        models.check_gguf(str(p))


def test_truncated_gguf_is_an_error(tmp_path):
    good = tmp_path / "good.gguf"
    write_gguf(good, {"general.architecture": "llama", "general.name": "x" * 100})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(gguf.GGUFError, match="truncated"):
        gguf.read_metadata(cut)


def test_unknown_name_lists_the_available_ones(env):
    with pytest.raises(models.ModelError) as e:
        models.resolve("no-such-model")
    assert "unknown model 'no-such-model'" in e.value.message
    assert "smollm2-135m" in e.value.hint and "gemma3-270m" in e.value.hint


def test_registered_models_and_paths(env, tmp_path):
    cfg = Path(env["XDG_CONFIG_HOME"]) / "limner"
    cfg.mkdir(parents=True)
    (cfg / "models.toml").write_text(f'[models]\nsmol = "{smollm2_path()}"\nghost = "/nope/x.gguf"\n')
    assert models.resolve("smol") == ("smol", smollm2_path())
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve("ghost")
    assert models.resolve(smollm2_path())[1] == smollm2_path()
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve(str(tmp_path / "missing.gguf"))
    assert "smol" in models.available_names()


def test_default_models_per_mode():
    assert models.default_for("chat") == "smollm2-135m"
    assert models.default_for("completion") == "gemma3-270m"
    assert models.default_for("fim") == "gemma3-270m"


def test_limner_models_json(env, tmp_path):
    cfg = Path(env["XDG_CONFIG_HOME"]) / "limner"
    cfg.mkdir(parents=True)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello")
    (cfg / "models.toml").write_text(f'[models]\njunk = "{junk}"\n')
    proc = subprocess.run([str(LIMNER), "models", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    listed = {m["name"]: m for m in json.loads(proc.stdout)}
    smol, gemma = listed["smollm2-135m"], listed["gemma3-270m"]
    assert (smol["architecture"], smol["quantization"], smol["context_length"]) == ("llama", "Q4_1", 8192)
    assert smol["chat_template"] is True and smol["fim_tokens"] is None
    assert (gemma["architecture"], gemma["quantization"], gemma["context_length"]) == ("gemma3", "Q4_K_M", 32768)
    assert gemma["chat_template"] is False and gemma["fim_tokens"] is None
    assert gemma["path"].startswith(env["LIMNER_DATA_DIR"])  # assembled into the data dir
    assert gemma["file_size"] == os.path.getsize(gemma["path"])
    assert 260e6 < gemma["parameters"] < 280e6
    assert listed["junk"]["source"] == "registered" and "not a GGUF" in listed["junk"]["error"]


def test_limner_models_text(env):
    proc = subprocess.run([str(LIMNER), "models"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "smollm2-135m  (bundled)" in proc.stdout
    assert "chat template  yes" in proc.stdout and "FIM tokens     none" in proc.stdout
    assert "quantization   Q4_K_M" in proc.stdout
