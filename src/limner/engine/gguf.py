"""A small pure-Python GGUF metadata reader.

`limner models` and the FIM helper need a model's architecture, size, context
length, chat template and FIM token ids without loading llama.cpp (which is
slow to import and prints to stderr). GGUF is a simple little-endian format:

    magic "GGUF" · u32 version · u64 tensor_count · u64 kv_count
    kv_count × (string key · u32 type · value)
    tensor_count × (string name · u32 n_dims · u64 dims[n] · u32 type · u64 offset)

Huge arrays we never use (merges, scores, token types) are skipped, not
decoded; the vocabulary itself is kept so FIM tokens can be found in it.
"""
from __future__ import annotations

import os
import struct
from typing import Any


class GGUFError(ValueError):
    """The file is not a GGUF this reader understands."""


# Value types, as numbered by the GGUF spec.
_SCALARS = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4),
    5: ("<i", 4), 6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# Arrays that are large and useless to us: keep only their length.
_SKIP_ARRAYS = ("tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")

# general.file_type (llama.cpp's LLAMA_FTYPE_*) -> the name people use.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
    20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}

# FIM token spellings found in vocabularies, tried in order.
_FIM_SPELLINGS = [
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder family
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),  # DeepSeek-Coder
    ("<PRE>", "<SUF>", "<MID>"),  # CodeLlama (also ▁<PRE> in some conversions)
]

# Repo-level FIM: (repository name, file separator) spellings, tried in order.
_REPO_SPELLINGS = [
    ("<|repo_name|>", "<|file_sep|>"),  # Qwen2.5-Coder
    ("<repo_name>", "<file_sep>"),  # StarCoder2 (and the SmolLM tokenizer)
]


