"""The buffer's repository context: `!budget`, `!outline`, `!retrieve`, `!context`.

`apply(req)` runs after buffer.parse and before the backend is opened. It
fills the budget in a fixed order (explicit `!context` files when `!budget`
is given, then each `!outline`/`!retrieve` in buffer order, each offered an
equal share of what is left and passing on what it leaves), puts the text
into the request and records every block as a `Placed` (source, reason,
tokens) for `!debug` and `!stats`.

Where it goes: in chat, outlines close the system prompt (they depend only
on the repository, so they stay put turn after turn and the engine's prefix
cache keeps them) and retrieved chunks open the last user message (they
change with the question; there they cost only that turn). In `!infill` and
`!completion` everything is comments in the buffer's language before the
prefix. The same buffer and repository give the same bytes.

Counting: the GGUF's own vocabulary plus MARGIN for the embedded engine
(greedy matching can be a hair under the real count), the approximate
counter (which errs high) for HTTP endpoints. The sum of every part's count
is at most the budget.
"""
from __future__ import annotations

import math
import os
import sqlite3
from dataclasses import dataclass
from functools import lru_cache

from limner.errors import BufferError, LimnerError
from limner.request import CHAT, COMPLETION, FIM, INFILL, Message, Request
from limner.retrieval.budget import Approx, Block, Counter, fit

MARGIN = 1.02           # Vocab measured at 0.998-1.001x the real count: 2 % covers it
HTTP_BUDGET = 2048      # no context length to read from an HTTP endpoint
CURSOR_CAP = 1024       # infill's default: every keystroke pays for the prompt (Continue: 1,024)
CHAT_SHARE = 2          # the default budget is 1/CHAT_SHARE of what the reply leaves free
CHAT_HEADER = "Context from the repository {root} (limner {what}):"
INFILL_HEADER = "Context from other files of the repository (limner {what}):"


@dataclass(frozen=True)
class Placed:
    """One block put in the prompt, as !debug and !stats list it."""

    source: str   # "email/parser.py:12-40", "outline of src/", "!context a.py"
    reason: str   # "definition of X", "bm25", "outline", "context file"
    tokens: int


class Margin:
    """A counter that adds `factor` (rounded up) to another's count."""

    def __init__(self, inner: Counter, factor: float = MARGIN):
        self.inner, self.factor = inner, factor
        inner_name = os.path.basename(getattr(inner, "name", "counter"))
        self.name = f"{inner_name}+{round((factor - 1) * 100)}%"

    def count(self, text: str) -> int:
        return math.ceil(self.inner.count(text) * self.factor) if text else 0


@lru_cache(maxsize=4)
def _vocab(path: str, mtime_ns: int):  # mtime in the key: a replaced file is re-read
    """The model's vocabulary for counting, its repo-level FIM ids and trained
    context. Reading Gemma's 262k tokens from the GGUF took ~0.7 s on every
    run, and a warm infill waited for it; the result is kept in the cache dir
    as one joined string (marshal, then a split: ~60 ms)."""
    import hashlib
    import marshal

    from limner.engine import gguf
    from limner.retrieval.budget import Vocab
    from limner.retrieval.index import cache_root

    name = f"vocab {os.path.basename(path)}"
    key = hashlib.sha256(f"v2\0{path}\0{mtime_ns}\0{os.path.getsize(path)}".encode()).hexdigest()[:24]
    cached = cache_root() / "vocab" / f"{key}.marshal"
    try:
        with open(cached, "rb") as fh:
            state, repo, trained = marshal.load(fh)
        v = Vocab.from_state(state, name)
    except (OSError, EOFError, ValueError, TypeError):
        meta = gguf.read_metadata(path)
        v = Vocab(meta.get("tokenizer.ggml.tokens") or [], name=name)
        repo = gguf.repo_token_ids(meta)  # the same read tells whether repo-level FIM is possible
        trained = gguf.context_length(meta)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                marshal.dump((v.state(), repo, trained), fh)
            os.replace(tmp, cached)  # readers never see half a file
        except OSError:
            pass  # a read-only cache only costs the slow read next time
    v.repo, v.trained = repo, trained
    return v


