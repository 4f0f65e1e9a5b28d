"""What a `limner tune` candidate puts before each task, and the profile that holds it.

A candidate is an instruction (maybe none) and k demos (task, code). For a
chat model the instruction is the system prompt and each demo a !user /
!assistant pair; for a completion model both are one text block (a comment
line, then each demo as its task's prompt followed by its code), which
`limner eval` puts before each completion prompt (Target.prefix).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Fixed, few and plain: tune measures them, it does not search wording.
INSTRUCTIONS = {
    "chat": (
        ("You are an expert Python programmer. Write correct, self-contained code that passes the "
         "test shown, using the exact function name and arguments the test uses."),
        ("Answer with Python code only: one ```python block holding the complete function and any "
         "imports it needs. Do not explain."),
    ),
    "completion": (
        ("# Python 3. Each docstring states a task and one of its tests; the function after it "
         "solves the task and passes the test."),
        ("# Correct, self-contained Python solutions. Each function has the exact name and "
         "arguments its test calls."),
    ),
}


@dataclass
class Candidate:
    name: str
    instruction: str = ""
    demos: list = field(default_factory=list)  # [(task, code)]

    def record(self) -> dict:
        return {"name": self.name, "instruction": self.instruction or None,
                "demos": [t.id for t, _ in self.demos]}


def chat_demo(task, code: str) -> tuple[str, str]:
    from limner.evals.targets import chat_instruction

    return chat_instruction(task), f"```python\n{code.strip()}\n```"


def completion_block(cand: Candidate) -> str:
    """The few-shot text before a completion prompt. Each demo ends in a blank
    line, so the next docstring starts as the suite's stop ("\\n\\"\\"\\"")
    expects: a model that runs on into a new task is cut there."""
    parts = [cand.instruction + "\n\n"] if cand.instruction else []
    for task, code in cand.demos:
        parts.append(task.prompt + code.replace("\r\n", "\n").strip("\n") + "\n\n")
    return "".join(parts)


def chat_preamble(cand: Candidate) -> list:
    from limner.request import Message

    out = [Message("system", cand.instruction)] if cand.instruction else []
    for user, assistant in (chat_demo(t, c) for t, c in cand.demos):
        out += [Message("user", user), Message("assistant", assistant)]
    return out


def _text(text: str) -> list[str]:
    """Buffer lines for literal text: a line starting with ! is sent as !!."""
    return ["!" + ln if ln.startswith("!") else ln for ln in text.split("\n")]


def profile_text(how: str, head: list[str], base: str | None, model: str, cand: Candidate) -> str:
    """A normal profile: !note provenance, then the base profile or the model,
    then the instruction and demos (chat turns, or one completion block)."""
    lines = list(head)
    if base:
        lines.append(f"!profile {base}")
    else:  # the model tuned on, on the embedded engine (a buffer may still set !:model)
        lines += ["!backend embedded", f"!:model {model}"]
    if how == "completion":
        # The block's closing blank line is the separator before the buffer's text.
        lines += ["!completion", *_text(completion_block(cand)[:-2]), ""]
        return "\n".join(lines) + "\n"
    if cand.instruction:  # text before the first role line: the system prompt
        lines += _text(cand.instruction)
    for user, assistant in (chat_demo(t, c) for t, c in cand.demos):
        lines += ["!user", "", *_text(user), "", "!assistant", "", *_text(assistant), ""]
    return "\n".join(lines) + "\n"
