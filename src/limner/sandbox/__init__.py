"""Run untrusted code: isolated, limited, and never weaker than asked.

    from limner.sandbox import run, run_python, probe, require
    require("strict")                  # SandboxUnavailable (what is missing, how to fix) or the probe
    r = run_python("print(1 + 1)", timeout=5)
    r.stdout, r.returncode, r.killed_reason, r.isolation, r.layers

See run.py for the layers and probe.py for how they are found.
"""
from limner.sandbox.probe import Probe, SandboxUnavailable, probe, require
from limner.sandbox.run import Result, run, run_python

__all__ = ["Probe", "Result", "SandboxUnavailable", "probe", "require", "run", "run_python"]