class _Reader:
    def __init__(self, data: memoryview, size: int, skip: tuple[str, ...] = _SKIP_ARRAYS):
        self.data, self.pos, self.size, self.skip = data, 0, size, skip

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError("truncated GGUF file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, n: int):
        return struct.unpack(fmt, self.take(n))[0]

    def u32(self) -> int:
        return self.scalar("<I", 4)

    def u64(self) -> int:
        return self.scalar("<Q", 8)

    def string(self) -> str:
        n = self.u64()
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.u64())

    def value(self, vtype: int, key: str):
        if vtype in _SCALARS:
            return self.scalar(*_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            if count > 50_000_000:
                raise GGUFError(f"implausible array length {count} for {key}")
            if key in self.skip:
                self._skip_array(etype, count)
                return _Skipped(count)
            if etype == _STRING:
                return [self.string() for _ in range(count)]
            if etype in _SCALARS:
                fmt, size = _SCALARS[etype]
                raw = self.take(size * count)
                return list(struct.unpack(f"<{count}{fmt[1]}", raw))
            return [self.value(etype, key) for _ in range(count)]
        raise GGUFError(f"unknown value type {vtype} for key {key!r}")

    def _skip_array(self, etype: int, count: int) -> None:
        if etype == _STRING:
            # The hot loop of a 262k-token vocabulary: no slices, no objects.
            data, pos, unpack = self.data, self.pos, _U64.unpack_from
            try:
                for _ in range(count):
                    pos += 8 + unpack(data, pos)[0]
            except struct.error:
                raise GGUFError("truncated GGUF file") from None
            if pos > self.size:
                raise GGUFError("truncated GGUF file")
            self.pos = pos
        elif etype in _SCALARS:
            self.take(_SCALARS[etype][1] * count)
        else:
            for _ in range(count):
                self.value(etype, "")


class _Skipped(int):
    """Stands in for an array we did not decode; its value is the length."""


def read_metadata(path: str | os.PathLike, *, vocab: bool = True) -> dict[str, Any]:
    """Header, key/values and tensor summary of a GGUF file.

    Returns the file's keys as they are (e.g. "general.architecture",
    "tokenizer.chat_template"), plus computed entries under "limner.":
    version, tensor_count, n_params, file_size, quantization.
    vocab=False skips the token list too (0.5 s for Gemma's 262k tokens),
    for callers that need only the header facts.
    Raises GGUFError for anything that is not a readable GGUF.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise GGUFError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        if size < 24 or f.read(4) != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (no GGUF magic at its start)")
        import mmap

        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise GGUFError(f"cannot map {path}: {e}") from None
        try:
            skip = _SKIP_ARRAYS if vocab else _SKIP_ARRAYS + ("tokenizer.ggml.tokens",)
            return _parse(_Reader(memoryview(mm), size, skip), path, size)
        finally:
            try:
                mm.close()
            except BufferError:  # a memoryview slice still alive; GC frees it
                pass


def _parse(r: _Reader, path: str, size: int) -> dict[str, Any]:
    r.take(4)
    version = r.u32()
    if version not in (1, 2, 3):
        raise GGUFError(f"{path}: unsupported GGUF version {version}")
    # Version 1 used 32-bit counts; 2 and 3 use 64-bit.
    count = r.u32 if version == 1 else r.u64
    n_tensors, n_kv = count(), count()
    if n_kv > 1_000_000 or n_tensors > 10_000_000:
        raise GGUFError(f"{path}: implausible header (kv={n_kv}, tensors={n_tensors})")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.u32(), key)
    n_params = 0
    for _ in range(n_tensors):
        r.skip_string()
        n_dims = r.u32()
        if n_dims > 8:
            raise GGUFError(f"{path}: tensor with {n_dims} dimensions")
        n = 1
        for _ in range(n_dims):
            n *= r.u64()
        r.u32()  # ggml type
        r.u64()  # data offset
        n_params += n
    for key, value in list(meta.items()):
        if isinstance(value, _Skipped):
            meta[key] = {"skipped_array": int(value)}
    ftype = meta.get("general.file_type")
    meta.update({
        "limner.version": version,
        "limner.tensor_count": n_tensors,
        "limner.n_params": n_params,
        "limner.file_size": size,
        "limner.quantization": FILE_TYPES.get(ftype, f"type {ftype}") if ftype is not None else "unknown",
    })
    return meta


def architecture(meta: dict) -> str:
    return str(meta.get("general.architecture", "unknown"))


def context_length(meta: dict) -> int | None:
    value = meta.get(f"{architecture(meta)}.context_length")
    return int(value) if isinstance(value, int) else None


def chat_template(meta: dict) -> str | None:
    value = meta.get("tokenizer.chat_template")
    return value if isinstance(value, str) and value.strip() else None


def fim_token_ids(meta: dict) -> dict[str, int] | None:
    """{"prefix", "suffix", "middle"} token ids, or None when the model has none.

    The explicit GGUF keys win (fim_* in current llama.cpp, prefix/suffix/
    middle_token_id in older conversions); otherwise look for a known
    spelling of the three tokens in the vocabulary.
    """
    for names in (("fim_pre", "fim_suf", "fim_mid"), ("prefix", "suffix", "middle")):
        ids = [meta.get(f"tokenizer.ggml.{n}_token_id") for n in names]
        if all(isinstance(i, int) and i >= 0 for i in ids):
            return dict(zip(("prefix", "suffix", "middle"), ids))
    vocab = meta.get("tokenizer.ggml.tokens")
    if not isinstance(vocab, list):
        return None
    index: dict[str, int] = {}
    wanted = {t for spelling in _FIM_SPELLINGS for t in spelling}
    wanted |= {"▁" + t for t in ("<PRE>", "<SUF>", "<MID>")}
    for i, tok in enumerate(vocab):
        if tok in wanted and tok not in index:
            index[tok] = i
    for spelling in _FIM_SPELLINGS:
        for variant in (spelling, tuple("▁" + t for t in spelling)):
            if all(t in index for t in variant):
                return dict(zip(("prefix", "suffix", "middle"), (index[t] for t in variant)))
    return None


def repo_token_ids(meta: dict) -> dict[str, int | None] | None:
    """{"repo", "sep"} ids for a repo-level prompt (`repo` may be None), or None
    when the model has no file separator. The GGUF keys llama.cpp writes win
    (fim_rep/fim_sep_token_id), then the known spellings in the vocabulary."""
    sep = meta.get("tokenizer.ggml.fim_sep_token_id")
    rep = meta.get("tokenizer.ggml.fim_rep_token_id")
    if isinstance(sep, int) and sep >= 0:
        return {"repo": rep if isinstance(rep, int) and rep >= 0 else None, "sep": sep}
    vocab = meta.get("tokenizer.ggml.tokens")
    if not isinstance(vocab, list):
        return None
    wanted = {t for pair in _REPO_SPELLINGS for t in pair}
    index: dict[str, int] = {}
    for i, tok in enumerate(vocab):
        if tok in wanted and tok not in index:
            index[tok] = i
    for rep_text, sep_text in _REPO_SPELLINGS:
        if sep_text in index:
            return {"repo": index.get(rep_text), "sep": index[sep_text]}
    return None
