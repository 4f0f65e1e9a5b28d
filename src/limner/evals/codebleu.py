"""CodeBLEU (Ren et al. 2020) through the `codebleu` package, in its own venv.

Why a separate venv: codebleu 0.7.0 needs tree-sitter 0.22.x and grammar
wheels built for it (tree-sitter-python 0.21.x); limner's syntax-aware FIM
stop needs tree-sitter >= 0.25 and current grammars. One environment cannot
hold both, so CodeBLEU runs in `.venv-codebleu`, made on first use of
`limner eval --codebleu` (a pip install from PyPI, about 30 s), and is
called as a subprocess with JSON on stdin. Nothing else in limner imports it.

Where the venv lives: $LIMNER_CODEBLEU_VENV, else `.venv-codebleu` next to
the checkout's `.venv`, else `venv-codebleu` in limner's data dir.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from limner.errors import LimnerError

REQUIREMENTS = ["codebleu==0.7.0", "tree-sitter>=0.22,<0.23", "tree-sitter-python>=0.21,<0.22"]

# Runs inside the CodeBLEU venv: [{"refs": [...], "preds": [...], "lang": ...}] -> [scores].
_WORKER = r"""
import json, sys
from codebleu import calc_codebleu
out = []
for job in json.load(sys.stdin):
    try:
        out.append(calc_codebleu(job["refs"], job["preds"], lang=job["lang"]))
    except Exception as e:
        out.append({"error": f"{type(e).__name__}: {e}"})
json.dump(out, sys.stdout)
"""


def venv_dir() -> Path:
    if os.environ.get("LIMNER_CODEBLEU_VENV"):
        return Path(os.environ["LIMNER_CODEBLEU_VENV"])
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / ".venv").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / ".venv-codebleu"
    from limner.engine.models import data_dir

    return data_dir() / "venv-codebleu"


def ensure_venv(log=sys.stderr) -> Path:
    """The venv's python, creating the venv on first use."""
    root = venv_dir()
    py = root / "bin" / "python"
    if py.exists() and (root / ".limner-ready").exists():
        return py
    log.write(f"limner: setting up CodeBLEU in {root} (once; it pins tree-sitter<0.23, "
              "which limner's own grammars cannot share)\n")
    log.flush()
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(root)], check=True, capture_output=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        raise LimnerError(f"could not set up the CodeBLEU venv in {root}: "
                          f"{err.decode(errors='replace').strip()[-400:] or e}",
                          "It needs PyPI. Set LIMNER_CODEBLEU_VENV to a venv holding "
                          + " ".join(REQUIREMENTS) + ", or run without --codebleu.") from None
    (root / ".limner-ready").write_text("\n".join(REQUIREMENTS) + "\n")
    return py


def score(jobs: list[dict], timeout: float = 600) -> list[dict]:
    """jobs: [{"refs": [str], "preds": [str], "lang": "python"}] -> one CodeBLEU dict each."""
    if not jobs:
        return []
    py = ensure_venv()
    try:
        p = subprocess.run([str(py), "-c", _WORKER], input=json.dumps(jobs), capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LimnerError(f"CodeBLEU took longer than {timeout:.0f}s", "Use --limit to score fewer tasks.") from None
    if p.returncode != 0:
        raise LimnerError(f"CodeBLEU failed: {p.stderr.strip()[-400:]}",
                          f"Delete {venv_dir()} to have it set up again.")
    return json.loads(p.stdout)


def _piece(text: str) -> str:
    # A completion is a function body; dedented it parses as code on its own.
    return textwrap.dedent(text or "").strip() + "\n"


def for_plan(store, plan) -> dict:
    """Corpus CodeBLEU per (suite, model, variant) over sample 0 of each Python task."""
    keys, jobs = [], []
    for suite in plan.suites:
        tasks = {t.id: t for t in plan.tasks[suite.name] if t.reference and t.language == "python"}
        for target in plan.targets:
            for v in plan.variants:
                rows = [r for r in store.generations(suite=suite.name, model=target.label, variant=v.name)
                        if r["sample"] == 0 and r["task"] in tasks]
                if rows:
                    keys.append(f"{suite.name}|{target.label}|{v.name}")
                    jobs.append({"refs": [_piece(tasks[r["task"]].reference) for r in rows],
                                 "preds": [_piece(r.get("code") or "") for r in rows], "lang": "python"})
    results = score(jobs)
    return {k: (round(r["codebleu"], 4) if "codebleu" in r else None) for k, r in zip(keys, results)}
