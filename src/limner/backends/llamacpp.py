"""llama.cpp's own server endpoints: /infill and /completion.

Without an explicit `!backend llamacpp` this is only chosen for `!infill`,
and then the request is Illume's exactly (it targets llama.cpp's /infill
too). With `!backend llamacpp` (the `llama.cpp-native` profile) limner
uses what the native endpoints offer beyond Illume:

- /infill gets the `!context` files as `input_extra` (llama.cpp builds its
  repo-level FIM prompt from them) instead of inlined into the prefix;
- completion and FIM go to /completion with `n_predict` and `cache_prompt`;
- the server's `timings` give real token counts and speeds for `!stats`.

Chat still uses llama-server's OpenAI-compatible /chat/completions.
"""
from __future__ import annotations

from typing import Any, Iterator

from limner.backends.base import endpoint_url, split_api
from limner.backends.openai import OpenAIAdapter, illume_body
from limner.events import Event, Usage
from limner.request import CHAT, COMPLETION, FIM, INFILL


def hole_indent(suffix: str | None) -> int:
    """Indentation (spaces and tabs, as llama.cpp counts) of the first code line after the hole."""
    for line in (suffix or "").split("\n"):
        if line.strip():
            return len(line) - len(line.lstrip(" \t"))
    return 0


class LlamaCppAdapter(OpenAIAdapter):
    name = "llamacpp"

    @property
    def native(self) -> bool:
        return self.req.backend == "llamacpp"

    def build_url(self) -> str:
        mode = self.req.mode
        if mode == CHAT:
            return endpoint_url(self.req, "chat/completions")
        if mode == INFILL and not self.native:
            return endpoint_url(self.req, "infill")  # Illume's URL, as written
        endpoint = "infill" if mode == INFILL else "completion"
        api, literal = split_api(self.req)
        if literal:
            return api
        # The native endpoints live at the server's root, not under /v1.
        api = api.rstrip("/")
        if api.endswith("/v1"):
            api = api[: -len("/v1")]
        return api + "/" + endpoint

    def body(self) -> dict:
        req = self.req
        body = illume_body(req)
        if req.mode == INFILL:
            if self.native and (req.context_files or req.extra_files):
                self._move_context(body)
            if req.language and "n_indent" not in body:
                indent = hole_indent(req.suffix)
                if indent:
                    body["n_indent"] = indent
        elif self.native and req.mode in (COMPLETION, FIM):
            if "max_tokens" in body and "n_predict" not in body:
                body["n_predict"] = body.pop("max_tokens")
            body.setdefault("cache_prompt", True)
        body["stream"] = True
        return body

    def _move_context(self, body: dict) -> None:
        """!context files go in input_extra, out of the prefix (or suffix) text."""
        extra = []
        for f in self.req.context_files:
            extra.append({"filename": f.name, "text": f.text})
            if f.block:
                for field in ("input_prefix", "input_suffix"):
                    if f.block in body.get(field, ""):
                        body[field] = body[field].replace(f.block, "", 1)
                        break
        # !retrieve's blocks for the cursor: llama.cpp lays them out with the
        # model's repo-level FIM tokens (or its own snippet separator).
        extra += [{"filename": name, "text": text} for name, text in self.req.extra_files]
        body["input_extra"] = extra

    def on_chunk(self, obj: Any) -> Iterator[Event]:
        yield from super().on_chunk(obj)
        if isinstance(obj, dict) and obj.get("stop") is True and "timings" not in obj:
            # Older servers give counts without timings.
            n_prompt, n_pred = obj.get("tokens_evaluated"), obj.get("tokens_predicted")
            if isinstance(n_prompt, int) or isinstance(n_pred, int):
                self.usage = self.usage or Usage()
                if isinstance(n_prompt, int):
                    self.usage.prompt_tokens = n_prompt
                if isinstance(n_pred, int):
                    self.usage.completion_tokens = n_pred
