"""Errors a user can act on. Anything raised as these becomes an `!error` block."""
from __future__ import annotations


class LimnerError(Exception):
    """A failure with a message for the user and a hint on what to do.

    exit_code follows sysexits loosely: 2 for bad input, 1 for everything else.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str = "", line: int = 0):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.line = line


class BufferError(LimnerError):
    """The buffer itself is wrong: an unknown profile, bad JSON, a missing file."""

    exit_code = 2
