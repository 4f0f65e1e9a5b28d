"""The syntax-aware FIM stop on streamed middles: real tree-sitter grammars, no model.

Each middle is fed in small chunks, the way tokens arrive, and the test
checks both where the stop cut and which rule fired.
"""
from __future__ import annotations

import ast

import pytest

from limner.fim import heuristics, languages
from limner.fim.stopper import Stopper


def stream(lang, prefix, suffix, middle, chunk=3):
    """(kept middle, reason, characters fed before the stop)."""
    st = Stopper(lang, prefix, suffix)
    keep, fed = None, 0
    for i in range(0, len(middle), chunk):
        piece = middle[i : i + chunk]
        fed += len(piece)
        keep = st.feed(piece)
        if keep is not None:
            break
    if keep is None:
        keep = st.finish()
    return (middle if keep is None else middle[:keep]), st.reason, fed


# The `norm` runaway: the model writes the line, then norm3, norm4... in every
# supported language. Prefix/suffix are Illume's (prefix ends, suffix starts,
# with a line break), the middle is what a runaway model streams.
NORM = {
    "python": ("def norm(x: float, y: float) -> float:\n", "\n    return r\n",
               "    r = (x * x + y * y) ** 0.5",
               "\n\n\ndef norm3(x: float, y: float, z: float) -> float:\n    return (x*x + y*y + z*z) ** 0.5\n"),
    "javascript": ("function norm(x, y) {\n", "\n  return r;\n}\n",
                   "  const r = Math.sqrt(x * x + y * y);",
                   "\n  return r;\n}\n\nfunction norm3(x, y, z) {\n  return Math.sqrt(x * x + y * y + z * z);\n}\n"),
    "typescript": ("function norm(x: number, y: number): number {\n", "\n  return r;\n}\n",
                   "  const r: number = Math.sqrt(x * x + y * y);",
                   "\n  return r;\n}\n\nfunction norm3(x: number, y: number, z: number): number {\n  return 0;\n}\n"),
    "go": ("package geo\n\nimport \"math\"\n\nfunc norm(x, y float64) float64 {\n", "\n\treturn r\n}\n",
           "\tr := math.Sqrt(x*x + y*y)",
           "\n\treturn r\n}\n\nfunc norm3(x, y, z float64) float64 {\n\treturn math.Sqrt(x*x + y*y + z*z)\n}\n"),
    "rust": ("fn norm(x: f64, y: f64) -> f64 {\n", "\n    r\n}\n",
             "    let r = (x * x + y * y).sqrt();",
             "\n    r\n}\n\nfn norm3(x: f64, y: f64, z: f64) -> f64 {\n    (x * x + y * y + z * z).sqrt()\n}\n"),
    "java": ("class Geo {\n    static double norm(double x, double y) {\n", "\n        return r;\n    }\n}\n",
             "        double r = Math.sqrt(x * x + y * y);",
             "\n        return r;\n    }\n\n    static double norm3(double x, double y, double z) {\n"
             "        return Math.sqrt(x * x + y * y + z * z);\n    }\n"),
    "c": ("#include <math.h>\n\ndouble norm(double x, double y) {\n", "\n    return r;\n}\n",
          "    double r = sqrt(x * x + y * y);",
          "\n    return r;\n}\n\ndouble norm3(double x, double y, double z) {\n    return sqrt(x * x + y * y + z * z);\n}\n"),
    "cpp": ("#include <cmath>\n\ndouble norm(double x, double y) {\n", "\n    return r;\n}\n",
            "    double r = std::sqrt(x * x + y * y);",
            "\n    return r;\n}\n\ndouble norm3(double x, double y, double z) {\n    return std::sqrt(x * x + y * y + z * z);\n}\n"),
}


