"""OpenAI-compatible servers: /chat/completions and /completions.

This is Illume's own protocol, so the request is Illume's byte for byte:
the !: data plus `messages` (chat) or `prompt` (completion, FIM), or
llama.cpp's /infill fields, plus "stream": true. The reply parser reads
what OpenAI, llama-server, vLLM, SGLang and Ollama send, including a plain
JSON answer from a server that does not stream.
"""
from __future__ import annotations

from typing import Any, Iterator

from limner.backends.base import HttpAdapter, Ordered, endpoint_url, text_event
from limner.events import Event
from limner.request import CHAT, COMPLETION, FIM, INFILL

ENDPOINTS = {CHAT: "chat/completions", COMPLETION: "completions",
             INFILL: "infill", FIM: "completions"}


def illume_body(req) -> dict:
    """The body Illume's query() builds for this request, before "stream"."""
    body = dict(req.data)
    if req.mode == CHAT:
        body["messages"] = [Ordered(role=m.role, content=m.content) for m in req.messages]
    elif req.mode in (COMPLETION, FIM):
        body["prompt"] = req.prompt if req.prompt is not None else ""
    elif req.mode == INFILL:
        body["prompt"] = ""  # llama.cpp requires it
        body["input_prefix"] = req.prefix if req.prefix is not None else "\n"
        body["input_suffix"] = req.suffix or ""
    return body


class GptOssChannels:
    """Illume's !gpt-oss rewrite of harmony channel tokens, one token at a time.

    `<|channel|>analysis<|message|>` opens a <think> block, `...final<|message|>`
    closes it, and the `<|end|><|start|>assistant` between them is dropped.
    """

    def __init__(self) -> None:
        self.state = "text"
        self.name = ""

    def feed(self, tok: str) -> str:
        # Assumes one token per chunk, as llama.cpp streams; the checks run
        # in Illume's order so the same tokens give the same text.
        if tok == "<|channel|>":
            self.state = "name"
            return ""
        if self.state == "name":
            self.name, self.state = tok, "message"
            return ""
        if self.state == "message":
            self.state = "text"
            if tok != "<|message|>":
                return "<|channel|>" + self.name + tok
            return {"analysis": "<think>\n", "final": "\n</think>\n\n"}.get(self.name, "")
        if tok == "<|end|>":
            self.state = "end"
            return ""
        if tok == "<|start|>":
            self.state = "role"
            return ""
        if self.state == "role":
            self.state = "text"  # the role's name ("assistant") is not shown
            return ""
        return tok


class OpenAIAdapter(HttpAdapter):
    name = "openai"

    def __init__(self, req):
        super().__init__(req)
        self.channels = GptOssChannels() if req.gpt_oss else None

    def build_url(self) -> str:
        return endpoint_url(self.req, ENDPOINTS.get(self.req.mode, "completions"))

    def body(self) -> dict:
        body = illume_body(self.req)
        body["stream"] = True
        return body

    def _text(self, s: Any) -> Iterator[Event]:
        if self.channels is not None and isinstance(s, str) and s:
            s = self.channels.feed(s)
        yield from text_event(s)

    def on_chunk(self, obj: Any) -> Iterator[Event]:
        if not isinstance(obj, dict):
            return
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if content:
                yield from self._text(content)
            else:
                yield from text_event(choice.get("text"))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish = reason
        elif "content" in obj:
            # llama.cpp's own endpoints (/completion, /infill) answer here too.
            yield from text_event(obj.get("content"))
            self._native_stop(obj)

    def _native_stop(self, obj: dict) -> None:
        if obj.get("stop") is True:
            self.finish = "length" if obj.get("stopped_limit") else "stop"
            self.done = True

    def on_whole(self, obj: Any) -> Iterator[Event]:
        if not isinstance(obj, dict):
            return
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            message = choice.get("message")
            if isinstance(message, dict) and message.get("content"):
                # A whole answer is not token by token: shown as sent.
                yield from text_event(message["content"])
            else:
                yield from text_event(choice.get("text"))
            if isinstance(choice.get("finish_reason"), str):
                self.finish = choice["finish_reason"]
        elif "content" in obj:
            yield from text_event(obj.get("content"))
            self._native_stop(obj)