def repo_level(req: Request, counter: Counter) -> bool:
    """Whether an infill's retrieved blocks go apart from the prefix, as files:
    llama.cpp's /infill (input_extra; the server uses the model's repo-level
    tokens) or an embedded model whose vocabulary has a file separator."""
    from limner.backends import choose

    if req.mode != INFILL and not (req.mode == FIM and not req.fim_template):
        return False
    backend = choose(req)
    if backend == "llamacpp":
        return req.backend == "llamacpp" and req.mode == INFILL
    return backend == "embedded" and bool(getattr(getattr(counter, "inner", None), "repo", None))


def _model_path(req: Request) -> str | None:
    """The GGUF the embedded engine will load, without loading (or assembling) it."""
    from limner.engine import models

    mode = "chat" if req.mode == CHAT else "completion"
    name = (req.model or "").strip() or models.default_for(mode)
    if name == models.COMPLETION_DEFAULT:
        path = models._gemma_path(create=False)  # noqa: SLF001 - no assembling for a count
        return str(path) if path.exists() else None
    return models.resolve(name, mode)[1]


def counter_and_window(req: Request) -> tuple[Counter, int | None]:
    """(counter, the model's context length or None) for this request."""
    from limner.backends import choose

    if choose(req) != "embedded":
        return Approx(), None
    from limner.engine import gguf, models
    from limner.engine.core import CTX_CAP

    try:
        path = _model_path(req)
        if path is None:
            return Approx(), CTX_CAP
        vocab = _vocab(os.path.realpath(path), os.stat(path).st_mtime_ns)
        n_ctx = req.data.get("n_ctx")
        if not (isinstance(n_ctx, int) and n_ctx > 0):
            n_ctx = min(vocab.trained or CTX_CAP, CTX_CAP)
        return Margin(vocab), n_ctx
    except (models.ModelError, gguf.GGUFError, OSError):
        return Approx(), CTX_CAP  # the engine reports the model's problem when it loads it


def default_budget(req: Request, window: int | None) -> int:
    """Half of what the reply leaves of the context (fixed for HTTP); infill at most 1,024."""
    if window is None:
        total = HTTP_BUDGET
    else:
        reply = req.data.get("max_tokens")
        reply = reply if isinstance(reply, int) and reply > 0 else 0
        total = max(0, window - reply) // CHAT_SHARE
    return total if req.mode == CHAT else min(total, CURSOR_CAP)


def needed(req: Request) -> bool:
    return bool(req.outlines or req.retrieves or req.budget is not None)


def apply(req: Request, env=None) -> list[Placed]:
    """Put the buffer's repository context into `req`; returns (and stores) what went in.

    Raises LimnerError (with the directive's line) for what the user must fix."""
    env = os.environ if env is None else env
    if req.file_path is None and env.get("LIMNER_FILE"):
        req.file_path = os.path.join(req.cwd or os.getcwd(), env["LIMNER_FILE"])
    if not needed(req):
        return []
    counter, window = counter_and_window(req)
    budget = req.budget if req.budget is not None else default_budget(req, window)
    placed: list[Placed] = []
    used = _context_files(req, counter, budget, placed) if req.budget is not None else 0
    parts = sorted([("outline", o[3], o) for o in req.outlines]
                   + [("retrieve", r[1], r) for r in req.retrieves], key=lambda p: p[1])
    job = _Job(req, counter, apart=repo_level(req, counter))
    left = budget - used
    texts: dict[str, list[str]] = {"outline": [], "retrieve": []}
    try:
        for i, (what, line, spec) in enumerate(parts):
            share = left // (len(parts) - i)
            try:
                text, blocks = job.outline(spec, share) if what == "outline" else job.retrieve(spec, share)
            except LimnerError as e:  # the same error (and exit code), at the directive's line
                e.line = e.line or line
                raise
            except (sqlite3.Error, OSError) as e:  # the index rebuilds itself; anything left is reported
                raise LimnerError(f"!{what} could not read the repository index: {e}",
                                  "Run `limner index --rebuild DIR`, then send the buffer again.",
                                  line) from None
            cost = counter.count(text)
            if cost > share:  # the parts are fitted to their share; this is the last guard
                continue
            left -= cost
            if what == "retrieve" and job.apart:
                req.extra_files.extend(job.files(blocks, text))
            else:
                texts[what].append(text)
            placed.extend(blocks)
    finally:
        job.close()
    _insert(req, texts)
    req.placed = placed
    req.context_used, req.context_budget = budget - left, budget
    req.context_counter = getattr(counter, "name", "counter")
    return placed