@pytest.mark.parametrize("lang", sorted(NORM))
def test_norm_runaway_stops_after_the_line_in_every_language(lang):
    prefix, suffix, line, runaway = NORM[lang]
    kept, reason, fed = stream(lang, prefix, suffix, line + runaway)
    assert kept == line
    assert reason.startswith("fim:")
    # It stopped on the line's own newline, long before norm3 streamed.
    assert fed <= len(line) + 3


@pytest.mark.parametrize("lang", sorted(NORM))
def test_norm_runaway_without_anything_below_stops_at_the_new_definition(lang):
    """Hole at the end of the body, nothing useful below: the scope rule ends it."""
    prefix, suffix, line, runaway = NORM[lang]
    closing = {"python": ""}.get(lang, suffix.strip().splitlines()[-1])
    body = line + "\n" + suffix.strip("\n").splitlines()[0] + "\n"
    middle = body + ("" if lang == "python" else closing + "\n") + "\n" + runaway.strip("\n").split("\n}\n\n", 1)[-1]
    kept, reason, _ = stream(lang, prefix, "", middle)
    assert reason == "fim:scope"
    assert "norm3" not in kept
    assert kept.rstrip().endswith(body.rstrip().splitlines()[-1].strip() if lang == "python" else closing)


def test_runaway_into_a_new_top_level_definition_python():
    prefix = "import math\n\n\ndef area(r):\n    return math.pi * r * r\n\n\n"
    middle = ("def circumference(r):\n    return 2 * math.pi * r\n\n\n"
              "def volume(r):\n    return 4 / 3 * math.pi * r ** 3\n")
    kept, reason, fed = stream("python", prefix, "", middle)
    assert reason == "fim:scope"
    assert kept == "def circumference(r):\n    return 2 * math.pi * r"
    assert fed < middle.index("volume") + 6  # decided on the first word of `def volume`


def test_top_level_code_after_the_definition_is_cut_python():
    prefix = "def norm(x, y):\n"
    middle = "    return (x * x + y * y) ** 0.5\n\n\nprint(norm(3, 4))\nprint(norm(5, 12))\n"
    kept, reason, _ = stream("python", prefix, "", middle)
    assert reason == "fim:scope"
    assert kept == "    return (x * x + y * y) ** 0.5"


def test_a_repetition_of_the_suffix_is_cut():
    prefix = "def mean(xs):\n    total = 0\n"
    suffix = "    return total / len(xs)\n"  # whole lines: the middle ends with its own line break
    middle = "    for x in xs:\n        total += x\n    return total / len(xs)\n\n\ndef other():\n"
    kept, reason, _ = stream("python", prefix, suffix, middle)
    assert kept == "    for x in xs:\n        total += x\n"
    assert reason in ("fim:suffix", "fim:complete")
    ast.parse(prefix + kept + suffix)


def test_a_repeated_closing_brace_is_cut_javascript():
    prefix = "function f(xs) {\n  let t = 0;\n  for (const x of xs) {\n"
    suffix = "\n  }\n  return t;\n}\n"
    middle = "    t += x;\n  }\n  return t;\n}\n"
    kept, reason, _ = stream("javascript", prefix, suffix, middle)
    assert kept == "    t += x;"


def test_an_unfinished_block_is_never_cut():
    """The parse of `if x > 0:` + suffix is fine, but the block has no body yet."""
    prefix = "def sign(x):\n"
    suffix = "\n    return 0\n"
    middle = "    if x > 0:\n        return 1\n    if x < 0:\n        return -1\n"
    st = Stopper("python", prefix, suffix)
    for ch in "    if x > 0:\n":
        assert st.feed(ch) is None
    keep = None
    for ch in middle[len("    if x > 0:\n"):]:
        keep = st.feed(ch)
        if keep is not None:
            break
    kept = middle[:keep]
    assert kept.startswith("    if x > 0:\n        return 1")
    ast.parse(prefix + kept + suffix)


