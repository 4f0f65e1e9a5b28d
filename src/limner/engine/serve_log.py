"""`limner serve`'s exchange log: one finished request (serve.Run) -> limner.log."""
from __future__ import annotations

import os
import sys
import time

from limner.engine import openai_schema as oa
from limner.events import Failure, Stopped


def recorder(enabled: bool):
    """A function logging one finished Run via limner.log, or doing nothing."""
    if not enabled or os.environ.get("LIMNER_NO_LOG"):
        return lambda run: None
    try:
        from limner import log
    except ImportError:
        return lambda run: None
    warned = []

    def record(run) -> None:
        meta = getattr(run, "meta", None)
        if meta is None:
            return
        end, u, text = run.end, run.usage, "".join(run.text)
        if run.samples:  # n > 1: the first choice is the reply; all of them go to extra
            text = run.samples[0].text
        if run.cancel.is_set() or (isinstance(end, Failure) and end.kind == "cancelled"):
            status = "cancelled"
        elif isinstance(end, Failure):
            status = "partial" if text else "error"
        else:
            status = "ok"
        fail = end if isinstance(end, Failure) else None
        parsed = meta["parsed"]
        try:
            log.record({
                "source": "serve", "request_url": meta["path"], "request_headers": meta["headers"],
                "request_body": meta["body"], "reply": text, "status": status,
                "error_kind": fail.kind if fail else None,
                "error_message": fail.message if fail else None,
                "error_hint": (fail.hint or None) if fail else None,
                "stop_reason": end.reason if isinstance(end, Stopped) else None,
                "elapsed_s": time.monotonic() - run.started, "first_token_s": run.first_token_s,
                "prompt_ms": u.prompt_ms if u else None, "predicted_ms": u.predicted_ms if u else None,
                "prompt_tokens": u.prompt_tokens if u else None,
                "completion_tokens": u.completion_tokens if u else None,
                "cached_tokens": u.cached_tokens if u else None,
                "model": oa.model_name(run, parsed.model) or None, "backend": "embedded",
                "mode": "infill" if parsed.kind == "infill" else parsed.mode,
                **({"choices": [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                                 "logprob_mean": c.logprob_mean} for c in run.samples]}
                   if run.samples else {}),
            })
        except Exception as e:  # noqa: BLE001 - the log must never break serving
            if not warned:
                warned.append(True)
                sys.stderr.write(f"limner serve: not logging exchanges: {e}\n")

    return record
