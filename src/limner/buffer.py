"""The buffer language: text with `!` directives -> one Request.

The semantics are Illume's (illume.go), line for line, so a buffer that
works with Illume builds the same request here; docs/language.md lists the
few places limner deliberately differs. The DIRECTIVES table below is the
language's spec: the parser dispatches through it, and `limner check`
(lint.py) and `limner check --directives` read it too.

Pure apart from reading `!context`/`!reddit`/`!github` files and profiles.
"""
from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from limner import context, profiles
from limner.errors import BufferError
from limner.gotext import env_names, go_expand_env, go_fields, go_json, go_trim_space, interpolate, template_keys
from limner.request import CHAT, COMPLETION, FIM, INFILL, INVALID_URL, Message, Request, parse_seconds

BACKENDS = ("openai", "llamacpp", "anthropic", "embedded")  # see backends/__init__.py


@dataclass(frozen=True)
class Directive:
    name: str  # "!user"; for prefix directives the prefix: "!:", "!>", "!!"
    usage: str
    doc: str
    handler: str  # method of _Parser
    origin: str = "illume"  # "limner" marks our additions
    prefix: bool = False


DIRECTIVES: tuple[Directive, ...] = (
    Directive("!user", "!user", "the lines below are a user message", "on_role"),
    Directive("!assistant", "!assistant", "the lines below are an assistant message", "on_role"),
    Directive("!completion", "!completion", "completion mode: the model continues the text", "on_completion"),
    Directive("!infill", "!infill [TEMPLATE]", "alone: the hole to fill here; with TEMPLATE: how to build the FIM prompt from {prefix} and {suffix}", "on_infill"),
    Directive("!profile", "!profile NAME", "load a profile: built-in, a file path (has a slash), or NAME.profile in the config dir", "on_profile"),
    Directive("!api", "!api URL", 'the API base URL; {key} is filled from !: keys at request time; "quoted" is used literally', "on_api"),
    Directive("!:", "!:KEY [VALUE]", "set a request body key (JSON if it parses, else a string); no VALUE deletes it", "on_data", prefix=True),
    Directive("!>", "!>HEADER [VALUE]", "set an HTTP header ($VAR and ${VAR} expand); no VALUE deletes it", "on_header", prefix=True),
    Directive("!context", "!context FILE | DIR SUFFIX...", "insert a file, or every file under DIR ending in a SUFFIX", "on_context"),
    Directive("!reddit", "!reddit FILE", "insert a reddit thread (its .json) with threaded comments", "on_reddit"),
    Directive("!reddit!", "!reddit! FILE", "insert a reddit post (its .json) without comments", "on_reddit"),
    Directive("!github", "!github ISSUE [COMMENTS...]", "insert a GitHub issue and its comments (API JSON files)", "on_github"),
    Directive("!note", "!note TEXT", "a comment: never sent", "on_nothing"),
    Directive("!begin", "!begin", "discard the messages above (directives above still count)", "on_begin"),
    Directive("!end", "!end", "ignore the rest of the buffer", "on_end"),
    Directive("!!", "!!TEXT", "escape: send the line as !TEXT", "on_nothing", prefix=True),
    Directive("!prepend", "!prepend STRING", 'prefix every reply with STRING ("quoted": JSON escapes decoded)', "on_prepend"),
    Directive("!exclude", "!exclude TAG", "leave out lines between <TAG> and </TAG> lines (e.g. think)", "on_exclude"),
    Directive("!debug", "!debug", "dry run: print the HTTP request instead of sending it", "on_flag"),
    Directive("!stats", "!stats", "after the reply, add a !note with token counts and speeds", "on_flag"),
    Directive("!gpt-oss", "!gpt-oss", "handle GPT-OSS channel tokens (analysis -> <think>)", "on_flag"),
    Directive("!error", "!error", "an error block from a previous run: skipped up to the next directive", "on_error"),
    Directive("!backend", "!backend NAME", f"the protocol to speak: {' | '.join(BACKENDS)}", "on_backend", "limner"),
    Directive("!nolog", "!nolog", "do not record this exchange in the log", "on_flag", "limner"),
    Directive("!check", "!check", "run code checks (syntax, imports, security) on the reply", "on_flag", "limner"),
    Directive("!test", "!test CMD", "run CMD to verify the reply's code", "on_test", "limner"),
    Directive("!repair", "!repair N", "on failed checks or tests, ask the model to fix it up to N times", "on_repair", "limner"),
    Directive("!vote", "!vote N", "sample N replies, run each on the !test asserts and derived inputs, reply with the one from the largest passing behaviour cluster", "on_vote", "limner"),
    Directive("!sandbox", "!sandbox basic|strict", "the isolation !test runs code under; basic (no network or filesystem isolation) must be asked for, default strict", "on_sandbox", "limner"),
    Directive("!lang", "!lang NAME", "the source language of an !infill buffer (for the syntax-aware stop)", "on_lang", "limner"),
    Directive("!secrets", "!secrets block|redact|warn|off", "what the secret guard does with secrets in a request to a remote host: block provider tokens and keys, redact the rest (default block); the log is redacted in every mode", "on_secrets", "limner"),
    Directive("!allow-secrets", "!allow-secrets RULE|FINGERPRINT...", "send these secrets as written: a guard rule id (e.g. github-token) or one secret's fingerprint from an !error", "on_allow_secrets", "limner"),
    Directive("!budget", "!budget N [outline]", "token budget for all generated context (!outline, !retrieve, and !context files when given); a hard limit; default from the model's context; `outline`: a !context file that does not fit is sent as its outline", "on_budget", "limner"),
    Directive("!outline", "!outline DIR [SUFFIX...]", "a ranked map of the signatures defined under DIR (files ending in a SUFFIX), within the budget", "on_outline", "limner"),
    Directive("!retrieve", "!retrieve [QUERY]", "the best chunks of the repository (the !outline DIR, else the working directory) for QUERY or the last !user message; in !infill/!completion, for the code at the cursor", "on_retrieve", "limner"),
    Directive("!file", "!file PATH", "the file an !infill/!completion buffer is (editors pass $LIMNER_FILE): !retrieve leaves it out", "on_file", "limner"),
    Directive("!timeout", "!timeout SECONDS", "how long to wait for the server's first byte and between chunks (default 300; HTTP only)", "on_timeout", "limner"),
)
_BY_NAME = {d.name: d for d in DIRECTIVES if not d.prefix}
_FLAGS = {"!debug": "debug", "!stats": "stats", "!gpt-oss": "gpt_oss", "!nolog": "nolog", "!check": "checks"}


