"""One sandboxed run per candidate: its visible tests, the probes, and (for
the eval) the held-out tests, each under its own time limit, reported as one
JSON line. The candidate is exec'd from a string, so a syntax error is an
outcome ("load": "SyntaxError"), not a lost run."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

MARK = "@@limner-select@@"
CALL_S = 1.0  # per test or probe
RUN_S = 20.0  # the whole program

_HARNESS = r'''
import json as _j, signal as _s, sys as _y
class _Late(BaseException):
    pass
def _alarm(*_):
    raise _Late()
_s.signal(_s.SIGALRM, _alarm)
_late = [0]
def _out(kind, src, g):
    if _late[0] >= 2:  # a candidate that hangs twice would hang every time: stop paying for it
        return "timeout"
    _s.setitimer(_s.ITIMER_REAL, %(call)r)
    try:
        if kind == "exec":
            exec(compile(src, "<test>", "exec"), g)
            return "pass"
        v = eval(compile(src, "<probe>", "eval"), g)
        r = repr(v)
        return "=" + (r if len(r) < 300 else r[:300] + "...%%d" %% hash(r))
    except _Late:
        _late[0] += 1
        return "timeout"
    except AssertionError:
        return "fail"
    except BaseException as e:
        return "!" + type(e).__name__
    finally:
        _s.setitimer(_s.ITIMER_REAL, 0)
_g = {"__name__": "__main__"}
_r = {"load": _out("exec", %(code)r, _g)}
if _r["load"] == "pass":
    _r["visible"] = [_out("exec", t, _g) for t in %(visible)r]
    _r["probes"] = [_out("eval", p, _g) for p in %(probes)r]
    _r["held"] = [_out("exec", t, _g) for t in %(held)r]
_y.stdout.write("\n%(mark)s" + _j.dumps(_r) + "\n")
'''


@dataclass
class Behaviour:
    load: str = "pass"  # "pass", or the exception type that defining the code raised
    visible: list[str] = field(default_factory=list)  # "pass" | "fail" | "!Type" | "timeout"
    probes: list[str] = field(default_factory=list)  # "=repr" | "!Type" | "timeout"
    held: list[str] = field(default_factory=list)
    error: str = ""  # the run itself failed (killed, no report)

    @property
    def crashed(self) -> bool:
        return self.load != "pass" or bool(self.error)

    @property
    def passes_visible(self) -> bool:
        return not self.crashed and all(v == "pass" for v in self.visible)

    @property
    def passes_held(self) -> bool:
        return not self.crashed and bool(self.held) and all(v == "pass" for v in self.held)

    def signature(self) -> tuple:
        return (self.load, tuple(self.visible), tuple(self.probes)) if not self.error else ("error",)


def program(code: str, visible: list[str], probes: list[str], held: list[str] = ()) -> str:
    return _HARNESS % {"call": CALL_S, "code": code, "visible": list(visible),
                       "probes": list(probes), "held": list(held), "mark": MARK}


def parse(stdout: str, killed: str | None = None) -> Behaviour:
    at = stdout.rfind(MARK)
    if at < 0:
        return Behaviour(error=f"killed ({killed})" if killed else "no report")
    try:
        r = json.loads(stdout[at + len(MARK):].splitlines()[0])
    except (ValueError, IndexError):
        return Behaviour(error="bad report")
    load = r.get("load", "pass")
    return Behaviour(load="pass" if load == "pass" else load.lstrip("!"), visible=r.get("visible", []),
                     probes=r.get("probes", []), held=r.get("held", []))


def run_all(codes: list[str], visible, probes, held=(), *, want: str = "strict", workers: int = 2,
            pool=None) -> list[Behaviour]:
    """Behaviours of every candidate, in order. SandboxUnavailable propagates:
    model code never runs outside the sandbox level asked for."""
    from concurrent.futures import ThreadPoolExecutor

    from limner.sandbox.pool import Pool

    own = pool is None
    pool = pool or Pool(workers, want=want, python=sys.executable, site=False)
    try:
        def one(code):
            r = pool.run_python(program(code, visible, probes, held), timeout=RUN_S)
            return parse(r.stdout, r.killed_reason)

        with ThreadPoolExecutor(max(1, workers)) as ex:
            return list(ex.map(one, codes))
    finally:
        if own:
            pool.close()
