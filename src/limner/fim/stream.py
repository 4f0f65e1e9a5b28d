"""The stop on a live stream: HTTP adapters (guard) and the engine (make_stopper).

`guard(events, req, adapter)` sits between an adapter and the renderer for
infill/FIM requests. It feeds each Text to a Stopper, passes on only the text
the stop has committed to (a line is shown once the stop knows it stays),
and when the stop fires it cuts there, aborts the HTTP request with
`adapter.close()` and ends the stream with Stopped("fim:<rule>"), which
`!stats` shows as the reason generation stopped.

`make_stopper(spec)` is the engine's hook: the engine feeds decoded chunks
and stops decoding as soon as `feed` returns a cut.
"""
from __future__ import annotations

from typing import Iterator

from limner.events import Event, Failure, Stopped, Text
from limner.fim.languages import detect, infer
from limner.fim.stopper import Stopper


def make_stopper(spec: dict) -> Stopper:
    """spec: {"language", "prefix", "suffix"}; the language may be None (guessed)."""
    prefix, suffix = spec.get("prefix") or "", spec.get("suffix") or ""
    return Stopper(detect(spec.get("language"), prefix, suffix), prefix, suffix)


def spec_for(prefix: str, suffix: str, language: str | None = None, filename: str | None = None,
             other_paths: list[str] | tuple[str, ...] = ()) -> dict:
    """The engine's stop_spec for a server request, its language inferred
    when the client names none (see languages.infer)."""
    return {"language": infer(language, prefix, suffix, filename, other_paths),
            "prefix": prefix, "suffix": suffix}


def stopper_for(req) -> Stopper:
    paths = [f.name for f in getattr(req, "context_files", None) or []]
    prefix, suffix = req.prefix or "", req.suffix or ""
    return Stopper(detect(getattr(req, "language", None), prefix, suffix, paths), prefix, suffix)


def guard(events: Iterator[Event], req, adapter) -> Iterator[Event]:
    if req.prefix is None and req.suffix is None:
        yield from events  # nothing to stop against
        return
    stopper = stopper_for(req)
    shown = 0  # characters of the middle already passed on

    def release(upto: int) -> Text | None:
        nonlocal shown
        if upto > shown:
            out = Text(stopper.text[shown:upto])
            shown = upto
            return out
        return None

    for ev in events:
        if isinstance(ev, Text):
            keep = stopper.feed(ev.text)
            if keep is not None:
                out = release(keep)
                if out:
                    yield out
                adapter.close()  # abort the HTTP request: nothing more is wanted
                _drain(events)
                yield Stopped(stopper.reason)
                return
            out = release(stopper.committed)
            if out:
                yield out
        elif isinstance(ev, Stopped):
            keep = stopper.finish()
            out = release(len(stopper.text) if keep is None else keep)
            if out:
                yield out
            # The engine may already have stopped on its own copy of the rule.
            reason = ev.reason if ev.reason.startswith("fim:") or keep is None else stopper.reason
            yield Stopped(reason)
            return
        elif isinstance(ev, Failure):
            out = release(len(stopper.text))  # partial text is shown, as without the stop
            if out:
                yield out
            yield ev
            return
        else:  # Usage and anything else pass through in order
            yield ev
    out = release(len(stopper.text))
    if out:
        yield out


def _drain(events) -> None:
    """Let the adapter's generator finish its cleanup without reading on."""
    close = getattr(events, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - cleanup after an abort must not fail the reply
            pass


__all__ = ["guard", "make_stopper", "spec_for", "stopper_for"]
