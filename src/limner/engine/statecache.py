"""A bounded cache of KV states, so switching between 2-3 buffers stays warm.

llama-cpp-python already reuses the common prefix with the *current*
context. This adds snapshots of earlier contexts: when a job would throw
away a long context (another buffer came in), we save it first; when a job
matches a saved context better than the current one, we restore it.

We store only llama.cpp's own state bytes and the token ids, not
`Llama.save_state()`'s copy of the logits matrix (n_batch x n_vocab floats:
~100 MB for SmolLM2, ~500 MB for Gemma 3 per snapshot).
"""
from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass

MIN_SNAPSHOT = 64  # tokens: shorter contexts are cheaper to re-evaluate than to copy
MIN_GAIN = 32  # restore only when it saves at least this many tokens of evaluation


def common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _window_kept(llm, keep: int) -> bool:
    """Does the KV cache still hold what evaluating from position `keep` needs?

    A sliding-window model's cache (Gemma 3: 512 tokens) drops positions that
    fell out of the window. Going back to a short shared prefix after a long
    prompt would then run on a cache with holes and silently change the
    output, so such a prefix is re-evaluated instead (llama.cpp's server
    makes the same check)."""
    try:
        import llama_cpp

        n_swa = llama_cpp.llama_model_n_swa(llm.model)
        if n_swa <= 0:
            return True
        pos_min = llama_cpp.llama_memory_seq_pos_min(llama_cpp.llama_get_memory(llm.ctx), 0)
    except (AttributeError, ImportError):  # an older llama-cpp-python: nothing to check with
        return True
    return pos_min <= max(0, keep - n_swa)


@dataclass
class _Snapshot:
    tokens: tuple[int, ...]
    state: bytes


class StateCache:
    def __init__(self, capacity_bytes: int):
        self.capacity = max(0, int(capacity_bytes))
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], _Snapshot] = OrderedDict()
        self.size = 0
        self.restores = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def drop(self, model: str) -> None:
        for key in [k for k in self._entries if k[0] == model]:
            self.size -= len(self._entries.pop(key).state)

    def prepare(self, model: str, llm, tokens: list[int], last_prompt: int | None = None) -> int:
        """Make llm's context hold the longest available prefix of `tokens`.

        Returns how many prompt tokens are already evaluated (the caller
        evaluates the rest). Always leaves at least one token to evaluate,
        because sampling needs fresh logits. `last_prompt`: how much of the
        live context was the previous job's prompt; losing only its reply
        (a buffer re-run) is not worth a snapshot, losing its prompt is.
        """
        current = llm.input_ids[: llm.n_tokens].tolist()
        here = common_prefix(current, tokens)
        best_key, best = None, here
        for key, snap in self._entries.items():
            if key[0] == model:
                n = common_prefix(snap.tokens, tokens)
                if n > best:
                    best_key, best = key, n
        if best_key is not None and best - here >= MIN_GAIN:
            # Take the entry first: saving the live context may evict it.
            snap = self._entries[best_key]
            self._entries.move_to_end(best_key)
            self._snapshot(model, llm, current, here)
            self._restore(llm, snap)
            self.restores += 1
            here = best
        elif min(len(current), last_prompt or len(current)) - here >= MIN_SNAPSHOT:
            self._snapshot(model, llm, current, here)
        keep = min(here, len(tokens) - 1)
        if keep > 0 and not _window_kept(llm, keep):
            keep = 0
        if keep > 0 and llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.n_tokens = keep
        else:
            llm.reset()
            llm._ctx.kv_cache_clear()
            keep = 0
        return keep

    def remember(self, model: str, llm) -> None:
        """Nothing to do eagerly: contexts are saved lazily, when about to be lost."""

    def _snapshot(self, model, llm, current: list[int], shared: int) -> None:
        if self.capacity <= 0 or len(current) - shared < MIN_SNAPSHOT:
            return
        key = (model, tuple(current))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        import llama_cpp

        size = llama_cpp.llama_state_get_size(llm.ctx)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_get_data(llm.ctx, buf, size)
        if n <= 0 or n > self.capacity:
            return
        snap = _Snapshot(tokens=key[1], state=ctypes.string_at(buf, n))
        self._entries[key] = snap
        self.size += n
        while self.size > self.capacity and self._entries:
            _, old = self._entries.popitem(last=False)
            self.size -= len(old.state)

    @staticmethod
    def _restore(llm, snap: _Snapshot) -> None:
        import llama_cpp

        data = (ctypes.c_uint8 * len(snap.state)).from_buffer_copy(snap.state)
        if llama_cpp.llama_state_set_data(llm.ctx, data, len(snap.state)) != len(snap.state):
            raise RuntimeError("llama.cpp refused a saved KV state")
        n = len(snap.tokens)
        llm.input_ids[:n] = snap.tokens
        llm.n_tokens = n
        llm._requires_eval = True
