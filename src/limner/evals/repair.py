"""The repair loop: run the reply's code against tests, and on failure ask again.

In a buffer (`!test CMD` or `!test FILE`, plus `!repair N`), after the reply:

  1. the reply's code blocks are written to a fresh sandbox dir (a block whose
     fence names a file, ```python utils.py, under that name; the first
     unnamed Python block as solution.py; other unnamed blocks as blockN.EXT);
  2. the tests run there, in limner.sandbox;
  3. on failure, the failing assert and a trimmed traceback go into the
     buffer as a new `!user` turn, and the model is asked again,
     up to N rounds.

Everything is written to the buffer as it happens, so the user sees every
round, and the next run of the buffer sends the whole exchange. `!test`
without `!repair` runs the tests once and reports in `!note` lines.

The eval harness uses `next_request` for its repair-vs-resample comparison.
"""
from __future__ import annotations

import copy
import os
import sys
import time

from limner.request import CHAT, COMPLETION, Message

TEST_TIMEOUT_S = 30.0
_EXT = {"python": "py", "javascript": "js", "typescript": "ts", "bash": "sh", "go": "go", "rust": "rs",
        "c": "c", "cpp": "cpp", "java": "java", "ruby": "rb"}


# ---------------------------------------------------------------- the feedback text


def feedback(failure: str, what: str = "the tests") -> str:
    """The `!user` turn for one failed round: what failed, then what to do."""
    return (f"The code failed {what}:\n\n```\n{failure.strip()}\n```\n\n"
            "Fix the code. Reply with the whole corrected code in one ```python block.")


def next_request(task, how: str, history: list[tuple[dict, dict]]) -> tuple[list[dict] | None, str | None]:
    """(messages, prompt) for the next eval repair round.

    history: [(generation row, score row), ...], oldest first, each failed.
    Chat: the whole conversation, each failure a user turn. Completion (a
    base model has no turns): the last attempt, its failure as comments,
    then the task's prompt again for a fresh try.
    """
    from limner.evals.targets import chat_instruction

    if how == "chat":
        msgs = [{"role": "user", "content": chat_instruction(task)}]
        for gen, sc in history:
            msgs.append({"role": "assistant", "content": gen.get("text") or ""})
            msgs.append({"role": "user", "content": feedback(sc.get("detail") or sc.get("status") or "")})
        return msgs, None
    gen, sc = history[-1]
    failure = (sc.get("detail") or sc.get("status") or "").strip()
    comment = "\n".join("# " + line for line in failure.splitlines()[-12:])
    prompt = (task.prompt + (gen.get("code") or "").rstrip() + "\n\n\n"
              "# The code above fails its tests:\n" + comment + "\n# A corrected version:\n\n" + task.prompt)
    return None, prompt


# ---------------------------------------------------------------- files and the test run


def files_of(req, reply: str) -> dict[str, str]:
    """The reply's code as sandbox files (see the module docstring)."""
    from limner.checks import blocks

    if req.mode == CHAT:
        files: dict[str, str] = {}
        main_taken = False
        for i, b in enumerate(blocks.fenced(reply), 1):
            if not b.code.strip():
                continue
            name = b.name if not b.name.startswith("block ") else ""
            if name and not os.path.isabs(name) and ".." not in name.split("/"):
                files[name] = b.code
            elif b.language == "python" and not main_taken:
                files["solution.py"], main_taken = b.code, True
            else:
                files[f"block{i}.{_EXT.get(b.language or '', 'txt')}"] = b.code
        return files
    text = (req.prompt or "") + reply if req.mode == COMPLETION else (req.prefix or "") + reply + (req.suffix or "")
    lang = blocks.language_of(req.language or "", text) or "python"
    return {f"solution.{_EXT.get(lang, 'txt')}": text}


def test_command(spec: str, cwd: str) -> tuple[list[str], dict[str, str], str]:
    """`!test` argument -> (argv, extra files, label). A path to an existing
    file is a test file (pytest when it has test_ functions and pytest is
    installed, else plain python); anything else is a shell command line."""
    path = os.path.join(cwd, spec) if not os.path.isabs(spec) else spec
    if " " not in spec.strip() and os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        name = os.path.basename(path)
        if "def test_" in text and _has_pytest():
            argv = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", name]
        else:
            argv = [sys.executable, name]
        return argv, {name: text}, name
    return ["/bin/sh", "-c", spec], {}, spec


def _has_pytest() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytest") is not None


def run_tests(req, reply: str, cwd: str | None = None):
    """Run the buffer's tests on the reply's code: (sandbox Result, label)."""
    from limner.sandbox import run

    argv, extra, label = test_command(req.test_cmd or "", cwd or os.getcwd())
    files = {**files_of(req, reply), **extra}
    timeout = float(os.environ.get("LIMNER_TEST_TIMEOUT", TEST_TIMEOUT_S))
    return run(argv, files=files, timeout=timeout, want=req.sandbox), label