# -- the parts ----------------------------------------------------------------


class _Job:
    """The indexes of one request (one per root) and how blocks are framed."""

    def __init__(self, req: Request, counter: Counter, apart: bool = False):
        self.req, self.counter = req, counter
        self.indexes: dict[str, object] = {}
        self.cursor = req.mode != CHAT
        # apart: retrieved blocks are files of their own (repo-level FIM), not comments
        self.apart = apart
        self.comment = _comment_mark(req) if self.cursor else ""
        self._files: dict[str, tuple[str, str]] = {}

    def files(self, placed: list[Placed], text: str) -> list[tuple[str, str]]:
        """(file name, text) of the blocks that were kept, in order."""
        return [self._files[p.source] for p in placed if p.source in self._files] if text else []

    def index(self, root: str):
        if root not in self.indexes:
            from limner.retrieval.index import open_index

            self.indexes[root] = open_index(root)
        return self.indexes[root]

    def close(self) -> None:
        for idx in self.indexes.values():
            idx.close()

    def root(self) -> tuple[str, str]:
        """(shown, absolute) of the repository !retrieve searches."""
        if self.req.outlines:
            shown, full, _, _ = self.req.outlines[0]
            return shown, full
        return ".", os.path.abspath(self.req.cwd or os.getcwd())

    def framed(self, text: str) -> str:
        if not self.comment:
            return text
        return "\n".join(f"{self.comment} {ln}".rstrip() for ln in text.split("\n"))

    def header(self, root: str, what: str) -> str:
        h = (INFILL_HEADER if self.cursor else CHAT_HEADER).format(root=root, what=what)
        return self.framed(h)

    def outline(self, spec, share: int) -> tuple[str, list[Placed]]:
        from limner.retrieval.budget import Callable
        from limner.retrieval.outline import outline

        shown, full, suffixes, _line = spec
        header = self.header(shown, "!outline") + "\n"
        room = share - self.counter.count(header + "\n\n")
        if room <= 0:
            return "", []
        body_counter = Callable(lambda t: self.counter.count(self.framed(t)), "framed")
        focus = [self._rel(full)] if self.cursor and self.req.file_path else []
        out = outline(self.index(full), suffixes, room, body_counter, focus=[f for f in focus if f])
        if not out.text:
            return "", []
        text = header + self.framed(out.text.rstrip("\n")) + "\n\n"
        if self.counter.count(text) > share:
            return "", []
        where = f"outline of {shown}" + (f" ({' '.join(suffixes)})" if suffixes else "")
        files = len({e.path for e in out.entries})
        reason = f"{len(out.entries)} of {out.total} definitions, {files} files"
        return text, [Placed(where, reason, self.counter.count(text))]

    def _rel(self, root: str) -> str | None:
        f = self.req.file_path
        if not f:
            return None
        rel = os.path.relpath(os.path.realpath(f), os.path.realpath(root))
        return None if rel.startswith("..") else rel.replace(os.sep, "/")

    def retrieve(self, spec, share: int) -> tuple[str, list[Placed]]:
        from limner.retrieval import retrieve as r

        query, line = spec
        shown, full = self.root()
        if full in (os.path.expanduser("~"), os.path.abspath(os.sep)):
            # indexing every file under it would take minutes and mix every project
            raise BufferError(f"!retrieve would index all of {full}: limner runs there and no "
                              "!outline names a repository",
                              "Add `!outline DIR` for the project (its DIR is what !retrieve "
                              "searches), or run limner from the project's directory.", line)
        header = self.header(shown, "!retrieve")
        idx = self.index(full)

        def framer(path, start, end, text):
            return self.framed(r.frame(path, start, end, text.rstrip("\n")))

        if self.cursor and not query and self.apart:
            def as_file(path, start, end, text):
                self._files[f"{path}:{start}-{end}"] = (path, text.rstrip("\n") + "\n")
                return f"<sep>{path}\n{text.rstrip()}\n"  # what the layout costs, a token for the separator

            return self._join("", self._cursor_blocks(idx, share, as_file), share)
        room = max(0, share - self.counter.count(header + "\n\n\n\n"))
        if self.cursor and not query:
            return self._join(header, self._cursor_blocks(idx, room, framer), share)
        if not query:
            query = _last_user(self.req)
            if not query:
                raise BufferError("!retrieve has nothing to search for: no QUERY and no !user message",
                                  "Write the question after it (!retrieve how are tokens counted?) "
                                  "or in a !user message.", line)
        blocks = r.retrieve(idx, query, budget=room, counter=self.counter, framer=framer)
        return self._join(header, blocks, share)

    def _cursor_blocks(self, idx, budget: int, framer) -> list[Block]:
        from limner.retrieval import retrieve as r

        req = self.req
        prefix = req.prefix if req.mode in (INFILL, FIM) else (req.prompt or "")
        suffix = req.suffix or "" if req.mode in (INFILL, FIM) else ""
        # Without the file's path nothing marks the current file: a path no file
        # has keeps every file in; its text after the hole might come back.
        path = req.file_path or os.path.join(idx.root, ".limner-unsaved-buffer")
        return r.retrieve_for_cursor(idx, path, prefix or "", suffix, budget=budget,
                                     counter=self.counter, framer=framer)

    def _join(self, header: str, blocks: list[Block], share: int) -> tuple[str, list[Placed]]:
        sep = "\n\n" if not self.cursor else "\n" + self.comment + "\n"
        while blocks:
            text = (header + "\n\n" + sep.join(b.text for b in blocks) + "\n\n" if header
                    else "".join(b.text for b in blocks))
            if self.counter.count(text) <= share:
                break
            blocks = blocks[:-1]  # the counter is not additive: drop from the end until it fits
        if not blocks:
            return "", []
        placed = [Placed(_source(b), b.reason, b.tokens) for b in blocks]
        return text, placed


