"""Every way a request can fail, through the real `limner` command.

Each case runs `limner` as a subprocess against tests/faultserver.py (or a
closed port, or an unresolvable name) and checks what the user sees: an
`!error` block saying what happened and what to do, a non-zero exit, text
that already arrived kept on stdout, and never a traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import limner_command
from llama_server import free_port


def buffer(api: str, extra: str = "") -> str:
    return f"!api {api}\n{extra}!user\nSay something.\n"


def error_text(stdout: str) -> str:
    assert "\n\n!error\n\n" in stdout, stdout
    return stdout.split("\n\n!error\n\n", 1)[1]


def assert_clean(proc, code=1):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr


# (mode, words in the message, words in the hint, text kept before the error)
CASES = [
    ("status:401", ["HTTP 401", "Incorrect API key"], ["API key"], ""),
    ("status:403", ["HTTP 403", "not allowed"], ["API key"], ""),
    ("status:404", ["HTTP 404", "does not exist"], ["!api", "!:model"], ""),
    ("status:429", ["HTTP 429"], ["Rate limited"], ""),
    ("status:500", ["HTTP 500", "error while processing"], ["server's log", "log says why"], ""),
    ("status-text:502", ["HTTP 502", "upstream failed with 502"], ["log says why"], ""),
    ("ctx-llama", ["does not fit the model's context", "5000 prompt tokens",
                   "context holds 4096", "exceeds the available context size"],
     ["!begin", "max_tokens"], ""),
    ("ctx-openai", ["does not fit the model's context", "9000 prompt tokens",
                    "context holds 8192"], ["larger context"], ""),
    ("stream-error", ["out of memory"], ["log says why"], "Hello,"),
    ("disconnect:3", ["closed the connection before the reply was complete",
                      "incomplete chunked read"], ["text above is what arrived"], "Hello, this"),
    ("malformed", ["not JSON", "this is not json"], ["OpenAI-compatible"], "Hello"),
    ("notjson", ["neither JSON nor an event stream", "Welcome to nginx"],
     ["API endpoint, not a web page"], ""),
    ("badutf8", ["not valid UTF-8"], ["text above arrived intact"], "Hello,"),
    # The good events and the bad bytes arrive in one read: the events are kept.
    ("badutf8-late", ["not valid UTF-8"], ["text above arrived intact"], "Hello, this"),
]


@pytest.mark.parametrize("mode,what,todo,kept", CASES, ids=[c[0] for c in CASES])
def test_server_failures(run_limner, fault_server, mode, what, todo, kept):
    proc = run_limner(buffer(fault_server.url(mode)))
    assert_clean(proc)
    err = error_text(proc.stdout)
    message, _, hint = err.partition("\n")
    for w in what:
        assert w in message, (w, err)
    assert any(w in hint for w in todo), (todo, err)
    if kept:
        assert proc.stdout.startswith("\n\n!assistant\n\n" + kept + "\n\n!error"), proc.stdout
    else:
        assert "!assistant" not in proc.stdout


def test_connection_refused(run_limner):
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_limner(buffer(url))
    assert_clean(proc)
    err = error_text(proc.stdout)
    assert err.startswith(f"line 1: no server is listening at {url}/chat/completions")
    assert "Start the server, or fix !api" in err


def test_dns_failure(run_limner):
    proc = run_limner(buffer("http://no-such-host.invalid/v1"))
    assert_clean(proc)
    err = error_text(proc.stdout)
    assert "cannot find the host 'no-such-host.invalid'" in err and "host name in !api" in err


def test_read_timeout_keeps_text(run_limner, fault_server):
    proc = run_limner(buffer(fault_server.url("stall:3"), "!timeout 0.5\n"))
    assert_clean(proc)
    assert proc.stdout.startswith("\n\n!assistant\n\nHello\n\n!error")
    err = error_text(proc.stdout)
    assert "sent nothing more for 0.5 s mid-reply (timeout)" in err
    assert "from !timeout at line 2" in err and "text above" in err


# (buffer lines, command-line flags, environment, where the 1 s came from):
# !timeout > --timeout > $LIMNER_TIMEOUT.
TIMEOUT_SOURCES = [
    ("!timeout 1\n", [], {}, "!timeout at line 2"),
    ("", ["--timeout", "1"], {}, "--timeout"),
    ("", [], {"LIMNER_TIMEOUT": "1"}, "$LIMNER_TIMEOUT"),
    ("!timeout 1\n", ["--timeout", "30"], {"LIMNER_TIMEOUT": "30"}, "!timeout at line 2"),
    ("", ["--timeout", "1"], {"LIMNER_TIMEOUT": "30"}, "--timeout"),
]


@pytest.mark.parametrize("extra,args,env,source", TIMEOUT_SOURCES,
                         ids=["directive", "flag", "env", "directive-wins", "flag-beats-env"])
def test_silent_server_times_out(run_limner, fault_server, extra, args, env, source):
    # A server that takes the connection and never sends a status line used to
    # hold limner for the whole 300 s default.
    started = time.monotonic()
    proc = run_limner(buffer(fault_server.url("silent:60"), extra), *args, env=env)
    assert time.monotonic() - started < 20  # 1 s, plus start-up on a loaded box
    assert_clean(proc)
    assert "!assistant" not in proc.stdout
    message, _, hint = error_text(proc.stdout).partition("\n")
    assert "accepted the connection but sent no answer for 1 s (timeout)" in message
    assert f"The timeout is 1 s, from {source}." in hint
    for knob in ("!timeout SECONDS", "--timeout SECONDS", "LIMNER_TIMEOUT"):
        assert knob in hint


def test_bad_timeout_is_refused_before_sending(run_limner, fault_server):
    sent = len(fault_server.requests)
    proc = run_limner(buffer(fault_server.url("ok"), "!timeout abc\n"))
    assert_clean(proc, code=2)
    err = error_text(proc.stdout)
    assert err.startswith("line 2: !timeout needs a number of seconds greater than 0, not 'abc'")
    assert "e.g. !timeout 30" in err
    check = run_limner("!user\nhi\n!timeout 0\n", "check")
    assert check.returncode == 1 and "3: !timeout needs a number of seconds" in check.stdout
    proc = run_limner(buffer(fault_server.url("ok")), env={"LIMNER_TIMEOUT": "-1"})
    assert_clean(proc, code=2)
    assert "$LIMNER_TIMEOUT must be a number of seconds greater than 0, not '-1'" in proc.stdout
    proc = run_limner(buffer(fault_server.url("ok")), "--timeout", "nan")
    assert_clean(proc, code=2)
    assert "--timeout: needs a number of seconds greater than 0, not 'nan'" in proc.stderr
    assert len(fault_server.requests) == sent  # nothing went out


def test_buffer_errors_exit_2_with_the_line(run_limner):
    proc = run_limner("!:x 1\n!api http://h/{model}/v1\n!user\nhi\n")
    assert_clean(proc, code=2)
    assert error_text(proc.stdout).startswith("line 2: !api: the URL needs {model}")
    proc = run_limner("!api http://h/{model/v1\n!user\nhi\n")
    assert_clean(proc, code=2)
    assert "line 1: !api: a '{' without its '}'" in proc.stdout


def test_a_previous_error_block_is_skipped_on_rerun(run_limner, fault_server):
    first = run_limner(buffer(fault_server.url("status:500")))
    assert_clean(first)
    again = buffer(fault_server.url("ok")) + first.stdout + "\n!user\nTry again.\n"
    proc = run_limner(again)
    assert_clean(proc, code=0)
    sent = fault_server.requests[-1][2].decode()
    assert "Try again." in sent and "HTTP 500" not in sent


def _streaming(fault_server, limner_env):
    """A limner child reading a slow stream, once its text has started to arrive."""
    proc = subprocess.Popen(limner_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=limner_env)
    proc.stdin.write(buffer(fault_server.url("slow:100")).encode())
    proc.stdin.close()
    out, deadline = b"", time.monotonic() + 30
    while b" w1" not in out and time.monotonic() < deadline:
        out += os.read(proc.stdout.fileno(), 4096)  # the text streams as it arrives
    return proc, out


@pytest.mark.parametrize("sig,code,how", [(signal.SIGINT, 130, "Ctrl-C"),
                                          (signal.SIGTERM, 143, "SIGTERM")])
def test_cancel_keeps_partial_text(fault_server, limner_env, sig, code, how):
    proc, out = _streaming(fault_server, limner_env)
    proc.send_signal(sig)
    out += proc.stdout.read()
    err = proc.stderr.read().decode()
    assert proc.wait(10) == code
    text = out.decode()
    assert text.startswith("\n\n!assistant\n\n w0 w1")
    assert f"!error\n\ncancelled by {how}: the text above is what arrived" in text
    assert " w99" not in text  # it stopped, it did not run to the end
    assert "Traceback" not in text + err


def test_sigterm_after_reader_left_still_exits_143(fault_server, limner_env):
    # An editor's "stop" may close our stdout before its SIGTERM lands: the
    # undeliverable cancel note must not turn the exit into death by SIGPIPE.
    proc, out = _streaming(fault_server, limner_env)
    proc.stdout.close()  # the reader is gone
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 143
    assert "Traceback" not in proc.stderr.read().decode()


def test_repeated_sigterm_still_exits_143(fault_server, limner_env):
    # Vim's job_stop() signals the process group and then the pid. Under load
    # the second SIGTERM lands while limner is already cleaning up or shutting
    # down, and used to find the default action: death by the signal, which
    # Vim reports as exit -1 (test_vim_stop, once in a while).
    proc, out = _streaming(fault_server, limner_env)
    while proc.poll() is None:  # keep signalling until it is gone: every phase gets one
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.001)
    assert proc.returncode == 143
    out += proc.stdout.read()
    assert "cancelled by SIGTERM" in out.decode()
    assert "Traceback" not in proc.stderr.read().decode()


@pytest.mark.server
def test_real_server_context_overflow(run_limner, llama_server):
    # llama_cpp.server answers a streamed over-long prompt with 200 and an
    # empty event stream (its log has the ValueError); the user must hear why.
    proc = run_limner(buffer(llama_server).replace("Say something.", "hello " * 2500))
    assert_clean(proc)
    err = error_text(proc.stdout)
    assert "accepted the request but sent no reply" in err
    assert "longer than the model's context" in err
