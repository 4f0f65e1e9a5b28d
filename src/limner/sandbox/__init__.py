"""Run untrusted code: isolated, limited, and honest about how isolated.

    from limner.sandbox import run, run_python, probe
    r = run_python("print(1 + 1)", timeout=5)
    r.stdout, r.returncode, r.killed_reason, r.isolation, r.weaker_than_asked

See run.py for the layers and probe.py for how they are found.
"""
from limner.sandbox.probe import Probe, probe
from limner.sandbox.run import Result, run, run_python

__all__ = ["Probe", "Result", "probe", "run", "run_python"]