def _source(b: Block) -> str:
    return b.source


def _comment_mark(req: Request) -> str:
    from limner.fim.languages import detect

    paths = [req.file_path] if req.file_path else []
    prefix = req.prefix if req.prefix is not None else (req.prompt or "")
    lang = detect(req.language, prefix, req.suffix or "", paths)
    return "#" if lang in (None, "python") else "//"


def _last_user(req: Request) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            return m.content
    return ""


# -- explicit !context files ----------------------------------------------------


def _context_files(req: Request, counter: Counter, budget: int, placed: list[Placed]) -> int:
    """Count the !context files against the budget; too many is an error with the
    numbers, or (`!budget N outline`) the files that do not fit become outlines."""
    used = 0
    over = []
    for f in req.context_files:
        n = counter.count(f.block)
        if used + n <= budget:
            used += n
            placed.append(Placed(f"!context {f.name}", "context file", n))
        else:
            over.append((f, n))
    if not over:
        return used
    needed_total = used + sum(n for _, n in over)
    if not req.budget_outline:
        f, _ = over[0]
        raise BufferError(
            f"!context needs {needed_total} tokens but !budget is {budget} "
            f"({len(over)} of {len(req.context_files)} files do not fit, first {f.name})",
            f"Raise the budget (!budget {needed_total}), name fewer files, or write "
            f"`!budget {budget} outline` to send what does not fit as its outline.",
            f.line)
    for f, n in over:
        short, body = _file_outline(f)
        m = counter.count(short)
        if used + m > budget:
            short, body, m = "", "", 0
        _replace_block(req, f.block, short)
        # llama.cpp's /infill sends context_files as input_extra: keep them in step
        if m:
            f.text, f.block = body, short
        else:
            req.context_files.remove(f)
        if m:
            used += m
            placed.append(Placed(f"!context {f.name}", f"outline only ({n} tokens did not fit)", m))
        else:
            placed.append(Placed(f"!context {f.name}", f"left out ({n} tokens did not fit)", 0))
    return used


