"""Profiles: Illume's built-ins by name, limner's additions, files, the default, recursion."""
from __future__ import annotations

import pytest

from limner import buffer, profiles
from limner.errors import BufferError
from limner.request import CHAT, FIM

ILLUME_NAMES = {
    "llama.cpp", "huggingface.co", "gpt-oss", "qwen3", "qwen3-think", "qwen3-instruct",
    "gemma-3", "gemini", "claude", "claude-extended", "openai", "fim:deepseek", "fim:qwen",
    "fim:granite", "fim:granite4", "fim:mistral", "fim:codellama",
}
LIMNER_NAMES = {"vllm", "sglang", "ollama", "llama.cpp-native", "fim:starcoder",
                "fim:codestral", "fim:codegemma", "fim:qwen2.5-coder"}


@pytest.fixture
def parse(tmp_path):
    def run(text, env=None, **kw):
        kw.setdefault("cwd", str(tmp_path))
        kw.setdefault("config_dir", str(tmp_path / "config"))
        return buffer.parse(text, env=env or {}, **kw)

    return run


def test_every_illume_builtin_and_addition_exists():
    assert ILLUME_NAMES | LIMNER_NAMES <= set(profiles.BUILTIN)
    assert profiles.DEFAULT in profiles.BUILTIN


def test_every_builtin_parses_on_its_own(parse):
    for name in profiles.BUILTIN:
        req = parse(f"!profile {name}\ncode\n!infill\n" if name.startswith("fim:") else f"!profile {name}\n!user\nq\n")
        assert req.profiles[0] == name  # req.profile is the last loaded (a nested one)
        assert req.profile == req.profiles[-1]


def test_openai_profile(parse):
    req = parse("!profile openai\n!user\nq\n", {"OPENAI_API_KEY": "sk-1"})
    assert req.api == "https://api.openai.com/v1"
    assert req.headers["authorization"] == "Bearer sk-1"
    # Illume's openai profile deletes max_tokens: newer models refuse it.
    assert req.data == {"model": "gpt-5-nano", "max_completion_tokens": 10000}


def test_huggingface_profile_keeps_the_key_for_request_time(parse):
    req = parse("!profile huggingface.co\n!:model a/b\n!user\nq\n", {"HF_TOKEN": "hf"})
    assert req.api == "https://api-inference.huggingface.co/models/{model}/v1"
    assert req.data["model"] == "a/b"  # the buffer's key wins over the profile's
    assert req.headers == {"content-type": "application/json", "authorization": "Bearer hf", "x-use-cache": "false"}


def test_claude_profiles_speak_anthropic(parse):
    req = parse("!profile claude\n!user\nq\n", {"ANTHROPIC_API_KEY": "a"})
    assert req.backend == "anthropic"
    assert req.api == '"https://api.anthropic.com/v1/messages"'
    assert req.headers["x-api-key"] == "a" and req.headers["anthropic-version"] == "2023-06-01"
    ext = parse("!profile claude-extended\n!user\nq\n")
    assert ext.backend == "anthropic"
    assert ext.data["model"] == "claude-opus-4-1" and ext.data["max_tokens"] == 20000
    assert ext.data["thinking"] == {"type": "enabled", "budget_tokens": 10000}
    assert ext.exclude == "think"
    assert ext.profiles == ["claude-extended", "claude"] and ext.profile == "claude"


def test_qwen3_profile_adds_its_no_think_line_where_it_is_loaded(parse):
    top = parse("!profile qwen3\nsys\n!user\nq\n")
    assert top.messages[0].content == "/no_think\nsys"
    # As Illume's default profile it loads after the buffer: the line lands last.
    late = parse("!user\nq\n", {"LIMNER_PROFILE": "qwen3"})
    assert late.messages[-1].content == "q\n/no_think"


@pytest.mark.parametrize("name, url", [
    ("vllm", "http://localhost:8000/v1"),
    ("sglang", "http://localhost:30000/v1"),
    ("ollama", "http://localhost:11434/v1"),
])
def test_openai_compatible_local_servers(parse, name, url):
    req = parse(f"!profile {name}\n!user\nq\n")
    assert (req.api, req.backend, req.mode) == (url, None, CHAT)


def test_llama_cpp_native(parse):
    req = parse("!profile llama.cpp-native\n!completion\nOnce")
    assert req.backend == "llamacpp" and req.api == "http://localhost:8080/"
    assert req.data["cache_prompt"] is True


@pytest.mark.parametrize("name, prompt", [
    ("fim:deepseek", "<｜begin▁of▁sentence｜><｜fim▁begin｜>a\n<｜fim▁hole｜>\nb<｜fim▁end｜>"),
    ("fim:qwen", "<|fim_prefix|>a\n<|fim_suffix|>\nb<|fim_middle|>"),
    ("fim:qwen2.5-coder", "<|fim_prefix|>a\n<|fim_suffix|>\nb<|fim_middle|>"),
    ("fim:granite", "<fim_prefix>a\n<fim_suffix>\nb<fim_middle>"),
    ("fim:granite4", "<|fim_prefix|>a\n<|fim_suffix|>\nb<|fim_middle|>"),
    ("fim:starcoder", "<fim_prefix>a\n<fim_suffix>\nb<fim_middle>"),
    ("fim:codegemma", "<|fim_prefix|>a\n<|fim_suffix|>\nb<|fim_middle|>"),
    ("fim:mistral", "[SUFFIX]\nb[PREFIX]a\n"),
    ("fim:codestral", "[SUFFIX]\nb[PREFIX]a\n"),
    ("fim:codellama", " <PRE> a\n <SUF>\nb <MID>"),
])
def test_fim_templates(parse, name, prompt):
    req = parse(f"!profile {name}\na\n!infill\nb\n")
    assert req.mode == FIM and req.prompt == prompt


