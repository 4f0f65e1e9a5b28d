"""`limner check`: every problem kind with its line, and the real command's output and exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from limner import buffer


@pytest.fixture
def check(tmp_path):
    def run(text, env=None, **kw):
        return buffer.check(text, env=env or {}, cwd=str(tmp_path), config_dir=str(tmp_path / "cfg"), **kw)

    return run


def found(issues):
    return [(i.line, i.severity, i.message) for i in issues]


def test_a_good_buffer_has_no_issues(check):
    assert check("Be brief.\n!profile openai\n!user\nhi\n", {"OPENAI_API_KEY": "k"}) == []


def test_unknown_directive_with_a_suggestion(check):
    [issue] = check("!usr\nhi\n")
    assert issue.line == 1 and issue.severity == "error"
    assert "unknown directive !usr (did you mean !user?)" in issue.message
    assert "!!" in issue.hint


def test_unknown_directive_far_from_any_name_has_no_suggestion(check):
    [issue] = check("!user\n!zzzzqq\n")
    assert issue.line == 2 and "did you mean" not in issue.message


def test_escaped_and_excluded_and_skipped_lines_are_not_directives(check):
    text = "!exclude t\n<t>\n!bogus\n</t>\n!!bogus\n!user\nq\n!error\n!bogus2\n!end\n!bogus3\n"
    assert check(text) == []


@pytest.mark.parametrize("value", ['{"a": 1', "[1, 2", '"open', "1.2.3", "-x"])
def test_data_value_that_looks_like_json_but_does_not_parse(check, value):
    [issue] = check(f"!user\nq\n!:stop {value}\n")
    assert issue.line == 3 and "!:stop looks like JSON but does not parse" in issue.message


def test_plain_string_values_are_fine(check):
    assert check("!:model mistral/Nemo-7B\n!:x true\n!user\nq\n") == []


def test_api_keys_no_data_key_provides(check):
    issues = check("!api http://h/{model}/{missing}/v1\n!:model m\n!user\nq\n")
    assert found(issues) == [(1, "error", "!api uses {missing} but no !:missing sets it")]
    # Keys set by a profile count.
    assert check("!profile huggingface.co\n!user\nq\n", {"HF_TOKEN": "t"}) == []
    issues = check("!profile huggingface.co\n!:model\n!user\nq\n", {"HF_TOKEN": "t"})
    assert found(issues) == [(1, "error", "!api uses {model} but no !:model sets it")]
    [issue] = check("!api http://h/{oops\n!user\nq\n")
    assert "without a closing" in issue.message


def test_infill_template_keys(check):
    [issue] = check("!infill <{prefix}{middle}>\n!user\nq\n")
    assert issue.line == 1 and "{middle}" in issue.message
    # In FIM mode the same mistake is the parse error itself.
    [issue] = check("!infill <{prefix}{middle}>\na\n!infill\nb\n")
    assert issue.line == 1 and "missing key: middle" in issue.message


def test_missing_context_paths(check, tmp_path):
    (tmp_path / "here.txt").write_text("x\n")
    issues = check("!context here.txt\n!context gone.txt\n!context nodir .py\n!user\nq\n")
    assert [(i.line, "gone" in i.message or "nodir" in i.message) for i in issues] == [(2, True), (3, True)]


def test_unknown_profile_and_bad_repair_and_backend(check):
    issues = check("!profile nope\n!repair soon\n!backend grpc\n!user\nq\n")
    assert [i.line for i in issues] == [1, 2, 3]
    assert "unknown profile 'nope'" in issues[0].message
    assert "!repair needs a whole number" in issues[1].message
    assert "unknown backend 'grpc'" in issues[2].message


def test_nothing_to_send_is_reported(check):
    [issue] = check("!note just a note\n")
    assert issue.line == 0 and "nothing to send" in issue.message


def test_unset_header_variable_is_a_warning(check):
    issues = check("!profile openai\n!user\nq\n")
    assert found(issues) == [(1, "warning", "profile 'openai' line 2: $OPENAI_API_KEY is not set, so header authorization gets an empty value there")]


def test_second_infill_hole_is_a_warning(check):
    [issue] = check("a\n!infill\nb\n!infill\nc\n")
    assert (issue.line, issue.severity) == (4, "warning")


def test_problems_inside_profile_files_point_at_the_profile_line(check, tmp_path):
    (tmp_path / "my.profile").write_text("!:stop [\"x\"\n!frobnicate\n")
    issues = check("!user\nq\n!profile ./my.profile\n")
    assert [i.line for i in issues] == [3, 3]
    assert "profile './my.profile' line 1" in issues[0].message
    assert "profile './my.profile' line 2: unknown directive !frobnicate" in issues[1].message


def test_all_problems_are_reported_in_one_pass_sorted_by_line(check):
    issues = check("!usr\n!:a [\n!context none.txt\n!repair x\nq\n")
    assert [i.line for i in issues] == [1, 2, 3, 4]


# -- the real command ------------------------------------------------------------


def limner_check(tmp_path, text, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMNER_", "XDG_"))}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    return subprocess.run(
        [sys.executable, "-m", "limner.cli", "check", *args],
        input=text if isinstance(text, bytes) else text.encode(),
        capture_output=True, cwd=tmp_path, env=env, timeout=30,
    )


def test_command_ok(tmp_path):
    p = limner_check(tmp_path, "!user\nhello\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"ok\n", b"")


def test_command_reports_lines_and_exits_1(tmp_path):
    p = limner_check(tmp_path, "!usr\nhi\n!:x {\n")
    assert p.returncode == 1
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("1: unknown directive !usr (did you mean !user?)")
    assert lines[1].startswith("3: !:x looks like JSON")
    assert len(lines) == 2 and b"Traceback" not in p.stderr


def test_command_json(tmp_path):
    p = limner_check(tmp_path, "!usr\nhi\n!>x $LIMNER_TEST_UNSET_VAR\n", "--json")
    assert p.returncode == 1
    rows = json.loads(p.stdout)
    assert [(r["line"], r["severity"]) for r in rows] == [(1, "error"), (3, "warning")]
    assert set(rows[0]) == {"line", "severity", "message", "hint"}


def test_command_warnings_alone_still_pass(tmp_path):
    p = limner_check(tmp_path, "!>x $LIMNER_TEST_UNSET_VAR\n!user\nq\n")
    assert p.returncode == 0
    assert p.stdout.decode().splitlines() == [
        "1: warning: $LIMNER_TEST_UNSET_VAR is not set, so header x gets an empty value there", "ok"]


def test_command_non_utf8_buffer(tmp_path):
    p = limner_check(tmp_path, b"!user\nq\n\xff\n")
    assert p.returncode == 1 and p.stdout.startswith(b"3: the buffer is not valid UTF-8")


def test_command_directives_lists_the_table(tmp_path):
    p = limner_check(tmp_path, b"", "--directives")
    assert p.returncode == 0
    out = p.stdout.decode()
    for d in buffer.DIRECTIVES:
        assert d.usage in out and d.doc in out
    assert len(out.splitlines()) == len(buffer.DIRECTIVES)


def test_command_profile_flag(tmp_path):
    p = limner_check(tmp_path, "!user\nq\n", "--profile", "nope")
    assert p.returncode == 1 and b"0: default profile 'nope' (--profile)" in p.stdout
