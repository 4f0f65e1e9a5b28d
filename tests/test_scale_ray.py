"""Sandboxed scoring as Ray tasks on a local two-node Ray cluster
(ray.cluster_utils.Cluster: separate raylets on this machine, simulating nodes).

HumanEval's 164 canonical solutions score the same on Ray as on the local
warm pool; a node removed mid-run still leaves every task scored exactly once
(Ray re-runs the lost tasks elsewhere; the driver records each key once).
"""
from __future__ import annotations

import os
import threading

import pytest

# Before Ray is imported: every raylet, the GCS and the workers on 127.0.0.1 only
# (Ray otherwise swaps loopback for the machine's network address).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="Ray is in the scale extra: pip install 'limner[scale]'")
from ray.cluster_utils import Cluster  # noqa: E402

from limner.evals import score, suites  # noqa: E402

pytestmark = pytest.mark.slow


def _jobs():
    return [(("humaneval", t.id, "canonical", "greedy", 0), t, {"code": t.reference, "how": "completion"})
            for t in suites.load("humaneval").tasks()]


def _essence(row: dict) -> tuple:
    return row["passed"], row["status"], row["exact"], row["isolation"].split(":")[0]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1), c.add_node(num_cpus=1)]
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    c.wait_for_nodes()
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"} and c.address.startswith("127.")
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def test_ray_scores_the_164_canonical_solutions_like_the_local_pool(cluster):
    jobs = _jobs()
    local = dict(score.LocalPool(2).map(jobs, 10.0))
    ex = score.executor("ray")  # joins the cluster this process is connected to
    remote = dict(ex.map(jobs, 10.0))
    assert len(local) == len(remote) == 164
    assert {k: _essence(r) for k, r in remote.items()} == {k: _essence(r) for k, r in local.items()}
    assert all(r["status"] == "pass" and r["isolation"].startswith("strict") for r in remote.values())


def test_a_node_removed_mid_run_still_scores_every_task_once(cluster):
    c, nodes = cluster
    jobs = _jobs()
    ex = score.executor("ray")
    seen: list = []
    first = threading.Event()

    def drive():
        for key, row in ex.map(jobs, 10.0):
            seen.append((key, row))
            if len(seen) >= 20:
                first.set()

    t = threading.Thread(target=drive)
    t.start()
    assert first.wait(300), "no results"
    c.remove_node(nodes[1])  # its running tasks die with it
    c.add_node(num_cpus=1)  # a replacement, so the test does not crawl on one CPU
    t.join(600)
    assert not t.is_alive()
    keys = [k for k, _ in seen]
    assert len(keys) == len(set(keys)) == 164  # every task, exactly once
    assert all(r["status"] == "pass" for _, r in seen), [r for _, r in seen if r["status"] != "pass"][:3]


def test_executor_registry_and_a_missing_ray_is_an_error(monkeypatch):
    import builtins

    from limner.errors import LimnerError

    with pytest.raises(LimnerError, match="unknown executor"):
        score.executor("dask")
    with pytest.raises(LimnerError, match="no Ray cluster answers"):  # not Ray's endless retries
        score.executor("ray", address="127.0.0.1:1")
    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(LimnerError, match="needs Ray") as e:
        score.executor("ray")
    assert "limner[scale]" in e.value.hint


def test_limner_eval_scores_on_the_cluster(cluster, tmp_path, limner_env):
    """The command: --executor ray --address joins the running cluster; the driver writes the store."""
    import json
    import subprocess

    from conftest import limner_command
    from test_eval_scripted import ScriptedModel

    c, _ = cluster
    answers = {t.prompt: t for t in suites.load("humaneval").tasks()}
    oracle = ScriptedModel(lambda body: answers[body["prompt"]].reference).start()
    try:
        p = subprocess.run(limner_command() + [
            "eval", "humaneval", "--model", "oracle", "--endpoint", oracle.url, "--limit", "8",
            "--mode", "completion", "--out", str(tmp_path / "out"), "--json", "--no-html",
            "--executor", "ray", "--address", c.address], env=limner_env, capture_output=True, text=True,
            timeout=300)
    finally:
        oracle.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    run, = json.loads(p.stdout)["runs"]
    assert run["tasks"] == 8 and run["pass@1"] == 1.0 and all(i.startswith("strict") for i in run["isolation"])
