"""Random buffers for tests/test_fuzz.py (Hypothesis) and bench/fuzz.py (seeded).

One generator, two sources of randomness: `case(draw)` asks a Draw for every
choice, and a Draw is either a seeded random.Random (the bench: fast, no
dependency) or Hypothesis's `data.draw` (the test: failures shrink). The
directive names come from buffer.DIRECTIVES, so a new directive is fuzzed
as soon as it is in the table.

`exercise(case, tree)` runs one buffer through everything that happens
before a request is sent: buffer.check, buffer.parse, backends.open(...)
.describe() and render.debug. Only LimnerError may escape (a user's mistake
is an `!error`, anything else is "internal error, exit 70"), and
`no_network()` records any socket connect or DNS lookup, which must never
happen before sending.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
from dataclasses import dataclass, field

from limner import backends, buffer, profiles, render
from limner.errors import LimnerError

NAMES = [d.name for d in buffer.DIRECTIVES]  # prefix directives ("!:", "!>", "!!") included

# Characters that have broken parsers before: NUL, CR, Go's and Python's
# differing whitespace, separators, BOM, zero-width and bidi marks, a
# combining accent, astral and the last code point, a surrogateescape byte.
ODD = ["\x00", "\r", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "\x85", "\u00a0", "\u1680",
       "\u2028", "\u2029", "\u3000", "\ufeff", "\u200b", "\u202e", "é", "e\u0301", "ß", "İ",
       "😀", "\U0010ffff", "\udc80", "{", "}", "$", "${", '"', "\\", "`", "!", "/", ":"]
WORDS = ["x", "hi", "def f(x):", "    return x", "}", "0", "-1", "2.5", "1e999", "null", "true",
         "[1,", '{"a": 1}', '["<|im_end|>"]', '"quoted"', '"<think>\\n"', "{prefix}", "{suffix}",
         "{model}", "$HOME", "${HF_TOKEN}", "<think>", "</think>", "think", "python", "é", ""]
PATHS = ["a.py", "sub", "sub/", "./sub", "sub/b.md", "empty", "bin.dat", "latin1.txt", "link",
         "thread.json", "issue.json", "comments.json", "notjson.json", "p.profile", "./p.profile",
         "self.profile", "./self.profile", "missing", "no/such/dir/", "/nonexistent/x", ".", "",
         "a\x00.py", "\x00", "sub\x00/", "./a\x00", "x" * 300, "sub/" + "y" * 260, "~/x",
         "$HOME/a.py", "a.py\udc80", "\udcff"]
SUFFIXES = [".py", ".md", "", ".json", "\x00", "py"]
PROFILE_NAMES = [*profiles.BUILTIN, "fim:auto", "fim:auto", "fim:auto", "mine", "bad", "loop",
                 "fimauto", "nope", "fim:nope", "./p.profile", "./self.profile", "sub/", "a\x00b",
                 "\x00", "mine\x00", "./a\x00", "é", "."]
SCHEMES = ["http://", "https://", "HTTP://", "", "http:/", "http:///", "ftp://", "embedded://",
           "unix://", "http:\\\\"]
HOSTS = ["localhost", "127.0.0.1", "127.0.0.1", "[::1]", "[::1", "::1", "999.1.1.1", "1.2.3",
         "exa mple.com", "bücher.de", "☃.net", "xn--zz", "a..b", "", "-x-", "ho\x00st", "ho\rst",
         "api.anthropic.com", "\u3000", "%zz", "{model}", "{host", "u:p@h", "@", "a\u00a0b",
         "localhost\x7f", "例え.テスト"]
PORTS = ["", ":8080", ":", ":99999", ":abc", ":-1", ":0", ":８０", ":9\x00"]
URL_PATHS = ["", "/", "/v1", "/v1/", "/v1/messages", "/a b", "/\x7f", "/é", "?q=1", "?key=s3cret",
             "#frag", "/{model}/v1", "//x", "/%"]
KEYS = ["model", "max_tokens", "stop", "prompt", "messages", "stream", "temperature", "host",
        "", "é", "{", "\x00"]
HEADERS = ["authorization", "x-api-key", "content-type", "", "x\x00", "é"]
ENV = {"HOME": "/nonexistent-home", "HF_TOKEN": "hf_secret", "OPENAI_API_KEY": "sk-secret"}
DEFAULT_PROFILES = [None, None, None, None, "llama.cpp", "fim:auto", "nope", "./p.profile"]


class RandomDraw:
    """Choices from a seeded random.Random (bench/fuzz.py)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def upto(self, n: int) -> int:
        return self.rng.randint(0, n)

    def chance(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent


def url(d) -> str:
    if d.chance(10):
        return d.pick(["embedded://", '"http://127.0.0.1:9/v1/messages"', "http://invalid./",
                       "localhost:8080", "http://localhost:8080/", '"', '""', "{", "http://{model}/"])
    u = d.pick(SCHEMES) + d.pick(HOSTS) + d.pick(PORTS) + d.pick(URL_PATHS)
    if d.chance(15):
        at = d.upto(len(u))
        u = u[:at] + d.pick(ODD) + u[at:]
    return f'"{u}"' if d.chance(10) else u


def word(d) -> str:
    w = d.pick(WORDS)
    while d.chance(20):
        w += d.pick(ODD) + d.pick(WORDS)
    return w


def directive(d, name: str) -> str:
    """One directive line (no line ending) with arguments that suit it, or not."""
    if name == "!profile":
        return f"!profile {d.pick(PROFILE_NAMES)}"
    if name == "!api":
        return f"!api {url(d)}"
    if name == "!context":
        args = [d.pick(PATHS)] + [d.pick(SUFFIXES) for _ in range(d.upto(2))]
        return "!context " + " ".join(args)
    if name in ("!reddit", "!reddit!"):
        return f"{name} {d.pick(PATHS)}"
    if name == "!github":
        return "!github " + " ".join(d.pick(PATHS) for _ in range(d.upto(3)))
    if name == "!:":
        return f"!:{d.pick(KEYS)} {word(d)}" if d.chance(85) else f"!:{d.pick(KEYS)}"
    if name == "!>":
        return f"!>{d.pick(HEADERS)} {word(d)}"
    if name == "!infill":
        return d.pick(["!infill", "!infill", "!infill", "!infill {prefix}<X>{suffix}",
                       "!infill  <PRE> {prefix}", "!infill {nope}", "!infill {prefix"])
    if name == "!backend":
        return f"!backend {d.pick(['openai', 'llamacpp', 'anthropic', 'embedded', 'bogus', ''])}"
    if name == "!repair":
        return f"!repair {d.pick(['0', '2', '-1', 'x', '١', '99999999999999999999', ''])}"
    if name == "!!":
        return "!!" + word(d)
    arg = word(d) if d.chance(30) else ""
    return f"{name} {arg}" if arg else name


def line(d) -> str:
    kind = d.upto(9)
    if kind <= 4:  # weighted toward the directives that read files or build the URL
        name = d.pick(["!profile", "!api", "!context", "!infill", "!:", "!user", *NAMES])
        text = directive(d, name)
    elif kind <= 7:
        text = word(d)
    elif kind == 8:
        text = d.pick(NAMES) + d.pick(ODD)  # a near miss: "!user\t", "!api\x00"
    else:
        text = ""
    if d.chance(10):
        text = text.replace(" ", d.pick(["\t", "\u00a0", "  ", "\x00"]), 1)
    return text


# Skeletons put the interesting paths within reach of a few hundred examples:
# fim:auto with an odd URL, file-reading directives, profiles, each mode.
SKELETONS = [
    [],
    ["!user", "hi"],
    ["!profile fim:auto", "!api {url}", "def f():", "!infill", "    pass"],
    ["!profile {profile}", "!api {url}", "code", "!infill", "rest"],
    ["!context {path}", "!user", "what is this?"],
    ["!profile {profile}", "!user", "hi"],
    ["!api {url}", "!user", "hi", "!debug"],
    ["!completion", "once upon"],
    ["!reddit {path}", "!github {path} {path}", "!user", "sum up"],
]


def case(d) -> tuple[str, str | None]:
    """(buffer text, default profile or None)."""
    lines = []
    for template in d.pick(SKELETONS):
        lines.append(template.replace("{url}", url(d), 1).replace("{profile}", d.pick(PROFILE_NAMES))
                     .replace("{path}", d.pick(PATHS)))
    for _ in range(d.upto(6)):
        lines.insert(d.upto(len(lines)), line(d))
    out = []
    for text in lines:
        out.append(text + d.pick(["\n", "\n", "\n", "\n", "\r\n", "\r", "\n\n", "\x00\n"]))
    text = "".join(out)
    if text and d.chance(10):
        text = text[:-1]  # no final newline
    return text, d.pick(DEFAULT_PROFILES)


# -- the files the paths name ---------------------------------------------------


def make_tree(root: str) -> tuple[str, str]:
    """Files for PATHS under root/work and profiles under root/config: (cwd, config dir)."""
    cwd, config = os.path.join(root, "work"), os.path.join(root, "config")
    for d in ("sub/.git", "empty", "sub/deep"):
        os.makedirs(os.path.join(cwd, d), exist_ok=True)
    os.makedirs(config, exist_ok=True)
    files = {
        "a.py": b"def f():\n    return 1\n",
        "sub/b.md": b"```\nfenced\n```\n",
        "sub/deep/c.py": b"x = 1",
        "sub/.git/d.py": b"never read\n",
        "bin.dat": b"\x00\x01\x02",
        "latin1.txt": b"caf\xe9\n",
        "p.profile": b"!api http://127.0.0.1:9/v1\n!:model qwen2.5-coder-1.5b\n!profile fim:auto\n",
        "self.profile": b"!profile ./self.profile\n",
        "thread.json": json.dumps([{"data": {"children": [{"data": {"title": "t", "selftext": "s"}}]}},
                                   {"data": {"children": [{"data": {"author": "a", "body": "b\r\nc",
                                                                    "replies": ""}}]}}]).encode(),
        "issue.json": json.dumps({"title": "bug", "body": "it breaks", "user": {"login": "me"}}).encode(),
        "comments.json": json.dumps([{"body": "same", "user": {"login": "you"}}]).encode(),
        "notjson.json": b"{",
    }
    for name, raw in files.items():
        with open(os.path.join(cwd, name), "wb") as f:
            f.write(raw)
    with contextlib.suppress(FileExistsError):
        os.symlink("sub", os.path.join(cwd, "link"))
    for name, text in {"mine": "!api http://localhost:8080/\n!:cache_prompt true\n",
                       "bad": None, "loop": "!profile loop\n",
                       "fimauto": "!profile fim:auto\n!api http://127.0.0.1:9/\n"}.items():
        with open(os.path.join(config, name + ".profile"), "wb") as f:
            f.write(b"\xff\xfe" if text is None else text.encode())
    return cwd, config


def exercise(text: str, default_profile: str | None, cwd: str, config: str) -> None:
    """Everything before sending. Raises whatever is not a LimnerError."""
    opts = dict(env=ENV, cwd=cwd, default_profile=default_profile, config_dir=config)
    buffer.check(text, **opts)
    try:
        req = buffer.parse(text, **opts)
        if req.outlines or req.retrieves or req.budget is not None:
            _assemble(req, cwd)  # as run.py does before opening the backend
        render.debug(backends.open(req).describe())
    except LimnerError:
        pass


def _assemble(req, cwd: str) -> None:
    """The repository context, with the index cache beside the tree, not in ~/.cache."""
    from limner.retrieval.assemble import apply

    saved = os.environ.get("LIMNER_CACHE_DIR")
    os.environ["LIMNER_CACHE_DIR"] = os.path.join(os.path.dirname(cwd), "cache")
    try:
        apply(req, env=ENV)
    finally:
        if saved is None:
            del os.environ["LIMNER_CACHE_DIR"]
        else:
            os.environ["LIMNER_CACHE_DIR"] = saved


@contextlib.contextmanager
def no_network(attempts: list):
    """Record (and refuse) every connect and DNS lookup made inside the block."""

    def refuse(what):
        def fail(*args, **kwargs):
            attempts.append((what, args[1:2] if what == "connect" else args[:1]))
            raise OSError(f"fuzz: no network allowed ({what})")
        return fail

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo,
             socket.create_connection)
    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect")
    socket.getaddrinfo = refuse("getaddrinfo")
    socket.create_connection = refuse("create_connection")
    try:
        yield attempts
    finally:
        (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo,
         socket.create_connection) = saved


@dataclass
class Tally:
    """Non-LimnerError exceptions by type and message, and network attempts (bench/fuzz.py)."""

    runs: int = 0
    errors: dict = field(default_factory=dict)  # "module.Type: message" -> [count, first case]
    network: int = 0  # buffers that tried to connect or resolve a name

    def run(self, text, default_profile, cwd, config) -> None:
        attempts: list = []
        self.runs += 1
        with no_network(attempts):
            try:
                exercise(text, default_profile, cwd, config)
            except Exception as e:  # noqa: BLE001 - counting them is the point
                # Quoted values and numbers vary; the kind of failure does not.
                message = re.sub(r"'[^']*'|\d+", "…", str(e))[:80]
                key = f"{type(e).__module__}.{type(e).__qualname__}: {message}"
                first = self.errors.setdefault(key, [0, (text, default_profile)])
                first[0] += 1
        self.network += bool(attempts)