def _file_outline(f) -> tuple[str, str]:
    """The signatures of one !context file, in Illume's file block format."""
    from limner.context import block
    from limner.fim.languages import from_path
    from limner.retrieval.tags import analyze

    defs, _, _ = analyze(f.text.encode("utf-8"), from_path(f.name))
    lines = ["  " * d.depth + d.signature for d in defs if d.signature]
    if not lines:
        return "", ""
    body = "\n".join(lines) + "\n"
    return block(f"{f.name} (outline: signatures only)", body), body


def _replace_block(req: Request, old: str, new: str) -> None:
    for m in req.messages:
        for probe in (old, old.rstrip("\n")):
            if probe and probe in m.content:
                m.content = m.content.replace(probe, new.rstrip("\n") if probe != old else new, 1)
                if req.mode == CHAT and not m.content.strip():
                    req.messages.remove(m)  # nothing left of it: no empty message
                _resync(req, m)
                return


def _resync(req: Request, m: Message) -> None:
    """Keep the mode's derived fields in step with an edited message."""
    if req.mode == COMPLETION and req.messages and m is req.messages[0]:
        req.prompt = m.content
    elif req.mode in (INFILL, FIM) and req.messages:
        if m is req.messages[0]:
            req.prefix = m.content + "\n"
        elif len(req.messages) > 1 and m is req.messages[1]:
            req.suffix = "\n" + m.content
        _refill(req)


def _refill(req: Request) -> None:
    if req.mode == FIM and req.fim_template:
        from limner.gotext import interpolate

        req.prompt = interpolate(req.fim_template, {"prefix": req.prefix, "suffix": req.suffix})


# -- into the request ---------------------------------------------------------------


def _insert(req: Request, texts: dict[str, list[str]]) -> None:
    outline = "".join(texts["outline"])
    retrieved = "".join(texts["retrieve"])
    if not (outline or retrieved):
        return
    if req.mode == CHAT:
        msgs = req.messages
        if outline:
            if msgs and msgs[0].role == "system":
                msgs[0].content = msgs[0].content + "\n\n" + outline.rstrip("\n")
            else:
                msgs.insert(0, Message("system", outline.rstrip("\n")))
        if retrieved:
            last = next((m for m in reversed(msgs) if m.role == "user"), msgs[-1] if msgs else None)
            if last is None:
                msgs.append(Message("user", retrieved.rstrip("\n")))
            else:
                last.content = retrieved + last.content
        return
    context = outline + retrieved
    if req.mode == COMPLETION:
        req.prompt = context + (req.prompt or "")
        if req.messages:
            req.messages[0].content = req.prompt
        return
    req.prefix = context + (req.prefix or "")
    if req.messages:
        req.messages[0].content = context + req.messages[0].content
    _refill(req)
