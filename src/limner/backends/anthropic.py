"""Anthropic's Messages API (the `claude` profiles).

One deliberate difference from Illume: the system prompt goes in the
top-level `system` field, which is where the Messages API reads it (Illume
sends it as a message with role "system", which the API rejects).
Thinking deltas are wrapped in <think>...</think> as Illume does, so
`!exclude think` drops them when the buffer is sent again.
"""
from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import urlsplit

from limner.backends.base import HttpAdapter, Ordered, merge_usage, split_api, text_event
from limner.events import Event

# Anthropic's stop reasons, in the words the rest of limner uses.
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def is_anthropic_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.path.rstrip("/").endswith("/messages") or parts.hostname == "api.anthropic.com"


class AnthropicAdapter(HttpAdapter):
    name = "anthropic"

    def __init__(self, req):
        super().__init__(req)
        self.thinking = False  # inside a <think> block we opened

    def build_url(self) -> str:
        api, literal = split_api(self.req)
        if literal or api.rstrip("/").endswith("/messages"):
            return api
        return api.rstrip("/") + "/messages"

    def body(self) -> dict:
        body = dict(self.req.data)
        system = [m.content for m in self.req.messages if m.role == "system"]
        body["messages"] = [Ordered(role=m.role, content=m.content)
                            for m in self.req.messages if m.role != "system"]
        if system and "system" not in body:
            body["system"] = "\n\n".join(system)
        body["stream"] = True
        return body

    def _thinking(self, s: Any) -> Iterator[Event]:
        if isinstance(s, str) and s:
            if not self.thinking:
                self.thinking = True
                yield from text_event("<think>\n")
            yield from text_event(s)

    def _text(self, s: Any) -> Iterator[Event]:
        if isinstance(s, str) and s:
            if self.thinking:
                self.thinking = False
                yield from text_event("\n</think>\n\n")
            yield from text_event(s)

    def _stop(self, reason: Any) -> None:
        if isinstance(reason, str) and reason:
            self.finish = STOP_REASONS.get(reason, reason)

    def on_chunk(self, obj: Any) -> Iterator[Event]:
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("thinking"):
                yield from self._thinking(delta["thinking"])
            elif delta.get("text"):
                yield from self._text(delta["text"])
        elif kind == "message_start":
            message = obj.get("message") or {}
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self.usage = merge_usage(self.usage, message)
        elif kind == "message_delta":
            self._stop((obj.get("delta") or {}).get("stop_reason"))
        elif kind == "message_stop":
            self.done = True
            self.finish = self.finish or "stop"

    def on_whole(self, obj: Any) -> Iterator[Event]:
        if not isinstance(obj, dict):
            return
        for block in obj.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "thinking":
                yield from self._thinking(block.get("thinking"))
            elif block.get("type") == "text":
                yield from self._text(block.get("text"))
        self._stop(obj.get("stop_reason"))
