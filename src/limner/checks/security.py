"""Security findings from bandit, run as a subprocess (its plugin loading is
slow and its logging noisy; neither belongs in the limner process).

Only Python: bandit reads Python ASTs. Static analysis: the code is read,
never run. bandit's severities map to ours: HIGH -> error, MEDIUM ->
warning, LOW -> info (LOW includes `assert` and every `import subprocess`,
too common to fail a check on).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from limner.checks.report import Finding

SEVERITY = {"HIGH": "error", "MEDIUM": "warning", "LOW": "info"}
TIMEOUT = 120


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bandit") is not None


def check_many(codes: list[str]) -> tuple[list[list[Finding]], str]:
    """Findings for each code string, in one bandit run; and why skipped, or ""."""
    if not codes:
        return [], ""
    if not available():
        return [[] for _ in codes], "bandit is not installed (install the `verify` extra: pip install 'limner[verify]')"
    with tempfile.TemporaryDirectory(prefix="limner-bandit-") as d:
        paths = []
        for i, code in enumerate(codes):
            path = os.path.join(d, f"block{i}.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(code)
            paths.append(path)
        try:
            p = subprocess.run([sys.executable, "-m", "bandit", "-f", "json", "-q", *paths],
                               capture_output=True, text=True, timeout=TIMEOUT, cwd=d)
        except subprocess.TimeoutExpired:
            return [[] for _ in codes], f"bandit took longer than {TIMEOUT} s"
        try:
            data = json.loads(p.stdout)
        except json.JSONDecodeError:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
            return [[] for _ in codes], f"bandit failed: {tail[0]}"
    by_path: dict[str, list[Finding]] = {path: [] for path in paths}
    for r in data.get("results", []):
        sev = SEVERITY.get(r.get("issue_severity", ""), "info")
        conf = (r.get("issue_confidence") or "").lower()
        by_path.setdefault(r.get("filename", ""), []).append(Finding(
            "security", sev,
            f"{r.get('issue_text', '').strip()} (severity {r.get('issue_severity', '?').lower()}, confidence {conf})",
            line=int(r.get("line_number") or 0), col=int(r.get("col_offset") or 0) + 1,
            code=r.get("test_id", ""), hint=r.get("more_info", ""),
        ))
    return [sorted(by_path[p], key=lambda f: f.line) for p in paths], ""


def check(code: str) -> tuple[list[Finding], str]:
    found, why = check_many([code])
    return found[0], why