def test_profile_from_a_path_relative_to_cwd(parse, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "my.profile").write_text("!api http://m:9/\n!:model m\nfrom profile\n!end\nnot read\n")
    req = parse("!profile p/my.profile\n!user\nq\n")
    assert req.api == "http://m:9/" and req.data["model"] == "m"
    assert [m.content for m in req.messages] == ["from profile", "q"]
    assert req.profile == "p/my.profile"


def test_profile_from_the_config_dir(tmp_path):
    cfg = tmp_path / "xdg" / "limner"
    cfg.mkdir(parents=True)
    (cfg / "work.profile").write_text("!profile openai\n!:model gpt-x\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert profiles.config_dir(env) == str(cfg)
    assert profiles.config_dir({"HOME": "/h"}) == "/h/.config/limner"
    req = buffer.parse("!profile work\n!user\nq\n", env=env, cwd=str(tmp_path))
    assert req.data["model"] == "gpt-x" and req.profiles == ["work", "openai"]


def test_adding_a_profile_is_one_table_entry(parse, monkeypatch):
    monkeypatch.setitem(profiles.BUILTIN, "local", ("!backend embedded", "!:model smollm2"))
    req = parse("!profile local\n!user\nq\n")
    assert req.backend == "embedded" and req.data["model"] == "smollm2"


def test_unknown_profile_names_builtins_and_the_config_dir(parse, tmp_path):
    with pytest.raises(BufferError) as e:
        parse("!user\nq\n!profile nosuch\n")
    assert e.value.line == 3
    assert "nosuch" in e.value.message and str(tmp_path / "config" / "nosuch.profile") in e.value.message
    assert "llama.cpp" in e.value.hint and "fim:deepseek" in e.value.hint
    with pytest.raises(BufferError, match="cannot read profile file ./nope"):
        parse("!profile ./nope\n!user\nq\n")


def test_errors_inside_a_profile_point_at_the_loading_line(parse, tmp_path):
    (tmp_path / "bad.profile").write_text("!:a 1\n!context missing.txt\n")
    with pytest.raises(BufferError) as e:
        parse("!user\nq\n!profile ./bad.profile\n")
    assert e.value.line == 3
    assert "profile './bad.profile' line 2" in e.value.message


def test_profile_recursion_names_the_chain(parse, tmp_path, monkeypatch):
    monkeypatch.setitem(profiles.BUILTIN, "loop", ("!profile loop",))
    with pytest.raises(BufferError, match="profile recursion: loop -> loop") as e:
        parse("!user\nq\n!profile loop\n")
    assert e.value.line == 3
    (tmp_path / "a.profile").write_text("!profile ./b.profile\n")
    (tmp_path / "b.profile").write_text("!profile ./a.profile\n")
    with pytest.raises(BufferError, match="profile recursion: ./a.profile -> ./b.profile -> ./a.profile"):
        parse("!profile ./a.profile\n!user\nq\n")


def test_profiles_nested_too_deep(parse, tmp_path):
    for i in range(20):
        (tmp_path / f"p{i}.profile").write_text(f"!profile ./p{i + 1}.profile\n")
    (tmp_path / "p20.profile").write_text("!:x 1\n")
    with pytest.raises(BufferError, match=f"nested deeper than {profiles.MAX_DEPTH}"):
        parse("!profile ./p0.profile\n!user\nq\n")


def test_default_profile_order_flag_then_env_then_builtin_default(parse):
    assert parse("!user\nq\n").profile == profiles.DEFAULT
    assert parse("!user\nq\n", {"LIMNER_PROFILE": "gemma-3"}).profile == "gemma-3"
    assert parse("!user\nq\n", {"LIMNER_PROFILE": "gemma-3"}, default_profile="openai").profile == "openai"


def test_default_profile_loads_after_the_buffer_and_only_without_one(parse):
    req = parse("!api http://mine/\n!:stop []\n!user\nq\n", {"LIMNER_PROFILE": "llama.cpp"})
    assert req.api == "http://mine/" and req.data["stop"] == []  # buffer wins
    assert req.data["cache_prompt"] is True  # but the default still loaded
    req = parse("!profile gemma-3\n!user\nq\n", {"LIMNER_PROFILE": "llama.cpp"})
    assert req.profiles == ["gemma-3"] and "cache_prompt" not in req.data


def test_bad_default_profile_says_where_it_came_from(parse):
    with pytest.raises(BufferError, match=r"default profile 'nope' \(\$LIMNER_PROFILE\)") as e:
        parse("!user\nq\n", {"LIMNER_PROFILE": "nope"})
    assert e.value.line == 0
    with pytest.raises(BufferError, match=r"default profile 'nope' \(--profile\)"):
        parse("!user\nq\n", default_profile="nope")
