"""Turning a job into prompt text or tokens: chat templates and FIM layouts.

Chat is rendered to a plain string with the model's own Jinja2 template and
then tokenized like any completion, so the prefix cache treats chat and
completion the same way: a new `!user` turn only appends tokens.
"""
from __future__ import annotations

from functools import lru_cache

# For models with no template (base models asked to chat): ChatML, the
# same fallback llama.cpp's server uses.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(Exception):
    pass


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2 import BaseLoader, TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    # trim_blocks/lstrip_blocks: what Hugging Face's apply_chat_template uses,
    # which is what template authors test against.
    env = ImmutableSandboxedEnvironment(loader=BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env.from_string(source)
    except TemplateSyntaxError as e:
        raise TemplateError(f"the model's chat template does not compile: {e}") from None


def render_chat(template: str | None, messages: list[dict], *, bos: str, eos: str) -> str:
    """The prompt text for `messages`, ending where the assistant's reply starts."""
    msgs = [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))}
            for m in messages]
    try:
        return _compile(template or CHATML).render(
            messages=msgs, add_generation_prompt=True, bos_token=bos, eos_token=eos,
        )
    except TemplateError:
        raise
    except Exception as e:  # noqa: BLE001 - a template is foreign code; report, don't crash
        raise TemplateError(f"the model's chat template failed: {type(e).__name__}: {e}") from None


def fim_tokens(fim: dict | None, bos: int | None, prefix_ids: list[int],
               suffix_ids: list[int]) -> list[int]:
    """Token layout for fill-in-the-middle.

    With FIM ids: PSM order (<pre> prefix <suf> suffix <mid>), the layout
    every FIM-trained model we know accepts. Without: the prefix alone, and
    the caller's stop (the suffix, or the syntax-aware stop) ends the middle.
    """
    head = [bos] if bos is not None else []
    if not fim:
        return head + prefix_ids
    return head + [fim["prefix"]] + prefix_ids + [fim["suffix"]] + suffix_ids + [fim["middle"]]


def repo_tokens(repo: dict, tokenize, name: str, extra: list, filename: str) -> list[int]:
    """The repo-level context before a FIM prompt, as llama.cpp's /infill lays
    it out: <repo> NAME\n, then <sep> PATH\n TEXT per file, then <sep> PATH\n
    of the file being edited (its prefix/FIM layout follows)."""
    out: list[int] = []
    if repo.get("repo") is not None:
        out += [repo["repo"]] + tokenize(name + "\n")
    for path, text in extra:
        out += [repo["sep"]] + tokenize(f"{path}\n") + tokenize(text if text.endswith("\n") else text + "\n")
    return out + [repo["sep"]] + tokenize(f"{filename}\n")


class StopScanner:
    """Finds stop strings in streamed text, holding back a possible partial match."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.hit = ""  # the stop string that ended the text (llama.cpp's stopping_word)

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was hit)."""
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [(i, s) for i, s in ((buf.find(s), s) for s in self.stops) if i >= 0]
        if hits:
            at, self.hit = min(hits)
            self.held = ""
            return buf[:at], True
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
