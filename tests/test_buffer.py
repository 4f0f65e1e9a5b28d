"""buffer.parse: every directive, Illume's message building, limner's deliberate differences.

Pure tests: no server, no model. Files for !context/!reddit/!github live in tmp_path.
"""
from __future__ import annotations

import json

import pytest

from limner import buffer
from limner.errors import BufferError
from limner.gotext import go_expand_env, go_fields, go_json, go_trim_space
from limner.request import CHAT, COMPLETION, FIM, INFILL, INVALID_URL


@pytest.fixture
def parse(tmp_path):
    """parse() isolated from the host: empty env, cwd and config dir under tmp_path.

    The default profile is pinned to Illume's (llama.cpp): these tests are
    about Illume's semantics, whatever limner's own default is."""

    def run(text, env=None, **kw):
        kw.setdefault("default_profile", "llama.cpp")
        kw.setdefault("cwd", str(tmp_path))
        kw.setdefault("config_dir", str(tmp_path / "config"))
        return buffer.parse(text, env=env or {}, **kw)

    return run


def write(tmp_path, name, content):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def roles(req):
    return [(m.role, m.content) for m in req.messages]


# -- message building ----------------------------------------------------------


def test_text_before_first_role_is_the_system_prompt(parse):
    req = parse("Be terse.\n!user\nhi\n")
    assert req.mode == CHAT
    assert roles(req) == [("system", "Be terse."), ("user", "hi")]


def test_user_and_assistant_alternate_and_are_trimmed_of_newlines_only(parse):
    req = parse("!user\n\n  q1 \n\n!assistant\na1\r\n\n!user\n\tq2\n")
    assert roles(req) == [("user", "  q1 "), ("assistant", "a1"), ("user", "\tq2")]


def test_blank_messages_are_dropped(parse):
    req = parse("\n\n!user\n\n!assistant\nA\n!user\nB\n")
    assert roles(req) == [("assistant", "A"), ("user", "B")]


def test_message_lines_point_at_their_first_text_line(parse):
    req = parse("sys\n!user\n\nquestion\n")
    assert [m.line for m in req.messages] == [1, 4]


def test_defaults_match_illume_and_body_fields_are_left_to_the_backend(parse):
    req = parse("!user\nhi\n")
    # Illume's defaults plus the llama.cpp default profile.
    assert req.data == {"max_tokens": 2000, "cache_prompt": True, "stop": ["<|im_end|>"]}
    assert req.headers == {"content-type": "application/json"}
    for key in ("stream", "messages", "prompt"):
        assert key not in req.data


def test_raw_text_is_kept(parse):
    text = "!note x\n!user\nhi"
    assert parse(text).text == text


def test_last_line_without_newline_counts(parse):
    assert roles(parse("!user\nhi")) == [("user", "hi")]


# -- !completion ----------------------------------------------------------------


def test_completion_prompt_is_the_first_message(parse):
    req = parse("!completion\nThe meaning of life is\n!user\nignored\n")
    assert req.mode == COMPLETION
    assert req.prompt == "The meaning of life is"
    assert roles(req) == [("system", "The meaning of life is")]


def test_empty_completion_is_a_clear_error(parse):
    with pytest.raises(BufferError, match="nothing to send"):
        parse("!completion\n\n")


# -- !infill --------------------------------------------------------------------


def test_infill_without_template_is_llama_cpp_infill(parse):
    req = parse("def f():\n!infill\n    return 1\n")
    assert req.mode == INFILL
    assert req.prefix == "def f():\n"
    assert req.suffix == "\n    return 1"
    assert req.infill_line == 2
    assert req.prompt is None


def test_infill_without_text_after_has_empty_suffix(parse):
    req = parse("x = 1\n!infill\n")
    assert (req.prefix, req.suffix) == ("x = 1\n", "")


