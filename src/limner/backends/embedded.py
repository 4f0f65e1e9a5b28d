"""The embedded backend: the bundled llama.cpp engine, no server needed.

The request becomes an engine Job (engine/core.py) and is streamed from the
resident engine process (engine/client.py), or in this process when
LIMNER_ENGINE=inproc. `!:model` picks the model: a bundled name
(smollm2-135m, gemma3-270m), a name from ~/.config/limner/models.toml, or a
path to any .gguf file. Other `!:` keys are passed as OpenAI-style sampling
and engine parameters (max_tokens, temperature, top_p, top_k, min_p,
repeat_penalty, stop, seed, n_threads, n_ctx, n_batch).
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict
from typing import Iterator

from limner.events import Event
from limner.request import CHAT, FIM, INFILL, HttpCall, Request

# Body keys that describe the request's shape, not sampling: never parameters.
_NOT_PARAMS = {"model", "messages", "prompt", "stream", "input_prefix", "input_suffix",
               "input_extra", "suffix"}


def job_for(req: Request):
    from limner.engine.core import Job

    params = {k: v for k, v in req.data.items() if k not in _NOT_PARAMS}
    model = req.model or ""
    if (os.sep in model or model.endswith(".gguf")) and not model.startswith("~"):
        model = os.path.abspath(model)  # the engine process runs elsewhere (cwd /)
    if req.mode == CHAT:
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        return Job(model=model, mode="chat", messages=messages, params=params)
    stop_spec = None
    if req.mode in (INFILL, FIM):
        # The engine runs the FIM helper's syntax-aware stop itself, so decoding
        # ends as soon as the middle is complete (language None = guessed).
        stop_spec = {"language": req.language, "prefix": req.prefix or "", "suffix": req.suffix or ""}
    if req.mode == INFILL or (req.mode == FIM and req.prompt is None):
        # The engine lays out the FIM prompt with the model's own FIM token ids.
        job = Job(model=model, mode="fim", prefix=req.prefix or "", suffix=req.suffix or "",
                  params=params, stop_spec=stop_spec)
        if req.extra_files:  # retrieved files, laid out with the model's repo-level tokens
            job.extra = [list(f) for f in req.extra_files]
            job.filename, job.repo = _names(req)
        return job
    # Completion, or FIM whose template the buffer already filled in.
    return Job(model=model, mode="completion", prompt=req.prompt or "", params=params,
               stop_spec=stop_spec)


def _names(req: Request) -> tuple[str, str]:
    """(the edited file's path within the repository, the repository's name)."""
    root = req.outlines[0][1] if req.outlines else os.path.abspath(req.cwd or os.getcwd())
    name = os.path.basename(root.rstrip(os.sep)) or "repo"
    if not req.file_path:
        return "filename", name
    rel = os.path.relpath(os.path.realpath(req.file_path), os.path.realpath(root))
    return (os.path.basename(req.file_path) if rel.startswith("..") else rel.replace(os.sep, "/")), name


class EmbeddedAdapter:
    name = "embedded"

    def __init__(self, req: Request):
        self.req = req
        self.job = job_for(req)
        self._cancel = threading.Event()
        self._conn = None

    def describe(self) -> HttpCall:
        from limner.engine import models

        model = self.job.model or models.default_for(self.job.mode)
        return HttpCall(url=f"embedded://{model}", headers={}, body=asdict(self.job))

    def stream(self) -> Iterator[Event]:
        from limner.engine import client

        if client.inproc():
            yield from client.inproc_stream(self.job, self._cancel)
            return
        self._conn = client.Connection(self.job)
        if self._cancel.is_set():
            return
        yield from self._conn.events()

    def close(self) -> None:
        """Cancel the generation now (Ctrl-C, or the FIM stop has seen enough)."""
        self._cancel.set()
        if self._conn is not None:
            self._conn.close()  # the engine sees the socket close and drops the job
