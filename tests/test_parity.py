"""Parity with Illume: the same buffer must produce the same HTTP request.

Each expected URL, header set and body below was written by hand from
illume.go's semantics (Go's json.Encoder: sorted keys, compact, no HTML
escaping, integral floats without ".0", U+2028 escaped, a final newline).
Two layers are checked: what buffer.parse returns, and the exact bytes
the backend would send (backends.open(req).describe()).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from limner import backends, buffer
from limner.backends.base import encode_go_json

JSON = {"content-type": "application/json"}
LLAMA = 'http://localhost:8080/'
MODE_KEYS = ("messages", "prompt", "input_prefix", "input_suffix", "stream")


@dataclass
class Case:
    name: str
    buffer: str
    url: str
    body: str  # exactly as Illume writes it, minus the final newline
    headers: dict = field(default_factory=lambda: dict(JSON))
    env: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


CASES = [
    Case("chat on the default profile",
         "You are terse.\n!user\nWhat is 2+2?\n!assistant\n4\n!user\nAnd 3+3?\n",
         LLAMA + "chat/completions",
         '{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"system","content":"You are terse."},'
         '{"role":"user","content":"What is 2+2?"},{"role":"assistant","content":"4"},'
         '{"role":"user","content":"And 3+3?"}],"stop":["<|im_end|>"],"stream":true}'),
    Case("completion",
         "!completion\nThe meaning of life is\n",
         LLAMA + "completions",
         '{"cache_prompt":true,"max_tokens":2000,"prompt":"The meaning of life is","stop":["<|im_end|>"],"stream":true}'),
    Case("llama.cpp /infill",
         "def add(a, b):\n!infill\n\nprint(add(1, 2))\n",
         LLAMA + "infill",
         '{"cache_prompt":true,"input_prefix":"def add(a, b):\\n","input_suffix":"\\nprint(add(1, 2))",'
         '"max_tokens":2000,"prompt":"","stop":["<|im_end|>"],"stream":true}'),
    Case("fim:qwen on llama.cpp",
         "!profile llama.cpp\n!profile fim:qwen\ndef add(a, b):\n!infill\n",
         LLAMA + "completions",
         '{"cache_prompt":true,"max_tokens":2000,'
         '"prompt":"<|fim_prefix|>def add(a, b):\\n<|fim_suffix|><|fim_middle|>","stop":["<|im_end|>"],"stream":true}'),
    Case("fim:deepseek, README's remote example",
         "!profile llama.cpp\n!profile fim:deepseek\n!api http://myllama:8080/\nint main(void)\n{\n!infill\n}\n",
         "http://myllama:8080/completions",
         '{"cache_prompt":true,"max_tokens":2000,"prompt":"<｜begin▁of▁sentence｜><｜fim▁begin｜>int main(void)\\n{\\n'
         '<｜fim▁hole｜>\\n}<｜fim▁end｜>","stop":["<|im_end|>"],"stream":true}'),
    Case("fim:codellama keeps its leading space and stop",
         "!profile fim:codellama\n!api http://h:1/\nx = \n!infill\ny\n",
         "http://h:1/completions",
         '{"max_tokens":2000,"prompt":" <PRE> x = \\n <SUF>\\ny <MID>","stop":["<EOT>"],"stream":true}'),
    Case("fim:mistral is suffix-first",
         "!profile fim:mistral\n!api http://h:1/v1\na\n!infill\nb\n",
         "http://h:1/v1/completions",
         '{"max_tokens":2000,"prompt":"[SUFFIX]\\nb[PREFIX]a\\n","stream":true}'),
    Case("openai",
         "!profile openai\nBe brief.\n!user\nHi\n",
         "https://api.openai.com/v1/chat/completions",
         '{"max_completion_tokens":10000,"messages":[{"role":"system","content":"Be brief."},'
         '{"role":"user","content":"Hi"}],"model":"gpt-5-nano","stream":true}',
         {**JSON, "authorization": "Bearer sk-test"}, {"OPENAI_API_KEY": "sk-test"}),
    Case("huggingface.co fills {model} in the URL",
         "!profile huggingface.co\n!:model mistralai/Mistral-Nemo-Instruct-2407\n!user\nHi\n",
         "https://api-inference.huggingface.co/models/mistralai/Mistral-Nemo-Instruct-2407/v1/chat/completions",
         '{"max_tokens":2000,"messages":[{"role":"user","content":"Hi"}],'
         '"model":"mistralai/Mistral-Nemo-Instruct-2407","stream":true}',
         {**JSON, "authorization": "Bearer hf_x", "x-use-cache": "false"}, {"HF_TOKEN": "hf_x"}),
    Case("gemini",
         "!profile gemini\n!user\nHi\n",
         "https://generativelanguage.googleapis.com/v1beta/chat/completions",
         '{"max_tokens":10000,"messages":[{"role":"user","content":"Hi"}],"model":"gemini-2.5-pro","stream":true}',
         {**JSON, "authorization": "Bearer g"}, {"GEMINI_API_KEY": "g"}),
    Case("claude: quoted URL used as written",
         "!profile claude\n!user\nHi\n",
         "https://api.anthropic.com/v1/messages",
         '{"max_tokens":10000,"messages":[{"role":"user","content":"Hi"}],"model":"claude-sonnet-4-5","stream":true}',
         {**JSON, "anthropic-version": "2023-06-01", "x-api-key": "a"}, {"ANTHROPIC_API_KEY": "a"}),
    Case("claude-extended drops <think> sections",
         "!profile claude-extended\n!user\nQ\n!assistant\n<think>\nhidden\n</think>\n\nA\n!user\nQ2\n",
         "https://api.anthropic.com/v1/messages",
         '{"max_tokens":20000,"messages":[{"role":"user","content":"Q"},{"role":"assistant","content":"A"},'
         '{"role":"user","content":"Q2"}],"model":"claude-opus-4-1","stream":true,'
         '"thinking":{"budget_tokens":10000,"type":"enabled"}}',
         {**JSON, "anthropic-version": "2023-06-01", "x-api-key": ""}),
    Case("default profile from the environment loads after the buffer",
         "!api http://h:1/v1\n!user\nHi\n",
         "http://h:1/v1/chat/completions",
         '{"max_tokens":2000,"messages":[{"role":"user","content":"Hi\\n/no_think"}],"min_p":0,'
         '"stream":true,"temperature":0.7,"top_k":20,"top_p":0.8}',
         env={"LIMNER_PROFILE": "qwen3"}),
    Case("gemma-3 numbers",
         "!profile llama.cpp\n!profile gemma-3\n!user\nHi\n",
         LLAMA + "chat/completions",
         '{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"user","content":"Hi"}],"min_p":0.01,'
         '"repeat_penalty":1,"stop":["<|im_end|>"],"stream":true,"temperature":1,"top_k":64,"top_p":0.95}'),
    Case("user keys win, Go numbers, raw HTML, $VAR headers",
         "!:temperature 0.2\n!:seed 12345678901234567890\n!:tiny 0.0000001\n!:html <b>&amp;</b>\n"
         "!>x-trace ${TRACE_ID}-$TRACE_ID\n!profile gpt-oss\n!api http://h:1/\n!user\nHi\n",
         "http://h:1/chat/completions",
         '{"html":"<b>&amp;</b>","max_tokens":16384,"messages":[{"role":"user","content":"Hi"}],'
         '"seed":12345678901234567000,"stream":true,"temperature":0.2,"tiny":1e-7,"top_k":0,"top_p":1}',
         {**JSON, "x-trace": "t1-t1"}, {"TRACE_ID": "t1"}),
    Case("unicode, U+2028 and escapes",
         '!user\nnaïve ☃ \u2028 tab\tquote" back\\ bell\x07\n',
         LLAMA + "chat/completions",
         r'{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"user","content":"naïve ☃ \u2028 tab\tquote\" back\\ bell\u0007"}],'
         r'"stop":["<|im_end|>"],"stream":true}'),
    Case("!context, !note and !! escape",
         "!context src .py\n!note ignore me\n!user\n!!important: review\n",
         LLAMA + "chat/completions",
         '{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"system","content":"**`src/a.py`**\\n```\\nprint(1)\\n```"},'
         '{"role":"user","content":"!important: review"}],"stop":["<|im_end|>"],"stream":true}',
         files={"src/a.py": "print(1)\n"}),
    Case("quoted URL with a {key}",
         '!api "http://h:1/{model}/x"\n!:model m1\n!user\nHi\n',
         "http://h:1/m1/x",
         '{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"user","content":"Hi"}],'
         '"model":"m1","stop":["<|im_end|>"],"stream":true}'),
    Case("begin, end and exclude together",
         "header junk\n!begin\n!exclude think\nsys\n!user\nQ\n<think>\nno\n</think>\n!end\n!user\nignored\n",
         LLAMA + "chat/completions",
         '{"cache_prompt":true,"max_tokens":2000,"messages":[{"role":"system","content":"sys"},'
         '{"role":"user","content":"Q"}],"stop":["<|im_end|>"],"stream":true}'),
]


def _parse(case: Case, tmp_path):
    for name, text in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # Illume's default profile is llama.cpp; limner's may differ, so say it.
    default = None if "LIMNER_PROFILE" in case.env else "llama.cpp"
    return buffer.parse(case.buffer, env=dict(case.env), cwd=str(tmp_path),
                        config_dir=str(tmp_path / "cfg"), default_profile=default)


def _same_numbers(a, b):
    """Go has one number type: 1 and 1.0 are the same value."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_numbers, a, b))
    return a == b


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_parse_matches_illume(case, tmp_path):
    req = _parse(case, tmp_path)
    body = json.loads(case.body)
    data = {k: v for k, v in body.items() if k not in MODE_KEYS}
    assert _same_numbers(req.data, data)
    assert req.headers == case.headers
    if "messages" in body:
        assert [{"role": m.role, "content": m.content} for m in req.messages] == body["messages"]
    if "input_prefix" in body:
        assert (req.prefix, req.suffix) == (body["input_prefix"], body["input_suffix"])
    elif "prompt" in body:
        assert req.prompt == body["prompt"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_http_call_matches_illume_byte_for_byte(case, tmp_path):
    call = backends.open(_parse(case, tmp_path)).describe()
    assert call.url == case.url
    assert call.headers == case.headers
    assert encode_go_json(call.body).decode() == case.body + "\n"


def test_debug_output_of_the_real_command_matches_illume(tmp_path):
    case = CASES[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMNER_", "XDG_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-m", "limner.cli", "--no-log", "--profile", "llama.cpp"], input=("!debug\n" + case.buffer).encode(),
                       capture_output=True, env=env, cwd=tmp_path, timeout=30)
    assert p.returncode == 0, p.stdout
    assert p.stdout.decode() == f"\n\nPOST {case.url} HTTP/1.1\ncontent-type: application/json\n\n{case.body}\n\n"