def test_infill_with_template_before_the_hole_is_fim(parse):
    req = parse("!infill <P>{prefix}<S>{suffix}<M>\na\n!infill\nb\n")
    assert req.mode == FIM
    assert req.fim_template == "<P>{prefix}<S>{suffix}<M>"
    assert req.prompt == "<P>a\n<S>\nb<M>"
    assert (req.prefix, req.suffix) == ("a\n", "\nb")


def test_infill_template_keeps_its_leading_space(parse):
    req = parse("!infill  <PRE> {prefix}\na\n!infill\n")
    assert req.prompt == " <PRE> a\n"


def test_template_after_the_hole_does_not_turn_infill_into_fim(parse):
    # Illume decides the mode at the hole.
    req = parse("a\n!infill\nb\n!infill <{prefix}>\n")
    assert req.mode == INFILL


def test_infill_with_nothing_before_the_hole_is_an_error(parse):
    with pytest.raises(BufferError, match="nothing before !infill") as e:
        parse("\n!infill\nafter\n")
    assert e.value.line == 2


def test_fim_template_with_an_unknown_key_is_an_error_at_its_line(parse):
    with pytest.raises(BufferError, match="missing key: middle") as e:
        parse("\n!infill {prefix}{middle}\na\n!infill\n")
    assert e.value.line == 2


def test_second_hole_ends_the_suffix(parse):
    req = parse("a\n!infill\nb\n!infill\nc\n")
    assert (req.prefix, req.suffix) == ("a\n", "\nb")


# -- !api -------------------------------------------------------------------------


def test_api_in_the_buffer_wins_over_a_later_profile(parse):
    req = parse("!api http://x:1/v1\n!profile openai\n!user\nq\n")
    assert (req.api, req.api_line) == ("http://x:1/v1", 1)


def test_api_in_the_buffer_wins_over_an_earlier_profile(parse):
    req = parse("!profile openai\n!api http://x:1/v1\n!user\nq\n")
    assert (req.api, req.api_line) == ("http://x:1/v1", 2)


def test_quoted_api_and_keys_are_stored_as_written(parse):
    req = parse('!api "http://h/{model}/raw"\n!user\nq\n')
    assert req.api == '"http://h/{model}/raw"'


def test_profile_api_line_is_the_profile_line(parse):
    req = parse("!user\nq\n!profile openai\n")
    assert (req.api, req.api_line) == ("https://api.openai.com/v1", 3)


def test_default_profile_api_has_no_line(parse):
    req = parse("!user\nq\n")
    assert (req.api, req.api_line) == ("http://localhost:8080/", 0)


def test_empty_api_is_an_error(parse):
    with pytest.raises(BufferError, match="!api needs a URL") as e:
        parse("!user\n!api\n")
    assert e.value.line == 2


# -- !:KEY VALUE ------------------------------------------------------------------


def test_data_values_are_json_when_they_parse_else_strings(parse):
    req = parse(
        '!:a 0.5\n!:b [1, "x", null, true]\n!:c {"k": {"z": 1}}\n'
        "!:d mistralai/Mistral-Nemo\n!:e   spaced  out  \n!:f \"quoted [1]\"\n!user\nq\n"
    )
    assert req.data["a"] == 0.5
    assert req.data["b"] == [1, "x", None, True]
    assert req.data["c"] == {"k": {"z": 1}}
    assert req.data["d"] == "mistralai/Mistral-Nemo"
    assert req.data["e"] == "spaced  out"
    assert req.data["f"] == "quoted [1]"


def test_empty_value_deletes_the_key(parse):
    req = parse("!:max_tokens\n!user\nq\n")
    assert "max_tokens" not in req.data
    assert "max_tokens" in req.user_set


def test_user_set_keys_win_over_profiles_before_and_after(parse):
    req = parse("!:temperature 0.1\n!profile gemma-3\n!:top_k 3\n!user\nq\n")
    assert req.data["temperature"] == 0.1
    assert req.data["top_k"] == 3
    assert req.data["top_p"] == 0.95
    req = parse("!profile gemma-3\n!:temperature 0.1\n!user\nq\n")
    assert req.data["temperature"] == 0.1
    assert req.user_set == {"temperature"}


