"""Static checks on generated code: syntax, hallucinated imports, bandit.

Real parsers, the real installed environment, real bandit; `check-code`
runs as the real command.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from limner.checks import Piece, check_code, check_pieces, notes, to_json
from limner.checks import blocks, imports, security, syntax

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import limner_command  # noqa: E402


def codes(report, check=None):
    return [(f.code, f.severity) for f in report.findings if check is None or f.check == check]


# --- syntax -------------------------------------------------------------------------


def test_python_syntax_error_has_line_and_message():
    found, why = syntax.check("x = 1\ndef f(:\n    pass\n", "python")
    assert why == ""
    [f] = found
    assert (f.line, f.severity, f.code) == (2, "error", "syntax-error")
    assert "def f(:" in f.message


def test_valid_python_has_no_syntax_findings():
    assert syntax.check("def f(x):\n    return x * 2\n", "python") == ([], "")


def test_other_languages_parse_with_tree_sitter():
    ok, why = syntax.check("function f(a) { return a + 1; }\n", "javascript")
    if why:
        pytest.skip(why)
    assert ok == []
    bad, _ = syntax.check("fn main() {\n    let x = ;\n}\n", "rust")
    assert bad and bad[0].line == 2 and bad[0].check == "syntax"


def test_unknown_language_is_skipped_not_failed():
    found, why = syntax.check("whatever", None)
    assert found == [] and "unknown language" in why
    found, why = syntax.check("whatever", "cobol")
    assert found == [] and "cobol" in why


# --- imports --------------------------------------------------------------------------


def test_imports_resolve_against_stdlib_project_and_installed(tmp_path):
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "src" / "mypkg").mkdir(parents=True)
    code = (
        "import os, json\nimport collections.abc\nfrom __future__ import annotations\n"
        "import helpers\nimport mypkg.sub\nfrom . import sibling\n"
        "import httpx\nimport pytest\n"
    )
    assert imports.check(code, root=str(tmp_path)) == []


def test_a_made_up_import_is_flagged_as_possibly_hallucinated():
    [f] = imports.check("import os\nimport fastjsonparse_ultra\nfastjsonparse_ultra.go()\n")
    assert (f.code, f.severity, f.line) == ("unresolved-import", "error", 2)
    assert "hallucinated" in f.message and "fastjsonparse_ultra" in f.message
    assert "before installing anything" in f.hint


def test_a_known_package_that_is_not_installed_names_its_distribution():
    # A renamed import that is surely not installed in the project venv.
    [f] = imports.check("import cv2\n")
    assert (f.code, f.severity) == ("missing-package", "warning")
    assert "opencv-python" in f.message
    assert "never installs" in f.hint
    import importlib.util

    assert importlib.util.find_spec("cv2") is None  # and nothing got installed


def test_a_distribution_name_used_as_an_import_gets_the_right_name():
    [f] = imports.check("import beautifulsoup4\n")
    assert f.code == "wrong-import-name" and "`bs4`" in f.message


def test_guarded_and_type_checking_imports_are_only_info():
    code = (
        "try:\n    import nosuchmod_a\nexcept ImportError:\n    nosuchmod_a = None\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import nosuchmod_b\n"
        "import importlib\nm = importlib.import_module('nosuchmod_c')\n"
    )
    found = {f.message.split("`")[1]: f.severity for f in imports.check(code)}
    assert found == {"nosuchmod_a": "info", "nosuchmod_b": "info", "nosuchmod_c": "error"}


def test_repeated_imports_are_one_finding_with_a_count():
    [f] = imports.check("import nosuchmod_x\ndef g():\n    import nosuchmod_x.y\n")
    assert f.line == 1 and "2 times" in f.message


def test_imports_can_resolve_in_another_interpreter(tmp_path):
    # --python asks that interpreter (a subprocess) instead of limner's own.
    found = imports.check("import json\nimport nosuchmod_q\n", python=sys.executable)
    assert [f.code for f in found] == ["unresolved-import"]
    assert sys.executable in found[0].message


# --- security ------------------------------------------------------------------------


needs_bandit = pytest.mark.skipif(not security.available(), reason="bandit not installed")


@needs_bandit
def test_bandit_findings_carry_ids_lines_and_mapped_severity():
    found, why = security.check("import subprocess, sys\nsubprocess.call(sys.argv[1], shell=True)\n"
                                "eval(input())\n")
    assert why == ""
    by_id = {f.code: f for f in found}
    assert by_id["B602"].severity == "error" and by_id["B602"].line == 2
    assert by_id["B307"].severity == "warning" and by_id["B307"].line == 3
    assert by_id["B404"].severity == "info"


@needs_bandit
def test_bandit_runs_once_for_many_pieces_and_keeps_them_apart():
    found, why = security.check_many(["x = 1\n", "import pickle\npickle.loads(b'')\n", "y = 2\n"])
    assert why == ""
    assert found[0] == [] and found[2] == []
    assert {f.code for f in found[1]} >= {"B301", "B403"}


# --- report and pieces --------------------------------------------------------------


@needs_bandit
def test_check_code_runs_all_three_and_reports_as_notes_and_json():
    r = check_code("import os\nimport nosuchmod_z\nos.system(input())\n", source="gen.py")
    assert r.ran == ["syntax", "imports", "security"] and r.failed
    text = notes([r])
    assert text.startswith("\n\n!note check gen.py (python): ")
    assert all(line.startswith("!note ") for line in text.strip("\n").splitlines())
    assert "nosuchmod_z" in text and "B605" in text
    data = json.loads(json.dumps(to_json([r])))
    assert data["failed"] is True
    assert data["reports"][0]["counts"]["error"] >= 1


def test_code_that_does_not_parse_skips_the_checks_that_need_an_ast():
    [r] = check_pieces([Piece("def (:\n", "python", "x.py")])
    assert r.ran == ["syntax"]
    assert r.skipped == {"imports": "the code does not parse", "security": "the code does not parse"}


def test_blocks_are_found_with_language_line_and_name():
    reply = (
        "Here:\n\n```python\nimport os\nprint(os.getcwd())\n```\n\nand\n\n"
        "~~~js title=\"app.js\"\nconsole.log(1)\n~~~\n\n```\nx = [1, 2]\n```\n\n```text\nnot code\n```\n"
    )
    b = blocks.fenced(reply)
    assert [(x.language, x.line, x.name) for x in b] == [
        ("python", 4, "block 1"), ("javascript", 11, "app.js"), ("python", 15, "block 3"), (None, 19, "block 4")]
    assert b[0].code == "import os\nprint(os.getcwd())\n"


def test_sibling_blocks_may_import_each_other():
    pieces = [Piece("def helper():\n    return 1\n", "python", "utils.py"),
              Piece("import utils\nprint(utils.helper())\n", "python", "main.py")]
    reports = check_pieces(pieces, security=False)
    assert [codes(r, "imports") for r in reports] == [[], []]


# --- the command -----------------------------------------------------------------------


def _check_code(*args, stdin=""):
    return subprocess.run(limner_command() + ["check-code", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_clean_findings_bad_input(tmp_path):
    clean = tmp_path / "ok.py"
    clean.write_text("import json\nprint(json.dumps([1]))\n")
    p = _check_code(str(clean), "--no-security")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"!note check {clean} (python): clean")

    p = _check_code("-", "--no-security", stdin="import nosuchmod_cli\n")
    assert p.returncode == 1
    assert "nosuchmod_cli" in p.stdout and p.stdout.startswith("!note ")

    p = _check_code(str(tmp_path / "missing.py"))
    assert p.returncode == 2 and p.stdout.startswith("!error") and "Traceback" not in p.stdout + p.stderr

    (tmp_path / "bin.py").write_bytes(b"x = '\xff'\n")
    p = _check_code(str(tmp_path / "bin.py"))
    assert p.returncode == 2 and "not valid UTF-8" in p.stdout


def test_cli_json_and_language_option(tmp_path):
    p = _check_code("-", "--json", "--lang", "javascript", stdin="function f( {\n")
    data = json.loads(p.stdout)
    [r] = data["reports"]
    assert r["language"] == "javascript"
    if "syntax" in r["skipped"]:
        pytest.skip(r["skipped"]["syntax"])
    assert p.returncode == 1 and data["failed"]
    assert r["findings"][0]["check"] == "syntax"


def test_cli_checks_each_block_of_a_markdown_file(tmp_path):
    md = tmp_path / "reply.md"
    md.write_text("Try:\n\n```python\nimport yaml_turbo_x\n```\n\n```python\nprint(1)\n```\n")
    p = _check_code(str(md), "--no-security")
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    assert lines[0].startswith("!note check block 1 (python): 1 error")
    assert "(reply line 4)" in lines[1]
    assert any(line.startswith("!note check block 2 (python): clean") for line in lines)
