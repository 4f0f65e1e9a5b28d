"""Writes small, valid GGUF files for tests of the metadata reader.

Only the header, key/values and tensor infos: enough for everything that
reads metadata, not for llama.cpp to run.
"""
from __future__ import annotations

import math
import struct


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(v) -> tuple[int, bytes]:
    if isinstance(v, bool):
        return 7, struct.pack("<?", v)
    if isinstance(v, int):
        return (4, struct.pack("<I", v)) if v >= 0 else (5, struct.pack("<i", v))
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, str):
        return 8, _string(v)
    if isinstance(v, list):
        etype = _value(v[0])[0] if v else 8
        body = b"".join(_value(x)[1] for x in v)
        return 9, struct.pack("<IQ", etype, len(v)) + body
    raise TypeError(type(v))


def write_gguf(path, kv: dict, tensors: list[tuple[str, list[int]]] = ()) -> None:
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(kv))]
    for key, value in kv.items():
        vtype, raw = _value(value)
        out += [_string(key), struct.pack("<I", vtype), raw]
    offset = 0
    for name, dims in tensors:
        out += [_string(name), struct.pack("<I", len(dims))]
        out += [struct.pack("<Q", d) for d in dims]
        out += [struct.pack("<IQ", 0, offset)]
        offset += 4 * math.prod(dims)
    with open(path, "wb") as f:
        f.write(b"".join(out))