def test_user_deleted_key_stays_deleted_by_the_default_profile(parse):
    req = parse("!:cache_prompt\n!user\nq\n")
    assert "cache_prompt" not in req.data
    assert req.data["stop"] == ["<|im_end|>"]


@pytest.mark.parametrize(
    "text, ok, value",
    [
        ("1", True, 1),
        ("1.0", True, 1.0),
        ("-0", True, -0.0),
        ("12345678901234567890", True, 12345678901234567890.0),  # Go: float64
        ("1E400", False, None),  # out of float64 range: Go refuses
        ("NaN", False, None),
        ("Infinity", False, None),
        ('"\\ud800x"', True, "\ufffdx"),  # unpaired surrogate -> U+FFFD
        ('"\\ud83d\\ude00"', True, "\U0001F600"),
        ("[1,", False, None),
        ("01", False, None),
        (" true ", True, True),
    ],
)
def test_go_json_decodes_like_go(text, ok, value):
    got_ok, got = go_json(text)
    assert got_ok is ok
    if ok:
        assert got == value and type(got) is type(value)
    if text == "-0":
        assert str(got) == "-0.0"


def test_go_trim_space_and_fields_use_go_whitespace():
    assert go_trim_space("\u00a0\u2003 x \t\u3000") == "x"
    assert go_trim_space("\x1cx\x1f") == "\x1cx\x1f"  # Python would strip these
    assert go_fields(" a\u00a0b\t\tc ") == ["a", "b", "c"]


# -- !>HEADER VALUE -----------------------------------------------------------------


def test_headers_set_delete_and_expand(parse):
    env = {"TOKEN": "t0k"}
    req = parse("!>authorization Bearer $TOKEN\n!>x-a ${TOKEN}!\n!>content-type\n!>x-b\n!user\nq\n", env)
    assert req.headers == {"authorization": "Bearer t0k", "x-a": "t0k!"}


@pytest.mark.parametrize(
    "text, want",
    [
        ("$A", "aa"),
        ("${A}x", "aax"),
        ("$Ax", ""),  # the name runs on: $Ax is unset
        ("$A-b", "aa-b"),
        ("x$", "x$"),  # a final $ stays
        ("$ y", "$ y"),
        ("${}", ""),  # bad syntax is eaten
        ("${A", "A"),  # "${" eaten, the rest kept
        ("${1}", "one"),
        ("$1b", "oneb"),  # special vars are one character
        ("$$", "pid"),
        ("${A B}", "sp"),  # braces take anything up to "}"
        ("$é", "$é"),
    ],
)
def test_go_expand_env(text, want):
    env = {"A": "aa", "1": "one", "$": "pid", "A B": "sp"}
    assert go_expand_env(text, env) == want


# -- !context -----------------------------------------------------------------------


def test_context_file_is_inlined_in_illumes_format(parse, tmp_path):
    write(tmp_path, "notes.md", "one\n```\ncode\n```\n")
    req = parse("!context notes.md\n!user\nq\n")
    block = "**`notes.md`**\n````\none\n```\ncode\n```\n````\n\n"
    assert roles(req) == [("system", block.rstrip("\n")), ("user", "q")]
    [f] = req.context_files
    assert (f.name, f.text, f.line, f.block) == ("notes.md", "one\n```\ncode\n```\n", 1, block)


def test_context_fence_counts_only_leading_backticks(parse, tmp_path):
    write(tmp_path, "a.txt", "x ````` y\n  ````\n")  # runs not at line start
    req = parse("!context a.txt\n!user\nq\n")
    assert req.context_files[0].block.startswith("**`a.txt`**\n```\n")


