"""`limner < buffer` end to end: a real llama.cpp server, and servers that stream oddly."""
from __future__ import annotations

import json
import re

import httpx
import pytest

from limner.backends.base import encode_go_json

NOTE = re.compile(r"\n\n!note (.*)\n$")


def chat_buffer(api: str, *lines: str, question="Name a colour.") -> str:
    return "".join(f"{x}\n" for x in (f"!api {api}", *lines, "!user", question))


def plain_completion(url: str) -> dict:
    """The buffer's request, not streamed, straight to the server."""
    return httpx.post(url + "/completions", timeout=120, json={
        "max_tokens": 4, "temperature": 0, "prompt": "One, two, three,"}).json()


@pytest.mark.server
def test_chat_against_real_server(run_limner, llama_server):
    proc = run_limner(chat_buffer(llama_server, "!:max_tokens 8", "!:temperature 0", "!stats"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("\n\n!assistant\n\n")
    reply, note = proc.stdout[len("\n\n!assistant\n\n"):].split("\n\n!note ", 1)
    assert reply.strip()
    # Stopped by length at max_tokens: exactly 8 tokens came, one per chunk
    # (llama_cpp.server sends no usage when streaming, so the count is chunks).
    assert note.startswith("reply 8 tokens (estimated: chunks received) at ")
    assert note.endswith("stop: length\n") and "first token" in note


@pytest.mark.server
def test_completion_against_real_server_matches_its_own_answer(run_limner, llama_server):
    # llama_cpp.server's first answer to a prompt can differ from later ones
    # (its prompt cache changes the numerics), so warm it up first.
    plain_completion(llama_server)
    buf = f"!api {llama_server}\n!:max_tokens 4\n!:temperature 0\n!completion\nOne, two, three,"
    proc = run_limner(buf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = plain_completion(llama_server)
    assert proc.stdout == plain["choices"][0]["text"]  # raw text: no header, no note


@pytest.mark.server
def test_debug_prints_the_exact_request_and_sends_nothing(run_limner, llama_server):
    proc = run_limner(chat_buffer(llama_server, "!profile llama.cpp", "!debug", "!:max_tokens 8",
                                  "!>authorization Bearer sk-secret-123456789"))
    assert proc.returncode == 0
    head, body = proc.stdout.split("\n\n{", 1)
    assert head.split("\n") == [
        "", "", f"POST {llama_server}/chat/completions HTTP/1.1",
        "content-type: application/json", "authorization: Bearer sk-s****"]
    body = "{" + body
    assert body.endswith("\n\n") and "sk-secret" not in body
    # The llama.cpp profile adds cache_prompt and stop; the buffer's !api wins.
    expected = {"cache_prompt": True, "max_tokens": 8, "stop": ["<|im_end|>"], "stream": True,
                "messages": [{"role": "user", "content": "Name a colour."}]}
    assert json.loads(body) == expected
    # Illume's bytes: sorted keys, messages as {role, content}, trailing newline.
    assert body[:-1].encode() == encode_go_json(expected).replace(
        b'{"content":"Name a colour.","role":"user"}', b'{"role":"user","content":"Name a colour."}')


def test_stats_use_the_servers_counts_and_timings(run_limner, fault_server):
    proc = run_limner(chat_buffer(fault_server.url("ok"), "!stats"))
    assert proc.returncode == 0
    assert proc.stdout.startswith("\n\n!assistant\n\nHello, this is the fault server.\n\n!note ")
    note = NOTE.search(proc.stdout).group(1)
    assert note.startswith("prompt 17 tokens (5 cached) at 500 tok/s, reply 8 tokens at 100 tok/s")
    assert note.endswith("stop: stop")


def test_server_that_does_not_stream(run_limner, fault_server):
    proc = run_limner(chat_buffer(fault_server.url("nostream"), "!prepend Answer: "))
    assert proc.returncode == 0
    assert proc.stdout == "\n\n!assistant\n\nAnswer: Hello, this is the fault server."
    proc = run_limner(f"!api {fault_server.url('nostream')}\n!completion\nSay")
    assert proc.returncode == 0 and proc.stdout == "Hello, this is the fault server."


def test_the_reply_reads_back_as_the_next_turn(run_limner, fault_server):
    first = chat_buffer(fault_server.url("ok"), "!stats")
    proc = run_limner(first)
    assert proc.returncode == 0
    proc = run_limner(first + proc.stdout + "\n!user\nAnd then?\n")
    assert proc.returncode == 0
    sent = json.loads(fault_server.requests[-1][2])
    assert sent["messages"] == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Hello, this is the fault server."},
        {"role": "user", "content": "And then?"}]
