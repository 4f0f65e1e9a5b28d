"""`fim:auto` over HTTP: the FIM layout is decided when sending, not before.

Whether to use llama.cpp's /infill or a FIM completion depends on the server,
and only asking it (GET /props) tells. That is network I/O, so it happens in
stream(), never in describe(): `!debug` touches nothing and shows the /infill
call a llama.cpp server would get, with a `!note` line naming the probe and
the completion that is sent otherwise. Both adapters are built up front, so a
bad URL is a BufferError from backends.open, not an exception mid-send.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from limner.events import Event
from limner.fim import templates
from limner.request import HttpCall, Request


class AutoFimAdapter:
    def __init__(self, req: Request, build):
        """build(req) -> the adapter backends.open would pick for that request."""
        from limner.backends.base import split_api

        self.req = req
        self.base, _ = split_api(req)
        self.inner = build(req)  # /infill: what a llama.cpp server gets
        # The fallback, on a copy: req itself changes only once the server has answered.
        copy = dataclasses.replace(req)
        self.plan = templates.resolve_auto(copy, server_has_infill=False)
        self.fallback = build(copy)
        self.decided = False

    @property
    def name(self) -> str:
        return self.inner.name

    def describe(self) -> HttpCall:
        call = self.inner.describe()
        if not self.decided:
            how = ("the prefix only" if self.plan.kind == "prefix-only"
                   else f"a FIM template ({self.plan.why})")
            call.note = (f"fim:auto: decided at send time by asking {templates.props_url(self.base)} "
                         f"(not asked for !debug). With llama.cpp's /infill: the call below; without: "
                         f"POST {self.fallback.describe().url} with {how} as the prompt.")
        return call

    def stream(self) -> Iterator[Event]:
        if not self.decided:
            self.decided = True
            if not templates.probe_infill(self.base):  # False, or None: could not tell
                templates.resolve_auto(self.req, server_has_infill=False)
                self.inner = self.fallback
        yield from self.inner.stream()

    def close(self) -> None:
        self.inner.close()