def test_context_without_final_newline_puts_the_fence_on_the_last_line(parse, tmp_path):
    write(tmp_path, "a.txt", "tail")
    req = parse("!user\n!context a.txt\nwhat?\n")
    assert req.messages[0].content == "**`a.txt`**\n```\ntail```\n\nwhat?"


def test_context_dir_walk_order_names_and_skips(parse, tmp_path):
    for name, text in {
        "src/b.py": "b\n", "src/a.md": "a\n", "src/b/x.py": "x\n", "src/b.txt": "no\n",
        "src/A.py": "A\n", "src/.git/hook.py": "git\n", "src/CVS/c.py": "cvs\n",
        "src/img.py": b"\x89PNG\0\0", "src/latin.py": b"caf\xe9\n",
    }.items():
        write(tmp_path, name, text)
    req = parse("!context src .py .md\n!user\nq\n")
    # Go's Walk: each directory sorted bytewise, depth first ("b" before "b.py").
    assert [f.name for f in req.context_files] == ["src/A.py", "src/a.md", "src/b/x.py", "src/b.py"]
    assert all(f.line == 1 for f in req.context_files)
    assert req.messages[0].content == "".join(f.block for f in req.context_files).rstrip("\n")


def test_context_dir_with_trailing_slash_drops_its_name(parse, tmp_path):
    write(tmp_path, "src/sub/c.py", "c\n")
    assert [f.name for f in parse("!context src/ .py\n!user\nq\n").context_files] == ["sub/c.py"]
    assert [f.name for f in parse("!context ./src .py\n!user\nq\n").context_files] == ["src/sub/c.py"]


def test_context_missing_path_is_an_error_with_its_line(parse):
    for directive in ("!context nope.txt", "!context nope .py"):
        with pytest.raises(BufferError, match="nope") as e:
            parse(f"!user\nq\n{directive}\n")
        assert e.value.line == 3


@pytest.mark.parametrize("directive", [
    "!context a\x00.py", "!context src\x00 .py", "!reddit t\x00.json", "!github i.json c\x00.json",
    "!profile nope\x00", "!profile ./p\x00.profile", "!context a.py\ud800",
])
def test_a_path_no_system_call_takes_is_an_error_at_its_line(parse, tmp_path, directive):
    # open() raises ValueError for these, which once escaped as an internal error.
    write(tmp_path, "i.json", "{}")
    with pytest.raises(BufferError) as e:
        parse(f"!user\nq\n{directive}\n")
    assert e.value.line == 3 and ("NUL" in e.value.message or "not a valid file name" in e.value.message)
    assert [i.line for i in buffer.check(f"!user\nq\n{directive}\n", cwd=str(tmp_path), env={})] == [3]


def test_check_reports_an_api_url_that_cannot_be_sent_to(tmp_path):
    def lines(text):
        return [(i.line, i.message) for i in buffer.check(text, env={}, cwd=str(tmp_path))]

    assert lines("!api localhost:8080\n!user\nq\n") == [
        (1, "!api: the URL must start with http:// or https://: 'localhost:8080'")]
    assert lines("!user\nq\n!api http://h:99999/v1\n")[0][0] == 3
    assert lines("!profile llama.cpp\n!api http://h:8080/v1\n!user\nq\n") == []
    assert lines("!api embedded://\n!user\nq\n") == []  # the engine has no URL to check
    assert lines("!api http://h/{model}/v1\n!user\nq\n")[0][1].startswith("!api uses {model}")  # once


def test_context_named_file_must_be_utf8(parse, tmp_path):
    write(tmp_path, "bin.dat", b"\xff\xfe")
    with pytest.raises(BufferError, match="not UTF-8"):
        parse("!context bin.dat\n!user\nq\n")