def test_an_unfinished_brace_block_is_never_cut_c():
    prefix = "int sum(int *a, int n) {\n    int s = 0;\n"
    suffix = "\n    return s;\n}\n"
    middle = "    for (int i = 0; i < n; i++) {\n        s += a[i];\n    }\n    return s;\n}\n"
    kept, reason, _ = stream("c", prefix, suffix, middle)
    assert kept == "    for (int i = 0; i < n; i++) {\n        s += a[i];\n    }"


def test_an_open_call_is_not_cut_mid_statement():
    prefix = "def f(xs):\n"
    suffix = "\n    return total\n"
    middle = "    total = sum(\n        x * x\n        for x in xs\n    )\n    return total\n"
    kept, reason, _ = stream("python", prefix, suffix, middle)
    assert kept == "    total = sum(\n        x * x\n        for x in xs\n    )"


def test_a_middle_with_a_multiline_string():
    prefix = "def usage():\n"
    suffix = "\n    return text\n"
    middle = ('    text = """\n    usage: tool [options]\n\n    def not_code():\n    """\n'
              "    return text\n\ndef other():\n")
    kept, reason, _ = stream("python", prefix, suffix, middle)
    assert kept == '    text = """\n    usage: tool [options]\n\n    def not_code():\n    """'
    assert reason == "fim:complete"


def test_a_middle_with_a_block_comment_c():
    prefix = "int f(int x) {\n"
    suffix = "\n    return y;\n}\n"
    middle = ("    /* scale x:\n       int g(int y) { is not code\n    */\n    int y = 2 * x;\n"
              "    return y;\n}\n")
    kept, reason, _ = stream("c", prefix, suffix, middle)
    assert kept == "    /* scale x:\n       int g(int y) { is not code\n    */\n    int y = 2 * x;"


def test_crlf_files_keep_their_line_breaks_and_stop_the_same():
    prefix = "def norm(x, y):\r\n"
    suffix = "    return r\r\n"
    middle = "    r = (x * x + y * y) ** 0.5\r\n\r\n\r\ndef norm3(x, y, z):\r\n    return 0\r\n"
    kept, reason, _ = stream("python", prefix, suffix, middle)
    assert kept == "    r = (x * x + y * y) ** 0.5\r\n"
    prefix_js = "function f(a) {\r\n"
    kept, _, _ = stream("javascript", prefix_js, "\r\n  return b;\r\n}\r\n",
                        "  const b = a * 2;\r\n  return b;\r\n}\r\n")
    assert kept == "  const b = a * 2;"


def test_empty_suffix_runs_until_the_scope_ends_or_the_stream_does():
    prefix = "def total(xs):\n"
    middle = "    s = 0\n    for x in xs:\n        s += x\n    return s\n"
    kept, reason, _ = stream("python", prefix, "", middle)
    # Nothing below to fit: a body of several statements is kept whole.
    assert kept == "    s = 0\n    for x in xs:\n        s += x\n    return s"
    assert reason == "fim:end"


def test_hole_at_the_very_start_of_a_file():
    suffix = "def main():\n    print(os.getcwd())\n"
    middle = "import os\nimport sys\n\ndef main():\n    print(os.getcwd())\n"
    kept, reason, _ = stream("python", "", suffix, middle)
    assert kept.startswith("import os\n")
    assert "def main" not in kept
    ast.parse(kept + suffix)


def test_hole_at_the_very_end_of_a_file():
    prefix = "def norm(x, y):\n    return (x * x + y * y) ** 0.5\n\n\n"
    middle = "def norm3(x, y, z):\n    return (x * x + y * y + z * z) ** 0.5\n\n\ndef norm4(a):\n"
    kept, reason, _ = stream("python", prefix, "", middle)
    assert kept == "def norm3(x, y, z):\n    return (x * x + y * y + z * z) ** 0.5"
    assert reason == "fim:scope"