# ---------------------------------------------------------------- the buffer hook


def _notes(text: str) -> str:
    return "".join(f"!note {line}\n" if line.strip() else "!note\n" for line in text.strip().splitlines())


def _how(r) -> str:
    iso = r.isolation
    if iso == "basic":
        iso += " (asked for with !sandbox basic: no network or filesystem isolation)"
    end = f"stopped by the {r.killed_reason} limit" if r.killed_reason else f"exit {r.returncode}"
    return f"{end}, {r.seconds:.2f} s, {iso} sandbox"


def after_reply(req, outcome, out, *, log: bool = True) -> int:
    """limner.run's hook for `!test`/`!repair` buffers. Returns the exit code
    (the reply's: failing tests are reported, not an error of limner)."""
    from limner import render
    from limner.errors import LimnerError
    from limner.evals.score import failure_summary

    if not req.test_cmd:
        out.write("\n\n!note repair: `!repair` needs `!test CMD` (or `!test FILE`) to know what passing means\n")
        out.flush()
        return outcome.exit_code
    rounds = req.repair_rounds if req.mode == CHAT else 0
    written = [f"\n\n!assistant\n\n{req.prepend}{outcome.text}" if req.mode == CHAT else outcome.text]
    current, reply = req, outcome.text
    for r in range(rounds + 1):
        try:
            result, label = run_tests(current, reply)
        except LimnerError as e:  # the sandbox asked for is unavailable: nothing ran
            _write(out, written, render.error_block(e.message, e.hint))
            return e.exit_code
        except (OSError, ValueError) as e:
            out.write(f"\n\n!note tests: could not run `{req.test_cmd}`: {e}\n")
            out.flush()
            return outcome.exit_code
        if result.ok:
            after = f" after {r} repair round{'s' if r != 1 else ''}" if r else ""
            _write(out, written, f"\n\n!note tests: passed{after} ({_how(result)})\n")
            return outcome.exit_code
        failure = failure_summary(result.stderr, result.stdout)
        if result.killed_reason and not failure.strip():
            failure = f"the tests were {_how(result)}"
        if r == rounds:
            why = f" after {rounds} repair round{'s' if rounds != 1 else ''}" if rounds else ""
            tail = "" if req.mode == CHAT or not req.repair_rounds else "\n!note repair: only chat buffers can be repaired"
            _write(out, written, f"\n\n!note tests: failed{why} ({_how(result)})\n" + _notes(failure) + tail)
            return outcome.exit_code
        turn = feedback(failure, f"its tests (`{label}`)")
        _write(out, written, f"\n\n!note tests: failed ({_how(result)}); repair round {r + 1} of {rounds}\n"
                             f"!user\n\n{_escaped(turn)}\n")
        current = _next(current, reply, turn, req.text + "".join(written))
        reply, status = _ask(current, out, written, log)
        if status != "ok":
            return 1  # the model could not be reached: the !error block says why
    return outcome.exit_code


def _escaped(text: str) -> str:
    """A line of test output that starts with "!" would read as a directive
    next run; Illume's escape "!!" sends it as written."""
    return "\n".join("!" + line if line.startswith("!") else line for line in text.split("\n"))


def _write(out, written: list[str], text: str) -> None:
    written.append(text)
    out.write(text)
    out.flush()


def _next(req, reply: str, turn: str, text: str):
    nxt = copy.deepcopy(req)
    nxt.messages = [*req.messages, Message("assistant", req.prepend + reply), Message("user", turn)]
    nxt.text = text
    return nxt


def _ask(req, out, written: list[str], log: bool) -> tuple[str, str]:
    """One more exchange, rendered into the buffer and logged like any other."""
    from limner import backends, render

    started = time.time()

    class _Tee:  # what the renderer writes is also part of the buffer for the next round
        def write(self, s):
            written.append(s)
            return out.write(s)

        def flush(self):
            out.flush()

    try:
        adapter = backends.open(req)
    except Exception as e:  # noqa: BLE001 - it opened a moment ago; say so, never a traceback
        _write(out, written, render.error_block(f"repair: could not ask again: {e}"))
        return "", "error"
    renderer = render.Renderer(_Tee(), req)
    try:
        for ev in adapter.stream():
            renderer.feed(ev)
    except KeyboardInterrupt:
        adapter.close()
        renderer.cancel()
    outcome = renderer.finish()
    if log:
        try:
            from limner import log as exchange_log

            exchange_log.record_outcome(req, adapter, outcome, started=started)
        except Exception as e:  # noqa: BLE001 - the reply matters more than the log
            sys.stderr.write(f"limner: could not log this exchange: {e}\n")
    return outcome.text, outcome.status