def test_context_directory_without_suffixes_is_an_error(parse, tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(BufferError, match="is a directory"):
        parse("!context d\n!user\nq\n")
    with pytest.raises(BufferError, match="needs a file"):
        parse("!context\n!user\nq\n")


def test_begin_drops_context_files_with_their_text(parse, tmp_path):
    write(tmp_path, "a.txt", "a\n")
    req = parse("!context a.txt\n!begin\n!user\nq\n")
    assert req.context_files == [] and roles(req) == [("user", "q")]


# -- !reddit, !reddit!, !github --------------------------------------------------------

THREAD = [
    {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": {
        "subreddit": "python", "title": "T", "author": "op", "selftext": "body"}}]}},
    {"kind": "Listing", "data": {"children": [
        {"kind": "t1", "data": {"author": "a", "body": "c1\r\nc1b\n", "replies": {"kind": "Listing", "data": {
            "children": [{"kind": "t1", "data": {"author": "b", "body": "r1", "replies": ""}}]}}}},
        {"kind": "more", "data": {"count": 3}},
    ]}},
]


def test_reddit_thread_with_comments(parse, tmp_path):
    write(tmp_path, "t.json", json.dumps(THREAD))
    req = parse("!reddit t.json\nSummarize.\n")
    assert req.messages[0].content == (
        "# Reddit Post\n\nT\nby u/op in r/python\n---\nbody\n---\n"
        "\nu/a:\n> c1\n> c1b\n\n> u/b:\n>> r1\n\nu/:\n---\nSummarize."
    )


def test_reddit_bang_is_the_post_only(parse, tmp_path):
    write(tmp_path, "t.json", json.dumps(THREAD))
    req = parse("!reddit! t.json\n")
    assert req.messages[0].content == "# Reddit Post\n\nT\nby u/op in r/python\n---\nbody\n---"


def test_reddit_bad_file_is_an_error(parse, tmp_path):
    write(tmp_path, "x.json", "{}")
    with pytest.raises(BufferError, match="not a reddit thread") as e:
        parse("q\n!reddit x.json\n")
    assert e.value.line == 2


def test_github_issue_and_comments(parse, tmp_path):
    write(tmp_path, "i.json", json.dumps({"html_url": "https://g/1", "title": "Bug",
                                         "user": {"login": "u"}, "body": "it broke"}))
    write(tmp_path, "c.json", json.dumps([{"user": {"login": "v"}, "body": "me too\n\nreally\n"}]))
    req = parse("!github i.json c.json\n!user\nq\n")
    assert req.messages[0].content == (
        "---\nhttps://g/1\nBug\nby @u\n\nit broke\n\n@v:\n> me too\n> \n> really\n---"
    )
    with pytest.raises(BufferError, match="needs an issue file"):
        parse("!github\n")


# -- small directives --------------------------------------------------------------------


def test_note_lines_are_not_sent(parse):
    assert roles(parse("!note a\n!user\nq\n!note b\nr\n")) == [("user", "q\nr")]


def test_begin_discards_messages_but_keeps_directives(parse):
    req = parse("old sys\n!:temperature 0.2\n!user\nold\n!begin\nnew sys\n!user\nq\n")
    assert roles(req) == [("system", "new sys"), ("user", "q")]
    assert req.data["temperature"] == 0.2


def test_end_ignores_the_rest(parse):
    req = parse("!user\nq\n!end\n!:temperature 5\nmore\n")
    assert roles(req) == [("user", "q")] and "temperature" not in req.data


def test_double_bang_escapes_a_line(parse):
    assert roles(parse("!user\n!!user is a word\n!!\n")) == [("user", "!user is a word\n!")]


def test_unknown_directives_are_sent_as_text(parse):
    assert roles(parse("!user\n!foo bar\n!:\n!>\n")) == [("user", "!foo bar\n!:\n!>")]


def test_prepend_plain_and_quoted(parse):
    assert parse("!prepend  <think>\n!user\nq\n").prepend == " <think>"  # not trimmed
    assert parse('!prepend "<think>\\n"\n!user\nq\n').prepend == "<think>\n"
    assert parse('!prepend "broken\n!user\nq\n').prepend == '"broken'


