"""One sequence's text pipeline: token bytes -> text a client may see, and why it ended.

Shared by the engine's single-sequence loop (core.py) and the scheduler's
batch loop (scheduler.py), so a request gets the same stop strings, UTF-8
reassembly and FIM syntax-aware stop whichever loop decodes it.
"""
from __future__ import annotations

import codecs

from limner.engine import prompts


class Output:
    def __init__(self, params: dict, stop_spec: dict | None):
        stops = params.get("stop") or []
        self.scanner = prompts.StopScanner([stops] if isinstance(stops, str) else list(stops))
        self.stopper = _make_stopper(stop_spec)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.sent = 0  # of the stopper's text, how much went out
        self.scanner_hit = False
        self.newline = False  # a line break is out (t_max_predict_ms waits for one)

    def _release(self, upto: int) -> str:
        out = self.stopper.text[self.sent:upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out

    def _emit(self, text: str):
        """Feed the FIM stopper; returns (text to send, stop reason or None).
        Only text the stop has committed goes out, so a cut never has to
        take back text a client already has (a trailing blank line, say)."""
        if self.stopper is None:
            return text, None
        keep = self.stopper.feed(text) if text else None
        if keep is None:
            return self._release(self.stopper.committed), None
        return self._release(keep), getattr(self.stopper, "reason", "fim")

    def feed(self, data: bytes) -> tuple[str, str | None]:
        """One token's bytes -> (text to send, the reason to stop or None)."""
        text, hit = self.scanner.feed(self.utf8.decode(data))
        self.newline = self.newline or "\n" in text
        out, why = self._emit(text)
        if why:
            return out, why
        if hit:
            self.scanner_hit = True
            return out, "stop"
        return out, None

    def finish(self, reason: str) -> tuple[str, str]:
        """The end of the stream: (the last text, the final reason)."""
        if reason not in ("length", "stop"):
            return "", reason
        if self.stopper is not None:
            # Flush a held partial stop match and any split UTF-8 sequence,
            # then let the FIM stopper have the last word on the text it held
            # back (a stop string's cut is the client's own).
            tail = "" if self.scanner_hit else self._tail()
            out, why = self._emit(tail)
            if why:
                return out, why
            keep = None if self.scanner_hit else self.stopper.finish()
            if keep is not None:
                reason = getattr(self.stopper, "reason", reason)
            return out + self._release(len(self.stopper.text) if keep is None else keep), reason
        return ("" if self.scanner_hit else self._tail()), reason

    def _tail(self) -> str:
        return self.scanner.feed(self.utf8.decode(b"", final=True))[0] + self.scanner.flush()


def _make_stopper(spec: dict | None):
    if not spec:
        return None
    try:
        from limner.fim.stream import make_stopper
    except ImportError:  # the FIM package is optional here
        return None
    try:
        return make_stopper(spec)
    except Exception:  # noqa: BLE001 - a stopper failure must not fail the reply
        return None