def lookup(command: str) -> Directive | None:
    """The directive a line's first word names, or None if it is text."""
    d = _BY_NAME.get(command)
    if d is None and len(command) > 2 and command[:2] in ("!:", "!>"):
        d = next(x for x in DIRECTIVES if x.name == command[:2])
    return d


def suggest(command: str) -> str:
    """A " (did you mean !user?)" note for a near miss, else an empty string."""
    close = difflib.get_close_matches(command, list(_BY_NAME), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


# -- the parser ----------------------------------------------------------------


@dataclass
class Issue:
    """One problem `limner check` reports."""

    line: int
    message: str
    severity: str = "error"  # "error" | "warning"
    hint: str = ""


@dataclass
class _At:
    line: int  # buffer line to blame (for a profile: the !profile line that loaded it)
    depth: int  # 0 = the buffer itself
    where: str  # "" for the buffer, else "profile 'x' line 3: "
    command: str = ""


class _Stop(Exception):
    """`!end`: ignore the rest of this text."""


class _Parser:
    def __init__(self, env, cwd, config, issues: list[Issue] | None):
        self.env, self.cwd, self.config = env, cwd, config
        self.issues = issues  # None: raise on the first problem
        self.req = Request()
        self.chain: list[tuple[str, str]] = []  # (name, identity) of profiles being loaded
        self.excluding = False
        self.template_line = 0
        self.holes: list[int] = []
        self._new_builder()

    # Errors: raised, or collected for `limner check`.
    def fail(self, at: _At, message: str, hint: str = "", severity: str = "error") -> None:
        if self.issues is None:
            if severity == "warning":
                return  # warnings are for `limner check` only
            raise BufferError(at.where + message, hint, at.line)
        self.issues.append(Issue(at.line, at.where + message, severity, hint))

    # Message building, as Illume's Builder: text accumulates until a role
    # line; then it becomes one message unless it is blank.
    def _new_builder(self) -> None:
        self.messages: list[Message] = []
        self.role = ""
        self.content: list[str] = []
        self.first_line = 0

    def add(self, text: str, line: int) -> None:
        self.content.append(text)
        if not self.first_line and text.strip("\r\n"):
            self.first_line = line

    def next_message(self, role: str) -> None:
        content = "".join(self.content).strip("\r\n")
        if content:
            self.messages.append(Message(self.role or "system", content, self.first_line))
        self.role, self.content, self.first_line = role, [], 0

    def load(self, text: str, depth: int, origin: int = 0, name: str = "") -> None:
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        elif not text:
            lines = []
        skipping_error = False
        for lineno, raw in enumerate(lines, 1):
            # Illume splits at "\n" only; limner also accepts CRLF directives.
            line = raw[:-1] if raw.endswith("\r") else raw
            at = _At(lineno, 0, "") if depth == 0 else _At(origin, depth, f"profile {name!r} line {lineno}: ")
            tag = self.req.exclude
            if tag:
                if self.excluding:
                    self.excluding = line != f"</{tag}>"
                    continue
                if line == f"<{tag}>":
                    self.excluding = True
                    continue
            command, _, args = line.partition(" ")
            d = None if line.startswith("!!") else lookup(command)
            if skipping_error and d is None:
                continue
            skipping_error = False
            if line.startswith("!!"):
                self.add(raw[1:] + "\n", at.line)
                continue
            if d is None:
                if line.startswith("!") and self.issues is not None:
                    self.fail(at, f"unknown directive {command}{suggest(command)}; it is sent as text",
                              "Write !! at the start of the line to send a literal !.")
                self.add(raw + "\n", at.line)
                continue
            if d.name == "!error":
                skipping_error = True
                continue
            at.command = command
            try:
                getattr(self, d.handler)(args, at)
            except _Stop:
                return
            except BufferError as e:  # from profiles.py / context.py: add the line
                self.fail(at, e.message, e.hint)

    # -- handlers: one per table row --------------------------------------

    def on_role(self, args, at):
        self.next_message(at.command[1:])

    def on_completion(self, args, at):
        self.req.mode = COMPLETION

    def on_infill(self, args, at):
        if args:  # a template: stored, does not start infill by itself
            self.req.fim_template = args
            self.template_line = at.line
            return
        self.req.mode = FIM if self.req.fim_template else INFILL
        self.holes.append(at.line)
        self.next_message("infill")

    def on_profile(self, args, at):
        name = go_trim_space(args)
        if len(self.chain) >= profiles.MAX_DEPTH:
            trail = " -> ".join(n for n, _ in self.chain)
            return self.fail(at, f"profiles nested deeper than {profiles.MAX_DEPTH}: {trail} -> {name}",
                             "A profile probably loads itself through a cycle.")
        text, source = profiles.resolve(name, cwd=self.cwd, config=self.config)
        identity = name if source == "built-in" else os.path.realpath(source)
        if any(identity == i for _, i in self.chain):
            trail = " -> ".join([n for n, _ in self.chain] + [name])
            return self.fail(at, f"profile recursion: {trail}", "Remove the !profile line that closes the loop.")
        self.req.profile = name
        self.req.profiles.append(name)
        self.chain.append((name, identity))
        try:
            self.load(text, at.depth + 1, at.line, name)
        finally:
            self.chain.pop()

    def on_api(self, args, at):
        url = go_trim_space(args)
        if not url:
            return self.fail(at, "!api needs a URL", "e.g. !api http://localhost:8080/")
        # The buffer always wins; a profile only fills a URL not yet set.
        if self.req.api == INVALID_URL or at.depth == 0:
            self.req.api, self.req.api_line = url, at.line

    def on_data(self, args, at):
        key = at.command[2:]
        if at.depth > 0 and key in self.req.user_set:
            return  # the buffer's own setting wins over any profile
        value = go_trim_space(args)
        if not value:
            self.req.data.pop(key, None)
        else:
            ok, parsed = go_json(value)
            self.req.data[key] = parsed if ok else value
            if not ok and self.issues is not None and (value[0] in '{["-' or value[0].isdigit()):
                self.fail(at, f"!:{key} looks like JSON but does not parse; it will be sent as a string",
                          'Fix the JSON, or wrap the value in quotes to send it as a string: "..."')
        if at.depth == 0:
            self.req.user_set.add(key)

    def on_header(self, args, at):
        key, value = at.command[2:], go_trim_space(args)
        if not value:
            self.req.headers.pop(key, None)
            return
        self.req.headers[key] = go_expand_env(value, self.env)
        if self.issues is not None:
            for var in env_names(value):
                if var not in self.env:
                    self.fail(at, f"${var} is not set, so header {key} gets an empty value there",
                              f"export {var}=... before running limner", "warning")

    def on_context(self, args, at):
        skipped: list[str] = []
        for f in context.include(go_fields(args), self.cwd, at.line, skipped):
            self.add(f.block, at.line)
            self.req.context_files.append(f)
        for reason in skipped:  # credential files a directory walk left out
            if self.issues is not None:
                self.fail(at, f"!context skipped {reason}", context.DENIED_HINT, "warning")
            else:
                sys.stderr.write(f"limner: line {at.line}: !context skipped {reason}\n")

    def on_reddit(self, args, at):
        self.add(context.reddit(go_trim_space(args), self.cwd, at.command == "!reddit"), at.line)

    def on_github(self, args, at):
        self.add(context.github(go_fields(args), self.cwd), at.line)

    def on_nothing(self, args, at):
        pass

    def on_begin(self, args, at):
        self._new_builder()
        self.req.context_files.clear()  # their text went with the messages

    def on_end(self, args, at):
        raise _Stop

    def on_prepend(self, args, at):
        if len(args) > 1 and args[0] == '"':
            ok, value = go_json(args)
            if ok and isinstance(value, str):
                args = value
        self.req.prepend = args

    def on_exclude(self, args, at):
        self.req.exclude = go_trim_space(args)

    def on_flag(self, args, at):
        setattr(self.req, _FLAGS[at.command], True)

    def on_backend(self, args, at):
        name = go_trim_space(args)
        if name not in BACKENDS:
            return self.fail(at, f"unknown backend {name!r}", f"Use one of: {', '.join(BACKENDS)}.")
        if self.req.backend is None or at.depth == 0:  # as !api: the buffer wins
            self.req.backend = name

    def on_test(self, args, at):
        self.req.test_cmd = go_trim_space(args) or None

    def on_repair(self, args, at):
        value = go_trim_space(args)
        if not value.isascii() or not value.isdigit():
            return self.fail(at, f"!repair needs a whole number of rounds, not {value!r}", "e.g. !repair 2")
        self.req.repair_rounds = int(value)

    def on_vote(self, args, at):
        value = go_trim_space(args)
        if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 64:
            return self.fail(at, f"!vote needs a number of candidates from 1 to 64, not {value!r}", "e.g. !vote 8")
        self.req.vote_n = int(value)

    def on_sandbox(self, args, at):
        value = go_trim_space(args)
        if value not in ("basic", "strict"):
            return self.fail(at, f"!sandbox needs basic or strict, not {value!r}",
                             "!sandbox basic runs !test without bwrap's isolation; strict is the default")
        self.req.sandbox = value

    def on_lang(self, args, at):
        self.req.language = go_trim_space(args) or None

    def on_timeout(self, args, at):
        value = go_trim_space(args)
        seconds = parse_seconds(value)
        if seconds is None:
            return self.fail(at, f"!timeout needs a number of seconds greater than 0, not {value!r}",
                             "e.g. !timeout 30 (or 0.5); the default is 300")
        if self.req.timeout is None or at.depth == 0:  # as !api: the buffer wins
            where = f"in {at.where.rstrip(': ')}" if at.depth else f"at line {at.line}"
            self.req.timeout, self.req.timeout_from = seconds, f"!timeout {where}"

    def on_secrets(self, args, at):
        from limner.guard.policy import MODES  # light: no re2

        value = go_trim_space(args)
        if value not in MODES:
            return self.fail(at, f"!secrets needs one of {', '.join(MODES)}, not {value!r}",
                             "block (the default) stops provider tokens and keys from going to a "
                             "remote host and redacts the rest; off sends everything")
        if self.req.secrets is None or at.depth == 0:  # as !api: the buffer wins
            self.req.secrets = value

    def on_allow_secrets(self, args, at):
        entries = go_fields(args)
        if not entries:
            return self.fail(at, "!allow-secrets needs a rule id or a fingerprint",
                             "e.g. !allow-secrets github-token, or the fingerprint an !error named")
        self.req.allow_secrets.extend(entries)

    def on_budget(self, args, at):
        fields = go_fields(args)
        value = fields[0] if fields else ""
        extra = fields[1:]
        if not (value.isascii() and value.isdigit() and 0 < len(value) <= 9 and int(value) > 0):
            return self.fail(at, f"!budget needs a positive whole number of tokens, not {value!r}",
                             "e.g. !budget 2000 (or !budget 2000 outline to shrink !context files that do not fit)")
        if extra not in ([], ["outline"]):
            return self.fail(at, f"!budget takes only `outline` after the number, not {' '.join(extra)!r}",
                             "e.g. !budget 2000 outline")
        if self.req.budget is None or at.depth == 0:  # as !api: the buffer wins
            self.req.budget, self.req.budget_line = int(value), at.line
            self.req.budget_outline = bool(extra)

    def on_outline(self, args, at):
        fields = go_fields(args)
        if not fields:
            return self.fail(at, "!outline needs a directory", "e.g. !outline src .py")
        context.check_path(fields[0], "the directory")
        full = os.path.join(self.cwd, fields[0])
        if not os.path.isdir(full):
            return self.fail(at, f"!outline: no such directory: {fields[0]}",
                             "Fix the path; relative paths start from the directory limner runs in.")
        self.req.outlines.append((fields[0], os.path.abspath(full), tuple(fields[1:]), at.line))

    def on_retrieve(self, args, at):
        self.req.retrieves.append((go_trim_space(args), at.line))

    def on_file(self, args, at):
        path = go_trim_space(args)
        if not path:
            return self.fail(at, "!file needs the path of the file being edited", "e.g. !file src/app.py")
        context.check_path(path)
        self.req.file_path = os.path.join(self.cwd, path)

    # -- after the text: default profile, then the mode's fields --------------

    def default_profile(self, name: str, why: str) -> None:
        at = _At(0, 1, f"default profile {name!r} ({why}): ")
        try:
            self.on_profile(name, at)
        except BufferError as e:
            self.fail(at, e.message, e.hint)

    def finish(self) -> Request:
        req = self.req
        self.next_message("")
        msgs = self.messages
        if req.mode == CHAT:
            if not msgs:
                self.fail(_At(0, 0, ""), "nothing to send: add a !user line, then your message below it")
            req.messages = msgs
        elif req.mode == COMPLETION:
            if not msgs:
                self.fail(_At(0, 0, ""), "nothing to send: !completion needs text for the model to continue")
            req.messages = msgs[:1]
            req.prompt = msgs[0].content if msgs else ""
        else:
            req.infill_line = self.holes[0]
            if not msgs or msgs[0].role == "infill":
                self.fail(_At(req.infill_line, 0, ""), "nothing before !infill: the model needs the code above the hole")
            req.messages = msgs[:2]
            req.prefix = (msgs[0].content + "\n") if msgs else "\n"
            req.suffix = "\n" + msgs[1].content if len(msgs) > 1 else ""
            if req.mode == FIM:
                try:
                    req.prompt = interpolate(req.fim_template or "", {"prefix": req.prefix, "suffix": req.suffix})
                except KeyError as e:
                    self.fail(_At(self.template_line, 0, ""), f"!infill template: {e.args[0]}",
                              "A FIM template may use only {prefix} and {suffix}.")
        if self.issues is not None:
            self._lint_templates()
        return req

    def _lint_templates(self) -> None:
        req = self.req
        keys, closed = template_keys(req.api)
        for key in keys:
            if key not in req.data:
                self.fail(_At(req.api_line, 0, ""), f"!api uses {{{key}}} but no !:{key} sets it",
                          f"Add `!:{key} VALUE`, or remove {{{key}}} from the URL.")
        if not closed:
            self.fail(_At(req.api_line, 0, ""), "!api has a { without a closing }")
        elif req.api != INVALID_URL and all(key in req.data for key in keys):
            self._lint_url()
        if req.fim_template and req.mode != FIM:
            keys, closed = template_keys(req.fim_template)
            for key in keys:
                if key not in ("prefix", "suffix"):
                    self.fail(_At(self.template_line, 0, ""), f"!infill template uses {{{key}}}; only {{prefix}} and {{suffix}} exist")
            if not closed:
                self.fail(_At(self.template_line, 0, ""), "!infill template has a { without a closing }")
        for extra in self.holes[1:]:
            self.fail(_At(extra, 0, ""), f"a second !infill hole (the first is at line {self.holes[0]}); "
                      "only the text up to the next one is the suffix", severity="warning")

    def _lint_url(self) -> None:
        """The URL as sending would build it: a bad scheme, host or port is an error here too."""
        from limner.backends import choose  # light: builds no adapter, sends nothing
        from limner.backends.base import split_api

        try:
            if choose(self.req) != "embedded":  # the engine ignores the URL
                split_api(self.req)
        except BufferError as e:
            self.fail(_At(self.req.api_line, 0, ""), e.message, e.hint)


def _run(text, env, cwd, default_profile, config_dir, issues) -> Request:
    env = os.environ if env is None else env
    p = _Parser(env, cwd or os.getcwd(), config_dir or profiles.config_dir(env), issues)
    p.req.text = text
    p.req.cwd = p.cwd
    p.load(text, 0)
    if p.req.profile is None:  # Illume loads the default after the buffer
        if default_profile:
            p.default_profile(default_profile, "--profile")
        elif env.get("LIMNER_PROFILE"):
            p.default_profile(env["LIMNER_PROFILE"], "$LIMNER_PROFILE")
        else:
            p.default_profile(profiles.DEFAULT, "built-in default")
    return p.finish()


def parse(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    default_profile: str | None = None,
    config_dir: str | None = None,
) -> Request:
    """Turn a buffer into a Request. Raises BufferError with the 1-based line."""
    return _run(text, env, cwd, default_profile, config_dir, None)


def check(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    default_profile: str | None = None,
    config_dir: str | None = None,
) -> list[Issue]:
    """Every problem parse() would raise, plus lint-only ones; sorted by line."""
    issues: list[Issue] = []
    _run(text, env, cwd, default_profile, config_dir, issues)
    return sorted(issues, key=lambda i: i.line)


def directive_table() -> str:
    """The language at a glance, for `limner check --directives`."""
    width = max(len(d.usage) for d in DIRECTIVES)
    rows = [f"{d.usage.ljust(width)}  {d.doc}{'  [limner]' if d.origin == 'limner' else ''}" for d in DIRECTIVES]
    return "\n".join(rows) + "\n"