def test_exclude_drops_tagged_sections_and_their_directives(parse):
    req = parse("!exclude think\n!user\nq\n!assistant\n<think>\n!:x 1\nhmm\n</think>\nA\n")
    assert roles(req) == [("user", "q"), ("assistant", "A")]
    assert "x" not in req.data and req.exclude == "think"


@pytest.mark.parametrize(
    "directive, attr",
    [("!debug", "debug"), ("!stats", "stats"), ("!gpt-oss", "gpt_oss"), ("!nolog", "nolog"), ("!check", "checks")],
)
def test_flags(parse, directive, attr):
    assert getattr(parse("!user\nq\n"), attr) is False
    assert getattr(parse(f"{directive}\n!user\nq\n"), attr) is True


def test_backend(parse):
    assert parse("!user\nq\n").backend is None
    assert parse("!backend llamacpp\n!user\nq\n").backend == "llamacpp"
    # The buffer's choice wins over a profile's, before or after it.
    assert parse("!backend openai\n!profile claude\n!user\nq\n").backend == "openai"
    assert parse("!profile claude\n!backend openai\n!user\nq\n").backend == "openai"
    with pytest.raises(BufferError, match="unknown backend 'grpc'") as e:
        parse("!user\n!backend grpc\n")
    assert e.value.line == 2 and "embedded" in e.value.hint


def test_test_repair_lang(parse):
    req = parse("!test  pytest -q \n!repair 3\n!lang python\n!user\nq\n")
    assert (req.test_cmd, req.repair_rounds, req.language) == ("pytest -q", 3, "python")
    assert parse("!repair 0\n!user\nq\n").repair_rounds == 0
    for bad in ("-1", "two", "1.5", ""):
        with pytest.raises(BufferError, match="!repair needs a whole number") as e:
            parse(f"!user\nq\n!repair {bad}\n")
        assert e.value.line == 3


# -- limner's deliberate differences -----------------------------------------------------


def test_error_blocks_on_input_are_skipped(parse):
    req = parse("!user\nq\n\n!error\n\nline 3: HTTP 500: boom\nStart the server.\n!user\nagain\n")
    assert roles(req) == [("user", "q"), ("user", "again")]


def test_error_block_ends_at_any_known_directive(parse):
    req = parse("!user\nq\n!error\nboom\n!foo\n!!x\n!note n\nkept\n")
    assert roles(req) == [("user", "q\nkept")]


def test_crlf_directives_match_and_text_keeps_its_cr(parse):
    req = parse("sys\r\n!user\r\nhi\r\nthere\r\n!:temperature 0.5\r\n!prepend x\r\n")
    assert roles(req) == [("system", "sys"), ("user", "hi\r\nthere")]
    assert req.data["temperature"] == 0.5 and req.prepend == "x"


def test_empty_buffer_and_chat_without_messages_are_errors(parse):
    for text in ("", "\n\n", "!note only\n", "!user\n\n!assistant\n"):
        with pytest.raises(BufferError, match="nothing to send: add a !user line"):
            parse(text)


def test_invalid_url_stays_when_nothing_sets_an_api(parse):
    # gemma-3 sets no !api; the backend reports the missing URL, not parse.
    assert parse("!user\nq\n", default_profile="gemma-3").api == INVALID_URL


def test_language_doc_lists_every_directive_and_profile():
    # One spec: the table in buffer.py. The doc must not fall behind it.
    from pathlib import Path

    from limner import profiles

    doc = (Path(__file__).parent.parent / "docs" / "language.md").read_text()
    for d in buffer.DIRECTIVES:
        assert f"`{d.usage.replace('|', chr(92) + '|')}`" in doc, d.usage
    for name in profiles.BUILTIN:
        assert f"`{name}`" in doc, name