def test_stream_cut_short_mid_statement_drops_the_partial_line():
    prefix = "def f(x):\n"
    middle = "    y = x + 1\n    return g(y,"
    kept, reason, _ = stream("python", prefix, "\n\nprint(f(1))\n", middle)
    assert kept == "    y = x + 1"
    assert reason in ("fim:complete", "fim:incomplete")


def test_mid_line_hole_trims_what_the_suffix_already_has():
    prefix = "def f(a, b):\n    return max("
    suffix = ")\n"
    kept, reason, _ = stream("python", prefix, suffix, "a, b)\n\n\ndef g():\n    pass\n")
    assert kept == "a, b"
    assert reason == "fim:suffix"


@pytest.mark.parametrize("lang", ["lua", None])
def test_unsupported_language_falls_back_to_blank_line_and_indent_rules(lang):
    prefix = "function norm(x, y)\n"
    suffix = "\n  return r\nend\n"
    middle = "  local r = math.sqrt(x * x + y * y)\n\nfunction norm3(x, y, z)\n  return 0\nend\n"
    st = Stopper(lang, prefix, suffix)
    assert st.family == "neutral"
    kept, reason, _ = stream(lang, prefix, suffix, middle)
    assert kept == "  local r = math.sqrt(x * x + y * y)"
    assert reason in ("fim:blank", "fim:indent", "fim:suffix")
    kept, reason, _ = stream(lang, prefix, suffix, "  local r = x\nend\n")
    assert kept == "  local r = x"
    assert reason in ("fim:indent", "fim:scope")  # `end` dedents out of the function


def test_the_window_is_bounded_on_a_long_file():
    funcs = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(2000))
    prefix = funcs + "def norm(x, y):\n"
    suffix = "\n    return r\n\n\n" + funcs
    st = Stopper("python", prefix, suffix)
    assert st.win_prefix.count("\n") <= 81 and st.win_suffix.count("\n") <= 41
    kept, reason, _ = stream("python", prefix, suffix, "    r = (x * x + y * y) ** 0.5\n\ndef z():\n")
    assert kept == "    r = (x * x + y * y) ** 0.5"


def test_language_detection():
    assert languages.detect("Py") == "python"
    assert languages.detect("c++") == "cpp"
    assert languages.detect(None, paths=["src/main.rs"]) == "rust"
    assert languages.detect(None, "package main\n\nfunc main() {\n", "") == "go"
    assert languages.detect(None, "def f(x):\n    return x\n", "") == "python"
    assert languages.detect(None, "#include <stdio.h>\nint main(void) {\n", "") == "c"
    assert languages.detect(None, "hello there\n", "") is None


def test_heuristics_follow_their_documented_rules():
    prefix, suffix = "def f(x):\n", "    return y\n"
    middle = "    y = x * 2\n\n    z = 3\ndef g():\n"

    def run(name):
        p = heuristics.make(name, "python", prefix, suffix)
        keep = None
        for ch in middle:
            keep = p.feed(ch)
            if keep is not None:
                break
        keep = keep if keep is not None else p.finish()
        return middle if keep is None else middle[:keep]

    assert run("max-tokens") == middle
    assert run("tabby") == "    y = x * 2"  # "\n\n"
    assert run("continue") == "    y = x * 2"  # blank line
    assert run("indent") == "    y = x * 2\n\n    z = 3"  # `def g` is less indented
    similar = heuristics.make("continue", "python", prefix, suffix)
    text = "    y = x * 2\n    return y  \n"
    keep = None
    for ch in text:
        keep = similar.feed(ch)
        if keep is not None:
            break
    assert text[:keep] == "    y = x * 2\n"  # the line like the one below the cursor


def test_else_continues_the_statement_the_middle_opened():
    prefix = "def sign(x):\n"
    suffix = "\n    return s\n"
    middle = "    if x > 0:\n        s = 1\n    else:\n        s = -1\n    return s\n"
    kept, reason, _ = stream("python", prefix, suffix, middle)
    assert kept == "    if x > 0:\n        s = 1\n    else:\n        s = -1"
