"""Events flow from a backend adapter to the renderer, the log and `limner serve`.

Adapters never print; they yield these. The renderer never parses HTTP; it
consumes these. That seam is what lets one stream feed the terminal, the
log, the editor plugins and the eval harness.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass
class Text:
    text: str


@dataclass
class Usage:
    """Token counts and timings, from the server's `usage`/`timings` or the engine."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_ms: float | None = None  # time spent evaluating the prompt
    predicted_ms: float | None = None  # time spent decoding
    cached_tokens: int | None = None  # prompt tokens served from a cache
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stopped:
    """The stream ended normally. reason: "stop", "length", "fim:<rule>", ..."""

    reason: str = "stop"


@dataclass
class Failure:
    """The stream could not start or was cut off.

    kind is a short stable slug ("refused", "dns", "http", "disconnect",
    "malformed", "utf8", "timeout", "context", "cancelled", "engine", ...);
    message says what happened, hint says what to do.
    """

    kind: str
    message: str
    hint: str = ""
    line: int = 0  # buffer line it relates to, when there is one
    status: int | None = None  # HTTP status, when there is one


@dataclass
class Sample:
    """One of n samples of one prompt (Job.n > 1), whole: the engine sends them
    after decoding all n together, before the Usage."""

    index: int
    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "cancelled"
    tokens: int = 0
    logprob_sum: float = 0.0  # natural log, the model's raw distribution
    logprob_mean: float = 0.0
    seed: int | None = None


Event = Union[Text, Usage, Stopped, Failure, Sample]


@dataclass
class Outcome:
    """What one exchange came to, once the stream is over. The log stores this.

    status: "ok" | "error" | "partial" (text arrived, then a failure) | "cancelled"
    """

    status: str
    exit_code: int
    text: str = ""  # the reply text as written (after !prepend)
    usage: Usage | None = None
    stopped: str | None = None  # Stopped.reason, when the stream ended normally
    failure: Failure | None = None
    first_token_s: float | None = None  # seconds from request start to first text
    elapsed_s: float | None = None
